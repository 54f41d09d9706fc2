//! `Carp`: one actor per VHID. Owns the pure `proto::carp::Machine`, raw IP-112 sockets on its
//! device (IPv4 and/or IPv6, multicast or unicast peer), installs the VIP and every IP alias of
//! the same VHID on MASTER and removes them otherwise, and announces them (GARP / unsolicited NA).
//!
//! ```text
//!  rx task (per family) ──RxMsg──▶ Carp ──SendAdvert──▶ raw socket
//!  supervisor ──CarpLinkMsg / CarpDemotionMsg / CarpReconfigMsg / StopMsg──▶ Carp
//!  Carp ──CarpTransition──▶ bus, hooks (rc.syshook.d/carp)
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::rc::Rc;
use std::time::Duration;

use actix::prelude::*;
use serde::Serialize;

use super::StopMsg;
use super::hooks::Hooks;
use crate::bus::{Bus, BusMsg};
use crate::clock;
use crate::proto::carp::{Action, DropReason, Input, Machine, State, VhidConfig};
use crate::sys::rawip::RawIp;
use crate::sys::{announce, netlink};
use crate::wire::{carp as wcarp, ipv4 as wipv4};

/// Everything one VHID needs from the config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CarpSpec {
    pub vhid: u8,
    /// Interface key (`lan`) and device (`em0`).
    pub interface: String,
    pub device: String,
    pub advbase: u8,
    pub advskew: u8,
    pub password: String,
    pub preempt: bool,
    /// The VIP and every IP alias riding on this VHID, with prefix lengths.
    pub addresses: Vec<(IpAddr, u8)>,
    pub peer: Option<Ipv4Addr>,
    pub peer6: Option<Ipv6Addr>,
    /// Other VHIDs on the same device (their adverts are not "bad vhid").
    pub siblings: Vec<u8>,
    pub descr: String,
}

impl CarpSpec {
    fn vhid_config(&self, seed: u64) -> VhidConfig {
        VhidConfig {
            vhid: self.vhid,
            advbase: self.advbase,
            advskew: self.advskew,
            preempt: self.preempt,
            key: self.password.as_bytes().to_vec(),
            v4: self
                .addresses
                .iter()
                .filter_map(|(a, _)| match a {
                    IpAddr::V4(v) => Some(*v),
                    _ => None,
                })
                .collect(),
            v6: self
                .addresses
                .iter()
                .filter_map(|(a, _)| match a {
                    IpAddr::V6(v) => Some(*v),
                    _ => None,
                })
                .collect(),
            seed,
        }
    }

    fn has_v4(&self) -> bool {
        self.addresses.iter().any(|(a, _)| a.is_ipv4())
    }

    fn has_v6(&self) -> bool {
        self.addresses.iter().any(|(a, _)| a.is_ipv6())
    }
}

/// I/O counters the pure machine does not see.
#[derive(Clone, Debug, Default, Serialize)]
pub struct IoStats {
    pub send_errors: u64,
    pub vip_errors: u64,
    pub announce_errors: u64,
    pub sibling_adverts: u64,
    /// Times the VIPs were found missing while MASTER (or present while not), changed outside
    /// tandem (`ip addr del/flush`, a DHCP client or network manager), and put right.
    pub vip_repairs: u64,
}

/// How often the device's addresses are compared with the VHID's state.
pub const VIP_CHECK_EVERY: Duration = Duration::from_secs(1);

/// `carp.status` for one VHID.
#[derive(Clone, Debug, Serialize)]
pub struct CarpStatus {
    pub vhid: u8,
    pub interface: String,
    pub device: String,
    pub descr: String,
    pub vips: Vec<String>,
    pub state: String,
    pub advbase: u8,
    pub advskew: u8,
    pub advertised_skew: u8,
    pub since_s: f64,
    pub link_up: bool,
    pub vips_installed: bool,
    pub peer: Option<String>,
    pub stats: serde_json::Value,
    pub io: IoStats,
    pub last_error: Option<String>,
}

pub struct Carp {
    spec: CarpSpec,
    machine: Machine,
    nl: rtnetlink::Handle,
    bus: Bus,
    hooks: Hooks,
    ifindex: Option<u32>,
    mac: Option<[u8; 6]>,
    sock4: Option<Rc<RawIp>>,
    sock6: Option<Rc<RawIp>>,
    timer: Option<SpawnHandle>,
    link_up: bool,
    demotion: u32,
    vips_installed: bool,
    /// When tandem last added or removed the VIPs (a check right after would race it).
    vips_changed: Option<std::time::Instant>,
    checking_vips: bool,
    io: IoStats,
    last_error: Option<String>,
    stopping: bool,
}

