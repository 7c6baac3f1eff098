//! The Redis link of a cluster node (`--redis`, docs/cluster.md): two
//! sockets of the one loop, with their own tokens. The *command* socket
//! carries the node's setup (`AUTH`, `SELECT`, `FUNCTION LOAD`, the seq
//! seed) and every relayed job (`FCALL wspush_push`), pipelined: what a
//! turn queues leaves in one write at the end of the turn, and replies are
//! matched to commands in order. The *subscriber* socket says `SUBSCRIBE`
//! once and then only receives the channel's messages, which go to the hub
//! as [`Input::Remote`].
//!
//! The link is ready once the counter is seeded and the subscription is
//! confirmed ([`Input::RedisLink`]). Any failure (a socket error or EOF, a
//! protocol error, a setup command refused, no readiness within
//! [`CONNECT_TIMEOUT_MS`]) drops both sockets, tells the hub, and tries
//! again after a back-off of 1 s doubling to [`MAX_BACKOFF_MS`], on the
//! loop's wheel.

use std::collections::VecDeque;

use log::{info, warn};

use super::event_loop::Server;
use super::redis_sock::{Side, Sock};
use super::{REDIS_CMD, REDIS_SUB, Timer};
use crate::hub::{Call, Input};
use crate::redis::addr::RedisAddr;
use crate::redis::resp;

/// The function library every node loads on connecting.
const FUNCTIONS: &str = include_str!("../redis/functions.lua");
/// How long connecting and the setup may take.
const CONNECT_TIMEOUT_MS: u64 = 5_000;
/// How often a ready link checks that its subscription still delivers:
/// it publishes a probe on its own channel, which must come back before
/// the next one is due.
const PROBE_MS: u64 = 5_000;
/// A node's lease (renewed with every probe): a node that stops renewing
/// it is no longer counted alive after this long.
const LEASE_MS: &[u8] = b"15000";
/// Longest wait between two attempts.
const MAX_BACKOFF_MS: u64 = 4_000;

/// What a reply on the command socket answers.
#[derive(Debug, Clone, Copy)]
pub(super) enum Expect {
    /// `AUTH`, `SELECT`, `FUNCTION LOAD`: anything but an error.
    Setup,
    /// `FCALL wspush_seed`.
    Seed,
    /// `FCALL wspush_push` of the hub's job with this reference.
    Relay(u64),
    /// `FCALL wspush_range`: the recent window's messages.
    Range,
    /// `FCALL wspush_lease`: the nodes alive.
    Lease,
    /// A mailbox function the hub called with this reference.
    Call(u64),
    /// A mailbox function whose answer nobody waits for (an error is
    /// logged).
    Quiet,
}

/// The link's state (kept in `Wire`, so that [`crate::hub::Out::relay`]
/// can queue commands).
pub struct RedisLink {
    addr: RedisAddr,
    pub(super) channel: String,
    pub(super) node: String,
    pub(super) cmd: Option<Side>,
    pub(super) sub: Option<Side>,
    pub(super) expect: VecDeque<Expect>,
    pub(super) seeded: bool,
    pub(super) subscribed: bool,
    up: bool,
    /// Attempts that failed in a row.
    failures: u32,
    /// Of the pending [`Timer::Redis`]; older ones are ignored.
    generation: u32,
    /// This node's probe channel, and the last probe sent and seen back.
    pub(super) probe_channel: String,
    probe_sent: u64,
    pub(super) probe_seen: u64,
    /// Redis's seq counter as the seed left it.
    pub(super) counter: u64,
    /// With `--mailbox`: the bounds the node sets in Redis on connecting
    /// (per user, TTL in ms, bytes).
    mailbox: Option<[u64; 3]>,
}

impl RedisLink {
    /// A link that has not connected yet.
    pub fn new(
        addr: RedisAddr,
        channel: String,
        node: String,
        mailbox: Option<[u64; 3]>,
    ) -> RedisLink {
        let probe_channel = format!("{channel}.probe.{node}");
        RedisLink {
            probe_channel,
            probe_sent: 0,
            probe_seen: 0,
            counter: 0,
            mailbox,
            addr,
            channel,
            node,
            cmd: None,
            sub: None,
            expect: VecDeque::new(),
            seeded: false,
            subscribed: false,
            up: false,
            failures: 0,
            generation: 0,
        }
    }

