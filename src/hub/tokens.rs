//! Client tokens: which secret in `/push/{token}` authenticates which user,
//! and which topics it may follow.
//!
//! Tokens come from the `--tokens` file (re-read on SIGHUP) and from
//! `grant`/`revoke` on the control socket. The table is keyed by the first
//! 128 bits of the token's SHA-1 digest (the token itself is not stored), so the hash-map
//! probe depends only on a digest the client cannot steer byte by byte; the
//! digests are then compared in constant time. Logs name a token only by its
//! [`fingerprint`], never in full.
//!
//! Granted tokens are durable with `--data-dir`: the hub logs each `grant`
//! and `revoke` by digest (never the token), and replay rebuilds them
//! through [`Tokens::restore`] and [`Tokens::forget`]. Whenever the tokens
//! file is read (at start, on SIGHUP) it wins: a token it lists is a file
//! token, and a grant of the same token is dropped.
//!
//! A grant may carry a list of topic patterns (see
//! [`topics::allowed`](super::topics::allowed)). They are kept in a side
//! table by [`TokenTag`], the key a session holds, and only for the grants
//! that have a list: a token without one costs nothing more, and its
//! connections follow `--topics-default`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::hash::{BuildHasher, RandomState};
use std::num::NonZeroU64;
use std::rc::Rc;

use hashbrown::HashTable;

use super::name::Name;
use sha1::{Digest, Sha1};
use slab::Slab;

/// Longest token accepted by `grant` (URLs stay reasonable).
pub const MAX_TOKEN_LEN: usize = 512;
/// Longest user name accepted by `grant` and the tokens file.
pub const MAX_USER_LEN: usize = 256;

/// Which grant a connection came in with: the grant's slot in the table.
/// Connections keep it so a revoke can find them and their topic list.
///
/// A slot is reused once its grant is gone, which is safe because every
/// way a grant goes (`revoke`, a reload that drops it) closes its
/// connections in the same job, and replay ([`Tokens::forget`]) runs before
/// any connection exists. A grant that is replaced keeps its slot. Four
/// bytes where a digest prefix took eight, and no two grants ever share one.
pub type TokenTag = u32;

/// A tag no grant has: connections admitted by a signed token.
pub const NO_GRANT: TokenTag = u32::MAX;

/// The first 128 bits of a token's SHA-1 digest: the table's key, and what
/// the log names. Sixteen bytes are as safe a key as twenty (finding a
/// token for a given key, or two tokens with one key, is still out of
/// reach) and keep a grant's entry at 40 bytes instead of 48.
pub type TokenDigest = [u8; DIGEST_LEN];

/// Bytes of [`TokenDigest`].
const DIGEST_LEN: usize = 16;

/// What a token grants. The token itself is not kept: the table's key is
/// its digest, which is all a lookup needs (and saves a copy of every
/// token: tens of bytes each, which count in the per-connection budget when
/// every client has its own token).
#[derive(Debug)]
struct Grant {
    user: Name,
    /// Unix ms of the `grant` (at least 1); `None`: from the tokens file,
    /// which a SIGHUP reload replaces. The niche keeps the entry as small
    /// as the user name and a flag.
    granted_at: Option<NonZeroU64>,
}

/// Grants by digest: a dense slab of (digest, grant) and a hash table of
/// slab slots (4 bytes a bucket, where a map would keep the 48-byte pair in
/// every bucket, most of them empty).
#[derive(Debug, Default)]
struct Table {
    slots: Slab<(TokenDigest, Grant)>,
    index: HashTable<u32>,
    hasher: RandomState,
}

impl Table {
    fn slot(&self, digest: &TokenDigest) -> Option<u32> {
        let slots = &self.slots;
        let hash = self.hasher.hash_one(digest);
        let found = self.index.find(hash, |&i| slots[i as usize].0 == *digest);
        found.copied()
    }

    fn get_key_value(&self, digest: &TokenDigest) -> Option<(u32, &TokenDigest, &Grant)> {
        let slot = self.slot(digest)?;
        let (d, g) = &self.slots[slot as usize];
        Some((slot, d, g))
    }

    fn get(&self, digest: &TokenDigest) -> Option<&Grant> {
        self.get_key_value(digest).map(|(_, _, g)| g)
    }

    /// Add or replace the grant of `digest`; returns its slot (a replaced
    /// grant keeps the one it had).
    fn insert(&mut self, digest: TokenDigest, grant: Grant) -> u32 {
        if let Some(i) = self.slot(&digest) {
            self.slots[i as usize].1 = grant;
            return i;
        }
        let hash = self.hasher.hash_one(digest);
        let i = u32::try_from(self.slots.insert((digest, grant)))
            .ok()
            .filter(|&i| i != NO_GRANT)
            .expect("fewer than 4G tokens");
        let (slots, hasher) = (&self.slots, &self.hasher);
        let rehash = |&j: &u32| hasher.hash_one(slots[j as usize].0);
        self.index.insert_unique(hash, i, rehash);
        i
    }

