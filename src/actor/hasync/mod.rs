//! The `HaSync` actor: OPNsense's XML-RPC config sync, both ends.
//!
//! ```text
//!   Supervisor ──HaConfigMsg──▶ HaSync ──(re)starts──▶ actix-web server POST /xmlrpc.php
//!                                 │  ▲                      │ UsersMsg, CallMsg
//!                                 │  └──────────────────────┘
//!                                 ├─ restore_config_section → merge (proto::hasync) → ApplyConfigMsg
//!                                 └─ master: push to synchronizetoip (awc) after each commit / ha.sync
//! ```
//!
//! The pure parts (sections, encoding, master rewrite, backup merge, digests) live in
//! `proto::hasync`; the wire format in `wire::xmlrpc`.

pub mod client;
pub mod server;

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use actix_web::{App, HttpServer, web};
use serde_json::{Value as Json, json};

use crate::actor::StopMsg;
use crate::actor::store::CommitError;
use crate::bus::Bus;
use crate::config::{Config, User};
use crate::proto::hasync as sync;
use crate::supervisor::{
    ApplyConfigMsg, CarpStatusAllMsg, CurrentConfigMsg, Supervisor, SystemStatusMsg,
};
use crate::wire::xmlrpc::{MethodCall, Value};

/// Methods the server publishes.
pub const METHODS: &[&str] = &[
    "opnsense.firmware_version",
    "opnsense.restore_config_section",
    "opnsense.filter_configure",
    "opnsense.list_services",
    "opnsense.restart_service",
    "opnsense.start_service",
    "opnsense.stop_service",
    "opnsense.configd_reload_all_templates",
    "system.listMethods",
    "tandem.ha_status",
];

/// XML-RPC fault codes (the xmlrpc-epi convention IXR follows).
pub const FAULT_NO_METHOD: i64 = -32601;
pub const FAULT_PARAMS: i64 = -32602;
pub const FAULT_APP: i64 = -32500;

const PUSH_TIMEOUT: Duration = Duration::from_secs(60);
const STATUS_TIMEOUT: Duration = Duration::from_secs(10);
/// The automatic push waits for every VHID to be MASTER: this many checks, this far apart.
const PRECHECK_TRIES: u32 = 10;
const PRECHECK_RETRY: Duration = Duration::from_secs(1);

/// Where the server listens.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Listen {
    https: bool,
    port: u16,
}

fn listen_of(cfg: &Config) -> Listen {
    let https = cfg.system.webgui_protocol != "http";
    Listen {
        https,
        port: cfg
            .system
            .webgui_port
            .unwrap_or(if https { 443 } else { 80 }),
    }
}

/// The outcome of the last push.
#[derive(Clone, Debug, serde::Serialize)]
struct SyncRecord {
    at_unix: u64,
    result: &'static str,
    target: String,
    sections: Vec<String>,
    revision: i64,
    error: Option<String>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub struct HaSync {
    state_dir: PathBuf,
    sup: Addr<Supervisor>,
    #[allow(dead_code)]
    bus: Bus,
    config: Arc<Config>,
    revision: i64,
    seen_config: bool,
    server: Option<(Listen, actix_web::dev::ServerHandle)>,
    server_error: Option<String>,
    stats: Arc<server::Stats>,
    last_sync: Option<SyncRecord>,
    syncing: bool,
    pending: bool,
}

impl HaSync {
    pub fn new(state_dir: PathBuf, sup: Addr<Supervisor>, bus: Bus) -> HaSync {
        HaSync {
            state_dir,
            sup,
            bus,
            config: Arc::new(Config::factory_default()),
            revision: 0,
            seen_config: false,
            server: None,
            server_error: None,
            stats: Arc::new(server::Stats::default()),
            last_sync: None,
            syncing: false,
            pending: false,
        }
    }

