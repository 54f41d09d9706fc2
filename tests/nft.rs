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
    let backup = parse(&example("carp-backup.xml"));
    golden(
        "carp-backup.filter.nft",
        &convert::filter(&backup).unwrap().text,
    );
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

// ---- traffic through a loaded ruleset ---------------------------------------------------------

mod traffic {
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::os::fd::AsFd;
    use std::process::Command;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    /// A named network namespace, deleted on drop (also when a test fails).
    pub struct Netns(pub String);

    static NEXT: AtomicU32 = AtomicU32::new(0);

    impl Netns {
        pub fn new(role: &str) -> Netns {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let name = format!("ttnft{}x{n}-{role}", std::process::id());
            ip(&["netns", "add", &name]);
            let ns = Netns(name);
            ns.ip(&["link", "set", "lo", "up"]);
            ns
        }

        pub fn ip(&self, args: &[&str]) {
            let mut a = vec!["-n", self.0.as_str()];
            a.extend_from_slice(args);
            ip(&a);
        }

        /// Runs `f` on a thread that has entered this namespace (sockets made there stay there).
        pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
            let path = format!("/run/netns/{}", self.0);
            std::thread::spawn(move || {
                let fd = std::fs::File::open(&path).expect("open netns");
                nix::sched::setns(fd.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
                f()
            })
            .join()
            .expect("netns thread panicked")
        }
    }

    impl Drop for Netns {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }

