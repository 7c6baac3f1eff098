//! Admission by JWT and the close codes of refused tokens.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, KeyInit as _, Mac as _};
use serde_json::{Value, json};
use sha2::Sha256;

use super::*;
use crate::proto::jwt;

const SECRET: &[u8] = b"a-secret-of-at-least-32-bytes-long!!";
/// T0 in Unix seconds.
const NOW_S: u64 = T0 / 1000;

fn mint(claims: Value, secret: &[u8]) -> String {
    let head = B64.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let body = B64.encode(claims.to_string());
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
    mac.update(format!("{head}.{body}").as_bytes());
    let sig = B64.encode(mac.finalize().into_bytes());
    format!("{head}.{body}.{sig}")
}

fn signed_hub(token_http: bool) -> Hub {
    hub_with(
        Config {
            jwt: Some(jwt::Key::new(SECRET).unwrap()),
            token_http,
            ..config()
        },
        &["granted"],
    )
}

fn connect_with(h: &mut Hub, out: &mut Rec, now: u64, key: u32, token: &str) -> ConnId {
    connect_request(h, out, now, key, upgrade(token, None))
}

#[test]
fn a_jwt_admits_its_subject_until_it_expires() {
    let mut h = signed_hub(false);
    let mut out = Rec::default();
    let token = mint(json!({"sub": "ann", "exp": NOW_S + 60}), SECRET);
    let ann = connect_with(&mut h, &mut out, 0, 1, &token);
    assert!(h.is_open(ann));
    let reply = request(
        &mut h,
        &mut out,
        0,
        json!({"op": "push", "users": ["ann"], "content": 1}),
    );
    assert_eq!(reply["delivered"], 1);
    // Within the leeway after exp it stays; past it, closed with 4402.
    h.handle(60_000, Input::Tick, &mut out);
    assert!(h.is_open(ann));
    let past = (60 + jwt::LEEWAY_S + 2) * 1000;
    h.handle(past, Input::Tick, &mut out);
    assert_eq!(out.closed, [(ann, auth::CLOSE_EXPIRED)]);
    assert!(!h.is_open(ann));
}

#[test]
fn a_connection_that_leaves_takes_its_expiry_with_it() {
    let mut h = signed_hub(false);
    let mut out = Rec::default();
    let token = mint(json!({"sub": "ann", "exp": NOW_S + 60}), SECRET);
    let ann = connect_with(&mut h, &mut out, 0, 1, &token);
    assert_eq!(h.signed.len(), 1);
    h.handle(0, Input::Left { conn: ann }, &mut out);
    assert!(h.signed.is_empty());
    assert!(h.wheel.is_empty(), "the expiry left the wheel");
    // The slot's next tenant, a granted token, is not closed at that time.
    let next = connect(&mut h, &mut out, 1, "granted", None);
    h.handle(200_000, Input::Tick, &mut out);
    assert!(h.is_open(next));
    assert!(out.closed.is_empty());
}

#[test]
fn refused_tokens_get_the_code_that_says_what_to_do() {
    let mut h = signed_hub(false);
    let mut out = Rec::default();
    let cases = [
        (
            mint(json!({"sub": "ann", "exp": NOW_S - 120}), SECRET),
            auth::CLOSE_EXPIRED,
        ),
        (
            mint(json!({"sub": "ann", "nbf": NOW_S + 600}), SECRET),
            auth::CLOSE_EXPIRED,
        ),
        (
            mint(
                json!({"sub": "ann"}),
                b"another-secret-of-at-least-32-bytes!",
            ),
            auth::CLOSE_REJECTED,
        ),
        (mint(json!({"user": "ann"}), SECRET), auth::CLOSE_REJECTED),
        ("not.a.jwt".to_string(), auth::CLOSE_REJECTED),
        ("unknown".to_string(), auth::CLOSE_REJECTED),
    ];
    for (i, (token, code)) in cases.iter().enumerate() {
        let conn = connect_with(&mut h, &mut out, 0, i as u32 + 1, token);
        assert_eq!(out.closed.last(), Some(&(conn, *code)), "{token}");
        assert_eq!(out.opened.last(), Some(&conn), "upgraded first: {token}");
        assert!(!h.is_open(conn));
    }
    assert!(out.refused.is_empty());
    let stats = request(&mut h, &mut out, 0, json!({"op": "stats"}));
    assert_eq!(stats["token_refusals"], cases.len());
    assert_eq!(stats["connections"], 0);
}

#[test]
fn token_rejection_http_answers_401() {
    let mut h = signed_hub(true);
    let mut out = Rec::default();
    let expired = mint(json!({"sub": "ann", "exp": NOW_S - 120}), SECRET);
    let a = connect_with(&mut h, &mut out, 0, 1, &expired);
    let b = connect_with(&mut h, &mut out, 0, 2, "unknown");
    assert_eq!(out.refused, [(a, 401), (b, 401)]);
    assert!(out.opened.is_empty() && out.closed.is_empty());
}

