//! `Plugins`: the node's plugin processes and its service checks.
//!
//! ```text
//!   Supervisor ──PluginsConfigMsg──▶ ┌──────────── Plugins ────────────┐
//!   Control ──PluginsListMsg,        │ slot per enabled plugin:         │──spawn──▶ plugin (child)
//!            PluginRestartMsg──────▶ │   state, backoff, counters       │◀─exit───  (see child.rs)
//!   Bus ──every BusMsg (stream)────▶ │   events ─try_send─▶ its queue   │
//!                                    │ service checks (1 s tick):       │──spawn──▶ rc.carp_service_status.d/*
//!                                    │   scripts every 5 s, health per  │           plugin health commands
//!                                    │   manifest; any failure ─────────│──SetDemotionMsg "service" 2^20──▶ Supervisor
//!                                    └──────────────────────────────────┘
//! ```
//!
//! Enabled plugins come from `<tandem><plugins><plugin><name>N</name><enabled>1</enabled>
//! <config>..</config></plugin></plugins></tandem>` in config.xml (see [`manifest::PluginsCfg`]);
//! each is looked up as `<dir>/<name>/plugin.toml` in the `<path>` elements of that section, then
//! `$TANDEM_PLUGIN_PATH` (colon-separated), then the directories given to [`Plugins::new`].
//!
//! A plugin gets the events it asked for as JSON lines on stdin (the bus's serialisation:
//! `{"event":"carp.transition","vhid":3,...}`), and in its environment `TANDEM_SOCKET` (the
//! control socket), `TANDEM_PLUGIN_NAME`, `TANDEM_PLUGIN_DIR`, `TANDEM_PLUGIN_STATE` (a private
//! writable directory) and `TANDEM_PLUGIN_CONFIG` (its `<config>` element as JSON). It should
//! exit when stdin closes. When it dies it is restarted after 1 s, 2 s, 4 s ... at most 60 s; the
//! delay starts again at 1 s once a run lasted 60 s.

pub mod checks;
pub mod child;
pub mod manifest;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use actix::prelude::*;
use include_dir::{Dir, include_dir};
use serde_json::{Value, json};

use self::checks::{CheckResult, CheckSpec, SERVICE_INTERVAL, SERVICE_TIMEOUT};
use self::child::{Counters, ExitInfo, Offer, Running, Spec};
use self::manifest::{Manifest, PluginEntry, PluginsCfg};
use super::StopMsg;
use crate::bus::{Bus, BusMsg};
use crate::config::Config;
use crate::supervisor::{SetDemotionMsg, Supervisor};

/// The demotion a failing service check adds (OPNsense's `carp_service_status`).
pub const SERVICE_DEMOTION: u32 = 1 << 20;
/// The demotion reason's name.
pub const SERVICE_REASON: &str = "service";
/// First restart delay, doubled per quick death up to [`BACKOFF_MAX`].
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// A run at least this long resets the delay to [`BACKOFF_MIN`].
pub const STABLE_AFTER: Duration = Duration::from_secs(60);
/// Extra plugin directories (colon-separated), searched before the built-in ones.
pub const PATH_ENV: &str = "TANDEM_PLUGIN_PATH";
/// The check tick.
const TICK: Duration = Duration::from_secs(1);

/// The plugins shipped with tandem (the repo's `plugins/`), built into the binary.
pub static SHIPPED: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/plugins");

/// Write the shipped plugins into `dir` (replacing what was there); scripts get mode 0755.
pub fn install_shipped(dir: &Path) -> std::io::Result<()> {
    fn walk(d: &Dir<'_>, base: &Path) -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        for f in d.files() {
            let p = base.join(f.path());
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&p, f.contents())?;
            let mode = if f.contents().starts_with(b"#!") {
                0o755
            } else {
                0o644
            };
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))?;
        }
        for sub in d.dirs() {
            std::fs::create_dir_all(base.join(sub.path()))?;
            walk(sub, base)?;
        }
        Ok(())
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    walk(&SHIPPED, dir)
}

