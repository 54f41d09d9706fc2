//! Semantic checks over the typed model. Each finding names the record's path and the reason.
//!
//! Rules for virtual IPs follow OPNsense's `Vip.php` (opnsense.md §1.3), with two deliberate
//! differences: a VHID must be unique per interface (OPNsense refuses it across interfaces too; we
//! warn), and /31 prefixes have no network/broadcast address (RFC 3021).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use super::model::{AddrKind, AddrSpec, Interface, Vip, VipMode, v4_contains, v4_mask};
use super::{Config, Finding, Severity};

/// FreeBSD/OpenBSD `CARP_KEY_LEN` is 20 bytes including the NUL that `strlcpy` writes.
pub const CARP_KEY_MAX: usize = 19;

/// Devices CARP cannot run on (OPNsense refuses loopback; the others have no multicast/L2).
const NO_CARP_DEVICES: [&str; 6] = ["lo", "ipsec", "l2tp", "ppp", "pppoe", "pptp"];

struct Out<'a> {
    v: &'a mut Vec<Finding>,
}

impl Out<'_> {
    fn error(&mut self, path: &str, message: String) {
        self.v.push(Finding {
            severity: Severity::Error,
            path: path.to_string(),
            message,
        });
    }
    fn warn(&mut self, path: &str, message: String) {
        self.v.push(Finding {
            severity: Severity::Warning,
            path: path.to_string(),
            message,
        });
    }
    fn has(&self, path: &str) -> bool {
        self.v.iter().any(|f| f.path == path)
    }
}

pub(crate) fn check(cfg: &Config, findings: &mut Vec<Finding>) {
    let mut o = Out { v: findings };
    system(cfg, &mut o);
    interfaces(cfg, &mut o);
    gateways(cfg, &mut o);
    vips(cfg, &mut o);
    filter(cfg, &mut o);
    nat(cfg, &mut o);
    dhcpd(cfg, &mut o);
    hasync(cfg, &mut o);
}

fn v4_net(ip: Ipv4Addr, prefix: u8) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(ip) & v4_mask(prefix))
}

fn v4_bcast(ip: Ipv4Addr, prefix: u8) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(ip) | !v4_mask(prefix))
}

/// `Some("network")`/`Some("broadcast")` if `ip` is that address of its /prefix (prefix ≤ 30).
fn v4_special(ip: Ipv4Addr, prefix: u8) -> Option<&'static str> {
    if prefix > 30 {
        None
    } else if ip == v4_net(ip, prefix) {
        Some("network")
    } else if ip == v4_bcast(ip, prefix) {
        Some("broadcast")
    } else {
        None
    }
}

fn system(cfg: &Config, o: &mut Out) {
    let s = &cfg.system;
    if s.hostname.is_empty() {
        o.warn("system/hostname", "hostname is empty".into());
    }
    if s.webgui_protocol != "http" && s.webgui_protocol != "https" {
        o.error(
            "system/webgui/protocol",
            format!(
                "webgui protocol {:?} is neither http nor https (the sync URL is built from it)",
                s.webgui_protocol
            ),
        );
    }
    let mut seen = BTreeMap::new();
    for u in &s.users {
        if u.name.is_empty() {
            o.error(&u.path, "user has no name".into());
        } else if let Some(first) = seen.insert(u.name.as_str(), u.path.as_str()) {
            o.error(
                &u.path,
                format!("user name {} is already used by {first}", u.name),
            );
        }
    }
}

