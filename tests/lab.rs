//! The two-firewall lab: wiring, teardown (also after a crash), booting daemons in it.
//! Needs root (network namespaces). Every test has its own prefix `tt<pid><letter>` and a guard
//! that tears its lab down even when it panics.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::{Value, json};
use tandem::lab::{CABLES, Lab, LabGuard, LabOptions, Node, RUN_ROOT, netns_list};

const TANDEM: &str = env!("CARGO_BIN_EXE_tandem");

fn prefix(letter: char) -> String {
    format!("tt{}{letter}", std::process::id())
}

/// A scratch directory for fake binaries and configs, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(prefix: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("tandem-labtest-{prefix}"));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn file(&self, name: &str, text: &str, exec: bool) -> PathBuf {
        let p = self.0.join(name);
        fs::write(&p, text).unwrap();
        if exec {
            fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        }
        p
    }

    /// Options booting `tandem` with two dummy configs.
    fn opts(&self, boot: bool, tandem: PathBuf) -> LabOptions {
        LabOptions {
            boot,
            tandem,
            master_config: self.file("master.xml", "<opnsense/>\n", false),
            backup_config: self.file("backup.xml", "<opnsense/>\n", false),
            client_addr: Some(Default::default()),
            fw_addresses: false,
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// `ip -j -d [-n ns] link show dev` as JSON.
fn link(ns: Option<&str>, dev: &str) -> Value {
    let mut args = vec!["-j", "-d"];
    if let Some(ns) = ns {
        args.extend(["-n", ns]);
    }
    args.extend(["link", "show", dev]);
    let out = tandem::lab::ip(&args).unwrap_or_else(|e| panic!("{e:#}"));
    let v: Value = serde_json::from_str(&out).unwrap();
    v[0].clone()
}

fn index(v: &Value) -> u64 {
    v["ifindex"].as_u64().unwrap()
}

fn is_up(v: &Value) -> bool {
    v["flags"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f.as_str() == Some("UP"))
}

fn ping(lab: &Lab, from: Node, to: &str) -> bool {
    lab.exec(from, &["ping", "-n", "-q", "-c", "1", "-W", "1", to])
        .unwrap()
        .status
        .success()
}

/// Gone, or a zombie waiting for its parent (an orphan's parent is init, which reaps it soon).
fn dead(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.contains(") Z") || stat.contains(") X"),
        Err(_) => true,
    }
}

fn sysctl(lab: &Lab, node: Node, key: &str) -> String {
    lab.run(node, &["sysctl", "-n", key])
        .unwrap()
        .trim()
        .to_string()
}

/// Nothing of the lab `p` is left: namespaces, run dir, devices in the root ns, processes.
fn assert_gone(p: &str) {
    let left: Vec<String> = netns_list()
        .unwrap()
        .into_iter()
        .filter(|n| n.starts_with(&format!("{p}-")))
        .collect();
    assert!(left.is_empty(), "namespaces left: {left:?}");
    let run_dir = Path::new(RUN_ROOT).join(p);
    assert!(!run_dir.exists(), "{} left", run_dir.display());
    let root_links = tandem::lab::ip(&["-o", "link"]).unwrap();
    for name in CABLES
        .iter()
        .map(|c| c.0)
        .chain(["br-lan", "br-wan", "em0", "em1", "em2"])
    {
        assert!(
            !root_links.contains(&format!(": {name}@"))
                && !root_links.contains(&format!(": {name}:")),
            "{name} leaked into the root namespace:\n{root_links}"
        );
    }
    let pgrep = Command::new("pgrep")
        .args(["-f", &run_dir.to_string_lossy()])
        .output()
        .unwrap();
    assert!(
        pgrep.stdout.is_empty(),
        "processes of {} left: {}",
        run_dir.display(),
        String::from_utf8_lossy(&pgrep.stdout)
    );
}

#[test]
fn up_wires_the_topology() {
    let p = prefix('a');
    let scratch = Scratch::new(&p);
    let mut opts = scratch.opts(false, PathBuf::from(TANDEM));
    opts.fw_addresses = true;
    let start = Instant::now();
    let lab = LabGuard(Lab::up(&p, opts).unwrap());
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "up took {:?}",
        start.elapsed()
    );

    let all = netns_list().unwrap();
    for node in Node::ALL {
        assert!(all.contains(&lab.ns(node)), "{} missing", lab.ns(node));
        assert!(is_up(&link(Some(&lab.ns(node)), "lo")), "{node}: lo down");
        assert_eq!(sysctl(&lab, node, "net.ipv6.conf.all.accept_dad"), "0");
        assert_eq!(sysctl(&lab, node, "net.ipv6.conf.default.accept_dad"), "0");
    }
    let sw = lab.ns(Node::Switch);
    for br in ["br-lan", "br-wan"] {
        let b = link(Some(&sw), br);
        let info = &b["linkinfo"];
        assert_eq!(info["info_kind"], "bridge", "{br}: {b}");
        assert_eq!(info["info_data"]["stp_state"], 0, "{br}");
        assert_eq!(info["info_data"]["forward_delay"], 0, "{br}");
        assert!(is_up(&b), "{br} down");
    }
    // Each cable: the node's device and the switch port are the two ends of one veth, and the
    // port hangs on the right bridge.
    for (port, node, dev, br) in CABLES {
        let ns = lab.ns(node);
        let end = link(Some(&ns), dev);
        let peer = link(Some(&sw), port);
        assert_eq!(end["linkinfo"]["info_kind"], "veth", "{ns} {dev}");
        assert_eq!(
            end["link_index"].as_u64(),
            Some(index(&peer)),
            "{ns} {dev} <-> {port}"
        );
        assert_eq!(
            peer["link_index"].as_u64(),
            Some(index(&end)),
            "{port} <-> {ns} {dev}"
        );
        assert_eq!(peer["master"], br.name(), "{port}");
        assert!(is_up(&peer), "{port} down");
    }
    // The sync cable joins fw1 em2 and fw2 em2 directly.
    let em2a = link(Some(&lab.ns(Node::Fw1)), "em2");
    let em2b = link(Some(&lab.ns(Node::Fw2)), "em2");
    assert_eq!(em2a["link_index"].as_u64(), Some(index(&em2b)));
    assert_eq!(em2b["link_index"].as_u64(), Some(index(&em2a)));
    assert!(em2a.get("master").is_none() && em2b.get("master").is_none());

    // Client and server addressing.
    let route = lab
        .run(Node::Client, &["ip", "route", "show", "default"])
        .unwrap();
    assert!(route.contains("via 192.168.1.1 dev eth0"), "{route}");
    let addrs = lab
        .run(Node::Server, &["ip", "-br", "addr", "show", "eth0"])
        .unwrap();
    assert!(addrs.contains("172.18.0.250/24"), "{addrs}");

    // Traffic: answer ARP only for the address of the incoming device, so a ping proves the
    // address sits on the device wired to that segment.
    for fw in Node::FIREWALLS {
        lab.run(fw, &["sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=1"])
            .unwrap();
    }
    assert!(
        ping(&lab, Node::Client, "192.168.1.10"),
        "client -> fw1 em0"
    );
    assert!(
        ping(&lab, Node::Client, "192.168.1.20"),
        "client -> fw2 em0"
    );
    assert!(
        ping(&lab, Node::Server, "172.18.0.101"),
        "server -> fw1 em1"
    );
    assert!(
        ping(&lab, Node::Server, "172.18.0.102"),
        "server -> fw2 em1"
    );
    assert!(ping(&lab, Node::Fw1, "10.0.0.2"), "fw1 -> fw2 over em2");
    // LAN and WAN are separate segments: a WAN address on the client reaches nobody.
    lab.run(
        Node::Client,
        &["ip", "addr", "add", "172.18.0.77/24", "dev", "eth0"],
    )
    .unwrap();
    assert!(
        !ping(&lab, Node::Client, "172.18.0.250"),
        "LAN and WAN are bridged together"
    );

    // Pulling the plug takes em0 and em1 down, not em2; restoring brings them back.
    let fw1 = lab.ns(Node::Fw1);
    lab.pull_plug(Node::Fw1).unwrap();
    assert!(!is_up(&link(Some(&fw1), "em0")) && !is_up(&link(Some(&fw1), "em1")));
    assert!(is_up(&link(Some(&fw1), "em2")));
    assert!(!ping(&lab, Node::Client, "192.168.1.10"));
    lab.restore_plug(Node::Fw1).unwrap();
    assert!(is_up(&link(Some(&fw1), "em0")) && is_up(&link(Some(&fw1), "em1")));

    drop(lab);
    assert_gone(&p);
}

