//! The Redis link's input: replies on the command socket, each matched to
//! the command it answers, and messages on the subscriber socket. The
//! bytes are taken out of the socket's buffer while they are parsed, so the
//! hub may queue more commands meanwhile.

use super::event_loop::Server;
use super::redis_link::{Expect, Which};
use super::redis_sock::KEEP_BUFFER;
use crate::hub::Input;
use crate::redis::resp::{self, Reply};

impl Server {
    /// Replies on the command socket, each matched to its command.
    pub(super) fn redis_replies(&mut self) {
        let Some(mut buf) = self.redis_input(Which::Cmd) else {
            return;
        };
        let mut at = 0;
        loop {
            let (reply, n) = match resp::parse(&buf[at..]) {
                Ok(Some(parsed)) => parsed,
                Ok(None) => break,
                Err(e) => return self.redis_fail(&format!("protocol error: {e}")),
            };
            at += n;
            let expect = self.wire.redis.as_mut().and_then(|l| l.expect.pop_front());
            let Some(expect) = expect else {
                return self.redis_fail("a reply nobody asked for");
            };
            let error = reply.error().map(String::from_utf8_lossy);
            match (expect, error) {
                (Expect::Setup | Expect::Seed, Some(e)) => {
                    return self.redis_fail(&format!("setup refused: {e}"));
                }
                (Expect::Setup, None) => {}
                (Expect::Seed, None) => {
                    if let Some(link) = self.wire.redis.as_mut() {
                        link.seeded = true;
                        link.counter = reply.as_int().map_or(0, |n| n.max(0) as u64);
                    }
                    self.redis_maybe_up();
                }
                (Expect::Relay(reference), Some(e)) => self.feed(Input::Relayed {
                    reference,
                    result: Err(&e),
                }),
                (Expect::Lease, _) => {
                    let items = reply.as_array().unwrap_or_default();
                    let first = items.iter().filter_map(Reply::as_bytes).min();
                    let node = self.wire.redis.as_ref().map(|l| l.node.as_bytes());
                    let leader = first.is_some() && first == node;
                    let alive = items.len();
                    self.feed(Input::RedisNodes { alive, leader });
                }
                (Expect::Range, _) => {
                    let items = reply.as_array().unwrap_or_default();
                    let payloads: Vec<&[u8]> = items.iter().filter_map(Reply::as_bytes).collect();
                    self.feed(Input::Recovered {
                        payloads: &payloads,
                    });
                }
                (Expect::Call(reference), Some(e)) => self.feed(Input::Called {
                    reference,
                    result: Err(&e),
                }),
                (Expect::Call(reference), None) => {
                    let mut text = [0; 20];
                    let items: Vec<&[u8]> = match (&reply.as_array(), reply.as_int()) {
                        (Some(items), _) => items.iter().filter_map(Reply::as_bytes).collect(),
                        (None, Some(n)) => vec![resp::decimal(n.max(0) as u64, &mut text)],
                        (None, None) => reply.as_bytes().into_iter().collect(),
                    };
                    self.feed(Input::Called {
                        reference,
                        result: Ok(&items),
                    });
                }
                (Expect::Quiet, Some(e)) => log::warn!("redis: a mailbox call failed: {e}"),
                (Expect::Quiet, None) => {}
                (Expect::Relay(reference), None) => {
                    let seq = reply.as_int().and_then(|n| u64::try_from(n).ok());
                    let result = seq.ok_or("the function did not answer a seq");
                    self.feed(Input::Relayed { reference, result });
                }
            }
        }
        self.redis_keep(Which::Cmd, buf.split_off(at));
    }

    /// Messages on the subscriber socket.
    pub(super) fn redis_messages(&mut self) {
        let Some(mut buf) = self.redis_input(Which::Sub) else {
            return;
        };
        let mut at = 0;
        loop {
            let (reply, n) = match resp::parse(&buf[at..]) {
                Ok(Some(parsed)) => parsed,
                Ok(None) => break,
                Err(e) => return self.redis_fail(&format!("protocol error: {e}")),
            };
            at += n;
            if let Some((channel, payload)) = resp::pubsub_message(&reply) {
                let Some(link) = self.wire.redis.as_mut() else {
                    return;
                };
                if link.channel.as_bytes() == channel {
                    self.feed(Input::Remote { payload });
                } else if link.probe_channel.as_bytes() == channel {
                    let n = std::str::from_utf8(payload)
                        .ok()
                        .and_then(|s| s.parse().ok());
                    link.probe_seen = link.probe_seen.max(n.unwrap_or(0));
                }
            } else if let Some(e) = reply.error() {
                let e = String::from_utf8_lossy(e).into_owned();
                return self.redis_fail(&format!("subscriber refused: {e}"));
            } else if is_subscribed(&reply) {
                if let Some(link) = self.wire.redis.as_mut() {
                    link.subscribed = true;
                }
                self.redis_maybe_up();
            }
        }
        self.redis_keep(Which::Sub, buf.split_off(at));
    }

    /// Take a side's received bytes out to parse them (the hub may queue
    /// more commands meanwhile).
    fn redis_input(&mut self, which: Which) -> Option<Vec<u8>> {
        let link = self.wire.redis.as_mut()?;
        let side = match which {
            Which::Cmd => link.cmd.as_mut()?,
            Which::Sub => link.sub.as_mut()?,
        };
        Some(std::mem::take(&mut side.input))
    }

    /// Put back the bytes of an incomplete reply.
    fn redis_keep(&mut self, which: Which, rest: Vec<u8>) {
        let Some(link) = self.wire.redis.as_mut() else {
            return;
        };
        let side = match which {
            Which::Cmd => link.cmd.as_mut(),
            Which::Sub => link.sub.as_mut(),
        };
        if let Some(side) = side {
            // Bytes read while the hub ran would have gone into `input`.
            let mut rest = rest;
            rest.append(&mut side.input);
            if rest.is_empty() && rest.capacity() > KEEP_BUFFER {
                rest = Vec::new();
            }
            side.input = rest;
        }
    }
}

/// `["subscribe", channel, count]`.
fn is_subscribed(reply: &Reply<'_>) -> bool {
    reply
        .as_array()
        .and_then(|items| items.first())
        .and_then(Reply::as_bytes)
        .is_some_and(|kind| kind.eq_ignore_ascii_case(b"subscribe"))
}
