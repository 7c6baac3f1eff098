//! A cluster node on virtual time: jobs go to Redis, deliveries come from
//! the channel, replies wait for both and keep their order.

use serde_json::{Value, json};

use super::*;

fn node(users: &[&str]) -> Hub {
    hub_with(
        Config {
            node: Some("n1".into()),
            ..config()
        },
        users,
    )
}

fn send(h: &mut Hub, out: &mut Rec, now: u64, body: Value) {
    let line = body.to_string();
    let input = Input::Request {
        origin: CTRL,
        line: line.as_bytes(),
    };
    h.handle(now, input, out);
}

fn link(h: &mut Hub, out: &mut Rec, up: bool) {
    h.handle(0, Input::RedisLink { up, counter: 0 }, out);
}

/// The channel message Redis's function publishes for a job.
fn channel(h: &mut Hub, out: &mut Rec, seq: u64, node: &str, reference: u64, job: &Value) {
    let payload = format!(
        "{{\"seq\":{seq},\"ts\":1700000000000,\"node\":\"{node}\",\"ref\":{reference}}}\n{job}"
    );
    h.handle(
        0,
        Input::Remote {
            payload: payload.as_bytes(),
        },
        out,
    );
}

fn replies(out: &Rec) -> Vec<Value> {
    out.replies.iter().map(|(v, _)| v.clone()).collect()
}

#[test]
fn a_push_is_relayed_and_answered_once_it_comes_back() {
    let mut h = node(&["a"]);
    let mut out = Rec::default();
    let a = connect(&mut h, &mut out, 1, "a", None);
    send(
        &mut h,
        &mut out,
        0,
        json!({"op": "push", "users": ["a"], "content": 1, "id": 7}),
    );
    assert_eq!(
        replies(&out),
        [json!({"ok": false, "error": "redis link down", "id": 7})]
    );
    assert!(out.seqs(a).is_empty(), "nothing delivered while down");

    link(&mut h, &mut out, true);
    send(
        &mut h,
        &mut out,
        0,
        json!({"op": "push", "users": ["a"], "content": 2, "id": 8}),
    );
    let (reference, job, id) = out.relays[0].clone();
    assert_eq!(job, json!({"users": ["a"], "content": 2}));
    assert_eq!(id, None);
    assert!(out.seqs(a).is_empty(), "not delivered where it arrived");
    h.handle(
        0,
        Input::Relayed {
            reference,
            result: Ok(41),
        },
        &mut out,
    );
    assert_eq!(
        out.replies.len(),
        1,
        "the reply waits for the delivery here"
    );
    channel(&mut h, &mut out, 41, "n1", reference, &job);
    assert_eq!(out.seqs(a), [41]);
    assert_eq!(out.texts(a)[0]["messageId"], "R-41");
    assert_eq!(
        replies(&out)[1],
        json!({"ok": true, "id": 8, "messageId": "R-41", "seq": 41, "delivered": 1, "queued": 0})
    );
}

#[test]
fn every_message_on_the_channel_is_delivered_once_in_seq_order() {
    let mut h = node(&["a"]);
    let mut out = Rec::default();
    link(&mut h, &mut out, true);
    let a = connect(&mut h, &mut out, 1, "a", None);
    let job = json!({"users": ["a"], "content": "x"});
    for seq in [5, 6, 6, 4, 9] {
        channel(&mut h, &mut out, seq, "other", 1, &job);
    }
    // 7 and 8 are missing: the window has neither.
    h.handle(0, Input::Recovered { payloads: &[] }, &mut out);
    assert_eq!(out.seqs(a), [5, 6, 9], "repeats and older seqs are dropped");
    let stats = request(&mut h, &mut out, 0, json!({"op": "stats"}));
    assert_eq!(
        (
            stats["redis_received"].clone(),
            stats["redis_stale"].clone(),
            stats["redis_gaps"].clone()
        ),
        (json!(5), json!(2), json!(1))
    );
    assert_eq!(
        (stats["redis"].clone(), stats["seq"].clone()),
        (json!("up"), json!(9))
    );
    // Not a wspush message, or not a job: dropped and counted.
    h.handle(0, Input::Remote { payload: b"hello" }, &mut out);
    channel(&mut h, &mut out, 10, "other", 1, &json!({"users": 3}));
    assert_eq!(out.seqs(a), [5, 6, 9]);
    let stats = request(&mut h, &mut out, 0, json!({"op": "stats"}));
    assert_eq!(stats["redis_bad"], json!(2));
}

