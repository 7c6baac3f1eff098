//! Topics: which open connections follow which topic, and the clients'
//! `{"op":"subscribe"|"unsubscribe","topic":T}` commands.

use std::collections::HashMap;
use std::rc::Rc;

use serde::Deserialize;
use serde_json::{Value, json};

use super::session::Sessions;
use super::{ConnId, Hub, Out};
use crate::proto::frame::{self, OpCode};

/// Longest topic name, in bytes.
pub const MAX_TOPIC: usize = 128;

/// The one rule for a topic name: 1 to [`MAX_TOPIC`] bytes.
pub fn valid_topic(topic: &str) -> bool {
    !topic.is_empty() && topic.len() <= MAX_TOPIC
}

/// A client's topic command.
#[derive(Debug, Deserialize)]
pub struct Command {
    op: String,
    topic: Option<Value>,
}

impl Command {
    /// The command in a client's text, if it is one.
    pub fn parse(text: &str) -> Option<Command> {
        if !text.starts_with('{') {
            return None;
        }
        let command: Command = serde_json::from_str(text).ok()?;
        matches!(command.op.as_str(), "subscribe" | "unsubscribe").then_some(command)
    }
}

/// Topic → the connections subscribed to it.
#[derive(Debug, Default)]
pub struct Topics {
    map: HashMap<Rc<str>, Vec<ConnId>>,
}

impl Topics {
    /// Topics with at least one subscriber.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether nobody follows any topic.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The subscribers of `topic`.
    pub fn subscribers(&self, topic: &str) -> &[ConnId] {
        self.map.get(topic).map_or(&[], Vec::as_slice)
    }

    /// Subscribe `conn` (at most `cap` topics per connection).
    pub fn subscribe(
        &mut self,
        conn: ConnId,
        topic: &str,
        cap: usize,
        sessions: &mut Sessions,
    ) -> Result<(), String> {
        let Some(session) = sessions.get_mut(conn) else {
            return Ok(());
        };
        let list = session.topics.get_or_insert_with(Box::default);
        if list.iter().any(|t| &**t == topic) {
            return Ok(());
        }
        if list.len() >= cap {
            if list.is_empty() {
                session.topics = None;
            }
            return Err(format!("topic limit {cap} reached"));
        }
        let name: Rc<str> = match self.map.get_key_value(topic) {
            Some((name, _)) => name.clone(),
            None => Rc::from(topic),
        };
        list.push(name.clone());
        self.map.entry(name).or_default().push(conn);
        Ok(())
    }

    /// Unsubscribe `conn` from `topic`.
    pub fn unsubscribe(&mut self, conn: ConnId, topic: &str, sessions: &mut Sessions) {
        if let Some(session) = sessions.get_mut(conn)
            && let Some(list) = &mut session.topics
        {
            list.retain(|t| &**t != topic);
            if list.is_empty() {
                session.topics = None;
            }
        }
        self.remove_subscriber(topic, conn);
    }

    /// Drop every subscription of a connection that is going away.
    pub fn leave_all(&mut self, conn: ConnId, sessions: &mut Sessions) {
        let Some(list) = sessions.get_mut(conn).and_then(|s| s.topics.take()) else {
            return;
        };
        for topic in list.iter() {
            self.remove_subscriber(topic, conn);
        }
    }

    /// The one removal both paths share; a topic goes with its last follower.
    fn remove_subscriber(&mut self, topic: &str, conn: ConnId) {
        if let Some(conns) = self.map.get_mut(topic) {
            conns.retain(|&c| c != conn);
            if conns.is_empty() {
                self.map.remove(topic);
            }
        }
    }
}

impl Hub {
    /// Carry out a client's topic command and answer it on its connection.
    pub(super) fn topic_command(&mut self, conn: ConnId, command: Command, out: &mut impl Out) {
        let topic = command.topic.unwrap_or(Value::Null);
        let result = match topic.as_str() {
            Some(t) if valid_topic(t) => {
                if command.op == "subscribe" {
                    let cap = self.config.max_topics;
                    self.topics.subscribe(conn, t, cap, &mut self.sessions)
                } else {
                    self.topics.unsubscribe(conn, t, &mut self.sessions);
                    Ok(())
                }
            }
            _ => Err(format!("topic must be a string of 1 to {MAX_TOPIC} bytes")),
        };
        let reply = match result {
            Ok(()) => json!({"op": command.op, "topic": topic, "ok": true}),
            Err(e) => json!({"op": command.op, "topic": topic, "ok": false, "error": e}),
        };
        let bytes = frame::encode(OpCode::Text, reply.to_string().as_bytes());
        out.send(conn, bytes.into());
    }
}
