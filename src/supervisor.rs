//! The supervisor: starts the node's actors, watches them and restarts a dead one with backoff,
//! routes config changes to the actors whose sections changed, and stops everything in reverse
//! order on shutdown.
//!
//! ```text
//!                       ┌──────────── Supervisor ─────────────┐
//!   Control ──msgs────▶ │ ConfigStore   Interface×N   (more)  │ ──▶ Bus ──▶ events.subscribe, plugins
//!                       └── link monitor (rtnetlink) ─────────┘
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use serde::Serialize;
use serde_json::{Value, json};

use crate::actor::StopMsg;
use crate::actor::carp::{
    Carp, CarpDemotionMsg, CarpLinkMsg, CarpReconfigMsg, CarpSpec, CarpStatus, CarpStatusMsg,
};
use crate::actor::control::Control;
use crate::actor::hasync::{HaConfigMsg, HaSync};
use crate::actor::hooks::Hooks;
use crate::actor::iface::{
    ApplyIfaceMsg, IfaceStatus, IfaceStatusMsg, Interface, LinkEventMsg, LinkRemovedMsg,
};
use crate::actor::nft::{self as nftactor, ApplyRulesetMsg, Kind, NftActor};
use crate::actor::pfsync::{Pfsync, PfsyncLinkMsg, PfsyncSpec};
use crate::actor::plugins::{Plugins, PluginsConfigMsg};
use crate::actor::store::{
    CommitError, CommitMsg, Committed, ConfigStore, GetConfigMsg, SetMaintenanceMsg,
};
use crate::boot::overlay::OverlayKind;
use crate::bus::{Bus, BusMsg};
use crate::clock;
use crate::config::{Config, Interface as IfaceCfg};
use crate::proto::demotion::{self, Demotion};
use crate::sys::netlink::{self, LinkEvent};

const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// A supervised actor: how to make it again, and its restart bookkeeping.
struct Child<A: Actor<Context = Context<A>>> {
    name: String,
    addr: Addr<A>,
    restarts: u32,
    backoff: Duration,
    down_since: Option<Instant>,
}

impl<A: Actor<Context = Context<A>> + Handler<StopMsg>> Child<A> {
    fn new(name: String, addr: Addr<A>) -> Self {
        Child {
            name,
            addr,
            restarts: 0,
            backoff: BACKOFF_MIN,
            down_since: None,
        }
    }

    /// If the actor died and its backoff has passed, restart it with `make`.
    fn check(&mut self, now: Instant, bus: &Bus, make: impl FnOnce() -> Addr<A>) {
        if self.addr.connected() {
            return;
        }
        let since = *self.down_since.get_or_insert(now);
        if now.duration_since(since) < self.backoff {
            return;
        }
        self.addr = make();
        self.restarts += 1;
        self.down_since = None;
        tracing::warn!(actor = %self.name, restarts = self.restarts, backoff_ms = self.backoff.as_millis() as u64, "actor died; restarted");
        bus.publish(BusMsg::ActorRestarted {
            actor: self.name.clone(),
            restarts: self.restarts,
            reason: "actor stopped unexpectedly".into(),
        });
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }

    fn status(&self) -> Value {
        json!({"name": self.name, "running": self.addr.connected(), "restarts": self.restarts})
    }
}

/// Static facts about this boot, for `system.status`.
#[derive(Clone, Debug, Serialize)]
pub struct BootInfo {
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    pub overlay: OverlayKind,
    pub overlay_note: Option<String>,
    pub lower: PathBuf,
    /// Where to look up rootfs files (hook scripts): the merged view if mounted, else the lower layer.
    pub lower_or_merged: PathBuf,
}

pub struct Supervisor {
    bus: Bus,
    nl: rtnetlink::Handle,
    store: Addr<ConfigStore>,
    config: Arc<Config>,
    revision: i64,
    interfaces: BTreeMap<String, (IfaceCfg, Child<Interface>)>,
    /// CARP VHIDs by "<vhid>@<device>".
    carps: BTreeMap<String, (CarpSpec, Child<Carp>)>,
    demotion: Demotion,
    hooks: Hooks,
    filter: Option<Child<NftActor>>,
    nat: Option<Child<NftActor>>,
    pfsync: Option<(PfsyncSpec, Child<Pfsync>)>,
    /// Link state of devices as last published.
    links: BTreeMap<String, bool>,
    control: Option<Addr<Control>>,
    plugins: Option<Addr<Plugins>>,
    hasync: Option<Addr<HaSync>>,
    started: Instant,
    boot: BootInfo,
    shutting_down: bool,
    dhcp: Option<Addr<crate::actor::dhcp::DhcpService>>,
}