/// A plugin's lifecycle state, as `plugins.list` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Running,
    /// Dead; restarts when its delay has passed.
    Backoff,
    /// Stopped on purpose (disabled, shutdown).
    Stopped,
    /// Cannot be started: no or a bad manifest.
    Failed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Running => "running",
            State::Backoff => "backoff",
            State::Stopped => "stopped",
            State::Failed => "failed",
        }
    }
}

struct Slot {
    entry: PluginEntry,
    manifest: Result<Manifest, String>,
    state: State,
    run: Option<Running>,
    /// Generation of `run` (exit reports of older runs are ignored).
    generation: u64,
    restarts: u32,
    /// The delay before the next restart.
    backoff: Duration,
    restart_at: Option<Instant>,
    timer: Option<SpawnHandle>,
    counters: Arc<Counters>,
    last_exit: Option<String>,
    last_error: Option<String>,
}

/// The last outcome of one service check.
struct Check {
    last: Option<CheckResult>,
    running: bool,
    due: Instant,
    /// A plugin health check (else a service script).
    plugin: bool,
}

pub struct Plugins {
    dirs: Vec<PathBuf>,
    service_dir: PathBuf,
    socket: PathBuf,
    state_dir: PathBuf,
    bus: Bus,
    sup: Addr<Supervisor>,
    cfg: PluginsCfg,
    search: Vec<PathBuf>,
    slots: BTreeMap<String, Slot>,
    checks: BTreeMap<String, Check>,
    demoted: bool,
    generation: u64,
    bus_lagged: u64,
    stopping: bool,
}

impl Plugins {
    /// `dirs` are searched in order (after the config's `<path>`s and `$TANDEM_PLUGIN_PATH`);
    /// `service_dir` is `<root>/usr/local/etc/rc.carp_service_status.d`; `socket` is given to
    /// plugins as `TANDEM_SOCKET`.
    pub fn new(
        dirs: Vec<PathBuf>,
        service_dir: PathBuf,
        socket: PathBuf,
        bus: Bus,
        sup: Addr<Supervisor>,
    ) -> Plugins {
        let state_dir = socket
            .parent()
            .map(|p| p.join("plugins"))
            .unwrap_or_else(|| PathBuf::from("/run/tandem/plugins"));
        let mut p = Plugins {
            dirs,
            service_dir,
            socket,
            state_dir,
            bus,
            sup,
            cfg: PluginsCfg::default(),
            search: Vec::new(),
            slots: BTreeMap::new(),
            checks: BTreeMap::new(),
            demoted: false,
            generation: 0,
            bus_lagged: 0,
            stopping: false,
        };
        p.search = p.search_path();
        p
    }

    /// Where plugins keep runtime files (`<dir>/<name>/`, as `TANDEM_PLUGIN_STATE`); default:
    /// `plugins/` beside the socket.
    pub fn with_state_dir(mut self, dir: PathBuf) -> Plugins {
        self.state_dir = dir;
        self
    }

    fn search_path(&self) -> Vec<PathBuf> {
        let mut v = self.cfg.paths.clone();
        if let Some(env) = std::env::var_os(PATH_ENV) {
            v.extend(std::env::split_paths(&env).filter(|p| p.is_absolute()));
        }
        v.extend(self.dirs.iter().cloned());
        v
    }

    fn env(&self, m: &Manifest, entry: &PluginEntry) -> Vec<(String, String)> {
        let state = self.state_dir.join(&m.name);
        if let Err(e) = std::fs::create_dir_all(&state) {
            tracing::warn!(plugin = %m.name, dir = %state.display(), "cannot create the plugin state dir: {e}");
        }
        vec![
            ("TANDEM_SOCKET".into(), self.socket.display().to_string()),
            ("TANDEM_PLUGIN_NAME".into(), m.name.clone()),
            ("TANDEM_PLUGIN_DIR".into(), m.dir.display().to_string()),
            ("TANDEM_PLUGIN_STATE".into(), state.display().to_string()),
            ("TANDEM_PLUGIN_CONFIG".into(), entry.config.to_string()),
        ]
    }

