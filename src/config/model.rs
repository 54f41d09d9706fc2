//! The typed view of `config.xml`: what tandem reads from each section, legacy (2015) and current
//! element names both accepted.
//!
//! Reading never fails on a bad value: a field that cannot be parsed, or is out of its range, is left
//! at its default (or the record is skipped when it cannot exist without it) and a [`Finding`] with
//! the element's path is recorded. Paths are `/`-separated element names from below the root, with a
//! 1-based `[n]` index on list records (`virtualip/vip[2]`, `filter/rule[4]`).
//!
//! Boolean flags follow PHP's `!empty()` as OPNsense does: an absent or empty element, or `0`, is
//! false, anything else is true. Only the legacy address markers `<any/>` and `<not/>` count by their
//! mere presence (OPNsense tests them with `isset()`).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::dom::Element;
use super::{Finding, Severity};

/// `<system>`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct System {
    pub hostname: String,
    pub domain: String,
    pub users: Vec<User>,
    /// `system/webgui/protocol`, `https` when empty. The XML-RPC sync URL uses it.
    pub webgui_protocol: String,
    /// `system/webgui/port`; `None` = the protocol's default port.
    pub webgui_port: Option<u16>,
}

/// `system/user`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub path: String,
    pub name: String,
    /// As stored: bcrypt (`$2y$`/`$2b$`) in current configs, SHA-512 crypt (`$6$`) in old ones.
    pub password_hash: String,
    pub uid: Option<u32>,
    pub scope: Option<String>,
}

/// One child of `<interfaces>` (`wan`, `lan`, `opt1`, ...).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    /// The element name: `wan`, `lan`, `opt1`.
    pub key: String,
    pub path: String,
    pub descr: Option<String>,
    /// `<if>`: the kernel device (`em0`).
    pub device: String,
    pub enabled: bool,
    /// Static IPv4 address and prefix length (`ipaddr` + `subnet`).
    pub ipv4: Option<(Ipv4Addr, u8)>,
    /// `ipaddr` when it is not an address: `dhcp`, `pppoe`, ...
    pub ipv4_mode: Option<String>,
    /// Static IPv6 address and prefix length (`ipaddrv6` + `subnetv6`).
    pub ipv6: Option<(Ipv6Addr, u8)>,
    /// `ipaddrv6` when it is not an address: `dhcp6`, `dhcpv6`, `track6`, `slaac`, ...
    pub ipv6_mode: Option<String>,
    /// Name of the IPv4 gateway (`gateways/gateway_item/name`).
    pub gateway: Option<String>,
    pub gatewayv6: Option<String>,
}

/// `gateways/gateway_item` (legacy) or `OPNsense/Gateways/gateway_item` (current).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gateway {
    pub path: String,
    pub uuid: Option<String>,
    pub name: String,
    pub interface: String,
    /// The gateway address; `None` when `dynamic` or unset.
    pub address: Option<IpAddr>,
    pub dynamic: bool,
    /// `inet` or `inet6` as written (empty = inet).
    pub ipprotocol: String,
    pub defaultgw: bool,
    pub monitor_disable: bool,
    pub disabled: bool,
    pub descr: String,
}

/// `virtualip/vip` mode.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum VipMode {
    Carp,
    IpAlias,
    ProxyArp,
    Other(String),
}

impl VipMode {
    fn parse(s: &str) -> VipMode {
        match s {
            "carp" => VipMode::Carp,
            // The MVC model's default mode is ipalias.
            "ipalias" | "" => VipMode::IpAlias,
            "proxyarp" => VipMode::ProxyArp,
            o => VipMode::Other(o.to_string()),
        }
    }
}

/// `virtualip/vip`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vip {
    /// `virtualip/vip[2]`, 1-based.
    pub path: String,
    pub uuid: Option<String>,
    pub mode: VipMode,
    /// Interface key (`lan`), not the device.
    pub interface: String,
    /// `<subnet>`: the address itself.
    pub addr: IpAddr,
    /// `<subnet_bits>`.
    pub prefix: u8,
    pub vhid: Option<u8>,
    pub advbase: u8,
    pub advskew: u8,
    pub password: String,
    /// Unicast CARP peer (IPv4).
    pub peer: Option<Ipv4Addr>,
    /// Unicast CARP peer (IPv6).
    pub peer6: Option<Ipv6Addr>,
    pub nosync: bool,
    pub descr: String,
}

/// Filter rule action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RuleAction {
    Pass,
    Block,
    Reject,
}

