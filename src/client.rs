//! The control-socket client behind `wspush send`, `clients`, `stats`,
//! `token grant|revoke` and `kick`: one request line, one reply line,
//! printed to stdout. An `"ok":false` reply becomes an error (exit 1).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use serde_json::{Value, json};

use crate::cli::{Command, TokenCommand};

/// Turn a client subcommand into a request, send it, print the reply.
pub fn run(command: Command) -> Result<(), String> {
    let (path, request) = match command {
        Command::Serve(_) => return Err("serve is not a client command".into()),
        Command::Send(a) => {
            // Content is JSON when it parses as JSON, else a plain string.
            let content =
                serde_json::from_str::<Value>(&a.content).unwrap_or(Value::String(a.content));
            let mut req = json!({ "op": "push", "users": a.users, "content": content });
            if let Some(title) = a.title {
                req["title"] = json!(title);
            }
            if let Some(kind) = a.kind {
                req["type"] = json!(kind);
            }
            (a.control.control, req)
        }
        Command::Clients(a) => (
            a.control.control,
            json!({ "op": "clients", "user": a.user }),
        ),
        Command::Stats(a) => (a.control, json!({ "op": "stats" })),
        Command::Token(TokenCommand::Grant {
            token,
            user,
            control,
        }) => (
            control.control,
            json!({ "op": "grant", "token": token, "user": user }),
        ),
        Command::Token(TokenCommand::Revoke { token, control }) => {
            (control.control, json!({ "op": "revoke", "token": token }))
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