    pub fn ip(args: &[&str]) {
        let out = Command::new("ip").args(args).output().expect("run ip");
        assert!(
            out.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn listen(ns: &Netns, addr: &str) -> TcpListener {
        let addr: SocketAddr = addr.parse().unwrap();
        ns.run(move || TcpListener::bind(addr).expect("bind"))
    }

    pub fn connect(ns: &Netns, addr: &str) -> std::io::Result<TcpStream> {
        let addr: SocketAddr = addr.parse().unwrap();
        ns.run(move || {
            let s = TcpStream::connect_timeout(&addr, Duration::from_millis(800))?;
            s.set_read_timeout(Some(Duration::from_millis(800)))?;
            Ok(s)
        })
    }

    /// Accepts one connection within a bounded time: the peer address.
    pub fn accept(l: &TcpListener) -> Option<(TcpStream, SocketAddr)> {
        l.set_nonblocking(true).unwrap();
        for _ in 0..40 {
            match l.accept() {
                Ok((s, a)) => {
                    s.set_nonblocking(false).unwrap();
                    s.set_read_timeout(Some(Duration::from_millis(800)))
                        .unwrap();
                    return Some((s, a));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(25)),
            }
        }
        None
    }

    /// Whether `data` written on `from` arrives on `to`.
    pub fn delivers(from: &mut TcpStream, to: &mut TcpStream, data: &[u8]) -> bool {
        if from.write_all(data).is_err() {
            return false;
        }
        let mut buf = vec![0u8; data.len()];
        to.read_exact(&mut buf).is_ok() && buf == data
    }
}

/// client (LAN 192.168.1.100) — fw (em0 192.168.1.10, em1 172.18.0.101 + VIP .100) — server
/// (WAN 172.18.0.250), with the how-to master's rules plus a block (8081) and a reject (8082)
/// rule on LAN.
#[test]
fn traffic_through_the_example_ruleset() {
    use std::io::ErrorKind;
    use traffic::*;

    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root for network namespaces");
        return;
    }
    let extra = "<filter>
    <rule><type>block</type><interface>lan</interface><ipprotocol>inet</ipprotocol><protocol>tcp</protocol>
      <source><any/></source><destination><any/><port>8081</port></destination><descr>block 8081</descr></rule>
    <rule><type>reject</type><interface>lan</interface><ipprotocol>inet</ipprotocol><protocol>tcp</protocol>
      <source><any/></source><destination><any/><port>8082</port></destination><descr>reject 8082</descr></rule>";
    let cfg = parse(&example("carp-master.xml").replacen("<filter>", extra, 1));
    let filter = convert::filter(&cfg).unwrap();
    let nat = convert::nat(&cfg).unwrap();
    assert!(
        filter
            .text
            .contains("tcp dport 8081 drop comment \"filter/rule[1] block 8081\"")
    );

    let fw = Netns::new("fw");
    let client = Netns::new("cl");
    let server = Netns::new("sv");
    fw.ip(&[
        "link", "add", "em0", "type", "veth", "peer", "name", "eth0", "netns", &client.0,
    ]);
    fw.ip(&[
        "link", "add", "em1", "type", "veth", "peer", "name", "eth0", "netns", &server.0,
    ]);
    fw.ip(&["addr", "add", "192.168.1.10/24", "dev", "em0"]);
    fw.ip(&["addr", "add", "172.18.0.101/24", "dev", "em1"]);
    fw.ip(&["addr", "add", "172.18.0.100/24", "dev", "em1"]);
    client.ip(&["addr", "add", "192.168.1.100/24", "dev", "eth0"]);
    server.ip(&["addr", "add", "172.18.0.250/24", "dev", "eth0"]);
    for (ns, dev) in [
        (&fw, "em0"),
        (&fw, "em1"),
        (&client, "eth0"),
        (&server, "eth0"),
    ] {
        ns.ip(&["link", "set", dev, "up"]);
    }
    client.ip(&["route", "add", "default", "via", "192.168.1.10"]);
    server.ip(&["route", "add", "default", "via", "172.18.0.101"]);
    fw.run(|| tandem::sys::sysctl::enable_forwarding(false).unwrap());

    let l8080 = listen(&server, "172.18.0.250:8080");
    let l8081 = listen(&server, "172.18.0.250:8081");
    let l8082 = listen(&server, "172.18.0.250:8082");
    let lgui = listen(&fw, "0.0.0.0:443");
    let lclient = listen(&client, "192.168.1.100:9000");

    // A connection to the firewall opened while it has no ruleset (and so no conntrack entry),
    // to a port the ruleset allows (anti-lockout) and without NAT on the way: only the state
    // handling decides whether its next packets get through.
    let mut old_c = connect(&client, "192.168.1.10:443").expect("connect without ruleset");
    let (mut old_s, peer) = accept(&lgui).expect("accept without ruleset");
    assert_eq!(peer.ip().to_string(), "192.168.1.100");
    assert!(delivers(&mut old_c, &mut old_s, b"before"));

    let (f, n) = (filter.clone(), nat.clone());
    fw.run(move || {
        tandem::sys::nft::load_filter(&f).unwrap();
        tandem::sys::nft::load(&n).unwrap();
    });

    // Mid-stream packets of a flow without state are dropped, not picked up.
    assert!(
        !delivers(&mut old_c, &mut old_s, b"after"),
        "mid-stream pickup"
    );

    // A new LAN → WAN connection passes and leaves from the VIP.
    let mut c = connect(&client, "172.18.0.250:8080").expect("lan to wan");
    let (mut s, peer) = accept(&l8080).expect("accept lan to wan");
    assert_eq!(
        peer.ip().to_string(),
        "172.18.0.100",
        "not NATed to the VIP"
    );
    assert!(delivers(&mut c, &mut s, b"hello"));
    assert!(delivers(&mut s, &mut c, b"reply"));

    // Block drops (timeout), reject answers with a reset (refused).
    let e = connect(&client, "172.18.0.250:8081").unwrap_err();
    assert!(
        matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock),
        "{e}"
    );
    assert!(accept(&l8081).is_none());
    let e = connect(&client, "172.18.0.250:8082").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{e}");
    assert!(accept(&l8082).is_none());

    // Anti-lockout: the GUI port from LAN, not from WAN; nothing from WAN into LAN.
    connect(&client, "192.168.1.10:443").expect("anti-lockout");
    assert!(accept(&lgui).is_some());
    assert!(connect(&server, "172.18.0.101:443").is_err());
    assert!(connect(&server, "192.168.1.100:9000").is_err());
    assert!(accept(&lclient).is_none());
}