/// A datagram from one of the rx tasks.
#[derive(Message)]
#[rtype(result = "()")]
struct RxMsg {
    bytes: Vec<u8>,
    src: IpAddr,
    v6: bool,
    hop_limit: Option<u8>,
}

/// Sockets are ready (or failed).
#[derive(Message)]
#[rtype(result = "()")]
struct OpenedMsg(Result<Opened, String>);

struct Opened {
    ifindex: u32,
    mac: Option<[u8; 6]>,
    link_up: bool,
    sock4: Option<RawIp>,
    sock6: Option<RawIp>,
}

impl Carp {
    pub fn new(
        spec: CarpSpec,
        nl: rtnetlink::Handle,
        bus: Bus,
        hooks: Hooks,
        demotion: u32,
    ) -> Carp {
        let seed = rand::random::<u64>();
        let mut machine = Machine::new(spec.vhid_config(seed), clock::now());
        let _ = machine.handle(clock::now(), Input::Demotion(demotion));
        Carp {
            spec,
            machine,
            nl,
            bus,
            hooks,
            ifindex: None,
            mac: None,
            sock4: None,
            sock6: None,
            timer: None,
            link_up: false,
            demotion,
            vips_installed: false,
            vips_changed: None,
            checking_vips: false,
            io: IoStats::default(),
            last_error: None,
            stopping: false,
        }
    }

    fn feed(&mut self, input: Input, ctx: &mut Context<Self>) {
        let actions = self.machine.handle(clock::now(), input);
        self.run(actions, ctx);
    }

    fn poll(&mut self, ctx: &mut Context<Self>) {
        self.timer = None;
        let actions = self.machine.poll(clock::now());
        self.run(actions, ctx);
    }

    fn rearm(&mut self, ctx: &mut Context<Self>) {
        if let Some(h) = self.timer.take() {
            ctx.cancel_future(h);
        }
        if let Some(at) = self.machine.poll_at() {
            let d = clock::until(at);
            self.timer = Some(ctx.run_later(d, |act, ctx| act.poll(ctx)));
        }
    }

    fn run(&mut self, actions: Vec<Action>, ctx: &mut Context<Self>) {
        for a in actions {
            match a {
                Action::SendAdvert(repr) => self.send_advert(repr),
                Action::InstallVips => self.install_vips(true),
                Action::RemoveVips => self.install_vips(false),
                Action::Announce => self.announce(),
                Action::Transition { from, to, reason } => {
                    tracing::info!(
                        vhid = self.spec.vhid, device = %self.spec.device,
                        "carp: {from} -> {to} ({reason})"
                    );
                    self.bus.publish(BusMsg::CarpTransition {
                        vhid: self.spec.vhid,
                        device: self.spec.device.clone(),
                        interface: self.spec.interface.clone(),
                        from: from.to_string(),
                        to: to.to_string(),
                        reason: reason.to_string(),
                    });
                    self.hooks
                        .carp(self.spec.vhid, &self.spec.device, &to.to_string());
                }
            }
        }
        if !self.stopping {
            self.rearm(ctx);
        }
    }

    fn send_advert(&mut self, repr: wcarp::Repr) {
        let mut buf = vec![0u8; repr.buffer_len()];
        let mut pkt = wcarp::Packet::new_unchecked(&mut buf[..]);
        repr.emit(&mut pkt);
        let Some(ifindex) = self.ifindex else { return };
        let mut sends: Vec<(Rc<RawIp>, IpAddr)> = Vec::new();
        if let Some(s) = &self.sock4 {
            let dst = self.spec.peer.unwrap_or(wcarp::MCAST_V4);
            sends.push((s.clone(), IpAddr::V4(dst)));
        }
        if let Some(s) = &self.sock6 {
            let dst = self.spec.peer6.unwrap_or(wcarp::MCAST_V6);
            sends.push((s.clone(), IpAddr::V6(dst)));
        }
        let vhid = self.spec.vhid;
        // Sends on a raw socket do not block in practice; do them inline so adverts keep order.
        for (s, dst) in sends {
            let buf = buf.clone();
            actix_rt::spawn(async move {
                if let Err(e) = s.send_to(&buf, dst, ifindex).await {
                    tracing::warn!(vhid, %dst, "carp advert not sent: {e}");
                }
            });
        }
    }