fn interfaces(cfg: &Config, o: &mut Out) {
    let mut devices: BTreeMap<&str, &str> = BTreeMap::new();
    for i in &cfg.interfaces {
        if i.device.is_empty() {
            if i.enabled {
                o.error(&i.path, "enabled interface has no device (if)".into());
            }
        } else if let Some(first) = devices.insert(i.device.as_str(), i.key.as_str()) {
            o.error(
                &i.path,
                format!(
                    "device {} is already assigned to interface {first}",
                    i.device
                ),
            );
        }
        // Current configs carry `<lo0>` with 127.0.0.1/8 and ::1/128.
        let loopback = i.device.starts_with("lo");
        if let Some((ip, p)) = i.ipv4 {
            let sp = format!("{}/subnet", i.path);
            if p == 0 {
                o.error(&sp, "subnet 0 is out of range 1-32".into());
            } else if let Some(what) = v4_special(ip, p) {
                o.error(
                    &format!("{}/ipaddr", i.path),
                    format!("{ip} is the {what} address of {}/{p}", v4_net(ip, p)),
                );
            }
            if ip.is_unspecified()
                || ip.is_multicast()
                || ip.is_broadcast()
                || (ip.is_loopback() && !loopback)
            {
                o.error(
                    &format!("{}/ipaddr", i.path),
                    format!("{ip} cannot be an interface address"),
                );
            }
        }
        if let Some((ip, p)) = i.ipv6 {
            if p == 0 {
                o.error(
                    &format!("{}/subnetv6", i.path),
                    "subnetv6 0 is out of range 1-128".into(),
                );
            }
            if ip.is_unspecified() || ip.is_multicast() || (ip.is_loopback() && !loopback) {
                o.error(
                    &format!("{}/ipaddrv6", i.path),
                    format!("{ip} cannot be an interface address"),
                );
            }
        }
        if let Some(m) = &i.ipv4_mode
            && !["dhcp", "pppoe", "pptp", "l2tp", "ppp"].contains(&m.as_str())
        {
            o.warn(
                &format!("{}/ipaddr", i.path),
                format!("unknown IPv4 configuration type {m:?}"),
            );
        }
        for (gw, field) in [(&i.gateway, "gateway"), (&i.gatewayv6, "gatewayv6")] {
            if let Some(gw) = gw
                && !cfg.gateways.iter().any(|g| &g.name == gw)
            {
                o.error(
                    &format!("{}/{field}", i.path),
                    format!("gateway {gw} is not defined in gateways"),
                );
            }
        }
    }
    // Overlapping IPv4 subnets on two interfaces make routing and the DHCP subnet ambiguous.
    let v4: Vec<(&Interface, Ipv4Addr, u8)> = cfg
        .interfaces
        .iter()
        .filter(|i| i.enabled)
        .filter_map(|i| i.ipv4.filter(|(_, p)| *p > 0).map(|(a, p)| (i, a, p)))
        .collect();
    for (n, (a, aip, ap)) in v4.iter().enumerate() {
        for (b, bip, bp) in v4.iter().skip(n + 1) {
            let p = (*ap).min(*bp);
            if v4_contains(*aip, p, *bip) {
                o.warn(
                    &b.path,
                    format!(
                        "subnet {}/{bp} overlaps {}/{ap} of interface {}",
                        v4_net(*bip, *bp),
                        v4_net(*aip, *ap),
                        a.key
                    ),
                );
            }
        }
    }
}

fn gateways(cfg: &Config, o: &mut Out) {
    let mut names = BTreeMap::new();
    for g in &cfg.gateways {
        if g.name.is_empty() {
            o.error(&g.path, "gateway has no name".into());
        } else if let Some(first) = names.insert(g.name.as_str(), g.path.as_str()) {
            o.error(
                &g.path,
                format!("gateway name {} is already used by {first}", g.name),
            );
        }
        match cfg.interface(&g.interface) {
            None => o.error(
                &g.path,
                format!("interface {:?} does not exist", g.interface),
            ),
            Some(i) => {
                if let (Some(IpAddr::V4(gw)), Some((ip, p))) = (g.address, i.ipv4)
                    && !v4_contains(ip, p, gw)
                {
                    o.warn(
                        &g.path,
                        format!(
                            "gateway {gw} is outside interface {} subnet {}/{p}",
                            i.key,
                            v4_net(ip, p)
                        ),
                    );
                }
            }
        }
        match (g.ipprotocol.as_str(), g.address) {
            ("inet6", Some(a @ IpAddr::V4(_))) => o.error(
                &g.path,
                format!("gateway {a} is IPv4 but ipprotocol is inet6"),
            ),
            ("inet", Some(a @ IpAddr::V6(_))) => o.error(
                &g.path,
                format!("gateway {a} is IPv6 but ipprotocol is inet"),
            ),
            _ => {}
        }
    }
}

