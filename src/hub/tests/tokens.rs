//! Durable grants (log records, replay, snapshot), the `tokens` listing,
//! and the topics a token allows.

use serde_json::{Value, json};

use super::*;
use crate::hub::tokens as tk;

fn durable() -> Config {
    Config {
        data_log: true,
        ..config()
    }
}

fn grant(h: &mut Hub, out: &mut Rec, user: &str, topics: Option<Value>) -> Value {
    let mut body = json!({"op": "grant", "token": format!("t-{user}"), "user": user});
    if let Some(topics) = topics {
        body["topics"] = topics;
    }
    request(h, out, 5000, body)
}

/// Send a topic command from `conn`; the ack or error it got.
fn topic(h: &mut Hub, out: &mut Rec, conn: ConnId, op: &str, topic: &str) -> Value {
    let text = json!({"op": op, "topic": topic}).to_string();
    h.handle(0, Input::Text { conn, text: &text }, out);
    out.texts(conn).pop().expect("an answer")
}

#[test]
fn grant_and_revoke_write_records_by_digest_and_hold_their_replies() {
    let mut h = hub_with(durable(), &[]);
    let mut out = Rec::default();
    let reply = grant(&mut h, &mut out, "a", Some(json!(["dev/*"])));
    assert_eq!(out.replies.last().unwrap(), &(json!({"ok": true}), true));
    assert_eq!(reply["ok"], true);
    let hex = tk::hex(&tk::digest("t-a"));
    let expected = LogRecord::Grant {
        digest: hex.clone().into(),
        user: "a".into(),
        topics: Some(vec![Box::from("dev/*")].into()),
        at: T0 + 5000,
    };
    assert_eq!(out.log, [expected]);
    let reply = request(&mut h, &mut out, 0, json!({"op": "revoke", "token": "t-a"}));
    assert_eq!(reply["closed"], 0);
    assert!(
        out.replies.last().unwrap().1,
        "the revoke waits for the log"
    );
    assert_eq!(out.log[1], LogRecord::Revoke { digest: hex.into() });
    let mut bytes = Vec::new();
    for record in &out.log {
        journal::encode(record, &mut bytes);
    }
    let text = String::from_utf8_lossy(&bytes);
    assert!(!text.contains("t-a"), "the token is never written: {text}");
    assert!(text.contains(r#""k":"grant""#) && text.contains(r#""k":"revoke""#));
    // A refused grant writes nothing; without a data log nothing is written.
    let reply = grant(&mut h, &mut out, "b", Some(json!(["a*b"])));
    assert_eq!(reply["ok"], false, "{reply}");
    assert_eq!(out.log.len(), 2);
    let mut plain = hub(&[]);
    let mut out = Rec::default();
    grant(&mut plain, &mut out, "a", None);
    assert!(out.log.is_empty());
    assert!(!out.replies.last().unwrap().1, "nothing to wait for");
}

#[test]
fn replay_restores_grants_and_revokes_and_the_snapshot_keeps_live_grants() {
    let mut first = hub_with(durable(), &[]);
    let mut out = Rec::default();
    first.restore(Vec::new(), 0);
    grant(&mut first, &mut out, "a", Some(json!(["news", "dev/42/*"])));
    grant(&mut first, &mut out, "b", None);
    grant(&mut first, &mut out, "c", None);
    request(
        &mut first,
        &mut out,
        0,
        json!({"op": "revoke", "token": "t-b"}),
    );
    let records = out.log.clone();

    let mut second = Hub::new(durable(), Tokens::default());
    assert_eq!(second.restore(records, 0), 4);
    let mut out = Rec::default();
    let a = connect(&mut second, &mut out, 1, "a", None);
    let b = connect(&mut second, &mut out, 2, "b", None);
    let c = connect(&mut second, &mut out, 3, "c", None);
    assert!(second.is_open(a) && second.is_open(c));
    assert!(!second.is_open(b));
    assert_eq!(
        out.closed,
        [(b, auth::CLOSE_REJECTED)],
        "the revoked grant stays revoked"
    );
    assert_eq!(
        topic(&mut second, &mut out, a, "subscribe", "dev/42/t")["ok"],
        true
    );
    assert_eq!(
        topic(&mut second, &mut out, a, "subscribe", "other")["ok"],
        false
    );

    let snapshot = second.snapshot();
    let grants: Vec<&LogRecord<'_>> = snapshot
        .iter()
        .filter(|r| matches!(r, LogRecord::Grant { .. }))
        .collect();
    assert_eq!(grants.len(), 2, "a and c: {snapshot:?}");
    let owned: Vec<LogRecord<'static>> = snapshot.iter().map(|r| r.clone().into_owned()).collect();
    let mut third = Hub::new(durable(), Tokens::default());
    third.restore(owned, 0);
    assert_eq!(third.token_count(), 2, "a compacted log keeps the grants");
    let mut out = Rec::default();
    let a = connect(&mut third, &mut out, 1, "a", None);
    assert_eq!(
        topic(&mut third, &mut out, a, "subscribe", "news")["ok"],
        true
    );
    assert_eq!(
        topic(&mut third, &mut out, a, "subscribe", "newsx")["ok"],
        false
    );
}

#[test]
fn the_tokens_file_wins_over_logged_grants() {
    // A grant of a token the file lists is not restored over it at start.
    let mut first = hub_with(durable(), &[]);
    let mut out = Rec::default();
    grant(&mut first, &mut out, "a", None);
    let mut file = Tokens::default();
    file.load(r#"{"t-a": "alice"}"#, "f").unwrap();
    let mut second = Hub::new(durable(), file);
    second.restore(out.log.clone(), 0);
    let reply = request(&mut second, &mut Rec::default(), 0, json!({"op": "tokens"}));
    assert_eq!(reply["tokens"][0]["user"], "alice");
    assert_eq!(reply["tokens"][0]["source"], "file");
    assert!(
        second
            .snapshot()
            .iter()
            .all(|r| !matches!(r, LogRecord::Grant { .. }))
    );
    // On SIGHUP the file takes a granted token over, and the grant is
    // logged as revoked so it cannot come back at a later start.
    let mut out = Rec::default();
    first.handle(
        0,
        Input::ReloadTokens {
            text: r#"{"t-a": "alice"}"#,
            name: "f",
        },
        &mut out,
    );
    let hex = tk::hex(&tk::digest("t-a"));
    assert_eq!(out.log, [LogRecord::Revoke { digest: hex.into() }]);
}

#[test]
fn tokens_lists_fingerprints_never_the_tokens() {
    let mut tokens = Tokens::default();
    tokens.load(r#"{"t-f": "fay"}"#, "f").unwrap();
    let mut h = Hub::new(config(), tokens);
    let mut out = Rec::default();
    grant(&mut h, &mut out, "g", Some(json!(["a/*", "b"])));
    let reply = request(&mut h, &mut out, 0, json!({"op": "tokens"}));
    assert_eq!(
        reply["tokens"],
        json!([
            {
                "fingerprint": tk::fingerprint("t-f"),
                "user": "fay",
                "topics": null,
                "granted_at": null,
                "source": "file",
            },
            {
                "fingerprint": tk::fingerprint("t-g"),
                "user": "g",
                "topics": ["a/*", "b"],
                "granted_at": T0 + 5000,
                "source": "grant",
            },
        ])
    );
    assert!(!reply.to_string().contains("t-f") && !reply.to_string().contains("t-g"));
    h.handle(0, Input::Shutdown, &mut out);
    let reply = request(&mut h, &mut out, 0, json!({"op": "tokens"}));
    assert_eq!(reply["ok"], true, "a query is answered while shutting down");
}

#[test]
fn a_token_may_follow_only_the_topics_it_allows() {
    let mut h = hub(&["plain"]);
    let mut out = Rec::default();
    grant(&mut h, &mut out, "a", Some(json!(["news", "dev/42/*"])));
    grant(&mut h, &mut out, "none", Some(json!([])));
    grant(&mut h, &mut out, "all", Some(json!(["*"])));
    let a = connect(&mut h, &mut out, 1, "a", None);
    assert_eq!(topic(&mut h, &mut out, a, "subscribe", "news")["ok"], true);
    assert_eq!(
        topic(&mut h, &mut out, a, "subscribe", "dev/42/temp")["ok"],
        true
    );
    let denied = topic(&mut h, &mut out, a, "subscribe", "dev/43/temp");
    assert_eq!(
        denied,
        json!({"op": "subscribe", "topic": "dev/43/temp", "ok": false, "error": "topic not allowed"})
    );
    assert_eq!(h.topics.subscribers("dev/43/temp"), &[]);
    assert_eq!(
        topic(&mut h, &mut out, a, "unsubscribe", "news")["ok"],
        true
    );
    let none = connect(&mut h, &mut out, 2, "none", None);
    assert_eq!(
        topic(&mut h, &mut out, none, "subscribe", "news")["error"],
        "topic not allowed"
    );
    let all = connect(&mut h, &mut out, 3, "all", None);
    assert_eq!(
        topic(&mut h, &mut out, all, "subscribe", "anything")["ok"],
        true
    );
    // Without a list: the default, all topics.
    let plain = connect(&mut h, &mut out, 4, "plain", None);
    assert_eq!(topic(&mut h, &mut out, plain, "subscribe", "x")["ok"], true);
    // A regrant changes what later subscribes may follow.
    grant(&mut h, &mut out, "a", None);
    assert_eq!(
        topic(&mut h, &mut out, a, "subscribe", "elsewhere")["ok"],
        true
    );
}

#[test]
fn a_revoked_grants_tag_goes_to_a_new_grant_only_after_its_connections_closed() {
    let mut h = hub(&[]);
    let mut out = Rec::default();
    grant(&mut h, &mut out, "a", Some(json!(["news"])));
    let a = connect(&mut h, &mut out, 1, "a", None);
    let reply = request(&mut h, &mut out, 0, json!({"op": "revoke", "token": "t-a"}));
    assert_eq!(reply["closed"], 1);
    assert!(h.sessions.get(a).is_none(), "closed in the same job");
    // The new grant takes the freed slot: neither its list nor a revoke of
    // it reaches anything of the old one.
    grant(&mut h, &mut out, "b", Some(json!(["sport"])));
    let b = connect(&mut h, &mut out, 2, "b", None);
    assert_eq!(
        h.sessions.get(b).unwrap().token,
        h.tokens.lookup("t-b").unwrap().1
    );
    assert_eq!(topic(&mut h, &mut out, b, "subscribe", "sport")["ok"], true);
    assert_eq!(
        topic(&mut h, &mut out, b, "subscribe", "news")["error"],
        "topic not allowed"
    );
    grant(&mut h, &mut out, "c", None);
    let c = connect(&mut h, &mut out, 3, "c", None);
    let reply = request(&mut h, &mut out, 0, json!({"op": "revoke", "token": "t-b"}));
    assert_eq!(reply["closed"], 1);
    assert!(h.sessions.get(b).is_none() && h.sessions.get(c).is_some());
}

#[test]
fn topics_default_none_allows_tokens_without_a_list_nothing() {
    let mut h = hub_with(
        Config {
            topics_default_all: false,
            ..config()
        },
        &["plain"],
    );
    let mut out = Rec::default();
    grant(&mut h, &mut out, "listed", Some(json!(["x"])));
    let plain = connect(&mut h, &mut out, 1, "plain", None);
    let listed = connect(&mut h, &mut out, 2, "listed", None);
    assert_eq!(
        topic(&mut h, &mut out, plain, "subscribe", "x")["error"],
        "topic not allowed"
    );
    assert_eq!(
        topic(&mut h, &mut out, listed, "subscribe", "x")["ok"],
        true
    );
    assert_eq!(
        topic(&mut h, &mut out, listed, "subscribe", "y")["ok"],
        false
    );
}

#[test]
fn bad_topic_patterns_are_refused_at_grant_time() {
    let mut h = hub(&[]);
    let mut out = Rec::default();
    for bad in [
        json!(["a*b"]),
        json!([""]),
        json!(["**"]),
        json!("news"),
        json!([1]),
    ] {
        let reply = grant(&mut h, &mut out, "a", Some(bad.clone()));
        assert_eq!(reply["ok"], false, "{bad}: {reply}");
    }
    assert_eq!(h.token_count(), 0);
    let long = "x".repeat(topics::MAX_TOPIC + 1);
    assert_eq!(
        grant(&mut h, &mut out, "a", Some(json!([long])))["ok"],
        false
    );
    assert_eq!(grant(&mut h, &mut out, "a", Some(json!(null)))["ok"], true);
}