    fn install_vips(&mut self, install: bool) {
        let Some(ifindex) = self.ifindex else {
            if install {
                self.last_error = Some("device not found; VIPs not installed".into());
            }
            return;
        };
        self.vips_installed = install;
        self.vips_changed = Some(std::time::Instant::now());
        let nl = self.nl.clone();
        let addrs = self.spec.addresses.clone();
        let vhid = self.spec.vhid;
        let dev = self.spec.device.clone();
        actix_rt::spawn(async move {
            for (ip, p) in addrs {
                let r = if install {
                    netlink::add_address(&nl, ifindex, ip, p).await
                } else {
                    netlink::del_address(&nl, ifindex, ip, p).await
                };
                match r {
                    Ok(()) => {
                        tracing::info!(vhid, device = %dev, "{} {ip}/{p}", if install { "installed" } else { "removed" })
                    }
                    Err(e) => {
                        tracing::warn!(vhid, device = %dev, "{} {ip}/{p} failed: {e}", if install { "installing" } else { "removing" })
                    }
                }
            }
        });
    }

    /// The VIPs belong on the device exactly while they are installed (MASTER): put back what
    /// someone else removed, take away what someone else added.
    fn check_vips(&mut self, ctx: &mut Context<Self>) {
        let Some(ifindex) = self.ifindex else { return };
        if self.checking_vips
            || self.stopping
            || self.spec.addresses.is_empty()
            || self
                .vips_changed
                .is_some_and(|t| t.elapsed() < VIP_CHECK_EVERY)
        {
            return;
        }
        self.checking_vips = true;
        let want = self.vips_installed;
        let nl = self.nl.clone();
        ctx.spawn(
            async move { netlink::addresses(&nl, ifindex).await }
                .into_actor(self)
                .map(move |r, act, _| {
                    act.checking_vips = false;
                    let present = match r {
                        Ok(p) => p,
                        Err(e) => {
                            tracing::debug!(vhid = act.spec.vhid, "listing addresses: {e}");
                            return;
                        }
                    };
                    // Changed by tandem meanwhile: the next check looks again.
                    if act.vips_installed != want
                        || act
                            .vips_changed
                            .is_some_and(|t| t.elapsed() < VIP_CHECK_EVERY)
                    {
                        return;
                    }
                    let wrong: Vec<String> = act
                        .spec
                        .addresses
                        .iter()
                        .filter(|(ip, _)| present.iter().any(|(p, _)| p == ip) != want)
                        .map(|(ip, p)| format!("{ip}/{p}"))
                        .collect();
                    if wrong.is_empty() {
                        return;
                    }
                    act.io.vip_repairs += 1;
                    if want {
                        tracing::warn!(
                            vhid = act.spec.vhid, device = %act.spec.device,
                            "VIP {} removed outside tandem while MASTER; adding it again", wrong.join(", ")
                        );
                    } else {
                        tracing::warn!(
                            vhid = act.spec.vhid, device = %act.spec.device,
                            "VIP {} added outside tandem while not MASTER; removing it", wrong.join(", ")
                        );
                    }
                    act.install_vips(want);
                    if want {
                        act.announce();
                    }
                }),
        );
    }

    fn announce(&mut self) {
        let (Some(ifindex), Some(mac)) = (self.ifindex, self.mac) else {
            return;
        };
        let ips: Vec<IpAddr> = self.spec.addresses.iter().map(|(a, _)| *a).collect();
        let dev = self.spec.device.clone();
        let vhid = self.spec.vhid;
        actix_rt::spawn(async move {
            if let Err(e) = announce::announce(&dev, ifindex, mac, &ips).await {
                tracing::warn!(vhid, device = %dev, "announcing VIPs failed: {e}");
            }
        });
    }

    fn open(&mut self, ctx: &mut Context<Self>) {
        let spec = self.spec.clone();
        let nl = self.nl.clone();
        let fut = async move {
            let link = netlink::link_by_name(&nl, &spec.device)
                .await
                .map_err(|e| format!("looking up {}: {e}", spec.device))?
                .ok_or_else(|| format!("device {} does not exist", spec.device))?;
            let proto = i32::from(wcarp::PROTOCOL);
            let sock4 = if spec.has_v4() {
                let group = if spec.peer.is_none() {
                    Some(wcarp::MCAST_V4)
                } else {
                    None
                };
                Some(
                    RawIp::open_v4(proto, &spec.device, link.index, group)
                        .map_err(|e| format!("IPv4 CARP socket on {}: {e}", spec.device))?,
                )
            } else {
                None
            };
            let sock6 = if spec.has_v6() {
                let group = if spec.peer6.is_none() {
                    Some(wcarp::MCAST_V6)
                } else {
                    None
                };
                Some(
                    RawIp::open_v6(proto, &spec.device, link.index, group)
                        .map_err(|e| format!("IPv6 CARP socket on {}: {e}", spec.device))?,
                )
            } else {
                None
            };
            Ok(Opened {
                ifindex: link.index,
                mac: link.mac.as_deref().and_then(announce::parse_mac),
                link_up: link.is_up(),
                sock4,
                sock6,
            })
        };
        let addr = ctx.address();
        actix_rt::spawn(async move {
            let r = fut.await;
            addr.do_send(OpenedMsg(r));
        });
    }