impl Supervisor {
    pub fn new(
        bus: Bus,
        nl: rtnetlink::Handle,
        store: Addr<ConfigStore>,
        config: Arc<Config>,
        revision: i64,
        boot: BootInfo,
    ) -> Supervisor {
        Supervisor {
            bus,
            nl,
            store,
            config,
            revision,
            interfaces: BTreeMap::new(),
            carps: BTreeMap::new(),
            demotion: Demotion::new(),
            filter: None,
            nat: None,
            pfsync: None,
            hooks: Hooks::start(boot.lower_or_merged.join("usr/local/etc/rc.syshook.d/carp")),
            links: BTreeMap::new(),
            control: None,
            plugins: None,
            hasync: None,
            started: Instant::now(),
            boot,
            shutting_down: false,
            dhcp: None,
        }
    }

    fn start_interface(&mut self, cfg: IfaceCfg) {
        let addr = Interface::new(cfg.clone(), self.nl.clone(), self.bus.clone()).start();
        let name = format!("interface:{}", cfg.key);
        self.interfaces
            .insert(cfg.key.clone(), (cfg, Child::new(name, addr)));
    }

    /// Converge the interface actors to `config`.
    fn apply_interfaces(&mut self, config: &Config) {
        let wanted: BTreeMap<String, IfaceCfg> = config
            .interfaces
            .iter()
            .filter(|i| i.enabled && !i.device.is_empty())
            .map(|i| (i.key.clone(), i.clone()))
            .collect();
        let gone: Vec<String> = self
            .interfaces
            .keys()
            .filter(|k| !wanted.contains_key(*k))
            .cloned()
            .collect();
        for key in gone {
            if let Some((mut cfg, child)) = self.interfaces.remove(&key) {
                tracing::info!(key = %key, "interface removed from config; deconfiguring");
                cfg.ipv4 = None;
                cfg.ipv6 = None;
                child.addr.do_send(ApplyIfaceMsg(cfg));
                child.addr.do_send(StopMsg);
            }
        }
        for (key, cfg) in wanted {
            match self.interfaces.get_mut(&key) {
                Some((old, child)) if *old != cfg => {
                    *old = cfg.clone();
                    child.addr.do_send(ApplyIfaceMsg(cfg));
                }
                Some(_) => {}
                None => self.start_interface(cfg),
            }
        }
    }

    /// Render and load both rulesets from `config`; each actor loads only if its text changed.
    fn apply_rulesets(
        &self,
        config: Arc<Config>,
    ) -> impl std::future::Future<Output = Vec<(Kind, Result<bool, String>)>> + use<> {
        let actors: Vec<(Kind, Addr<NftActor>)> =
            [(Kind::Filter, &self.filter), (Kind::Nat, &self.nat)]
                .into_iter()
                .filter_map(|(k, c)| c.as_ref().map(|c| (k, c.addr.clone())))
                .collect();
        async move {
            let mut out = Vec::new();
            for (k, a) in actors {
                let r = match a.send(ApplyRulesetMsg(config.clone())).await {
                    Ok(r) => r,
                    Err(e) => Err(format!("{k:?} actor: {e}")),
                };
                out.push((k, r));
            }
            out
        }
    }

    /// Start, restart or stop state sync to match `config`.
    fn apply_pfsync(&mut self, config: &Config, ctx: &mut Context<Self>) {
        let wanted = pfsync_spec(config);
        if self.pfsync.as_ref().map(|(s, _)| s) == wanted.as_ref() {
            return;
        }
        if let Some((old, child)) = self.pfsync.take() {
            tracing::info!(device = %old.device, "state sync settings changed; restarting it");
            child.addr.do_send(StopMsg);
        }
        if let Some(spec) = wanted {
            let addr = Pfsync::new(spec.clone(), ctx.address(), self.nl.clone()).start();
            self.pfsync = Some((spec, Child::new("pfsync".into(), addr)));
        }
    }

    fn start_carp(&mut self, key: String, spec: CarpSpec) {
        let addr = Carp::new(
            spec.clone(),
            self.nl.clone(),
            self.bus.clone(),
            self.hooks.clone(),
            self.demotion.total(),
        )
        .start();
        self.carps
            .insert(key.clone(), (spec, Child::new(format!("carp:{key}"), addr)));
    }

