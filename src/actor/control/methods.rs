//! The control methods: name → handler. Each handler parses its params, asks the owning actor,
//! and shapes the reply.

use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use actix::Addr;
use serde_json::{Value, json};

use super::rpc::{self, Params, RpcError};
use super::server::{Dispatch, ServerStats};
use crate::actor::store::CommitError;
use crate::supervisor::{
    ApplyConfigMsg, CarpStatusAllMsg, CurrentConfigMsg, InterfacesListMsg, MaintenanceMsg,
    Supervisor, SystemStatusMsg,
};

/// Every method the socket knows, for `system.methods` and error messages.
pub const METHODS: &[&str] = &[
    "system.status",
    "system.methods",
    "interfaces.list",
    "carp.status",
    "carp.maintenance",
    "filter.ruleset",
    "nat.ruleset",
    "config.get",
    "config.apply",
    "config.history",
    "events.subscribe",
    "ha.sync",
    "ha.status",
];

fn mailbox(e: actix::MailboxError) -> RpcError {
    RpcError::new(rpc::UNAVAILABLE, format!("the actor did not answer: {e}"))
}

fn commit_error(e: CommitError) -> RpcError {
    match &e {
        CommitError::Invalid(findings) => RpcError::new(
            rpc::CONFIG_INVALID,
            format!(
                "config refused, nothing changed: {}",
                findings
                    .iter()
                    .map(|f| f.to_string())
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        )
        .with_data(json!({"findings": findings})),
        CommitError::Malformed(m) => RpcError::new(
            rpc::CONFIG_INVALID,
            format!("config refused, nothing changed: {m}"),
        ),
        CommitError::Io(m) => RpcError::new(rpc::APPLY_FAILED, m.clone()),
    }
}

/// Build the dispatcher the server calls for every request.
pub fn dispatcher(sup: Addr<Supervisor>, stats: Arc<ServerStats>) -> Dispatch {
    Rc::new(move |method: String, params: Value| {
        let sup = sup.clone();
        let stats = stats.clone();
        Box::pin(async move { call(&sup, &stats, &method, &params).await })
    })
}

async fn call(
    sup: &Addr<Supervisor>,
    stats: &ServerStats,
    method: &str,
    params: &Value,
) -> Result<Value, RpcError> {
    let p = Params(params);
    match method {
        "system.status" => {
            let mut v = sup.send(SystemStatusMsg).await.map_err(mailbox)?;
            v["control"] = json!({
                "connections": stats.connections.load(Ordering::Relaxed),
                "refused_busy": stats.refused_busy.load(Ordering::Relaxed),
                "requests": stats.requests.load(Ordering::Relaxed),
                "errors": stats.errors.load(Ordering::Relaxed),
                "oversized": stats.oversized.load(Ordering::Relaxed),
            });
            Ok(v)
        }
        "system.methods" => Ok(json!(METHODS)),
        "interfaces.list" => {
            let list = sup.send(InterfacesListMsg).await.map_err(mailbox)?;
            Ok(json!(list))
        }
        "carp.status" => sup.send(CarpStatusAllMsg).await.map_err(mailbox),
        "carp.maintenance" => {
            let on = p
                .bool("enabled")?
                .ok_or_else(|| RpcError::invalid_params("missing param enabled (true|false)"))?;
            let out = sup
                .send(MaintenanceMsg { on })
                .await
                .map_err(mailbox)?
                .map_err(commit_error)?;
            Ok(json!({
                "maintenance": on,
                "changed": out.is_some(),
                "revision": out.map(|o| o.revision),
            }))
        }
        "filter.ruleset" | "nat.ruleset" => {
            let kind = if method == "filter.ruleset" {
                crate::actor::nft::Kind::Filter
            } else {
                crate::actor::nft::Kind::Nat
            };
            let st = sup
                .send(crate::supervisor::RulesetMsg(kind))
                .await
                .map_err(mailbox)?
                .ok_or_else(|| {
                    RpcError::new(rpc::UNAVAILABLE, "the ruleset actor is not running")
                })?;
            Ok(json!(st))
        }
        "config.get" => {
            let (cfg, rev) = sup.send(CurrentConfigMsg).await.map_err(mailbox)?;
            Ok(json!({
                "revision": rev,
                "xml": String::from_utf8_lossy(&cfg.to_bytes()),
                "sections": cfg.section_digests(),
                "findings": cfg.validate(),
            }))
        }
        "config.apply" => {
            let xml = p.req_str("xml")?;
            let description = p
                .str("description")?
                .unwrap_or("config.apply from the control socket")
                .to_string();
            let out = sup
                .send(ApplyConfigMsg {
                    xml: xml.as_bytes().to_vec(),
                    description,
                })
                .await
                .map_err(mailbox)?
                .map_err(commit_error)?;
            Ok(json!(out))
        }
        "config.history" => {
            let limit = p.u64("limit")?.unwrap_or(50).min(10_000) as u32;
            let store = sup
                .send(crate::supervisor::StoreAddrMsg)
                .await
                .map_err(mailbox)?;
            let revs = store
                .send(crate::actor::store::HistoryMsg { limit })
                .await
                .map_err(mailbox)?
                .map_err(RpcError::internal)?;
            Ok(json!(revs))
        }
        "ha.sync" | "ha.status" => {
            let ha = sup
                .send(crate::supervisor::HaAddrMsg)
                .await
                .map_err(mailbox)?
                .ok_or_else(|| {
                    RpcError::new(rpc::UNAVAILABLE, "the HA sync actor is not running")
                })?;
            if method == "ha.status" {
                ha.send(crate::actor::hasync::HaStatusMsg)
                    .await
                    .map_err(mailbox)
            } else {
                ha.send(crate::actor::hasync::HaSyncMsg)
                    .await
                    .map_err(mailbox)?
                    .map_err(|e| RpcError::new(rpc::APPLY_FAILED, format!("ha.sync failed: {e}")))
            }
        }
        _ => Err(RpcError::new(
            rpc::METHOD_NOT_FOUND,
            format!("unknown method {method:?}; known: {}", METHODS.join(", ")),
        )),
    }
}