    fn start_rx(&self, sock: Rc<RawIp>, v6: bool, ctx: &mut Context<Self>) {
        let addr = ctx.address();
        let vhid = self.spec.vhid;
        actix_rt::spawn(async move {
            let mut buf = vec![0u8; 2048];
            loop {
                match sock.recv(&mut buf).await {
                    Ok(r) => {
                        let msg = RxMsg {
                            bytes: buf[..r.len.min(buf.len())].to_vec(),
                            src: r.src,
                            v6,
                            hop_limit: r.hop_limit,
                        };
                        if addr.try_send(msg).is_err() && !addr.connected() {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(vhid, "carp receive failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        if !addr.connected() {
                            break;
                        }
                    }
                }
            }
        });
    }

    /// Wire-level checks (TTL, length, checksum, vhid) in BSD order; the machine does the rest.
    fn receive(&mut self, m: RxMsg, ctx: &mut Context<Self>) {
        let (ttl, payload): (u8, &[u8]) = if m.v6 {
            (m.hop_limit.unwrap_or(0), &m.bytes[..])
        } else {
            match wipv4::parse_header(&m.bytes) {
                Ok((h, payload)) => (h.ttl, payload),
                Err(_) => {
                    self.machine.count_drop(DropReason::BadLen);
                    return;
                }
            }
        };
        if ttl != wcarp::TTL {
            self.machine.count_drop(DropReason::BadTtl);
            return;
        }
        let pkt = match wcarp::Packet::new_checked(payload) {
            Ok(p) => p,
            Err(_) => {
                self.machine.count_drop(DropReason::BadLen);
                return;
            }
        };
        if !pkt.verify_checksum() {
            self.machine.count_drop(DropReason::BadChecksum);
            return;
        }
        if pkt.vhid() != self.spec.vhid {
            if self.spec.siblings.contains(&pkt.vhid()) {
                self.io.sibling_adverts += 1;
            } else {
                self.machine.count_drop(DropReason::BadVhid);
            }
            return;
        }
        match wcarp::Repr::parse(&pkt) {
            Ok(repr) => self.feed(Input::Advert { src: m.src, repr }, ctx),
            Err(e) => self.machine.count_drop(DropReason::from(e)),
        }
    }

    fn status(&self) -> CarpStatus {
        let now = clock::now();
        CarpStatus {
            vhid: self.spec.vhid,
            interface: self.spec.interface.clone(),
            device: self.spec.device.clone(),
            descr: self.spec.descr.clone(),
            vips: self
                .spec
                .addresses
                .iter()
                .map(|(a, p)| format!("{a}/{p}"))
                .collect(),
            state: self.machine.state().to_string(),
            advbase: self.spec.advbase,
            advskew: self.spec.advskew,
            advertised_skew: self.machine.advertised_skew(),
            since_s: now
                .saturating_duration_since(self.machine.since())
                .as_secs_f64(),
            link_up: self.link_up,
            vips_installed: self.vips_installed,
            peer: self
                .spec
                .peer
                .map(|p| p.to_string())
                .or(self.spec.peer6.map(|p| p.to_string())),
            stats: serde_json::to_value(self.machine.stats()).unwrap_or_default(),
            io: self.io.clone(),
            last_error: self.last_error.clone(),
        }
    }
}

impl Actor for Carp {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.open(ctx);
        ctx.run_interval(VIP_CHECK_EVERY, |act, ctx| act.check_vips(ctx));
    }
}