#[test]
fn down_leaves_nothing_and_is_idempotent() {
    let p = prefix('b');
    let scratch = Scratch::new(&p);
    let lab = LabGuard(Lab::up(&p, scratch.opts(false, PathBuf::from(TANDEM))).unwrap());
    // Without fw_addresses the firewalls are left to tandem: no address, devices down.
    for fw in Node::FIREWALLS {
        let out = lab
            .run(fw, &["ip", "-4", "-o", "addr", "show", "dev", "em0"])
            .unwrap();
        assert!(out.trim().is_empty(), "{fw} em0 got {out}");
        assert!(!is_up(&link(Some(&lab.ns(fw)), "em1")));
    }
    // A process in every namespace, its command line naming the run dir.
    let run_dir = lab.run_dir.to_string_lossy().into_owned();
    let mut children = Vec::new();
    for node in Node::ALL {
        let log = lab.run_dir.join(format!("{node}.log"));
        children.push(
            lab.spawn(node, &["sh", "-c", "sleep 1000", &run_dir], &log)
                .unwrap(),
        );
    }
    lab.down().unwrap();
    for mut c in children {
        let status = c.try_wait().unwrap();
        assert!(status.is_some(), "a process in the lab survived down");
    }
    assert_gone(&p);
    lab.down().unwrap();
    Lab::attach(&p).down().unwrap();
    assert_gone(&p);
    // up on top of an existing lab rebuilds it.
    let again = LabGuard(Lab::up(&p, scratch.opts(false, PathBuf::from(TANDEM))).unwrap());
    let again2 = LabGuard(Lab::up(&p, scratch.opts(false, PathBuf::from(TANDEM))).unwrap());
    assert!(netns_list().unwrap().contains(&again2.ns(Node::Switch)));
    drop(again2);
    drop(again);
    assert_gone(&p);
}