/// Filter rule direction (default `In`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Direction {
    In,
    Out,
    Any,
}

/// Address family of a rule (`inet46` = both).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum IpProtocol {
    Inet,
    Inet6,
    Inet46,
}

/// What a rule's source or destination names.
///
/// Values are normalised the same way for legacy and MVC rules:
/// `any` → `Any`; an interface key (`lan`) or a CIDR → `Network`; a bare IP, `(self)` or an interface
/// address name (`lanip`, `wanip`, `opt1ip`) → `Address`; anything else (an alias name, a comma list)
/// keeps the kind of the element it was written in (`<network>` / `source_net` → `Network`,
/// `<address>` → `Address`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AddrKind {
    Any,
    Network(String),
    Address(String),
}

/// Source or destination of a rule.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AddrSpec {
    pub kind: AddrKind,
    pub not: bool,
    /// Port, range (`80-90`, `80:90`) or port alias, as written; `None` = any.
    pub port: Option<String>,
}

impl Default for AddrSpec {
    fn default() -> Self {
        AddrSpec {
            kind: AddrKind::Any,
            not: false,
            port: None,
        }
    }
}

/// One filter rule, legacy `filter/rule` or MVC `OPNsense/Firewall/Filter/rules/rule`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilterRule {
    pub path: String,
    pub action: RuleAction,
    /// Interface keys; empty for a floating rule on all interfaces.
    pub interfaces: Vec<String>,
    pub direction: Direction,
    pub ipprotocol: IpProtocol,
    /// `None` = any. Otherwise as written, lower-cased: `tcp`, `udp`, `tcp/udp`, `icmp`, `carp`, `47`.
    pub protocol: Option<String>,
    pub source: AddrSpec,
    pub destination: AddrSpec,
    pub quick: bool,
    pub log: bool,
    pub disabled: bool,
    /// Legacy spelling for both formats: `keep state`, `sloppy state`, `modulate state`,
    /// `synproxy state`, `none`.
    pub statetype: String,
    pub descr: String,
    /// MVC rules carry a uuid attribute.
    pub uuid: Option<String>,
    /// `nopfsync`: states of this rule are not synchronised (pf `no-sync`).
    pub nopfsync: bool,
}

/// Outbound NAT mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NatMode {
    #[default]
    Automatic,
    Hybrid,
    /// "Manual outbound NAT" in the GUI.
    Advanced,
    Disabled,
}

/// `nat/outbound`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NatOutbound {
    pub mode: NatMode,
    pub rules: Vec<NatRule>,
}

/// `nat/outbound/rule` (legacy format).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NatRule {
    pub path: String,
    pub interface: String,
    pub protocol: Option<String>,
    /// Source; its port comes from `<sourceport>` (or `<source><port>`).
    pub source: AddrSpec,
    /// Destination; its port comes from `<dstport>` (or `<destination><port>`).
    pub destination: AddrSpec,
    /// `None` (empty) = the interface address; else a literal IP (a VIP), `other-subnet`,
    /// `wanip`/`optNip`, or an alias name.
    pub target: Option<String>,
    pub target_ip: Option<String>,
    pub target_subnet: Option<u8>,
    /// `staticnatport`.
    pub static_port: bool,
    pub nonat: bool,
    pub disabled: bool,
    pub descr: String,
}

/// `dhcpd/<if>/staticmap`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaticMap {
    pub path: String,
    pub mac: String,
    pub ipaddr: Option<Ipv4Addr>,
    pub hostname: Option<String>,
}

/// `dhcpd/<if>` (ISC DHCPv4 server settings of one interface).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dhcpd {
    pub path: String,
    /// Interface key.
    pub interface: String,
    pub enabled: bool,
    pub range: Option<(Ipv4Addr, Ipv4Addr)>,
    /// `option routers`: an IP, or `none`; `None` = the interface address.
    pub gateway: Option<String>,
    pub dns_servers: Vec<Ipv4Addr>,
    pub domain: Option<String>,
    pub default_lease_time: Option<u32>,
    pub max_lease_time: Option<u32>,
    pub failover_peerip: Option<Ipv4Addr>,
    /// 0–256; `None` = 128.
    pub failover_split: Option<u16>,
    pub staticmaps: Vec<StaticMap>,
}

