//! Topics: which open connections follow which topic, the clients'
//! `{"op":"subscribe"|"unsubscribe","topic":T}` commands, and the topic
//! patterns a token may be granted ([`allowed`]).

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

/// Most topic patterns one `grant` may carry.
pub const MAX_PATTERNS: usize = 64;

/// Whether `topic` may be followed under `patterns`: an exact topic name,
/// or a prefix ending in `*` (`"dev/42/*"` matches `dev/42/temp`, `"*"`
/// matches every topic). `None` (no list) answers `default_all`. Pure, so
/// every source of permissions (a grant now, a JWT claim later) shares it.
pub fn allowed(patterns: Option<&[Box<str>]>, topic: &str, default_all: bool) -> bool {
    let Some(patterns) = patterns else {
        return default_all;
    };
    patterns.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => topic.starts_with(prefix),
        None => **p == *topic,
    })
}

/// The rule for a pattern: a valid topic name in which `*` may only be the
/// last character.
pub fn valid_pattern(pattern: &str) -> bool {
    let body = pattern.strip_suffix('*').unwrap_or(pattern);
    valid_topic(pattern) && !body.contains('*')
}

/// Check the `topics` list of a `grant` and keep it compactly.
pub fn patterns(list: Vec<String>) -> Result<Rc<[Box<str>]>, String> {
    if list.len() > MAX_PATTERNS {
        return Err(format!("at most {MAX_PATTERNS} topic patterns per grant"));
    }
    if let Some(bad) = list.iter().find(|p| !valid_pattern(p)) {
        return Err(format!(
            "bad topic pattern {bad:?}: 1 to {MAX_TOPIC} bytes, '*' only at the end"
        ));
    }
    Ok(list.into_iter().map(String::into_boxed_str).collect())
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
                    if self.may_follow(conn, t) {
                        self.topics.subscribe(conn, t, cap, &mut self.sessions)
                    } else {
                        Err("topic not allowed".into())
                    }
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

    /// Whether `conn`'s token allows `topic`: a JWT's `topics` claim, or
    /// the grant's patterns found through the session's token tag, so the
    /// session holds nothing more.
    fn may_follow(&self, conn: ConnId, topic: &str) -> bool {
        self.sessions.get(conn).is_some_and(|s| {
            let patterns = match self.signed.topics(conn) {
                Some(claim) => claim,
                None => self.tokens.topics_of(s.token),
            };
            allowed(patterns, topic, self.config.topics_default_all)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(patterns: &[&str]) -> Vec<Box<str>> {
        patterns.iter().map(|&p| Box::from(p)).collect()
    }

    #[test]
    fn patterns_match_exact_names_and_prefixes() {
        let p = list(&["news", "dev/42/*"]);
        assert!(allowed(Some(&p), "news", false));
        assert!(!allowed(Some(&p), "news/x", true));
        assert!(allowed(Some(&p), "dev/42/temp", false));
        assert!(allowed(Some(&p), "dev/42/", false));
        assert!(!allowed(Some(&p), "dev/42", false));
        assert!(!allowed(Some(&p), "dev/421/temp", true));
        assert!(allowed(Some(&list(&["*"])), "anything", false));
        assert!(
            !allowed(Some(&[]), "anything", true),
            "an empty list allows none"
        );
        assert!(allowed(None, "anything", true));
        assert!(!allowed(None, "anything", false));
    }

    #[test]
    fn patterns_are_checked_at_grant_time() {
        assert!(valid_pattern("*") && valid_pattern("a/*") && valid_pattern("a"));
        assert!(!valid_pattern("") && !valid_pattern("a*b") && !valid_pattern("**"));
        assert!(!valid_pattern(&"x".repeat(MAX_TOPIC + 1)));
        assert!(valid_pattern("é") && valid_pattern("dév/*") && !valid_pattern("é*é"));
        assert!(patterns(vec!["a".into(), "b/*".into()]).is_ok());
        assert!(patterns(vec!["a*/b".into()]).is_err());
        assert!(patterns(vec!["t".into(); MAX_PATTERNS + 1]).is_err());
    }
}
