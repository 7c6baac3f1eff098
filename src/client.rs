//! The control-socket client behind `wspush send`, `clients`, `stats`,
//! `token grant|revoke|list` and `kick`: one request line, one reply line,
//! printed to stdout. An `"ok":false` reply becomes an error (exit 1).

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
    // Content is JSON when it parses as JSON, else a plain string.
    let content = options.content;
    req["content"] = serde_json::from_str::<Value>(&content).unwrap_or(Value::String(content));
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

/// `wspush events`: ask for the stream and copy it to stdout line by line.
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
    Ok(())
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