    /// Queue job `reference` for Redis's function (sent at the end of the
    /// turn). Without a connection nothing is queued: the hub hears that
    /// the link is down and answers the job itself.
    pub fn relay(&mut self, reference: u64, job: &[u8], message_id: Option<&str>) {
        let Some(cmd) = self.cmd.as_mut().filter(|_| self.up) else {
            return;
        };
        let mut digits = [0; 20];
        let reference_text = resp::decimal(reference, &mut digits);
        let mut args: Vec<&[u8]> = vec![
            b"FCALL",
            b"wspush_push",
            b"0",
            self.channel.as_bytes(),
            job,
            self.node.as_bytes(),
            reference_text,
        ];
        if let Some(id) = message_id {
            args.push(id.as_bytes());
        }
        resp::command(&mut cmd.out, &args);
        self.expect.push_back(Expect::Relay(reference));
    }
}

impl RedisLink {
    /// Queue a request for seqs `from..=to` of the recent window.
    pub fn fetch(&mut self, from: u64, to: u64) {
        let Some(cmd) = self.cmd.as_mut().filter(|_| self.up) else {
            return;
        };
        let (mut a, mut b) = ([0; 20], [0; 20]);
        let (from, to) = (resp::decimal(from, &mut a), resp::decimal(to, &mut b));
        let range: [&[u8]; 6] = [
            b"FCALL",
            b"wspush_range",
            b"0",
            self.channel.as_bytes(),
            from,
            to,
        ];
        resp::command(&mut cmd.out, &range);
        self.expect.push_back(Expect::Range);
    }
}

impl RedisLink {
    /// Queue a call of a mailbox function (`reference` 0: no answer).
    pub fn call(&mut self, reference: u64, call: Call<'_>) {
        let Some(cmd) = self.cmd.as_mut().filter(|_| self.up) else {
            return;
        };
        let (mut a, mut b, mut c) = ([0; 20], [0; 20], [0; 20]);
        let channel = self.channel.as_bytes();
        let node = self.node.as_bytes();
        let mut args: Vec<&[u8]> = vec![b"FCALL"];
        match call {
            Call::Online {
                user,
                since,
                collect,
            } => {
                let since = since.map_or(&b""[..], |s| resp::decimal(s, &mut a));
                let collect: &[u8] = if collect { b"1" } else { b"0" };
                let rest: [&[u8]; 7] = [
                    b"wspush_online",
                    b"0",
                    channel,
                    node,
                    user.as_bytes(),
                    since,
                    collect,
                ];
                args.extend(rest);
            }
            Call::Offline { user } => {
                args.extend([&b"wspush_offline"[..], b"0", channel, node, user.as_bytes()]);
            }
            Call::Present { users } => {
                args.extend([&b"wspush_present"[..], b"0", channel, node]);
                args.extend(users.iter().map(|u| u.as_bytes()));
            }
            Call::Claim { user, seq } => {
                let seq = resp::decimal(seq, &mut a);
                args.extend([&b"wspush_claim"[..], b"0", channel, user.as_bytes(), seq]);
            }
            Call::Messages {
                user,
                status,
                after,
                limit,
            } => {
                let (after, limit) = (
                    resp::decimal(after, &mut b),
                    resp::decimal(limit as u64, &mut c),
                );
                let (user, status) = (
                    user.unwrap_or("").as_bytes(),
                    status.unwrap_or("").as_bytes(),
                );
                args.extend([
                    &b"wspush_messages"[..],
                    b"0",
                    channel,
                    user,
                    status,
                    after,
                    limit,
                ]);
            }
            Call::Delete { message_id } => {
                args.extend([&b"wspush_delete"[..], b"0", channel, message_id.as_bytes()]);
            }
        }
        resp::command(&mut cmd.out, &args);
        self.expect.push_back(match reference {
            0 => Expect::Quiet,
            r => Expect::Call(r),
        });
    }
}

/// Which socket an event is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Which {
    Cmd,
    Sub,
}

