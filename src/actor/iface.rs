//! `Interface`: one per enabled interface of the config. Brings the device up, installs the
//! configured addresses (and removes the ones it installed that are no longer configured), follows
//! the link state and publishes `LinkChanged` on the bus. Every [`CHECK_EVERY`] it looks for
//! configured addresses that are gone (deleted by hand, flushed by another tool, or IPv6
//! addresses the kernel drops when the link goes down) and installs them again.
//!
//! ```text
//!  supervisor ──ApplyIfaceMsg / LinkEventMsg / IfaceStatusMsg──▶ Interface ──LinkChanged──▶ bus
//!                                                                   │
//!                                                                   └─ rtnetlink (sys::netlink)
//! ```

use std::net::IpAddr;
use std::time::Duration;

use actix::prelude::*;
use serde::Serialize;

use super::StopMsg;
use crate::bus::{Bus, BusMsg};
use crate::config::Interface as IfaceCfg;
use crate::sys::netlink::{self, LinkInfo};

pub struct Interface {
    cfg: IfaceCfg,
    nl: rtnetlink::Handle,
    bus: Bus,
    link: Option<LinkInfo>,
    /// Addresses this actor installed (only these are ever removed).
    installed: Vec<(IpAddr, u8)>,
    last_error: Option<String>,
    /// Configured addresses found missing and installed again.
    repairs: u64,
    /// What the last check found missing (a repeated failure is logged once).
    last_missing: Vec<String>,
    checking: bool,
    /// Bumped by every apply: a check that started before one is stale.
    applies: u64,
}

/// How often the configured addresses are checked.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);

/// What `interfaces.list` shows for one interface.
#[derive(Clone, Debug, Serialize)]
pub struct IfaceStatus {
    pub key: String,
    pub descr: Option<String>,
    pub device: String,
    pub enabled: bool,
    pub exists: bool,
    pub link: &'static str,
    pub index: Option<u32>,
    pub mac: Option<String>,
    pub mtu: Option<u32>,
    /// Addresses from the config.
    pub configured: Vec<String>,
    /// Addresses the kernel has on the device (VIPs included).
    pub addresses: Vec<String>,
    /// Times configured addresses were found missing and installed again.
    pub repairs: u64,
    pub last_error: Option<String>,
}

fn configured(cfg: &IfaceCfg) -> Vec<(IpAddr, u8)> {
    let mut v = Vec::new();
    if let Some((a, p)) = cfg.ipv4 {
        v.push((IpAddr::V4(a), p));
    }
    if let Some((a, p)) = cfg.ipv6 {
        v.push((IpAddr::V6(a), p));
    }
    v
}

impl Interface {
    pub fn new(cfg: IfaceCfg, nl: rtnetlink::Handle, bus: Bus) -> Interface {
        Interface {
            cfg,
            nl,
            bus,
            link: None,
            installed: Vec::new(),
            last_error: None,
            repairs: 0,
            last_missing: Vec::new(),
            checking: false,
            applies: 0,
        }
    }

    /// Installs configured addresses that are no longer on the device.
    fn check(&mut self, ctx: &mut Context<Self>) {
        let Some(index) = self.link.as_ref().map(|l| l.index) else {
            return;
        };
        let want = configured(&self.cfg);
        if self.checking || want.is_empty() {
            return;
        }
        self.checking = true;
        let applies = self.applies;
        let nl = self.nl.clone();
        ctx.spawn(
            async move { netlink::addresses(&nl, index).await }
                .into_actor(self)
                .map(move |r, act, ctx| {
                    act.checking = false;
                    let Ok(present) = r else { return };
                    if act.applies != applies {
                        return;
                    }
                    let gone: Vec<(IpAddr, u8)> =
                        want.into_iter().filter(|a| !present.contains(a)).collect();
                    let missing: Vec<String> =
                        gone.iter().map(|(a, p)| format!("{a}/{p}")).collect();
                    if missing.is_empty() {
                        act.last_missing.clear();
                        return;
                    }
                    act.repairs += 1;
                    if missing != act.last_missing {
                        tracing::warn!(
                            key = %act.cfg.key, device = %act.cfg.device,
                            "configured address {} is gone from the device; installing it again",
                            missing.join(", ")
                        );
                    }
                    act.last_missing = missing;
                    // Only the addresses: the link's admin state is left as it is (an admin's
                    // `ip link set down` stays down).
                    let nl = act.nl.clone();
                    let device = act.cfg.device.clone();
                    ctx.wait(
                        async move {
                            for (ip, p) in gone {
                                if let Err(e) = netlink::add_address(&nl, index, ip, p).await {
                                    tracing::warn!(%device, "adding {ip}/{p} again: {e}");
                                }
                            }
                        }
                        .into_actor(act),
                    );
                }),
        );
    }