/// `<hasync>`, legacy and current formats merged.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hasync {
    /// Interface key of the state-sync link; `None` = pfsync disabled. In the legacy format the
    /// value only counts when `<pfsyncenabled>` is set (OPNsense's MHA1_0_0 migration).
    pub pfsync_interface: Option<String>,
    pub pfsync_peer: Option<IpAddr>,
    /// tandem extension `<pfsynckey>`: shared key authenticating the state-sync stream.
    pub pfsync_key: Option<String>,
    /// `synchronizetoip`: IP or base URL of the backup; set on the master only.
    pub synchronize_to: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Sync ids (`rules`, `nat`, `dhcpd`, `virtualip`, ...): `<syncitems>` plus every non-empty legacy
    /// `<synchronize{id}>` flag.
    pub syncitems: BTreeSet<String>,
    pub disable_preempt: bool,
    pub verify_peer: bool,
    /// 1301 or 1400.
    pub pfsync_version: Option<u32>,
    pub pfsync_defer: bool,
    pub disconnect_ppps: bool,
}

/// Collects findings while reading.
pub(crate) struct Reader {
    pub findings: Vec<Finding>,
}

impl Reader {
    pub fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.findings.push(Finding {
            severity: Severity::Error,
            path: path.into(),
            message: message.into(),
        });
    }

    /// A number in a child element; empty or absent is `None`, unparseable or outside
    /// `lo..=hi` is `None` plus an error on `path/name`.
    fn num<T>(&mut self, e: &Element, path: &str, name: &str, lo: T, hi: T) -> Option<T>
    where
        T: FromStr + PartialOrd + Copy + std::fmt::Display,
    {
        let v = e.child_value(name)?;
        match v.parse::<T>() {
            Ok(n) if n >= lo && n <= hi => Some(n),
            Ok(n) => {
                self.error(
                    format!("{path}/{name}"),
                    format!("{name} {n} is out of range {lo}-{hi}"),
                );
                None
            }
            // Too big or negative for the type: still a range problem, not a syntax one.
            Err(_) if v.parse::<i128>().is_ok() => {
                self.error(
                    format!("{path}/{name}"),
                    format!("{name} {v} is out of range {lo}-{hi}"),
                );
                None
            }
            Err(_) => {
                self.error(
                    format!("{path}/{name}"),
                    format!("{name} {v:?} is not a number ({lo}-{hi})"),
                );
                None
            }
        }
    }

    fn ip<T: FromStr>(&mut self, e: &Element, path: &str, name: &str, what: &str) -> Option<T> {
        let v = e.child_value(name)?;
        match v.parse::<T>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.error(
                    format!("{path}/{name}"),
                    format!("{name} {v:?} is not a valid {what} address"),
                );
                None
            }
        }
    }
}

/// PHP `!empty()` of a child: present, non-empty and not `0`.
pub(crate) fn truthy(e: &Element, name: &str) -> bool {
    e.child_value(name).is_some_and(|v| v != "0")
}

fn opt_text(e: &Element, name: &str) -> Option<String> {
    e.child_value(name)
}

fn text(e: &Element, name: &str) -> String {
    e.child_text(name).unwrap_or_default()
}

pub(crate) fn parse_system(root: &Element, r: &mut Reader) -> System {
    let Some(sys) = root.child("system") else {
        return System {
            webgui_protocol: "https".into(),
            ..System::default()
        };
    };
    let mut users = Vec::new();
    for (i, u) in sys.children_named("user").enumerate() {
        let path = format!("system/user[{}]", i + 1);
        let uid = r.num::<u32>(u, &path, "uid", 0, u32::MAX);
        users.push(User {
            name: text(u, "name"),
            password_hash: text(u, "password"),
            uid,
            scope: opt_text(u, "scope"),
            path,
        });
    }
    let (webgui_protocol, webgui_port) = match sys.child("webgui") {
        Some(w) => (
            opt_text(w, "protocol").unwrap_or_else(|| "https".into()),
            r.num::<u16>(w, "system/webgui", "port", 1, u16::MAX),
        ),
        None => ("https".into(), None),
    };
    System {
        hostname: text(sys, "hostname"),
        domain: text(sys, "domain"),
        users,
        webgui_protocol,
        webgui_port,
    }
}