#[test]
fn replies_keep_request_order_behind_a_job_that_waits() {
    let mut h = node(&[]);
    let mut out = Rec::default();
    link(&mut h, &mut out, true);
    send(
        &mut h,
        &mut out,
        0,
        json!({"op": "publish", "topic": "t", "content": 1, "id": 1}),
    );
    send(&mut h, &mut out, 0, json!({"op": "stats", "id": 2}));
    send(
        &mut h,
        &mut out,
        0,
        json!({"op": "push", "content": 2, "id": 3}),
    );
    assert!(out.replies.is_empty(), "stats waits behind the publish");
    let (first, job1, _) = out.relays[0].clone();
    let (second, job2, _) = out.relays[1].clone();
    // The second job comes back first; nothing leaves out of order.
    channel(&mut h, &mut out, 2, "n1", second, &job2);
    channel(&mut h, &mut out, 1, "n1", first, &job1);
    assert!(
        out.replies.is_empty(),
        "seq 1 after 2 is stale here: still waiting"
    );
    h.handle(
        0,
        Input::Relayed {
            reference: first,
            result: Ok(1),
        },
        &mut out,
    );
    link(&mut h, &mut out, false);
    let ids: Vec<Value> = replies(&out).iter().map(|r| r["id"].clone()).collect();
    assert_eq!(ids, [json!(1), json!(2), json!(3)]);
    let got = replies(&out);
    assert_eq!(got[0]["ok"], false, "{}", got[0]);
    let error = got[0]["error"].as_str().unwrap();
    assert!(
        error.contains("seq 1") && error.contains("not seen it"),
        "{error}"
    );
    assert!(got[0].get("queued").is_none());
    assert_eq!(got[2]["seq"], 2);
    assert_eq!(got[2]["delivered"], 0);
}

#[test]
fn a_job_redis_refuses_or_never_answers_gets_an_error() {
    let mut h = node(&[]);
    let mut out = Rec::default();
    link(&mut h, &mut out, true);
    send(&mut h, &mut out, 0, json!({"op": "push", "content": 1}));
    let reference = out.relays[0].0;
    let result = Err("ERR Function not found");
    h.handle(0, Input::Relayed { reference, result }, &mut out);
    assert_eq!(replies(&out)[0]["error"], "redis: ERR Function not found");
    send(&mut h, &mut out, 1000, json!({"op": "push", "content": 2}));
    h.handle(5_500, Input::Tick, &mut out);
    assert_eq!(out.replies.len(), 1, "not yet 5 s");
    h.handle(6_600, Input::Tick, &mut out); // swept at most 1 s late
    let error = replies(&out)[1]["error"].as_str().unwrap().to_owned();
    assert!(
        error.starts_with("redis did not answer within 5 s"),
        "{error}"
    );
    // A late answer for a job already answered changes nothing.
    let late = out.relays[1].0;
    h.handle(
        7_000,
        Input::Relayed {
            reference: late,
            result: Ok(3),
        },
        &mut out,
    );
    assert_eq!(out.replies.len(), 2);
}

#[test]
fn scheduled_runs_are_relayed_with_their_job_id() {
    let mut h = node(&[]);
    let mut out = Rec::default();
    link(&mut h, &mut out, true);
    let reply = request(
        &mut h,
        &mut out,
        0,
        json!({"op": "push", "content": 1, "delay": 2}),
    );
    let job_id = reply["messageId"].as_str().unwrap().to_owned();
    h.handle(3_000, Input::Tick, &mut out);
    let (_, job, id) = out.relays.last().unwrap().clone();
    assert_eq!(job, json!({"content": 1}));
    assert_eq!(id.as_deref(), Some(job_id.as_str()));
}

fn payload(seq: u64, job: &Value) -> String {
    format!("{{\"seq\":{seq},\"ts\":1,\"node\":\"other\",\"ref\":0}}\n{job}")
}

#[test]
fn a_gap_is_repaired_from_the_recent_window_in_order() {
    let mut h = node(&["a"]);
    let mut out = Rec::default();
    link(&mut h, &mut out, true);
    let a = connect(&mut h, &mut out, 1, "a", None);
    let job = json!({"users": ["a"], "content": 0});
    channel(&mut h, &mut out, 5, "other", 0, &job);
    channel(&mut h, &mut out, 9, "other", 0, &job);
    assert_eq!(out.fetches, [(6, 8)]);
    channel(&mut h, &mut out, 10, "other", 0, &job);
    assert_eq!(out.seqs(a), [5], "held back until the window answers");
    // The window still has 7 and 8 (6 was trimmed).
    let (p7, p8) = (payload(7, &job), payload(8, &job));
    let recovered: [&[u8]; 2] = [p7.as_bytes(), p8.as_bytes()];
    h.handle(
        0,
        Input::Recovered {
            payloads: &recovered,
        },
        &mut out,
    );
    assert_eq!(out.seqs(a), [5, 7, 8, 9, 10]);
    let stats = request(&mut h, &mut out, 0, json!({"op": "stats"}));
    assert_eq!(
        (stats["redis_gaps"].clone(), stats["redis_lost"].clone()),
        (json!(1), json!(1))
    );
}