fn no_carp_device(i: &Interface) -> bool {
    i.key == "lo0"
        || NO_CARP_DEVICES.iter().any(|p| {
            i.device
                .strip_prefix(p)
                .is_some_and(|rest| rest.is_empty() || rest.bytes().all(|b| b.is_ascii_digit()))
        })
}

fn vips(cfg: &Config, o: &mut Out) {
    // (interface, vhid) -> path of the first CARP VIP with it.
    let mut carp: BTreeMap<(&str, u8), &str> = BTreeMap::new();
    let mut carp_any: BTreeMap<u8, &Vip> = BTreeMap::new();
    for v in &cfg.vips {
        if v.mode == VipMode::Carp
            && let Some(vhid) = v.vhid
        {
            carp.entry((v.interface.as_str(), vhid)).or_insert(&v.path);
            carp_any.entry(vhid).or_insert(v);
        }
    }
    let mut carp_seen: BTreeSet<(&str, u8)> = BTreeSet::new();
    let mut addrs: BTreeMap<IpAddr, &str> = BTreeMap::new();
    for v in &cfg.vips {
        let iface = cfg.interface(&v.interface);
        match iface {
            None if v.interface.is_empty() => o.error(&v.path, "vip has no interface".into()),
            None => o.error(&v.path, format!("interface {} does not exist", v.interface)),
            Some(i) if !i.enabled => {
                o.error(&v.path, format!("interface {} is not enabled", v.interface))
            }
            Some(_) => {}
        }
        if let VipMode::Other(m) = &v.mode {
            o.error(
                &format!("{}/mode", v.path),
                format!("unknown vip mode {m:?} (carp, ipalias, proxyarp)"),
            );
        }
        if v.mode == VipMode::Carp {
            if v.password.is_empty() {
                o.error(
                    &v.path,
                    "carp vip needs a password shared by both nodes".into(),
                );
            } else {
                let key_len = v.password.bytes().filter(|b| *b != b' ').count();
                if v.password.contains(' ') {
                    o.warn(
                        &v.path,
                        "carp password contains spaces; OPNsense removes them before \
                         configuring the key, and so does tandem"
                            .into(),
                    );
                }
                if key_len > CARP_KEY_MAX {
                    o.warn(
                        &v.path,
                        format!(
                            "carp password is {key_len} bytes; the BSD carp key is at most \
                             {CARP_KEY_MAX} bytes (CARP_KEY_LEN 20 with its NUL), so FreeBSD \
                             silently uses only the first {CARP_KEY_MAX} and ucarp refuses it"
                        ),
                    );
                }
            }
            match v.vhid {
                None if !o.has(&format!("{}/vhid", v.path)) => {
                    o.error(&v.path, "carp vip needs a vhid (1-255)".into())
                }
                None => {}
                Some(vhid) => {
                    if !carp_seen.insert((v.interface.as_str(), vhid)) {
                        o.error(
                            &v.path,
                            format!("vhid {vhid} is used twice on interface {}", v.interface),
                        );
                    } else if let Some(other) = carp_any.get(&vhid)
                        && other.interface != v.interface
                    {
                        o.warn(
                            &v.path,
                            format!(
                                "vhid {vhid} is also used on interface {} ({}); OPNsense \
                                 refuses a vhid on two interfaces",
                                other.interface, other.path
                            ),
                        );
                    }
                }
            }
        } else if v.mode == VipMode::IpAlias
            && let Some(vhid) = v.vhid
            && !carp.contains_key(&(v.interface.as_str(), vhid))
        {
            o.error(
                &v.path,
                format!(
                    "vhid {vhid} must be defined on interface {} as a CARP VIP first",
                    v.interface
                ),
            );
        }
        let with_vhid = v.mode == VipMode::Carp || (v.mode == VipMode::IpAlias && v.vhid.is_some());
        if with_vhid && let Some(i) = iface.filter(|i| no_carp_device(i)) {
            o.error(
                &v.path,
                format!(
                    "carp is not possible on interface {} (device {})",
                    i.key, i.device
                ),
            );
        }
        match v.addr {
            IpAddr::V4(_) if v.peer6.is_some() => o.error(
                &v.path,
                "peer6 (IPv6 unicast peer) is set on an IPv4 vip".into(),
            ),
            IpAddr::V6(_) if v.peer.is_some() => o.error(
                &v.path,
                "peer (IPv4 unicast peer) is set on an IPv6 vip".into(),
            ),
            _ => {}
        }
        if let IpAddr::V4(a) = v.addr {
            if matches!(v.mode, VipMode::Carp | VipMode::IpAlias)
                && let Some(what) = v4_special(a, v.prefix)
            {
                o.error(
                    &v.path,
                    format!(
                        "{a} is the {what} address of {}/{}",
                        v4_net(a, v.prefix),
                        v.prefix
                    ),
                );
            }
            if let Some((ip, p)) = iface.and_then(|i| i.ipv4) {
                if v.mode == VipMode::Carp && !v4_contains(ip, p, a) {
                    o.warn(
                        &v.path,
                        format!(
                            "{a} is outside interface {} subnet {}/{p}",
                            v.interface,
                            v4_net(ip, p)
                        ),
                    );
                } else if v.mode == VipMode::Carp && v.prefix != p {
                    o.warn(
                        &v.path,
                        format!(
                            "carp vip prefix /{} differs from interface {} prefix /{p}; \
                             DHCP failover then fails with \"peer holds all free leases\"",
                            v.prefix, v.interface
                        ),
                    );
                }
            }
        }
        if let Some(first) = addrs.insert(v.addr, &v.path) {
            o.error(
                &v.path,
                format!("address {} is already used by {first}", v.addr),
            );
        }
        if let Some(i) = cfg.interfaces.iter().find(|i| {
            i.ipv4.map(|(a, _)| IpAddr::V4(a)) == Some(v.addr)
                || i.ipv6.map(|(a, _)| IpAddr::V6(a)) == Some(v.addr)
        }) {
            o.error(
                &v.path,
                format!("address {} is the address of interface {}", v.addr, i.key),
            );
        }
        if v.mode != VipMode::Carp && (v.peer.is_some() || v.peer6.is_some()) {
            o.warn(&v.path, "peer/peer6 are only used by carp vips".into());
        }
    }
}