pub(crate) fn parse_interfaces(root: &Element, r: &mut Reader) -> Vec<Interface> {
    let Some(ifs) = root.child("interfaces") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in ifs.elements() {
        let key = e.name().to_string();
        let path = format!("interfaces/{key}");
        let mut ipv4 = None;
        let mut ipv4_mode = None;
        if let Some(a) = e.child_value("ipaddr") {
            if let Ok(ip) = a.parse::<Ipv4Addr>() {
                match r.num::<u8>(e, &path, "subnet", 0, 32) {
                    Some(p) => ipv4 = Some((ip, p)),
                    None if e.child_value("subnet").is_none() => r.error(
                        format!("{path}/subnet"),
                        format!("static address {ip} has no subnet (prefix length)"),
                    ),
                    None => {}
                }
            } else if a
                .chars()
                .all(|c| c.is_ascii_digit() || c == '.' || c == '/')
            {
                r.error(
                    format!("{path}/ipaddr"),
                    format!("ipaddr {a:?} is not a valid IPv4 address"),
                );
            } else {
                ipv4_mode = Some(a);
            }
        }
        let mut ipv6 = None;
        let mut ipv6_mode = None;
        if let Some(a) = e.child_value("ipaddrv6") {
            if let Ok(ip) = a.parse::<Ipv6Addr>() {
                match r.num::<u8>(e, &path, "subnetv6", 0, 128) {
                    Some(p) => ipv6 = Some((ip, p)),
                    None if e.child_value("subnetv6").is_none() => r.error(
                        format!("{path}/subnetv6"),
                        format!("static address {ip} has no subnetv6 (prefix length)"),
                    ),
                    None => {}
                }
            } else if a.contains(':') {
                r.error(
                    format!("{path}/ipaddrv6"),
                    format!("ipaddrv6 {a:?} is not a valid IPv6 address"),
                );
            } else {
                ipv6_mode = Some(a);
            }
        }
        out.push(Interface {
            descr: opt_text(e, "descr"),
            device: text(e, "if"),
            enabled: truthy(e, "enable"),
            ipv4,
            ipv4_mode,
            ipv6,
            ipv6_mode,
            gateway: opt_text(e, "gateway"),
            gatewayv6: opt_text(e, "gatewayv6"),
            key,
            path,
        });
    }
    out
}

pub(crate) fn parse_gateways(root: &Element, r: &mut Reader) -> Vec<Gateway> {
    let mut out = Vec::new();
    let sources = [
        ("gateways", root.child("gateways")),
        ("OPNsense/Gateways", root.at("OPNsense/Gateways")),
    ];
    for (base, parent) in sources {
        let Some(parent) = parent else { continue };
        for (i, g) in parent.children_named("gateway_item").enumerate() {
            let path = format!("{base}/gateway_item[{}]", i + 1);
            let raw = text(g, "gateway");
            let dynamic = raw == "dynamic";
            let address = if dynamic || raw.is_empty() {
                None
            } else {
                r.ip::<IpAddr>(g, &path, "gateway", "IP")
            };
            out.push(Gateway {
                uuid: g.attr("uuid"),
                name: text(g, "name"),
                interface: text(g, "interface"),
                address,
                dynamic,
                ipprotocol: text(g, "ipprotocol"),
                defaultgw: truthy(g, "defaultgw"),
                monitor_disable: truthy(g, "monitor_disable"),
                disabled: truthy(g, "disabled"),
                descr: text(g, "descr"),
                path,
            });
        }
    }
    out
}

pub(crate) fn parse_vips(root: &Element, r: &mut Reader) -> Vec<Vip> {
    let Some(vips) = root.child("virtualip") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, v) in vips.children_named("vip").enumerate() {
        let path = format!("virtualip/vip[{}]", i + 1);
        let mode = VipMode::parse(&text(v, "mode"));
        if v.child_value("subnet").is_none() {
            r.error(format!("{path}/subnet"), "vip has no address (subnet)");
            continue;
        }
        let Some(addr) = r.ip::<IpAddr>(v, &path, "subnet", "IP") else {
            continue;
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match r.num::<u8>(v, &path, "subnet_bits", 0, max) {
            Some(p) => p,
            None => {
                if v.child_value("subnet_bits").is_none() {
                    r.error(format!("{path}/subnet_bits"), "vip has no subnet_bits");
                }
                max
            }
        };
        let vhid = r.num::<u8>(v, &path, "vhid", 1, 255);
        let advbase = r.num::<u8>(v, &path, "advbase", 1, 254).unwrap_or(1);
        let advskew = r.num::<u8>(v, &path, "advskew", 0, 254).unwrap_or(0);
        out.push(Vip {
            uuid: v.attr("uuid"),
            mode,
            interface: text(v, "interface"),
            addr,
            prefix,
            vhid,
            advbase,
            advskew,
            password: text(v, "password"),
            peer: r.ip::<Ipv4Addr>(v, &path, "peer", "IPv4"),
            peer6: r.ip::<Ipv6Addr>(v, &path, "peer6", "IPv6"),
            nosync: truthy(v, "nosync"),
            descr: text(v, "descr"),
            path,
        });
    }
    out
}