    /// Converge the CARP actors to `config`.
    fn apply_carp(&mut self, config: &Config) {
        let wanted = carp_specs(config);
        let gone: Vec<String> = self
            .carps
            .keys()
            .filter(|k| !wanted.contains_key(*k))
            .cloned()
            .collect();
        for key in gone {
            if let Some((_, child)) = self.carps.remove(&key) {
                tracing::info!(vhid = %key, "VHID removed from config; stopping it");
                child.addr.do_send(StopMsg);
            }
        }
        for (key, spec) in wanted {
            match self.carps.get_mut(&key) {
                Some((old, child)) if *old != spec => {
                    *old = spec.clone();
                    child.addr.do_send(CarpReconfigMsg(spec));
                }
                Some(_) => {}
                None => self.start_carp(key, spec),
            }
        }
        // Devices that carry no VHID any more cannot demote the node.
        let carp_devs: Vec<String> = self.carps.values().map(|(s, _)| s.device.clone()).collect();
        let stale: Vec<String> = self
            .demotion
            .view(clock::now())
            .into_iter()
            .filter_map(|r| r.name.strip_prefix("link:").map(str::to_string))
            .filter(|d| !carp_devs.contains(d))
            .collect();
        let mut changed = false;
        for d in stale {
            changed |= self.demotion.clear(&format!("link:{d}"));
        }
        for d in carp_devs {
            if self.links.get(&d) == Some(&false) {
                changed |= self.demotion.set(
                    &format!("link:{d}"),
                    demotion::LINK_DOWN,
                    clock::now(),
                    None,
                );
            }
        }
        changed |= self.sync_maintenance(config);
        if changed {
            self.demotion_changed();
        }
    }

    fn sync_maintenance(&mut self, config: &Config) -> bool {
        if config.maintenance {
            self.demotion
                .set("maintenance", demotion::MAINTENANCE, clock::now(), None)
        } else {
            self.demotion.clear("maintenance")
        }
    }

    fn demotion_changed(&mut self) {
        let total = self.demotion.total();
        let reasons: Vec<String> = self
            .demotion
            .view(clock::now())
            .iter()
            .map(|r| format!("{}+{}", r.name, r.value))
            .collect();
        tracing::info!(total, reasons = ?reasons, "node demotion changed");
        for (_, child) in self.carps.values() {
            child.addr.do_send(CarpDemotionMsg(total));
        }
        self.bus.publish(BusMsg::DemotionChanged { total, reasons });
    }

    fn on_bus(&mut self, msg: BusMsg) {
        if let BusMsg::LinkChanged { device, up, .. } = msg {
            if let Some((spec, child)) = &self.pfsync
                && spec.device == device
            {
                child.addr.do_send(PfsyncLinkMsg(up));
            }
            self.links.insert(device.clone(), up);
            let mut is_carp_dev = false;
            for (spec, child) in self.carps.values() {
                if spec.device == device {
                    is_carp_dev = true;
                    child.addr.do_send(CarpLinkMsg { up });
                }
            }
            if is_carp_dev {
                let name = format!("link:{device}");
                let changed = if up {
                    self.demotion.clear(&name)
                } else {
                    self.demotion
                        .set(&name, demotion::LINK_DOWN, clock::now(), None)
                };
                if changed {
                    self.demotion_changed();
                }
            }
        }
    }

    fn watchdog(&mut self, ctx: &mut Context<Self>) {
        if self.shutting_down {
            return;
        }
        if !self.demotion.expire(clock::now()).is_empty() {
            self.demotion_changed();
        }
        let now = Instant::now();
        let (nl, bus) = (self.nl.clone(), self.bus.clone());
        for (cfg, child) in self.interfaces.values_mut() {
            let (c, n, b) = (cfg.clone(), nl.clone(), bus.clone());
            child.check(now, &bus, move || Interface::new(c, n, b).start());
        }
        let mut restarted_nft = false;
        for (kind, slot) in [(Kind::Filter, &mut self.filter), (Kind::Nat, &mut self.nat)] {
            if let Some(child) = slot.as_mut() {
                let was = child.restarts;
                child.check(now, &bus, move || NftActor::new(kind).start());
                restarted_nft |= child.restarts != was;
            }
        }
        if restarted_nft {
            actix_rt::spawn(self.apply_rulesets(self.config.clone()));
        }
        let me = ctx.address();
        if let Some((spec, child)) = self.pfsync.as_mut() {
            let (s, n) = (spec.clone(), nl.clone());
            child.check(now, &bus, move || Pfsync::new(s, me, n).start());
        }
        let (hooks, total) = (self.hooks.clone(), self.demotion.total());
        for (spec, child) in self.carps.values_mut() {
            let (s, n, b, h) = (spec.clone(), nl.clone(), bus.clone(), hooks.clone());
            child.check(now, &bus, move || Carp::new(s, n, b, h, total).start());
        }
    }

    fn on_link_event(&mut self, ev: LinkEvent) {
        match ev {
            LinkEvent::Changed(info) => {
                for (cfg, child) in self.interfaces.values() {
                    if cfg.device == info.name {
                        child.addr.do_send(LinkEventMsg(info.clone()));
                    }
                }
            }
            LinkEvent::Removed {
                name: Some(name), ..
            } => {
                for (cfg, child) in self.interfaces.values() {
                    if cfg.device == name {
                        child.addr.do_send(LinkRemovedMsg);
                    }
                }
            }
            LinkEvent::Removed { .. } => {}
        }
    }

