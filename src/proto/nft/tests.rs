//! Unit tests of the nft renderer: every field of a rule, the automatic rules, NAT modes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The how-to's master: lan em0, wan em1 (gateway), opt1 em2 (PFSYNC), VIPs on wan and lan.
pub(crate) fn view() -> View {
    let mut lan = IfView::new("lan", "em0");
    lan.v4 = Some((Ipv4Addr::new(192, 168, 1, 10), 24));
    lan.v6 = Some(("2001:db8:1::10".parse::<Ipv6Addr>().unwrap(), 64));
    lan.vips = vec![ip("192.168.1.1")];
    let mut wan = IfView::new("wan", "em1");
    wan.v4 = Some((Ipv4Addr::new(172, 18, 0, 101), 24));
    wan.vips = vec![ip("172.18.0.100")];
    wan.gateway = true;
    let mut opt1 = IfView::new("opt1", "em2");
    opt1.v4 = Some((Ipv4Addr::new(10, 0, 0, 1), 24));
    View {
        interfaces: vec![lan, wan, opt1],
    }
}

fn rule(path: &str) -> Rule {
    Rule {
        path: path.to_string(),
        descr: String::new(),
        action: Action::Pass,
        quick: true,
        log: false,
        interfaces: vec!["lan".to_string()],
        direction: Direction::In,
        ipver: IpVersion::Inet,
        proto: Proto::Any,
        src: Endpoint::any(),
        dst: Endpoint::any(),
    }
}

fn render_rules(rules: Vec<Rule>) -> String {
    let set = FilterSet {
        auto: Automatic::default(),
        rules,
    };
    render_filter(&set, &view()).unwrap().text
}

/// The lines of chain `name`.
fn chain_lines(text: &str, name: &str) -> Vec<String> {
    let start = format!("\tchain {name} {{");
    let mut out = Vec::new();
    let mut inside = false;
    for l in text.lines() {
        if l == start {
            inside = true;
        } else if inside && l == "\t}" {
            break;
        } else if inside {
            out.push(l.trim().to_string());
        }
    }
    out
}

fn one(r: Rule) -> Vec<String> {
    chain_lines(&render_rules(vec![r]), "rules_in")
}

fn one_line(r: Rule) -> String {
    let l = one(r);
    assert_eq!(l.len(), 1, "{l:?}");
    l[0].clone()
}

fn err(r: Rule) -> Error {
    let set = FilterSet {
        auto: Automatic::default(),
        rules: vec![r],
    };
    render_filter(&set, &view()).unwrap_err()
}

#[test]
fn actions() {
    let l = one_line(rule("filter/rule[0]"));
    assert_eq!(
        l,
        "iifname \"em0\" meta nfproto ipv4 accept comment \"filter/rule[0]\""
    );
    let mut r = rule("filter/rule[0]");
    r.action = Action::Block;
    assert!(one_line(r).contains(" drop comment"));

    // Reject: tcp → reset only; any → reset for tcp, icmp unreachable for the rest.
    let mut r = rule("filter/rule[0]");
    r.action = Action::Reject;
    r.proto = Proto::Tcp;
    assert_eq!(
        one_line(r.clone()),
        "iifname \"em0\" meta nfproto ipv4 meta l4proto tcp reject with tcp reset comment \"filter/rule[0]\""
    );
    r.proto = Proto::Any;
    let l = one(r.clone());
    assert_eq!(l.len(), 2);
    assert!(
        l[0].contains("meta l4proto tcp reject with tcp reset"),
        "{l:?}"
    );
    assert!(
        l[1].ends_with(
            "meta nfproto ipv4 reject with icmpx type port-unreachable comment \"filter/rule[0]\""
        ),
        "{l:?}"
    );
    r.proto = Proto::Udp;
    assert!(
        one_line(r.clone()).contains("meta l4proto udp reject with icmpx type port-unreachable")
    );
    r.proto = Proto::TcpUdp;
    r.dst.ports = vec![PortRange::single(53)];
    let l = one(r);
    assert!(l[0].contains("tcp dport 53 reject with tcp reset"), "{l:?}");
    assert!(
        l[1].contains("meta l4proto { tcp, udp } th dport 53 reject with icmpx"),
        "{l:?}"
    );
}