/// True for `wan`, `lan`, `optN`, and any key present in `<interfaces>`.
fn is_if_key(v: &str, keys: &[String]) -> bool {
    keys.iter().any(|k| k == v)
        || v == "wan"
        || v == "lan"
        || v.strip_prefix("opt")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

fn is_cidr(v: &str) -> bool {
    let Some((a, p)) = v.split_once('/') else {
        return false;
    };
    match a.parse::<IpAddr>() {
        Ok(IpAddr::V4(_)) => p.parse::<u8>().is_ok_and(|p| p <= 32),
        Ok(IpAddr::V6(_)) => p.parse::<u8>().is_ok_and(|p| p <= 128),
        Err(_) => false,
    }
}

/// Classify one address value (see [`AddrKind`]). `as_network` is the kind of the element it came from.
fn classify(v: &str, as_network: bool, keys: &[String]) -> AddrKind {
    let v = v.trim();
    if v.is_empty() || v == "any" {
        AddrKind::Any
    } else if v.parse::<IpAddr>().is_ok()
        || v == "(self)"
        || v.strip_suffix("ip").is_some_and(|k| is_if_key(k, keys))
    {
        AddrKind::Address(v.to_string())
    } else if as_network || is_cidr(v) || is_if_key(v, keys) {
        AddrKind::Network(v.to_string())
    } else {
        AddrKind::Address(v.to_string())
    }
}

fn port_value(v: Option<String>) -> Option<String> {
    v.filter(|p| p != "any")
}

/// Legacy `<source>`/`<destination>`: `<any/>`, `<network>`, `<address>`, `<not/>`, `<port>`.
fn legacy_addr(e: Option<&Element>, keys: &[String]) -> AddrSpec {
    let Some(e) = e else {
        return AddrSpec::default();
    };
    let kind = if e.child("any").is_some() {
        AddrKind::Any
    } else if let Some(n) = e.child_value("network") {
        classify(&n, true, keys)
    } else if let Some(a) = e.child_value("address") {
        classify(&a, false, keys)
    } else {
        AddrKind::Any
    };
    AddrSpec {
        kind,
        not: e.child("not").is_some(),
        port: port_value(e.child_value("port")),
    }
}

fn protocol_value(v: Option<String>) -> Option<String> {
    v.map(|p| p.to_ascii_lowercase()).filter(|p| p != "any")
}

fn parse_action(r: &mut Reader, path: &str, field: &str, v: Option<String>) -> RuleAction {
    match v.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("pass") => RuleAction::Pass,
        Some("block") => RuleAction::Block,
        Some("reject") => RuleAction::Reject,
        Some(o) => {
            r.error(
                format!("{path}/{field}"),
                format!("unknown rule action {o:?} (pass, block, reject)"),
            );
            RuleAction::Block
        }
    }
}

fn parse_direction(r: &mut Reader, path: &str, v: Option<String>) -> Direction {
    match v.as_deref() {
        None | Some("in") => Direction::In,
        Some("out") => Direction::Out,
        Some("any") => Direction::Any,
        Some(o) => {
            r.error(
                format!("{path}/direction"),
                format!("unknown direction {o:?} (in, out, any)"),
            );
            Direction::In
        }
    }
}

fn parse_ipprotocol(r: &mut Reader, path: &str, v: Option<String>) -> IpProtocol {
    match v.as_deref() {
        None | Some("inet") => IpProtocol::Inet,
        Some("inet6") => IpProtocol::Inet6,
        Some("inet46") => IpProtocol::Inet46,
        Some(o) => {
            r.error(
                format!("{path}/ipprotocol"),
                format!("unknown ipprotocol {o:?} (inet, inet6, inet46)"),
            );
            IpProtocol::Inet
        }
    }
}

fn split_list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