    fn load(&self, name: &str) -> Result<Manifest, String> {
        match manifest::find(&self.search, name) {
            Some(Ok(m)) => Ok(m),
            Some(Err(e)) => Err(e.to_string()),
            None => Err(format!(
                "no {name}/{} in the plugin path ({})",
                manifest::MANIFEST,
                self.search
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(":")
            )),
        }
    }

    /// Converge the running plugins to `cfg`.
    fn apply(&mut self, cfg: PluginsCfg, ctx: &mut Context<Self>) {
        self.cfg = cfg;
        self.search = self.search_path();
        let wanted = self.cfg.enabled();
        let gone: Vec<String> = self
            .slots
            .keys()
            .filter(|k| !wanted.contains_key(*k))
            .cloned()
            .collect();
        for name in gone {
            if let Some(mut slot) = self.slots.remove(&name) {
                tracing::info!(plugin = %name, "plugin disabled; stopping it");
                cancel(&mut slot, ctx);
                if let Some(r) = slot.run.take() {
                    r.stop();
                }
            }
            self.checks.remove(&check_key(&name));
        }
        // A disabled plugin's failing health check no longer counts.
        self.evaluate();
        for (name, entry) in wanted {
            let manifest = self.load(&name);
            match self.slots.get_mut(&name) {
                Some(slot) if slot.entry == entry && slot.manifest == manifest => {}
                Some(slot) => {
                    tracing::info!(plugin = %name, "plugin config or manifest changed; restarting it");
                    slot.entry = entry;
                    slot.manifest = manifest;
                    slot.backoff = BACKOFF_MIN;
                    cancel(slot, ctx);
                    if let Some(r) = slot.run.take() {
                        r.stop();
                    }
                    self.start(&name, ctx);
                }
                None => {
                    self.slots.insert(
                        name.clone(),
                        Slot {
                            entry,
                            manifest,
                            state: State::Stopped,
                            run: None,
                            generation: 0,
                            restarts: 0,
                            backoff: BACKOFF_MIN,
                            restart_at: None,
                            timer: None,
                            counters: Arc::default(),
                            last_exit: None,
                            last_error: None,
                        },
                    );
                    self.start(&name, ctx);
                }
            }
        }
    }

    /// Start plugin `name` now (its slot must exist).
    fn start(&mut self, name: &str, ctx: &mut Context<Self>) {
        if self.stopping {
            return;
        }
        self.generation += 1;
        let generation = self.generation;
        let Some(slot) = self.slots.get(name) else {
            return;
        };
        let m = match &slot.manifest {
            Ok(m) => m.clone(),
            Err(e) => {
                let e = e.clone();
                tracing::error!(plugin = %name, "plugin cannot start: {e}");
                if let Some(slot) = self.slots.get_mut(name) {
                    slot.state = State::Failed;
                    slot.last_error = Some(e);
                }
                return;
            }
        };
        let spec = Spec {
            name: name.to_string(),
            argv: m.argv.clone(),
            dir: m.dir.clone(),
            env: self.env(&m, &slot.entry),
        };
        let addr = ctx.address();
        let who = name.to_string();
        let res = child::spawn(&spec, slot.counters.clone(), move |info| {
            addr.do_send(PluginExitedMsg {
                name: who,
                generation,
                info,
            });
        });
        let Some(slot) = self.slots.get_mut(name) else {
            return;
        };
        match res {
            Ok(run) => {
                tracing::info!(plugin = %name, pid = run.pid, version = %m.version, argv = ?m.argv, "plugin started");
                for e in m
                    .events
                    .iter()
                    .filter(|e| *e != "*" && !manifest::KNOWN_EVENTS.contains(&e.as_str()))
                {
                    tracing::info!(plugin = %name, event = %e, "plugin asks for an event kind this node does not publish (yet)");
                }
                slot.run = Some(run);
                slot.generation = generation;
                slot.state = State::Running;
                slot.restart_at = None;
                slot.last_error = None;
            }
            Err(e) => {
                let e = format!("cannot start {:?}: {e}", m.argv);
                tracing::warn!(plugin = %name, "{e}");
                slot.last_error = Some(e);
                self.schedule_restart(name, ctx);
            }
        }
    }