#[test]
fn directions() {
    let mut r = rule("filter/rule[0]");
    r.direction = Direction::Out;
    let t = render_rules(vec![r.clone()]);
    assert!(chain_lines(&t, "rules_in").is_empty());
    assert_eq!(
        chain_lines(&t, "rules_out"),
        vec!["oifname \"em0\" meta nfproto ipv4 return comment \"filter/rule[0]\""]
    );
    r.direction = Direction::Any;
    r.action = Action::Block;
    let t = render_rules(vec![r]);
    assert_eq!(chain_lines(&t, "rules_in").len(), 1);
    assert!(chain_lines(&t, "rules_out")[0].starts_with("oifname \"em0\" meta nfproto ipv4 drop"));
    // The base chains jump to them: forward needs both.
    assert_eq!(
        chain_lines(&t, "forward")[4..],
        ["jump rules_out".to_string(), "jump rules_in".to_string()]
    );
    assert_eq!(chain_lines(&t, "output").last().unwrap(), "jump rules_out");
}

#[test]
fn interfaces() {
    let mut r = rule("filter/rule[0]");
    r.interfaces = vec!["lan".into(), "opt1".into()];
    assert!(one_line(r.clone()).starts_with("iifname { \"em0\", \"em2\" } meta nfproto ipv4"));
    r.interfaces.clear();
    assert!(one_line(r.clone()).starts_with("meta nfproto ipv4 accept"));
    r.interfaces = vec!["opt9".into()];
    let e = err(r);
    assert_eq!(e.to_string(), "filter/rule[0]: unknown interface opt9");
}

#[test]
fn ip_versions() {
    let mut r = rule("filter/rule[0]");
    r.ipver = IpVersion::Inet6;
    assert!(one_line(r.clone()).contains("meta nfproto ipv6 accept"));
    // inet46 with nothing family specific: one line for both.
    r.ipver = IpVersion::Inet46;
    assert_eq!(
        one_line(r.clone()),
        "iifname \"em0\" accept comment \"filter/rule[0]\""
    );
    // inet46 with an interface network: one line per family.
    r.src = Endpoint::addr(AddrMatch::IfNet("lan".into()));
    let l = one(r.clone());
    assert_eq!(l.len(), 2);
    assert!(l[0].contains("meta nfproto ipv4 ip saddr 192.168.1.0/24 accept"));
    assert!(l[1].contains("meta nfproto ipv6 ip6 saddr 2001:db8:1::/64 accept"));
    // inet6 from an interface without IPv6: matches nothing, said in a comment.
    r.ipver = IpVersion::Inet6;
    r.src = Endpoint::addr(AddrMatch::IfNet("wan".into()));
    let l = one(r.clone());
    assert_eq!(l.len(), 1);
    assert!(
        l[0].starts_with("# filter/rule[0]: no ipv6 address known"),
        "{l:?}"
    );
    // A literal of the wrong family is an error.
    r.src = Endpoint::addr(AddrMatch::Nets(vec![Cidr::parse("10.0.0.0/8").unwrap()]));
    assert_eq!(err(r.clone()).reason, Reason::FamilyMismatch);
    // icmp in an inet6 rule cannot match.
    r.src = Endpoint::any();
    r.proto = Proto::Icmp;
    assert_eq!(err(r).reason, Reason::FamilyMismatch);
}

