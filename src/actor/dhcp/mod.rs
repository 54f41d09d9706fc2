//! The DHCPv4 service: one [`server::DhcpServer`] per enabled `dhcpd/<if>` (bound to its device,
//! with its Kea-style HA peer session when `failover_peerip` is set), all sharing the lease
//! database `<state>/dhcp.db`.
//!
//! ```text
//!   supervisor ──DhcpConfigMsg──▶ DhcpService ──start/stop──▶ DhcpServer × N (per interface)
//!   DhcpServer ──dhcp.ha.changed──▶ bus (control socket `events.subscribe`, plugins)
//!   control    ──DhcpLeasesMsg / DhcpFailoverMsg──▶ DhcpService ──▶ each server
//! ```
//!
//! Test knobs (environment, read at config time): `TANDEM_DHCP_HEARTBEAT_MS`,
//! `TANDEM_DHCP_MAX_RESPONSE_DELAY_MS` override Kea's/OPNsense's 10 s / 60 s;
//! `TANDEM_DHCP_HA_MODE=hot-standby` selects hot-standby instead of load-balancing;
//! `TANDEM_DHCP_COMMIT_DELAY_MS` makes the lease database wait that long before each transaction
//! (a slow disk, for the durability tests).

pub mod db;
pub mod peer;
pub mod server;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use serde_json::{Value, json};

use crate::actor::StopMsg;
use crate::config::{Config, VipMode};
use crate::proto::dhcp::ha::{Mode, Role, Timing};
use crate::proto::dhcp::server::{Cfg, StaticHost, in_subnet};
use server::{DhcpServer, FailoverMsg, LeasesMsg, Spec};

pub struct DhcpService {
    state_dir: PathBuf,
    /// Handed to every server: HA state changes are published as `dhcp.ha.changed`.
    bus: crate::bus::Bus,
    servers: BTreeMap<String, (Spec, Addr<DhcpServer>)>,
}

impl DhcpService {
    pub fn new(state_dir: PathBuf, bus: crate::bus::Bus) -> DhcpService {
        DhcpService {
            state_dir,
            bus,
            servers: BTreeMap::new(),
        }
    }
}

impl Actor for DhcpService {
    type Context = Context<Self>;
}

/// Start, stop or reconfigure servers to match this config.
#[derive(Message)]
#[rtype(result = "()")]
pub struct DhcpConfigMsg(pub Arc<Config>);

/// `dhcp.leases {interface}`.
#[derive(Message)]
#[rtype(result = "Value")]
pub struct DhcpLeasesMsg {
    pub interface: Option<String>,
}

/// `dhcp.failover`.
#[derive(Message)]
#[rtype(result = "Value")]
pub struct DhcpFailoverMsg;

fn env_ms(name: &str) -> Option<Duration> {
    std::env::var(name)
        .ok()?
        .parse::<u64>()
        .ok()
        .map(Duration::from_millis)
}

fn parse_mac(s: &str) -> Option<Vec<u8>> {
    let v: Option<Vec<u8>> = s
        .split([':', '-'])
        .map(|p| u8::from_str_radix(p.trim(), 16).ok())
        .collect();
    v.filter(|m| m.len() == 6)
}

/// The servers the config asks for, keyed by interface.
pub fn specs(config: &Config) -> BTreeMap<String, Spec> {
    let mut out = BTreeMap::new();
    for d in config.dhcpd.iter().filter(|d| d.enabled) {
        let Some(iface) = config.interface(&d.interface) else {
            continue;
        };
        let Some((addr, prefix)) = iface.ipv4 else {
            continue;
        };
        if !iface.enabled || iface.device.is_empty() {
            continue;
        }
        let vips: Vec<_> = config
            .vips
            .iter()
            .filter(|v| v.interface == d.interface)
            .collect();
        let carp_v4 = vips
            .iter()
            .find_map(|v| match (v.mode == VipMode::Carp, v.addr) {
                (true, IpAddr::V4(a)) => Some(a),
                _ => None,
            });
        let routers = match d.gateway.as_deref() {
            Some("none") => None,
            Some(g) => g.parse::<Ipv4Addr>().ok().or(carp_v4).or(Some(addr)),
            None => carp_v4.or(Some(addr)),
        };
        let dns = if d.dns_servers.is_empty() {
            vec![carp_v4.unwrap_or(addr)]
        } else {
            d.dns_servers.clone()
        };
        let statics: Vec<StaticHost> = d
            .staticmaps
            .iter()
            .filter_map(|s| {
                Some(StaticHost {
                    mac: parse_mac(&s.mac)?,
                    addr: s.ipaddr?,
                    hostname: s.hostname.clone(),
                })
            })
            .collect();
        let mut excluded: Vec<Ipv4Addr> = vec![addr];
        excluded.extend(d.failover_peerip);
        excluded.extend(vips.iter().filter_map(|v| match v.addr {
            IpAddr::V4(a) => Some(a),
            _ => None,
        }));
        excluded.extend(statics.iter().map(|s| s.addr));
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(prefix.min(32)))
        };
        let net = Ipv4Addr::from(u32::from(addr) & mask);
        let bcast = Ipv4Addr::from(u32::from(addr) | !mask);
        let pool: Vec<Ipv4Addr> = match d.range {
            Some((from, to)) if u32::from(from) <= u32::from(to) => {
                let n = (u32::from(to) - u32::from(from)).min(1 << 20);
                (0..=n)
                    .map(|i| Ipv4Addr::from(u32::from(from) + i))
                    .filter(|a| {
                        in_subnet(*a, net, prefix)
                            && *a != net
                            && *a != bcast
                            && !excluded.contains(a)
                    })
                    .collect()
            }
            _ => Vec::new(),
        };
        // OPNsense: primary iff the first VIP on the interface whose subnet holds the peer is a
        // CARP VIP with advskew < 20.
        let role = match d.failover_peerip {
            Some(p) => {
                let m = vips.iter().find(|v| match v.addr {
                    IpAddr::V4(a) => in_subnet(p, a, v.prefix),
                    _ => false,
                });
                match m {
                    Some(v) if v.mode == VipMode::Carp && v.advskew < 20 => Role::Primary,
                    _ => Role::Secondary,
                }
            }
            None => Role::Primary,
        };
        let mode = match std::env::var("TANDEM_DHCP_HA_MODE").as_deref() {
            Ok("hot-standby") => Mode::HotStandby,
            _ => Mode::LoadBalancing,
        };
        let role = if mode == Mode::HotStandby && role == Role::Secondary {
            Role::Standby
        } else {
            role
        };
        let mut timing = Timing::default();
        if let Some(h) = env_ms("TANDEM_DHCP_HEARTBEAT_MS") {
            timing.heartbeat = h;
        }
        if let Some(m) = env_ms("TANDEM_DHCP_MAX_RESPONSE_DELAY_MS") {
            timing.max_response_delay = m;
        }
        let default_lease = d.default_lease_time.unwrap_or(7200);
        let max_lease = d.max_lease_time.unwrap_or(86400).max(default_lease);
        out.insert(
            d.interface.clone(),
            Spec {
                interface: d.interface.clone(),
                device: iface.device.clone(),
                addr,
                cfg: Cfg {
                    server_id: addr,
                    network: net,
                    prefix,
                    pool,
                    routers,
                    dns,
                    domain: d.domain.clone().or_else(|| {
                        (!config.system.domain.is_empty()).then(|| config.system.domain.clone())
                    }),
                    default_lease,
                    max_lease,
                    statics,
                    decline_hold: 600,
                    offer_hold: 30,
                },
                peer: d.failover_peerip,
                role,
                mode,
                timing,
                commit_delay: env_ms("TANDEM_DHCP_COMMIT_DELAY_MS").unwrap_or_default(),
            },
        );
    }
    out
}

