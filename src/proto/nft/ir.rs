//! The intermediate representation the renderer works on: rules already parsed out of config.xml's
//! strings, with interface references still symbolic (`lan`, `opt1`), plus the resolved view of the
//! interfaces they are looked up in.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An address family of one rendered line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// The `meta nfproto` keyword.
    pub fn nfproto(self) -> &'static str {
        match self {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        }
    }

    /// The nft address selector (`ip` / `ip6`).
    pub fn selector(self) -> &'static str {
        match self {
            Family::V4 => "ip",
            Family::V6 => "ip6",
        }
    }

    pub fn of(addr: &IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
}

/// A rule's `ipprotocol`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IpVersion {
    Inet,
    Inet6,
    Inet46,
}

impl IpVersion {
    pub fn families(self) -> &'static [Family] {
        match self {
            IpVersion::Inet => &[Family::V4],
            IpVersion::Inet6 => &[Family::V6],
            IpVersion::Inet46 => &[Family::V4, Family::V6],
        }
    }
}

/// The layer-4 protocol a rule matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Proto {
    Any,
    Tcp,
    Udp,
    TcpUdp,
    Icmp,
    Icmpv6,
    /// Any other IP protocol number (`carp` = 112, `pfsync` = 240, `47`).
    Number(u8),
}

/// IP protocol number of CARP (shared with VRRP).
pub const IPPROTO_CARP: u8 = 112;
/// IP protocol number of pfsync.
pub const IPPROTO_PFSYNC: u8 = 240;

impl Proto {
    /// Parses a config.xml protocol: `tcp`, `udp`, `tcp/udp`, `icmp`, `icmpv6` (`ipv6-icmp`),
    /// `carp`, `pfsync`, `vrrp`, a few names from /etc/protocols, or a number 0-255. `any` and
    /// the empty string are `Any`.
    pub fn parse(s: &str) -> Option<Proto> {
        let s = s.trim().to_ascii_lowercase();
        Some(match s.as_str() {
            "" | "any" => Proto::Any,
            "tcp" => Proto::Tcp,
            "udp" => Proto::Udp,
            "tcp/udp" => Proto::TcpUdp,
            "icmp" => Proto::Icmp,
            "icmpv6" | "ipv6-icmp" | "icmp6" => Proto::Icmpv6,
            "carp" | "vrrp" => Proto::Number(IPPROTO_CARP),
            "pfsync" => Proto::Number(IPPROTO_PFSYNC),
            "igmp" => Proto::Number(2),
            "gre" => Proto::Number(47),
            "esp" => Proto::Number(50),
            "ah" => Proto::Number(51),
            "ospf" => Proto::Number(89),
            "pim" => Proto::Number(103),
            "sctp" => Proto::Number(132),
            n => match n.parse::<u8>().ok()? {
                6 => Proto::Tcp,
                17 => Proto::Udp,
                1 => Proto::Icmp,
                58 => Proto::Icmpv6,
                n => Proto::Number(n),
            },
        })
    }

    /// Whether ports can be matched with this protocol.
    pub fn has_ports(self) -> bool {
        matches!(self, Proto::Tcp | Proto::Udp | Proto::TcpUdp)
    }

    /// The only family this protocol exists in, if it is family specific.
    pub fn family(self) -> Option<Family> {
        match self {
            Proto::Icmp => Some(Family::V4),
            Proto::Icmpv6 => Some(Family::V6),
            _ => None,
        }
    }
}

/// A port or an inclusive port range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

impl PortRange {
    pub fn single(p: u16) -> PortRange {
        PortRange { lo: p, hi: p }
    }

    /// Parses `80`, `1000-2000`, `1000:2000`, or a comma/space separated list of those.
    /// Port 0, reversed ranges and names are refused (`None`).
    pub fn parse_list(s: &str) -> Option<Vec<PortRange>> {
        let mut out = Vec::new();
        for part in s.split([',', ' ']).filter(|p| !p.is_empty()) {
            let (lo, hi) = match part.split_once(['-', ':']) {
                Some((a, b)) => (a.parse::<u16>().ok()?, b.parse::<u16>().ok()?),
                None => {
                    let p = part.parse::<u16>().ok()?;
                    (p, p)
                }
            };
            if lo == 0 || hi < lo {
                return None;
            }
            out.push(PortRange { lo, hi });
        }
        if out.is_empty() { None } else { Some(out) }
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lo == self.hi {
            write!(f, "{}", self.lo)
        } else {
            write!(f, "{}-{}", self.lo, self.hi)
        }
    }
}