    /// Restart `name` after its current delay, and grow the delay.
    fn schedule_restart(&mut self, name: &str, ctx: &mut Context<Self>) {
        let Some(slot) = self.slots.get_mut(name) else {
            return;
        };
        let delay = slot.backoff;
        slot.backoff = (slot.backoff * 2).min(BACKOFF_MAX);
        slot.state = State::Backoff;
        slot.restart_at = Some(Instant::now() + delay);
        let who = name.to_string();
        cancel(slot, ctx);
        slot.timer = Some(ctx.run_later(delay, move |act, ctx| {
            let Some(slot) = act.slots.get_mut(&who) else {
                return;
            };
            slot.timer = None;
            if slot.state != State::Backoff || act.stopping {
                return;
            }
            slot.restarts = slot.restarts.saturating_add(1);
            act.bus.publish(BusMsg::ActorRestarted {
                actor: format!("plugin:{who}"),
                restarts: slot.restarts,
                reason: slot.last_exit.clone().unwrap_or_default(),
            });
            act.start(&who, ctx);
        }));
    }

    /// Offer one bus event to every running plugin that wants it.
    fn on_event(&mut self, msg: &BusMsg) {
        let kind = msg.kind();
        let mut line: Option<Arc<str>> = None;
        for (name, slot) in &self.slots {
            let Ok(m) = &slot.manifest else { continue };
            if !m.wants(kind) {
                continue;
            }
            let Some(run) = &slot.run else {
                slot.counters.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let l = line
                .get_or_insert_with(|| {
                    let mut s = serde_json::to_string(msg).unwrap_or_else(|_| "{}".into());
                    s.push('\n');
                    Arc::from(s)
                })
                .clone();
            match run.offer(l) {
                Offer::Queued => {}
                Offer::QueueFull | Offer::Gone => {
                    let n = slot.counters.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                    if n.is_power_of_two() {
                        tracing::warn!(plugin = %name, dropped = n, "plugin does not keep up with its events; dropping");
                    }
                }
            }
        }
    }

    /// Start the checks that are due; forget checks whose script or plugin is gone.
    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.stopping {
            return;
        }
        let now = Instant::now();
        let mut specs: Vec<(CheckSpec, Duration, bool)> = Vec::new();
        for script in crate::actor::hooks::scripts(&self.service_dir) {
            let name = script
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            specs.push((
                CheckSpec {
                    name,
                    argv: vec![script.display().to_string()],
                    cwd: None,
                    env: Vec::new(),
                    timeout: SERVICE_TIMEOUT,
                },
                SERVICE_INTERVAL,
                false,
            ));
        }
        for slot in self.slots.values() {
            let Ok(m) = &slot.manifest else { continue };
            let Some(h) = &m.health else { continue };
            specs.push((
                CheckSpec {
                    name: m.name.clone(),
                    argv: h.argv.clone(),
                    cwd: Some(m.dir.clone()),
                    env: self.env(m, &slot.entry),
                    timeout: h.timeout,
                },
                h.interval,
                true,
            ));
        }
        let keys: BTreeSet<String> = specs.iter().map(|(s, _, p)| key_of(&s.name, *p)).collect();
        let before = self.checks.len();
        self.checks.retain(|k, _| keys.contains(k));
        let forgot = self.checks.len() != before;
        for (spec, every, plugin) in specs {
            let key = key_of(&spec.name, plugin);
            let c = self.checks.entry(key.clone()).or_insert(Check {
                last: None,
                running: false,
                due: now,
                plugin,
            });
            if c.running || now < c.due {
                continue;
            }
            c.running = true;
            c.due = now + every;
            let addr = ctx.address();
            actix_rt::spawn(async move {
                let r = checks::run(spec).await;
                addr.do_send(CheckDoneMsg { key, result: r });
            });
        }
        if forgot {
            self.evaluate();
        }
    }