    /// Bring the device up and converge its addresses to the config. Returns the link and the
    /// addresses now installed by us.
    async fn converge(
        nl: rtnetlink::Handle,
        device: String,
        want: Vec<(IpAddr, u8)>,
        had: Vec<(IpAddr, u8)>,
    ) -> Result<(LinkInfo, Vec<(IpAddr, u8)>), String> {
        let link = netlink::link_by_name(&nl, &device)
            .await
            .map_err(|e| format!("looking up {device}: {e}"))?
            .ok_or_else(|| format!("device {device} does not exist"))?;
        netlink::set_up(&nl, link.index)
            .await
            .map_err(|e| format!("setting {device} up: {e}"))?;
        for old in had.iter().filter(|a| !want.contains(a)) {
            netlink::del_address(&nl, link.index, old.0, old.1)
                .await
                .map_err(|e| format!("removing {}/{} from {device}: {e}", old.0, old.1))?;
        }
        for (ip, p) in &want {
            netlink::add_address(&nl, link.index, *ip, *p)
                .await
                .map_err(|e| format!("adding {ip}/{p} to {device}: {e}"))?;
        }
        let link = netlink::link_by_name(&nl, &device)
            .await
            .ok()
            .flatten()
            .unwrap_or(link);
        Ok((link, want))
    }

    fn apply(&mut self, ctx: &mut Context<Self>) {
        self.applies += 1;
        let fut = Self::converge(
            self.nl.clone(),
            self.cfg.device.clone(),
            configured(&self.cfg),
            self.installed.clone(),
        );
        ctx.wait(fut.into_actor(self).map(|res, act, _| act.applied(res)));
    }

    fn applied(&mut self, res: Result<(LinkInfo, Vec<(IpAddr, u8)>), String>) {
        match res {
            Ok((link, installed)) => {
                tracing::info!(
                    key = %self.cfg.key, device = %self.cfg.device,
                    addresses = ?installed.iter().map(|(a, p)| format!("{a}/{p}")).collect::<Vec<_>>(),
                    link = if link.is_up() { "up" } else { "down" },
                    "interface configured"
                );
                self.installed = installed;
                self.last_error = None;
                self.update_link(link);
            }
            Err(e) => {
                tracing::warn!(key = %self.cfg.key, device = %self.cfg.device, "interface not configured: {e}");
                self.last_error = Some(e);
            }
        }
    }

    fn update_link(&mut self, link: LinkInfo) {
        let was = self.link.as_ref().map(LinkInfo::is_up);
        let now = link.is_up();
        self.link = Some(link);
        if was != Some(now) {
            if was.is_some() {
                tracing::info!(key = %self.cfg.key, device = %self.cfg.device, "link {}", if now { "up" } else { "down" });
            }
            self.bus.publish(BusMsg::LinkChanged {
                key: self.cfg.key.clone(),
                device: self.cfg.device.clone(),
                up: now,
            });
        }
    }
}

impl Actor for Interface {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.apply(ctx);
        ctx.run_interval(CHECK_EVERY, |act, ctx| act.check(ctx));
    }
}

