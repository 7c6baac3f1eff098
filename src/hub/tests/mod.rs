//! The hub on virtual time with a recording sink: every routing behaviour
//! checked without a socket, a file or a clock.

use std::rc::Rc;

use serde_json::{Value, json};

use super::*;

mod cluster;
mod delivery;
mod lifecycle;
mod shared;
mod signed;
mod tokens;
use crate::proto::frame;
use crate::proto::handshake::Upgrade;

pub(super) const T0: u64 = 1_800_000_000_000;
const CTRL: Origin = Origin::Control(ConnId {
    key: 0,
    generation: 7,
});

/// A sink that records every effect.
#[derive(Default)]
pub(super) struct Rec {
    pub(super) frames: Vec<(Rc<[u8]>, Key)>,
    /// Text of every frame queued to each connection, in order.
    pub(super) got: Vec<(ConnId, String)>,
    pub(super) opened: Vec<ConnId>,
    pub(super) refused: Vec<(ConnId, u16)>,
    pub(super) closed: Vec<(ConnId, u16)>,
    pub(super) replies: Vec<(Value, bool)>,
    pub(super) events: Vec<Value>,
    /// HTTP answers (`collect`): status and body.
    pub(super) answers: Vec<(u16, Vec<u8>)>,
    pub(super) log: Vec<LogRecord<'static>>,
    /// What `sync_now` answers; how often it was asked.
    pub(super) sync_fails: bool,
    pub(super) syncs: usize,
    /// Jobs relayed to Redis: reference, job JSON, message id.
    pub(super) relays: Vec<(u64, Value, Option<String>)>,
    /// Seq ranges asked of the recent window.
    pub(super) fetches: Vec<(u64, u64)>,
    /// Mailbox calls: reference and the call as text (`{call:?}`).
    pub(super) calls: Vec<(u64, String)>,
}

impl Out for Rec {
    fn open(&mut self, conn: ConnId, _accept: &str) {
        self.opened.push(conn);
    }
    fn refuse(&mut self, conn: ConnId, status: u16, _reason: &'static str) {
        self.refused.push((conn, status));
    }
    fn send(&mut self, conn: ConnId, frame: Rc<[u8]>) {
        let text = String::from_utf8_lossy(frame::server_payload(&frame)).into_owned();
        self.got.push((conn, text));
    }
    fn shared(&mut self, frame: Rc<[u8]>, key: Key) -> FrameRef {
        self.frames.push((frame, key));
        FrameRef(self.frames.len() as u32 - 1)
    }
    fn push(&mut self, conns: impl Iterator<Item = ConnId>, frame: FrameRef) {
        for conn in conns {
            let bytes = self.frames[frame.0 as usize].0.clone();
            self.send(conn, bytes);
        }
    }
    fn close(&mut self, conn: ConnId, code: u16, _reason: &'static str) {
        self.closed.push((conn, code));
    }
    fn reply(&mut self, _to: Origin, line: Vec<u8>, logged: bool) {
        self.replies
            .push((serde_json::from_slice(&line).unwrap(), logged));
    }
    fn answer(&mut self, _to: Origin, status: u16, body: Vec<u8>) {
        self.answers.push((status, body));
    }
    fn event(&mut self, _to: Origin, line: &[u8]) -> bool {
        self.events.push(serde_json::from_slice(line).unwrap());
        true
    }
    fn log(&mut self, record: &LogRecord<'_>) {
        self.log.push(record.clone().into_owned());
    }
    fn relay(&mut self, reference: u64, job: &[u8], message_id: Option<&str>) {
        let job = serde_json::from_slice(job).expect("a relayed job is JSON");
        self.relays
            .push((reference, job, message_id.map(str::to_owned)));
    }
    fn fetch(&mut self, from: u64, to: u64) {
        self.fetches.push((from, to));
    }
    fn call(&mut self, reference: u64, call: Call<'_>) {
        self.calls.push((reference, format!("{call:?}")));
    }
    fn sync_now(&mut self) -> bool {
        self.syncs += 1;
        !self.sync_fails
    }
    fn link(&self, _conn: ConnId) -> Option<Link> {
        Some(Link {
            peer: "127.0.0.1:9".parse().ok(),
            forwarded: None,
            last_seen_ms: 0,
        })
    }
    fn transport(&self) -> Transport<'_> {
        Transport::default()
    }
}

impl Rec {
    /// Envelopes and other JSON texts `conn` received.
    pub(super) fn texts(&self, conn: ConnId) -> Vec<Value> {
        self.got
            .iter()
            .filter(|(c, _)| *c == conn)
            .map(|(_, t)| serde_json::from_str(t).unwrap())
            .collect()
    }

    pub(super) fn seqs(&self, conn: ConnId) -> Vec<u64> {
        self.texts(conn)
            .iter()
            .filter_map(|v| v["seq"].as_u64())
            .collect()
    }

    pub(super) fn last_reply(&self) -> &Value {
        &self.replies.last().expect("a reply").0
    }
}

pub(super) fn config() -> Config {
    Config {
        max_connections: 100,
        max_conns_per_user: 0,
        max_topics: 2,
        topics_default_all: true,
        max_jobs: 10,
        mailbox: 0,
        mailbox_ttl: 60,
        mailbox_bytes: 1 << 20,
        data_log: false,
        started_unix_ms: T0,
        id_prefix: "test".into(),
        jwt: None,
        token_http: false,
        node: None,
    }
}

/// A hub whose tokens `t-NAME` authenticate user `NAME`.
pub(super) fn hub_with(config: Config, users: &[&str]) -> Hub {
    let mut tokens = Tokens::default();
    for u in users {
        tokens.grant(&format!("t-{u}"), u).unwrap();
    }
    Hub::new(config, tokens)
}

pub(super) fn hub(users: &[&str]) -> Hub {
    hub_with(config(), users)
}

pub(super) fn upgrade(token: &str, since: Option<u64>) -> Upgrade {
    Upgrade {
        token: token.into(),
        accept: "x".into(),
        since,
        device: None,
        user_agent: None,
        forwarded_for: None,
    }
}

/// Connect slot `key` as `user` at virtual ms `now`.
pub(super) fn connect(
    hub: &mut Hub,
    out: &mut Rec,
    key: u32,
    user: &str,
    since: Option<u64>,
) -> ConnId {
    connect_request(hub, out, 0, key, upgrade(&format!("t-{user}"), since))
}

/// Upgrade slot `key` (generation and serial `key + 100`) at `now`.
pub(super) fn connect_request(
    hub: &mut Hub,
    out: &mut Rec,
    now: u64,
    key: u32,
    request: Upgrade,
) -> ConnId {
    let conn = ConnId {
        key,
        generation: key + 100,
    };
    let serial = u64::from(key + 100);
    hub.handle(
        now,
        Input::Upgrade {
            conn,
            request,
            serial,
        },
        out,
    );
    conn
}

pub(super) fn request(hub: &mut Hub, out: &mut Rec, now: u64, body: Value) -> Value {
    let line = body.to_string();
    hub.handle(
        now,
        Input::Request {
            origin: CTRL,
            line: line.as_bytes(),
        },
        out,
    );
    out.last_reply().clone()
}

pub(super) fn push(hub: &mut Hub, out: &mut Rec, body: Value) -> Value {
    let mut body = body;
    body["op"] = json!("push");
    request(hub, out, 0, body)
}