#[test]
fn a_granted_token_wins_over_a_jwt_reading() {
    let mut tokens = Tokens::default();
    let token = mint(json!({"sub": "mallory"}), SECRET);
    tokens.grant(&token, "granted-user").unwrap();
    let mut h = Hub::new(
        Config {
            jwt: Some(jwt::Key::new(SECRET).unwrap()),
            ..config()
        },
        tokens,
    );
    let mut out = Rec::default();
    let conn = connect_with(&mut h, &mut out, 0, 1, &token);
    let reply = request(&mut h, &mut out, 0, json!({"op": "clients"}));
    assert_eq!(reply["clients"][0]["user"], "granted-user");
    assert!(h.signed.topics(conn).is_none(), "not a JWT connection");
}

#[test]
fn a_jwt_topics_claim_limits_what_its_connection_may_follow() {
    let mut h = signed_hub(false);
    let mut out = Rec::default();
    let token = mint(
        json!({"sub": "ann", "topics": ["dev/42/*", "news"]}),
        SECRET,
    );
    let ann = connect_with(&mut h, &mut out, 0, 1, &token);
    let open = mint(json!({"sub": "bob"}), SECRET);
    let bob = connect_with(&mut h, &mut out, 0, 2, &open);
    for (conn, topic, ok) in [
        (ann, "dev/42/temp", true),
        (ann, "news", true),
        (ann, "dev/43/temp", false),
        (bob, "dev/43/temp", true), // no claim: --topics-default (all)
    ] {
        let text = format!(r#"{{"op":"subscribe","topic":"{topic}"}}"#);
        h.handle(0, Input::Text { conn, text: &text }, &mut out);
        let (to, last) = out.got.last().unwrap();
        assert_eq!(*to, conn);
        let reply: Value = serde_json::from_str(last).unwrap();
        assert_eq!(reply["ok"], ok, "{topic}: {reply}");
    }
    let bad = mint(json!({"sub": "eve", "topics": ["a*b"]}), SECRET);
    let eve = connect_with(&mut h, &mut out, 0, 3, &bad);
    assert_eq!(out.closed.last(), Some(&(eve, auth::CLOSE_REJECTED)));
}

fn collect(h: &mut Hub, out: &mut Rec, token: &str, since: Option<u64>) -> (u16, Value) {
    let origin = Origin::Http(ConnId {
        key: 9,
        generation: 1,
    });
    h.handle(
        0,
        Input::Collect {
            origin,
            token,
            since,
        },
        out,
    );
    let (status, body) = out.answers.pop().expect("an answer");
    (status, serde_json::from_slice(&body).unwrap())
}

#[test]
fn collect_hands_over_held_messages_once() {
    let mut h = hub_with(
        Config {
            mailbox: 10,
            jwt: Some(jwt::Key::new(SECRET).unwrap()),
            ..config()
        },
        &["ann"],
    );
    let mut out = Rec::default();
    for i in 0..3 {
        let reply = request(
            &mut h,
            &mut out,
            0,
            json!({"op": "push", "users": ["ann"], "content": i}),
        );
        assert_eq!(reply["queued"], 1);
    }
    let (status, got) = collect(&mut h, &mut out, "t-ann", None);
    assert_eq!(status, 200);
    let contents: Vec<&Value> = got
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["content"])
        .collect();
    assert_eq!(contents, [&json!(0), &json!(1), &json!(2)]);
    assert_eq!(
        collect(&mut h, &mut out, "t-ann", None),
        (200, json!([])),
        "delivered now"
    );
    // With since, the history after it, as on the WebSocket URL; a JWT works too.
    let token = mint(json!({"sub": "ann"}), SECRET);
    let (_, got) = collect(&mut h, &mut out, &token, Some(2));
    assert_eq!(got.as_array().unwrap().len(), 1);
    assert_eq!(got[0]["seq"], 3);
    let (status, got) = collect(&mut h, &mut out, "nope", None);
    assert_eq!(status, 401);
    assert_eq!(got["error"], "unknown or revoked token");
    let stats = request(&mut h, &mut out, 0, json!({"op": "stats"}));
    assert_eq!(stats["mailbox"], 0, "{stats}");
}

#[test]
fn collect_without_a_mailbox_says_so() {
    let mut h = hub(&["ann"]);
    let mut out = Rec::default();
    let (status, got) = collect(&mut h, &mut out, "t-ann", None);
    assert_eq!(status, 404);
    assert_eq!(got["ok"], false);
}