    /// Remove the grant of `digest`; returns the slot it had.
    fn remove(&mut self, digest: &TokenDigest) -> Option<u32> {
        let hash = self.hasher.hash_one(digest);
        let slots = &self.slots;
        let entry = self
            .index
            .find_entry(hash, |&i| slots[i as usize].0 == *digest)
            .ok()?;
        let (i, _) = entry.remove();
        self.slots.remove(i as usize);
        Some(i)
    }

    fn retain(&mut self, mut keep: impl FnMut(u32, &TokenDigest, &Grant) -> bool) {
        let doomed: Vec<TokenDigest> = self
            .slots
            .iter()
            .filter(|&(i, (d, g))| !keep(i as u32, d, g))
            .map(|(_, (d, _))| *d)
            .collect();
        for digest in &doomed {
            self.remove(digest);
        }
    }

    fn iter(&self) -> impl Iterator<Item = (u32, &TokenDigest, &Grant)> {
        self.slots.iter().map(|(i, (d, g))| (i as u32, d, g))
    }

    fn len(&self) -> usize {
        self.slots.len()
    }

    fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

/// The token table.
#[derive(Debug, Default)]
pub struct Tokens {
    by_digest: Table,
    /// Topic patterns of the grants that have a list, by tag.
    topics: HashMap<TokenTag, Rc<[Box<str>]>>,
}

/// One token as the `tokens` op lists it and the snapshot logs it.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    /// The token's digest.
    pub digest: &'a TokenDigest,
    /// The user it authenticates.
    pub user: &'a str,
    /// The topic patterns it allows; `None`: `--topics-default`.
    pub topics: Option<&'a [Box<str>]>,
    /// Unix ms of its grant; `None` for a file token.
    pub granted_at: Option<u64>,
}

/// What a reload of the tokens file changed.
#[derive(Debug, Default)]
pub struct Reloaded {
    /// Tags of tokens that are gone, whose connections must be closed.
    pub gone: Vec<TokenTag>,
    /// Digests of granted tokens the file now lists: the file won, and
    /// their grants are over (the hub logs them as revoked).
    pub replaced: Vec<TokenDigest>,
}

/// The outcome of a lookup that failed, as the one-line 401 reason.
pub const MISSING: &str = "missing token";
/// See [`MISSING`].
pub const UNKNOWN: &str = "unknown or revoked token";