fn check_addr_ref(cfg: &Config, o: &mut Out, path: &str, side: &str, a: &AddrSpec) {
    let name = match &a.kind {
        AddrKind::Network(n) => n.as_str(),
        AddrKind::Address(n) => n.strip_suffix("ip").unwrap_or(""),
        AddrKind::Any => return,
    };
    let looks_like_key = name == "wan"
        || name == "lan"
        || name
            .strip_prefix("opt")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    if looks_like_key && cfg.interface(name).is_none() {
        o.warn(
            path,
            format!(
                "{side} names interface {name}, which does not exist; OPNsense disables such a rule"
            ),
        );
    }
}

fn ports_need_tcp_udp(o: &mut Out, path: &str, protocol: Option<&str>, a: &AddrSpec, side: &str) {
    let tcp_udp = matches!(protocol, Some("tcp" | "udp" | "tcp/udp"));
    if let Some(p) = &a.port
        && !tcp_udp
    {
        o.warn(
            path,
            format!(
                "{side} port {p} is ignored because the protocol is {}",
                protocol.unwrap_or("any")
            ),
        );
    }
}

fn filter(cfg: &Config, o: &mut Out) {
    for r in &cfg.filter_rules {
        for i in &r.interfaces {
            if cfg.interface(i).is_none() {
                o.error(&r.path, format!("interface {i} does not exist"));
            }
        }
        check_addr_ref(cfg, o, &r.path, "source", &r.source);
        check_addr_ref(cfg, o, &r.path, "destination", &r.destination);
        ports_need_tcp_udp(o, &r.path, r.protocol.as_deref(), &r.source, "source");
        ports_need_tcp_udp(
            o,
            &r.path,
            r.protocol.as_deref(),
            &r.destination,
            "destination",
        );
    }
}

