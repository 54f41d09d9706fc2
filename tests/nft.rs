//! nftables rendering from config.xml and atomic loading.
//!
//! - golden files for the how-to's master (`tests/golden/`; `TANDEM_UPDATE_GOLDEN=1` rewrites them),
//! - digests of the example pair,
//! - conversion errors naming the rule's path,
//! - real loads (root only) in a fresh network namespace owned by one test thread
//!   (`unshare(CLONE_NEWNET)`), which disappears when the thread ends.

use std::path::PathBuf;

use tandem::config::Config;
use tandem::proto::nft::{Ruleset, convert};
use tandem::sys;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn example(name: &str) -> String {
    std::fs::read_to_string(root().join("etc/examples").join(name)).unwrap()
}

fn parse(xml: &str) -> Config {
    Config::parse(xml.as_bytes()).unwrap()
}

fn golden(name: &str, actual: &str) {
    let path = root().join("tests/golden").join(name);
    if std::env::var_os("TANDEM_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with TANDEM_UPDATE_GOLDEN=1)", path.display()));
    assert_eq!(
        actual,
        want,
        "{} differs (TANDEM_UPDATE_GOLDEN=1 rewrites it)",
        path.display()
    );
}

#[test]
fn golden_master() {
    let cfg = parse(&example("carp-master.xml"));
    let filter = convert::filter(&cfg).unwrap();
    let nat = convert::nat(&cfg).unwrap();
    golden("carp-master.filter.nft", &filter.text);
    golden("carp-master.nat.nft", &nat.text);
    // A few facts the golden file must keep, whatever else changes.
    for want in [
        "iifname \"em1\" meta nfproto ipv4 meta l4proto 112 accept comment \"filter/rule[1]\"",
        "iifname \"em0\" meta nfproto ipv4 ip saddr 192.168.1.0/24 accept comment \"filter/rule[2] Default allow LAN to any rule\"",
        "iifname \"em2\" meta nfproto ipv4 accept comment \"filter/rule[4]\"",
        "ip protocol 112 ip daddr 224.0.0.18 accept",
        "iifname \"em0\" ip saddr 192.168.1.20 meta l4proto { tcp, udp } th dport { 519, 520 } accept",
        "ip saddr 10.0.0.2 tcp dport 443 accept comment \"automatic: ha sync\"",
        "iifname \"em2\" meta l4proto 240 accept",
    ] {
        assert!(filter.text.contains(want), "missing: {want}");
    }
    for want in [
        "oifname \"em1\" ip saddr 192.168.1.0/24 snat to 172.18.0.100 comment \"nat/outbound/rule[4] Auto created rule - LAN to WAN\"",
        "oifname \"em1\" ip saddr 10.0.0.1 masquerade",
        "ip protocol 112 accept comment \"never nat carp\"",
    ] {
        assert!(nat.text.contains(want), "missing: {want}");
    }
    assert!(!nat.text.contains("ip6"));
}

#[test]
fn digests_of_the_pair() {
    let master = parse(&example("carp-master.xml"));
    let backup = parse(&example("carp-backup.xml"));
    // The NAT section is copied verbatim and an empty target is masquerade: identical.
    let (nm, nb) = (
        convert::nat(&master).unwrap(),
        convert::nat(&backup).unwrap(),
    );
    assert_eq!(nm.digest(), nb.digest());
    // Same config → same digest, whatever is not part of the ruleset (hostname, advskew).
    let other = example("carp-master.xml")
        .replace(
            "<hostname>OPNsense</hostname>",
            "<hostname>other</hostname>",
        )
        .replace("<advskew>0</advskew>", "<advskew>50</advskew>");
    assert!(other != example("carp-master.xml"));
    let fm = convert::filter(&master).unwrap();
    assert_eq!(
        fm.digest(),
        convert::filter(&parse(&other)).unwrap().digest()
    );
    // The pair's filter rulesets differ only in the node-specific automatic rules (the peers).
    let fb = convert::filter(&backup).unwrap();
    assert_ne!(fm.digest(), fb.digest());
    let lm: Vec<&str> = fm.text.lines().collect();
    let lb: Vec<&str> = fb.text.lines().collect();
    assert_eq!(lm.len(), lb.len());
    for (a, b) in lm.iter().zip(&lb) {
        if a != b {
            assert!(
                a.contains("automatic: dhcp failover") || a.contains("automatic: ha sync"),
                "{a}\n{b}"
            );
        }
    }
    // A rule change changes the digest.
    let blocked = example("carp-master.xml").replacen("<type>pass</type>", "<type>block</type>", 1);
    assert_ne!(
        fm.digest(),
        convert::filter(&parse(&blocked)).unwrap().digest()
    );
}