    /// (Re)start the server if the webgui protocol or port changed.
    fn ensure_server(&mut self, ctx: &mut Context<Self>) {
        let want = listen_of(&self.config);
        if self.server.as_ref().is_some_and(|(l, _)| *l == want) {
            return;
        }
        if let Some((_, h)) = self.server.take() {
            actix_rt::spawn(async move { h.stop(true).await });
        }
        let state = web::Data::new(server::State {
            addr: ctx.address(),
            stats: self.stats.clone(),
        });
        let http = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .app_data(web::PayloadConfig::new(crate::wire::xmlrpc::MAX_BODY))
                .route("/xmlrpc.php", web::post().to(server::handle))
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(1);
        let addr = ("0.0.0.0", want.port);
        let bound = if want.https {
            server::tls_config(&self.state_dir.join("tls"), &self.config.system.hostname).and_then(
                |tls| {
                    http.bind_rustls_0_23(addr, tls)
                        .map_err(|e| format!("bind :{}: {e}", want.port))
                },
            )
        } else {
            http.bind(addr)
                .map_err(|e| format!("bind :{}: {e}", want.port))
        };
        match bound {
            Ok(b) => {
                let srv = b.run();
                let handle = srv.handle();
                actix_rt::spawn(async move {
                    if let Err(e) = srv.await {
                        tracing::error!("xmlrpc server ended: {e}");
                    }
                });
                tracing::info!(
                    port = want.port,
                    https = want.https,
                    "xmlrpc: listening on /xmlrpc.php"
                );
                self.server_error = None;
                self.server = Some((want, handle));
            }
            Err(e) => {
                tracing::error!("xmlrpc: cannot start the server: {e}");
                self.server_error = Some(e);
                // Retry later (the port may be busy for a moment after a restart).
                ctx.run_later(Duration::from_secs(5), |act, ctx| act.ensure_server(ctx));
            }
        }
    }

    /// The sync target URL and sections, or why there is nothing to push.
    fn plan(cfg: &Config) -> Result<(String, Vec<String>), String> {
        let target = cfg.hasync.synchronize_to.clone().ok_or_else(|| {
            "no sync target: hasync/synchronizetoip is empty (normal on the backup)".to_string()
        })?;
        let url = sync::sync_url(&target, &cfg.system.webgui_protocol, cfg.system.webgui_port)?;
        let (sections, unknown) = sync::sections_for(&cfg.hasync.syncitems);
        if !unknown.is_empty() {
            tracing::warn!(?unknown, "hasync: unknown sync ids ignored");
        }
        if sections.is_empty() {
            return Err("nothing has been configured to be synched (hasync/syncitems)".into());
        }
        Ok((url, sections))
    }

    /// Push to the backup: `firmware_version` (auth/reachability), `restore_config_section`,
    /// `filter_configure`. Resolves to the report `ha.sync` returns.
    fn push(&mut self) -> ResponseActFuture<Self, Result<Json, String>> {
        let cfg = self.config.clone();
        let revision = self.revision;
        let plan = Self::plan(&cfg);
        self.syncing = true;
        let fut = async move {
            let (url, sections) = plan?;
            let payload = sync::build_payload(&cfg, &sections);
            let user = cfg
                .hasync
                .username
                .clone()
                .filter(|u| !u.is_empty())
                .unwrap_or_else(|| "root".into());
            let pass = cfg.hasync.password.clone().unwrap_or_default();
            let out = async {
                let c = client::client(cfg.hasync.verify_peer, PUSH_TIMEOUT)?;
                let version =
                    client::call(&c, &url, &user, &pass, "opnsense.firmware_version", vec![])
                        .await?;
                let r = client::call(
                    &c,
                    &url,
                    &user,
                    &pass,
                    "opnsense.restore_config_section",
                    vec![payload],
                )
                .await?;
                if r != Value::Bool(true) {
                    return Err(format!("restore_config_section answered {r:?}"));
                }
                client::call(&c, &url, &user, &pass, "opnsense.filter_configure", vec![]).await?;
                Ok(value_to_json(&version))
            }
            .await;
            Ok::<_, String>((url, sections, out))
        };
        Box::pin(fut.into_actor(self).map(move |res, act, ctx| {
            act.syncing = false;
            let (record, reply) = match res {
                Err(e) => (
                    SyncRecord {
                        at_unix: unix_now(),
                        result: "failed",
                        target: String::new(),
                        sections: Vec::new(),
                        revision,
                        error: Some(e.clone()),
                    },
                    Err(e),
                ),
                Ok((url, sections, Ok(version))) => {
                    tracing::info!(target = %url, ?sections, "Filter sync successfully completed with {url}.");
                    (
                        SyncRecord {
                            at_unix: unix_now(),
                            result: "ok",
                            target: url.clone(),
                            sections: sections.clone(),
                            revision,
                            error: None,
                        },
                        Ok(json!({"target": url, "sections": sections, "result": "ok",
                                  "revision": revision, "peer_version": version})),
                    )
                }
                Ok((url, sections, Err(e))) => {
                    tracing::warn!(target = %url, "hasync: push failed: {e}");
                    (
                        SyncRecord {
                            at_unix: unix_now(),
                            result: "failed",
                            target: url,
                            sections,
                            revision,
                            error: Some(e.clone()),
                        },
                        Err(e),
                    )
                }
            };
            act.last_sync = Some(record);
            if act.pending {
                act.pending = false;
                act.auto_push(ctx);
            }
            reply
        }))
    }