    /// Demote or promote the node from the checks' last results.
    fn evaluate(&mut self) {
        let failing: Vec<String> = self
            .checks
            .values()
            .filter_map(|c| c.last.as_ref())
            .filter(|r| !r.ok)
            .map(|r| r.name.clone())
            .collect();
        if !failing.is_empty() && !self.demoted {
            self.demoted = true;
            tracing::warn!(
                "carp demoted by {SERVICE_DEMOTION} due to service disruption (services: {})",
                failing.join(",")
            );
            self.sup.do_send(SetDemotionMsg {
                name: SERVICE_REASON.into(),
                value: Some(SERVICE_DEMOTION),
                timeout: None,
            });
        } else if failing.is_empty() && self.demoted {
            self.demoted = false;
            tracing::info!("carp promoted by {SERVICE_DEMOTION} due to service recovery");
            self.sup.do_send(SetDemotionMsg {
                name: SERVICE_REASON.into(),
                value: None,
                timeout: None,
            });
        }
    }

    fn list(&self) -> Value {
        let now = Instant::now();
        let plugins: Vec<Value> = self
            .slots
            .iter()
            .map(|(name, s)| {
                let m = s.manifest.as_ref().ok();
                let health = self.checks.get(&check_key(name)).map(check_json);
                let mut v = json!({
                    "name": name,
                    "state": s.state.as_str(),
                    "pid": s.run.as_ref().map(|r| r.pid),
                    "uptime_s": s.run.as_ref().map(|r| r.started.elapsed().as_secs_f64()),
                    "restarts": s.restarts,
                    "backoff_ms": u64::try_from(s.backoff.as_millis()).unwrap_or(u64::MAX),
                    "restart_in_ms": s.restart_at.map(|t| u64::try_from(t.saturating_duration_since(now).as_millis()).unwrap_or(u64::MAX)),
                    "version": m.map(|m| m.version.clone()),
                    "description": m.map(|m| m.description.clone()),
                    "dir": m.map(|m| m.dir.display().to_string()),
                    "events": m.map(|m| m.events.clone()),
                    "sync_id": m.and_then(|m| m.sync_id.clone()),
                    "config": s.entry.config,
                    "last_exit": s.last_exit,
                    "last_error": s.last_error,
                    "health": health,
                });
                if let (Value::Object(o), Value::Object(c)) = (&mut v, s.counters.json()) {
                    o.extend(c);
                }
                v
            })
            .collect();
        let services: Vec<Value> = self
            .checks
            .values()
            .filter(|c| !c.plugin)
            .map(check_json)
            .collect();
        json!({
            "plugins": plugins,
            "services": services,
            "service_demoted": self.demoted,
            "search_path": self.search.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
            "available": manifest::available(&self.search),
            "service_dir": self.service_dir.display().to_string(),
            "bus_lagged": self.bus_lagged,
        })
    }
}

fn key_of(name: &str, plugin: bool) -> String {
    if plugin {
        check_key(name)
    } else {
        format!("service:{name}")
    }
}

fn check_key(plugin: &str) -> String {
    format!("plugin:{plugin}")
}

fn check_json(c: &Check) -> Value {
    match &c.last {
        Some(r) => {
            json!({"name": r.name, "ok": r.ok, "status": r.status, "output": r.output, "took_ms": r.took_ms})
        }
        None => json!({"ok": null, "status": "not run yet"}),
    }
}

fn cancel(slot: &mut Slot, ctx: &mut Context<Plugins>) {
    if let Some(t) = slot.timer.take() {
        ctx.cancel_future(t);
    }
}

/// The bus as a stream; lag is reported as `Err(n)`.
fn bus_stream(
    rx: tokio::sync::broadcast::Receiver<BusMsg>,
) -> impl futures::Stream<Item = Result<BusMsg, u64>> {
    futures::stream::unfold(rx, |mut rx| async move {
        use tokio::sync::broadcast::error::RecvError;
        match rx.recv().await {
            Ok(m) => Some((Ok(m), rx)),
            Err(RecvError::Lagged(n)) => Some((Err(n), rx)),
            Err(RecvError::Closed) => None,
        }
    })
}

