// A gorilla/websocket push server speaking the control subset of
// wspush-floor, for tools/compare: WebSocket on /push/{token}; a Unix
// control socket of JSON lines where "grant" (and anything else) answers
// {"ok":true}, "stats" the connection count, and "push" writes wspush's
// envelope ({"messageId","seq","content","ts"}, one text frame, prepared
// once) to every connection, then answers {"ok":true,"seq":S,"delivered":N}.
// One OS thread runs Go code (GOMAXPROCS=1); a goroutine per connection
// reads (answering pings and close), the broadcast writes inline.
//
// Built in GOPATH mode against Debian's golang-github-gorilla-websocket-dev:
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o wspush-peer-gorilla .
//	wspush-peer-gorilla -port 7004 -control ./g.sock
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

type hub struct {
	mu    sync.Mutex
	conns map[*websocket.Conn]struct{}
	seq   uint64
}

var upgrader = websocket.Upgrader{
	// The library's advice for many mostly idle connections: pool the write
	// buffers between writes instead of one per connection.
	WriteBufferPool: &sync.Pool{},
	CheckOrigin:     func(*http.Request) bool { return true },
}

func main() {
	port := flag.Int("port", 7004, "TCP port on 127.0.0.1")
	control := flag.String("control", "./gorilla.sock", "control socket")
	flag.Parse()
	runtime.GOMAXPROCS(1)
	h := &hub{conns: make(map[*websocket.Conn]struct{})}
	os.Remove(*control)
	ctl, err := net.Listen("unix", *control)
	if err != nil {
		fail(err)
	}
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", *port))
	if err != nil {
		fail(err)
	}
	go func() {
		for {
			c, err := ctl.Accept()
			if err != nil {
				return
			}
			go h.controlClient(c)
		}
	}()
	mux := http.NewServeMux()
	mux.HandleFunc("/push/", h.serveWS)
	fmt.Printf("gorilla peer: listening on ws://127.0.0.1:%d, control socket %s\n", *port, *control)
	fail(http.Serve(ln, mux))
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "gorilla peer: %v\n", err)
	os.Exit(1)
}

func (h *hub) serveWS(w http.ResponseWriter, r *http.Request) {
	c, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	if tcp, ok := c.UnderlyingConn().(*net.TCPConn); ok {
		tcp.SetNoDelay(true)
	}
	h.mu.Lock()
	h.conns[c] = struct{}{}
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		delete(h.conns, c)
		h.mu.Unlock()
		c.Close()
	}()
	// The default handlers answer pings and echo a close frame.
	for {
		if _, _, err := c.NextReader(); err != nil {
			return
		}
	}
}

func (h *hub) push(content json.RawMessage) (uint64, int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.seq++
	if len(content) == 0 {
		content = json.RawMessage("null")
	}
	payload := fmt.Sprintf(`{"messageId":"f100-%d","seq":%d,"content":%s,"ts":%d}`,
		h.seq, h.seq, content, time.Now().UnixMilli())
	pm, err := websocket.NewPreparedMessage(websocket.TextMessage, []byte(payload))
	if err != nil {
		return h.seq, 0
	}
	n := 0
	for c := range h.conns {
		if c.WritePreparedMessage(pm) == nil {
			n++
		}
	}
	return h.seq, n
}

func (h *hub) controlClient(c net.Conn) {
	defer c.Close()
	in := bufio.NewScanner(c)
	in.Buffer(make([]byte, 64*1024), 1<<20)
	for in.Scan() {
		line := strings.TrimSpace(in.Text())
		if line == "" {
			continue
		}
		var req struct {
			Op      string          `json:"op"`
			Content json.RawMessage `json:"content"`
		}
		json.Unmarshal([]byte(line), &req)
		var reply string
		switch req.Op {
		case "push":
			seq, n := h.push(req.Content)
			reply = fmt.Sprintf(`{"ok":true,"seq":%d,"delivered":%d,"queued":0}`, seq, n)
		case "stats":
			h.mu.Lock()
			n := len(h.conns)
			h.mu.Unlock()
			reply = fmt.Sprintf(`{"ok":true,"connections":%d}`, n)
		default:
			reply = `{"ok":true}`
		}
		if _, err := c.Write([]byte(reply + "\n")); err != nil {
			return
		}
	}
}