    /// The automatic push after a commit: only when every local VHID is MASTER
    /// (`rc.filter_synchronize pre_check_master`).
    fn auto_push(&mut self, ctx: &mut Context<Self>) {
        self.auto_push_try(ctx, 0);
    }

    fn auto_push_try(&mut self, ctx: &mut Context<Self>, attempt: u32) {
        if self.syncing {
            self.pending = true;
            return;
        }
        self.syncing = true;
        let sup = self.sup.clone();
        let check = async move { sup.send(CarpStatusAllMsg).await.ok() };
        ctx.spawn(check.into_actor(self).then(move |carp, act, ctx| {
            act.syncing = false;
            let not_master = carp
                .as_ref()
                .and_then(|c| c["vhids"].as_array())
                .map(|v| v.iter().any(|x| x["state"] != "MASTER"))
                .unwrap_or(true);
            if not_master && attempt < PRECHECK_TRIES {
                // A VHID just added starts as BACKUP and takes a few adverts to win: ask again.
                ctx.run_later(PRECHECK_RETRY, move |act, ctx| {
                    act.auto_push_try(ctx, attempt + 1)
                });
                return Box::pin(actix::fut::ready(()))
                    as Pin<Box<dyn ActorFuture<Self, Output = ()>>>;
            }
            if not_master {
                tracing::info!("hasync: pre_check_master: backup mode, no automatic push");
                act.last_sync = Some(SyncRecord {
                    at_unix: unix_now(),
                    result: "skipped",
                    target: act.config.hasync.synchronize_to.clone().unwrap_or_default(),
                    sections: Vec::new(),
                    revision: act.revision,
                    error: Some("pre_check_master: not MASTER on every VHID".into()),
                });
                return Box::pin(actix::fut::ready(()))
                    as Pin<Box<dyn ActorFuture<Self, Output = ()>>>;
            }
            Box::pin(act.push().map(|_, _, _| ()))
        }));
    }

    /// This node's view for `ha.status` / `tandem.ha_status`.
    fn node_status(
        &self,
        sections: Vec<String>,
        master: bool,
    ) -> impl Future<Output = Json> + use<> {
        let cfg = self.config.clone();
        let revision = self.revision;
        let sup = self.sup.clone();
        async move {
            let carp = sup.send(CarpStatusAllMsg).await.unwrap_or(Json::Null);
            let state_sync = match sup.send(crate::supervisor::PfsyncAddrMsg).await {
                Ok(Some(a)) => match a.send(crate::actor::pfsync::PfsyncStatusMsg).await {
                    Ok(st) => json!({
                        "enabled": true,
                        "failover_safe": st["failover_safe"],
                        "not_safe_because": st["not_safe_because"],
                        "states": st["states"],
                        "lag_estimate_ms": st["lag"]["estimate_ms"],
                    }),
                    Err(e) => json!({"enabled": true, "failover_safe": false,
                                     "not_safe_because": [format!("state sync actor: {e}")]}),
                },
                _ => json!({"enabled": false, "failover_safe": false,
                            "not_safe_because": ["state sync is not configured (hasync/pfsyncinterface)"]}),
            };
            let vhids: Vec<Json> = carp["vhids"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|v| {
                            json!({"vhid": v["vhid"], "interface": v["interface"], "device": v["device"],
                                   "state": v["state"], "advbase": v["advbase"], "advskew": v["advskew"],
                                   "advertised_skew": v["advertised_skew"]})
                        })
                        .collect()
                })
                .unwrap_or_default();
            json!({
                "version": crate::VERSION,
                "hostname": cfg.system.hostname,
                "config_revision": revision,
                "demotion": carp["demotion"],
                "maintenance": cfg.maintenance,
                "vhids": vhids,
                "digests": sync::section_digests(&cfg, &sections, master),
                "interfaces": sync::interface_networks(&cfg),
                "pfsync": {"interface": cfg.hasync.pfsync_interface, "peer": cfg.hasync.pfsync_peer},
                "state_sync": state_sync,
            })
        }
    }
}