    /// Start the plugins actor: installed plugins of the rootfs first, then the shipped ones
    /// (extracted from the binary into `<state>/plugins-shipped`).
    fn start_plugins(&mut self, ctx: &mut Context<Self>, cfg: Arc<Config>) {
        let root = &self.boot.lower_or_merged;
        let mut dirs = vec![root.join("usr/local/share/tandem/plugins")];
        let shipped = self.boot.state_dir.join("plugins-shipped");
        match crate::actor::plugins::install_shipped(&shipped) {
            Ok(()) => dirs.push(shipped),
            Err(e) => {
                tracing::error!(dir = %shipped.display(), "cannot install the shipped plugins: {e}")
            }
        }
        let plugins = Plugins::new(
            dirs,
            root.join("usr/local/etc/rc.carp_service_status.d"),
            self.boot.socket.clone(),
            self.bus.clone(),
            ctx.address(),
        )
        .with_state_dir(self.boot.state_dir.join("plugins"))
        .start();
        plugins.do_send(PluginsConfigMsg(cfg));
        self.plugins = Some(plugins);
    }

    /// Route a committed config to the actors of the sections that changed.
    fn route(&mut self, c: &Committed, ctx: &mut Context<Self>) {
        self.config = c.config.clone();
        self.revision = c.revision;
        let cfg = c.config.clone();
        if c.sections.iter().any(|s| s == "interfaces") {
            self.apply_interfaces(&cfg);
        }
        if c.sections.iter().any(|s| {
            matches!(
                s.as_str(),
                "interfaces" | "virtualip" | "hasync" | crate::config::MAINTENANCE_ELEMENT
            )
        }) {
            self.apply_carp(&cfg);
        }
        if c.sections
            .iter()
            .any(|s| matches!(s.as_str(), "interfaces" | "hasync"))
        {
            self.apply_pfsync(&cfg, ctx);
        }
        if let Some(p) = &self.plugins {
            p.do_send(PluginsConfigMsg(cfg.clone()));
        }
        if let Some(d) = &self.dhcp {
            d.do_send(crate::actor::dhcp::DhcpConfigMsg(cfg.clone()));
        }
        if let Some(ha) = &self.hasync {
            ha.do_send(HaConfigMsg {
                config: c.config.clone(),
                revision: c.revision,
                sections: c.sections.clone(),
                description: c.description.clone(),
            });
        }
        self.bus.publish(BusMsg::ConfigApplied {
            revision: c.revision,
            description: c.description.clone(),
            sections: c.sections.clone(),
        });
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.add_stream(bus_stream(self.bus.subscribe()));
        let cfg = self.config.clone();
        let v6 = cfg.interfaces.iter().any(|i| i.enabled && i.ipv6.is_some());
        match crate::sys::sysctl::enable_forwarding(v6) {
            Ok(()) => tracing::info!(ipv6 = v6, "forwarding enabled"),
            Err(e) => tracing::error!("cannot enable forwarding: {e}"),
        }
        self.apply_interfaces(&cfg);
        self.filter = Some(Child::new(
            "filter".into(),
            NftActor::new(Kind::Filter).start(),
        ));
        self.nat = Some(Child::new("nat".into(), NftActor::new(Kind::Nat).start()));
        actix_rt::spawn(self.apply_rulesets(cfg.clone()));
        if self.sync_maintenance(&cfg) {
            tracing::info!("persistent CARP maintenance mode is on: demoted by 240");
        }
        self.apply_carp(&cfg);
        self.apply_pfsync(&cfg, ctx);
        self.start_plugins(ctx, cfg.clone());
        let dhcp =
            crate::actor::dhcp::DhcpService::new(self.boot.state_dir.clone(), self.bus.clone())
                .start();
        dhcp.do_send(crate::actor::dhcp::DhcpConfigMsg(cfg.clone()));
        self.dhcp = Some(dhcp);
        let ha = HaSync::new(self.boot.state_dir.clone(), ctx.address(), self.bus.clone()).start();
        ha.do_send(HaConfigMsg {
            config: cfg.clone(),
            revision: self.revision,
            sections: Vec::new(),
            description: "boot".into(),
        });
        self.hasync = Some(ha);
        match netlink::monitor() {
            Ok(rx) => {
                ctx.add_stream(tokio_stream_from(rx));
            }
            Err(e) => tracing::error!("cannot watch link state (rtnetlink): {e}"),
        }
        ctx.run_interval(Duration::from_millis(250), |act, ctx| act.watchdog(ctx));
        tracing::info!(
            hostname = %self.config.system.hostname,
            revision = self.revision,
            interfaces = self.interfaces.len(),
            "node started"
        );
    }
}