/// An address with a prefix length; host bits are cleared by `new`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    /// `None` if the prefix is longer than the address.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Cidr> {
        let addr = match addr {
            IpAddr::V4(a) => {
                if prefix > 32 {
                    return None;
                }
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) => {
                if prefix > 128 {
                    return None;
                }
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
            }
        };
        Some(Cidr { addr, prefix })
    }

    /// A single host (`/32` or `/128`).
    pub fn host(addr: IpAddr) -> Cidr {
        let prefix = match addr {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        Cidr { addr, prefix }
    }

    /// Parses `10.0.0.1`, `10.0.0.0/8`, `2001:db8::/32`.
    pub fn parse(s: &str) -> Option<Cidr> {
        let s = s.trim();
        match s.split_once('/') {
            Some((a, p)) => Cidr::new(a.parse().ok()?, p.parse().ok()?),
            None => Some(Cidr::host(s.parse().ok()?)),
        }
    }

    pub fn family(&self) -> Family {
        Family::of(&self.addr)
    }

    /// Always `addr/prefix`, even for a host.
    pub fn addr_prefix(&self) -> String {
        format!("{}/{}", self.addr, self.prefix)
    }

    fn is_host(&self) -> bool {
        match self.addr {
            IpAddr::V4(_) => self.prefix == 32,
            IpAddr::V6(_) => self.prefix == 128,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_host() {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix)
        }
    }
}

/// What a rule's source or destination address names.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum AddrMatch {
    Any,
    /// `(self)`: every address of the firewall (`fib ... type local`).
    SelfAddrs,
    /// `<network>lan</network>`: the subnet of an interface (by key).
    IfNet(String),
    /// `lanip`, `wanip`, `optNip`: the addresses of an interface (its own and its VIPs), like
    /// pf's `(em0)`.
    IfAddr(String),
    /// Literal addresses and networks.
    Nets(Vec<Cidr>),
}

/// Source or destination of a rule.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub addr: AddrMatch,
    pub not: bool,
    /// Empty = any port.
    pub ports: Vec<PortRange>,
}

impl Endpoint {
    pub fn any() -> Endpoint {
        Endpoint {
            addr: AddrMatch::Any,
            not: false,
            ports: Vec::new(),
        }
    }

    pub fn addr(addr: AddrMatch) -> Endpoint {
        Endpoint {
            addr,
            not: false,
            ports: Vec::new(),
        }
    }
}

/// A filter rule's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    Pass,
    Block,
    Reject,
}

/// Which way a packet crosses the rule's interfaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    In,
    Out,
    Any,
}

/// One user filter rule.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Rule {
    /// Where it came from in config.xml (`filter/rule[3]`): in comments and errors.
    pub path: String,
    pub descr: String,
    pub action: Action,
    pub quick: bool,
    pub log: bool,
    /// Interface keys; empty = every interface (a floating rule).
    pub interfaces: Vec<String>,
    pub direction: Direction,
    pub ipver: IpVersion,
    pub proto: Proto,
    pub src: Endpoint,
    pub dst: Endpoint,
}