impl Handler<OpenedMsg> for Carp {
    type Result = ();
    fn handle(&mut self, m: OpenedMsg, ctx: &mut Context<Self>) {
        match m.0 {
            Ok(o) => {
                self.ifindex = Some(o.ifindex);
                self.mac = o.mac;
                if let Some(s) = o.sock4 {
                    let s = Rc::new(s);
                    self.start_rx(s.clone(), false, ctx);
                    self.sock4 = Some(s);
                }
                if let Some(s) = o.sock6 {
                    let s = Rc::new(s);
                    self.start_rx(s.clone(), true, ctx);
                    self.sock6 = Some(s);
                }
                self.last_error = None;
                // Never leave a VIP behind from an earlier run: we start as BACKUP-to-be.
                self.install_vips(false);
                self.link_up = o.link_up;
                if o.link_up {
                    self.feed(Input::LinkUp, ctx);
                }
            }
            Err(e) => {
                tracing::warn!(vhid = self.spec.vhid, "carp not started: {e}");
                self.last_error = Some(e);
                // Retry: the device may appear later.
                ctx.run_later(Duration::from_secs(2), |act, ctx| act.open(ctx));
            }
        }
    }
}

impl Handler<RxMsg> for Carp {
    type Result = ();
    fn handle(&mut self, m: RxMsg, ctx: &mut Context<Self>) {
        self.receive(m, ctx);
    }
}

/// The device's link changed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CarpLinkMsg {
    pub up: bool,
}

impl Handler<CarpLinkMsg> for Carp {
    type Result = ();
    fn handle(&mut self, m: CarpLinkMsg, ctx: &mut Context<Self>) {
        if m.up == self.link_up {
            return;
        }
        self.link_up = m.up;
        if self.ifindex.is_none() {
            return;
        }
        self.feed(if m.up { Input::LinkUp } else { Input::LinkDown }, ctx);
    }
}

/// The node demotion total changed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CarpDemotionMsg(pub u32);

impl Handler<CarpDemotionMsg> for Carp {
    type Result = ();
    fn handle(&mut self, m: CarpDemotionMsg, ctx: &mut Context<Self>) {
        if m.0 != self.demotion {
            self.demotion = m.0;
            self.feed(Input::Demotion(m.0), ctx);
        }
    }
}

/// New settings for this VHID (same vhid and device).
#[derive(Message)]
#[rtype(result = "()")]
pub struct CarpReconfigMsg(pub CarpSpec);

impl Handler<CarpReconfigMsg> for Carp {
    type Result = ();
    fn handle(&mut self, m: CarpReconfigMsg, ctx: &mut Context<Self>) {
        let was_installed = self.vips_installed;
        let old_addrs = self.spec.addresses.clone();
        if was_installed && old_addrs != m.0.addresses {
            // Remove addresses that no longer ride on this VHID.
            let gone: Vec<(IpAddr, u8)> = old_addrs
                .into_iter()
                .filter(|a| !m.0.addresses.contains(a))
                .collect();
            if let Some(ifindex) = self.ifindex {
                let nl = self.nl.clone();
                actix_rt::spawn(async move {
                    for (ip, p) in gone {
                        let _ = netlink::del_address(&nl, ifindex, ip, p).await;
                    }
                });
            }
        }
        let seed = rand::random::<u64>();
        let cfg = m.0.vhid_config(seed);
        self.spec = m.0;
        self.feed(Input::Reconfigure(cfg), ctx);
        if self.vips_installed {
            self.install_vips(true);
        }
    }
}

/// `carp.status` for this VHID.
#[derive(Message)]
#[rtype(result = "CarpStatus")]
pub struct CarpStatusMsg;

impl Handler<CarpStatusMsg> for Carp {
    type Result = MessageResult<CarpStatusMsg>;
    fn handle(&mut self, _: CarpStatusMsg, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.status())
    }
}

/// Graceful stop: one bow-out advert so the peer takes over at once, VIPs removed.
impl Handler<StopMsg> for Carp {
    type Result = ResponseActFuture<Self, ()>;
    fn handle(&mut self, _: StopMsg, ctx: &mut Context<Self>) -> Self::Result {
        self.stopping = true;
        if let Some(h) = self.timer.take() {
            ctx.cancel_future(h);
        }
        let actions = self.machine.handle(clock::now(), Input::Shutdown);
        self.run(actions, ctx);
        // Make sure the VIPs go even if the machine was not MASTER.
        self.install_vips(false);
        Box::pin(
            // Give the bow-out advert and the address removal a moment to leave.
            actix::clock::sleep(Duration::from_millis(50))
                .into_actor(self)
                .map(|_, _, ctx| ctx.stop()),
        )
    }
}

/// Is this VHID MASTER? (for the supervisor's view)
pub fn is_master(s: &CarpStatus) -> bool {
    s.state == State::Master.to_string()
}
