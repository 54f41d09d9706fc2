//! config.xml: the example pair and the factory default, round trips, edits, validation findings,
//! section diffs and `tandem config check`.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Command;

use tandem::config::{
    AddrKind, Config, ConfigError, Direction, IpProtocol, NatMode, RuleAction, Severity, VipMode,
};

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

fn read(p: &str) -> String {
    std::fs::read_to_string(repo(p)).expect("repo file")
}

const MASTER: &str = "etc/examples/carp-master.xml";
const BACKUP: &str = "etc/examples/carp-backup.xml";
const DEFAULT: &str = "etc/config.xml";

fn parse(s: &str) -> Config {
    Config::parse(s.as_bytes()).expect("parses")
}

#[test]
fn shipped_configs_parse_and_validate_clean() {
    for f in [MASTER, BACKUP, DEFAULT] {
        let cfg = parse(&read(f));
        let findings = cfg.validate();
        assert!(findings.is_empty(), "{f}: {findings:#?}");
        assert!(cfg.errors().is_empty());
    }
    let d = Config::factory_default();
    assert_eq!(d.to_bytes(), read(DEFAULT).as_bytes());
}

#[test]
fn unchanged_round_trip_is_byte_identical() {
    for f in [MASTER, BACKUP, DEFAULT] {
        let s = read(f);
        assert_eq!(parse(&s).to_bytes(), s.as_bytes(), "{f}");
    }
    // Odd but valid formatting survives too.
    let odd = "<?xml version='1.0'?>\r\n<!-- c -->\n<opnsense  a = \"1\">\t<x y='&lt;'>&amp;<![CDATA[<z>]]></x ><e/><f></f></opnsense>\n";
    assert_eq!(parse(odd).to_bytes(), odd.as_bytes());
}