/// The bus as a stream for `add_stream` (a forwarding task; lag is logged, not fatal).
fn bus_stream(
    mut rx: tokio::sync::broadcast::Receiver<BusMsg>,
) -> impl futures::Stream<Item = BusMsg> {
    let (tx, out) = tokio::sync::mpsc::unbounded_channel();
    actix_rt::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(m) => {
                    if tx.send(m).is_err() {
                        break;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(lost = n, "supervisor lagged behind the bus");
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            }
        }
    });
    tokio_stream_from(out)
}

fn tokio_stream_from<T: 'static>(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<T>,
) -> impl futures::Stream<Item = T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

impl StreamHandler<LinkEvent> for Supervisor {
    fn handle(&mut self, ev: LinkEvent, _: &mut Context<Self>) {
        self.on_link_event(ev);
    }

    fn finished(&mut self, _: &mut Context<Self>) {
        tracing::error!("rtnetlink link monitor ended; link changes are no longer seen");
    }
}

impl StreamHandler<BusMsg> for Supervisor {
    fn handle(&mut self, msg: BusMsg, _: &mut Context<Self>) {
        self.on_bus(msg);
    }

    fn finished(&mut self, _: &mut Context<Self>) {}
}

/// `config.apply`: validate, write, then apply only the changed sections.
#[derive(Message)]
#[rtype(result = "Result<ApplyOutcome, CommitError>")]
pub struct ApplyConfigMsg {
    pub xml: Vec<u8>,
    pub description: String,
}

/// What a successful apply did.
#[derive(Clone, Debug, Serialize)]
pub struct ApplyOutcome {
    pub revision: i64,
    pub sections: Vec<String>,
    pub warnings: Vec<crate::config::Finding>,
    /// Tables reloaded because their rendered ruleset changed.
    pub reloaded: Vec<String>,
    /// Failures applying the new config (the config is written; what failed keeps its old state).
    pub errors: Vec<String>,
}

fn outcome(c: &Committed) -> ApplyOutcome {
    ApplyOutcome {
        revision: c.revision,
        sections: c.sections.clone(),
        warnings: c.config.validate(),
        reloaded: Vec::new(),
        errors: Vec::new(),
    }
}

impl Handler<ApplyConfigMsg> for Supervisor {
    type Result = ResponseActFuture<Self, Result<ApplyOutcome, CommitError>>;
    fn handle(&mut self, m: ApplyConfigMsg, _: &mut Context<Self>) -> Self::Result {
        let store = self.store.clone();
        Box::pin(
            async move {
                // Rules that cannot be rendered, or that nft would refuse, reject the whole
                // config before anything is written.
                if let Ok(cand) = Config::parse(&m.xml)
                    && cand.errors().is_empty()
                {
                    let checked = tokio::task::spawn_blocking(move || nftactor::precheck(&cand))
                        .await
                        .map_err(|e| CommitError::Io(format!("ruleset check: {e}")))?;
                    checked.map_err(CommitError::Invalid)?;
                }
                store
                    .send(CommitMsg {
                        xml: m.xml,
                        description: m.description,
                    })
                    .await
                    .unwrap_or_else(|e| Err(CommitError::Io(format!("config store: {e}"))))
            }
            .into_actor(self)
            .map(|res, act, ctx| {
                let c = res?;
                act.route(&c, ctx);
                Ok(c)
            })
            .then(|res: Result<Committed, CommitError>, act, _| {
                let loads = res
                    .as_ref()
                    .ok()
                    .map(|c| act.apply_rulesets(c.config.clone()));
                async move {
                    let c = res?;
                    let mut out = outcome(&c);
                    if let Some(loads) = loads {
                        for (kind, r) in loads.await {
                            match r {
                                Ok(true) => out.reloaded.push(format!("{kind:?}").to_lowercase()),
                                Ok(false) => {}
                                Err(e) => out.errors.push(e),
                            }
                        }
                    }
                    Ok(out)
                }
                .into_actor(act)
            }),
        )
    }
}

/// `carp.maintenance`: persist the flag, then apply.
#[derive(Message)]
#[rtype(result = "Result<Option<ApplyOutcome>, CommitError>")]
pub struct MaintenanceMsg {
    pub on: bool,
}

impl Handler<MaintenanceMsg> for Supervisor {
    type Result = ResponseActFuture<Self, Result<Option<ApplyOutcome>, CommitError>>;
    fn handle(&mut self, m: MaintenanceMsg, _: &mut Context<Self>) -> Self::Result {
        let store = self.store.clone();
        Box::pin(
            async move {
                store
                    .send(SetMaintenanceMsg { on: m.on })
                    .await
                    .unwrap_or_else(|e| Err(CommitError::Io(format!("config store: {e}"))))
            }
            .into_actor(self)
            .map(|res, act, ctx| {
                let c = res?;
                Ok(c.map(|c| {
                    act.route(&c, ctx);
                    outcome(&c)
                }))
            }),
        )
    }
}