impl Actor for Plugins {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.add_stream(bus_stream(self.bus.subscribe()));
        ctx.run_interval(TICK, |act, ctx| act.tick(ctx));
        tracing::info!(
            search = ?self.search,
            service_dir = %self.service_dir.display(),
            "plugins actor started"
        );
    }
}

impl StreamHandler<Result<BusMsg, u64>> for Plugins {
    fn handle(&mut self, m: Result<BusMsg, u64>, _: &mut Context<Self>) {
        match m {
            Ok(m) => self.on_event(&m),
            Err(n) => {
                self.bus_lagged = self.bus_lagged.saturating_add(n);
                tracing::warn!(lost = n, "plugins actor lagged behind the bus");
            }
        }
    }

    fn finished(&mut self, _: &mut Context<Self>) {}
}

/// Start and stop plugins to match the enabled list of this config.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PluginsConfigMsg(pub Arc<Config>);

impl Handler<PluginsConfigMsg> for Plugins {
    type Result = ();
    fn handle(&mut self, m: PluginsConfigMsg, ctx: &mut Context<Self>) {
        self.apply(PluginsCfg::from_config(&m.0), ctx);
    }
}

/// `plugins.list`.
#[derive(Message)]
#[rtype(result = "Value")]
pub struct PluginsListMsg;

impl Handler<PluginsListMsg> for Plugins {
    type Result = MessageResult<PluginsListMsg>;
    fn handle(&mut self, _: PluginsListMsg, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.list())
    }
}

/// `plugins.restart {name}`: reread its manifest, stop it, start it now with the delay reset.
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct PluginRestartMsg {
    pub name: String,
}

impl Handler<PluginRestartMsg> for Plugins {
    type Result = Result<(), String>;
    fn handle(&mut self, m: PluginRestartMsg, ctx: &mut Context<Self>) -> Result<(), String> {
        if self.stopping {
            return Err("shutting down".into());
        }
        let manifest = self.load(&m.name);
        let Some(slot) = self.slots.get_mut(&m.name) else {
            return Err(format!("plugin {:?} is not enabled", m.name));
        };
        slot.manifest = manifest;
        slot.backoff = BACKOFF_MIN;
        cancel(slot, ctx);
        if let Some(r) = slot.run.take() {
            r.stop();
        }
        slot.state = State::Stopped;
        tracing::info!(plugin = %m.name, "plugin restart requested");
        self.start(&m.name, ctx);
        match self.slots.get(&m.name) {
            Some(s) if s.state == State::Failed => {
                Err(s.last_error.clone().unwrap_or_else(|| "failed".into()))
            }
            _ => Ok(()),
        }
    }
}

/// `sync_id` → plugin name of every enabled plugin whose manifest names a sync id: for the config
/// sync, which copies `<tandem><plugins><plugin>` of that plugin (see
/// [`manifest::plugin_element`]) to the peer when the id is in `hasync/syncitems`.
#[derive(Message)]
#[rtype(result = "BTreeMap<String, String>")]
pub struct PluginSyncIdsMsg;

impl Handler<PluginSyncIdsMsg> for Plugins {
    type Result = MessageResult<PluginSyncIdsMsg>;
    fn handle(&mut self, _: PluginSyncIdsMsg, _: &mut Context<Self>) -> Self::Result {
        MessageResult(
            self.slots
                .values()
                .filter_map(|s| s.manifest.as_ref().ok())
                .filter_map(|m| m.sync_id.clone().map(|id| (id, m.name.clone())))
                .collect(),
        )
    }
}

/// A plugin process ended.
#[derive(Message)]
#[rtype(result = "()")]
struct PluginExitedMsg {
    name: String,
    generation: u64,
    info: ExitInfo,
}