pub(crate) fn parse_filter(root: &Element, keys: &[String], r: &mut Reader) -> Vec<FilterRule> {
    let mut out = Vec::new();
    if let Some(f) = root.child("filter") {
        for (i, e) in f.children_named("rule").enumerate() {
            let path = format!("filter/rule[{}]", i + 1);
            let floating = truthy(e, "floating");
            let action = parse_action(r, &path, "type", opt_text(e, "type"));
            let direction = if floating {
                parse_direction(r, &path, opt_text(e, "direction"))
            } else {
                Direction::In
            };
            // Non-floating legacy rules are always quick; floating ones only with <quick>.
            let quick = !floating || truthy(e, "quick");
            out.push(FilterRule {
                action,
                interfaces: split_list(&text(e, "interface")),
                direction,
                ipprotocol: parse_ipprotocol(r, &path, opt_text(e, "ipprotocol")),
                protocol: protocol_value(opt_text(e, "protocol")),
                source: legacy_addr(e.child("source"), keys),
                destination: legacy_addr(e.child("destination"), keys),
                quick,
                log: truthy(e, "log"),
                disabled: truthy(e, "disabled"),
                statetype: opt_text(e, "statetype").unwrap_or_else(|| "keep state".into()),
                descr: text(e, "descr"),
                uuid: e.attr("uuid"),
                nopfsync: truthy(e, "nopfsync"),
                path,
            });
        }
    }
    if let Some(rules) = root.at("OPNsense/Firewall/Filter/rules") {
        for (i, e) in rules.children_named("rule").enumerate() {
            let path = format!("OPNsense/Firewall/Filter/rules/rule[{}]", i + 1);
            let mvc_addr = |side: &str| AddrSpec {
                kind: e
                    .child_value(&format!("{side}_net"))
                    .map_or(AddrKind::Any, |v| {
                        if v.contains(',') {
                            AddrKind::Network(v)
                        } else {
                            classify(&v, true, keys)
                        }
                    }),
                not: truthy(e, &format!("{side}_not")),
                port: port_value(e.child_value(&format!("{side}_port"))),
            };
            let statetype = match e.child_value("statetype").as_deref() {
                None | Some("keep") => "keep state".to_string(),
                Some("none") => "none".to_string(),
                Some(s) if s.ends_with(" state") => s.to_string(),
                Some(s) => format!("{s} state"),
            };
            out.push(FilterRule {
                action: parse_action(r, &path, "action", opt_text(e, "action")),
                interfaces: split_list(&text(e, "interface")),
                direction: parse_direction(r, &path, opt_text(e, "direction")),
                ipprotocol: parse_ipprotocol(r, &path, opt_text(e, "ipprotocol")),
                protocol: protocol_value(opt_text(e, "protocol")),
                source: mvc_addr("source"),
                destination: mvc_addr("destination"),
                // MVC booleans default to enabled=1 and quick=1 when absent.
                quick: e.child_value("quick").is_none_or(|v| v != "0"),
                log: truthy(e, "log"),
                disabled: e.child_value("enabled").is_some_and(|v| v == "0"),
                statetype,
                descr: text(e, "description"),
                uuid: e.attr("uuid"),
                nopfsync: truthy(e, "nopfsync"),
                path,
            });
        }
    }
    out
}

pub(crate) fn parse_nat(root: &Element, keys: &[String], r: &mut Reader) -> NatOutbound {
    let Some(ob) = root.at("nat/outbound") else {
        return NatOutbound::default();
    };
    let mode = match ob.child_value("mode").as_deref() {
        None | Some("automatic") => NatMode::Automatic,
        Some("hybrid") => NatMode::Hybrid,
        Some("advanced") => NatMode::Advanced,
        Some("disabled") => NatMode::Disabled,
        Some(o) => {
            r.error(
                "nat/outbound/mode",
                format!("unknown outbound NAT mode {o:?} (automatic, hybrid, advanced, disabled)"),
            );
            NatMode::Automatic
        }
    };
    let mut rules = Vec::new();
    for (i, e) in ob.children_named("rule").enumerate() {
        let path = format!("nat/outbound/rule[{}]", i + 1);
        let mut source = legacy_addr(e.child("source"), keys);
        if let Some(p) = port_value(e.child_value("sourceport")) {
            source.port = Some(p);
        }
        let mut destination = legacy_addr(e.child("destination"), keys);
        if let Some(p) = port_value(e.child_value("dstport")) {
            destination.port = Some(p);
        }
        let max = if text(e, "targetip").contains(':') {
            128
        } else {
            32
        };
        rules.push(NatRule {
            interface: text(e, "interface"),
            protocol: protocol_value(opt_text(e, "protocol")),
            source,
            destination,
            target: opt_text(e, "target"),
            target_ip: opt_text(e, "targetip"),
            target_subnet: r.num::<u8>(e, &path, "targetip_subnet", 0, max),
            static_port: truthy(e, "staticnatport"),
            nonat: truthy(e, "nonat"),
            disabled: truthy(e, "disabled"),
            descr: text(e, "descr"),
            path,
        });
    }
    NatOutbound { mode, rules }
}