#[test]
fn protocols() {
    let cases = [
        (Proto::Tcp, "meta l4proto tcp accept"),
        (Proto::Udp, "meta l4proto udp accept"),
        (Proto::TcpUdp, "meta l4proto { tcp, udp } accept"),
        (Proto::Icmp, "meta nfproto ipv4 meta l4proto icmp accept"),
        (Proto::Number(IPPROTO_CARP), "meta l4proto 112 accept"),
        (Proto::Number(IPPROTO_PFSYNC), "meta l4proto 240 accept"),
        (Proto::Number(47), "meta l4proto 47 accept"),
    ];
    for (p, want) in cases {
        let mut r = rule("filter/rule[0]");
        r.ipver = IpVersion::Inet46;
        r.proto = p;
        let l = one_line(r);
        assert!(l.contains(want), "{p:?}: {l}");
    }
    let mut r = rule("filter/rule[0]");
    r.ipver = IpVersion::Inet46;
    r.proto = Proto::Icmpv6;
    assert!(one_line(r).contains("meta nfproto ipv6 meta l4proto ipv6-icmp accept"));
    assert_eq!(Proto::parse("carp"), Some(Proto::Number(112)));
    assert_eq!(Proto::parse("pfsync"), Some(Proto::Number(240)));
    assert_eq!(Proto::parse("TCP/UDP"), Some(Proto::TcpUdp));
    assert_eq!(Proto::parse("6"), Some(Proto::Tcp));
    assert_eq!(Proto::parse("256"), None);
    assert_eq!(Proto::parse("bogus"), None);
}

#[test]
fn addresses() {
    let cases: Vec<(AddrMatch, bool, &str)> = vec![
        (AddrMatch::Any, false, "meta nfproto ipv4 accept"),
        (
            AddrMatch::SelfAddrs,
            false,
            "meta nfproto ipv4 fib daddr type local accept",
        ),
        (
            AddrMatch::SelfAddrs,
            true,
            "meta nfproto ipv4 fib daddr type != local accept",
        ),
        (
            AddrMatch::IfNet("lan".into()),
            false,
            "ip daddr 192.168.1.0/24 accept",
        ),
        (
            AddrMatch::IfNet("lan".into()),
            true,
            "ip daddr != 192.168.1.0/24 accept",
        ),
        (
            AddrMatch::IfAddr("lan".into()),
            false,
            "ip daddr { 192.168.1.10, 192.168.1.1 } accept",
        ),
        (
            AddrMatch::IfAddr("opt1".into()),
            false,
            "ip daddr 10.0.0.1 accept",
        ),
        (
            AddrMatch::Nets(vec![
                Cidr::parse("10.1.2.3/8").unwrap(),
                Cidr::parse("1.2.3.4").unwrap(),
            ]),
            true,
            "ip daddr != { 10.0.0.0/8, 1.2.3.4 } accept",
        ),
    ];
    for (a, not, want) in cases {
        let mut r = rule("filter/rule[0]");
        r.dst = Endpoint {
            addr: a.clone(),
            not,
            ports: vec![],
        };
        let l = one_line(r);
        assert!(l.contains(want), "{a:?} {not}: {l}");
    }
    let mut r = rule("filter/rule[0]");
    r.src = Endpoint {
        addr: AddrMatch::SelfAddrs,
        not: false,
        ports: vec![],
    };
    assert!(one_line(r).contains("fib saddr type local"));
    // A negated interface network of a family the interface lacks is no constraint.
    let mut r = rule("filter/rule[0]");
    r.ipver = IpVersion::Inet6;
    r.src = Endpoint {
        addr: AddrMatch::IfNet("wan".into()),
        not: true,
        ports: vec![],
    };
    assert!(one_line(r).contains("meta nfproto ipv6 accept"));
    let mut r = rule("filter/rule[0]");
    r.src = Endpoint::addr(AddrMatch::IfAddr("opt9".into()));
    assert_eq!(err(r).to_string(), "filter/rule[0]: unknown interface opt9");
}

