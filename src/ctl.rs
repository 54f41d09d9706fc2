//! Client side of the JSON control socket: one JSON-RPC 2.0 request per line.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

/// Why a control call failed.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("cannot reach the control socket {path}: {source}")]
    Connect {
        path: String,
        source: std::io::Error,
    },
    #[error("control socket i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad reply from the daemon: {0}")]
    BadReply(String),
    /// The daemon answered with a JSON-RPC error object.
    #[error("{message} (code {code}){}", data.as_ref().map(|d| format!(": {d}")).unwrap_or_default())]
    Rpc {
        code: i64,
        message: String,
        data: Option<Value>,
    },
}

/// Call `method` with `params` and return its `result`.
pub fn call(
    socket: &Path,
    method: &str,
    params: Value,
    timeout: Duration,
) -> Result<Value, CtlError> {
    let stream = UnixStream::connect(socket).map_err(|source| CtlError::Connect {
        path: socket.display().to_string(),
        source,
    })?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let req = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let mut line = serde_json::to_vec(&req).map_err(|e| CtlError::BadReply(e.to_string()))?;
    line.push(b'\n');
    (&stream).write_all(&line)?;
    let mut reader = BufReader::new(&stream);
    let mut reply = String::new();
    reader.read_line(&mut reply)?;
    parse_reply(&reply)
}

/// Turn one reply line into a result or an error.
pub fn parse_reply(line: &str) -> Result<Value, CtlError> {
    let v: Value = serde_json::from_str(line.trim())
        .map_err(|e| CtlError::BadReply(format!("{e}: {:?}", truncate(line, 200))))?;
    if let Some(err) = v.get("error") {
        return Err(CtlError::Rpc {
            code: err.get("code").and_then(Value::as_i64).unwrap_or(0),
            message: err
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("error")
                .to_string(),
            data: err.get("data").cloned(),
        });
    }
    v.get("result")
        .cloned()
        .ok_or_else(|| CtlError::BadReply("reply has neither result nor error".into()))
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies() {
        assert_eq!(
            parse_reply(r#"{"jsonrpc":"2.0","id":1,"result":{"a":1}}"#).unwrap(),
            json!({"a":1})
        );
        let e = parse_reply(
            r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"method not found"}}"#,
        )
        .unwrap_err();
        assert!(matches!(e, CtlError::Rpc { code: -32601, .. }));
        assert!(parse_reply("garbage").is_err());
        assert!(parse_reply("{}").is_err());
    }
}