#[test]
fn down_after_a_crash() {
    let p = prefix('c');
    // A lab built by another process (the CLI), which then "crashed" leaving orphans behind:
    // processes in the namespaces and a stale pid file.
    let out = Command::new(TANDEM)
        .args(["lab", "up", "--no-boot", "--prefix", &p])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lab = LabGuard(Lab::attach(&p));
    let orphans = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "for n in fw1 fw2 client server sw; do \
               setsid ip netns exec {p}-$n sleep 1000 </dev/null >/dev/null 2>&1 & \
             done"
        ))
        .status()
        .unwrap();
    assert!(orphans.success());
    let deadline = Instant::now() + Duration::from_secs(5);
    while Node::ALL
        .iter()
        .any(|&n| tandem::lab::netns_pids(&lab.ns(n)).is_empty())
    {
        assert!(Instant::now() < deadline, "orphans did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let orphan_pids: Vec<i32> = Node::ALL
        .iter()
        .flat_map(|&n| tandem::lab::netns_pids(&lab.ns(n)))
        .collect();
    fs::create_dir_all(lab.node_dir(Node::Fw1)).unwrap();
    fs::write(lab.node_dir(Node::Fw1).join("tandem.pid"), "1\n").unwrap();

    let out = Command::new(TANDEM)
        .args(["lab", "down", "--prefix", &p])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for pid in orphan_pids {
        assert!(dead(pid), "orphan {pid} survived");
    }
    assert_gone(&p);

    // A half-built lab (a crash in the middle of up): only some namespaces exist.
    tandem::lab::ip(&["netns", "add", &lab.ns(Node::Fw2)]).unwrap();
    tandem::lab::ip(&["netns", "add", &lab.ns(Node::Switch)]).unwrap();
    lab.down().unwrap();
    assert_gone(&p);
}

#[test]
fn boot_failure_is_reported_with_the_log_tail() {
    let p = prefix('d');
    let scratch = Scratch::new(&p);
    let fake = scratch.file(
        "tandem",
        "#!/bin/sh\necho 'line one'\necho \"fake boot failed: $*\" >&2\nexit 3\n",
        true,
    );
    let start = Instant::now();
    let err = Lab::up(&p, scratch.opts(true, fake)).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
    assert!(msg.contains("fw1") && msg.contains("exited"), "{msg}");
    assert!(msg.contains("fake boot failed: boot --state"), "{msg}");
    assert!(msg.contains("line one"), "{msg}");
    assert_gone(&p);

    // Missing configs are refused before anything is built.
    let mut opts = scratch.opts(true, PathBuf::from(TANDEM));
    opts.master_config = scratch.0.join("nope.xml");
    let msg = format!("{:#}", Lab::up(&p, opts).unwrap_err());
    assert!(msg.contains("nope.xml"), "{msg}");
    assert_gone(&p);
}

/// A stand-in daemon: answers every JSON-RPC call with its network namespace's inode.
const FAKE_DAEMON: &str = r#"#!/usr/bin/env python3
import json, os, signal, socket, sys
sock = sys.argv[sys.argv.index("--socket") + 1]
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
s = socket.socket(socket.AF_UNIX)
s.bind(sock)
s.listen(8)
print("fake daemon up", flush=True)
while True:
    c, _ = s.accept()
    f = c.makefile("rwb")
    for line in f:
        req = json.loads(line)
        res = {"method": req["method"], "netns": os.stat("/proc/self/ns/net").st_ino}
        f.write((json.dumps({"jsonrpc": "2.0", "id": req.get("id"), "result": res}) + "\n").encode())
        f.flush()
    c.close()
"#;

#[test]
fn boot_waits_for_both_sockets_and_stops_nodes() {
    let p = prefix('e');
    let scratch = Scratch::new(&p);
    let fake = scratch.file("tandem", FAKE_DAEMON, true);
    let lab = LabGuard(Lab::up(&p, scratch.opts(true, fake)).unwrap());
    for fw in Node::FIREWALLS {
        let v = lab.ctl(fw, "system.status", json!({})).unwrap();
        assert_eq!(v["method"], "system.status");
        // It runs in its own firewall's namespace.
        let ns_inode = fs::metadata(format!("/run/netns/{}", lab.ns(fw)))
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .unwrap();
        assert_eq!(v["netns"].as_u64(), Some(ns_inode), "{fw}");
        assert!(lab.node_pid(fw).is_some());
        assert!(lab.state_dir(fw).is_dir());
    }
    assert!(lab.start_node(Node::Fw1).is_err(), "second daemon in fw1");
    common::flush_disk();
    let took = lab.stop_node(Node::Fw1, Signal::SIGTERM).unwrap();
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert!(lab.node_pid(Node::Fw1).is_none());
    assert!(lab.stop_node(Node::Fw1, Signal::SIGTERM).is_err());
    assert!(lab.ctl(Node::Fw1, "system.status", json!({})).is_err());
    lab.start_node(Node::Fw1).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while lab.ctl(Node::Fw1, "system.status", json!({})).is_err() {
        assert!(Instant::now() < deadline, "fw1 did not come back");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(lab.log_tail(Node::Fw1, 5).contains("fake daemon up"));
    // fw2 keeps running until down kills it.
    let pid2 = lab.node_pid(Node::Fw2).unwrap();
    drop(lab);
    assert!(dead(pid2), "fw2's daemon survived down");
    assert_gone(&p);
}

/// The real daemon with the example configs (etc/examples, found from the package root).
#[test]
fn real_pair_boots_with_the_examples() {
    let p = prefix('f');
    let opts = LabOptions {
        tandem: PathBuf::from(TANDEM),
        ..LabOptions::default()
    };
    assert!(opts.master_config.ends_with("etc/examples/carp-master.xml"));
    let lab = LabGuard(Lab::up(&p, opts).unwrap_or_else(|e| panic!("{e:#}")));
    for fw in Node::FIREWALLS {
        let status = lab.ctl(fw, "system.status", json!({})).unwrap();
        assert_eq!(
            status["pid"].as_i64(),
            lab.node_pid(fw).map(i64::from),
            "{fw}"
        );
        lab.ctl(fw, "interfaces.list", json!({})).unwrap();
    }
    // tandem gave the devices the addresses of the examples (ARCHITECTURE.md's table).
    let ns_addrs = |fw: Node| lab.run(fw, &["ip", "-4", "-o", "addr"]).unwrap();
    for (fw, dev, cidr) in tandem::lab::FW_ADDRESSES {
        let addrs = ns_addrs(fw);
        assert!(
            addrs
                .lines()
                .any(|l| l.contains(&format!(" {dev} ")) && l.contains(cidr)),
            "{fw} {dev} lacks {cidr}:\n{addrs}"
        );
    }
    assert!(ping(&lab, Node::Fw1, "10.0.0.2"), "pfsync link");
    assert!(ping(&lab, Node::Client, "192.168.1.10"), "client -> fw1");
    common::flush_disk();
    let took = lab.stop_node(Node::Fw2, Signal::SIGTERM).unwrap();
    assert!(took < Duration::from_secs(2), "{took:?}");
    // The exit code itself is asserted by tests/boot.rs; here the status can be unknown when the
    // child was reaped elsewhere, but a known one must be success and the log must end cleanly.
    let st = lab.exit_status(Node::Fw2);
    let tail = lab.log_tail(Node::Fw2, 3);
    assert!(
        st.is_none_or(|s| s.success()) && tail.contains("stopped"),
        "fw2 exit status {st:?}\n{tail}"
    );
    drop(lab);
    assert_gone(&p);
}