#[test]
fn ports() {
    assert_eq!(
        PortRange::parse_list("80"),
        Some(vec![PortRange::single(80)])
    );
    assert_eq!(
        PortRange::parse_list("1000-2000"),
        Some(vec![PortRange { lo: 1000, hi: 2000 }])
    );
    assert_eq!(
        PortRange::parse_list("1000:2000"),
        Some(vec![PortRange { lo: 1000, hi: 2000 }])
    );
    assert_eq!(PortRange::parse_list("2000:1000"), None);
    assert_eq!(PortRange::parse_list("0"), None);
    assert_eq!(PortRange::parse_list("http"), None);
    assert_eq!(PortRange::parse_list("70000"), None);
    assert_eq!(PortRange::parse_list(""), None);

    let mut r = rule("filter/rule[0]");
    r.proto = Proto::Tcp;
    r.src.ports = vec![PortRange {
        lo: 1024,
        hi: 65535,
    }];
    r.dst = Endpoint {
        addr: AddrMatch::Nets(vec![Cidr::parse("172.18.0.250").unwrap()]),
        not: true,
        ports: vec![PortRange::single(80), PortRange { lo: 1000, hi: 2000 }],
    };
    assert_eq!(
        one_line(r.clone()),
        "iifname \"em0\" meta nfproto ipv4 tcp sport 1024-65535 ip daddr != 172.18.0.250 tcp dport { 80, 1000-2000 } accept comment \"filter/rule[0]\""
    );
    r.proto = Proto::Udp;
    assert!(
        one_line(r.clone())
            .contains("udp sport 1024-65535 ip daddr != 172.18.0.250 udp dport { 80, 1000-2000 }")
    );
    r.proto = Proto::TcpUdp;
    assert!(one_line(r.clone()).contains("meta l4proto { tcp, udp } th sport 1024-65535 ip daddr != 172.18.0.250 th dport { 80, 1000-2000 }"));
    r.proto = Proto::Tcp;
    r.dst.ports = vec![PortRange { lo: 2000, hi: 1000 }];
    assert_eq!(err(r.clone()).reason, Reason::BadPort("2000-1000".into()));
    r.proto = Proto::Icmp;
    assert_eq!(err(r).reason, Reason::PortsWithoutTcpUdp);
}

#[test]
fn log_descr_and_comment_quoting() {
    let mut r = rule("filter/rule[4]");
    r.log = true;
    r.descr = "say \"hi\"\\ now\n".into();
    let t = render_rules(vec![rule("filter/rule[0]"), r]);
    let l = chain_lines(&t, "rules_in");
    assert_eq!(
        l[1],
        "iifname \"em0\" meta nfproto ipv4 log prefix \"tandem rule 2: \" accept comment \"filter/rule[4] say 'hi'/ now\""
    );
    let long = "x".repeat(300);
    let mut r = rule("filter/rule[0]");
    r.descr = long;
    let l = one_line(r);
    let c = l.split("comment ").nth(1).unwrap();
    assert!(c.len() <= 122, "{}", c.len());
}

#[test]
fn quick_and_last_match_wins() {
    // pf order: q1 (quick), n2, q3 (quick), n4 → rendered q1, q3, n4, n2.
    let mk = |p: &str, quick: bool| {
        let mut r = rule(p);
        r.quick = quick;
        r
    };
    let t = render_rules(vec![
        mk("filter/rule[1]", true),
        mk("filter/rule[2]", false),
        mk("filter/rule[3]", true),
        mk("filter/rule[4]", false),
    ]);
    let order: Vec<String> = chain_lines(&t, "rules_in")
        .iter()
        .map(|l| l.split("comment ").nth(1).unwrap().to_string())
        .collect();
    assert_eq!(
        order,
        [
            "\"filter/rule[1]\"",
            "\"filter/rule[3]\"",
            "\"filter/rule[4]\"",
            "\"filter/rule[2]\""
        ]
    );
}

fn full_auto() -> Automatic {
    Automatic {
        carp: true,
        carp_peers: vec![ip("172.18.0.102"), ip("2001:db8::2")],
        dhcp_failover: vec![("lan".into(), ip("192.168.1.20"))],
        ha_sync_peers: vec![ip("10.0.0.2")],
        webgui_port: 443,
        pfsync: Some("opt1".into()),
        anti_lockout: Some("lan".into()),
        dhcp_server: vec!["lan".into()],
        dhcp_client4: vec!["wan".into()],
        dhcp_client6: vec!["wan".into()],
    }
}