/// Inputs of the automatic rules that come before the user's rules.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Automatic {
    /// Some VIP is a CARP VIP: pass CARP to 224.0.0.18 / ff02::12 on every interface.
    pub carp: bool,
    /// Unicast CARP peers (`peer`, `peer6` of the CARP VIPs).
    pub carp_peers: Vec<IpAddr>,
    /// `(interface key, peer)` of every DHCP server with a failover peer.
    pub dhcp_failover: Vec<(String, IpAddr)>,
    /// Hosts allowed to reach the HA sync (XML-RPC) port.
    pub ha_sync_peers: Vec<IpAddr>,
    /// The webgui / XML-RPC port (default 443).
    pub webgui_port: u16,
    /// The pfsync interface key.
    pub pfsync: Option<String>,
    /// The interface key of the anti-lockout rule (LAN), if enabled.
    pub anti_lockout: Option<String>,
    /// Interface keys that run a DHCP server.
    pub dhcp_server: Vec<String>,
    /// Interface keys whose IPv4 address comes from DHCP (replies to the client pass).
    pub dhcp_client4: Vec<String>,
    /// Interface keys whose IPv6 address comes from DHCPv6 (replies to the client pass).
    pub dhcp_client6: Vec<String>,
}

/// Everything `table inet tandem_filter` is rendered from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct FilterSet {
    pub auto: Automatic,
    pub rules: Vec<Rule>,
}

/// The outbound NAT mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum NatMode {
    /// Automatic rules only.
    #[default]
    Automatic,
    /// Manual rules, then the automatic ones.
    Hybrid,
    /// Manual rules only.
    Manual,
    /// No NAT at all.
    Disabled,
}

/// Where outbound NAT translates to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum NatTarget {
    /// The address of the outgoing interface at the time of the packet (`masquerade`, pf's
    /// dynamic `(em1:0)`).
    Masquerade,
    /// A literal address, e.g. the CARP VIP.
    Addr(IpAddr),
    /// `other-subnet`: a pool of addresses.
    Subnet(Cidr),
    /// `wanip` / `optNip`: that interface's own configured address.
    IfAddr(String),
}

/// One manual outbound NAT rule.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NatRule {
    pub path: String,
    pub descr: String,
    /// Outgoing interface key.
    pub interface: String,
    pub proto: Proto,
    pub src: Endpoint,
    pub dst: Endpoint,
    pub target: NatTarget,
    pub static_port: bool,
    /// `no nat`: leave matching traffic untranslated.
    pub nonat: bool,
}

/// Everything `table ip tandem_nat` (and `ip6`) is rendered from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct NatSet {
    pub mode: NatMode,
    pub rules: Vec<NatRule>,
}

/// One interface as the renderer sees it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IfView {
    pub key: String,
    pub device: String,
    /// Own address and prefix.
    pub v4: Option<(Ipv4Addr, u8)>,
    pub v6: Option<(Ipv6Addr, u8)>,
    /// VIP addresses on this interface (part of `lanip`, like pf's `(em0)`).
    pub vips: Vec<IpAddr>,
    /// Has a gateway: WAN-like, automatic NAT goes out of it.
    pub gateway: bool,
}

impl IfView {
    /// A view with no address.
    pub fn new(key: &str, device: &str) -> IfView {
        IfView {
            key: key.to_string(),
            device: device.to_string(),
            v4: None,
            v6: None,
            vips: Vec::new(),
            gateway: false,
        }
    }

    /// The interface's subnets (host bits cleared).
    pub fn nets(&self) -> Vec<Cidr> {
        let mut out = Vec::new();
        if let Some((a, p)) = self.v4
            && let Some(c) = Cidr::new(IpAddr::V4(a), p)
        {
            out.push(c);
        }
        if let Some((a, p)) = self.v6
            && let Some(c) = Cidr::new(IpAddr::V6(a), p)
        {
            out.push(c);
        }
        out
    }

    /// The interface's own addresses followed by its VIPs, as hosts.
    pub fn addrs(&self) -> Vec<Cidr> {
        let mut out = Vec::new();
        if let Some((a, _)) = self.v4 {
            out.push(Cidr::host(IpAddr::V4(a)));
        }
        if let Some((a, _)) = self.v6 {
            out.push(Cidr::host(IpAddr::V6(a)));
        }
        for v in &self.vips {
            let c = Cidr::host(*v);
            if !out.contains(&c) {
                out.push(c);
            }
        }
        out
    }
}

/// The interfaces rules are resolved against.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct View {
    pub interfaces: Vec<IfView>,
}

impl View {
    pub fn get(&self, key: &str) -> Option<&IfView> {
        self.interfaces.iter().find(|i| i.key == key)
    }
}
