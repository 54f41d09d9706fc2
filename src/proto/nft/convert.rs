//! `config::Config` → the renderer's IR and interface view.
//!
//! Errors name the config path of the rule (`filter/rule[3]: unknown interface opt9`). Disabled
//! rules are skipped. Aliases are not supported: a source, destination, port or NAT target that is
//! not an interface reference, an address, a network or a number is an error.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::ir::{
    Action, AddrMatch, Automatic, Cidr, Direction, Endpoint, FilterSet, IfView, IpVersion, NatMode,
    NatRule, NatSet, NatTarget, PortRange, Proto, Rule, View,
};
use super::{Error, Reason, Ruleset, render_filter, render_nat};
use crate::config::Config;
use crate::config::model::{self, AddrKind, AddrSpec, VipMode};

/// `ipaddr` modes that get their address (and a default route) from upstream: WAN-like.
const DYNAMIC_V4: [&str; 4] = ["dhcp", "pppoe", "pptp", "l2tp"];

/// The interfaces as the renderer sees them.
pub fn view(cfg: &Config) -> View {
    let interfaces = cfg
        .interfaces
        .iter()
        .map(|i| {
            let vips = cfg
                .vips
                .iter()
                .filter(|v| v.interface == i.key)
                .map(|v| v.addr)
                .collect();
            IfView {
                key: i.key.clone(),
                device: i.device.clone(),
                v4: i.ipv4,
                v6: i.ipv6,
                vips,
                gateway: i.gateway.as_deref().is_some_and(|g| !g.is_empty())
                    || i.ipv4_mode
                        .as_deref()
                        .is_some_and(|m| DYNAMIC_V4.contains(&m)),
            }
        })
        .collect();
    View { interfaces }
}

fn is_key(cfg: &Config, k: &str) -> bool {
    cfg.interfaces.iter().any(|i| i.key == k)
}

fn endpoint(cfg: &Config, path: &str, a: &AddrSpec) -> Result<Endpoint, Error> {
    let value = |v: &str| -> Result<AddrMatch, Error> {
        let v = v.trim();
        if v == "(self)" {
            return Ok(AddrMatch::SelfAddrs);
        }
        if is_key(cfg, v) {
            return Ok(AddrMatch::IfNet(v.to_string()));
        }
        if let Some(k) = v.strip_suffix("ip")
            && is_key(cfg, k)
        {
            return Ok(AddrMatch::IfAddr(k.to_string()));
        }
        let mut nets = Vec::new();
        for part in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            nets.push(
                Cidr::parse(part)
                    .ok_or_else(|| Error::new(path, Reason::BadAddress(part.to_string())))?,
            );
        }
        if nets.is_empty() {
            return Err(Error::new(path, Reason::BadAddress(v.to_string())));
        }
        Ok(AddrMatch::Nets(nets))
    };
    let addr = match &a.kind {
        AddrKind::Any => AddrMatch::Any,
        AddrKind::Network(v) | AddrKind::Address(v) => value(v)?,
    };
    let ports = match a.port.as_deref().map(str::trim) {
        None | Some("") | Some("any") => Vec::new(),
        Some(p) => PortRange::parse_list(p)
            .ok_or_else(|| Error::new(path, Reason::BadPort(p.to_string())))?,
    };
    Ok(Endpoint {
        addr,
        not: a.not,
        ports,
    })
}

fn proto(path: &str, p: &Option<String>, has_ports: bool) -> Result<Proto, Error> {
    let p = match p.as_deref() {
        None => Proto::Any,
        Some(s) => {
            Proto::parse(s).ok_or_else(|| Error::new(path, Reason::BadProtocol(s.into())))?
        }
    };
    // A port with protocol any means tcp/udp.
    Ok(if p == Proto::Any && has_ports {
        Proto::TcpUdp
    } else {
        p
    })
}

