//! Kea's HA control-command format (dhcp.md §2): `{"command", "service": ["dhcp4"], "arguments"}`
//! answered by `{"result", "text", "arguments"}` (a one-element list when the request named a
//! service, as kea-ctrl-agent answers). Lease JSON follows Kea's `Lease4::toElement`.

use std::net::Ipv4Addr;

use serde_json::{Value, json};

use crate::proto::dhcp::server::{Lease, LeaseState, Origin};

/// Kea's control port for HA peers (OPNsense uses 8000+; we use 8647).
pub const PORT: u16 = 8647;
/// The subnet id both peers agree on (one subnet per interface).
pub const SUBNET_ID: u64 = 1;

pub fn command(name: &str, args: Option<Value>) -> Value {
    let mut v = json!({"command": name, "service": ["dhcp4"]});
    if let Some(a) = args {
        v["arguments"] = a;
    }
    v
}

pub fn answer(result: u64, text: &str, args: Option<Value>) -> Value {
    let mut v = json!({"result": result, "text": text});
    if let Some(a) = args {
        v["arguments"] = a;
    }
    v
}

/// The first answer of a response (a list from kea-ctrl-agent, an object from us or Kea's own
/// HA listener).
pub fn first_answer(v: Value) -> Value {
    match v {
        Value::Array(mut a) if !a.is_empty() => a.swap_remove(0),
        other => other,
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.is_empty() {
        return Some(Vec::new());
    }
    s.split([':', '-'])
        .map(|p| u8::from_str_radix(p, 16).ok())
        .collect()
}

pub fn lease_to_json(l: &Lease) -> Value {
    let mut v = json!({
        "ip-address": l.addr.to_string(),
        "hw-address": hex(&l.mac),
        "subnet-id": SUBNET_ID,
        "valid-lft": l.valid_lft(),
        "cltt": l.cltt,
        "expire": l.expires,
        "fqdn-fwd": false,
        "fqdn-rev": false,
        "hostname": l.hostname.clone().unwrap_or_default(),
        "state": l.state.kea(),
    });
    if let Some(c) = &l.client_id {
        v["client-id"] = json!(hex(c));
    }
    v
}

/// A partner's lease; `None` when a required field is missing or malformed.
pub fn lease_from_json(v: &Value) -> Option<Lease> {
    let addr: Ipv4Addr = v.get("ip-address")?.as_str()?.parse().ok()?;
    let mac = unhex(v.get("hw-address").and_then(Value::as_str).unwrap_or(""))?;
    let client_id = match v.get("client-id").and_then(Value::as_str) {
        Some(s) if !s.is_empty() => Some(unhex(s)?),
        _ => None,
    };
    let valid = v.get("valid-lft").and_then(Value::as_u64).unwrap_or(0);
    let (cltt, expires) = match (
        v.get("cltt").and_then(Value::as_u64),
        v.get("expire").and_then(Value::as_u64),
    ) {
        (Some(c), _) => (c, c.saturating_add(valid)),
        (None, Some(e)) => (e.saturating_sub(valid), e),
        (None, None) => return None,
    };
    let hostname = v
        .get("hostname")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(|s| s.chars().filter(|c| !c.is_control()).take(253).collect());
    Some(Lease {
        addr,
        mac,
        client_id,
        hostname,
        cltt,
        expires,
        state: LeaseState::from_kea(v.get("state").and_then(Value::as_u64).unwrap_or(0)),
        origin: Origin::Partner,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_json_round_trip() {
        let l = Lease {
            addr: Ipv4Addr::new(192, 168, 1, 100),
            mac: vec![2, 0, 0, 0, 0, 1],
            client_id: Some(vec![1, 2, 0, 0, 0, 0, 1]),
            hostname: Some("cli".into()),
            cltt: 1000,
            expires: 8200,
            state: LeaseState::Active,
            origin: Origin::Partner,
        };
        let v = lease_to_json(&l);
        assert_eq!(v["hw-address"], "02:00:00:00:00:01");
        assert_eq!(v["valid-lft"], 7200);
        assert_eq!(lease_from_json(&v), Some(l.clone()));
        // Kea's lease4-update carries expire, not cltt
        let mut k = v.clone();
        k.as_object_mut().unwrap().remove("cltt");
        assert_eq!(lease_from_json(&k), Some(l));
        assert_eq!(lease_from_json(&json!({"ip-address": "x"})), None);
        assert_eq!(
            lease_from_json(&json!({"ip-address": "1.2.3.4", "hw-address": "zz", "expire": 1})),
            None
        );
    }
}
