//! HS256 JSON Web Tokens (RFC 7519, JWS compact form of RFC 7515), verified
//! on a string: no clock, no file, no socket.
//!
//! The caller reads the secret once into a [`Key`] and passes the current
//! time to [`verify`], which checks, in this order, first failure wins:
//! 1. length: at most [`MAX_JWT`] bytes;
//! 2. shape: exactly three dot-separated base64url parts, no padding, no
//!    stray bits (one token has one spelling);
//! 3. header: a JSON object with `"alg":"HS256"` exactly, `typ` (if any)
//!    `JWT` in any case, and no `crit` (we understand no extension);
//! 4. signature: HMAC-SHA256 of `header.payload`, compared in constant time;
//! 5. claims, only now trusted: a JSON object with a non-empty `sub` of at
//!    most [`MAX_SUB`] bytes, `exp` and `nbf` non-negative numbers if
//!    present, `topics` an array of strings if present, and no `aud`;
//! 6. time: `exp` and `nbf` against `now`, with [`LEEWAY_S`] either way.
//!
//! Duplicate member names in the header or the claims are rejected, so no
//! other parser can read a different `alg` or `sub` out of the same token.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit as _, Mac as _};
use serde::{Deserialize, Deserializer};
use serde_json::Number;
use sha2::Sha256;

/// Clock skew tolerated between the token issuer and this host, in seconds,
/// on both `exp` and `nbf`. Small hosts often run without NTP for a while
/// after boot, and an issuer that stamps `nbf = now` would otherwise see its
/// fresh tokens refused by a host a second behind; 30 s covers that drift
/// while keeping an expired token's afterlife short.
pub const LEEWAY_S: u64 = 30;

/// Longest token accepted, in bytes. Request heads are capped at 8 KiB
/// anyway (`io::ws_conn::MAX_HEAD`); this bounds direct callers too, so
/// base64 and JSON work per token stays small.
pub const MAX_JWT: usize = 8192;

/// Longest `sub` accepted, in bytes: it becomes the user name.
pub const MAX_SUB: usize = 256;

/// Shortest secret accepted, in bytes: RFC 7518 §3.2 requires an HS256 key
/// at least as long as the hash output.
pub const MIN_SECRET: usize = 32;

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The `sub` claim: the user the token is for; non-empty, at most [`MAX_SUB`] bytes.
    pub sub: String,
    /// The `exp` claim: expiry, Unix seconds (fractions dropped).
    pub exp: Option<u64>,
    /// The `nbf` claim: not valid before, Unix seconds (fractions dropped).
    pub nbf: Option<u64>,
    /// The private `topics` claim: topics the token may subscribe to.
    pub topics: Option<Vec<String>>,
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtError {
    /// The token will never work (malformed, wrong algorithm, bad signature,
    /// bad claims); the text says which check failed.
    Invalid(&'static str),
    /// `now` is more than [`LEEWAY_S`] past `exp`.
    Expired,
    /// `now` is more than [`LEEWAY_S`] before `nbf`.
    NotYetValid,
}

impl fmt::Display for JwtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JwtError::Invalid(why) => write!(f, "invalid token: {why}"),
            JwtError::Expired => f.write_str("token expired"),
            JwtError::NotYetValid => f.write_str("token not yet valid"),
        }
    }
}

impl std::error::Error for JwtError {}

/// The HS256 secret, keyed once; cheap to verify with many times.
#[derive(Clone)]
pub struct Key(Hmac<Sha256>);

impl Key {
    /// Key from the secret file's bytes. One trailing `\n` (or `\r\n`) is
    /// dropped, since `echo` and editors add it and token issuers given the
    /// same secret as a string would not sign with it; any other byte counts.
    /// Refuses a secret shorter than [`MIN_SECRET`] bytes after that.
    pub fn new(secret: &[u8]) -> Result<Key, String> {
        let secret = secret.strip_suffix(b"\n").unwrap_or(secret);
        let secret = secret.strip_suffix(b"\r").unwrap_or(secret);
        if secret.is_empty() {
            return Err("JWT secret is empty".into());
        }
        if secret.len() < MIN_SECRET {
            return Err(format!(
                "JWT secret is {} bytes; HS256 needs at least {MIN_SECRET}",
                secret.len()
            ));
        }
        // HMAC takes keys of any length; this cannot fail.
        let mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|e| e.to_string())?;
        Ok(Key(mac))
    }
}

impl fmt::Debug for Key {
    /// Never prints the secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(..)")
    }
}