fn rule(cfg: &Config, r: &model::FilterRule) -> Result<Rule, Error> {
    let path = r.path.as_str();
    let src = endpoint(cfg, path, &r.source)?;
    let dst = endpoint(cfg, path, &r.destination)?;
    let has_ports = !src.ports.is_empty() || !dst.ports.is_empty();
    Ok(Rule {
        path: r.path.clone(),
        descr: r.descr.clone(),
        action: match r.action {
            model::RuleAction::Pass => Action::Pass,
            model::RuleAction::Block => Action::Block,
            model::RuleAction::Reject => Action::Reject,
        },
        quick: r.quick,
        log: r.log,
        interfaces: r.interfaces.clone(),
        direction: match r.direction {
            model::Direction::In => Direction::In,
            model::Direction::Out => Direction::Out,
            model::Direction::Any => Direction::Any,
        },
        ipver: match r.ipprotocol {
            model::IpProtocol::Inet => IpVersion::Inet,
            model::IpProtocol::Inet6 => IpVersion::Inet6,
            model::IpProtocol::Inet46 => IpVersion::Inet46,
        },
        proto: proto(path, &r.protocol, has_ports)?,
        src,
        dst,
    })
}

fn push_unique(v: &mut Vec<IpAddr>, a: IpAddr) {
    if !v.contains(&a) {
        v.push(a);
    }
}

/// The host of `synchronizetoip`: an address, or the host of a URL (`https://10.0.0.2:443/`).
fn sync_host(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    if let Ok(a) = s.parse() {
        return Some(a);
    }
    let rest = s.split_once("://").map_or(s, |(_, r)| r);
    let host = rest.split('/').next()?;
    if let Some(v6) = host.strip_prefix('[') {
        return v6.split(']').next()?.parse().ok();
    }
    host.split(':').next()?.parse().ok()
}

/// The webgui (and XML-RPC) port: configured, or the protocol's default.
pub fn webgui_port(cfg: &Config) -> u16 {
    cfg.system
        .webgui_port
        .unwrap_or(if cfg.system.webgui_protocol == "http" {
            80
        } else {
            443
        })
}

fn automatic(cfg: &Config) -> Automatic {
    let mut a = Automatic {
        webgui_port: webgui_port(cfg),
        ..Automatic::default()
    };
    for v in cfg.vips.iter().filter(|v| v.mode == VipMode::Carp) {
        a.carp = true;
        if let Some(p) = v.peer
            && p != Ipv4Addr::new(224, 0, 0, 18)
        {
            push_unique(&mut a.carp_peers, IpAddr::V4(p));
        }
        if let Some(p) = v.peer6
            && p != Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12)
        {
            push_unique(&mut a.carp_peers, IpAddr::V6(p));
        }
    }
    for d in cfg
        .dhcpd
        .iter()
        .filter(|d| d.enabled && is_key(cfg, &d.interface))
    {
        a.dhcp_server.push(d.interface.clone());
        if let Some(p) = d.failover_peerip {
            a.dhcp_failover.push((d.interface.clone(), IpAddr::V4(p)));
        }
    }
    for i in &cfg.interfaces {
        if i.ipv4_mode.as_deref() == Some("dhcp") {
            a.dhcp_client4.push(i.key.clone());
        }
        if matches!(i.ipv6_mode.as_deref(), Some("dhcp6" | "dhcpv6")) {
            a.dhcp_client6.push(i.key.clone());
        }
    }
    let hs = &cfg.hasync;
    if let Some(h) = hs.synchronize_to.as_deref().and_then(sync_host) {
        push_unique(&mut a.ha_sync_peers, h);
    }
    // The backup has no sync target but receives the master's pushes: its pfsync peer is the
    // master (the how-to's layout). Multicast pfsync peers are not hosts.
    if let Some(p) = hs.pfsync_peer
        && !p.is_multicast()
    {
        push_unique(&mut a.ha_sync_peers, p);
    }
    a.pfsync = hs
        .pfsync_interface
        .clone()
        .filter(|k| !k.is_empty() && is_key(cfg, k));
    let noantilockout = cfg.doc.root().at("system/webgui/noantilockout").is_some();
    if !noantilockout && is_key(cfg, "lan") {
        a.anti_lockout = Some("lan".to_string());
    }
    a
}