#[test]
fn conversion_errors_name_the_rule() {
    let xml = example("carp-master.xml");
    let e = convert::filter(&parse(&xml.replacen(
        "<interface>opt1</interface>",
        "<interface>opt9</interface>",
        1,
    )))
    .unwrap_err();
    assert_eq!(e.to_string(), "filter/rule[4]: unknown interface opt9");

    let bad_port = xml.replacen(
        "<network>lan</network>\n      </source>",
        "<network>lan</network>\n        <port>http-alt</port>\n      </source>",
        1,
    );
    assert!(bad_port != xml);
    let e = convert::filter(&parse(&bad_port)).unwrap_err();
    assert_eq!(e.to_string(), "filter/rule[2]: bad port http-alt");

    let alias = xml.replacen("<network>lan</network>", "<network>my_alias</network>", 1);
    let e = convert::filter(&parse(&alias)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "filter/rule[2]: bad or unsupported address my_alias"
    );

    let proto = xml.replacen("<protocol>carp</protocol>", "<protocol>bogus</protocol>", 1);
    let e = convert::filter(&parse(&proto)).unwrap_err();
    assert_eq!(e.to_string(), "filter/rule[1]: unsupported protocol bogus");

    let target = xml.replacen(
        "<target>172.18.0.100</target>",
        "<target>vip_alias</target>",
        1,
    );
    assert!(target != xml);
    let e = convert::nat(&parse(&target)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "nat/outbound/rule[3]: bad nat target vip_alias"
    );

    // A disabled rule is skipped, errors and all.
    let disabled = xml.replacen(
        "<interface>opt1</interface>",
        "<interface>opt9</interface><disabled>1</disabled>",
        1,
    );
    let f = convert::filter(&parse(&disabled)).unwrap();
    assert!(!f.text.contains("filter/rule[4]"));
}

#[test]
fn nat_modes_from_config() {
    let xml = example("carp-master.xml");
    let mode = |m: &str| {
        convert::nat(&parse(
            &xml.replace("<mode>advanced</mode>", &format!("<mode>{m}</mode>")),
        ))
        .unwrap()
        .text
    };
    let auto = mode("automatic");
    assert!(auto.contains(
        "oifname \"em1\" ip saddr 192.168.1.0/24 masquerade comment \"automatic: lan to wan\""
    ));
    assert!(auto.contains(
        "oifname \"em1\" ip saddr 10.0.0.0/24 masquerade comment \"automatic: opt1 to wan\""
    ));
    assert!(!auto.contains("nat/outbound/rule"));
    let hybrid = mode("hybrid");
    let manual_at = hybrid.find("nat/outbound/rule[1]").unwrap();
    let auto_at = hybrid.find("automatic: lan to wan").unwrap();
    assert!(manual_at < auto_at);
    let disabled = mode("disabled");
    assert!(disabled.ends_with("table ip tandem_nat {\n}\n"));
}

// ---- real loads -------------------------------------------------------------------------------

/// Runs `f` on a thread inside a new, empty network namespace (gone when the thread ends).
/// `None` (and a note) when not root.
fn in_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root for a network namespace");
        return None;
    }
    let h = std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
        f()
    });
    Some(h.join().expect("netns test thread panicked"))
}