impl Tokens {
    /// The user a presented token authenticates, with the token's tag.
    pub fn lookup(&self, token: &str) -> Result<(Name, TokenTag), &'static str> {
        if token.is_empty() {
            return Err(MISSING);
        }
        let digest = digest(token);
        match self.by_digest.get_key_value(&digest) {
            // The map probe compares digests, which a client cannot steer byte
            // by byte; the final word is a constant-time comparison anyway.
            Some((slot, stored, e)) if constant_time_eq(stored, &digest) => {
                Ok((e.user.clone(), slot))
            }
            _ => Err(UNKNOWN),
        }
    }

    /// Add or replace a token, without a topic list, as granted at Unix
    /// ms 0 (tests and benches; the `grant` op uses [`Tokens::grant_with`]).
    pub fn grant(&mut self, token: &str, user: &str) -> Result<(), String> {
        self.grant_with(token, user, None, 0).map(|_| ())
    }

    /// Add or replace a token granted over the control socket at Unix ms
    /// `at`, allowing `topics` (already validated; `None`: the default).
    /// Returns its digest, for the log.
    pub fn grant_with(
        &mut self,
        token: &str,
        user: &str,
        topics: Option<Rc<[Box<str>]>>,
        at: u64,
    ) -> Result<TokenDigest, String> {
        check(token, user)?;
        let digest = digest(token);
        self.insert(digest, user, Some(granted(at)), topics);
        Ok(digest)
    }

    /// Forget a token. Returns its tag when it existed.
    pub fn revoke(&mut self, token: &str) -> Option<TokenTag> {
        let tag = self.by_digest.remove(&digest(token))?;
        self.topics.remove(&tag);
        Some(tag)
    }

    /// Replay a logged grant (`digest` in hex). A token the tokens file
    /// lists stays the file's; a digest that is not 40 hex digits is
    /// skipped. Returns whether the grant was restored.
    pub fn restore(
        &mut self,
        digest: &str,
        user: &str,
        topics: Option<Rc<[Box<str>]>>,
        at: u64,
    ) -> bool {
        let Some(digest) = unhex(digest) else {
            return false;
        };
        if self
            .by_digest
            .get(&digest)
            .is_some_and(|g| g.granted_at.is_none())
        {
            return false;
        }
        self.insert(digest, user, Some(granted(at)), topics);
        true
    }

    /// Replay a logged revoke (`digest` in hex): the grant is gone. A file
    /// token stays (the file is read after every restart).
    pub fn forget(&mut self, digest: &str) {
        let Some(digest) = unhex(digest) else {
            return;
        };
        if self
            .by_digest
            .get(&digest)
            .is_some_and(|g| g.granted_at.is_some())
            && let Some(tag) = self.by_digest.remove(&digest)
        {
            self.topics.remove(&tag);
        }
    }

    /// Replace the file-sourced tokens with `text`, the contents of the
    /// tokens file `name`. Tokens granted over the control socket stay,
    /// unless the file lists them: the file wins. On error nothing changes.
    pub fn load(&mut self, text: &str, name: &str) -> Result<Reloaded, String> {
        let map: HashMap<String, String> = serde_json::from_str(text)
            .map_err(|e| format!("{name}: expected a JSON object {{\"token\": \"user\"}}: {e}"))?;
        for (token, user) in &map {
            check(token, user).map_err(|e| format!("{name}: {e}"))?;
        }
        let fresh: HashMap<TokenDigest, &String> = map.keys().map(|t| (digest(t), t)).collect();
        let mut changed = Reloaded::default();
        self.by_digest.retain(|slot, d, e| {
            let listed = fresh.contains_key(d);
            if e.granted_at.is_some() && listed {
                changed.replaced.push(*d);
            }
            let keep = e.granted_at.is_some() || listed;
            if !keep {
                changed.gone.push(slot);
            }
            keep
        });
        for (token, user) in &map {
            self.insert(digest(token), user, None, None);
        }
        Ok(changed)
    }

    /// The topic patterns of the token with this tag; `None`: it has no
    /// list (the default applies).
    pub fn topics_of(&self, tag: TokenTag) -> Option<&[Box<str>]> {
        self.topics.get(&tag).map(|t| &**t)
    }

    /// Every token, in no particular order.
    pub fn entries(&self) -> impl Iterator<Item = Entry<'_>> {
        self.by_digest.iter().map(|(slot, digest, g)| Entry {
            digest,
            user: &g.user,
            topics: self.topics_of(slot),
            granted_at: g.granted_at.map(NonZeroU64::get),
        })
    }

    /// Number of known tokens.
    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    /// Whether no token is known.
    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }

    fn insert(
        &mut self,
        digest: TokenDigest,
        user: &str,
        granted_at: Option<NonZeroU64>,
        topics: Option<Rc<[Box<str>]>>,
    ) {
        let entry = Grant {
            user: Name::from(user),
            granted_at,
        };
        let tag = self.by_digest.insert(digest, entry);
        match topics {
            Some(list) => self.topics.insert(tag, list),
            None => self.topics.remove(&tag),
        };
    }
}

/// A short, non-reversible name for a token, safe to log.
pub fn fingerprint(token: &str) -> String {
    fingerprint_of(&digest(token))
}

/// [`fingerprint`] from the token's digest.
pub fn fingerprint_of(digest: &TokenDigest) -> String {
    let mut first = [0u8; 4];
    first.copy_from_slice(&digest[..4]);
    format!("{:08x}", u32::from_be_bytes(first))
}