/// The filter IR of a config.
pub fn filter_set(cfg: &Config) -> Result<FilterSet, Error> {
    let mut rules = Vec::new();
    for r in cfg.filter_rules.iter().filter(|r| !r.disabled) {
        rules.push(rule(cfg, r)?);
    }
    Ok(FilterSet {
        auto: automatic(cfg),
        rules,
    })
}

fn nat_rule(cfg: &Config, r: &model::NatRule) -> Result<NatRule, Error> {
    let path = r.path.as_str();
    let src = endpoint(cfg, path, &r.source)?;
    let dst = endpoint(cfg, path, &r.destination)?;
    let has_ports = !src.ports.is_empty() || !dst.ports.is_empty();
    let bad = |t: &str| Error::new(path, Reason::BadTarget(t.to_string()));
    let target = match r.target.as_deref().map(str::trim) {
        None | Some("") => NatTarget::Masquerade,
        Some("other-subnet") => {
            let ip = r.target_ip.as_deref().unwrap_or("");
            let a: IpAddr = ip.trim().parse().map_err(|_| bad(ip))?;
            let full = if a.is_ipv4() { 32 } else { 128 };
            let prefix = match r.target_subnet {
                None | Some(0) => full,
                Some(p) => p,
            };
            NatTarget::Subnet(Cidr::new(a, prefix).ok_or_else(|| bad(ip))?)
        }
        Some(t) => {
            if let Some(k) = t.strip_suffix("ip")
                && is_key(cfg, k)
            {
                NatTarget::IfAddr(k.to_string())
            } else if let Ok(a) = t.parse::<IpAddr>() {
                NatTarget::Addr(a)
            } else if t.contains('/') {
                NatTarget::Subnet(Cidr::parse(t).ok_or_else(|| bad(t))?)
            } else {
                return Err(bad(t));
            }
        }
    };
    Ok(NatRule {
        path: r.path.clone(),
        descr: r.descr.clone(),
        interface: r.interface.clone(),
        proto: proto(path, &r.protocol, has_ports)?,
        src,
        dst,
        target,
        static_port: r.static_port,
        nonat: r.nonat,
    })
}

/// The NAT IR of a config.
pub fn nat_set(cfg: &Config) -> Result<NatSet, Error> {
    let mode = match cfg.nat.mode {
        model::NatMode::Automatic => NatMode::Automatic,
        model::NatMode::Hybrid => NatMode::Hybrid,
        model::NatMode::Advanced => NatMode::Manual,
        model::NatMode::Disabled => NatMode::Disabled,
    };
    let mut rules = Vec::new();
    if matches!(mode, NatMode::Hybrid | NatMode::Manual) {
        for r in cfg.nat.rules.iter().filter(|r| !r.disabled) {
            rules.push(nat_rule(cfg, r)?);
        }
    }
    Ok(NatSet { mode, rules })
}

/// Convert and render `table inet tandem_filter`.
pub fn filter(cfg: &Config) -> Result<Ruleset, Error> {
    render_filter(&filter_set(cfg)?, &view(cfg))
}

/// Convert and render `table ip tandem_nat` (and `ip6`).
pub fn nat(cfg: &Config) -> Result<Ruleset, Error> {
    render_nat(&nat_set(cfg)?, &view(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_hosts() {
        let h = |s| sync_host(s);
        assert_eq!(h("10.0.0.2"), Some("10.0.0.2".parse().unwrap()));
        assert_eq!(
            h("https://10.0.0.2:444/"),
            Some("10.0.0.2".parse().unwrap())
        );
        assert_eq!(h("http://10.0.0.2"), Some("10.0.0.2".parse().unwrap()));
        assert_eq!(
            h("https://[fd00::2]:443/"),
            Some("fd00::2".parse().unwrap())
        );
        assert_eq!(h("https://backup.example/"), None);
    }
}
