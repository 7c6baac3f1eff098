//! `wspush-load`: a load generator for wspush and other WebSocket push
//! servers. Run `wspush-load --help`; README.md "Measuring" shows the
//! commands behind every published figure.
//!
//! The parent process grants tokens (over wspush's control socket), spawns
//! worker processes (itself with `--worker`) that hold the connections, at
//! most `--per-process` each, and injects broadcasts: push lines on the
//! control socket, or a `--trigger` shell command for other servers. Every
//! broadcast carries its sequence number and injection time
//! ([`ws::marker`]), so workers time each receipt on the shared wall clock.
//! `burst --window W` keeps W pushes unanswered on the control socket
//! instead (a peer server is driven the same way if it speaks the control
//! subset wspush-floor does: `push` answers `{"ok":true,"delivered":N}`).
//! With `--server-pid`, the server's CPU time and RSS are read from /proc.
//! Results are one JSON object on stdout (and in `--out`). Every wait is
//! bounded by `--timeout`, every loop by a count.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use serde_json::{Value, json};
use wspush_tools::control::Control;
use wspush_tools::summary::{median, quantile, slope};
use wspush_tools::worker::{self, Tokens};
use wspush_tools::ws::{self, Target};
use wspush_tools::{procfs, unix_us};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Hold connections; report server RSS at each step and CPU while idle.
    Idle,
    /// One broadcast at a time: per-receipt latency, time to last delivery.
    Fanout,
    /// Single broadcasts and bursts of `--burst` back to back, alternated:
    /// delivered messages per second of each. With `--window W`: rounds of
    /// `--burst` pushes with at most W unanswered on the control socket.
    Burst,
    /// Open, upgrade and close connections for `--seconds`: rate per second.
    Churn,
}

/// Drive a WebSocket push server with many loopback connections.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// What to measure.
    #[arg(value_enum)]
    mode: Mode,
    /// wspush's WebSocket address; several, comma-separated (the nodes of
    /// a cluster): worker process k connects to the k-th (round robin), so
    /// with `--per-process N` each node gets N connections in turn.
    #[arg(long, default_value = "127.0.0.1:7001")]
    addr: String,
    /// wspush's `--ws-path`.
    #[arg(long, default_value = "/push")]
    ws_path: String,
    /// wspush's control socket (tokens are granted and pushes sent through it).
    #[arg(long, default_value = "./wspush.sock")]
    control: String,
    /// Another server: URL template of connection i, `{i}` and `{token}`
    /// replaced (e.g. `ws://127.0.0.1:8080/ws?user={i}`). No control socket.
    #[arg(long, requires = "trigger")]
    url: Option<String>,
    /// With `--url`: shell command that broadcasts one batch. It gets
    /// `WSPUSH_LOAD_PAYLOAD` (the first message, also substituted for
    /// `{payload}`) and `WSPUSH_LOAD_PAYLOADS` (all of the batch, one a line).
    /// Each message is JSON the server must deliver verbatim or wrapped.
    #[arg(long)]
    trigger: Option<String>,
    /// Connections.
    #[arg(long, default_value_t = 1000)]
    count: usize,
    /// Measure at each of these connection counts in turn (comma separated;
    /// overrides `--count`).
    #[arg(long, value_delimiter = ',')]
    steps: Vec<usize>,
    /// One token and user for every connection (default: one each).
    #[arg(long)]
    shared: bool,
    /// Token prefix (`{prefix}-{i}`, or `{prefix}-shared`).
    #[arg(long, default_value = "bench")]
    token_prefix: String,
    /// Broadcasts (fanout) or rounds of single + burst (burst), per step.
    #[arg(long, default_value_t = 11)]
    rounds: usize,
    /// Broadcasts in one burst.
    #[arg(long, default_value_t = 100)]
    burst: usize,
    /// burst: instead of single broadcasts and one-write bursts, send each
    /// round's `--burst` pushes with at most W unanswered (the next push goes
    /// out when a reply arrives). Several (comma separated) are measured in
    /// turn on the same connections, one point each. Needs the control
    /// socket (a peer server speaks the subset wspush-floor does).
    #[arg(long, value_delimiter = ',')]
    window: Vec<usize>,
    /// idle: how long to hold after the last step (server CPU is measured
    /// over it); churn: how long to churn.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Processes churning in parallel.
    #[arg(long, default_value_t = 1)]
    churners: usize,
    /// The server's pid: report its CPU time and RSS.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Most connections one worker process holds (open-file limit).
    #[arg(long, default_value_t = 15_000)]
    per_process: usize,
    /// Bound on every wait (one connect, one batch of broadcasts), seconds.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// Pause between broadcasts, ms.
    #[arg(long, default_value_t = 100)]
    gap_ms: u64,
    /// A name for this run, copied into the JSON.
    #[arg(long)]
    label: Option<String>,
    /// Also write the JSON here.
    #[arg(long)]
    out: Option<String>,
    /// Internal: run as a worker process.
    #[arg(long, hide = true)]
    worker: bool,
}

