//! JSON-RPC 2.0 framing for the control socket: one request per line, one reply per line.

use serde::Serialize;
use serde_json::{Value, json};

pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;
pub const INTERNAL_ERROR: i64 = -32603;
/// Server errors (application level), JSON-RPC's reserved -32000..-32099 range.
pub const SERVER_BUSY: i64 = -32000;
pub const CONFIG_INVALID: i64 = -32001;
pub const APPLY_FAILED: i64 = -32002;
pub const UNAVAILABLE: i64 = -32003;

/// An error reply.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl RpcError {
    pub fn new(code: i64, message: impl Into<String>) -> RpcError {
        RpcError {
            code,
            message: message.into(),
            data: None,
        }
    }
    pub fn with_data(mut self, data: Value) -> RpcError {
        self.data = Some(data);
        self
    }
    pub fn invalid_params(message: impl Into<String>) -> RpcError {
        RpcError::new(INVALID_PARAMS, message)
    }
    pub fn internal(message: impl Into<String>) -> RpcError {
        RpcError::new(INTERNAL_ERROR, message)
    }
}

/// A request read off one line.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    /// `None` for a notification (no reply is sent).
    pub id: Option<Value>,
    pub method: String,
    pub params: Value,
}

/// Parse one line. On failure, the error reply to send (with the id when it could be read).
pub fn parse_request(line: &[u8]) -> Result<Request, (Value, RpcError)> {
    let v: Value = serde_json::from_slice(line).map_err(|e| {
        (
            Value::Null,
            RpcError::new(PARSE_ERROR, format!("parse error: {e}")),
        )
    })?;
    let Value::Object(obj) = v else {
        let msg = if v.is_array() {
            "batch requests are not supported: send one request per line"
        } else {
            "a request must be a JSON object"
        };
        return Err((Value::Null, RpcError::new(INVALID_REQUEST, msg)));
    };
    let id = obj.get("id").cloned();
    let reply_id = id.clone().unwrap_or(Value::Null);
    if let Some(idv) = &id
        && !(idv.is_string() || idv.is_number() || idv.is_null())
    {
        return Err((
            Value::Null,
            RpcError::new(INVALID_REQUEST, "id must be a string, a number or null"),
        ));
    }
    match obj.get("jsonrpc") {
        Some(Value::String(s)) if s == "2.0" => {}
        _ => {
            return Err((
                reply_id,
                RpcError::new(INVALID_REQUEST, "\"jsonrpc\" must be \"2.0\""),
            ));
        }
    }
    let Some(Value::String(method)) = obj.get("method") else {
        return Err((
            reply_id,
            RpcError::new(INVALID_REQUEST, "\"method\" must be a string"),
        ));
    };
    let params = match obj.get("params") {
        None | Some(Value::Null) => json!({}),
        Some(p @ Value::Object(_)) => p.clone(),
        Some(_) => {
            return Err((
                reply_id,
                RpcError::invalid_params("params must be an object (named parameters)"),
            ));
        }
    };
    Ok(Request {
        id,
        method: method.clone(),
        params,
    })
}

/// Serialise a reply line (with the trailing newline).
pub fn reply_line(id: &Value, result: Result<Value, RpcError>) -> Vec<u8> {
    let v = match result {
        Ok(r) => json!({"jsonrpc": "2.0", "id": id, "result": r}),
        Err(e) => json!({"jsonrpc": "2.0", "id": id, "error": e}),
    };
    let mut out = serde_json::to_vec(&v).unwrap_or_else(|_| b"{}".to_vec());
    out.push(b'\n');
    out
}

/// A notification line (server → client, e.g. events).
pub fn notification_line(method: &str, params: Value) -> Vec<u8> {
    let mut out =
        serde_json::to_vec(&json!({"jsonrpc": "2.0", "method": method, "params": params}))
            .unwrap_or_else(|_| b"{}".to_vec());
    out.push(b'\n');
    out
}

/// Typed access to named params.
pub struct Params<'a>(pub &'a Value);

impl Params<'_> {
    pub fn str(&self, key: &str) -> Result<Option<&str>, RpcError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(RpcError::invalid_params(format!("{key} must be a string"))),
        }
    }
    pub fn req_str(&self, key: &str) -> Result<&str, RpcError> {
        self.str(key)?
            .ok_or_else(|| RpcError::invalid_params(format!("missing param {key}")))
    }
    pub fn bool(&self, key: &str) -> Result<Option<bool>, RpcError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(RpcError::invalid_params(format!(
                "{key} must be true or false"
            ))),
        }
    }
    pub fn u64(&self, key: &str) -> Result<Option<u64>, RpcError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| {
                RpcError::invalid_params(format!("{key} must be a non-negative integer"))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_request() {
        let r = parse_request(br#"{"jsonrpc":"2.0","id":7,"method":"system.status"}"#).unwrap();
        assert_eq!(r.id, Some(json!(7)));
        assert_eq!(r.method, "system.status");
        assert_eq!(r.params, json!({}));
        let n = parse_request(br#"{"jsonrpc":"2.0","method":"x","params":{"a":1}}"#).unwrap();
        assert_eq!(n.id, None);
    }

    #[test]
    fn bad_requests() {
        let cases: [(&[u8], i64); 8] = [
            (b"{not json", PARSE_ERROR),
            (b"", PARSE_ERROR),
            (b"[1,2]", INVALID_REQUEST),
            (b"42", INVALID_REQUEST),
            (br#"{"id":1,"method":"a"}"#, INVALID_REQUEST),
            (br#"{"jsonrpc":"2.0","id":1}"#, INVALID_REQUEST),
            (
                br#"{"jsonrpc":"2.0","id":1,"method":"a","params":[1]}"#,
                INVALID_PARAMS,
            ),
            (
                br#"{"jsonrpc":"2.0","id":{},"method":"a"}"#,
                INVALID_REQUEST,
            ),
        ];
        for (line, code) in cases {
            let (_, e) = parse_request(line).unwrap_err();
            assert_eq!(e.code, code, "{}", String::from_utf8_lossy(line));
        }
        let (id, _) = parse_request(br#"{"jsonrpc":"1.0","id":"x","method":"a"}"#).unwrap_err();
        assert_eq!(id, json!("x"));
    }

    #[test]
    fn params_access() {
        let v = json!({"s":"x","b":true,"n":5,"bad":"5"});
        let p = Params(&v);
        assert_eq!(p.str("s").unwrap(), Some("x"));
        assert_eq!(p.bool("b").unwrap(), Some(true));
        assert_eq!(p.u64("n").unwrap(), Some(5));
        assert!(p.u64("bad").is_err());
        assert!(p.req_str("missing").is_err());
    }
}