fn nat(cfg: &Config, o: &mut Out) {
    for r in cfg.nat.rules.iter().chain(&cfg.snat_rules) {
        if r.interface.is_empty() {
            o.error(&r.path, "rule has no interface".into());
        } else if cfg.interface(&r.interface).is_none() {
            o.error(&r.path, format!("interface {} does not exist", r.interface));
        }
        check_addr_ref(cfg, o, &r.path, "source", &r.source);
        check_addr_ref(cfg, o, &r.path, "destination", &r.destination);
        let Some(t) = r.target.as_deref() else {
            continue;
        };
        if t == "other-subnet" {
            match r.target_ip.as_deref().map(str::parse::<IpAddr>) {
                None => o.error(&r.path, "target other-subnet needs a targetip".into()),
                Some(Err(_)) => o.error(
                    &format!("{}/targetip", r.path),
                    format!(
                        "targetip {:?} is not a valid IP address",
                        r.target_ip.as_deref().unwrap_or("")
                    ),
                ),
                Some(Ok(_)) => {}
            }
        } else if let Ok(ip) = t.parse::<IpAddr>() {
            let ours = cfg.vips.iter().any(|v| v.addr == ip)
                || cfg.interfaces.iter().any(|i| {
                    i.ipv4.map(|(a, _)| IpAddr::V4(a)) == Some(ip)
                        || i.ipv6.map(|(a, _)| IpAddr::V6(a)) == Some(ip)
                });
            if !ours && !r.nonat && !r.disabled {
                o.warn(
                    &r.path,
                    format!("target {ip} is neither a virtual IP nor an interface address"),
                );
            }
        } else if t
            .chars()
            .all(|c| c.is_ascii_digit() || c == '.' || c == ':')
        {
            o.error(
                &format!("{}/target", r.path),
                format!("target {t:?} is not a valid IP address"),
            );
        } else if let Some(k) = t.strip_suffix("ip")
            && (k == "wan" || k == "lan" || k.starts_with("opt"))
            && cfg.interface(k).is_none()
        {
            o.error(
                &format!("{}/target", r.path),
                format!("target {t} names interface {k}, which does not exist"),
            );
        }
    }
}

fn dhcpd(cfg: &Config, o: &mut Out) {
    for d in &cfg.dhcpd {
        let Some(i) = cfg.interface(&d.interface) else {
            if d.enabled {
                o.error(&d.path, format!("interface {} does not exist", d.interface));
            }
            continue;
        };
        let Some((ip, p)) = i.ipv4.filter(|(_, p)| *p > 0) else {
            if d.enabled {
                o.error(
                    &d.path,
                    format!(
                        "dhcp server needs a static IPv4 address on interface {}",
                        d.interface
                    ),
                );
            }
            continue;
        };
        let net = format!("{}/{p}", v4_net(ip, p));
        if let Some((from, to)) = d.range {
            let rp = format!("{}/range", d.path);
            if u32::from(from) > u32::from(to) {
                o.error(&rp, format!("range start {from} is after its end {to}"));
            }
            for a in [from, to] {
                if !v4_contains(ip, p, a) {
                    o.error(
                        &rp,
                        format!(
                            "range {from}-{to} is not inside interface {} subnet {net}",
                            d.interface
                        ),
                    );
                    break;
                }
            }
            if p <= 30 {
                let (n, b) = (u32::from(v4_net(ip, p)), u32::from(v4_bcast(ip, p)));
                if u32::from(from) == n || u32::from(to) == b {
                    o.error(
                        &rp,
                        format!("range {from}-{to} includes the network or broadcast address"),
                    );
                }
            }
        } else if d.enabled {
            o.warn(&d.path, "dhcp server is enabled but has no range".into());
        }
        if let Some(peer) = d.failover_peerip {
            if !v4_contains(ip, p, peer) {
                o.error(
                    &format!("{}/failover_peerip", d.path),
                    format!(
                        "failover peer {peer} is not inside interface {} subnet {net}",
                        d.interface
                    ),
                );
            } else if peer == ip {
                o.error(
                    &format!("{}/failover_peerip", d.path),
                    format!(
                        "failover peer {peer} is this node's own address on {}",
                        d.interface
                    ),
                );
            }
            let matching = cfg.vips.iter().any(|v| {
                v.interface == d.interface
                    && matches!(v.addr, IpAddr::V4(a) if v4_contains(a, v.prefix, peer))
            });
            if !matching {
                o.warn(
                    &d.path,
                    format!(
                        "no virtual IP on {} contains failover peer {peer}, so this node is \
                         always the secondary",
                        d.interface
                    ),
                );
            }
        }
        if let Some(g) = d.gateway.as_deref()
            && g != "none"
            && g.parse::<Ipv4Addr>().is_err()
        {
            o.error(
                &format!("{}/gateway", d.path),
                format!("gateway {g:?} is neither an IPv4 address nor none"),
            );
        }
        if let (Some(def), Some(max)) = (d.default_lease_time, d.max_lease_time)
            && def > max
        {
            o.warn(
                &d.path,
                format!("default lease time {def} is longer than max lease time {max}"),
            );
        }
        let mut macs = BTreeMap::new();
        for s in &d.staticmaps {
            let octets: Vec<&str> = s.mac.split(':').collect();
            if octets.len() != 6
                || !octets
                    .iter()
                    .all(|x| x.len() == 2 && x.bytes().all(|b| b.is_ascii_hexdigit()))
            {
                o.error(
                    &format!("{}/mac", s.path),
                    format!("mac {:?} is not a MAC address", s.mac),
                );
            } else if let Some(first) = macs.insert(s.mac.to_ascii_lowercase(), s.path.as_str()) {
                o.error(
                    &s.path,
                    format!("mac {} is already mapped by {first}", s.mac),
                );
            }
            if let Some(a) = s.ipaddr
                && !v4_contains(ip, p, a)
            {
                o.error(
                    &format!("{}/ipaddr", s.path),
                    format!("{a} is not inside interface {} subnet {net}", d.interface),
                );
            }
        }
    }
}