/// Every rendered construct is accepted by the kernel: rules with each action, direction,
/// family, protocol, address kind, negation, port form, log, every automatic rule, and NAT
/// rules with each target (both families).
#[test]
fn every_construct_loads() {
    use tandem::proto::nft::*;

    let ip = |s: &str| -> std::net::IpAddr { s.parse().unwrap() };
    let mut lan = IfView::new("lan", "em0");
    lan.v4 = Some(("192.168.1.10".parse().unwrap(), 24));
    lan.v6 = Some(("2001:db8:1::10".parse().unwrap(), 64));
    lan.vips = vec![ip("192.168.1.1"), ip("2001:db8:1::1")];
    let mut wan = IfView::new("wan", "em1");
    wan.v4 = Some(("172.18.0.101".parse().unwrap(), 24));
    wan.v6 = Some(("2001:db8:2::101".parse().unwrap(), 64));
    wan.gateway = true;
    let view = View {
        interfaces: vec![lan, wan, IfView::new("opt1", "em2")],
    };
    let addrs = [
        AddrMatch::Any,
        AddrMatch::SelfAddrs,
        AddrMatch::IfNet("lan".into()),
        AddrMatch::IfAddr("lan".into()),
        AddrMatch::Nets(vec![
            Cidr::parse("10.0.0.0/8").unwrap(),
            Cidr::parse("fd00::1").unwrap(),
        ]),
    ];
    let protos = [
        Proto::Any,
        Proto::Tcp,
        Proto::Udp,
        Proto::TcpUdp,
        Proto::Icmp,
        Proto::Icmpv6,
        Proto::Number(112),
        Proto::Number(240),
    ];
    let mut rules = Vec::new();
    let mut n = 0;
    for action in [Action::Pass, Action::Block, Action::Reject] {
        for direction in [Direction::In, Direction::Out, Direction::Any] {
            for proto in protos {
                for (i, a) in addrs.iter().enumerate() {
                    for ipver in [IpVersion::Inet, IpVersion::Inet6, IpVersion::Inet46] {
                        if proto
                            .family()
                            .is_some_and(|f| !ipver.families().contains(&f))
                        {
                            continue;
                        }
                        n += 1;
                        let ports = if proto.has_ports() {
                            vec![PortRange::single(80), PortRange { lo: 1000, hi: 2000 }]
                        } else {
                            vec![]
                        };
                        rules.push(Rule {
                            path: format!("filter/rule[{n}]"),
                            descr: format!("case {n} \"quoted\""),
                            action,
                            quick: n % 3 != 0,
                            log: n % 2 == 0,
                            interfaces: match n % 3 {
                                0 => vec![],
                                1 => vec!["lan".into()],
                                _ => vec!["lan".into(), "wan".into()],
                            },
                            direction,
                            ipver,
                            proto,
                            src: Endpoint {
                                addr: a.clone(),
                                not: i % 2 == 1,
                                ports: ports.clone(),
                            },
                            dst: Endpoint {
                                addr: addrs[(i + 2) % addrs.len()].clone(),
                                not: n % 2 == 1,
                                ports,
                            },
                        });
                    }
                }
            }
        }
    }
    let auto = Automatic {
        carp: true,
        carp_peers: vec![ip("172.18.0.102"), ip("2001:db8:2::102")],
        dhcp_failover: vec![("lan".into(), ip("192.168.1.20"))],
        ha_sync_peers: vec![ip("10.0.0.2"), ip("fd00::2")],
        webgui_port: 8443,
        pfsync: Some("opt1".into()),
        anti_lockout: Some("lan".into()),
        dhcp_server: vec!["lan".into()],
        dhcp_client4: vec!["wan".into()],
        dhcp_client6: vec!["wan".into()],
    };
    // Descriptions are free text: every printable ASCII character, controls, non-ASCII, long.
    let ascii: String = (0x20u8..0x7f).map(char::from).collect();
    for (i, descr) in [
        ascii.clone(),
        format!("tab\tnewline\nnul\0 bell\x07 {}", "é日本🔥".repeat(20)),
        "\\\"\\".repeat(100),
        String::new(),
    ]
    .into_iter()
    .enumerate()
    {
        let mut r = rules[0].clone();
        r.path = format!("filter/rule[d{i}]");
        r.descr = descr;
        r.log = true;
        rules.push(r);
    }
    let filter = render_filter(&FilterSet { auto, rules }, &view).unwrap();

    let nat_rule = |path: &str, target: NatTarget, src: &str| NatRule {
        path: path.into(),
        descr: "d".into(),
        interface: "wan".into(),
        proto: Proto::TcpUdp,
        src: Endpoint {
            addr: AddrMatch::Nets(vec![Cidr::parse(src).unwrap()]),
            not: false,
            ports: vec![PortRange {
                lo: 1024,
                hi: 65535,
            }],
        },
        dst: Endpoint {
            addr: AddrMatch::Any,
            not: false,
            ports: vec![PortRange::single(500)],
        },
        target,
        static_port: true,
        nonat: false,
    };
    let mut nonat = nat_rule("n0", NatTarget::Masquerade, "192.168.1.0/24");
    nonat.nonat = true;
    let nat_rules = vec![
        nonat,
        nat_rule("n1", NatTarget::Masquerade, "192.168.1.0/24"),
        nat_rule("n2", NatTarget::Addr(ip("172.18.0.100")), "192.168.1.0/24"),
        nat_rule(
            "n3",
            NatTarget::Subnet(Cidr::parse("172.18.0.96/29").unwrap()),
            "192.168.1.0/24",
        ),
        nat_rule("n4", NatTarget::IfAddr("wan".into()), "192.168.1.0/24"),
        nat_rule(
            "n5",
            NatTarget::Addr(ip("2001:db8:2::100")),
            "2001:db8:1::/64",
        ),
        nat_rule("n6", NatTarget::Masquerade, "2001:db8:1::/64"),
    ];
    let nat = render_nat(
        &NatSet {
            mode: NatMode::Hybrid,
            rules: nat_rules,
        },
        &view,
    )
    .unwrap();
    assert!(nat.text.contains("table ip6 tandem_nat"));
    let lines = filter.text.lines().count();
    let Some(r) = in_netns(move || {
        sys::nft::load_filter(&filter)?;
        sys::nft::load(&nat)?;
        Ok::<_, sys::nft::Error>((sys::nft::list(&filter)?, sys::nft::list(&nat)?))
    }) else {
        return;
    };
    let (f, n) = r.unwrap_or_else(|e| panic!("{e}"));
    assert!(lines > 500, "{lines}");
    assert!(f.contains("reject with tcp reset"));
    assert!(n.contains("table ip6 tandem_nat"));
}