#[test]
fn master_example_typed_values() {
    let c = parse(&read(MASTER));
    assert_eq!(c.system.hostname, "OPNsense");
    assert_eq!(c.system.domain, "localdomain");
    assert_eq!(c.system.webgui_protocol, "https");
    assert_eq!(c.system.webgui_port, None);
    let root = &c.system.users[0];
    assert_eq!(root.name, "root");
    assert!(root.password_hash.starts_with("$2y$10$"), "bcrypt hash");
    assert_eq!(root.uid, Some(0));

    let wan = c.interface("wan").unwrap();
    assert_eq!(wan.device, "em1");
    assert!(wan.enabled);
    assert_eq!(wan.ipv4, Some((Ipv4Addr::new(172, 18, 0, 101), 24)));
    assert_eq!(wan.ipv6_mode.as_deref(), Some("dhcpv6"));
    assert_eq!(wan.gateway.as_deref(), Some("WANGW"));
    assert_eq!(wan.descr, None);
    let lan = c.interface_by_device("em0").unwrap();
    assert_eq!(lan.key, "lan");
    assert_eq!(lan.ipv4, Some((Ipv4Addr::new(192, 168, 1, 10), 24)));
    assert_eq!(lan.ipv6_mode.as_deref(), Some("track6"));
    let opt1 = c.interface("opt1").unwrap();
    assert_eq!(opt1.descr.as_deref(), Some("PFSYNC"));
    assert_eq!(opt1.device, "em2");
    assert_eq!(opt1.ipv4, Some((Ipv4Addr::new(10, 0, 0, 1), 24)));

    assert_eq!(c.gateways.len(), 1);
    let gw = &c.gateways[0];
    assert_eq!(gw.name, "WANGW");
    assert_eq!(gw.interface, "wan");
    assert_eq!(gw.address, Some(IpAddr::from([172, 18, 0, 250])));
    assert!(gw.defaultgw && gw.monitor_disable);

    assert_eq!(c.vips.len(), 2);
    let v1 = &c.vips[0];
    assert_eq!(v1.path, "virtualip/vip[1]");
    assert_eq!(v1.mode, VipMode::Carp);
    assert_eq!(
        (v1.interface.as_str(), v1.vhid, v1.advbase, v1.advskew),
        ("wan", Some(1), 1, 0)
    );
    assert_eq!((v1.addr, v1.prefix), (IpAddr::from([172, 18, 0, 100]), 24));
    assert_eq!(v1.password, "opnsense");
    assert_eq!(v1.descr, "VIP WANx");
    let v3 = &c.vips[1];
    assert_eq!(
        (v3.interface.as_str(), v3.vhid, v3.addr),
        ("lan", Some(3), IpAddr::from([192, 168, 1, 1]))
    );
    assert_eq!(c.carp_vips().count(), 2);

    assert_eq!(c.filter_rules.len(), 4);
    let r = &c.filter_rules[0];
    assert_eq!(r.action, RuleAction::Pass);
    assert_eq!(r.interfaces, ["wan"]);
    assert_eq!(r.protocol.as_deref(), Some("carp"));
    assert_eq!(r.source.kind, AddrKind::Any);
    assert_eq!(r.destination.kind, AddrKind::Any);
    assert_eq!(r.direction, Direction::In);
    assert!(r.quick && !r.disabled);
    assert_eq!(r.statetype, "keep state");
    let r = &c.filter_rules[1];
    assert_eq!(r.source.kind, AddrKind::Network("lan".into()));
    assert_eq!(r.ipprotocol, IpProtocol::Inet);
    assert_eq!(r.descr, "Default allow LAN to any rule");
    assert_eq!(c.filter_rules[2].ipprotocol, IpProtocol::Inet6);
    let r = &c.filter_rules[3];
    assert_eq!(r.interfaces, ["opt1"]);
    assert_eq!(r.protocol, None);

    assert_eq!(c.nat.mode, NatMode::Advanced);
    assert_eq!(c.nat.rules.len(), 6);
    let targets: Vec<Option<&str>> = c.nat.rules.iter().map(|r| r.target.as_deref()).collect();
    assert_eq!(
        targets,
        [
            None,
            None,
            Some("172.18.0.100"),
            Some("172.18.0.100"),
            None,
            None
        ]
    );
    let n = &c.nat.rules[2];
    assert_eq!(n.interface, "wan");
    assert_eq!(n.source.kind, AddrKind::Network("192.168.1.0/24".into()));
    assert_eq!(n.destination.port.as_deref(), Some("500"));
    assert!(n.static_port);
    assert_eq!(n.target_subnet, Some(0));
    assert!(!c.nat.rules[3].static_port);
    assert_eq!(c.nat.rules[3].destination.port, None);
    assert_eq!(
        c.nat.rules[5].source.kind,
        AddrKind::Network("10.0.0.1/32".into())
    );

    assert_eq!(c.dhcpd.len(), 1);
    let d = &c.dhcpd[0];
    assert_eq!(d.interface, "lan");
    assert!(d.enabled);
    assert_eq!(
        d.range,
        Some((
            Ipv4Addr::new(192, 168, 1, 10),
            Ipv4Addr::new(192, 168, 1, 245)
        ))
    );
    assert_eq!(d.failover_peerip, Some(Ipv4Addr::new(192, 168, 1, 20)));
    assert_eq!(d.failover_split, None);
    assert_eq!(d.gateway.as_deref(), Some("192.168.1.1"));
    assert_eq!(d.dns_servers, [Ipv4Addr::new(192, 168, 1, 1)]);
    assert_eq!(d.default_lease_time, None);

    let h = &c.hasync;
    assert_eq!(h.pfsync_interface.as_deref(), Some("opt1"));
    assert_eq!(h.pfsync_peer, Some(IpAddr::from([10, 0, 0, 2])));
    assert_eq!(h.synchronize_to.as_deref(), Some("10.0.0.2"));
    assert_eq!(h.username.as_deref(), Some("root"));
    assert_eq!(h.password.as_deref(), Some("opnsense"));
    let want: BTreeSet<String> = ["dhcpd", "nat", "rules", "staticroutes", "virtualip"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(h.syncitems, want);
    assert!(!h.disable_preempt);
    assert!(!c.maintenance);
}

#[test]
fn backup_example_differs_as_in_the_howto() {
    let m = parse(&read(MASTER));
    let b = parse(&read(BACKUP));
    assert!(b.vips.iter().all(|v| v.advskew == 100));
    assert_eq!(
        b.vips.iter().map(|v| v.vhid).collect::<Vec<_>>(),
        [Some(1), Some(3)]
    );
    assert_eq!(
        b.interface("lan").unwrap().ipv4,
        Some((Ipv4Addr::new(192, 168, 1, 20), 24))
    );
    assert_eq!(
        b.interface("wan").unwrap().ipv4,
        Some((Ipv4Addr::new(172, 18, 0, 102), 24))
    );
    assert_eq!(
        b.interface("opt1").unwrap().ipv4,
        Some((Ipv4Addr::new(10, 0, 0, 2), 24))
    );
    assert_eq!(
        b.dhcpd[0].failover_peerip,
        Some(Ipv4Addr::new(192, 168, 1, 10))
    );
    assert_eq!(b.hasync.pfsync_peer, Some(IpAddr::from([10, 0, 0, 1])));
    assert_eq!(b.hasync.pfsync_interface.as_deref(), Some("opt1"));
    assert_eq!(b.hasync.synchronize_to, None);
    assert!(b.hasync.syncitems.is_empty());
    // Sections the master syncs are identical (filter, nat, gateways); the rest differ.
    let changed = m.changed_sections(&b);
    let want: BTreeSet<String> = ["dhcpd", "hasync", "interfaces", "virtualip"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(changed, want);
}

#[test]
fn factory_default_values() {
    let c = Config::factory_default();
    let lan = c.interface("lan").unwrap();
    assert_eq!(lan.device, "em0");
    assert_eq!(lan.ipv4, Some((Ipv4Addr::new(192, 168, 1, 1), 24)));
    let wan = c.interface("wan").unwrap();
    assert_eq!(wan.device, "em1");
    assert_eq!(wan.ipv4, None);
    assert_eq!(wan.ipv4_mode.as_deref(), Some("dhcp"));
    assert!(c.vips.is_empty());
    assert_eq!(c.nat.mode, NatMode::Automatic);
    assert_eq!(c.filter_rules.len(), 2);
    assert!(c.filter_rules.iter().all(|r| r.interfaces == ["lan"]
        && r.action == RuleAction::Pass
        && r.source.kind == AddrKind::Network("lan".into())));
    assert_eq!(c.hasync.pfsync_interface, None);
}

#[test]
fn maintenance_edit_keeps_unknown_elements_and_reverts_exactly() {
    let base = read(MASTER).replace(
        "  <staticroutes/>",
        "  <staticroutes/>\n  <tandem_unknown k=\"v\"><deep a='1'>x &amp; y</deep><!-- note --></tandem_unknown>",
    );
    let base = base.replace("<vip>", "<vip uuid=\"abc-1\" extra=\"kept\">");
    let mut c = parse(&base);
    assert_eq!(c.vips[0].uuid.as_deref(), Some("abc-1"));
    let before = c.section_digests();
    c.set_maintenance(true);
    assert!(c.maintenance);
    let out = String::from_utf8(c.to_bytes()).unwrap();
    assert!(out.contains(
        "<tandem_unknown k=\"v\"><deep a='1'>x &amp; y</deep><!-- note --></tandem_unknown>"
    ));
    assert!(out.contains("<vip uuid=\"abc-1\" extra=\"kept\">"));
    assert!(out.contains(
        "  </hasync>\n  <virtualip_carp_maintenancemode>1</virtualip_carp_maintenancemode>\n</opnsense>"
    ), "{out}");
    let again = parse(&out);
    assert!(again.maintenance);
    assert!(again.validate().is_empty());
    let changed = parse(&base).changed_sections(&again);
    assert_eq!(
        changed,
        BTreeSet::from(["virtualip_carp_maintenancemode".to_string()])
    );
    assert_ne!(before, c.section_digests());
    // Setting it twice adds nothing; leaving restores the original bytes.
    c.set_maintenance(true);
    assert_eq!(c.to_bytes(), out.as_bytes());
    c.set_maintenance(false);
    assert!(!c.maintenance);
    assert_eq!(c.to_bytes(), base.as_bytes());
    c.reparse();
    assert!(!c.maintenance);
}

#[test]
fn interface_address_edit_changes_only_interfaces() {
    let src = read(MASTER).replace("<if>em0</if>", "<if>em0</if>\n      <tandem_x attr=\"1\"/>");
    let old = parse(&src);
    let mut c = old.clone();
    c.doc
        .root_mut()
        .child_mut("interfaces")
        .and_then(|i| i.child_mut("lan"))
        .unwrap()
        .set_child_text("ipaddr", "192.168.1.11");
    c.reparse();
    assert_eq!(
        c.interface("lan").unwrap().ipv4,
        Some((Ipv4Addr::new(192, 168, 1, 11), 24))
    );
    assert!(c.validate().is_empty(), "{:?}", c.validate());
    let out = String::from_utf8(c.to_bytes()).unwrap();
    assert_eq!(
        out,
        src.replace(
            "<ipaddr>192.168.1.10</ipaddr>",
            "<ipaddr>192.168.1.11</ipaddr>"
        )
    );
    assert!(out.contains("<tandem_x attr=\"1\"/>"));
    assert_eq!(
        old.changed_sections(&c),
        BTreeSet::from(["interfaces".to_string()])
    );
    assert!(old.changed_sections(&old.clone()).is_empty());

    // Removing a section and adding a new one are both changes.
    let mut d = old.clone();
    d.doc.root_mut().remove_children("gateways");
    d.doc
        .root_mut()
        .append(tandem::config::dom::Element::with_text("newsection", "1"));
    d.reparse();
    assert_eq!(
        old.changed_sections(&d),
        BTreeSet::from(["gateways".to_string(), "newsection".to_string()])
    );
    // The interface now names a gateway that no longer exists.
    assert!(
        d.errors()
            .iter()
            .any(|f| f.path == "interfaces/wan/gateway" && f.message.contains("WANGW"))
    );
}

/// Apply `(from, to)` replacements (each must match) to the master example.
fn mutate(edits: &[(&str, &str)]) -> String {
    let mut s = read(MASTER);
    for (from, to) in edits {
        assert!(s.contains(from), "pattern {from:?} not in master example");
        s = s.replacen(from, to, 1);
    }
    s
}

fn add_vip(body: &str) -> (&'static str, String) {
    (
        "  </virtualip>",
        format!("    <vip>{body}</vip>\n  </virtualip>"),
    )
}

/// Edits to the master example, the expected finding's path, a part of its message, its severity.
type Case<'a> = (Vec<(&'a str, String)>, &'a str, &'a str, Severity);