fn hasync(cfg: &Config, o: &mut Out) {
    let h = &cfg.hasync;
    if let Some(k) = &h.pfsync_interface {
        match cfg.interface(k) {
            None => o.error(
                "hasync/pfsyncinterface",
                format!("interface {k} does not exist"),
            ),
            Some(i) => {
                if let (Some(IpAddr::V4(peer)), Some((ip, p))) = (h.pfsync_peer, i.ipv4)
                    && !v4_contains(ip, p, peer)
                {
                    o.warn(
                        "hasync/pfsyncpeerip",
                        format!(
                            "pfsync peer {peer} is outside interface {k} subnet {}/{p}",
                            v4_net(ip, p)
                        ),
                    );
                }
            }
        }
    }
    if let Some(IpAddr::V6(a)) = h.pfsync_peer {
        o.warn(
            "hasync/pfsyncpeerip",
            format!("pfsync peer {a} is IPv6; only an IPv4 peer is used, states go to multicast 224.0.0.240"),
        );
    }
    if let Some(v) = h.pfsync_version
        && v != 1301
        && v != 1400
    {
        o.error(
            "hasync/pfsyncversion",
            format!("pfsyncversion {v} is not 1301 or 1400"),
        );
    }
    if let Some(t) = &h.synchronize_to {
        let is_url = t.starts_with("http://") || t.starts_with("https://");
        match t.parse::<IpAddr>() {
            Ok(ip) => {
                let own = cfg.interfaces.iter().any(|i| {
                    i.ipv4.map(|(a, _)| IpAddr::V4(a)) == Some(ip)
                        || i.ipv6.map(|(a, _)| IpAddr::V6(a)) == Some(ip)
                });
                if own {
                    o.error(
                        "hasync/synchronizetoip",
                        format!("synchronizetoip {ip} is this node's own address"),
                    );
                }
            }
            Err(_) if is_url => {}
            Err(_) => o.error(
                "hasync/synchronizetoip",
                format!("synchronizetoip {t:?} is neither an IP address nor an http(s) URL"),
            ),
        }
        if h.password.is_none() {
            o.warn(
                "hasync/password",
                "config sync target is set but the remote password is empty".into(),
            );
        }
    }
}
