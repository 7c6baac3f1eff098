//! The event stream of `events` listeners: `online`, `offline` and the
//! clients' upstream messages, one JSON line each.

use log::debug;
use serde_json::{Value, json};

use super::{ConnId, Hub, Out};

impl Hub {
    /// Queue an event line to every listener; a listener that is gone
    /// leaves the list.
    fn emit(&mut self, mut event: Value, out: &mut impl Out) {
        event["ts"] = json!(self.unix_ms());
        let mut line = event.to_string().into_bytes();
        line.push(b'\n');
        self.listeners.retain(|&to| out.event(to, &line));
    }

    /// An upstream client message: to the listeners, or dropped.
    pub(super) fn upstream(
        &mut self,
        conn: ConnId,
        text: Option<&str>,
        binary: Option<&[u8]>,
        out: &mut impl Out,
    ) {
        let Some(session) = self.sessions.get(conn) else {
            return;
        };
        self.stats.messages_in += 1;
        if self.listeners.is_empty() {
            debug!(
                "conn {}: upstream message dropped (no event listener)",
                session.serial
            );
            return;
        }
        let mut event = json!({
            "event": "message",
            "user": self.users.name_of(session).as_ref(),
            "connection": session.serial,
        });
        match (text, binary) {
            (Some(text), _) => event["text"] = json!(text),
            (None, Some(data)) => {
                use base64::Engine as _;
                event["binary"] = json!(base64::engine::general_purpose::STANDARD.encode(data));
            }
            (None, None) => {}
        }
        self.emit(event, out);
    }

    /// `online` / `offline` events for an open connection.
    pub(super) fn presence(&mut self, conn: ConnId, online: bool, out: &mut impl Out) {
        if self.listeners.is_empty() {
            return;
        }
        let Some(session) = self.sessions.get(conn) else {
            return;
        };
        let mut event = json!({
            "event": if online { "online" } else { "offline" },
            "user": self.users.name_of(session).as_ref(),
            "connection": session.serial,
        });
        if online {
            let peer = out.link(conn).as_ref().and_then(super::ops::peer_of);
            event["peer"] = json!(peer);
            event["device"] = json!(self.sessions.device_of(session));
        }
        self.emit(event, out);
    }
}