#[test]
fn automatic_rules() {
    let set = FilterSet {
        auto: full_auto(),
        rules: vec![],
    };
    let t = render_filter(&set, &view()).unwrap().text;
    let input = chain_lines(&t, "input");
    let want = [
        "type filter hook input priority filter; policy drop;",
        "ct state established,related accept",
        "ct state invalid drop",
        "tcp flags & (fin|syn|rst|ack) != syn ct state new drop comment \"state only from a syn (pf flags S/SA)\"",
        "iifname \"lo\" accept comment \"automatic: loopback\"",
        "meta l4proto ipv6-icmp icmpv6 type { nd-router-solicit, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert } accept comment \"automatic: ipv6 neighbour discovery\"",
        "ip protocol 112 ip daddr 224.0.0.18 accept comment \"automatic: carp\"",
        "ip6 nexthdr 112 ip6 daddr ff02::12 accept comment \"automatic: carp\"",
        "ip protocol 112 ip saddr 172.18.0.102 accept comment \"automatic: carp unicast peer\"",
        "ip6 nexthdr 112 ip6 saddr 2001:db8::2 accept comment \"automatic: carp unicast peer\"",
        "iifname \"em2\" meta l4proto 240 accept comment \"automatic: pfsync\"",
        "iifname \"em0\" ip saddr 192.168.1.20 meta l4proto { tcp, udp } th dport { 519, 520 } accept comment \"automatic: dhcp failover\"",
        "iifname \"em0\" ip saddr 192.168.1.20 tcp dport 8647 accept comment \"automatic: dhcp failover\"",
        "ip saddr 10.0.0.2 tcp dport 443 accept comment \"automatic: ha sync\"",
        "iifname \"em0\" fib daddr . iif type local tcp dport { 22, 80, 443 } accept comment \"automatic: anti-lockout\"",
        "iifname \"em0\" udp dport 67 accept comment \"automatic: dhcp server\"",
        "iifname \"em1\" udp sport 67 udp dport 68 accept comment \"automatic: dhcp client\"",
        "iifname \"em1\" ip6 saddr fe80::/10 udp sport 547 udp dport 546 accept comment \"automatic: dhcpv6 client\"",
        "jump rules_in",
    ];
    assert_eq!(input, want);
    let output = chain_lines(&t, "output");
    assert!(output.contains(
        &"ip protocol 112 ip daddr 224.0.0.18 accept comment \"automatic: carp\"".to_string()
    ));
    assert!(output.contains(
        &"oifname \"em2\" meta l4proto 240 accept comment \"automatic: pfsync\"".to_string()
    ));
    assert!(output.contains(&"ip protocol 112 ip daddr 172.18.0.102 accept comment \"automatic: carp unicast peer\"".to_string()));

    // A custom webgui port joins the anti-lockout ports; an unknown pfsync interface is an error.
    let mut a = full_auto();
    a.webgui_port = 8443;
    let t = render_filter(
        &FilterSet {
            auto: a.clone(),
            rules: vec![],
        },
        &view(),
    )
    .unwrap()
    .text;
    assert!(
        t.contains("tcp dport { 22, 80, 443, 8443 } accept comment \"automatic: anti-lockout\"")
    );
    assert!(t.contains("ip saddr 10.0.0.2 tcp dport 8443 accept"));
    a.pfsync = Some("opt7".into());
    let e = render_filter(
        &FilterSet {
            auto: a,
            rules: vec![],
        },
        &view(),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "hasync/pfsyncinterface: unknown interface opt7"
    );
    // Nothing CARP related without CARP VIPs.
    let t = render_filter(&FilterSet::default(), &view()).unwrap().text;
    assert!(!t.contains("112"));
}

#[test]
fn ruleset_script_and_digest() {
    let rs = render_filter(&FilterSet::default(), &view()).unwrap();
    let s = rs.script();
    assert!(s.starts_with(
        "table inet tandem_filter {}\ndelete table inet tandem_filter\n# generated by tandem"
    ));
    assert_eq!(rs.digest().len(), 64);
    let again = render_filter(&FilterSet::default(), &view()).unwrap();
    assert_eq!(rs.digest(), again.digest());
    let mut r = rule("filter/rule[0]");
    r.log = true;
    let other = render_filter(
        &FilterSet {
            auto: Automatic::default(),
            rules: vec![r],
        },
        &view(),
    )
    .unwrap();
    assert_ne!(rs.digest(), other.digest());
    let nat = render_nat(&NatSet::default(), &view()).unwrap();
    assert!(nat.script().starts_with(
        "table ip tandem_nat {}\ndelete table ip tandem_nat\ntable ip6 tandem_nat {}\ndelete table ip6 tandem_nat\n"
    ));
}