/// `system.status`.
#[derive(Message)]
#[rtype(result = "Value")]
pub struct SystemStatusMsg;

impl Handler<SystemStatusMsg> for Supervisor {
    type Result = MessageResult<SystemStatusMsg>;
    fn handle(&mut self, _: SystemStatusMsg, _: &mut Context<Self>) -> Self::Result {
        let mut actors =
            vec![json!({"name": "config-store", "running": self.store.connected(), "restarts": 0})];
        actors.extend(self.interfaces.values().map(|(_, c)| c.status()));
        actors.extend(self.carps.values().map(|(_, c)| c.status()));
        actors.extend(
            [&self.filter, &self.nat]
                .into_iter()
                .flatten()
                .map(|c| c.status()),
        );
        MessageResult(json!({
            "version": crate::VERSION,
            "hostname": self.config.system.hostname,
            "domain": self.config.system.domain,
            "pid": std::process::id(),
            "uptime_s": self.started.elapsed().as_secs_f64(),
            "config_revision": self.revision,
            "maintenance": self.config.maintenance,
            "state_dir": self.boot.state_dir,
            "socket": self.boot.socket,
            "overlay": self.boot.overlay,
            "overlay_note": self.boot.overlay_note,
            "rootfs_lower": self.boot.lower,
            "actors": actors,
        }))
    }
}

/// `interfaces.list`.
#[derive(Message)]
#[rtype(result = "Vec<IfaceStatus>")]
pub struct InterfacesListMsg;

impl Handler<InterfacesListMsg> for Supervisor {
    type Result = ResponseFuture<Vec<IfaceStatus>>;
    fn handle(&mut self, _: InterfacesListMsg, _: &mut Context<Self>) -> Self::Result {
        let addrs: Vec<Addr<Interface>> = self
            .interfaces
            .values()
            .map(|(_, c)| c.addr.clone())
            .collect();
        Box::pin(async move {
            let mut out = Vec::new();
            for a in addrs {
                if let Ok(s) = a.send(IfaceStatusMsg).await {
                    out.push(s);
                }
            }
            out
        })
    }
}

/// The current config (for `config.get`).
#[derive(Message)]
#[rtype(result = "(Arc<Config>, i64)")]
pub struct CurrentConfigMsg;

impl Handler<CurrentConfigMsg> for Supervisor {
    type Result = ResponseFuture<(Arc<Config>, i64)>;
    fn handle(&mut self, _: CurrentConfigMsg, _: &mut Context<Self>) -> Self::Result {
        let store = self.store.clone();
        let fallback = (self.config.clone(), self.revision);
        Box::pin(async move { store.send(GetConfigMsg).await.unwrap_or(fallback) })
    }
}

/// Stop every actor in reverse start order, then the system.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ShutdownMsg;