/// MVC source NAT rules, `OPNsense/Firewall/Filter/snatrules/rule` (current "Source NAT" page).
/// Booleans default as in the model: `enabled` 1, the others 0; `target` defaults to `wanip`.
pub(crate) fn parse_snat(root: &Element, keys: &[String]) -> Vec<NatRule> {
    let Some(rules) = root.at("OPNsense/Firewall/Filter/snatrules") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, e) in rules.children_named("rule").enumerate() {
        let side = |s: &str| AddrSpec {
            kind: e
                .child_value(&format!("{s}_net"))
                .map_or(AddrKind::Any, |v| classify(&v, true, keys)),
            not: truthy(e, &format!("{s}_not")),
            port: port_value(e.child_value(&format!("{s}_port"))),
        };
        out.push(NatRule {
            path: format!("OPNsense/Firewall/Filter/snatrules/rule[{}]", i + 1),
            interface: text(e, "interface"),
            protocol: protocol_value(opt_text(e, "protocol")),
            source: side("source"),
            destination: side("destination"),
            target: Some(opt_text(e, "target").unwrap_or_else(|| "wanip".into())),
            target_ip: None,
            target_subnet: None,
            static_port: truthy(e, "staticnatport"),
            nonat: truthy(e, "nonat"),
            disabled: e.child_value("enabled").is_some_and(|v| v == "0"),
            descr: text(e, "description"),
        });
    }
    out
}

pub(crate) fn parse_dhcpd(root: &Element, r: &mut Reader) -> Vec<Dhcpd> {
    let Some(d) = root.child("dhcpd") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in d.elements() {
        let interface = e.name().to_string();
        let path = format!("dhcpd/{interface}");
        let range = match e.child("range") {
            Some(rg) if rg.child_value("from").is_some() || rg.child_value("to").is_some() => {
                let rp = format!("{path}/range");
                let from = r.ip::<Ipv4Addr>(rg, &rp, "from", "IPv4");
                let to = r.ip::<Ipv4Addr>(rg, &rp, "to", "IPv4");
                match (from, to, rg.child_value("from"), rg.child_value("to")) {
                    (Some(f), Some(t), _, _) => Some((f, t)),
                    (_, _, None, _) => {
                        r.error(format!("{rp}/from"), "range has no start (from)");
                        None
                    }
                    (_, _, _, None) => {
                        r.error(format!("{rp}/to"), "range has no end (to)");
                        None
                    }
                    _ => None,
                }
            }
            _ => None,
        };
        let mut dns_servers = Vec::new();
        for (j, s) in e.children_named("dnsserver").enumerate() {
            for v in split_list(&s.text()) {
                match v.parse::<Ipv4Addr>() {
                    Ok(a) => dns_servers.push(a),
                    Err(_) => r.error(
                        format!("{path}/dnsserver[{}]", j + 1),
                        format!("dnsserver {v:?} is not a valid IPv4 address"),
                    ),
                }
            }
        }
        let mut staticmaps = Vec::new();
        for (j, s) in e.children_named("staticmap").enumerate() {
            let sp = format!("{path}/staticmap[{}]", j + 1);
            staticmaps.push(StaticMap {
                mac: text(s, "mac"),
                ipaddr: r.ip::<Ipv4Addr>(s, &sp, "ipaddr", "IPv4"),
                hostname: opt_text(s, "hostname"),
                path: sp,
            });
        }
        out.push(Dhcpd {
            enabled: truthy(e, "enable"),
            range,
            gateway: opt_text(e, "gateway"),
            dns_servers,
            domain: opt_text(e, "domain"),
            default_lease_time: r.num::<u32>(e, &path, "defaultleasetime", 1, u32::MAX),
            max_lease_time: r.num::<u32>(e, &path, "maxleasetime", 1, u32::MAX),
            failover_peerip: r.ip::<Ipv4Addr>(e, &path, "failover_peerip", "IPv4"),
            failover_split: r.num::<u16>(e, &path, "failover_split", 0, 256),
            staticmaps,
            interface,
            path,
        });
    }
    out
}