fn nat_rule(path: &str) -> NatRule {
    NatRule {
        path: path.to_string(),
        descr: String::new(),
        interface: "wan".into(),
        proto: Proto::Any,
        src: Endpoint::addr(AddrMatch::Nets(vec![
            Cidr::parse("192.168.1.0/24").unwrap(),
        ])),
        dst: Endpoint::any(),
        target: NatTarget::Addr(ip("172.18.0.100")),
        static_port: false,
        nonat: false,
    }
}

fn nat_lines(set: &NatSet, family: &str) -> Vec<String> {
    let t = render_nat(set, &view()).unwrap().text;
    let head = format!("table {family} tandem_nat {{");
    let Some(i) = t.find(&head) else {
        return vec![];
    };
    chain_lines(&t[i..], "postrouting")
}

#[test]
fn nat_modes() {
    let manual = vec![nat_rule("nat/outbound/rule[0]")];
    let auto_line =
        "oifname \"em1\" ip saddr 192.168.1.0/24 masquerade comment \"automatic: lan to wan\"";
    let auto_line2 =
        "oifname \"em1\" ip saddr 10.0.0.0/24 masquerade comment \"automatic: opt1 to wan\"";
    let manual_line = "oifname \"em1\" ip saddr 192.168.1.0/24 snat to 172.18.0.100 comment \"nat/outbound/rule[0]\"";
    let carp = "ip protocol 112 accept comment \"never nat carp\"";
    let hook = "type nat hook postrouting priority srcnat; policy accept;";

    let set = |mode| NatSet {
        mode,
        rules: manual.clone(),
    };
    assert_eq!(
        nat_lines(&set(NatMode::Automatic), "ip"),
        [hook, carp, auto_line, auto_line2]
    );
    assert_eq!(
        nat_lines(&set(NatMode::Hybrid), "ip"),
        [hook, carp, manual_line, auto_line, auto_line2]
    );
    assert_eq!(
        nat_lines(&set(NatMode::Manual), "ip"),
        [hook, carp, manual_line]
    );
    let t = render_nat(&set(NatMode::Disabled), &view()).unwrap().text;
    assert!(t.ends_with("table ip tandem_nat {\n}\n"), "{t}");
    assert!(!t.contains("ip6"));
}