impl Handler<ShutdownMsg> for Supervisor {
    type Result = ResponseActFuture<Self, ()>;
    fn handle(&mut self, _: ShutdownMsg, _: &mut Context<Self>) -> Self::Result {
        self.shutting_down = true;
        tracing::info!("shutting down");
        // Reverse start order: interfaces (newest first), then the config store.
        let ifaces: Vec<Addr<Interface>> = self
            .interfaces
            .values()
            .rev()
            .map(|(_, c)| c.addr.clone())
            .collect();
        let store = self.store.clone();
        let control = self.control.take();
        let plugins = self.plugins.take();
        let dhcp = self.dhcp.take();
        let hasync = self.hasync.take();
        let carps: Vec<Addr<Carp>> = self.carps.values().map(|(_, c)| c.addr.clone()).collect();
        let sync = self.pfsync.as_ref().map(|(_, c)| c.addr.clone());
        let tables: Vec<Addr<NftActor>> = [&self.filter, &self.nat]
            .into_iter()
            .flatten()
            .map(|c| c.addr.clone())
            .collect();
        Box::pin(
            async move {
                // Each step's time is logged: a slow stop names the actor that held it up.
                let t0 = std::time::Instant::now();
                let mut took: Vec<(&str, Duration)> = Vec::new();
                let mut mark = t0;
                let mut step = |name: &'static str| {
                    let now = std::time::Instant::now();
                    took.push((name, now - mark));
                    mark = now;
                };
                // The control socket goes first: no new requests while the rest stops.
                if let Some(c) = control {
                    let _ = tokio::time::timeout(Duration::from_millis(500), c.send(StopMsg)).await;
                }
                step("control");
                if let Some(h) = hasync {
                    let _ = tokio::time::timeout(Duration::from_millis(500), h.send(StopMsg)).await;
                }
                step("hasync");
                // CARP next: each VHID bows out (the peer takes over at once) and drops its VIPs.
                // Plugins stop meanwhile (SIGTERM, SIGKILL after 2 s), not delaying the handover.
                let bows = carps
                    .iter()
                    .map(|a| tokio::time::timeout(Duration::from_millis(800), a.send(StopMsg)));
                let plugins_stopped = async move {
                    if let Some(p) = plugins {
                        let _ = tokio::time::timeout(Duration::from_millis(3500), p.send(StopMsg))
                            .await;
                    }
                };
                futures::future::join(futures::future::join_all(bows), plugins_stopped).await;
                step("carp+plugins");
                if let Some(a) = sync {
                    let _ = tokio::time::timeout(Duration::from_millis(300), a.send(StopMsg)).await;
                }
                step("pfsync");
                if let Some(d) = dhcp {
                    let _ =
                        tokio::time::timeout(Duration::from_millis(1500), d.send(StopMsg)).await;
                }
                step("dhcp");
                for a in tables {
                    let _ = tokio::time::timeout(Duration::from_millis(500), a.send(StopMsg)).await;
                }
                step("nft");
                for a in ifaces {
                    let _ = tokio::time::timeout(Duration::from_millis(500), a.send(StopMsg)).await;
                }
                step("interfaces");
                let _ = tokio::time::timeout(Duration::from_millis(500), store.send(StopMsg)).await;
                step("store");
                let steps: Vec<String> = took
                    .iter()
                    .filter(|(_, d)| *d >= Duration::from_millis(1))
                    .map(|(n, d)| format!("{n} {} ms", d.as_millis()))
                    .collect();
                tracing::info!(
                    "stopped in {} ms ({})",
                    t0.elapsed().as_millis(),
                    if steps.is_empty() {
                        "every step under 1 ms".to_string()
                    } else {
                        steps.join(", ")
                    }
                );
            }
            .into_actor(self)
            .map(|_, _, ctx| {
                ctx.stop();
                System::current().stop();
            }),
        )
    }
}

/// The config store's address (for read-only queries such as `config.history`).
#[derive(Message)]
#[rtype(result = "Addr<ConfigStore>")]
pub struct StoreAddrMsg;

impl Handler<StoreAddrMsg> for Supervisor {
    type Result = MessageResult<StoreAddrMsg>;
    fn handle(&mut self, _: StoreAddrMsg, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.store.clone())
    }
}

/// The control actor, started last (it needs the supervisor's address), stopped first.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AdoptControlMsg(pub Addr<Control>);

impl Handler<AdoptControlMsg> for Supervisor {
    type Result = ();
    fn handle(&mut self, m: AdoptControlMsg, _: &mut Context<Self>) {
        self.control = Some(m.0);
    }
}

/// The CARP VHIDs the config asks for, keyed "<vhid>@<device>".
pub fn carp_specs(config: &Config) -> BTreeMap<String, CarpSpec> {
    use crate::config::VipMode;
    let mut out = BTreeMap::new();
    let preempt = !config.hasync.disable_preempt;
    for vip in config.vips.iter().filter(|v| v.mode == VipMode::Carp) {
        let Some(vhid) = vip.vhid else { continue };
        let Some(iface) = config.interface(&vip.interface) else {
            continue;
        };
        if !iface.enabled || iface.device.is_empty() {
            continue;
        }
        let mut addresses = vec![(vip.addr, vip.prefix)];
        for alias in config.vips.iter().filter(|a| {
            a.mode == VipMode::IpAlias && a.vhid == Some(vhid) && a.interface == vip.interface
        }) {
            if !addresses.contains(&(alias.addr, alias.prefix)) {
                addresses.push((alias.addr, alias.prefix));
            }
        }
        let siblings = config
            .vips
            .iter()
            .filter(|o| o.mode == VipMode::Carp && o.interface == vip.interface)
            .filter_map(|o| o.vhid)
            .filter(|v| *v != vhid)
            .collect();
        out.insert(
            format!("{vhid}@{}", iface.device),
            CarpSpec {
                vhid,
                interface: vip.interface.clone(),
                device: iface.device.clone(),
                advbase: vip.advbase,
                advskew: vip.advskew,
                password: vip.password.clone(),
                preempt,
                addresses,
                peer: vip.peer,
                peer6: vip.peer6,
                siblings,
                descr: vip.descr.clone(),
            },
        );
    }
    out
}

/// `carp.status`.
#[derive(Message)]
#[rtype(result = "Value")]
pub struct CarpStatusAllMsg;