#[test]
fn a_repair_that_gets_no_answer_ends_after_5_s() {
    let mut h = node(&["a"]);
    let mut out = Rec::default();
    link(&mut h, &mut out, true);
    let a = connect(&mut h, &mut out, 1, "a", None);
    let job = json!({"users": ["a"], "content": 0});
    channel(&mut h, &mut out, 1, "other", 0, &job);
    channel(&mut h, &mut out, 3, "other", 0, &job);
    h.handle(4_000, Input::Tick, &mut out);
    assert_eq!(out.seqs(a), [1]);
    h.handle(6_100, Input::Tick, &mut out);
    assert_eq!(out.seqs(a), [1, 3], "delivered without the lost seq");
    // Losing the link ends a repair at once too.
    channel(&mut h, &mut out, 6, "other", 0, &job);
    link(&mut h, &mut out, false);
    assert_eq!(out.seqs(a), [1, 3, 6]);
}

#[test]
fn seqs_missed_while_the_link_was_down_are_fetched_when_it_is_back() {
    let mut h = node(&["a"]);
    let mut out = Rec::default();
    link(&mut h, &mut out, true);
    let a = connect(&mut h, &mut out, 1, "a", None);
    let job = json!({"users": ["a"], "content": 0});
    channel(&mut h, &mut out, 3, "other", 0, &job);
    link(&mut h, &mut out, false);
    h.handle(
        0,
        Input::RedisLink {
            up: true,
            counter: 5,
        },
        &mut out,
    );
    assert_eq!(out.fetches, [(4, 5)]);
    let (p4, p5) = (payload(4, &job), payload(5, &job));
    let recovered: [&[u8]; 2] = [p4.as_bytes(), p5.as_bytes()];
    h.handle(
        0,
        Input::Recovered {
            payloads: &recovered,
        },
        &mut out,
    );
    assert_eq!(out.seqs(a), [3, 4, 5]);
    // A Redis that came back empty was seeded to 3: nothing to fetch.
    link(&mut h, &mut out, false);
    h.handle(
        0,
        Input::RedisLink {
            up: true,
            counter: 5,
        },
        &mut out,
    );
    assert_eq!(out.fetches.len(), 1);
}

#[test]
fn a_gap_the_subscription_shows_before_the_link_is_up_is_fetched_once_it_is() {
    let mut h = node(&["a"]);
    let mut out = Rec::default();
    link(&mut h, &mut out, true);
    let a = connect(&mut h, &mut out, 1, "a", None);
    let job = json!({"users": ["a"], "content": 0});
    channel(&mut h, &mut out, 3, "other", 0, &job);
    link(&mut h, &mut out, false);
    // The new subscription brings seq 6 before the link is declared up:
    // nothing can be fetched yet, and 6 is held back.
    channel(&mut h, &mut out, 6, "other", 0, &job);
    assert!(out.fetches.is_empty());
    assert_eq!(out.seqs(a), [3]);
    h.handle(
        0,
        Input::RedisLink {
            up: true,
            counter: 6,
        },
        &mut out,
    );
    assert_eq!(out.fetches, [(4, 5)], "asked once the link is up");
    let (p4, p5) = (payload(4, &job), payload(5, &job));
    let recovered: [&[u8]; 2] = [p4.as_bytes(), p5.as_bytes()];
    h.handle(
        0,
        Input::Recovered {
            payloads: &recovered,
        },
        &mut out,
    );
    assert_eq!(out.seqs(a), [3, 4, 5, 6]);
}

#[test]
fn the_leader_relays_plainly_published_jobs_and_the_others_ignore_them() {
    let mut h = node(&["a"]);
    let mut out = Rec::default();
    link(&mut h, &mut out, true);
    let plain = json!({"op": "push", "users": ["a"], "content": 1, "topic": "x"}).to_string();
    h.handle(
        0,
        Input::Remote {
            payload: plain.as_bytes(),
        },
        &mut out,
    );
    assert!(out.relays.is_empty(), "not the leader");
    h.handle(
        0,
        Input::RedisNodes {
            alive: 2,
            leader: true,
        },
        &mut out,
    );
    h.handle(
        0,
        Input::Remote {
            payload: plain.as_bytes(),
        },
        &mut out,
    );
    assert_eq!(out.relays.len(), 1);
    assert_eq!(
        out.relays[0].1,
        json!({"users": ["a"], "content": 1}),
        "push drops the topic"
    );
    for refused in [
        json!({"op": "publish", "content": 1}),
        json!({"op": "push", "content": 1, "delay": 5}),
        json!({"op": "stats"}),
    ] {
        let line = refused.to_string();
        h.handle(
            0,
            Input::Remote {
                payload: line.as_bytes(),
            },
            &mut out,
        );
    }
    assert_eq!(out.relays.len(), 1);
    let stats = request(&mut h, &mut out, 0, json!({"op": "stats"}));
    assert_eq!(
        (
            stats["redis_plain"].clone(),
            stats["redis_bad"].clone(),
            stats["redis_nodes"].clone()
        ),
        (json!(1), json!(3), json!(2))
    );
}
