//! Who a URL token admits, and how a refusal reaches the client.
//!
//! A token is first looked up among the granted ones ([`super::tokens`]);
//! failing that, with `--jwt-secret-file`, it is verified as an HS256 JWT
//! whose `sub` is the user ([`crate::proto::jwt`]). A connection admitted
//! by a JWT is closed when the token expires, on the hub's own wheel.
//!
//! Browsers cannot see why an upgrade failed (page scripts get `1006` and
//! no reason for any HTTP answer), so by default a refused token is told
//! after the upgrade, with a close code a client can act on:
//! [`CLOSE_REJECTED`] (never retry this token) or [`CLOSE_EXPIRED`] (get a
//! fresh one, then reconnect). `--token-rejection http` answers `401`
//! instead, for deployments that prefer it.

use std::collections::HashMap;
use std::rc::Rc;

use log::{debug, info};

use super::name::Name;
use super::tokens::{self, TokenTag};
use super::topics;
use super::{ConnId, Deadline, Hub, Origin, Out};
use crate::proto::control;
use crate::proto::handshake::Upgrade;
use crate::proto::jwt::{self, JwtError};
use crate::wheel::TimerId;

/// Close code: this token will never work (unknown, revoked, malformed,
/// badly signed): do not retry with it.
pub const CLOSE_REJECTED: u16 = 4401;
/// Close code: the token expired, or is not valid yet: get a new one, then
/// reconnect.
pub const CLOSE_EXPIRED: u16 = 4402;
/// The token tag of connections admitted by a JWT: there is no grant to
/// revoke, and no grant has this tag.
pub const SIGNED_TAG: TokenTag = tokens::NO_GRANT;

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Never works: [`CLOSE_REJECTED`].
    Rejected(&'static str),
    /// Expired or not valid yet: [`CLOSE_EXPIRED`].
    Expired(&'static str),
    /// `--max-connections` open already: HTTP 503.
    Full,
}

/// Whom a token admits.
#[derive(Debug)]
pub struct Admitted {
    /// The user.
    pub user: Name,
    /// The grant's tag, or [`SIGNED_TAG`].
    pub tag: TokenTag,
    /// A JWT's expiry and topics (None for a granted token).
    pub signed: Option<Claims>,
}

/// What a JWT says beyond its user, kept for its connection's life.
#[derive(Debug)]
pub struct Claims {
    /// Unix seconds after which the connection is closed (`exp`).
    pub exp: Option<u64>,
    /// The `topics` claim: the patterns the connection may subscribe to.
    pub topics: Option<Rc<[Box<str>]>>,
}

/// A connection admitted by a JWT.
#[derive(Debug)]
struct SignedConn {
    generation: u32,
    /// Its expiry in the hub's wheel.
    timer: Option<TimerId>,
    /// The `topics` claim.
    topics: Option<Rc<[Box<str>]>>,
}

/// The connections admitted by a JWT, by slot (granted ones cost nothing
/// here).
#[derive(Debug, Default)]
pub struct Signed {
    by_key: HashMap<u32, SignedConn>,
}

impl Signed {
    /// The `topics` claim of `conn`, if it was admitted by a JWT: `Some(None)`
    /// for a JWT without the claim, `None` for a granted token.
    pub fn topics(&self, conn: ConnId) -> Option<Option<&[Box<str>]>> {
        let s = self.by_key.get(&conn.key)?;
        (s.generation == conn.generation).then_some(s.topics.as_deref())
    }

    /// Open JWT connections.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

impl Hub {
    /// Whom `request`'s token admits, if there is room for it.
    pub(super) fn admit(&self, request: &Upgrade) -> Result<Admitted, Refusal> {
        let found = self.admit_token(&request.token)?;
        if self.sessions.len() >= self.config.max_connections {
            return Err(Refusal::Full);
        }
        Ok(found)
    }

    /// Whom `token` authenticates: a grant, else (with a key) a JWT.
    fn admit_token(&self, token: &str) -> Result<Admitted, Refusal> {
        let found = match self.tokens.lookup(token) {
            Ok((user, tag)) => Admitted {
                user,
                tag,
                signed: None,
            },
            Err(reason) => match &self.config.jwt {
                Some(key) if token.split('.').count() == 3 => self.verify(key, token)?,
                _ => return Err(Refusal::Rejected(reason)),
            },
        };
        Ok(found)
    }

    /// `GET /api/collect`: the held messages of the token's user, as a JSON
    /// array of envelopes, which are delivered from now on.
    pub(super) fn collect(
        &mut self,
        origin: Origin,
        token: &str,
        since: Option<u64>,
        out: &mut impl Out,
    ) {
        let user = match self.admit_token(token) {
            Ok(admitted) => admitted.user,
            Err(Refusal::Rejected(reason) | Refusal::Expired(reason)) => {
                self.stats.token_refusals += 1;
                return out.answer(origin, 401, control::error(None, reason));
            }
            Err(Refusal::Full) => unreachable!("collecting takes no connection"),
        };
        if self.shared_mailbox() {
            return self.shared_collect(origin, &user, since, out);
        }
        if !self.mailbox.enabled() {
            let body = control::error(None, "the mailbox is off (--mailbox)");
            return out.answer(origin, 404, body);
        }
        let frames = self.take_held(&user, since, out);
        debug!("{origin:?}: collected {} for user {user}", frames.len());
        out.answer(origin, 200, super::shared::collect_body(&frames));
    }

    fn verify(&self, key: &jwt::Key, token: &str) -> Result<Admitted, Refusal> {
        let claims = jwt::verify(token, key, self.unix_ms() / 1000).map_err(|e| match e {
            JwtError::Invalid(reason) => Refusal::Rejected(reason),
            JwtError::Expired => Refusal::Expired("token expired"),
            JwtError::NotYetValid => Refusal::Expired("token not valid yet"),
        })?;
        let topics = claims
            .topics
            .map(topics::patterns)
            .transpose()
            .map_err(|_| Refusal::Rejected("bad topics claim"))?;
        Ok(Admitted {
            user: Name::from(claims.sub.as_str()),
            tag: SIGNED_TAG,
            signed: Some(Claims {
                exp: claims.exp,
                topics,
            }),
        })
    }

    /// Tell the client its token was refused: after the upgrade with a
    /// close code (the default), or as an HTTP answer.
    pub(super) fn refuse(
        &mut self,
        conn: ConnId,
        request: &Upgrade,
        serial: u64,
        refusal: Refusal,
        out: &mut impl Out,
    ) {
        let (code, reason) = match refusal {
            Refusal::Full => return out.refuse(conn, 503, "server full"),
            Refusal::Rejected(reason) => (CLOSE_REJECTED, reason),
            Refusal::Expired(reason) => (CLOSE_EXPIRED, reason),
        };
        if let Some(suppressed) = self.refusal_log.take(self.now) {
            let peer = out.link(conn).and_then(|l| l.peer);
            let peer = peer.map_or_else(|| "unknown".to_string(), |p| p.to_string());
            info!(
                "conn {serial}: token refused ({code} {reason}) from {peer}, token {}{}",
                tokens::fingerprint(&request.token),
                super::suppressed_note(suppressed)
            );
        }
        self.stats.token_refusals += 1;
        if self.config.token_http {
            return out.refuse(conn, 401, reason);
        }
        out.open(conn, &request.accept);
        out.close(conn, code, reason);
    }

    /// Remember a JWT connection's claims and arm its expiry (at `exp`
    /// plus the leeway its admission allowed).
    pub(super) fn track_signed(&mut self, conn: ConnId, claims: Claims) {
        let timer = claims.exp.map(|exp| {
            let at_unix_ms = exp.saturating_add(jwt::LEEWAY_S).saturating_mul(1000);
            let at = at_unix_ms.saturating_sub(self.config.started_unix_ms);
            let deadline = Deadline::Expiry {
                key: conn.key,
                generation: conn.generation,
            };
            self.wheel.insert(at, deadline)
        });
        let signed = SignedConn {
            generation: conn.generation,
            timer,
            topics: claims.topics,
        };
        self.signed.by_key.insert(conn.key, signed);
    }

    /// A connection left: forget its claims and its expiry.
    pub(super) fn untrack_signed(&mut self, conn: ConnId) {
        let ours = self
            .signed
            .by_key
            .get(&conn.key)
            .is_some_and(|s| s.generation == conn.generation);
        if let Some(timer) = ours
            .then(|| self.signed.by_key.remove(&conn.key))
            .flatten()
            .and_then(|s| s.timer)
        {
            self.wheel.cancel(timer);
        }
    }

    /// A JWT connection's token expired.
    pub(super) fn expire_signed(&mut self, conn: ConnId, out: &mut impl Out) {
        if let Some(s) = self.signed.by_key.get_mut(&conn.key)
            && s.generation == conn.generation
        {
            s.timer = None;
            self.close(conn, CLOSE_EXPIRED, "token expired", out);
        }
    }
}