#[test]
fn invalid_configs_give_path_and_reason() {
    let lo0 = "  <interfaces>\n    <lo0><enable>1</enable><if>lo0</if><ipaddr>10.99.0.1</ipaddr><subnet>32</subnet></lo0>";
    let opt1_off = "<if>em2</if>\n      <enable>0</enable>";
    let cases: Vec<Case> = vec![
        (
            vec![("<interface>wan</interface>\n      <vhid>1</vhid>", "<interface>lan</interface>\n      <vhid>3</vhid>".into())],
            "virtualip/vip[2]",
            "vhid 3 is used twice on interface lan",
            Severity::Error,
        ),
        (vec![("<vhid>1</vhid>", "<vhid>abc</vhid>".into())], "virtualip/vip[1]/vhid", "vhid \"abc\" is not a number", Severity::Error),
        (vec![("<vhid>1</vhid>", "<vhid>256</vhid>".into())], "virtualip/vip[1]/vhid", "vhid 256 is out of range 1-255", Severity::Error),
        (vec![("<vhid>1</vhid>", "<vhid>0</vhid>".into())], "virtualip/vip[1]/vhid", "out of range 1-255", Severity::Error),
        (vec![("<vhid>1</vhid>", "<vhid/>".into())], "virtualip/vip[1]", "carp vip needs a vhid", Severity::Error),
        (vec![("<advskew>0</advskew>", "<advskew>255</advskew>".into())], "virtualip/vip[1]/advskew", "advskew 255 is out of range 0-254", Severity::Error),
        (vec![("<advbase>1</advbase>", "<advbase>0</advbase>".into())], "virtualip/vip[1]/advbase", "advbase 0 is out of range 1-254", Severity::Error),
        (
            vec![("<password>opnsense</password>\n      <descr>VIP LAN", "<password/>\n      <descr>VIP LAN".into())],
            "virtualip/vip[2]",
            "carp vip needs a password",
            Severity::Error,
        ),
        (
            vec![("<password>opnsense</password>", "<password>0123456789abcdefghijk</password>".into())],
            "virtualip/vip[1]",
            "carp password is 21 bytes",
            Severity::Warning,
        ),
        (
            vec![add_vip("<mode>ipalias</mode><interface>lan</interface><vhid>9</vhid><subnet>192.168.1.2</subnet><subnet_bits>24</subnet_bits>")],
            "virtualip/vip[3]",
            "vhid 9 must be defined on interface lan as a CARP VIP first",
            Severity::Error,
        ),
        (
            vec![add_vip("<mode>ipalias</mode><interface>wan</interface><vhid>3</vhid><subnet>172.18.0.99</subnet><subnet_bits>24</subnet_bits>")],
            "virtualip/vip[3]",
            "vhid 3 must be defined on interface wan as a CARP VIP first",
            Severity::Error,
        ),
        (
            vec![("<descr>VIP WANx</descr>", "<descr>VIP WANx</descr><peer6>fe80::2</peer6>".into())],
            "virtualip/vip[1]",
            "peer6 (IPv6 unicast peer) is set on an IPv4 vip",
            Severity::Error,
        ),
        (
            vec![("<subnet>192.168.1.1</subnet>", "<subnet>192.168.1.0</subnet>".into())],
            "virtualip/vip[2]",
            "192.168.1.0 is the network address of 192.168.1.0/24",
            Severity::Error,
        ),
        (
            vec![("<subnet>172.18.0.100</subnet>", "<subnet>172.18.0.255</subnet>".into())],
            "virtualip/vip[1]",
            "is the broadcast address",
            Severity::Error,
        ),
        (
            vec![add_vip("<mode>ipalias</mode><interface>wan</interface><subnet>172.18.0.100</subnet><subnet_bits>32</subnet_bits>")],
            "virtualip/vip[3]",
            "address 172.18.0.100 is already used by virtualip/vip[1]",
            Severity::Error,
        ),
        (
            vec![("<subnet>192.168.1.1</subnet>", "<subnet>192.168.1.10</subnet>".into())],
            "virtualip/vip[2]",
            "address 192.168.1.10 is the address of interface lan",
            Severity::Error,
        ),
        (
            vec![
                ("  <interfaces>", lo0.into()),
                add_vip("<mode>carp</mode><interface>lo0</interface><vhid>5</vhid><password>pw</password><subnet>10.99.0.2</subnet><subnet_bits>32</subnet_bits>"),
            ],
            "virtualip/vip[3]",
            "carp is not possible on interface lo0",
            Severity::Error,
        ),
        (vec![("<interface>wan</interface>\n      <vhid>1</vhid>", "<interface>opt9</interface>\n      <vhid>1</vhid>".into())], "virtualip/vip[1]", "interface opt9 does not exist", Severity::Error),
        (
            vec![
                ("<if>em2</if>\n      <enable>1</enable>", opt1_off.into()),
                add_vip("<mode>carp</mode><interface>opt1</interface><vhid>7</vhid><password>pw</password><subnet>10.0.0.100</subnet><subnet_bits>24</subnet_bits>"),
            ],
            "virtualip/vip[3]",
            "interface opt1 is not enabled",
            Severity::Error,
        ),
        (vec![("<mode>carp</mode>", "<mode>vrrp</mode>".into())], "virtualip/vip[1]/mode", "unknown vip mode \"vrrp\"", Severity::Error),
        (vec![("<subnet>172.18.0.100</subnet>", "<subnet>172.18.0.x</subnet>".into())], "virtualip/vip[1]/subnet", "not a valid IP address", Severity::Error),
        (vec![("<ipaddr>192.168.1.10</ipaddr>", "<ipaddr>192.168.1.300</ipaddr>".into())], "interfaces/lan/ipaddr", "ipaddr \"192.168.1.300\" is not a valid IPv4 address", Severity::Error),
        (vec![("<subnet>24</subnet>", "<subnet>33</subnet>".into())], "interfaces/wan/subnet", "subnet 33 is out of range 0-32", Severity::Error),
        (vec![("<ipaddr>192.168.1.10</ipaddr>", "<ipaddr>192.168.1.0</ipaddr>".into())], "interfaces/lan/ipaddr", "192.168.1.0 is the network address of 192.168.1.0/24", Severity::Error),
        (vec![("<if>em2</if>", "<if>em0</if>".into())], "interfaces/opt1", "device em0 is already assigned to interface lan", Severity::Error),
        (vec![("<gateway>WANGW</gateway>", "<gateway>WANGW2</gateway>".into())], "interfaces/wan/gateway", "gateway WANGW2 is not defined in gateways", Severity::Error),
        (vec![("<pfsyncinterface>opt1</pfsyncinterface>", "<pfsyncinterface>opt7</pfsyncinterface>".into())], "hasync/pfsyncinterface", "interface opt7 does not exist", Severity::Error),
        (vec![("<pfsyncpeerip>10.0.0.2</pfsyncpeerip>", "<pfsyncpeerip>10.0.0.2</pfsyncpeerip><pfsyncversion>1500</pfsyncversion>".into())], "hasync/pfsyncversion", "pfsyncversion 1500 is not 1301 or 1400", Severity::Error),
        (vec![("<synchronizetoip>10.0.0.2</synchronizetoip>", "<synchronizetoip>10.0.0.1</synchronizetoip>".into())], "hasync/synchronizetoip", "this node's own address", Severity::Error),
        (vec![("<to>192.168.1.245</to>", "<to>192.168.2.245</to>".into())], "dhcpd/lan/range", "range 192.168.1.10-192.168.2.245 is not inside interface lan subnet 192.168.1.0/24", Severity::Error),
        (vec![("<from>192.168.1.10</from>", "<from>192.168.1.250</from>".into())], "dhcpd/lan/range", "range start 192.168.1.250 is after its end 192.168.1.245", Severity::Error),
        (vec![("<failover_peerip>192.168.1.20</failover_peerip>", "<failover_peerip>10.0.0.2</failover_peerip>".into())], "dhcpd/lan/failover_peerip", "failover peer 10.0.0.2 is not inside interface lan subnet 192.168.1.0/24", Severity::Error),
        (vec![("<failover_peerip>192.168.1.20</failover_peerip>", "<failover_peerip>192.168.1.20</failover_peerip><failover_split>half</failover_split>".into())], "dhcpd/lan/failover_split", "failover_split \"half\" is not a number", Severity::Error),
        (vec![("<dnsserver>192.168.1.1</dnsserver>", "<dnsserver>dns.example</dnsserver>".into())], "dhcpd/lan/dnsserver[1]", "not a valid IPv4 address", Severity::Error),
        (vec![("<interface>wan</interface>\n      <ipprotocol>inet</ipprotocol>", "<interface>opt5</interface>\n      <ipprotocol>inet</ipprotocol>".into())], "filter/rule[1]", "interface opt5 does not exist", Severity::Error),
        (vec![("<type>pass</type>", "<type>allow</type>".into())], "filter/rule[1]/type", "unknown rule action \"allow\"", Severity::Error),
        (vec![("<mode>advanced</mode>", "<mode>manual</mode>".into())], "nat/outbound/mode", "unknown outbound NAT mode \"manual\"", Severity::Error),
        (vec![("<interface>wan</interface>\n        <source>", "<interface>opt4</interface>\n        <source>".into())], "nat/outbound/rule[1]", "interface opt4 does not exist", Severity::Error),
        (vec![("<target>172.18.0.100</target>", "<target>other-subnet</target>".into())], "nat/outbound/rule[3]", "target other-subnet needs a targetip", Severity::Error),
        (vec![("<protocol>https</protocol>", "<protocol>gopher</protocol>".into())], "system/webgui/protocol", "neither http nor https", Severity::Error),
        (vec![("<port/>", "<port>99999</port>".into())], "system/webgui/port", "port 99999 is out of range", Severity::Error),
        (vec![("<gateway>172.18.0.250</gateway>", "<gateway>172.18.0.250.1</gateway>".into())], "gateways/gateway_item[1]/gateway", "not a valid IP address", Severity::Error),
    ];
    assert!(cases.len() >= 12);
    for (edits, path, reason, severity) in cases {
        let edits: Vec<(&str, &str)> = edits.iter().map(|(a, b)| (*a, b.as_str())).collect();
        let cfg = parse(&mutate(&edits));
        let findings = cfg.validate();
        assert!(
            findings
                .iter()
                .any(|f| f.path == path && f.message.contains(reason) && f.severity == severity),
            "expected {severity:?} {path}: {reason}\ngot: {findings:#?}"
        );
        if severity == Severity::Error {
            assert!(!cfg.errors().is_empty());
        }
        let shown = findings.iter().map(|f| f.to_string()).collect::<Vec<_>>();
        assert!(shown.iter().any(|s| s.starts_with(&format!("{path}: "))));
    }
}