#[test]
fn nat_rules() {
    let mode = NatMode::Manual;
    let mut r = nat_rule("nat/outbound/rule[0]");
    r.proto = Proto::Udp;
    r.dst.ports = vec![PortRange::single(500)];
    r.static_port = true;
    r.descr = "ISAKMP".into();
    let mut masq = nat_rule("nat/outbound/rule[1]");
    masq.target = NatTarget::Masquerade;
    masq.src = Endpoint::addr(AddrMatch::Nets(vec![Cidr::parse("127.0.0.0/8").unwrap()]));
    let mut sub = nat_rule("nat/outbound/rule[2]");
    sub.target = NatTarget::Subnet(Cidr::parse("172.18.0.96/29").unwrap());
    sub.dst = Endpoint {
        addr: AddrMatch::Nets(vec![Cidr::parse("8.8.8.8").unwrap()]),
        not: true,
        ports: vec![],
    };
    let mut ifaddr = nat_rule("nat/outbound/rule[3]");
    ifaddr.target = NatTarget::IfAddr("wan".into());
    ifaddr.src = Endpoint::addr(AddrMatch::IfNet("lan".into()));
    ifaddr.proto = Proto::TcpUdp;
    ifaddr.src.ports = vec![PortRange { lo: 1000, hi: 2000 }];
    let mut nonat = nat_rule("nat/outbound/rule[4]");
    nonat.nonat = true;
    nonat.dst = Endpoint::addr(AddrMatch::Nets(vec![Cidr::parse("10.0.0.0/8").unwrap()]));
    let set = NatSet {
        mode,
        rules: vec![r, masq, sub, ifaddr, nonat],
    };
    let l = nat_lines(&set, "ip");
    assert_eq!(
        l[2..],
        [
            "oifname \"em1\" ip saddr 192.168.1.0/24 ip daddr 10.0.0.0/8 accept comment \"nat/outbound/rule[4]\"",
            "oifname \"em1\" ip saddr 192.168.1.0/24 udp dport 500 snat to 172.18.0.100 comment \"nat/outbound/rule[0] ISAKMP (static-port)\"",
            "oifname \"em1\" ip saddr 127.0.0.0/8 masquerade comment \"nat/outbound/rule[1]\"",
            "oifname \"em1\" ip saddr 192.168.1.0/24 ip daddr != 8.8.8.8 snat to 172.18.0.96/29 comment \"nat/outbound/rule[2]\"",
            "oifname \"em1\" meta l4proto { tcp, udp } ip saddr 192.168.1.0/24 th sport 1000-2000 snat to 172.18.0.101 comment \"nat/outbound/rule[3]\"",
        ]
    );
    // No IPv6 table without IPv6 rules.
    assert!(nat_lines(&set, "ip6").is_empty());

    // An IPv6 target gets the ip6 table.
    let mut v6 = nat_rule("nat/outbound/rule[0]");
    v6.src = Endpoint::addr(AddrMatch::Nets(vec![Cidr::parse("fd00::/64").unwrap()]));
    v6.target = NatTarget::Addr(ip("2001:db8::100"));
    let set = NatSet {
        mode,
        rules: vec![v6.clone()],
    };
    assert_eq!(
        nat_lines(&set, "ip6")[1..],
        [
            "ip6 nexthdr 112 accept comment \"never nat carp\"",
            "oifname \"em1\" ip6 saddr fd00::/64 snat to 2001:db8::100 comment \"nat/outbound/rule[0]\"",
        ]
    );
    // Errors name the rule.
    let mut bad = v6.clone();
    bad.target = NatTarget::Addr(ip("172.18.0.100"));
    let e = render_nat(
        &NatSet {
            mode,
            rules: vec![bad],
        },
        &view(),
    )
    .unwrap_err();
    assert_eq!(e.reason, Reason::FamilyMismatch);
    let mut bad = nat_rule("nat/outbound/rule[7]");
    bad.interface = "opt9".into();
    let e = render_nat(
        &NatSet {
            mode,
            rules: vec![bad],
        },
        &view(),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "nat/outbound/rule[7]: unknown interface opt9"
    );
    let mut bad = nat_rule("nat/outbound/rule[7]");
    bad.target = NatTarget::IfAddr("lan6".into());
    assert!(
        render_nat(
            &NatSet {
                mode,
                rules: vec![bad]
            },
            &view()
        )
        .is_err()
    );
    let mut bad = nat_rule("nat/outbound/rule[7]");
    bad.dst.ports = vec![PortRange::single(500)];
    let e = render_nat(
        &NatSet {
            mode,
            rules: vec![bad],
        },
        &view(),
    )
    .unwrap_err();
    assert_eq!(e.reason, Reason::PortsWithoutTcpUdp);

    // `optNip` of an interface without a static address: masquerade out of that interface,
    // an error for any other.
    let mut v = view();
    v.interfaces.push(IfView::new("opt2", "em3"));
    let mut dynamic = nat_rule("nat/outbound/rule[8]");
    dynamic.interface = "opt2".into();
    dynamic.target = NatTarget::IfAddr("opt2".into());
    let set = NatSet {
        mode,
        rules: vec![dynamic.clone()],
    };
    let t = render_nat(&set, &v).unwrap().text;
    assert!(
        t.contains(
            "oifname \"em3\" ip saddr 192.168.1.0/24 masquerade comment \"nat/outbound/rule[8]\""
        ),
        "{t}"
    );
    dynamic.interface = "wan".into();
    let set = NatSet {
        mode,
        rules: vec![dynamic],
    };
    let e = render_nat(&set, &v).unwrap_err();
    assert_eq!(
        e.to_string(),
        "nat/outbound/rule[8]: interface opt2 has no static address"
    );
}