impl Handler<CarpStatusAllMsg> for Supervisor {
    type Result = ResponseFuture<Value>;
    fn handle(&mut self, _: CarpStatusAllMsg, _: &mut Context<Self>) -> Self::Result {
        let addrs: Vec<Addr<Carp>> = self.carps.values().map(|(_, c)| c.addr.clone()).collect();
        let now = clock::now();
        let node = json!({
            "demotion": self.demotion.total(),
            "reasons": self.demotion.view(now),
            "maintenance": self.config.maintenance,
            "preempt": !self.config.hasync.disable_preempt,
        });
        Box::pin(async move {
            let mut vhids: Vec<CarpStatus> = Vec::new();
            for a in addrs {
                if let Ok(s) = a.send(CarpStatusMsg).await {
                    vhids.push(s);
                }
            }
            let mut v = node;
            v["vhids"] = json!(vhids);
            v
        })
    }
}

/// `filter.ruleset` / `nat.ruleset`.
#[derive(Message)]
#[rtype(result = "Option<nftactor::RulesetStatus>")]
pub struct RulesetMsg(pub Kind);

impl Handler<RulesetMsg> for Supervisor {
    type Result = ResponseFuture<Option<nftactor::RulesetStatus>>;
    fn handle(&mut self, m: RulesetMsg, _: &mut Context<Self>) -> Self::Result {
        let addr = match m.0 {
            Kind::Filter => self.filter.as_ref(),
            Kind::Nat => self.nat.as_ref(),
        }
        .map(|c| c.addr.clone());
        Box::pin(async move {
            match addr {
                Some(a) => a.send(nftactor::RulesetStatusMsg).await.ok(),
                None => None,
            }
        })
    }
}

/// Add, change or remove a named demotion reason (pfsync bulk, service checks, plugins).
/// `value: None` removes it; `timeout` bounds an automatic reason's life.
#[derive(Message, Debug, Clone)]
#[rtype(result = "u32")]
pub struct SetDemotionMsg {
    pub name: String,
    pub value: Option<u32>,
    pub timeout: Option<Duration>,
}

impl Handler<SetDemotionMsg> for Supervisor {
    type Result = u32;
    fn handle(&mut self, m: SetDemotionMsg, _: &mut Context<Self>) -> u32 {
        let changed = match m.value {
            Some(v) => self.demotion.set(&m.name, v, clock::now(), m.timeout),
            None => self.demotion.clear(&m.name),
        };
        if changed {
            self.demotion_changed();
        }
        self.demotion.total()
    }
}

/// State sync settings from `hasync`: the pfsync interface's device and address, the peer, the key.
pub fn pfsync_spec(config: &Config) -> Option<PfsyncSpec> {
    let key = config.hasync.pfsync_interface.as_ref()?;
    let iface = config.interface(key)?;
    if iface.device.is_empty() {
        return None;
    }
    Some(PfsyncSpec {
        interface: key.clone(),
        device: iface.device.clone(),
        peer: config.hasync.pfsync_peer,
        key: config.hasync.pfsync_key.clone().filter(|k| !k.is_empty()),
        local: iface.ipv4.map(|(a, _)| a),
    })
}

/// The pfsync actor, if state sync is configured.
#[derive(Message)]
#[rtype(result = "Option<Addr<Pfsync>>")]
pub struct PfsyncAddrMsg;

impl Handler<PfsyncAddrMsg> for Supervisor {
    type Result = MessageResult<PfsyncAddrMsg>;
    fn handle(&mut self, _: PfsyncAddrMsg, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.pfsync.as_ref().map(|(_, c)| c.addr.clone()))
    }
}

/// The plugins actor's address (for `plugins.list` / `plugins.restart`).
#[derive(Message)]
#[rtype(result = "Option<Addr<Plugins>>")]
pub struct PluginsAddrMsg;

impl Handler<PluginsAddrMsg> for Supervisor {
    type Result = MessageResult<PluginsAddrMsg>;
    fn handle(&mut self, _: PluginsAddrMsg, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.plugins.clone())
    }
}

/// The DHCP service's address (for `dhcp.leases` / `dhcp.failover`).
#[derive(Message)]
#[rtype(result = "Option<Addr<crate::actor::dhcp::DhcpService>>")]
pub struct DhcpAddrMsg;

impl Handler<DhcpAddrMsg> for Supervisor {
    type Result = MessageResult<DhcpAddrMsg>;
    fn handle(&mut self, _: DhcpAddrMsg, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.dhcp.clone())
    }
}

/// The HaSync actor's address (for `ha.sync` / `ha.status`).
#[derive(Message)]
#[rtype(result = "Option<Addr<HaSync>>")]
pub struct HaAddrMsg;

impl Handler<HaAddrMsg> for Supervisor {
    type Result = MessageResult<HaAddrMsg>;
    fn handle(&mut self, _: HaAddrMsg, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.hasync.clone())
    }
}
