//! CARP in the lab: group failover, preemption, maintenance mode across a restart, IPv6 VIPs and
//! IP aliases riding on a VHID, bad authentication, and interop with Debian's ucarp.
//! Every test builds its own lab (unique prefix) and tears it down on drop.

mod common;

use common::labutil::*;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::{Value, json};
use tandem::lab::{Lab, LabGuard, LabOptions, Node};

/// CARP's bound for the backup (advbase 1, advskew 100): 3·1 + 100/256 s, plus 0.5 s of slack.
const BACKUP_BOUND: Duration = Duration::from_millis(3000 + 391 + 500);

#[test]
fn pulled_plug_fails_over_both_vhids_and_preempts_back() {
    let l = lab("f", default_opts());
    settled_pair(&l);
    assert!(addrs(&l, Node::Fw1, "em0").contains("192.168.1.1/24"));
    assert!(!addrs(&l, Node::Fw2, "em0").contains("192.168.1.1/24"));

    l.pull_plug(Node::Fw1).unwrap();
    let gap = wait_all(&l, Node::Fw2, "MASTER", 2, Duration::from_secs(6));
    assert!(
        gap <= BACKUP_BOUND,
        "failover took {gap:?} (bound {BACKUP_BOUND:?})"
    );
    assert!(addrs(&l, Node::Fw2, "em0").contains("192.168.1.1/24"));
    assert!(addrs(&l, Node::Fw2, "em1").contains("172.18.0.100/24"));
    eprintln!("plug pulled -> fw2 MASTER for both in {gap:?}");

    l.restore_plug(Node::Fw1).unwrap();
    wait_all(&l, Node::Fw1, "MASTER", 2, Duration::from_secs(6));
    wait_all(&l, Node::Fw2, "BACKUP", 2, Duration::from_secs(3));
    assert!(!addrs(&l, Node::Fw2, "em0").contains("192.168.1.1/24"));

    // One interface down on fw1 only: the node is demoted, so BOTH VHIDs move.
    l.run(Node::Fw1, &["ip", "link", "set", "em1", "down"])
        .unwrap();
    wait_all(&l, Node::Fw2, "MASTER", 2, Duration::from_secs(6));
    let st = l.ctl(Node::Fw1, "carp.status", json!({})).unwrap();
    assert_eq!(st["demotion"], 240, "{st}");
    let reasons: Vec<&str> = st["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(reasons, vec!["link:em1"]);
    let vhid3 = st["vhids"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["vhid"] == 3)
        .unwrap();
    assert_eq!(
        vhid3["state"], "BACKUP",
        "vhid 3 on the healthy em0 must follow: {st}"
    );
    assert_eq!(vhid3["advertised_skew"], 240);
    l.run(Node::Fw1, &["ip", "link", "set", "em1", "up"])
        .unwrap();
    wait_all(&l, Node::Fw1, "MASTER", 2, Duration::from_secs(6));
    assert_eq!(
        l.ctl(Node::Fw1, "carp.status", json!({})).unwrap()["demotion"],
        0
    );
}

/// Ping `target` from the client every 10 ms in the background.
fn prober(l: &Lab, target: &str, count: u32) -> Child {
    Command::new("ip")
        .args([
            "netns",
            "exec",
            &l.ns(Node::Client),
            "ping",
            "-n",
            "-i",
            "0.01",
            "-W",
            "1",
            "-c",
            &count.to_string(),
            target,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn loss(child: Child) -> (u32, u32) {
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_else(|| panic!("no summary in {text}"));
    let nums: Vec<u32> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    (nums[0], nums[1])
}

#[test]
fn maintenance_hands_over_at_once_and_survives_a_restart() {
    let l = lab("m", default_opts());
    settled_pair(&l);
    let probe = prober(&l, "192.168.1.1", 300);
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    let r = l
        .ctl(Node::Fw1, "carp.maintenance", json!({"enabled": true}))
        .unwrap();
    assert_eq!(r["changed"], true);
    let gap = wait_all(&l, Node::Fw2, "MASTER", 2, Duration::from_secs(3));
    let took = t.elapsed();
    // One advert round trip, not a master-down timeout.
    assert!(
        took < Duration::from_millis(1500),
        "handover took {took:?} ({gap:?})"
    );
    wait_all(&l, Node::Fw1, "BACKUP", 2, Duration::from_secs(2));
    let (sent, received) = loss(probe);
    assert_eq!(sent, received, "probes lost during a planned handover");

    // The flag is in config.xml and survives a daemon restart.
    let cfg = l.ctl(Node::Fw1, "config.get", json!({})).unwrap();
    assert!(
        cfg["xml"]
            .as_str()
            .unwrap()
            .contains("<virtualip_carp_maintenancemode>")
    );
    l.stop_node(Node::Fw1, Signal::SIGTERM).unwrap();
    l.start_node(Node::Fw1).unwrap();
    let t = Instant::now();
    while l.ctl(Node::Fw1, "system.status", json!({})).is_err()
        && t.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_all(&l, Node::Fw1, "BACKUP", 2, Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        all_in(&l, Node::Fw2, "MASTER", 2),
        "fw2 lost MASTER while fw1 restarted in maintenance"
    );
    assert!(all_in(&l, Node::Fw1, "BACKUP", 2));
    let st = l.ctl(Node::Fw1, "carp.status", json!({})).unwrap();
    assert_eq!(st["maintenance"], true);
    assert_eq!(st["demotion"], 240);

    l.ctl(Node::Fw1, "carp.maintenance", json!({"enabled": false}))
        .unwrap();
    wait_all(&l, Node::Fw1, "MASTER", 2, Duration::from_secs(3));
    wait_all(&l, Node::Fw2, "BACKUP", 2, Duration::from_secs(3));
}

/// Insert `extra` before `</virtualip>` and give lan a static IPv6 address.
fn with_v6(xml: &str, lan_v6: &str) -> String {
    let extra = r#"<vip>
      <mode>carp</mode><interface>lan</interface><vhid>5</vhid><advskew>SKEW</advskew><advbase>1</advbase>
      <password>opnsense</password><descr>VIP LAN v6</descr><subnet_bits>64</subnet_bits><subnet>fd00:1::1</subnet>
    </vip>
    <vip>
      <mode>ipalias</mode><interface>lan</interface><vhid>3</vhid><descr>alias on vhid 3</descr>
      <subnet_bits>24</subnet_bits><subnet>192.168.1.2</subnet>
    </vip>
  </virtualip>"#;
    let skew = if xml.contains("<advskew>100</advskew>") {
        "100"
    } else {
        "0"
    };
    xml.replacen("</virtualip>", &extra.replace("SKEW", skew), 1)
        .replacen(
            "<ipaddrv6>track6</ipaddrv6>",
            &format!("<ipaddrv6>{lan_v6}</ipaddrv6><subnetv6>64</subnetv6>"),
            1,
        )
}

#[test]
fn ipv6_vip_and_ip_alias_move_with_their_vhid() {
    let base = default_opts();
    let master = std::fs::read_to_string(&base.master_config).unwrap();
    let backup = std::fs::read_to_string(&base.backup_config).unwrap();
    assert!(
        master.contains("<ipaddrv6>track6</ipaddrv6>"),
        "example changed: adapt the test"
    );
    let dir = common::TempDir::new("v6");
    let m = dir.0.join("m.xml");
    let b = dir.0.join("b.xml");
    std::fs::write(&m, with_v6(&master, "fd00:1::10")).unwrap();
    std::fs::write(&b, with_v6(&backup, "fd00:1::20")).unwrap();
    for f in [&m, &b] {
        let out = Command::new(common::TANDEM)
            .args(["config", "check"])
            .arg(f)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let l = lab_with("v", m, b);
    wait_all(&l, Node::Fw1, "MASTER", 3, Duration::from_secs(15));
    wait_all(&l, Node::Fw2, "BACKUP", 3, Duration::from_secs(5));
    let a1 = addrs(&l, Node::Fw1, "em0");
    assert!(a1.contains("fd00:1::1/64"), "{a1}");
    assert!(a1.contains("192.168.1.2/24"), "{a1}");
    let a2 = addrs(&l, Node::Fw2, "em0");
    assert!(
        !a2.contains("fd00:1::1/64") && !a2.contains("192.168.1.2/24"),
        "{a2}"
    );

    l.pull_plug(Node::Fw1).unwrap();
    wait_all(&l, Node::Fw2, "MASTER", 3, Duration::from_secs(6));
    let t = Instant::now();
    loop {
        let a2 = addrs(&l, Node::Fw2, "em0");
        if a2.contains("fd00:1::1/64") && a2.contains("192.168.1.2/24") {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(2), "{a2}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let a1 = addrs(&l, Node::Fw1, "em0");
    assert!(
        !a1.contains("fd00:1::1/64") && !a1.contains("192.168.1.2/24"),
        "{a1}"
    );
    // The kernel drops a static IPv6 address when its link goes down and does not bring it
    // back with the link: tandem installs it again, and fw1 takes the VIPs back.
    l.restore_plug(Node::Fw1).unwrap();
    wait_for(
        "fw1's LAN IPv6 address back",
        Duration::from_secs(5),
        || addrs(&l, Node::Fw1, "em0").contains("fd00:1::10/64"),
    );
    wait_all(&l, Node::Fw1, "MASTER", 3, Duration::from_secs(10));
    let a1 = addrs(&l, Node::Fw1, "em0");
    assert!(
        a1.contains("fd00:1::1/64") && a1.contains("fd00:1::10/64"),
        "{a1}"
    );
}

fn vhid_stats(l: &Lab, fw: Node, vhid: u64) -> Value {
    let st = l.ctl(fw, "carp.status", json!({})).unwrap();
    st["vhids"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["vhid"] == vhid)
        .unwrap()
        .clone()
}

#[test]
fn wrong_password_is_counted_as_bad_auth() {
    let base = default_opts();
    let backup = std::fs::read_to_string(&base.backup_config)
        .unwrap()
        .replace(
            "<password>opnsense</password>",
            "<password>wrong</password>",
        );
    let dir = common::TempDir::new("pw");
    let b = dir.0.join("b.xml");
    std::fs::write(&b, backup).unwrap();
    let l = lab(
        "p",
        LabOptions {
            backup_config: b,
            ..base
        },
    );
    wait_all(&l, Node::Fw1, "MASTER", 2, Duration::from_secs(15));
    // fw2 cannot authenticate fw1's adverts: it times out and claims MASTER too (split brain,
    // visible in the counters), and nobody crashes.
    wait_all(&l, Node::Fw2, "MASTER", 2, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(1500));
    for fw in [Node::Fw1, Node::Fw2] {
        let v = vhid_stats(&l, fw, 3);
        assert!(v["stats"]["bad_auth"].as_u64().unwrap() >= 1, "{fw}: {v}");
        assert_eq!(v["stats"]["adverts_received"], 0, "{fw}: {v}");
    }
    assert!(l.ctl(Node::Fw1, "system.status", json!({})).is_ok());
}

/// ucarp in fw2's namespace, sharing vhid 3 / password / VIP 192.168.1.1 with tandem on fw1.
fn ucarp(l: &Lab, skew: u8) -> Child {
    let up = l.run_dir.join("ucarp-up.sh");
    let down = l.run_dir.join("ucarp-down.sh");
    std::fs::write(&up, "#!/bin/sh\nip addr add 192.168.1.1/24 dev \"$1\"\n").unwrap();
    std::fs::write(&down, "#!/bin/sh\nip addr del 192.168.1.1/24 dev \"$1\"\n").unwrap();
    for p in [&up, &down] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let log = std::fs::File::create(l.run_dir.join("ucarp.log")).unwrap();
    Command::new("ip")
        .args([
            "netns",
            "exec",
            &l.ns(Node::Fw2),
            "ucarp",
            "-i",
            "em0",
            "-s",
            "192.168.1.20",
            "-v",
            "3",
            "-p",
            "opnsense",
            "-a",
            "192.168.1.1",
            "-b",
            "1",
            "-k",
            &skew.to_string(),
            "-P",
            "-u",
        ])
        .arg(&up)
        .arg("-d")
        .arg(&down)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("ucarp")
}

fn fw2_has_vip(l: &Lab) -> bool {
    addrs(l, Node::Fw2, "em0").contains("192.168.1.1/24")
}

#[test]
fn interop_with_ucarp_both_directions() {
    let l = lab("u", default_opts());
    settled_pair(&l);
    // fw2 runs ucarp instead of tandem (its addresses stay configured).
    l.stop_node(Node::Fw2, Signal::SIGTERM).unwrap();
    let _uc = KillOnDrop(ucarp(&l, 100));
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(vhid_stats(&l, Node::Fw1, 3)["state"], "MASTER");
    assert!(
        !fw2_has_vip(&l),
        "ucarp took the VIP while tandem is master"
    );

    // Direction 1: tandem (fw1) unplugged -> ucarp takes over.
    l.pull_plug(Node::Fw1).unwrap();
    let gap = wait_for("ucarp MASTER", Duration::from_secs(8), || fw2_has_vip(&l));
    eprintln!("tandem unplugged -> ucarp holds the VIP after {gap:?}");
    // Plug back: tandem (skew 0, preempt) takes it back and ucarp steps down.
    l.restore_plug(Node::Fw1).unwrap();
    wait_for("tandem MASTER again", Duration::from_secs(8), || {
        vhid_stats(&l, Node::Fw1, 3)["state"] == "MASTER" && !fw2_has_vip(&l)
    });
    let v = vhid_stats(&l, Node::Fw1, 3);
    assert!(
        v["stats"]["adverts_received"].as_u64().unwrap() >= 1,
        "no ucarp advert accepted: {v}"
    );
    assert_eq!(v["stats"]["bad_auth"], 0, "{v}");

    // Direction 2: make ucarp the preferred node, then unplug it -> tandem takes over.
    let cfg = l.ctl(Node::Fw1, "config.get", json!({})).unwrap();
    let xml = cfg["xml"]
        .as_str()
        .unwrap()
        .replace("<advskew>0</advskew>", "<advskew>200</advskew>");
    l.ctl(Node::Fw1, "config.apply", json!({"xml": xml}))
        .unwrap();
    wait_for("ucarp MASTER (preferred)", Duration::from_secs(8), || {
        fw2_has_vip(&l)
    });
    wait_for("tandem BACKUP", Duration::from_secs(5), || {
        vhid_stats(&l, Node::Fw1, 3)["state"] == "BACKUP"
    });
    l.pull_plug(Node::Fw2).unwrap();
    let gap = wait_for("tandem MASTER", Duration::from_secs(8), || {
        vhid_stats(&l, Node::Fw1, 3)["state"] == "MASTER"
    });
    eprintln!("ucarp unplugged -> tandem MASTER after {gap:?}");
}

#[test]
fn syshook_carp_scripts_run_in_order_and_a_failing_one_is_harmless() {
    let l = LabGuard(
        Lab::up(
            &prefix("h"),
            LabOptions {
                boot: false,
                ..default_opts()
            },
        )
        .expect("lab up"),
    );
    // OPNsense's hook directory, in fw1's writable overlay layer, before it boots.
    let record = l.run_dir.join("hooks.log");
    let dir = l
        .state_dir(Node::Fw1)
        .join("upper/usr/local/etc/rc.syshook.d/carp");
    std::fs::create_dir_all(&dir).unwrap();
    let scripts = [
        (
            "05-fails",
            "#!/bin/sh\necho failing on purpose >&2\nexit 1\n".to_string(),
        ),
        (
            "10-record",
            format!("#!/bin/sh\necho \"$1 $2\" >> {}\n", record.display()),
        ),
    ];
    for (name, body) in scripts {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    for fw in [Node::Fw1, Node::Fw2] {
        l.start_node(fw).unwrap();
        l.wait_ready(fw, Duration::from_secs(15)).unwrap();
    }
    settled_pair(&l);
    l.pull_plug(Node::Fw1).unwrap();
    wait_all(&l, Node::Fw2, "MASTER", 2, Duration::from_secs(6));
    l.restore_plug(Node::Fw1).unwrap();
    wait_all(&l, Node::Fw1, "MASTER", 2, Duration::from_secs(6));
    let t = Instant::now();
    // Up: BACKUP, MASTER; plug pulled: INIT (vhid 1 may pass through BACKUP first: em0 goes down
    // before em1 and the demotion hands vhid 1 over); plug back: BACKUP, MASTER.
    let ok = |s: &[String]| {
        s.len() >= 5
            && s[..2] == ["BACKUP", "MASTER"]
            && s[s.len() - 2..] == ["BACKUP", "MASTER"]
            && s[2..s.len() - 2].iter().any(|x| x == "INIT")
            && s[2..s.len() - 2]
                .iter()
                .all(|x| x == "INIT" || x == "BACKUP")
    };
    loop {
        let text = std::fs::read_to_string(&record).unwrap_or_default();
        let seq = |sub: &str| -> Vec<String> {
            text.lines()
                .filter(|x| x.starts_with(sub))
                .map(|x| x.split_whitespace().nth(1).unwrap_or("").to_string())
                .collect()
        };
        if ok(&seq("3@em0 ")) && ok(&seq("1@em1 ")) {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "hook calls for 3@em0 and 1@em1 out of order:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The VIPs are on the master and nowhere else, whoever touches the addresses (and a node's
/// own configured addresses stay on it): a VIP deleted
/// from the master (`ip addr del`, a DHCP client, a network manager flushing the device) comes
/// back within about a second, announced again, and the LAN reaches it; a VIP added by hand on
/// the backup is taken away (two nodes answering for it would split the LAN's traffic).
#[test]
fn addresses_and_vips_changed_outside_tandem_are_put_right() {
    let l = lab("vr", default_opts());
    settled_pair(&l);
    assert_eq!(vhid_stats(&l, Node::Fw1, 3)["io"]["vip_repairs"], 0);
    l.run(
        Node::Fw1,
        &["ip", "addr", "del", "192.168.1.1/24", "dev", "em0"],
    )
    .unwrap();
    let took = wait_for("the LAN VIP back on fw1", Duration::from_secs(4), || {
        addrs(&l, Node::Fw1, "em0").contains("192.168.1.1/24")
    });
    eprintln!("LAN VIP back {took:?} after its deletion");
    let s = vhid_stats(&l, Node::Fw1, 3);
    assert_eq!(s["io"]["vip_repairs"], 1, "{s}");
    assert_eq!(s["state"], "MASTER", "{s}");
    assert!(
        l.log_tail(Node::Fw1, 100)
            .contains("removed outside tandem while MASTER"),
        "{}",
        l.log_tail(Node::Fw1, 30)
    );
    // The client's gateway answers (the neighbour entry is fresh again after the announcement).
    let out = l
        .exec(Node::Client, &["ping", "-c", "2", "-W", "1", "192.168.1.1"])
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    l.run(
        Node::Fw2,
        &["ip", "addr", "add", "192.168.1.1/24", "dev", "em0"],
    )
    .unwrap();
    wait_for("the LAN VIP gone from fw2", Duration::from_secs(4), || {
        !addrs(&l, Node::Fw2, "em0").contains("192.168.1.1/24")
    });
    let s = vhid_stats(&l, Node::Fw2, 3);
    assert_eq!(s["io"]["vip_repairs"], 1, "{s}");
    assert_eq!(s["state"], "BACKUP", "{s}");
    // Nothing else moved: the master kept both VHIDs, and the WAN VIP was never touched.
    assert!(all_in(&l, Node::Fw1, "MASTER", 2));
    assert_eq!(vhid_stats(&l, Node::Fw1, 1)["io"]["vip_repairs"], 0);

    // The node's own configured addresses are kept too: the sync link's, flushed by hand.
    l.run(Node::Fw1, &["ip", "addr", "flush", "dev", "em2"])
        .unwrap();
    wait_for("fw1's sync address back", Duration::from_secs(5), || {
        addrs(&l, Node::Fw1, "em2").contains("10.0.0.1/24")
    });
    let list = l.ctl(Node::Fw1, "interfaces.list", json!({})).unwrap();
    let opt1 = list
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["key"] == "opt1")
        .unwrap();
    assert_eq!(opt1["repairs"], 1, "{opt1}");
    let lan = list.as_array().unwrap().iter().find(|i| i["key"] == "lan");
    assert_eq!(lan.unwrap()["repairs"], 0, "{list}");
}