/// Verify `token` with `key` at `now_unix_s`; the claims if it is good.
pub fn verify(token: &str, key: &Key, now_unix_s: u64) -> Result<Claims, JwtError> {
    if token.len() > MAX_JWT {
        return Err(JwtError::Invalid("token too long"));
    }
    let (header, payload, signature) = split(token)?;
    check_header(&decode(header, "header not base64url")?)?;
    let signature = decode(signature, "signature not base64url")?;
    let signing_input = &token[..header.len() + 1 + payload.len()];
    let mut mac = key.0.clone();
    mac.update(signing_input.as_bytes());
    mac.verify_slice(&signature)
        .map_err(|_| JwtError::Invalid("bad signature"))?;
    let claims = parse_claims(&decode(payload, "payload not base64url")?)?;
    check_time(&claims, now_unix_s)?;
    Ok(claims)
}

/// The three parts of a compact JWS.
fn split(token: &str) -> Result<(&str, &str, &str), JwtError> {
    let mut parts = token.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(h), Some(p), Some(s), None) => Ok((h, p, s)),
        _ => Err(JwtError::Invalid("not three dot-separated parts")),
    }
}

fn decode(part: &str, why: &'static str) -> Result<Vec<u8>, JwtError> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| JwtError::Invalid(why))
}

/// A JSON object, not an array: serde would otherwise fill a struct's
/// fields from `["HS256"]` by position.
fn is_object(json: &[u8]) -> bool {
    json.trim_ascii_start().first() == Some(&b'{')
}

/// The JOSE header members we look at; others (`kid`, ...) are ignored.
#[derive(Deserialize)]
struct Header {
    alg: Option<String>,
    #[serde(default, deserialize_with = "present")]
    typ: Option<String>,
    crit: Option<serde::de::IgnoredAny>,
}

fn check_header(json: &[u8]) -> Result<(), JwtError> {
    if !is_object(json) {
        return Err(JwtError::Invalid("header not a JSON object"));
    }
    let header: Header =
        serde_json::from_slice(json).map_err(|_| JwtError::Invalid("bad header JSON"))?;
    match header.alg.as_deref() {
        Some("HS256") => {}
        None => return Err(JwtError::Invalid("header has no alg")),
        Some(_) => return Err(JwtError::Invalid("alg is not HS256")),
    }
    if header.typ.is_some_and(|t| !t.eq_ignore_ascii_case("JWT")) {
        return Err(JwtError::Invalid("typ is not JWT"));
    }
    if header.crit.is_some() {
        return Err(JwtError::Invalid("crit header not supported"));
    }
    Ok(())
}

/// The claims as sent; `exp` and `nbf` keep JSON's number to convert them.
#[derive(Deserialize)]
struct RawClaims {
    sub: String,
    #[serde(default, deserialize_with = "present")]
    exp: Option<Number>,
    #[serde(default, deserialize_with = "present")]
    nbf: Option<Number>,
    #[serde(default, deserialize_with = "present")]
    topics: Option<Vec<String>>,
    aud: Option<serde::de::IgnoredAny>,
}

/// A member that, when present, must hold a `T`: `null` is refused rather
/// than read as absent (a missing member is `None` through `#[serde(default)]`).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

fn parse_claims(json: &[u8]) -> Result<Claims, JwtError> {
    if !is_object(json) {
        return Err(JwtError::Invalid("claims not a JSON object"));
    }
    let raw: RawClaims =
        serde_json::from_slice(json).map_err(|_| JwtError::Invalid("bad claims JSON"))?;
    if raw.sub.is_empty() {
        return Err(JwtError::Invalid("sub is empty"));
    }
    if raw.sub.len() > MAX_SUB {
        return Err(JwtError::Invalid("sub too long"));
    }
    // RFC 7519 §4.1.3: a token for an audience we cannot recognise ourselves in.
    if raw.aud.is_some() {
        return Err(JwtError::Invalid("aud claim not supported"));
    }
    Ok(Claims {
        sub: raw.sub,
        exp: raw.exp.map(|n| seconds(&n, "bad exp")).transpose()?,
        nbf: raw.nbf.map(|n| seconds(&n, "bad nbf")).transpose()?,
        topics: raw.topics,
    })
}

/// A NumericDate (RFC 7519 §2) as whole seconds: integers as they are,
/// floats rounded down (saturating past `u64::MAX`); negative is invalid.
fn seconds(n: &Number, why: &'static str) -> Result<u64, JwtError> {
    if let Some(s) = n.as_u64() {
        return Ok(s);
    }
    match n.as_f64() {
        Some(f) if n.is_f64() && f >= 0.0 => Ok(f as u64),
        _ => Err(JwtError::Invalid(why)),
    }
}

fn check_time(claims: &Claims, now: u64) -> Result<(), JwtError> {
    if claims
        .exp
        .is_some_and(|exp| now > exp.saturating_add(LEEWAY_S))
    {
        return Err(JwtError::Expired);
    }
    if claims
        .nbf
        .is_some_and(|nbf| now.saturating_add(LEEWAY_S) < nbf)
    {
        return Err(JwtError::NotYetValid);
    }
    Ok(())
}

#[cfg(test)]
#[path = "jwt_tests.rs"]
mod tests;
