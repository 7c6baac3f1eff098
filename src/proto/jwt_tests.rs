use super::JwtError::*;
use super::*;
use proptest::prelude::*;
use serde_json::{Value, json};

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
const NOW: u64 = 1_700_000_000;
const HS256: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

fn key() -> Key {
    Key::new(SECRET).expect("valid secret")
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A token over raw header and claims text, signed with `secret`
/// (hmac directly, not `Key`, so a bug there cannot hide here).
fn sign_raw(header: &str, claims: &str, secret: &[u8]) -> String {
    let input = format!("{}.{}", b64(header.as_bytes()), b64(claims.as_bytes()));
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
    mac.update(input.as_bytes());
    format!("{input}.{}", b64(&mac.finalize().into_bytes()))
}

fn sign(claims: &Value) -> String {
    sign_raw(HS256, &claims.to_string(), SECRET)
}

fn check(token: &str) -> Result<Claims, JwtError> {
    verify(token, &key(), NOW)
}

/// `token` is refused as invalid for reason `why`.
fn invalid(token: &str, why: &str) {
    match check(token) {
        Err(Invalid(got)) => assert_eq!(got, why, "{token}"),
        other => panic!("{token}: expected Invalid({why:?}), got {other:?}"),
    }
}

#[test]
fn valid_token_gives_its_claims() {
    let t = sign(&json!({"sub":"alice","exp":NOW + 60,"nbf":NOW - 60,"topics":["a","b"]}));
    let c = check(&t).unwrap();
    assert_eq!(c.sub, "alice");
    assert_eq!((c.exp, c.nbf), (Some(NOW + 60), Some(NOW - 60)));
    assert_eq!(c.topics, Some(vec!["a".to_string(), "b".to_string()]));
    let c = check(&sign(&json!({"sub":"bob","iat":NOW,"kid":"x"}))).unwrap();
    assert_eq!((c.exp, c.nbf, c.topics), (None, None, None));
}

/// RFC 7515 appendix A.1's example token, with its own key.
#[test]
fn rfc_7515_example_verifies() {
    let k =
        "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow";
    let secret = URL_SAFE_NO_PAD.decode(k).unwrap();
    let token = concat!(
        "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9",
        ".eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFt",
        "cGxlLmNvbS9pc19yb290Ijp0cnVlfQ",
        ".dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    );
    // It has no `sub`: the signature and header pass, the claims do not.
    let got = verify(token, &Key::new(&secret).unwrap(), 1_300_819_380);
    assert_eq!(got, Err(Invalid("bad claims JSON")));
    let tampered = token.replace(".dBjf", ".eBjf");
    let got = verify(&tampered, &Key::new(&secret).unwrap(), 1_300_819_380);
    assert_eq!(got, Err(Invalid("bad signature")));
}

#[test]
fn key_rules() {
    assert!(Key::new(b"").is_err());
    assert!(Key::new(b"\n").is_err());
    assert!(Key::new(b"\r\n").is_err());
    assert!(Key::new(&SECRET[..31]).is_err());
    let t = sign(&json!({"sub":"a"}));
    for file in [
        &b"0123456789abcdef0123456789abcdef\n"[..],
        b"0123456789abcdef0123456789abcdef\r\n",
    ] {
        assert!(verify(&t, &Key::new(file).unwrap(), NOW).is_ok());
    }
    // Only one newline goes.
    let two = Key::new(b"0123456789abcdef0123456789abcdef\n\n").unwrap();
    assert_eq!(verify(&t, &two, NOW), Err(Invalid("bad signature")));
    assert_eq!(format!("{:?}", key()), "Key(..)");
}

#[test]
fn shape_rejections() {
    let t = sign(&json!({"sub":"a"}));
    invalid(&"a".repeat(MAX_JWT + 1), "token too long");
    for bad in [
        "",
        "a",
        "a.b",
        "a.b.c.d",
        &format!("{t}."),
        &format!(".{t}"),
    ] {
        invalid(bad, "not three dot-separated parts");
    }
    invalid(&format!("{t}="), "signature not base64url");
    invalid(&format!("{t}+"), "signature not base64url");
    let (h, rest) = t.split_once('.').unwrap();
    invalid(&format!("{h}=.{rest}"), "header not base64url");
    invalid(&format!("!.{rest}"), "header not base64url");
    // The last character of a 32-byte signature carries 2 stray bits:
    // setting one spells the same bytes differently, which is refused.
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut stray = t.clone().into_bytes();
    let last = stray.last_mut().unwrap();
    let value = ALPHABET.iter().position(|c| c == last).unwrap();
    *last = ALPHABET[value ^ 1];
    invalid(
        &String::from_utf8(stray).unwrap(),
        "signature not base64url",
    );
    let (hp, _) = t.rsplit_once('.').unwrap();
    invalid(&format!("{hp}."), "bad signature");
    invalid(&format!("{hp}.{}", b64(&[0; 31])), "bad signature");
}

#[test]
fn header_rejections() {
    let claims = r#"{"sub":"a"}"#;
    let cases = [
        (r#"{"alg":"none"}"#, "alg is not HS256"),
        (r#"{"alg":"HS512"}"#, "alg is not HS256"),
        (r#"{"alg":"RS256"}"#, "alg is not HS256"),
        (r#"{"alg":"hs256"}"#, "alg is not HS256"),
        (r#"{"alg":"HS256 "}"#, "alg is not HS256"),
        (r#"{"typ":"JWT"}"#, "header has no alg"),
        (r#"{"alg":null}"#, "header has no alg"),
        (r#"{"alg":256}"#, "bad header JSON"),
        (r#"{"alg":"HS256","alg":"none"}"#, "bad header JSON"),
        (r#"{"alg":"HS256","typ":"JOSE"}"#, "typ is not JWT"),
        (r#"{"alg":"HS256","typ":null}"#, "bad header JSON"),
        (
            r#"{"alg":"HS256","crit":["exp"]}"#,
            "crit header not supported",
        ),
        (r#"["HS256"]"#, "header not a JSON object"),
        (r#""HS256""#, "header not a JSON object"),
        (r#"{"alg":"HS256"} x"#, "bad header JSON"),
        ("", "header not a JSON object"),
    ];
    for (header, why) in cases {
        invalid(&sign_raw(header, claims, SECRET), why);
    }
    for typ in ["JWT", "jwt", "Jwt"] {
        let h = format!(r#"{{"alg":"HS256","typ":"{typ}","kid":"k1"}}"#);
        assert!(check(&sign_raw(&h, claims, SECRET)).is_ok(), "{typ}");
    }
    // `alg: none` with no signature at all.
    let none = format!("{}.{}.", b64(br#"{"alg":"none"}"#), b64(claims.as_bytes()));
    invalid(&none, "alg is not HS256");
}

#[test]
fn signature_is_checked_before_claims() {
    // Garbage claims under a wrong key: refused for the signature.
    invalid(
        &sign_raw(HS256, "{not json", b"another key, 32 bytes long......"),
        "bad signature",
    );
    invalid(&sign_raw(HS256, "{not json", SECRET), "bad claims JSON");
    // A claims part swapped in from another token.
    let good = sign(&json!({"sub":"alice"}));
    let evil = sign(&json!({"sub":"root"}));
    let mut parts: Vec<&str> = good.split('.').collect();
    parts[1] = evil.split('.').nth(1).unwrap();
    invalid(&parts.join("."), "bad signature");
}

#[test]
fn claims_rejections() {
    let long = "x".repeat(MAX_SUB + 1);
    let cases: Vec<(String, &str)> = vec![
        ("{}".into(), "bad claims JSON"),
        (r#"{"sub":null}"#.into(), "bad claims JSON"),
        (r#"{"sub":7}"#.into(), "bad claims JSON"),
        (r#"{"sub":"a","sub":"b"}"#.into(), "bad claims JSON"),
        (r#"{"sub":""}"#.into(), "sub is empty"),
        (json!({ "sub": long }).to_string(), "sub too long"),
        (r#"["a"]"#.into(), "claims not a JSON object"),
        ("".into(), "claims not a JSON object"),
        (r#"{"sub":"a","exp":"1"}"#.into(), "bad claims JSON"),
        (r#"{"sub":"a","exp":null}"#.into(), "bad claims JSON"),
        (r#"{"sub":"a","exp":-1}"#.into(), "bad exp"),
        (r#"{"sub":"a","exp":-0.5}"#.into(), "bad exp"),
        (r#"{"sub":"a","exp":1e999}"#.into(), "bad claims JSON"),
        (r#"{"sub":"a","nbf":-1}"#.into(), "bad nbf"),
        (r#"{"sub":"a","nbf":true}"#.into(), "bad claims JSON"),
        (r#"{"sub":"a","topics":"a"}"#.into(), "bad claims JSON"),
        (r#"{"sub":"a","topics":[1]}"#.into(), "bad claims JSON"),
        (r#"{"sub":"a","topics":null}"#.into(), "bad claims JSON"),
        (
            r#"{"sub":"a","aud":"wspush"}"#.into(),
            "aud claim not supported",
        ),
    ];
    for (claims, why) in cases {
        invalid(&sign_raw(HS256, &claims, SECRET), why);
    }
    let max = "é".repeat(MAX_SUB / 2);
    assert_eq!(check(&sign(&json!({ "sub": max }))).unwrap().sub, max);
}

#[test]
fn numeric_dates() {
    let at = |exp: &str| {
        let t = sign_raw(HS256, &format!(r#"{{"sub":"a","exp":{exp}}}"#), SECRET);
        check(&t).map(|c| c.exp)
    };
    assert_eq!(at("1800000000"), Ok(Some(1_800_000_000)));
    assert_eq!(at("1800000000.9"), Ok(Some(1_800_000_000)));
    assert_eq!(at("1.8e9"), Ok(Some(1_800_000_000)));
    assert_eq!(at("1e300"), Ok(Some(u64::MAX)));
    assert_eq!(at("18446744073709551615"), Ok(Some(u64::MAX)));
    assert_eq!(at("0"), Err(Expired));
}

#[test]
fn time_window_with_leeway() {
    let exp = |e: u64| check(&sign(&json!({"sub":"a","exp":e})));
    assert!(exp(NOW).is_ok());
    assert!(exp(NOW - LEEWAY_S).is_ok());
    assert_eq!(exp(NOW - LEEWAY_S - 1), Err(Expired));
    let nbf = |n: u64| check(&sign(&json!({"sub":"a","nbf":n})));
    assert!(nbf(NOW).is_ok());
    assert!(nbf(NOW + LEEWAY_S).is_ok());
    assert_eq!(nbf(NOW + LEEWAY_S + 1), Err(NotYetValid));
    // No overflow at the ends of time.
    let t = sign(&json!({"sub":"a","exp":u64::MAX,"nbf":0}));
    assert!(verify(&t, &key(), u64::MAX).is_ok());
    let t = sign(&json!({"sub":"a","nbf":u64::MAX}));
    assert!(verify(&t, &key(), u64::MAX).is_ok());
    assert_eq!(verify(&t, &key(), 0), Err(NotYetValid));
}

#[test]
fn errors_display() {
    assert_eq!(
        Invalid("bad signature").to_string(),
        "invalid token: bad signature"
    );
    assert_eq!(Expired.to_string(), "token expired");
    assert_eq!(NotYetValid.to_string(), "token not yet valid");
}

proptest! {
    #[test]
    fn random_strings_never_panic(s in "\\PC{0,300}") {
        prop_assert!(check(&s).is_err());
    }

    #[test]
    fn random_base64url_parts_never_panic(s in "[A-Za-z0-9_.=-]{0,300}") {
        let _ = check(&s);
    }

    /// Well-signed tokens over arbitrary bytes: every claims parser path.
    #[test]
    fn signed_garbage_never_panics(h in any::<bool>(), claims in any::<Vec<u8>>()) {
        let header = if h { HS256 } else { r#"{"alg":"HS256"}"# };
        let input = format!("{}.{}", b64(header.as_bytes()), b64(&claims));
        let mut mac = Hmac::<Sha256>::new_from_slice(SECRET).unwrap();
        mac.update(input.as_bytes());
        let token = format!("{input}.{}", b64(&mac.finalize().into_bytes()));
        let _ = check(&token);
    }

    #[test]
    fn any_subject_round_trips(sub in "\\PC{1,64}", exp in NOW..u64::MAX / 2) {
        let c = check(&sign(&json!({"sub":sub,"exp":exp}))).unwrap();
        prop_assert_eq!(c.sub, sub);
        prop_assert_eq!(c.exp, Some(exp));
    }
}