impl Actor for HaSync {
    type Context = Context<Self>;

    fn stopped(&mut self, _: &mut Context<Self>) {
        if let Some((_, h)) = self.server.take() {
            actix_rt::spawn(async move { h.stop(false).await });
        }
    }
}

/// A committed config (and the one in force at start).
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct HaConfigMsg {
    pub config: Arc<Config>,
    pub revision: i64,
    pub sections: Vec<String>,
    pub description: String,
}

impl Handler<HaConfigMsg> for HaSync {
    type Result = ();
    fn handle(&mut self, m: HaConfigMsg, ctx: &mut Context<Self>) {
        let first = !self.seen_config;
        let changed = m.revision != self.revision;
        self.seen_config = true;
        self.config = m.config;
        self.revision = m.revision;
        self.ensure_server(ctx);
        if first || !changed || m.sections.is_empty() {
            return;
        }
        if sync::is_merge_description(&m.description) {
            return;
        }
        if self.config.hasync.synchronize_to.is_none() {
            return;
        }
        tracing::info!(
            revision = m.revision,
            "hasync: config committed; pushing to the backup"
        );
        self.auto_push(ctx);
    }
}

/// `ha.sync`: push now.
#[derive(Message)]
#[rtype(result = "Result<serde_json::Value, String>")]
pub struct HaSyncMsg;

impl Handler<HaSyncMsg> for HaSync {
    type Result = ResponseActFuture<Self, Result<Json, String>>;
    fn handle(&mut self, _: HaSyncMsg, _: &mut Context<Self>) -> Self::Result {
        self.push()
    }
}

/// `ha.status`: both nodes side by side.
#[derive(Message)]
#[rtype(result = "serde_json::Value")]
pub struct HaStatusMsg;

impl Handler<HaStatusMsg> for HaSync {
    type Result = ResponseFuture<Json>;
    fn handle(&mut self, _: HaStatusMsg, _: &mut Context<Self>) -> Self::Result {
        let cfg = self.config.clone();
        let plan = Self::plan(&cfg);
        let sections = plan
            .as_ref()
            .map(|(_, s)| s.clone())
            .unwrap_or_else(|_| sync::sections_for(&cfg.hasync.syncitems).0);
        let local = self.node_status(sections.clone(), true);
        let last = json!(self.last_sync);
        let listen = self
            .server
            .as_ref()
            .map(|(l, _)| json!({"https": l.https, "port": l.port}));
        let server =
            json!({"listening": listen, "error": self.server_error, "stats": self.stats.json()});
        Box::pin(async move {
            let local = local.await;
            let mut warnings: Vec<String> = Vec::new();
            let (target, remote) = match &plan {
                Err(e) => (Json::Null, Err(e.clone())),
                Ok((url, _)) => {
                    let user = cfg
                        .hasync
                        .username
                        .clone()
                        .filter(|u| !u.is_empty())
                        .unwrap_or_else(|| "root".into());
                    let pass = cfg.hasync.password.clone().unwrap_or_default();
                    let r = async {
                        let c = client::client(cfg.hasync.verify_peer, STATUS_TIMEOUT)?;
                        let arg = Value::Struct(vec![(
                            "sections".into(),
                            Value::Array(sections.iter().map(|s| Value::str(s.clone())).collect()),
                        )]);
                        client::call(&c, url, &user, &pass, "tandem.ha_status", vec![arg]).await
                    }
                    .await;
                    (json!(url), r.map(|v| value_to_json(&v)))
                }
            };
            let mut table = serde_json::Map::new();
            let mut all_equal = true;
            let remote_json = match &remote {
                Ok(r) => {
                    for s in &sections {
                        let a = &local["digests"][s];
                        let b = &r["digests"][s];
                        let eq = a == b && !a.is_null();
                        all_equal &= eq;
                        table.insert(s.clone(), json!({"local": a, "remote": b, "equal": eq}));
                    }
                    let nets = |v: &Json| -> std::collections::BTreeMap<String, String> {
                        v["interfaces"]
                            .as_object()
                            .map(|o| {
                                o.iter()
                                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                                    .collect()
                            })
                            .unwrap_or_default()
                    };
                    warnings.extend(sync::interface_warnings(&nets(&local), &nets(r)));
                    let states = |v: &Json| -> Vec<(u64, String, String)> {
                        v["vhids"]
                            .as_array()
                            .map(|a| {
                                a.iter()
                                    .map(|x| {
                                        (
                                            x["vhid"].as_u64().unwrap_or(0),
                                            x["interface"].as_str().unwrap_or("").to_string(),
                                            x["state"].as_str().unwrap_or("").to_string(),
                                        )
                                    })
                                    .collect()
                            })
                            .unwrap_or_default()
                    };
                    warnings.extend(sync::split_brain_warnings(&states(&local), &states(r)));
                    if r["version"] != local["version"] {
                        warnings.push(format!(
                            "remote version {} differs from this machine's {}: please update first",
                            r["version"], local["version"]
                        ));
                    }
                    if !all_equal {
                        let differ: Vec<&String> = table
                            .iter()
                            .filter(|(_, v)| v["equal"] == false)
                            .map(|(k, _)| k)
                            .collect();
                        warnings.push(format!("sections differ between the nodes: {differ:?}"));
                    }
                    r.clone()
                }
                Err(e) => {
                    all_equal = false;
                    if plan.is_ok() {
                        warnings.push(format!(
                            "the backup firewall is not accessible (check user credentials): {e}"
                        ));
                    }
                    json!({"error": e})
                }
            };
            json!({
                "role": if plan.is_ok() { "master" } else { "backup" },
                "target": target,
                "local": local,
                "remote": remote_json,
                "sections": table,
                "all_equal": all_equal && remote.is_ok(),
                "last_sync": last,
                "warnings": warnings,
                "server": server,
            })
        })
    }
}

