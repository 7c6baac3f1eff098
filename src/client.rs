//! The control-socket client behind `wspush send`, `publish`, `cancel`,
//! `messages`, `delete`, `clients`, `stats`, `token grant|revoke|list` and
//! `kick`: one request line, one reply line, printed to stdout. An
//! `"ok":false` reply becomes an error (exit 1). `wspush events` instead
//! copies the stream until the server closes it (also exit 1).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use serde_json::{Value, json};

use crate::cli::{Command, PushOptions, TokenCommand};

/// Turn a client subcommand into a request, send it, print the reply.
pub fn run(command: Command) -> Result<(), String> {
    let (path, request) = match command {
        Command::Serve(_) => return Err("serve is not a client command".into()),
        Command::Send(a) => {
            let req = json!({ "op": "push", "users": a.users });
            (a.control.control, message(req, a.message))
        }
        Command::Publish(a) => {
            let req = json!({ "op": "publish", "topic": a.topic });
            (a.control.control, message(req, a.message))
        }
        Command::Cancel(a) => (
            a.control.control,
            json!({ "op": "cancel", "messageId": a.message_id }),
        ),
        Command::Delete(a) => (
            a.control.control,
            json!({ "op": "delete", "messageId": a.message_id }),
        ),
        Command::Messages(a) => (
            a.control.control,
            json!({ "op": "messages", "user": a.user, "status": a.status, "limit": a.limit, "after": a.after }),
        ),
        Command::Events(a) => return stream_events(&a.control),
        Command::Clients(a) => (
            a.control.control,
            json!({ "op": "clients", "user": a.user }),
        ),
        Command::Stats(a) => (a.control, json!({ "op": "stats" })),
        Command::Token(TokenCommand::Grant {
            token,
            user,
            topics,
            control,
        }) => {
            let mut req = json!({ "op": "grant", "token": token, "user": user });
            if !topics.is_empty() {
                req["topics"] = json!(topics);
            }
            (control.control, req)
        }
        Command::Token(TokenCommand::Revoke { token, control }) => {
            (control.control, json!({ "op": "revoke", "token": token }))
        }
        Command::Token(TokenCommand::List { control }) => {
            (control.control, json!({ "op": "tokens" }))
        }
        Command::Kick(a) => (
            a.control.control,
            json!({ "op": "kick", "user": a.user, "connection": a.connection }),
        ),
    };
    let reply = request_once(&path, &request)?;
    println!("{reply}");
    note_mailbox_off(&reply);
    if reply["ok"] == json!(true) {
        Ok(())
    } else {
        Err(reply["error"]
            .as_str()
            .unwrap_or("request failed")
            .to_string())
    }
}

/// Fill in a push/publish request's content and optional fields.
fn message(mut req: Value, options: PushOptions) -> Value {
    req["content"] = content(options.content, options.json, options.text);
    let optional = [
        ("title", options.title.map(Value::from)),
        ("type", options.kind.map(Value::from)),
        ("key", options.key.map(Value::from)),
        ("delay", options.delay.map(Value::from)),
        ("every", options.every.map(Value::from)),
    ];
    for (name, value) in optional {
        if let Some(value) = value {
            req[name] = value;
        }
    }
    req
}

/// CONTENT as the request's `content`: a JSON string with `--text`; parsed
/// JSON with `--json` (a parse error is a usage error: exit 2, nothing
/// sent); otherwise JSON when it parses, else a string, with a note on
/// stderr so that broken JSON is not sent as text unnoticed.
fn content(content: String, json: bool, text: bool) -> Value {
    if text {
        return Value::String(content);
    }
    match serde_json::from_str::<Value>(&content) {
        Ok(value) => value,
        Err(e) if json => usage_error(&format!("CONTENT is not valid JSON (--json): {e}")),
        Err(_) => {
            eprintln!(
                "wspush: CONTENT is not JSON; sent as a string \
                 (use --json to require JSON, --text to silence this)"
            );
            Value::String(content)
        }
    }
}

/// Report a bad command line the way clap does: on stderr, exit 2.
fn usage_error(message: &str) -> ! {
    eprintln!("wspush: {message}");
    std::process::exit(2)
}

/// A `messages` reply from a server without `--mailbox` says
/// `"mailbox":"off"`: tell the user why the list is empty.
fn note_mailbox_off(reply: &Value) {
    if reply["mailbox"] == json!("off") {
        eprintln!("wspush: the server runs without --mailbox, so it keeps no message records");
    }
}

/// `wspush events`: ask for the stream and copy it to stdout line by line.
/// The stream only ends when the server closes it, which is an error: a
/// script watching events must learn that it no longer gets any.
fn stream_events(path: &Path) -> Result<(), String> {
    let mut stream = connect(path)?;
    stream
        .write_all(b"{\"op\":\"events\"}\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut out = std::io::stdout().lock();
    for line in BufReader::new(stream).lines() {
        let line = line.map_err(|e| format!("read: {e}"))?;
        writeln!(out, "{line}")
            .and_then(|()| out.flush())
            .map_err(|e| format!("stdout: {e}"))?;
    }
    Err("the server closed the events stream".into())
}

fn connect(path: &Path) -> Result<UnixStream, String> {
    UnixStream::connect(path).map_err(|e| {
        format!(
            "cannot connect to {} (is `wspush serve` running?): {e}",
            path.display()
        )
    })
}

/// Send one request over a fresh connection and return the parsed reply.
pub fn request_once(path: &Path, request: &Value) -> Result<Value, String> {
    let mut stream = UnixStream::connect(path).map_err(|e| {
        format!(
            "cannot connect to {} (is `wspush serve` running?): {e}",
            path.display()
        )
    })?;
    let mut line = request.to_string();
    line.push('\n');
    stream
        .write_all(line.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut reply = String::new();
    BufReader::new(stream)
        .read_line(&mut reply)
        .map_err(|e| format!("read: {e}"))?;
    serde_json::from_str(&reply).map_err(|e| format!("bad reply {reply:?}: {e}"))
}