fn broken(rs: &Ruleset) -> Ruleset {
    // Valid replacement of the table followed by a rule nft refuses: the whole batch must fail.
    let mut bad = rs.clone();
    bad.text
        .push_str("add rule inet tandem_filter rules_in ip saddr 10.0.0.0/33 accept\n");
    bad
}

#[test]
fn load_example_filter_and_nat() {
    let cfg = parse(&example("carp-master.xml"));
    let filter = convert::filter(&cfg).unwrap();
    let nat = convert::nat(&cfg).unwrap();
    let Some(r) = in_netns(move || {
        sys::nft::load_filter(&filter)?;
        sys::nft::load(&nat)?;
        // Loading again replaces, it does not append.
        sys::nft::load_filter(&filter)?;
        let f = sys::nft::list(&filter)?;
        let n = sys::nft::list(&nat)?;
        let loose = sys::sysctl::get(sys::nft::TCP_LOOSE).unwrap();
        Ok::<_, sys::nft::Error>((f, n, loose))
    }) else {
        return;
    };
    let (f, n, loose) = r.unwrap();
    assert!(f.starts_with("table inet tandem_filter {"), "{f}");
    assert!(f.contains("chain rules_in {"));
    assert!(f.contains("comment \"filter/rule[2] Default allow LAN to any rule\""));
    assert_eq!(f.matches("chain input {").count(), 1, "{f}");
    assert!(n.contains("snat to 172.18.0.100"), "{n}");
    assert!(n.contains("masquerade"), "{n}");
    assert_eq!(loose, "0");
}

#[test]
fn rejected_load_keeps_the_old_ruleset() {
    let cfg = parse(&example("carp-master.xml"));
    let old = convert::filter(&cfg).unwrap();
    // A different, valid ruleset whose broken variant must not replace `old`.
    let blocked = example("carp-master.xml").replacen("<type>pass</type>", "<type>block</type>", 1);
    let new = convert::filter(&parse(&blocked)).unwrap();
    let bad = broken(&new);
    let Some(r) = in_netns(move || {
        sys::nft::load(&old).unwrap();
        let before = sys::nft::list(&old).unwrap();
        let err = sys::nft::load(&bad).unwrap_err();
        let check = sys::nft::check(&bad).unwrap_err();
        let after = sys::nft::list(&old).unwrap();
        sys::nft::load(&new).unwrap();
        let replaced = sys::nft::list(&new).unwrap();
        (before, err, check, after, replaced)
    }) else {
        return;
    };
    let (before, err, check, after, replaced) = r;
    let msg = err.to_string();
    assert!(matches!(err, sys::nft::Error::Rejected(_)), "{msg}");
    assert!(msg.contains("Error"), "{msg}");
    assert!(msg.contains("10.0.0.0/33"), "{msg}");
    assert!(matches!(check, sys::nft::Error::Rejected(_)));
    assert_eq!(before, after);
    assert_ne!(before, replaced);
}

#[test]
fn nat_ip6_table_comes_and_goes() {
    let xml = example("carp-master.xml");
    let v6 = xml.replacen(
        "<network>127.0.0.0/8</network>",
        "<network>fd00::/64</network>",
        1,
    );
    let v6 = v6.replacen("<target/>", "<target>2001:db8::100</target>", 1);
    let with6 = convert::nat(&parse(&v6)).unwrap();
    assert!(
        with6.text.contains("table ip6 tandem_nat"),
        "{}",
        with6.text
    );
    let without = convert::nat(&parse(&xml)).unwrap();
    let Some((a, b)) = in_netns(move || {
        sys::nft::load(&with6).unwrap();
        let a = sys::nft::list(&with6).unwrap();
        sys::nft::load(&without).unwrap();
        let b = sys::nft::list(&without).unwrap();
        (a, b)
    }) else {
        return;
    };
    assert!(a.contains("table ip6 tandem_nat"), "{a}");
    assert!(a.contains("snat to 2001:db8::100"), "{a}");
    assert!(!b.contains("table ip6"), "{b}");
    assert!(b.contains("table ip tandem_nat"), "{b}");
}