#[test]
fn cidr() {
    assert_eq!(
        Cidr::parse("192.168.1.10/24").unwrap().to_string(),
        "192.168.1.0/24"
    );
    assert_eq!(Cidr::parse("10.0.0.1/32").unwrap().to_string(), "10.0.0.1");
    assert_eq!(Cidr::parse("0.0.0.0/0").unwrap().to_string(), "0.0.0.0/0");
    assert_eq!(
        Cidr::parse("2001:db8::1/64").unwrap().to_string(),
        "2001:db8::/64"
    );
    assert_eq!(Cidr::parse("::/0").unwrap().to_string(), "::/0");
    assert!(Cidr::parse("10.0.0.0/33").is_none());
    assert!(Cidr::parse("lan").is_none());
    assert!(Cidr::parse("10.0.0.0/x").is_none());
}

mod prop {
    use proptest::prelude::*;

    use super::*;

    fn addr(i: u8, s: &str) -> AddrMatch {
        match i % 7 {
            0 => AddrMatch::Any,
            1 => AddrMatch::SelfAddrs,
            2 => AddrMatch::IfNet("lan".into()),
            3 => AddrMatch::IfAddr("wan".into()),
            4 => AddrMatch::IfNet("nope".into()),
            5 => AddrMatch::Nets(Cidr::parse(s).into_iter().collect()),
            _ => AddrMatch::Nets(vec![]),
        }
    }

    /// Selectors, an address, port pairs and a description.
    type Case = (u8, u8, u8, u8, u8, String, Vec<(u16, u16)>, String);

    fn mk(v: &Case) -> Rule {
        let (a, b, c, d, e, s, ports, descr) = v;
        let ports: Vec<PortRange> = ports.iter().map(|&(lo, hi)| PortRange { lo, hi }).collect();
        Rule {
            path: format!("filter/rule[{a}]"),
            descr: descr.clone(),
            action: [Action::Pass, Action::Block, Action::Reject][(*a % 3) as usize],
            quick: b % 2 == 0,
            log: b % 3 == 0,
            interfaces: match c % 4 {
                0 => vec![],
                1 => vec!["lan".into()],
                2 => vec!["lan".into(), "opt1".into()],
                _ => vec!["x".into()],
            },
            direction: [Direction::In, Direction::Out, Direction::Any][(*c % 3) as usize],
            ipver: [IpVersion::Inet, IpVersion::Inet6, IpVersion::Inet46][(*d % 3) as usize],
            proto: Proto::parse(&e.to_string()).unwrap_or(Proto::Any),
            src: Endpoint {
                addr: addr(*d, s),
                not: b % 5 == 0,
                ports: ports.clone(),
            },
            dst: Endpoint {
                addr: addr(*e, s),
                not: a % 2 == 0,
                ports,
            },
        }
    }

    proptest! {
        /// Any IR renders to Ok or a typed error, never a panic, and rendering is deterministic.
        #[test]
        fn render_never_panics(rules in proptest::collection::vec(
            (any::<u8>(), any::<u8>(), any::<u8>(), any::<u8>(), any::<u8>(),
             "[0-9a-f:./]{0,20}", proptest::collection::vec((any::<u16>(), any::<u16>()), 0..3),
             "\\PC{0,40}"),
            0..12,
        )) {
            let set = FilterSet { auto: Automatic::default(), rules: rules.iter().map(mk).collect() };
            let a = render_filter(&set, &view());
            let b = render_filter(&set, &view());
            prop_assert_eq!(a.clone(), b);
            if let Ok(rs) = a {
                prop_assert!(rs.text.ends_with("}\n"), "unterminated table");
                // One comment per rendered rule line, every string literal closed.
                for l in rs.text.lines() {
                    prop_assert_eq!(l.matches('"').count() % 2, 0, "{}", l);
                }
            }
        }
    }
}