impl Handler<PluginExitedMsg> for Plugins {
    type Result = ();
    fn handle(&mut self, m: PluginExitedMsg, ctx: &mut Context<Self>) {
        let Some(slot) = self.slots.get_mut(&m.name) else {
            return;
        };
        if slot.generation != m.generation || slot.run.is_none() {
            return;
        }
        let ran = slot
            .run
            .take()
            .map(|r| r.started.elapsed())
            .unwrap_or_default();
        slot.last_exit = Some(m.info.status.clone());
        if self.stopping || m.info.stopped {
            slot.state = State::Stopped;
            return;
        }
        if ran >= STABLE_AFTER {
            slot.backoff = BACKOFF_MIN;
        }
        tracing::warn!(
            plugin = %m.name,
            status = %m.info.status,
            ran_s = ran.as_secs_f64(),
            restart_in_s = slot.backoff.as_secs_f64(),
            "plugin exited; restarting after a delay"
        );
        self.schedule_restart(&m.name, ctx);
    }
}

/// A service check finished.
#[derive(Message)]
#[rtype(result = "()")]
struct CheckDoneMsg {
    key: String,
    result: CheckResult,
}

impl Handler<CheckDoneMsg> for Plugins {
    type Result = ();
    fn handle(&mut self, m: CheckDoneMsg, _: &mut Context<Self>) {
        let Some(c) = self.checks.get_mut(&m.key) else {
            return;
        };
        c.running = false;
        let was = c.last.as_ref().map(|r| r.ok);
        if was != Some(m.result.ok) {
            if m.result.ok {
                tracing::info!(check = %m.result.name, "service check passes");
            } else {
                tracing::warn!(check = %m.result.name, status = %m.result.status, output = %m.result.output, "service check fails");
            }
        }
        c.last = Some(m.result);
        self.evaluate();
    }
}

/// Stop every plugin (SIGTERM, SIGKILL after 2 s), then the actor.
impl Handler<StopMsg> for Plugins {
    type Result = ResponseActFuture<Self, ()>;
    fn handle(&mut self, _: StopMsg, ctx: &mut Context<Self>) -> Self::Result {
        self.stopping = true;
        let mut waits = Vec::new();
        for (name, slot) in self.slots.iter_mut() {
            cancel(slot, ctx);
            if let Some(r) = slot.run.take() {
                tracing::info!(plugin = %name, pid = r.pid, "stopping plugin");
                waits.extend(r.stop());
            }
            slot.state = State::Stopped;
        }
        Box::pin(
            async move {
                let all = futures::future::join_all(waits);
                let _ = tokio::time::timeout(child::STOP_GRACE + Duration::from_secs(1), all).await;
            }
            .into_actor(self)
            .map(|_, _, ctx| ctx.stop()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_plugins_install_and_their_manifests_are_valid() {
        let dir = std::env::temp_dir().join(format!("tandem-shipped-{}", std::process::id()));
        install_shipped(&dir).unwrap();
        let names = manifest::available(std::slice::from_ref(&dir));
        assert_eq!(names, vec!["carp-notify", "gateway-monitor"]);
        for n in &names {
            let m = manifest::load(&dir.join(n)).unwrap();
            assert_eq!(&m.name, n);
            assert_eq!(m.sync_id.as_deref(), Some(n.as_str()));
            assert!(dir.join(n).join("README.md").is_file());
            for arg in m
                .argv
                .iter()
                .chain(m.health.iter().flat_map(|h| h.argv.iter()))
            {
                if arg.ends_with(".py") {
                    let p = dir.join(n).join(arg);
                    use std::os::unix::fs::PermissionsExt;
                    let mode = std::fs::metadata(&p).unwrap().permissions().mode();
                    assert_eq!(mode & 0o111, 0o111, "{p:?} not executable");
                }
            }
        }
        let gm = manifest::load(&dir.join("gateway-monitor")).unwrap();
        assert!(gm.wants("config.applied"));
        assert_eq!(gm.health.unwrap().interval, Duration::from_secs(1));
        assert!(
            manifest::load(&dir.join("carp-notify"))
                .unwrap()
                .wants("carp.transition")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