pub(crate) fn parse_hasync(root: &Element, r: &mut Reader) -> Hasync {
    let Some(h) = root.child("hasync") else {
        return Hasync::default();
    };
    let path = "hasync";
    let mut syncitems: BTreeSet<String> = split_list(&text(h, "syncitems")).into_iter().collect();
    let mut legacy = h.child("pfsyncenabled").is_some();
    for e in h.elements() {
        if let Some(id) = e.name().strip_prefix("synchronize") {
            if id.is_empty() || id == "toip" {
                continue;
            }
            legacy = true;
            if !e.text().is_empty() {
                syncitems.insert(id.to_string());
            }
        }
    }
    let pfsync_interface = if legacy && !truthy(h, "pfsyncenabled") {
        None
    } else {
        opt_text(h, "pfsyncinterface")
    };
    Hasync {
        pfsync_interface,
        pfsync_peer: r.ip::<IpAddr>(h, path, "pfsyncpeerip", "IP"),
        pfsync_key: opt_text(h, "pfsynckey"),
        synchronize_to: opt_text(h, "synchronizetoip"),
        username: opt_text(h, "username"),
        password: opt_text(h, "password"),
        syncitems,
        disable_preempt: truthy(h, "disablepreempt"),
        verify_peer: truthy(h, "verifypeer"),
        pfsync_version: r.num::<u32>(h, path, "pfsyncversion", 0, u32::MAX),
        pfsync_defer: truthy(h, "pfsyncdefer"),
        disconnect_ppps: truthy(h, "disconnectppps"),
    }
}

/// IPv4 netmask of a prefix length (0..=32).
pub fn v4_mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    }
}

/// IPv6 netmask of a prefix length (0..=128).
pub fn v6_mask(prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(prefix.min(128)))
    }
}

/// Whether `ip` lies in `net/prefix`.
pub fn v4_contains(net: Ipv4Addr, prefix: u8, ip: Ipv4Addr) -> bool {
    let m = v4_mask(prefix);
    u32::from(net) & m == u32::from(ip) & m
}

/// Whether `ip` lies in `net/prefix`.
pub fn v6_contains(net: Ipv6Addr, prefix: u8, ip: Ipv6Addr) -> bool {
    let m = v6_mask(prefix);
    u128::from(net) & m == u128::from(ip) & m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_and_containment_at_the_edges() {
        assert_eq!(v4_mask(0), 0);
        assert_eq!(v4_mask(32), u32::MAX);
        assert_eq!(v4_mask(24), 0xffff_ff00);
        assert_eq!(v4_mask(200), u32::MAX);
        assert_eq!(v6_mask(0), 0);
        assert_eq!(v6_mask(128), u128::MAX);
        let net = Ipv4Addr::new(192, 168, 1, 0);
        assert!(v4_contains(net, 24, Ipv4Addr::new(192, 168, 1, 255)));
        assert!(!v4_contains(net, 24, Ipv4Addr::new(192, 168, 2, 1)));
        assert!(v4_contains(net, 0, Ipv4Addr::new(8, 8, 8, 8)));
        assert!(!v4_contains(net, 32, Ipv4Addr::new(192, 168, 1, 1)));
        let n6: Ipv6Addr = "2001:db8::".parse().unwrap();
        assert!(v6_contains(n6, 64, "2001:db8::ffff".parse().unwrap()));
        assert!(!v6_contains(n6, 64, "2001:db9::1".parse().unwrap()));
    }

    #[test]
    fn address_values_are_classified() {
        let keys = vec!["lan".to_string(), "opt1".to_string(), "dmz".to_string()];
        let c = |v: &str, net: bool| classify(v, net, &keys);
        assert_eq!(c("any", true), AddrKind::Any);
        assert_eq!(c("", false), AddrKind::Any);
        assert_eq!(c("lan", true), AddrKind::Network("lan".into()));
        assert_eq!(c("dmz", false), AddrKind::Network("dmz".into()));
        assert_eq!(c("opt7", true), AddrKind::Network("opt7".into()));
        assert_eq!(
            c("10.0.0.0/8", false),
            AddrKind::Network("10.0.0.0/8".into())
        );
        assert_eq!(c("10.0.0.1", true), AddrKind::Address("10.0.0.1".into()));
        assert_eq!(c("(self)", true), AddrKind::Address("(self)".into()));
        assert_eq!(c("lanip", true), AddrKind::Address("lanip".into()));
        assert_eq!(c("dmzip", true), AddrKind::Address("dmzip".into()));
        assert_eq!(c("my_alias", true), AddrKind::Network("my_alias".into()));
        assert_eq!(c("my_alias", false), AddrKind::Address("my_alias".into()));
        assert_eq!(
            c("10.0.0.0/40", false),
            AddrKind::Address("10.0.0.0/40".into())
        );
    }
}
