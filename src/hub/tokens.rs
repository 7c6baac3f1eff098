//! Client tokens: which secret in `/push/{token}` authenticates which user.
//!
//! Tokens come from the `--tokens` file (re-read on SIGHUP) and from
//! `grant`/`revoke` on the control socket. The table is keyed by the SHA-1
//! digest of the token (the token itself is not stored), so the hash-map
//! probe depends only on a digest the client cannot steer byte by byte; the
//! digests are then compared in constant time. Logs name a token only by its
//! [`fingerprint`], never in full.

use std::collections::HashMap;
use std::rc::Rc;

use sha1::{Digest, Sha1};

/// Longest token accepted by `grant` (URLs stay reasonable).
pub const MAX_TOKEN_LEN: usize = 512;
/// Longest user name accepted by `grant` and the tokens file.
pub const MAX_USER_LEN: usize = 256;

/// A short tag identifying a token without revealing it: the first 8 bytes
/// of its digest. Connections keep it so a revoke can find them.
pub type TokenTag = u64;

/// Where a token came from; a SIGHUP reload replaces only file tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    File,
    Control,
}

/// What a token grants. The token itself is not kept: the table's key is
/// its SHA-1 digest, which is all a lookup needs (and saves a copy of every
/// token: tens of bytes each, which count in the per-connection budget when
/// every client has its own token).
#[derive(Debug)]
struct Grant {
    user: Rc<str>,
    origin: Source,
}

/// The token table.
#[derive(Debug, Default)]
pub struct Tokens {
    by_digest: HashMap<[u8; 20], Grant>,
}

/// The outcome of a lookup that failed, as the one-line 401 reason.
pub const MISSING: &str = "missing token";
/// See [`MISSING`].
pub const UNKNOWN: &str = "unknown or revoked token";

impl Tokens {
    /// The user a presented token authenticates, with the token's tag.
    pub fn lookup(&self, token: &str) -> Result<(Rc<str>, TokenTag), &'static str> {
        if token.is_empty() {
            return Err(MISSING);
        }
        let digest = digest(token);
        match self.by_digest.get_key_value(&digest) {
            // The map probe compares digests, which a client cannot steer byte
            // by byte; the final word is a constant-time comparison anyway.
            Some((stored, e)) if constant_time_eq(stored, &digest) => {
                Ok((e.user.clone(), tag_of(&digest)))
            }
            _ => Err(UNKNOWN),
        }
    }

    /// Add or replace a token granted over the control socket.
    pub fn grant(&mut self, token: &str, user: &str) -> Result<(), String> {
        check(token, user)?;
        self.insert(token, user, Source::Control);
        Ok(())
    }

    /// Forget a token. Returns its tag when it existed.
    pub fn revoke(&mut self, token: &str) -> Option<TokenTag> {
        let digest = digest(token);
        self.by_digest.remove(&digest).map(|_| tag_of(&digest))
    }

    /// Replace the file-sourced tokens with `text`, the contents of the
    /// tokens file `name`. Tokens
    /// granted over the control socket stay. Returns the tags of tokens that
    /// are gone, so their live connections can be closed. On error nothing
    /// changes.
    pub fn load(&mut self, text: &str, name: &str) -> Result<Vec<TokenTag>, String> {
        let map: HashMap<String, String> = serde_json::from_str(text)
            .map_err(|e| format!("{name}: expected a JSON object {{\"token\": \"user\"}}: {e}"))?;
        for (token, user) in &map {
            check(token, user).map_err(|e| format!("{name}: {e}"))?;
        }
        let fresh: HashMap<[u8; 20], &String> = map.keys().map(|t| (digest(t), t)).collect();
        let mut gone = Vec::new();
        self.by_digest.retain(|d, e| {
            let keep = e.origin == Source::Control || fresh.contains_key(d);
            if !keep {
                gone.push(tag_of(d));
            }
            keep
        });
        for (token, user) in &map {
            self.insert(token, user, Source::File);
        }
        Ok(gone)
    }

    /// Number of known tokens.
    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    /// Whether no token is known.
    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }

    fn insert(&mut self, token: &str, user: &str, origin: Source) {
        let entry = Grant {
            user: Rc::from(user),
            origin,
        };
        self.by_digest.insert(digest(token), entry);
    }
}

/// A short, non-reversible name for a token, safe to log.
pub fn fingerprint(token: &str) -> String {
    format!("{:08x}", tag_of(&digest(token)) >> 32)
}

fn check(token: &str, user: &str) -> Result<(), String> {
    if token.is_empty() || token.len() > MAX_TOKEN_LEN {
        return Err(format!("token must be 1 to {MAX_TOKEN_LEN} bytes"));
    }
    if token
        .bytes()
        .any(|b| b <= b' ' || b == b'?' || b == b'#' || b == 0x7f)
    {
        return Err("token must not contain spaces, control characters, '?' or '#'".into());
    }
    if user.is_empty() || user.len() > MAX_USER_LEN {
        return Err(format!("user must be 1 to {MAX_USER_LEN} bytes"));
    }
    Ok(())
}

fn digest(token: &str) -> [u8; 20] {
    Sha1::digest(token.as_bytes()).into()
}

fn tag_of(digest: &[u8; 20]) -> TokenTag {
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// Equality whose running time depends only on the lengths, not on where the
/// first difference is.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grant_lookup_revoke() {
        let mut t = Tokens::default();
        t.grant("s3cret", "alice").unwrap();
        let (user, tag) = t.lookup("s3cret").unwrap();
        assert_eq!(&*user, "alice");
        assert_eq!(t.lookup("s3cres"), Err(UNKNOWN));
        assert_eq!(t.lookup(""), Err(MISSING));
        assert_eq!(t.revoke("s3cret"), Some(tag));
        assert_eq!(t.revoke("s3cret"), None);
        assert_eq!(t.lookup("s3cret"), Err(UNKNOWN));
    }

    #[test]
    fn bad_tokens_are_refused() {
        let mut t = Tokens::default();
        assert!(t.grant("", "u").is_err());
        assert!(t.grant("a b", "u").is_err());
        assert!(t.grant("a?b", "u").is_err());
        assert!(t.grant(&"x".repeat(MAX_TOKEN_LEN + 1), "u").is_err());
        assert!(t.grant("ok", "").is_err());
    }

    #[test]
    fn reload_replaces_file_tokens_and_keeps_granted_ones() {
        let mut t = Tokens::default();
        assert!(
            t.load(r#"{"a":"alice","b":"bob"}"#, "f")
                .unwrap()
                .is_empty()
        );
        t.grant("c", "carol").unwrap();
        let gone = t.load(r#"{"a":"alice"}"#, "f").unwrap();
        assert_eq!(gone, vec![t_tag("b")]);
        assert!(t.lookup("b").is_err());
        assert!(t.lookup("c").is_ok());
        assert!(t.load("not json", "f").is_err());
        assert!(t.lookup("a").is_ok(), "a failed reload changes nothing");
    }

    fn t_tag(token: &str) -> TokenTag {
        tag_of(&digest(token))
    }

    #[test]
    fn fingerprints_are_short_and_stable() {
        assert_eq!(fingerprint("abc"), fingerprint("abc"));
        assert_ne!(fingerprint("abc"), fingerprint("abd"));
        assert_eq!(fingerprint("abc").len(), 8);
        assert!(!fingerprint("abc").contains("abc"));
    }

    #[test]
    fn constant_time_eq_matches_eq() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
