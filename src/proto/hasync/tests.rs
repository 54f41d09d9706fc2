use super::*;

const MASTER: &str = include_str!("../../../etc/examples/carp-master.xml");
const BACKUP: &str = include_str!("../../../etc/examples/carp-backup.xml");

fn cfg(s: &str) -> Config {
    Config::parse(s.as_bytes()).unwrap()
}

fn all_sections(c: &Config) -> Vec<String> {
    sections_for(&c.hasync.syncitems).0
}

#[test]
fn legacy_flags_map_to_sections() {
    let m = cfg(MASTER);
    let (s, unknown) = sections_for(&m.hasync.syncitems);
    assert!(unknown.is_empty());
    for want in [
        "filter",
        "OPNsense.Firewall.Filter.rules",
        "nat",
        "OPNsense.Firewall.Filter.snatrules",
        "dhcpd",
        "staticroutes",
        "gateways",
        "virtualip",
    ] {
        assert!(s.iter().any(|x| x == want), "{want} missing from {s:?}");
    }
    assert!(!s.iter().any(|x| x == "interfaces" || x == "hasync"));
}

#[test]
fn master_rewrite_vips_nosync_and_failover_peer() {
    let mut m = cfg(MASTER);
    // A VHID-less alias and a nosync CARP VIP: neither travels. A high advskew is capped.
    let vips = m.doc.root_mut().child_mut("virtualip").unwrap();
    vips.append(
        Document::parse(
            b"<vip><mode>ipalias</mode><interface>lan</interface><subnet>192.168.1.50</subnet><subnet_bits>24</subnet_bits></vip>",
        )
        .unwrap()
        .root()
        .clone(),
    );
    vips.append(
        Document::parse(
            b"<vip><mode>carp</mode><interface>lan</interface><vhid>9</vhid><advskew>0</advskew><subnet>192.168.1.9</subnet><subnet_bits>24</subnet_bits><password>x</password><nosync>1</nosync></vip>",
        )
        .unwrap()
        .root()
        .clone(),
    );
    vips.append(
        Document::parse(
            b"<vip><mode>carp</mode><interface>lan</interface><vhid>7</vhid><advskew>200</advskew><subnet>192.168.1.7</subnet><subnet_bits>24</subnet_bits><password>x</password></vip>",
        )
        .unwrap()
        .root()
        .clone(),
    );
    m.reparse();
    let p = build_payload(&m, &all_sections(&m));
    let vips = match p.member("virtualip").and_then(|v| v.member("vip")) {
        Some(Value::Array(a)) => a.clone(),
        other => panic!("{other:?}"),
    };
    let got: Vec<(String, String)> = vips
        .iter()
        .map(|v| {
            (
                v.member("vhid")
                    .and_then(Value::as_str)
                    .unwrap()
                    .to_string(),
                v.member("advskew")
                    .and_then(Value::as_str)
                    .unwrap()
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("1".into(), "100".into()),
            ("3".into(), "100".into()),
            ("7".into(), "254".into())
        ]
    );
    let peer = p
        .member("dhcpd")
        .and_then(|d| d.member("lan"))
        .and_then(|l| l.member("failover_peerip"))
        .and_then(Value::as_str);
    assert_eq!(peer, Some("192.168.1.10"));
    // Never synced, even if asked.
    let p2 = build_payload(&m, &["hasync".into(), "interfaces".into()]);
    assert_eq!(p2, Value::Struct(vec![]));
    // Nested paths build nested structs; a missing section is an empty array.
    let rules = p
        .member("OPNsense")
        .and_then(|o| o.member("Firewall"))
        .and_then(|f| f.member("Filter"))
        .and_then(|f| f.member("rules"));
    assert_eq!(rules, Some(&Value::Array(vec![])));
    // Lists stay lists with one element, records are structs.
    match p.member("filter").and_then(|f| f.member("rule")) {
        Some(Value::Array(a)) => assert_eq!(a.len(), 4),
        other => panic!("{other:?}"),
    }
}

#[test]
fn backup_merge_keeps_local_vips_and_drops_removed_ones() {
    let m = cfg(MASTER);
    let mut b = cfg(BACKUP);
    {
        let vips = b.doc.root_mut().child_mut("virtualip").unwrap();
        // Local only: an alias without a VHID, a nosync CARP VIP, and a VHID the master lacks.
        for x in [
            "<vip><mode>ipalias</mode><interface>lan</interface><subnet>192.168.1.50</subnet><subnet_bits>24</subnet_bits><descr>mine</descr></vip>",
            "<vip><mode>carp</mode><interface>lan</interface><vhid>9</vhid><advskew>100</advskew><subnet>192.168.1.9</subnet><subnet_bits>24</subnet_bits><password>x</password><nosync>1</nosync></vip>",
            "<vip><mode>carp</mode><interface>lan</interface><vhid>8</vhid><advskew>100</advskew><subnet>192.168.1.8</subnet><subnet_bits>24</subnet_bits><password>x</password></vip>",
        ] {
            vips.append(Document::parse(x.as_bytes()).unwrap().root().clone());
        }
    }
    // A drifted filter rule, and a local nosync rule in the ordered filter list.
    let before_hostname = b.system.hostname.clone();
    let payload = build_payload(&m, &all_sections(&m));
    let keys = merge(&mut b.doc, &payload).unwrap();
    assert!(keys.contains(&"filter".to_string()) && keys.contains(&"virtualip".to_string()));
    let merged = Config::parse(&b.doc.to_bytes()).unwrap();
    let subnets: Vec<String> = merged.vips.iter().map(|v| v.addr.to_string()).collect();
    assert_eq!(
        subnets,
        vec!["192.168.1.50", "192.168.1.9", "172.18.0.100", "192.168.1.1"],
        "VHID-less first, nosync kept, vhid 8 (not on the master) gone"
    );
    assert!(merged.carp_vips().all(|v| v.advskew == 100));
    assert_eq!(merged.system.hostname, before_hostname);
    assert_eq!(
        merged.dhcpd[0].failover_peerip,
        Some("192.168.1.10".parse().unwrap())
    );
    assert!(merged.errors().is_empty(), "{:?}", merged.errors());
    // The interfaces are the backup's own.
    assert_eq!(
        merged.interface("lan").unwrap().ipv4.unwrap().0.to_string(),
        "192.168.1.20"
    );
    // After the merge both sides agree on every section digest.
    let s = all_sections(&m);
    assert_eq!(
        section_digests(&m, &s, true),
        section_digests(&merged, &s, false)
    );
    // A second merge of the same payload changes nothing.
    let mut again = merged.doc.clone();
    merge(&mut again, &payload).unwrap();
    assert_eq!(again.to_bytes(), merged.doc.to_bytes());
    // No empty containers appear for sections neither side has.
    assert!(!String::from_utf8_lossy(&merged.to_bytes()).contains("<OPNsense>"));
}

#[test]
fn merge_rules_for_lists_and_containers() {
    let mut d = Document::parse(
        b"<opnsense>\n  <aliases>\n    <alias><name>a</name></alias>\n    <alias><name>mine</name><nosync>1</nosync></alias>\n  </aliases>\n  <filter>\n    <rule><descr>local</descr><nosync>1</nosync></rule>\n  </filter>\n  <system>\n    <hostname>b</hostname>\n    <keep>1</keep>\n  </system>\n  <hasync><synchronizetoip/></hasync>\n</opnsense>\n",
    )
    .unwrap();
    let s = |x: &str| Value::str(x);
    let payload = Value::Struct(vec![
        (
            "aliases".into(),
            Value::Struct(vec![(
                "alias".into(),
                Value::Array(vec![Value::Struct(vec![("name".into(), s("m"))])]),
            )]),
        ),
        (
            "filter".into(),
            Value::Struct(vec![(
                "rule".into(),
                Value::Array(vec![Value::Struct(vec![(
                    "descr".into(),
                    s("from master"),
                )])]),
            )]),
        ),
        (
            "system".into(),
            Value::Struct(vec![
                ("hostname".into(), s("master")),
                ("timezone".into(), s("UTC")),
            ]),
        ),
        (
            "hasync".into(),
            Value::Struct(vec![("synchronizetoip".into(), s("1.2.3.4"))]),
        ),
        ("interfaces".into(), Value::Struct(vec![])),
    ]);
    let keys = merge(&mut d, &payload).unwrap();
    assert_eq!(keys, vec!["aliases", "filter", "system"]);
    let r = d.root();
    let names: Vec<String> = r
        .child("aliases")
        .unwrap()
        .children_named("alias")
        .map(|a| a.child_text("name").unwrap())
        .collect();
    assert_eq!(
        names,
        vec!["mine", "m"],
        "nosync kept on top, the rest replaced"
    );
    let rules: Vec<String> = r
        .child("filter")
        .unwrap()
        .children_named("rule")
        .map(|a| a.child_text("descr").unwrap())
        .collect();
    assert_eq!(
        rules,
        vec!["from master"],
        "filter.rule keeps no local nosync rule"
    );
    let sys = r.child("system").unwrap();
    assert_eq!(
        sys.child_text("hostname").unwrap(),
        "b",
        "hostname never synced"
    );
    assert_eq!(
        sys.child_text("keep").unwrap(),
        "1",
        "associative containers merge by key"
    );
    assert_eq!(sys.child_text("timezone").unwrap(), "UTC");
    assert_eq!(r.at("hasync/synchronizetoip").unwrap().text(), "");
    // Hostile names are refused, not written into the document.
    let bad = Value::Struct(vec![("a><b".into(), s("x"))]);
    assert!(matches!(merge(&mut d, &bad), Err(MergeError::BadName(_))));
    let bad_attr = Value::Struct(vec![(
        "x".into(),
        Value::Struct(vec![(
            "@attributes".into(),
            Value::Struct(vec![("u\"=".into(), s("1"))]),
        )]),
    )]);
    assert!(merge(&mut d, &bad_attr).is_err());
    assert!(merge(&mut d, &Value::Int(1)).is_err());
    assert_eq!(
        merge(&mut d, &Value::Struct(vec![("hasync".into(), s(""))])),
        Err(MergeError::Nothing)
    );
}

#[test]
fn attributes_round_trip() {
    let d = Document::parse(
        b"<opnsense><OPNsense><Firewall><Filter><rules><rule uuid=\"u-1\"><descr>x &amp; y</descr></rule></rules></Filter></Firewall></OPNsense></opnsense>",
    )
    .unwrap();
    let v = value_at(d.root(), "OPNsense.Firewall.Filter.rules").unwrap();
    let mut target = Document::parse(b"<opnsense>\n</opnsense>").unwrap();
    let mut payload = Vec::new();
    insert_path(&mut payload, "OPNsense.Firewall.Filter.rules", v.clone());
    merge(&mut target, &Value::Struct(payload)).unwrap();
    let back = value_at(target.root(), "OPNsense.Firewall.Filter.rules").unwrap();
    assert_eq!(back, v);
    let rule = target
        .root()
        .at("OPNsense/Firewall/Filter/rules/rule")
        .unwrap();
    assert_eq!(rule.attr("uuid").as_deref(), Some("u-1"));
    assert_eq!(rule.child_text("descr").as_deref(), Some("x & y"));
}

#[test]
fn sync_urls() {
    assert_eq!(
        sync_url("10.0.0.2", "https", None).unwrap(),
        "https://10.0.0.2/xmlrpc.php"
    );
    assert_eq!(
        sync_url("10.0.0.2", "http", Some(8080)).unwrap(),
        "http://10.0.0.2:8080/xmlrpc.php"
    );
    assert_eq!(
        sync_url("fe80::1", "", None).unwrap(),
        "https://[fe80::1]/xmlrpc.php"
    );
    assert_eq!(
        sync_url("https://b.example:4443", "http", Some(1)).unwrap(),
        "https://b.example:4443/xmlrpc.php"
    );
    assert_eq!(
        sync_url("https://b/x/", "", None).unwrap(),
        "https://b/x/xmlrpc.php"
    );
    assert!(sync_url("", "https", None).is_err());
    assert!(sync_url("a b/c", "https", None).is_err());
}

#[test]
fn node_comparison_warnings() {
    let m = cfg(MASTER);
    let b = cfg(BACKUP);
    let (a, bb) = (interface_networks(&m), interface_networks(&b));
    assert!(interface_warnings(&a, &bb).is_empty());
    let mut drift = bb.clone();
    drift.insert("lan".into(), "192.168.2.0/24".into());
    drift.remove("opt1");
    drift.insert("opt2".into(), String::new());
    let w = interface_warnings(&a, &drift);
    assert_eq!(w.len(), 3, "{w:?}");
    let l = vec![
        (1, "wan".to_string(), "MASTER".to_string()),
        (3, "lan".into(), "MASTER".into()),
    ];
    let r = vec![
        (1, "wan".to_string(), "MASTER".to_string()),
        (3, "lan".into(), "BACKUP".into()),
    ];
    let w = split_brain_warnings(&l, &r);
    assert_eq!(w.len(), 1);
    assert!(w[0].contains("VHID 1"));
}

#[test]
fn digests_see_a_change() {
    let m = cfg(MASTER);
    let s = all_sections(&m);
    let d1 = section_digests(&m, &s, true);
    let edited = MASTER.replace("Default allow LAN to any rule", "changed");
    let d2 = section_digests(&cfg(&edited), &s, true);
    let differ: Vec<&String> = s.iter().filter(|k| d1[*k] != d2[*k]).collect();
    assert_eq!(differ, vec!["filter"]);
}