/// Render and load time of a large ruleset (10,000 rules), printed; bounded so a regression to
/// something quadratic fails.
#[test]
fn large_ruleset_loads() {
    use std::time::Instant;
    use tandem::proto::nft::*;

    let mut lan = IfView::new("lan", "em0");
    lan.v4 = Some(("192.168.1.10".parse().unwrap(), 24));
    let view = View {
        interfaces: vec![lan],
    };
    let rules: Vec<Rule> = (0..10_000u32)
        .map(|i| Rule {
            path: format!("filter/rule[{}]", i + 1),
            descr: String::new(),
            action: if i % 2 == 0 {
                Action::Pass
            } else {
                Action::Block
            },
            quick: true,
            log: false,
            interfaces: vec!["lan".into()],
            direction: Direction::In,
            ipver: IpVersion::Inet,
            proto: Proto::Tcp,
            src: Endpoint::any(),
            dst: Endpoint {
                addr: AddrMatch::Nets(vec![
                    Cidr::new(std::net::IpAddr::from([10, (i >> 8) as u8, i as u8, 1]), 32)
                        .unwrap(),
                ]),
                not: false,
                ports: vec![PortRange::single((i % 60_000 + 1) as u16)],
            },
        })
        .collect();
    let t0 = Instant::now();
    let rs = render_filter(
        &FilterSet {
            auto: Automatic::default(),
            rules,
        },
        &view,
    )
    .unwrap();
    let render = t0.elapsed();
    assert!(render.as_secs() < 5, "render took {render:?}");
    let Some(load) = in_netns(move || {
        let t0 = Instant::now();
        sys::nft::load(&rs).unwrap();
        let load = t0.elapsed();
        // A second load replaces the 10,000 rules in one transaction.
        sys::nft::load(&rs).unwrap();
        let listed = sys::nft::list(&rs).unwrap();
        assert_eq!(listed.matches("comment \"filter/rule[").count(), 10_000);
        load
    }) else {
        return;
    };
    eprintln!("10000 rules: render {render:?}, load {load:?}");
    assert!(load.as_secs() < 60, "load took {load:?}");
}

