//! Interop: tokens minted by PyJWT, checked by `wspush::jwt::verify`.
//!
//! PyJWT is looked up in `target/py` first (`.ci/run` installs it there with
//! `pip install --target target/py PyJWT`), then wherever python3 finds it.
//! Without python3 or PyJWT the test skips (or fails under
//! `WSPUSH_REQUIRE_EXTERNAL=1`).
mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Map, Value};
use wspush::jwt::{self, JwtError, Key};

/// The time every token is minted and verified at: no clock involved.
const NOW: u64 = 1_700_000_000;
/// 64 bytes, enough for HS512 too without PyJWT warning about the key.
const SECRET: &str = "wspush-interop-secret-0123456789-abcdefghijklmnopqrstuvwxyz-0123";
const OTHER_SECRET: &str = "another-secret-entirely-0123456789-abcdefghijklmnopqrstuvwxyz-01";

/// Prints one JSON object, case name → token, minted at `now` (argv[1]).
const MINT: &str = r#"
import base64, json, sys
import jwt

now = int(sys.argv[1])
key, other = sys.argv[2], sys.argv[3]

def hs256(claims, k=key):
    return jwt.encode(claims, k, algorithm="HS256")

def b64(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

valid = hs256({"sub": "alice", "exp": now + 600, "nbf": now - 5, "iat": now})
h, _, s = valid.split(".")
tampered = ".".join([h, b64(json.dumps({"sub": "root", "exp": now + 600}).encode()), s])

print(json.dumps({
    "version": jwt.__version__,
    "valid": valid,
    "float_exp": hs256({"sub": "alice", "exp": now + 600.75}),
    "expired": hs256({"sub": "alice", "exp": now - 120}),
    "just_expired_within_leeway": hs256({"sub": "alice", "exp": now - 10}),
    "nbf_future": hs256({"sub": "alice", "nbf": now + 3600}),
    "alg_none": jwt.encode({"sub": "alice"}, None, algorithm="none"),
    "hs512": jwt.encode({"sub": "alice"}, key, algorithm="HS512"),
    "other_key": hs256({"sub": "alice"}, other),
    "tampered": tampered,
    "topics": hs256({"sub": "bob", "topics": ["news", "alerts/x"]}),
    "kid_header": jwt.encode({"sub": "carol"}, key, algorithm="HS256", headers={"kid": "k1"}),
}))
"#;

/// Run `MINT` under python3 with PyJWT; `None` (after `skip_missing`) when
/// python3 or PyJWT is not there.
fn mint() -> Option<Map<String, Value>> {
    if common::find_program("python3").is_none() {
        common::skip_missing("python3 not found on PATH");
        return None;
    }
    let py_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/py");
    let python = || {
        let mut cmd = Command::new("python3");
        if py_dir.is_dir() {
            cmd.env("PYTHONPATH", &py_dir);
        }
        cmd
    };
    let mut probe = python();
    probe.args(["-c", "import jwt"]);
    if !common::run_with_timeout(probe, Duration::from_secs(30))
        .status
        .success()
    {
        common::skip_missing("PyJWT not importable (pip install --target target/py PyJWT)");
        return None;
    }
    let mut cmd = python();
    cmd.args(["-c", MINT, &NOW.to_string(), SECRET, OTHER_SECRET]);
    let out = common::run_with_timeout(cmd, Duration::from_secs(30));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "minting failed: {:?}\nstdout {stdout}\nstderr {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    match serde_json::from_str(&stdout) {
        Ok(Value::Object(tokens)) => Some(tokens),
        other => panic!("mint script printed {stdout:?}: {other:?}"),
    }
}

#[test]
fn pyjwt_tokens_verify_as_pyjwt_means_them() {
    let Some(tokens) = mint() else { return };
    println!("PyJWT {}", tokens["version"]);
    // As the secret file holds it, newline included.
    let key = Key::new(format!("{SECRET}\n").as_bytes()).expect("key");
    let check = |name: &str| {
        let token = tokens[name]
            .as_str()
            .unwrap_or_else(|| panic!("no token {name}"));
        jwt::verify(token, &key, NOW)
    };

    let c = check("valid").expect("valid token");
    assert_eq!(c.sub, "alice");
    assert_eq!(
        (c.exp, c.nbf, c.topics),
        (Some(NOW + 600), Some(NOW - 5), None)
    );
    assert_eq!(check("float_exp").expect("float exp").exp, Some(NOW + 600));
    assert!(check("just_expired_within_leeway").is_ok());
    assert_eq!(check("kid_header").expect("kid header").sub, "carol");
    let c = check("topics").expect("topics token");
    assert_eq!(c.sub, "bob");
    assert_eq!(c.topics, Some(vec!["news".into(), "alerts/x".into()]));

    assert_eq!(check("expired"), Err(JwtError::Expired));
    assert_eq!(check("nbf_future"), Err(JwtError::NotYetValid));
    let refused = [
        ("alg_none", "alg is not HS256"),
        ("hs512", "alg is not HS256"),
        ("other_key", "bad signature"),
        ("tampered", "bad signature"),
    ];
    for (name, why) in refused {
        assert_eq!(check(name), Err(JwtError::Invalid(why)), "{name}");
    }
    // The same valid token, later: expired once past the leeway.
    let valid = tokens["valid"].as_str().unwrap();
    assert!(jwt::verify(valid, &key, NOW + 600 + jwt::LEEWAY_S).is_ok());
    assert_eq!(
        jwt::verify(valid, &key, NOW + 601 + jwt::LEEWAY_S),
        Err(JwtError::Expired)
    );
}