/// The node's users, for the server's password check.
#[derive(Message)]
#[rtype(result = "Vec<User>")]
pub struct UsersMsg;

impl Handler<UsersMsg> for HaSync {
    type Result = MessageResult<UsersMsg>;
    fn handle(&mut self, _: UsersMsg, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.config.system.users.clone())
    }
}

/// An authenticated XML-RPC call; `Err((faultCode, faultString))`.
#[derive(Message)]
#[rtype(result = "Result<Value, (i64, String)>")]
pub struct CallMsg(pub MethodCall);

fn params_fault(m: &str) -> (i64, String) {
    (FAULT_PARAMS, m.to_string())
}

impl Handler<CallMsg> for HaSync {
    type Result = ResponseFuture<Result<Value, (i64, String)>>;
    fn handle(&mut self, m: CallMsg, _: &mut Context<Self>) -> Self::Result {
        let MethodCall { method, params } = m.0;
        let sup = self.sup.clone();
        let stats = self.stats.clone();
        match method.as_str() {
            "system.listMethods" => Box::pin(async {
                Ok(Value::Array(
                    METHODS.iter().map(|m| Value::str(*m)).collect(),
                ))
            }),
            "opnsense.firmware_version" => {
                let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
                    .map(|s| s.trim().to_string())
                    .unwrap_or_default();
                let v = |s: &str| Value::Struct(vec![("version".into(), Value::str(s))]);
                let out = Value::Struct(vec![
                    ("base".into(), v(crate::VERSION)),
                    ("firmware".into(), v(crate::VERSION)),
                    ("kernel".into(), v(&kernel)),
                    (
                        "product".into(),
                        Value::Struct(vec![("product_name".into(), Value::str("tandem"))]),
                    ),
                ]);
                Box::pin(async move { Ok(out) })
            }
            "opnsense.restore_config_section" => Box::pin(async move {
                let [payload] = params.as_slice() else {
                    return Err(params_fault(
                        "restore_config_section takes one struct of sections",
                    ));
                };
                let (cur, _) = sup
                    .send(CurrentConfigMsg)
                    .await
                    .map_err(|e| (FAULT_APP, format!("supervisor: {e}")))?;
                let mut doc = cur.doc.clone();
                let keys =
                    sync::merge(&mut doc, payload).map_err(|e| params_fault(&e.to_string()))?;
                let description = sync::merge_description(&keys);
                let out = sup
                    .send(ApplyConfigMsg {
                        xml: doc.to_bytes(),
                        description: description.clone(),
                    })
                    .await
                    .map_err(|e| (FAULT_APP, format!("supervisor: {e}")))?;
                match out {
                    Ok(o) => {
                        stats.merges.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(revision = o.revision, sections = ?o.sections, "{description}");
                        Ok(Value::Bool(true))
                    }
                    Err(e) => {
                        let msg = match e {
                            CommitError::Invalid(f) => format!(
                                "merged config refused, nothing changed: {}",
                                f.iter()
                                    .map(|x| x.to_string())
                                    .collect::<Vec<_>>()
                                    .join("; ")
                            ),
                            other => other.to_string(),
                        };
                        Err((FAULT_APP, msg))
                    }
                }
            }),
            // The config is applied on commit; nothing more to reload.
            "opnsense.filter_configure" => Box::pin(async { Ok(Value::Bool(true)) }),
            "opnsense.configd_reload_all_templates" => {
                Box::pin(async { Ok(Value::Struct(vec![("status".into(), Value::str("done"))])) })
            }
            "opnsense.list_services" => Box::pin(async move {
                let st = sup.send(SystemStatusMsg).await.unwrap_or(Json::Null);
                let list = st["actors"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|x| {
                                let name = x["name"].as_str().unwrap_or("").to_string();
                                Value::Struct(vec![
                                    ("name".into(), Value::str(name.clone())),
                                    ("description".into(), Value::str(format!("tandem {name}"))),
                                    ("status".into(), Value::Bool(x["running"] == true)),
                                ])
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                Ok(Value::Array(list))
            }),
            "opnsense.restart_service" | "opnsense.start_service" | "opnsense.stop_service" => {
                Box::pin(async move {
                    let service = params
                        .first()
                        .and_then(|p| p.member("service"))
                        .and_then(Value::as_str)
                        .ok_or_else(|| params_fault("expects a struct {service, id}"))?
                        .to_string();
                    // tandem's actors apply every committed change themselves; there is nothing
                    // to restart by hand, so say so instead of pretending.
                    Ok(Value::str(format!(
                        "Service `{service}' is managed by tandem and follows the committed config."
                    )))
                })
            }
            "tandem.ha_status" => {
                let sections: Vec<String> = match params.first().and_then(|p| p.member("sections"))
                {
                    Some(Value::Array(a)) => a
                        .iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .take(256)
                        .collect(),
                    _ => sync::sections_for(&self.config.hasync.syncitems).0,
                };
                let fut = self.node_status(sections, false);
                Box::pin(async move { Ok(json_to_value(&fut.await)) })
            }
            other => {
                let msg = format!("server error. requested method {other} does not exist.");
                Box::pin(async move { Err((FAULT_NO_METHOD, msg)) })
            }
        }
    }
}

impl Handler<StopMsg> for HaSync {
    type Result = ();
    fn handle(&mut self, _: StopMsg, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// JSON → XML-RPC value (numbers: int if integral, else double; null: nil).
pub fn json_to_value(j: &Json) -> Value {
    match j {
        Json::Null => Value::Nil,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Double(n.as_f64().unwrap_or(0.0)),
        },
        Json::String(s) => Value::Str(s.clone()),
        Json::Array(a) => Value::Array(a.iter().map(json_to_value).collect()),
        Json::Object(o) => Value::Struct(
            o.iter()
                .map(|(k, v)| (k.clone(), json_to_value(v)))
                .collect(),
        ),
    }
}

/// XML-RPC value → JSON (base64 as a string of its base64 text).
pub fn value_to_json(v: &Value) -> Json {
    use base64::Engine;
    match v {
        Value::Nil => Json::Null,
        Value::Bool(b) => json!(b),
        Value::Int(n) => json!(n),
        Value::Double(d) => json!(d),
        Value::Str(s) | Value::DateTime(s) => json!(s),
        Value::Base64(b) => json!(base64::engine::general_purpose::STANDARD.encode(b)),
        Value::Array(a) => Json::Array(a.iter().map(value_to_json).collect()),
        Value::Struct(m) => {
            let mut o = serde_json::Map::new();
            for (k, v) in m {
                o.entry(k.clone()).or_insert_with(|| value_to_json(v));
            }
            Json::Object(o)
        }
    }
}