impl Args {
    fn url(&self) -> String {
        self.url_for(0)
    }
    /// The URL template worker `k` connects with.
    fn url_for(&self, k: usize) -> String {
        let addrs: Vec<&str> = self.addr.split(',').collect();
        let addr = addrs[k % addrs.len()];
        self.url
            .clone()
            .unwrap_or_else(|| format!("ws://{addr}{}/{{token}}", self.ws_path))
    }
    fn tokens(&self) -> Tokens {
        Tokens {
            prefix: self.token_prefix.clone(),
            shared: self.shared,
            pool: self.steps.iter().copied().max().unwrap_or(self.count),
        }
    }
}

struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    held: usize,
}

impl Worker {
    fn send(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").expect("worker stdin");
    }
    fn answer(&mut self) -> Value {
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("worker stdout");
        serde_json::from_str(&line).unwrap_or_else(|_| panic!("worker said {line:?}"))
    }
}

/// Everything the parent drives.
struct Run {
    args: Args,
    control: Option<Control>,
    workers: Vec<Worker>,
    seq: u64,
    /// Tokens granted so far (`{prefix}-0` .. this).
    granted: usize,
}

fn main() {
    let args = Args::parse();
    let target = Target::parse(&args.url()).unwrap_or_else(|e| fail(&e));
    if args.worker {
        let timeout = Duration::from_secs(args.timeout);
        if let Err(e) = worker::run(target, args.tokens(), timeout) {
            fail(&format!("worker: {e}"));
        }
        return;
    }
    if !args.window.is_empty() {
        if args.mode != Mode::Burst {
            fail("--window is for burst");
        }
        if args.url.is_some() {
            fail("--window needs a control socket (--control), not --url/--trigger");
        }
        if args.window.contains(&0) {
            fail("--window must be at least 1");
        }
    }
    let control = match &args.url {
        Some(_) => None,
        None => Some(
            Control::open(&args.control)
                .and_then(|c| c.with_timeout(Duration::from_secs(args.timeout)))
                .unwrap_or_else(|e| fail(&format!("control socket {}: {e}", args.control))),
        ),
    };
    let mut run = Run {
        args,
        control,
        workers: Vec::new(),
        seq: 1,
        granted: 0,
    };
    if run.args.mode == Mode::Churn {
        run.grant(run.args.count);
    }
    let mut steps = run.args.steps.clone();
    if steps.is_empty() {
        steps.push(run.args.count);
    }
    let mut result = json!({
        "tool": "wspush-load",
        "mode": format!("{:?}", run.args.mode).to_lowercase(),
        "label": run.args.label,
        "url": run.args.url(),
        "shared": run.args.shared,
        "unix_time": unix_us() / 1_000_000,
    });
    match run.args.mode {
        Mode::Churn => result["churn"] = run.churn(),
        mode => {
            let mut points = Vec::new();
            for &n in &steps {
                let mut point = run.grow(n);
                let mut here = Vec::new();
                match mode {
                    Mode::Fanout => run.fanout(&mut point),
                    Mode::Burst if run.args.window.is_empty() => run.burst(&mut point),
                    Mode::Burst => {
                        for w in run.args.window.clone() {
                            let mut p = point.clone();
                            run.windowed(&mut p, w);
                            eprintln!("{p}");
                            here.push(p);
                        }
                    }
                    _ => {}
                }
                if here.is_empty() {
                    eprintln!("{point}");
                    here.push(point);
                }
                points.extend(here);
            }
            if mode == Mode::Idle {
                result["rss_slope_bytes_per_conn"] = json!(rss_slope(&points));
                result["hold"] = run.hold();
            }
            result["points"] = json!(points);
        }
    }
    for w in &mut run.workers {
        w.send("quit");
        let _ = w.child.wait();
    }
    let text = serde_json::to_string_pretty(&result).expect("JSON");
    println!("{text}");
    if let Some(path) = &run.args.out {
        std::fs::write(path, text + "\n").unwrap_or_else(|e| fail(&format!("{path}: {e}")));
    }
}