impl Handler<DhcpConfigMsg> for DhcpService {
    type Result = ();
    fn handle(&mut self, m: DhcpConfigMsg, _: &mut Context<Self>) {
        let wanted = specs(&m.0);
        let db = self.state_dir.join("dhcp.db");
        let stale: Vec<String> = self
            .servers
            .iter()
            .filter(|(k, (s, _))| wanted.get(*k) != Some(s))
            .map(|(k, _)| k.clone())
            .collect();
        for k in stale {
            if let Some((_, a)) = self.servers.remove(&k) {
                tracing::info!(interface = %k, "dhcp server stopped (config changed)");
                a.do_send(StopMsg);
            }
        }
        for (k, spec) in wanted {
            if self.servers.contains_key(&k) {
                continue;
            }
            tracing::info!(interface = %k, pool = spec.cfg.pool.len(), role = ?spec.role, peer = ?spec.peer, "dhcp server starting");
            let addr = DhcpServer::new(spec.clone(), db.clone(), self.bus.clone()).start();
            self.servers.insert(k, (spec, addr));
        }
    }
}

impl Handler<DhcpLeasesMsg> for DhcpService {
    type Result = ResponseFuture<Value>;
    fn handle(&mut self, m: DhcpLeasesMsg, _: &mut Context<Self>) -> Self::Result {
        let addrs: Vec<Addr<DhcpServer>> = self
            .servers
            .iter()
            .filter(|(k, _)| m.interface.as_ref().is_none_or(|i| i == *k))
            .map(|(_, (_, a))| a.clone())
            .collect();
        Box::pin(async move {
            let mut out = Vec::new();
            for a in addrs {
                if let Ok(v) = a.send(LeasesMsg).await {
                    out.extend(v);
                }
            }
            json!({"leases": out})
        })
    }
}

impl Handler<DhcpFailoverMsg> for DhcpService {
    type Result = ResponseFuture<Value>;
    fn handle(&mut self, _: DhcpFailoverMsg, _: &mut Context<Self>) -> Self::Result {
        let addrs: Vec<Addr<DhcpServer>> = self.servers.values().map(|(_, a)| a.clone()).collect();
        Box::pin(async move {
            let mut list = Vec::new();
            for a in addrs {
                if let Ok(v) = a.send(FailoverMsg).await {
                    list.push(v);
                }
            }
            // The first interface's fields at top level (the common single-LAN case).
            let mut v = list
                .first()
                .cloned()
                .unwrap_or_else(|| json!({"state": null}));
            v["interfaces"] = json!(list);
            v
        })
    }
}

impl Handler<StopMsg> for DhcpService {
    type Result = ResponseActFuture<Self, ()>;
    fn handle(&mut self, _: StopMsg, _: &mut Context<Self>) -> Self::Result {
        let addrs: Vec<Addr<DhcpServer>> = std::mem::take(&mut self.servers)
            .into_values()
            .map(|(_, a)| a)
            .collect();
        Box::pin(
            async move {
                for a in addrs {
                    let _ = tokio::time::timeout(Duration::from_millis(500), a.send(StopMsg)).await;
                }
            }
            .into_actor(self)
            .map(|_, _, ctx| ctx.stop()),
        )
    }
}