/// MVC rules (`OPNsense/Firewall/Filter/rules/rule`) convert like legacy ones: interface lists,
/// direction, quick 0, log, `(self)`, `wanip`, a network key, negation, port ranges.
#[test]
fn mvc_rules_convert() {
    let mvc = r#"<OPNsense><Firewall><Filter><rules>
      <rule uuid="a"><enabled>1</enabled><action>reject</action><quick>0</quick><interface>lan,opt1</interface>
        <direction>any</direction><ipprotocol>inet</ipprotocol><protocol>TCP</protocol>
        <source_net>lan</source_net><source_not>1</source_not><source_port>1000:2000</source_port>
        <destination_net>(self)</destination_net><destination_port>22</destination_port>
        <log>1</log><description>mvc one</description></rule>
      <rule uuid="b"><enabled>1</enabled><action>block</action><interface>wan</interface>
        <ipprotocol>inet46</ipprotocol><protocol>udp</protocol>
        <source_net>10.0.0.0/8,fd00::/8</source_net><destination_net>wanip</destination_net>
        <destination_port>53</destination_port><description>mvc two</description></rule>
      <rule uuid="c"><enabled>0</enabled><action>pass</action><interface>opt9</interface></rule>
    </rules></Filter></Firewall></OPNsense>
  </opnsense>"#;
    let xml = example("carp-master.xml").replace("</opnsense>", mvc);
    let f = convert::filter(&parse(&xml)).unwrap().text;
    // Rule 5 in the list (after the 4 legacy rules): non-quick, so it is after the quick ones.
    for want in [
        "iifname { \"em0\", \"em2\" } meta nfproto ipv4 ip saddr != 192.168.1.0/24 tcp sport 1000-2000 fib daddr type local tcp dport 22 log prefix \"tandem rule 5: \" reject with tcp reset comment \"OPNsense/Firewall/Filter/rules/rule[1] mvc one\"",
        "oifname { \"em0\", \"em2\" } meta nfproto ipv4 ip saddr != 192.168.1.0/24 tcp sport 1000-2000 fib daddr type local tcp dport 22 log prefix \"tandem rule 5: \" reject with tcp reset comment \"OPNsense/Firewall/Filter/rules/rule[1] mvc one\"",
        "iifname \"em1\" meta nfproto ipv4 ip saddr 10.0.0.0/8 ip daddr { 172.18.0.101, 172.18.0.100 } udp dport 53 drop comment \"OPNsense/Firewall/Filter/rules/rule[2] mvc two\"",
    ] {
        assert!(f.contains(want), "missing {want}\n{f}");
    }
    // wan has no static IPv6: the v6 half of rule b matches nothing.
    assert!(f.contains("# OPNsense/Firewall/Filter/rules/rule[2]: no ipv6 address known"));
    assert!(!f.contains("rules/rule[3]"));
}

/// `nft <args>` in the calling thread's namespace; panics on failure.
fn nft(args: &[&str]) {
    let out = std::process::Command::new("nft")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nft {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_guard_finds_deleted_or_changed_tables_and_loads_them_again() {
    let cfg = parse(&example("carp-master.xml"));
    let filter = convert::filter(&cfg).unwrap();
    let Some(r) = in_netns(move || {
        use sys::nft::{Drift, Guard};
        let mut found = Vec::new();
        let mut g = Guard::new(filter.clone());
        // Not loaded yet: the first keep loads.
        found.push(g.keep(sys::nft::load_filter).unwrap());
        let loaded = sys::nft::list(&filter).unwrap();
        let gen0 = sys::nft::generation().unwrap();
        found.push(g.check().unwrap());
        // A change to a table tandem does not own moves the generation, and is no drift.
        nft(&["add", "table", "inet", "someone_else"]);
        assert!(sys::nft::generation().unwrap() > gen0);
        found.push(g.check().unwrap());
        // A rule added to ours, then the whole ruleset flushed: both found and repaired.
        nft(&["add", "rule", "inet", "tandem_filter", "forward", "accept"]);
        found.push(g.keep(sys::nft::load_filter).unwrap());
        let after_change = sys::nft::list(&filter).unwrap();
        nft(&["flush", "ruleset"]);
        found.push(g.keep(sys::nft::load_filter).unwrap());
        let after_flush = sys::nft::list(&filter).unwrap();
        found.push(g.check().unwrap());
        // A rule deleted (the chain flushed) is a change too.
        nft(&["flush", "chain", "inet", "tandem_filter", "rules_in"]);
        found.push(g.check().unwrap());
        assert_eq!(
            found,
            vec![
                Some(Drift::NotLoaded),
                None,
                None,
                Some(Drift::Changed(filter.owned[0])),
                Some(Drift::Missing(filter.owned[0])),
                None,
                Some(Drift::Changed(filter.owned[0])),
            ]
        );
        (loaded, after_change, after_flush)
    }) else {
        return;
    };
    let (loaded, after_change, after_flush) = r;
    assert!(loaded.contains("chain rules_in {"), "{loaded}");
    // Repaired means the tables as loaded, rule for rule (counters aside).
    let strip = |s: &str| {
        s.lines()
            .map(|l| l.split(" counter packets").next().unwrap_or(l).to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(&after_change), strip(&loaded));
    assert_eq!(strip(&after_flush), strip(&loaded));
}