impl Server {
    /// Connect both sockets and queue the setup.
    pub(super) fn redis_start(&mut self) {
        let high = self.hub.cluster_high();
        let now = self.wire.now;
        let Some(link) = self.wire.redis.as_mut() else {
            return;
        };
        link.generation = link.generation.wrapping_add(1);
        let timer = Timer::Redis {
            generation: link.generation,
        };
        self.wire.wheel.insert(now + CONNECT_TIMEOUT_MS, timer);
        let opened = Sock::open(&link.addr).and_then(|cmd| Ok((cmd, Sock::open(&link.addr)?)));
        let (mut cmd, mut sub) = match opened {
            Ok(pair) => pair,
            Err(e) => {
                let why = format!("cannot connect to {}: {e}", link.addr);
                return self.redis_fail(&why);
            }
        };
        let registry = self.poll.registry();
        if let Err(e) = cmd
            .register(registry, REDIS_CMD)
            .and_then(|()| sub.register(registry, REDIS_SUB))
        {
            return self.redis_fail(&format!("cannot register the redis sockets: {e}"));
        }
        let side = |sock| Side {
            sock,
            out: Vec::new(),
            written: 0,
            input: Vec::new(),
        };
        let (mut cmd, mut sub) = (side(cmd), side(sub));
        link.addr.connect_commands(&mut cmd.out);
        link.addr.connect_commands(&mut sub.out);
        for _ in 0..link.addr.connect_reply_count() {
            link.expect.push_back(Expect::Setup);
        }
        // Named for operators (CLIENT LIST): wspush-NODE-cmd / -sub.
        for (side, role) in [(&mut cmd, "cmd"), (&mut sub, "sub")] {
            let name = format!("wspush-{}-{role}", link.node);
            resp::command(&mut side.out, &[b"CLIENT", b"SETNAME", name.as_bytes()]);
        }
        link.expect.push_back(Expect::Setup);
        resp::command(
            &mut cmd.out,
            &[b"FUNCTION", b"LOAD", b"REPLACE", FUNCTIONS.as_bytes()],
        );
        link.expect.push_back(Expect::Setup);
        let mut digits = [0; 20];
        let high = resp::decimal(high, &mut digits);
        let seed: [&[u8]; 5] = [
            b"FCALL",
            b"wspush_seed",
            b"0",
            link.channel.as_bytes(),
            high,
        ];
        resp::command(&mut cmd.out, &seed);
        link.expect.push_back(Expect::Seed);
        if let Some(bounds) = link.mailbox {
            let mut digits = [[0; 20]; 3];
            let [d0, d1, d2] = &mut digits;
            let config: [&[u8]; 7] = [
                b"FCALL",
                b"wspush_config",
                b"0",
                link.channel.as_bytes(),
                resp::decimal(bounds[0], d0),
                resp::decimal(bounds[1], d1),
                resp::decimal(bounds[2], d2),
            ];
            resp::command(&mut cmd.out, &config);
            link.expect.push_back(Expect::Setup);
        }
        // The lease first, so that the users this node registers count as
        // online from its first job on.
        let lease: [&[u8]; 6] = [
            b"FCALL",
            b"wspush_lease",
            b"0",
            link.channel.as_bytes(),
            link.node.as_bytes(),
            LEASE_MS,
        ];
        resp::command(&mut cmd.out, &lease);
        link.expect.push_back(Expect::Lease);
        let channels: [&[u8]; 3] = [
            b"SUBSCRIBE",
            link.channel.as_bytes(),
            link.probe_channel.as_bytes(),
        ];
        resp::command(&mut sub.out, &channels);
        link.probe_seen = link.probe_sent;
        link.cmd = Some(cmd);
        link.sub = Some(sub);
    }

    /// The link's deadline: connect again, or give up on a slow attempt.
    pub(super) fn redis_timer(&mut self, generation: u32) {
        let Some(link) = self.wire.redis.as_ref() else {
            return;
        };
        if link.generation != generation {
            return;
        }
        if link.cmd.is_none() {
            self.redis_start();
        } else if !link.up {
            self.redis_fail("no answer from redis within 5 s");
        } else if link.probe_seen < link.probe_sent {
            self.redis_fail("the subscription stopped delivering: no probe back within 5 s");
        } else {
            self.redis_probe();
        }
    }