#[test]
fn malformed_xml_and_wrong_root_are_clean_errors() {
    for bad in [
        "",
        "<opnsense>",
        "<opnsense><system></opnsense>",
        "<opnsense></opnsense><x/>",
        "not xml at all",
    ] {
        match Config::parse(bad.as_bytes()) {
            Err(ConfigError::Xml(e)) => assert!(!e.reason.is_empty()),
            other => panic!("{bad:?}: {other:?}"),
        }
    }
    match Config::parse(b"<pfsense><system/></pfsense>") {
        Err(e @ ConfigError::WrongRoot(_)) => {
            assert_eq!(
                e.to_string(),
                "root element is <pfsense>, expected <opnsense>"
            )
        }
        other => panic!("{other:?}"),
    }
    // An empty <opnsense/> parses: nothing configured, nothing wrong but the hostname.
    let c = Config::parse(b"<opnsense/>").unwrap();
    assert!(c.errors().is_empty());
    assert!(c.interfaces.is_empty());
}

#[test]
fn current_mvc_formats_are_read() {
    let xml = r#"<?xml version="1.0"?>
<opnsense>
  <system><hostname>fw</hostname><domain>d</domain><webgui><protocol>http</protocol><port>8080</port></webgui></system>
  <interfaces>
    <lan><enable>1</enable><if>eth0</if><ipaddr>10.1.0.1</ipaddr><subnet>24</subnet><ipaddrv6>2001:db8::1</ipaddrv6><subnetv6>64</subnetv6></lan>
    <wan><enable>1</enable><if>eth1</if><ipaddr>dhcp</ipaddr></wan>
    <opt1><enable>1</enable><if>eth2</if><ipaddr>10.9.0.1</ipaddr><subnet>30</subnet></opt1>
    <lo0><enable>1</enable><if>lo0</if><ipaddr>127.0.0.1</ipaddr><subnet>8</subnet><ipaddrv6>::1</ipaddrv6><subnetv6>128</subnetv6><internal_dynamic>1</internal_dynamic><type>none</type><virtual>1</virtual></lo0>
  </interfaces>
  <virtualip version="1.0.1">
    <vip uuid="u-1"><interface>lan</interface><mode>carp</mode><subnet>10.1.0.254</subnet><subnet_bits>24</subnet_bits><vhid>10</vhid><advbase>2</advbase><advskew>50</advskew><password>pw</password><peer>10.1.0.2</peer><nosync>1</nosync><descr>v</descr></vip>
    <vip uuid="u-2"><interface>lan</interface><mode>ipalias</mode><subnet>10.1.0.253</subnet><subnet_bits>24</subnet_bits><vhid>10</vhid></vip>
    <vip uuid="u-3"><interface>lan</interface><mode>carp</mode><subnet>2001:db8::fe</subnet><subnet_bits>64</subnet_bits><vhid>11</vhid><password>pw</password><peer6>2001:db8::2</peer6></vip>
  </virtualip>
  <OPNsense>
    <Firewall><Filter><rules>
      <rule uuid="r-1"><enabled>1</enabled><action>block</action><quick>0</quick><interface>lan,opt1</interface><direction>any</direction><ipprotocol>inet46</ipprotocol><protocol>TCP</protocol><source_net>lan</source_net><source_not>1</source_not><destination_net>(self)</destination_net><destination_port>443</destination_port><log>1</log><statetype>sloppy</statetype><nopfsync>1</nopfsync><description>d1</description></rule>
      <rule uuid="r-2"><enabled>0</enabled><interface>wan</interface><protocol>any</protocol><source_net>192.0.2.0/24</source_net><destination_net>wanip</destination_net></rule>
    </rules>
    <snatrules>
      <rule uuid="s-1"><enabled>1</enabled><interface>wan</interface><protocol>UDP</protocol><source_net>lan</source_net><destination_net>any</destination_net><destination_port>53</destination_port><staticnatport>1</staticnatport><description>dns</description></rule>
      <rule uuid="s-2"><enabled>0</enabled><interface>wan</interface><source_net>opt1</source_net><target>10.1.0.254</target></rule>
    </snatrules></Filter></Firewall>
    <Gateways version="1.0.0"><gateway_item uuid="g-1"><name>WAN_DHCP</name><interface>wan</interface><gateway>dynamic</gateway><ipprotocol>inet</ipprotocol></gateway_item></Gateways>
  </OPNsense>
  <hasync version="1.0.2"><pfsyncinterface>opt1</pfsyncinterface><pfsyncpeerip>10.9.0.2</pfsyncpeerip><pfsyncversion>1400</pfsyncversion><disablepreempt>1</disablepreempt><verifypeer>1</verifypeer><synchronizetoip>https://10.9.0.2:8443/</synchronizetoip><username>root</username><password>x</password><syncitems>rules,nat,virtualip</syncitems><pfsynckey>secret</pfsynckey></hasync>
</opnsense>
"#;
    let c = parse(xml);
    assert!(c.validate().is_empty(), "{:#?}", c.validate());
    assert_eq!(c.system.webgui_protocol, "http");
    assert_eq!(c.system.webgui_port, Some(8080));
    let lan = c.interface("lan").unwrap();
    assert_eq!(lan.ipv6, Some(("2001:db8::1".parse().unwrap(), 64)));
    assert_eq!(c.vips[0].uuid.as_deref(), Some("u-1"));
    assert_eq!(c.vips[0].peer, Some(Ipv4Addr::new(10, 1, 0, 2)));
    assert!(c.vips[0].nosync);
    assert_eq!((c.vips[0].advbase, c.vips[0].advskew), (2, 50));
    assert_eq!(c.vips[1].mode, VipMode::IpAlias);
    assert_eq!(c.vips[2].peer6, Some("2001:db8::2".parse().unwrap()));
    assert_eq!(c.filter_rules.len(), 2);
    let r = &c.filter_rules[0];
    assert_eq!(r.path, "OPNsense/Firewall/Filter/rules/rule[1]");
    assert_eq!(r.uuid.as_deref(), Some("r-1"));
    assert_eq!(r.action, RuleAction::Block);
    assert!(!r.quick && r.log && r.nopfsync && !r.disabled);
    assert_eq!(r.interfaces, ["lan", "opt1"]);
    assert_eq!(r.direction, Direction::Any);
    assert_eq!(r.ipprotocol, IpProtocol::Inet46);
    assert_eq!(r.protocol.as_deref(), Some("tcp"));
    assert_eq!(r.source.kind, AddrKind::Network("lan".into()));
    assert!(r.source.not);
    assert_eq!(r.destination.kind, AddrKind::Address("(self)".into()));
    assert_eq!(r.destination.port.as_deref(), Some("443"));
    assert_eq!(r.statetype, "sloppy state");
    let r = &c.filter_rules[1];
    assert!(r.disabled && r.quick);
    assert_eq!(r.protocol, None);
    assert_eq!(r.direction, Direction::In);
    assert_eq!(r.source.kind, AddrKind::Network("192.0.2.0/24".into()));
    assert_eq!(r.destination.kind, AddrKind::Address("wanip".into()));
    assert_eq!(c.snat_rules.len(), 2);
    let s = &c.snat_rules[0];
    assert_eq!(s.path, "OPNsense/Firewall/Filter/snatrules/rule[1]");
    assert_eq!(s.interface, "wan");
    assert_eq!(s.protocol.as_deref(), Some("udp"));
    assert_eq!(s.source.kind, AddrKind::Network("lan".into()));
    assert_eq!(s.destination.port.as_deref(), Some("53"));
    assert_eq!(s.target.as_deref(), Some("wanip"));
    assert!(s.static_port && !s.disabled);
    assert!(c.snat_rules[1].disabled);
    assert_eq!(c.snat_rules[1].target.as_deref(), Some("10.1.0.254"));
    assert!(c.nat.rules.is_empty());
    assert_eq!(c.gateways[0].path, "OPNsense/Gateways/gateway_item[1]");
    assert!(c.gateways[0].dynamic);
    let h = &c.hasync;
    assert_eq!(h.pfsync_interface.as_deref(), Some("opt1"));
    assert_eq!(h.pfsync_version, Some(1400));
    assert!(h.disable_preempt && h.verify_peer);
    assert_eq!(h.pfsync_key.as_deref(), Some("secret"));
    assert_eq!(h.syncitems.len(), 3);
}