/// A new config for this interface (same key).
#[derive(Message)]
#[rtype(result = "()")]
pub struct ApplyIfaceMsg(pub IfaceCfg);

impl Handler<ApplyIfaceMsg> for Interface {
    type Result = ();
    fn handle(&mut self, m: ApplyIfaceMsg, ctx: &mut Context<Self>) {
        if m.0.device != self.cfg.device {
            // A device change: forget what we installed on the old one after removing it.
            let nl = self.nl.clone();
            let old_dev = self.cfg.device.clone();
            let had = std::mem::take(&mut self.installed);
            actix_rt::spawn(async move {
                if let Ok(Some(l)) = netlink::link_by_name(&nl, &old_dev).await {
                    for (a, p) in had {
                        let _ = netlink::del_address(&nl, l.index, a, p).await;
                    }
                }
            });
            self.link = None;
        }
        self.cfg = m.0;
        self.apply(ctx);
    }
}

/// A kernel link event for this device.
#[derive(Message)]
#[rtype(result = "()")]
pub struct LinkEventMsg(pub LinkInfo);

impl Handler<LinkEventMsg> for Interface {
    type Result = ();
    fn handle(&mut self, m: LinkEventMsg, _: &mut Context<Self>) {
        self.update_link(m.0);
    }
}

/// The device is gone.
#[derive(Message)]
#[rtype(result = "()")]
pub struct LinkRemovedMsg;

impl Handler<LinkRemovedMsg> for Interface {
    type Result = ();
    fn handle(&mut self, _: LinkRemovedMsg, _: &mut Context<Self>) {
        if self.link.take().is_some_and(|l| l.is_up()) {
            self.bus.publish(BusMsg::LinkChanged {
                key: self.cfg.key.clone(),
                device: self.cfg.device.clone(),
                up: false,
            });
        }
        self.installed.clear();
        self.last_error = Some(format!("device {} was removed", self.cfg.device));
    }
}

/// Status for `interfaces.list`.
#[derive(Message)]
#[rtype(result = "IfaceStatus")]
pub struct IfaceStatusMsg;

impl Handler<IfaceStatusMsg> for Interface {
    type Result = ResponseActFuture<Self, IfaceStatus>;
    fn handle(&mut self, _: IfaceStatusMsg, _: &mut Context<Self>) -> Self::Result {
        let nl = self.nl.clone();
        let dev = self.cfg.device.clone();
        Box::pin(
            async move {
                match netlink::link_by_name(&nl, &dev).await {
                    Ok(Some(l)) => {
                        let addrs = netlink::addresses(&nl, l.index).await.unwrap_or_default();
                        Some((l, addrs))
                    }
                    _ => None,
                }
            }
            .into_actor(self)
            .map(|found, act, _| {
                if let Some((l, _)) = &found {
                    act.update_link(l.clone());
                }
                let (link, addrs) = match found {
                    Some((l, a)) => (Some(l), a),
                    None => (None, Vec::new()),
                };
                IfaceStatus {
                    key: act.cfg.key.clone(),
                    descr: act.cfg.descr.clone(),
                    device: act.cfg.device.clone(),
                    enabled: act.cfg.enabled,
                    exists: link.is_some(),
                    link: match &link {
                        Some(l) if l.is_up() => "up",
                        Some(_) => "down",
                        None => "absent",
                    },
                    index: link.as_ref().map(|l| l.index),
                    mac: link.as_ref().and_then(|l| l.mac.clone()),
                    mtu: link.as_ref().and_then(|l| l.mtu),
                    configured: configured(&act.cfg)
                        .iter()
                        .map(|(a, p)| format!("{a}/{p}"))
                        .collect(),
                    addresses: addrs.iter().map(|(a, p)| format!("{a}/{p}")).collect(),
                    repairs: act.repairs,
                    last_error: act.last_error.clone(),
                }
            }),
        )
    }
}

impl Handler<StopMsg> for Interface {
    type Result = ();
    fn handle(&mut self, _: StopMsg, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