    /// Publish the next probe on this node's probe channel, and check for
    /// it when the next one is due.
    fn redis_probe(&mut self) {
        let now = self.wire.now;
        let Some(link) = self.wire.redis.as_mut() else {
            return;
        };
        let Some(cmd) = link.cmd.as_mut() else {
            return;
        };
        link.probe_sent += 1;
        let mut digits = [0; 20];
        let n = resp::decimal(link.probe_sent, &mut digits);
        resp::command(
            &mut cmd.out,
            &[b"PUBLISH", link.probe_channel.as_bytes(), n],
        );
        link.expect.push_back(Expect::Setup);
        let lease: [&[u8]; 6] = [
            b"FCALL",
            b"wspush_lease",
            b"0",
            link.channel.as_bytes(),
            link.node.as_bytes(),
            LEASE_MS,
        ];
        resp::command(&mut cmd.out, &lease);
        link.expect.push_back(Expect::Lease);
        let timer = Timer::Redis {
            generation: link.generation,
        };
        self.wire.wheel.insert(now + PROBE_MS, timer);
    }

    /// Drop both sockets, tell the hub, and try again after a back-off.
    pub(super) fn redis_fail(&mut self, why: &str) {
        let now = self.wire.now;
        let Some(link) = self.wire.redis.as_mut() else {
            return;
        };
        let registry = self.poll.registry();
        for side in [link.cmd.take(), link.sub.take()].into_iter().flatten() {
            let mut side = side;
            side.sock.deregister(registry);
        }
        link.expect.clear();
        let was_up = std::mem::replace(&mut link.up, false);
        link.seeded = false;
        link.subscribed = false;
        let delay = (1000u64 << link.failures.min(8)).min(MAX_BACKOFF_MS);
        link.failures += 1;
        link.generation = link.generation.wrapping_add(1);
        let timer = Timer::Redis {
            generation: link.generation,
        };
        self.wire.wheel.insert(now + delay, timer);
        if was_up || link.failures == 1 {
            warn!("redis: link down: {why}; retrying in {} s", delay / 1000);
        } else {
            log::debug!("redis: {why}; retrying in {} s", delay / 1000);
        }
        if was_up {
            self.feed(Input::RedisLink {
                up: false,
                counter: 0,
            });
        }
    }

    /// Readiness on one of the link's sockets.
    pub(super) fn redis_ready(&mut self, which: Which) {
        let Some(link) = self.wire.redis.as_mut() else {
            return;
        };
        let side = match which {
            Which::Cmd => link.cmd.as_mut(),
            Which::Sub => link.sub.as_mut(),
        };
        let Some(side) = side else {
            return;
        };
        let checked = match side.sock.take_error() {
            Ok(Some(e)) | Err(e) => Err(e),
            Ok(None) => side.flush().and_then(|()| side.fill(&mut self.scratch)),
        };
        match checked {
            Ok(true) => {}
            Ok(false) => return self.redis_fail("redis closed the connection"),
            Err(e) => return self.redis_fail(&e.to_string()),
        }
        match which {
            Which::Cmd => self.redis_replies(),
            Which::Sub => self.redis_messages(),
        }
    }

    /// Write what this turn queued for Redis.
    pub(super) fn redis_flush(&mut self) {
        let Some(link) = self.wire.redis.as_mut() else {
            return;
        };
        let sides = [link.cmd.as_mut(), link.sub.as_mut()];
        let failed = sides.into_iter().flatten().find_map(|s| s.flush().err());
        if let Some(e) = failed {
            self.redis_fail(&e.to_string());
        }
    }

    /// Seeded and subscribed: the link is ready.
    pub(super) fn redis_maybe_up(&mut self) {
        let Some(link) = self.wire.redis.as_mut() else {
            return;
        };
        if link.up || !link.seeded || !link.subscribed {
            return;
        }
        link.up = true;
        link.failures = 0;
        link.generation = link.generation.wrapping_add(1); // the connect deadline is void
        self.redis_probe();
        let Some(link) = self.wire.redis.as_ref() else {
            return;
        };
        info!(
            "redis: link up ({}, channel {}, node {})",
            link.addr, link.channel, link.node
        );
        let counter = link.counter;
        self.feed(Input::RedisLink { up: true, counter });
    }
}