fn fail(message: &str) -> ! {
    eprintln!("wspush-load: {message}");
    std::process::exit(1)
}

/// Bytes of server RSS per connection: least-squares slope over the points.
fn rss_slope(points: &[Value]) -> Option<f64> {
    let xy: Vec<(f64, f64)> = points
        .iter()
        .filter_map(|p| Some((p["conns"].as_f64()?, p["rss_kib"].as_f64()? * 1024.0)))
        .collect();
    (xy.len() >= 2).then(|| slope(&xy))
}

impl Run {
    /// Grant the tokens of connections `..n` not granted yet. Done step by
    /// step, so an idle step's RSS growth includes its tokens and users.
    fn grant(&mut self, n: usize) {
        let Some(control) = &mut self.control else {
            return;
        };
        let tokens = self.args.tokens();
        let n = if tokens.shared { n.min(1) } else { n };
        let requests: Vec<Value> = (self.granted..n)
            .map(|i| json!({"op": "grant", "token": tokens.of(i), "user": tokens.of(i)}))
            .collect();
        for chunk in requests.chunks(1000) {
            for reply in control.batch(chunk).expect("grant") {
                if reply["ok"] != true {
                    fail(&format!("grant refused: {reply}"));
                }
            }
        }
        self.granted = self.granted.max(n);
    }

