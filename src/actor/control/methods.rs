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
    "states.list",
    "states.count",
    "pfsync.status",
    "pfsync.bulk",
    "nat.ruleset",
    "config.get",
    "config.apply",
    "config.history",
    "events.subscribe",
    "plugins.list",
    "plugins.restart",
    "dhcp.leases",
    "dhcp.failover",
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
        "dhcp.leases" | "dhcp.failover" => {
            let dhcp = sup
                .send(crate::supervisor::DhcpAddrMsg)
                .await
                .map_err(mailbox)?
                .ok_or_else(|| {
                    RpcError::new(rpc::UNAVAILABLE, "the DHCP service is not running")
                })?;
            if method == "dhcp.leases" {
                let interface = p.str("interface")?.map(str::to_string);
                dhcp.send(crate::actor::dhcp::DhcpLeasesMsg { interface })
                    .await
                    .map_err(mailbox)
            } else {
                dhcp.send(crate::actor::dhcp::DhcpFailoverMsg)
                    .await
                    .map_err(mailbox)
            }
        }
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
        "pfsync.status" => {
            let a = sup
                .send(crate::supervisor::PfsyncAddrMsg)
                .await
                .map_err(mailbox)?;
            match a {
                Some(a) => a
                    .send(crate::actor::pfsync::PfsyncStatusMsg)
                    .await
                    .map_err(mailbox),
                None => {
                    Ok(json!({"enabled": false, "reason": "hasync/pfsyncinterface is not set"}))
                }
            }
        }
        "pfsync.bulk" => {
            let a = sup
                .send(crate::supervisor::PfsyncAddrMsg)
                .await
                .map_err(mailbox)?
                .ok_or_else(|| RpcError::new(rpc::UNAVAILABLE, "state sync is not configured"))?;
            a.send(crate::actor::pfsync::PfsyncBulkMsg)
                .await
                .map_err(mailbox)?;
            Ok(json!({"requested": true}))
        }
        "states.list" | "states.count" => {
            let origins = match sup
                .send(crate::supervisor::PfsyncAddrMsg)
                .await
                .map_err(mailbox)?
            {
                Some(a) => a
                    .send(crate::actor::pfsync::PfsyncOriginsMsg)
                    .await
                    .unwrap_or_default(),
                None => Default::default(),
            };
            let count_only = method == "states.count";
            let limit = if count_only {
                0
            } else {
                p.u64("limit")?.unwrap_or(1000).min(1_000_000) as usize
            };
            let filter = p.str("filter")?.map(str::to_string);
            let peer = origins
                .values()
                .filter(|(o, _)| *o == crate::proto::pfsync::Origin::Peer)
                .count();
            let (rows, total) = crate::actor::pfsync::states_list(origins, limit, filter)
                .await
                .map_err(|e| RpcError::new(rpc::APPLY_FAILED, e))?;
            if count_only {
                Ok(json!({"kernel": total, "synced_from_peer": peer}))
            } else {
                Ok(json!({"total": total, "states": rows}))
            }
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
        "plugins.list" | "plugins.restart" => {
            use crate::actor::plugins::{PluginRestartMsg, PluginsListMsg};
            let plugins = sup
                .send(crate::supervisor::PluginsAddrMsg)
                .await
                .map_err(mailbox)?
                .ok_or_else(|| {
                    RpcError::new(rpc::UNAVAILABLE, "the plugins actor is not running")
                })?;
            if method == "plugins.list" {
                return plugins.send(PluginsListMsg).await.map_err(mailbox);
            }
            let name = p.req_str("name")?.to_string();
            plugins
                .send(PluginRestartMsg { name: name.clone() })
                .await
                .map_err(mailbox)?
                .map_err(|e| RpcError::new(rpc::APPLY_FAILED, e))?;
            Ok(json!({"restarted": name}))
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