#[test]
fn legacy_hasync_without_pfsyncenabled_has_no_pfsync() {
    let s = read(MASTER).replace("<pfsyncenabled>on</pfsyncenabled>", "<pfsyncenabled/>");
    let c = parse(&s);
    assert_eq!(c.hasync.pfsync_interface, None);
    let s = read(MASTER).replace("<synchronizenat>on</synchronizenat>", "<synchronizenat/>");
    assert!(!parse(&s).hasync.syncitems.contains("nat"));
}

fn tandem(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(args)
        .output()
        .expect("run tandem");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn config_check_cli() {
    for f in [MASTER, BACKUP, DEFAULT] {
        let p = repo(f);
        let (code, out) = tandem(&["config", "check", p.to_str().unwrap()]);
        assert_eq!(code, 0, "{f}: {out}");
        assert!(out.contains("0 errors, 0 warnings"), "{out}");
    }
    let dir = std::env::temp_dir().join(format!("tandem-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.xml");
    std::fs::write(
        &bad,
        mutate(&[(
            "<interface>wan</interface>\n      <vhid>1</vhid>",
            "<interface>lan</interface>\n      <vhid>3</vhid>",
        )]),
    )
    .unwrap();
    let (code, out) = tandem(&["config", "check", bad.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("error: virtualip/vip[2]: vhid 3 is used twice on interface lan"),
        "{out}"
    );
    assert!(out.contains("1 errors, "), "{out}");

    let warn_only = dir.join("warn.xml");
    std::fs::write(
        &warn_only,
        mutate(&[(
            "<password>opnsense</password>",
            "<password>0123456789abcdefghijk</password>",
        )]),
    )
    .unwrap();
    let (code, out) = tandem(&["config", "check", warn_only.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("warning: virtualip/vip[1]: carp password is 21 bytes"));
    assert!(out.contains("0 errors, 1 warnings"), "{out}");

    let malformed = dir.join("malformed.xml");
    std::fs::write(&malformed, "<opnsense><system></opnsense>").unwrap();
    let (code, out) = tandem(&["config", "check", malformed.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        out.contains("malformed.xml") && out.contains("xml error"),
        "{out}"
    );

    let missing = dir.join("missing.xml");
    let (code, out) = tandem(&["config", "check", missing.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(out.contains("missing.xml"), "{out}");
    std::fs::remove_dir_all(&dir).ok();
}

/// The how-to's original files are not part of this repository; point TANDEM_OPNSENSE_EXAMPLES at a
/// directory holding `Carp_example_master.xml`/`Carp_example_backup.xml` and run it with `--ignored`.
#[test]
#[ignore = "needs the OPNsense originals (not redistributed): set TANDEM_OPNSENSE_EXAMPLES"]
fn opnsense_originals() {
    let dir = std::env::var_os("TANDEM_OPNSENSE_EXAMPLES")
        .expect("TANDEM_OPNSENSE_EXAMPLES must name the folder of the originals");
    for name in ["Carp_example_master.xml", "Carp_example_backup.xml"] {
        let bytes = std::fs::read(Path::new(&dir).join(name)).expect("original example");
        let c = Config::parse(&bytes).expect("parses");
        assert_eq!(c.to_bytes(), bytes);
        assert!(c.errors().is_empty(), "{name}: {:#?}", c.errors());
        assert_eq!(c.vips.len(), 2);
        assert_eq!(c.nat.rules.len(), 6);
        assert_eq!(c.filter_rules.len(), 4);
    }
}

mod prop {
    use proptest::prelude::*;
    use tandem::config::Config;

    proptest! {
        /// Arbitrary field values never panic, and a vhid that is not a number in 1-255 is always
        /// an error on that element.
        #[test]
        fn vip_fields_never_panic(
            vhid in "[0-9a-z]{0,4}",
            addr in "[0-9.:a-f]{0,16}",
            bits in "[0-9]{0,3}",
            skew in "[0-9-]{0,4}",
            peer in "[0-9.:]{0,16}",
        ) {
            let xml = format!(
                "<opnsense><interfaces><lan><enable>1</enable><if>em0</if><ipaddr>192.168.1.2</ipaddr><subnet>24</subnet></lan></interfaces>\
                 <virtualip><vip><mode>carp</mode><interface>lan</interface><vhid>{vhid}</vhid><subnet>{addr}</subnet>\
                 <subnet_bits>{bits}</subnet_bits><advskew>{skew}</advskew><password>p</password><peer>{peer}</peer></vip></virtualip></opnsense>"
            );
            let c = Config::parse(xml.as_bytes()).unwrap();
            let errors = c.errors();
            let ok_vhid = vhid.parse::<u16>().is_ok_and(|v| (1..=255).contains(&v));
            if !vhid.is_empty() && !ok_vhid && addr.parse::<std::net::IpAddr>().is_ok() {
                prop_assert!(errors.iter().any(|f| f.path == "virtualip/vip[1]/vhid"));
            }
            if vhid.is_empty() && addr.parse::<std::net::IpAddr>().is_ok() {
                prop_assert!(errors.iter().any(|f| f.path == "virtualip/vip[1]" && f.message.contains("vhid")));
            }
            prop_assert_eq!(c.to_bytes(), xml.as_bytes());
        }
    }
}