    fn spawn(&mut self) {
        let exe = std::env::current_exe().expect("own path");
        let mut cmd = Command::new(exe);
        let url = self.args.url_for(self.workers.len());
        cmd.arg("idle")
            .args(["--worker", "--url", &url, "--trigger", "-"])
            .args(["--token-prefix", &self.args.token_prefix])
            .args(["--timeout", &self.args.timeout.to_string()])
            .args(["--count", &self.args.tokens().pool.to_string()]);
        if self.args.shared {
            cmd.arg("--shared");
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn a worker");
        let stdin = child.stdin.take().expect("piped");
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        self.workers.push(Worker {
            child,
            stdin,
            stdout,
            held: 0,
        });
    }

    fn cpu_ns(&self) -> Option<u64> {
        self.args.server_pid.and_then(procfs::cpu_ns)
    }

    /// Open connections until `n` are held; report the cost.
    fn grow(&mut self, n: usize) -> Value {
        self.grant(n);
        let per = self.args.per_process;
        let (t0, cpu0) = (Instant::now(), self.cpu_ns());
        let mut opened = 0;
        let mut failed = 0;
        let mut errors = Vec::new();
        let mut w = 0;
        while self.workers.iter().map(|w| w.held).sum::<usize>() < n {
            if w == self.workers.len() {
                self.spawn();
            }
            let want = (n - w * per).min(per);
            let worker = &mut self.workers[w];
            if worker.held < want {
                worker.send(&format!(
                    "open {} {}",
                    w * per + worker.held,
                    want - worker.held
                ));
                let a = worker.answer();
                opened += a["opened"].as_u64().unwrap_or(0);
                failed += a["failed"].as_u64().unwrap_or(0);
                worker.held = a["held"].as_u64().unwrap_or(0) as usize;
                if !a["error"].is_null() {
                    errors.push(a["error"].clone());
                }
                if worker.held < want {
                    fail(&format!("could not open {n} connections: {errors:?}"));
                }
            }
            w += 1;
        }
        let seconds = t0.elapsed().as_secs_f64();
        let cpu = self.cpu_ns().zip(cpu0).map(|(b, a)| b - a);
        std::thread::sleep(Duration::from_secs(1));
        let rss = self.args.server_pid.and_then(procfs::rss_kib);
        let server_conns = self
            .control
            .as_mut()
            .and_then(|c| c.batch(&[json!({"op": "stats"})]).ok())
            .map(|mut r| r.remove(0)["connections"].clone());
        json!({
            "conns": n, "opened": opened, "failed": failed, "connect_seconds": seconds,
            "rss_kib": rss, "server_connections": server_conns,
            "server_cpu_us_per_upgrade": cpu.filter(|_| opened > 0).map(|c| c as f64 / 1000.0 / opened as f64),
        })
    }

    /// Inject broadcasts `seq..seq+k` in one go; returns (injection time, delivered).
    fn inject(&mut self, k: usize) -> (u64, u64) {
        let first = self.seq;
        self.seq += k as u64;
        let t = unix_us();
        let payloads: Vec<String> = (0..k as u64).map(|i| ws::marker(first + i, t)).collect();
        match (&mut self.control, &self.args.trigger) {
            (Some(control), _) => {
                let mut lines = String::new();
                for p in &payloads {
                    lines.push_str(&format!("{{\"op\":\"push\",\"content\":{p}}}\n"));
                }
                control.send_raw(lines.as_bytes()).expect("push");
                let mut delivered = 0;
                for _ in 0..k {
                    let reply = control.reply().expect("push reply");
                    delivered += reply["delivered"].as_u64().unwrap_or(0);
                }
                (t, delivered)
            }
            (None, Some(trigger)) => {
                let status = Command::new("sh")
                    .arg("-c")
                    .arg(trigger.replace("{payload}", &payloads[0]))
                    .env("WSPUSH_LOAD_PAYLOAD", &payloads[0])
                    .env("WSPUSH_LOAD_PAYLOADS", payloads.join("\n"))
                    .stdout(Stdio::null())
                    .status()
                    .expect("run the trigger");
                if !status.success() {
                    fail(&format!("trigger exited with {status}"));
                }
                (t, 0)
            }
            (None, None) => fail("--url needs --trigger"),
        }
    }

    /// Inject broadcasts `seq..seq+k` with at most `window` unanswered: the
    /// first `window` push lines in one write, then one more per reply. Each
    /// carries its own send time; returns (first injection time, delivered).
    fn inject_window(&mut self, k: usize, window: usize) -> (u64, u64) {
        let first = self.seq;
        self.seq += k as u64;
        let Some(control) = &mut self.control else {
            fail("--window needs a control socket");
        };
        let line = |i: usize, t: u64| {
            format!(
                "{{\"op\":\"push\",\"content\":{}}}\n",
                ws::marker(first + i as u64, t)
            )
        };
        let t = unix_us();
        let mut sent = window.min(k);
        let head: String = (0..sent).map(|i| line(i, t)).collect();
        control.send_raw(head.as_bytes()).expect("push");
        let mut delivered = 0;
        for _ in 0..k {
            let reply = control
                .reply()
                .unwrap_or_else(|e| fail(&format!("push reply: {e}")));
            if reply["ok"] != true {
                fail(&format!("push refused: {reply}"));
            }
            delivered += reply["delivered"].as_u64().unwrap_or(0);
            if sent < k {
                control
                    .send_raw(line(sent, unix_us()).as_bytes())
                    .expect("push");
                sent += 1;
            }
        }
        (t, delivered)
    }

    /// Arm every worker for broadcasts `seq..seq+k`, inject them, gather.
    fn batch(&mut self, k: usize, latencies: bool) -> Batch {
        self.batch_with(k, latencies, None)
    }

    /// [`Run::batch`], injecting through a window of unanswered pushes
    /// when one is given.
    fn batch_with(&mut self, k: usize, latencies: bool, window: Option<usize>) -> Batch {
        let seq = self.seq;
        for w in &mut self.workers {
            w.send(&format!("expect {seq} {k} {}", u8::from(latencies)));
        }
        for w in &mut self.workers {
            w.answer();
        }
        let cpu0 = self.cpu_ns();
        let (t, delivered) = match window {
            Some(w) => self.inject_window(k, w),
            None => self.inject(k),
        };
        let mut b = Batch {
            delivered,
            ..Batch::default()
        };
        for w in &mut self.workers {
            let a = w.answer();
            b.received += a["received"].as_u64().unwrap_or(0);
            b.expected += a["expected"].as_u64().unwrap_or(0);
            b.dups += a["dups"].as_u64().unwrap_or(0);
            b.stray += a["stray"].as_u64().unwrap_or(0);
            b.last_ms = b
                .last_ms
                .max(a["last_us"].as_u64().unwrap_or(0).saturating_sub(t) as f64 / 1000.0);
            if let Some(l) = a["lat_us"].as_array() {
                b.lat_us
                    .extend(l.iter().filter_map(|v| v.as_u64()).map(|v| v as u32));
            }
        }
        b.cpu_ns = self.cpu_ns().zip(cpu0).map(|(b, a)| b - a);
        std::thread::sleep(Duration::from_millis(self.args.gap_ms));
        b
    }

    fn fanout(&mut self, point: &mut Value) {
        let (mut lasts, mut lat, mut lost, mut dups, mut stray) = (vec![], vec![], 0, 0, 0);
        let (mut cpu, mut received, mut delivered) = (0u64, 0u64, 0u64);
        for _ in 0..self.args.rounds {
            let b = self.batch(1, true);
            lasts.push(b.last_ms);
            lost += b.expected - b.received;
            dups += b.dups;
            stray += b.stray;
            received += b.received;
            delivered += b.delivered;
            cpu += b.cpu_ns.unwrap_or(0);
            lat.extend(b.lat_us);
        }
        lat.sort_unstable();
        point["rounds"] = json!(self.args.rounds);
        point["last_delivery_ms"] = json!({
            "median": median(&lasts), "min": lasts.iter().copied().fold(f64::MAX, f64::min),
            "max": lasts.iter().copied().fold(0.0, f64::max), "all": lasts,
        });
        point["latency_ms"] = json!({
            "p50": quantile(&lat, 0.5) as f64 / 1000.0,
            "p99": quantile(&lat, 0.99) as f64 / 1000.0,
            "max": quantile(&lat, 1.0) as f64 / 1000.0,
        });
        point["lost"] = json!(lost);
        point["dups"] = json!(dups);
        point["stray"] = json!(stray);
        point["server_delivered"] = json!(delivered);
        point["server_cpu_us_per_1m_messages"] = self.cpu_per_million(cpu, received);
    }

    fn burst(&mut self, point: &mut Value) {
        let k = self.args.burst;
        let (mut single, mut burst, mut lost, mut dups, mut lasts) = (vec![], vec![], 0, 0, vec![]);
        let (mut cpu, mut received) = (0u64, 0u64);
        for _ in 0..self.args.rounds {
            let s = self.batch(1, false);
            single.push(s.received as f64 / (s.last_ms / 1000.0));
            let b = self.batch(k, false);
            burst.push(b.received as f64 / (b.last_ms / 1000.0));
            lasts.push(b.last_ms);
            for x in [&s, &b] {
                lost += x.expected - x.received;
                dups += x.dups;
            }
            cpu += b.cpu_ns.unwrap_or(0);
            received += b.received;
        }
        let (s, b) = (median(&single), median(&burst));
        point["rounds"] = json!(self.args.rounds);
        point["burst"] = json!(k);
        point["single_msgs_per_s"] = json!({"median": s, "all": single});
        point["burst_msgs_per_s"] = json!({"median": b, "all": burst});
        point["burst_last_delivery_ms"] = json!({"median": median(&lasts), "all": lasts});
        point["ratio"] = json!(b / s);
        point["lost"] = json!(lost);
        point["dups"] = json!(dups);
        point["server_cpu_us_per_1m_messages"] = self.cpu_per_million(cpu, received);
    }

    /// `--rounds` rounds of `--burst` pushes, at most `window` unanswered:
    /// delivered messages per second at the clients (received / time from
    /// the first injection to the last receipt) and server CPU.
    fn windowed(&mut self, point: &mut Value, window: usize) {
        let k = self.args.burst;
        let (mut rates, mut lasts, mut lost, mut dups, mut stray) = (vec![], vec![], 0, 0, 0);
        let (mut cpu, mut received, mut delivered) = (0u64, 0u64, 0u64);
        for _ in 0..self.args.rounds {
            let b = self.batch_with(k, false, Some(window));
            rates.push(b.received as f64 / (b.last_ms / 1000.0));
            lasts.push(b.last_ms);
            lost += b.expected - b.received;
            dups += b.dups;
            stray += b.stray;
            cpu += b.cpu_ns.unwrap_or(0);
            received += b.received;
            delivered += b.delivered;
        }
        point["rounds"] = json!(self.args.rounds);
        point["burst"] = json!(k);
        point["window"] = json!(window);
        point["burst_msgs_per_s"] = json!({"median": median(&rates), "all": rates});
        point["burst_last_delivery_ms"] = json!({"median": median(&lasts), "all": lasts});
        point["lost"] = json!(lost);
        point["dups"] = json!(dups);
        point["stray"] = json!(stray);
        point["server_delivered"] = json!(delivered);
        point["server_cpu_us_per_1m_messages"] = self.cpu_per_million(cpu, received);
    }

    fn cpu_per_million(&self, cpu_ns: u64, messages: u64) -> Value {
        if self.args.server_pid.is_none() || messages == 0 {
            return Value::Null;
        }
        json!(cpu_ns as f64 / 1000.0 / messages as f64 * 1e6)
    }

    /// Server CPU while the connections sit idle for `--seconds`.
    fn hold(&mut self) -> Value {
        let cpu0 = self.cpu_ns();
        std::thread::sleep(Duration::from_secs(self.args.seconds));
        let cpu = self.cpu_ns().zip(cpu0).map(|(b, a)| b - a);
        json!({"seconds": self.args.seconds, "server_cpu_ms": cpu.map(|c| c as f64 / 1e6)})
    }

    fn churn(&mut self) -> Value {
        for _ in 0..self.args.churners {
            self.spawn();
        }
        let cpu0 = self.cpu_ns();
        let secs = self.args.seconds;
        for (i, w) in self.workers.iter_mut().enumerate() {
            // Disjoint index ranges keep the processes' source ports apart.
            w.send(&format!("churn {secs} {}", i * 1_000_000));
        }
        let (mut churned, mut failed, mut seconds, mut errors) = (0, 0, 0f64, vec![]);
        for w in &mut self.workers {
            let a = w.answer();
            churned += a["churned"].as_u64().unwrap_or(0);
            failed += a["failed"].as_u64().unwrap_or(0);
            seconds = seconds.max(a["seconds"].as_f64().unwrap_or(0.0));
            if !a["error"].is_null() {
                errors.push(a["error"].clone());
            }
        }
        let cpu = self.cpu_ns().zip(cpu0).map(|(b, a)| b - a);
        json!({
            "churned": churned, "failed": failed, "errors": errors, "seconds": seconds,
            "per_second": churned as f64 / seconds,
            "server_cpu_us_per_churn": cpu.filter(|_| churned > 0).map(|c| c as f64 / 1000.0 / churned as f64),
        })
    }
}

/// Totals of one batch of broadcasts over all workers.
#[derive(Default)]
struct Batch {
    delivered: u64,
    received: u64,
    expected: u64,
    dups: u64,
    stray: u64,
    /// From injection to the last receipt.
    last_ms: f64,
    lat_us: Vec<u32>,
    cpu_ns: Option<u64>,
}