/// The digest as 32 lower-case hex digits (how the log names a token).
pub fn hex(digest: &TokenDigest) -> String {
    let mut s = String::with_capacity(2 * DIGEST_LEN);
    for b in digest {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The key of a token: the first 16 bytes of its SHA-1 digest.
pub fn digest(token: &str) -> TokenDigest {
    let full: [u8; 20] = Sha1::digest(token.as_bytes()).into();
    let mut key = [0u8; DIGEST_LEN];
    key.copy_from_slice(&full[..DIGEST_LEN]);
    key
}

/// A logged digest: 32 hex digits, or the whole SHA-1 (40) that logs
/// written before the key was shortened hold, of which the first 32 count.
fn unhex(text: &str) -> Option<TokenDigest> {
    if (text.len() != 2 * DIGEST_LEN && text.len() != 40) || !text.is_ascii() {
        return None;
    }
    let mut digest = [0u8; DIGEST_LEN];
    for (i, byte) in digest.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(digest)
}

fn granted(at: u64) -> NonZeroU64 {
    NonZeroU64::new(at).unwrap_or(NonZeroU64::MIN)
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
                .gone
                .is_empty()
        );
        t.grant("c", "carol").unwrap();
        let b = t_tag(&t, "b");
        let changed = t.load(r#"{"a":"alice"}"#, "f").unwrap();
        assert_eq!(changed.gone, vec![b]);
        assert!(changed.replaced.is_empty());
        assert!(t.lookup("b").is_err());
        assert!(t.lookup("c").is_ok());
        assert!(t.load("not json", "f").is_err());
        assert!(t.lookup("a").is_ok(), "a failed reload changes nothing");
    }

    #[test]
    fn the_file_wins_over_a_grant_of_the_same_token() {
        let mut t = Tokens::default();
        let list: Rc<[Box<str>]> = Rc::from(vec![Box::from("a/*")]);
        t.grant_with("x", "xavier", Some(list), 5).unwrap();
        assert_eq!(t.topics_of(t_tag(&t, "x")).map(<[_]>::len), Some(1));
        let changed = t.load(r#"{"x":"xena"}"#, "f").unwrap();
        assert_eq!(changed.replaced, vec![digest("x")]);
        assert_eq!(&*t.lookup("x").unwrap().0, "xena");
        assert_eq!(
            t.topics_of(t_tag(&t, "x")),
            None,
            "a file token has no list"
        );
        // Replay cannot bring the grant back over the file token, nor
        // revoke the file token.
        assert!(!t.restore(&hex(&digest("x")), "xavier", None, 5));
        t.forget(&hex(&digest("x")));
        assert_eq!(&*t.lookup("x").unwrap().0, "xena");
    }

    #[test]
    fn replay_restores_and_forgets_grants_by_digest() {
        let mut t = Tokens::default();
        let hex_y = hex(&digest("y"));
        assert_eq!(hex_y.len(), 32);
        assert_eq!(unhex(&hex_y), Some(digest("y")));
        // A log from before the key was shortened names the whole SHA-1.
        let sha1_y = "95cb0bfd2977c761298d9624e4b4d4c72a39974a";
        assert_eq!(unhex(sha1_y), Some(digest("y")));
        assert_eq!(unhex(&sha1_y[..36]), None);
        assert!(t.restore(&hex_y, "yves", None, 42));
        assert!(!t.restore("not hex", "yves", None, 42));
        let entry = t.entries().next().unwrap();
        assert_eq!((entry.user, entry.granted_at), ("yves", Some(42)));
        assert_eq!(&*t.lookup("y").unwrap().0, "yves");
        t.forget(&hex_y);
        assert!(t.lookup("y").is_err());
        assert!(t.is_empty());
    }

    fn t_tag(t: &Tokens, token: &str) -> TokenTag {
        t.lookup(token).unwrap().1
    }

    #[test]
    fn tags_are_distinct_kept_by_a_replaced_grant_and_reused_only_once_free() {
        let mut t = Tokens::default();
        let list: Rc<[Box<str>]> = Rc::from(vec![Box::from("a/*")]);
        t.grant_with("p", "pat", Some(list), 1).unwrap();
        t.grant("q", "quinn").unwrap();
        let (p, q) = (t_tag(&t, "p"), t_tag(&t, "q"));
        assert_ne!(p, q);
        assert_ne!(p, NO_GRANT);
        // Granting again replaces the grant in place: same tag, new list.
        t.grant("p", "pat").unwrap();
        assert_eq!(t_tag(&t, "p"), p);
        assert_eq!(t.topics_of(p), None);
        // A revoked grant's tag goes to the next new grant, and nothing of
        // the old one (its topic list) comes with it.
        let list: Rc<[Box<str>]> = Rc::from(vec![Box::from("b/*")]);
        t.grant_with("q", "quinn", Some(list), 2).unwrap();
        assert_eq!(t.revoke("q"), Some(q));
        assert_eq!(t.topics_of(q), None);
        t.grant("r", "rae").unwrap();
        assert_eq!(t_tag(&t, "r"), q);
        assert_eq!(t.topics_of(q), None);
        assert_eq!(&*t.lookup("p").unwrap().0, "pat");
    }

    #[test]
    fn fingerprints_are_short_and_stable() {
        assert_eq!(fingerprint("abc"), fingerprint("abc"));
        assert_ne!(fingerprint("abc"), fingerprint("abd"));
        assert_eq!(fingerprint("abc").len(), 8);
        assert!(!fingerprint("abc").contains("abc"));
    }

    #[test]
    fn an_entry_costs_no_more_than_its_user_and_grant_time() {
        // The topic lists live in a side table, only for grants with one.
        assert_eq!(std::mem::size_of::<Grant>(), 24);
        // The slab finds its vacancy tag in the name's.
        #[allow(dead_code)]
        enum SlabEntry<T> {
            Vacant(usize),
            Occupied(T),
        }
        assert_eq!(std::mem::size_of::<SlabEntry<(TokenDigest, Grant)>>(), 40);
    }

    #[test]
    fn constant_time_eq_matches_eq() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
