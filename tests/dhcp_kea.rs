//! Interop: Debian's Kea 2.2 (`kea-dhcp4` + `libdhcp_ha.so` + `libdhcp_lease_cmds.so`, reached
//! through `kea-ctrl-agent`) as tandem's HA partner in hot-standby. tandem on fw1 is the primary;
//! Kea replaces tandem on fw2 as the standby. A lease tandem grants appears in Kea; when fw1 stops,
//! Kea goes partner-down and serves the client its address; a lease Kea grants meanwhile reaches
//! tandem by the page sync when fw1 returns. Needs root and the Kea packages (installed with
//! apt-get if missing). One test function: it sets environment knobs before any node starts.

mod common;

use common::labutil::*;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::{Value, json};
use tandem::lab::{Lab, Node};

const HOOKS: &str = "/usr/lib/x86_64-linux-gnu/kea/hooks";

struct Kea {
    children: Vec<Child>,
    dir: PathBuf,
}

impl Drop for Kea {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn ensure_kea() {
    if !Path::new(HOOKS).join("libdhcp_ha.so").exists()
        || !Path::new("/usr/sbin/kea-ctrl-agent").exists()
    {
        let st = Command::new("apt-get")
            .args([
                "install",
                "-y",
                "--no-install-recommends",
                "kea-dhcp4-server",
                "kea-ctrl-agent",
                "isc-dhcp-client",
            ])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .expect("apt-get");
        assert!(st.success(), "cannot install kea");
    }
}

/// Kea on `node` (fw1 = server1 primary at .10, fw2 = server2 standby at .20).
fn start_kea(l: &Lab, node: Node) -> Kea {
    let (me, my_ip) = match node {
        Node::Fw1 => ("server1", "192.168.1.10"),
        _ => ("server2", "192.168.1.20"),
    };
    let dir = PathBuf::from(format!("/tmp/tk{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.display();
    let dhcp4 = json!({"Dhcp4": {
        "interfaces-config": {"interfaces": ["em0"], "dhcp-socket-type": "raw"},
        "control-socket": {"socket-type": "unix", "socket-name": format!("{d}/kea4.sock")},
        "lease-database": {"type": "memfile", "persist": true,
                           "name": format!("{d}/leases4.csv"), "lfc-interval": 0},
        "multi-threading": {"enable-multi-threading": false},
        "valid-lifetime": 7200,
        "hooks-libraries": [
            {"library": format!("{HOOKS}/libdhcp_lease_cmds.so")},
            {"library": format!("{HOOKS}/libdhcp_ha.so"), "parameters": {"high-availability": [{
                "this-server-name": me,
                "mode": "hot-standby",
                "heartbeat-delay": 1000,
                "max-response-delay": 4000,
                "max-ack-delay": 1000,
                "max-unacked-clients": 0,
                "sync-timeout": 10000,
                "peers": [
                    {"name": "server1", "url": "http://192.168.1.10:8647/", "role": "primary"},
                    {"name": "server2", "url": "http://192.168.1.20:8647/", "role": "standby"}
                ]
            }]}}
        ],
        "subnet4": [{
            "id": 1,
            "subnet": "192.168.1.0/24",
            "pools": [{"pool": "192.168.1.11 - 192.168.1.19"},
                      {"pool": "192.168.1.21 - 192.168.1.245"}],
            "option-data": [
                {"name": "routers", "data": "192.168.1.1"},
                {"name": "domain-name-servers", "data": "192.168.1.1"}
            ]
        }],
        "loggers": [{"name": "kea-dhcp4", "severity": "INFO",
                     "output_options": [{"output": format!("{d}/kea4.log")}]}]
    }});
    let ca = json!({"Control-agent": {
        "http-host": my_ip,
        "http-port": 8647,
        "control-sockets": {"dhcp4": {"socket-type": "unix", "socket-name": format!("{d}/kea4.sock")}},
        "loggers": [{"name": "kea-ctrl-agent", "severity": "INFO",
                     "output_options": [{"output": format!("{d}/ca.log")}]}]
    }});
    std::fs::write(dir.join("dhcp4.json"), dhcp4.to_string()).unwrap();
    std::fs::write(dir.join("ca.json"), ca.to_string()).unwrap();
    let spawn = |bin: &str, cfg: &str, log: &str| {
        Command::new("ip")
            .args(["netns", "exec", &l.ns(node), "env"])
            .arg(format!("KEA_PIDFILE_DIR={d}"))
            .arg(format!("KEA_LOCKFILE_DIR={d}"))
            .args([bin, "-c", &dir.join(cfg).to_string_lossy()])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join(log)).unwrap())
            .stderr(std::fs::File::create(dir.join(format!("{log}.err"))).unwrap())
            .spawn()
            .unwrap()
    };
    let k4 = spawn("kea-dhcp4", "dhcp4.json", "kea4.out");
    std::thread::sleep(Duration::from_millis(500));
    let ca = spawn("kea-ctrl-agent", "ca.json", "ca.out");
    Kea {
        children: vec![k4, ca],
        dir,
    }
}

fn kea_cmd(l: &Lab, cmd: &str) -> Value {
    kea_cmd_on(l, Node::Fw2, "192.168.1.20", cmd)
}

fn kea_cmd_on(l: &Lab, node: Node, ip: &str, cmd: &str) -> Value {
    let body = json!({"command": cmd, "service": ["dhcp4"]}).to_string();
    let out = l
        .exec(
            node,
            &[
                "curl",
                "-s",
                "-m",
                "5",
                "-X",
                "POST",
                "-H",
                "Content-Type: application/json",
                "-d",
                &body,
                &format!("http://{ip}:8647/"),
            ],
        )
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    v.get(0).cloned().unwrap_or(v)
}

fn kea_state(l: &Lab) -> String {
    kea_state_on(l, Node::Fw2, "192.168.1.20")
}

fn kea_state_on(l: &Lab, node: Node, ip: &str) -> String {
    let v = kea_cmd_on(l, node, ip, "status-get");
    v.pointer("/arguments/high-availability/0/ha-servers/local/state")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

fn kea_has(l: &Lab, addr: &str) -> bool {
    let v = kea_cmd(l, "lease4-get-all");
    v.pointer("/arguments/leases")
        .and_then(Value::as_array)
        .is_some_and(|a| a.iter().any(|x| x["ip-address"] == addr))
}

fn tandem_state(l: &Lab) -> String {
    tandem_state_on(l, Node::Fw1)
}

fn tandem_state_on(l: &Lab, fw: Node) -> String {
    l.ctl(fw, "dhcp.failover", json!({}))
        .ok()
        .and_then(|v| v["state"].as_str().map(str::to_string))
        .unwrap_or_default()
}

fn dhclient(l: &Lab, dir: &Path, dev: &str) -> String {
    let lf = dir.join(format!("{dev}.leases"));
    let pf = dir.join(format!("{dev}.pid"));
    let out = l
        .exec(
            Node::Client,
            &[
                "timeout",
                "40",
                "dhclient",
                "-4",
                "-1",
                "-sf",
                "/bin/true",
                "-lf",
                &lf.to_string_lossy(),
                "-pf",
                &pf.to_string_lossy(),
                dev,
            ],
        )
        .unwrap();
    assert!(
        out.status.success(),
        "dhclient on {dev}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = l.exec(
        Node::Client,
        &[
            "sh",
            "-c",
            &format!("kill $(cat {}) 2>/dev/null", pf.display()),
        ],
    );
    let text = std::fs::read_to_string(&lf).unwrap();
    let last = text.rfind("lease {").unwrap_or(0);
    text[last..].to_string()
}

fn field<'a>(lease: &'a str, key: &str) -> Option<&'a str> {
    lease
        .lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix(key))
        .map(|v| v.trim().trim_end_matches(';').trim())
}

fn wait(what: &str, limit: Duration, mut f: impl FnMut() -> bool, diag: impl Fn() -> String) {
    let t = std::time::Instant::now();
    while t.elapsed() < limit {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{what}: not after {limit:?}\n{}", diag());
}

#[test]
fn kea_standby_interop() {
    // SAFETY: the only test of this binary, at its start, before the lab or any thread of ours
    // exists; nothing else reads the environment concurrently.
    unsafe {
        std::env::set_var("TANDEM_DHCP_HEARTBEAT_MS", "1000");
        std::env::set_var("TANDEM_DHCP_MAX_RESPONSE_DELAY_MS", "4000");
        std::env::set_var("TANDEM_DHCP_HA_MODE", "hot-standby");
    }
    ensure_kea();
    let mut opts = default_opts();
    opts.client_addr = None;
    let l = lab("k", opts);
    let dir = l.node_dir(Node::Client);
    std::fs::create_dir_all(&dir).unwrap();
    settled_pair(&l);
    // Kea replaces tandem on fw2.
    l.stop_node(Node::Fw2, Signal::SIGTERM).unwrap();
    let _ = l.exec(Node::Fw2, &["ip", "link", "set", "em0", "up"]);
    let _ = l.exec(
        Node::Fw2,
        &["ip", "addr", "replace", "192.168.1.20/24", "dev", "em0"],
    );
    let kea = start_kea(&l, Node::Fw2);
    let diag = || {
        format!(
            "tandem: {}\nkea: {}\n--- kea4.log\n{}\n--- tandem fw1\n{}",
            l.ctl(Node::Fw1, "dhcp.failover", json!({}))
                .unwrap_or_default(),
            kea_cmd(&l, "status-get"),
            std::fs::read_to_string(kea.dir.join("kea4.log"))
                .unwrap_or_default()
                .lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .join("\n"),
            l.log_tail(Node::Fw1, 30)
        )
    };
    wait(
        "tandem hot-standby and kea hot-standby",
        Duration::from_secs(40),
        || tandem_state(&l) == "hot-standby" && kea_state(&l) == "hot-standby",
        diag,
    );

    // tandem (primary) grants; the lease reaches Kea before the client's ACK.
    let lease = dhclient(&l, &dir, "eth0");
    let addr = field(&lease, "fixed-address").unwrap().to_string();
    assert_eq!(
        field(&lease, "option dhcp-server-identifier"),
        Some("192.168.1.10")
    );
    assert!(kea_has(&l, &addr), "kea lacks {addr}\n{}", diag());

    // Primary stops: Kea goes partner-down and serves the client its address.
    l.stop_node(Node::Fw1, Signal::SIGTERM).unwrap();
    wait(
        "kea partner-down",
        Duration::from_secs(20),
        || kea_state(&l) == "partner-down",
        diag,
    );
    let lease2 = dhclient(&l, &dir, "eth0");
    assert_eq!(
        field(&lease2, "fixed-address"),
        Some(addr.as_str()),
        "{lease2}"
    );
    assert_eq!(
        field(&lease2, "option dhcp-server-identifier"),
        Some("192.168.1.20")
    );
    // A new client served by Kea alone ...
    l.run(
        Node::Client,
        &[
            "ip", "link", "add", "mvk", "link", "eth0", "type", "macvlan", "mode", "bridge",
        ],
    )
    .unwrap();
    l.run(Node::Client, &["ip", "link", "set", "mvk", "up"])
        .unwrap();
    let lease3 = dhclient(&l, &dir, "mvk");
    let addr3 = field(&lease3, "fixed-address").unwrap().to_string();
    // ... reaches tandem by the page sync when fw1 returns.
    l.start_node(Node::Fw1).unwrap();
    wait(
        "both back in hot-standby",
        Duration::from_secs(40),
        || tandem_state(&l) == "hot-standby" && kea_state(&l) == "hot-standby",
        diag,
    );
    let v = l.ctl(Node::Fw1, "dhcp.leases", json!({})).unwrap();
    let have: Vec<&str> = v["leases"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|x| x["address"].as_str())
        .collect();
    assert!(
        have.contains(&addr3.as_str()),
        "tandem lacks {addr3}: {have:?}"
    );
    assert!(have.contains(&addr.as_str()));
    drop(kea);
    drop(l);
    kea_primary_tandem_standby();
}

/// The other direction: Kea on fw1 is the primary and grants; its `lease4-update` reaches
/// tandem (standby on fw2); when Kea stops, tandem goes partner-down and serves the address.
fn kea_primary_tandem_standby() {
    let mut opts = default_opts();
    opts.client_addr = None;
    let l = lab("j", opts);
    let dir = l.node_dir(Node::Client);
    std::fs::create_dir_all(&dir).unwrap();
    settled_pair(&l);
    assert_eq!(
        l.ctl(Node::Fw2, "dhcp.failover", json!({})).unwrap()["role"],
        "standby"
    );
    l.stop_node(Node::Fw1, Signal::SIGTERM).unwrap();
    let _ = l.exec(Node::Fw1, &["ip", "link", "set", "em0", "up"]);
    let _ = l.exec(
        Node::Fw1,
        &["ip", "addr", "replace", "192.168.1.10/24", "dev", "em0"],
    );
    let kea = start_kea(&l, Node::Fw1);
    let diag = || {
        format!(
            "tandem: {}\nkea: {}\n--- kea4.log\n{}\n--- tandem fw2\n{}",
            l.ctl(Node::Fw2, "dhcp.failover", json!({}))
                .unwrap_or_default(),
            kea_cmd_on(&l, Node::Fw1, "192.168.1.10", "status-get"),
            std::fs::read_to_string(kea.dir.join("kea4.log"))
                .unwrap_or_default()
                .lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .join("\n"),
            l.log_tail(Node::Fw2, 30)
        )
    };
    wait(
        "kea primary and tandem standby in hot-standby",
        Duration::from_secs(60),
        || {
            tandem_state_on(&l, Node::Fw2) == "hot-standby"
                && kea_state_on(&l, Node::Fw1, "192.168.1.10") == "hot-standby"
        },
        diag,
    );
    let lease = dhclient(&l, &dir, "eth0");
    let addr = field(&lease, "fixed-address").unwrap().to_string();
    assert_eq!(
        field(&lease, "option dhcp-server-identifier"),
        Some("192.168.1.10")
    );
    let listed = |fw: Node| {
        l.ctl(fw, "dhcp.leases", json!({})).unwrap()["leases"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["address"] == addr.as_str() && x["origin"] == "partner")
    };
    assert!(listed(Node::Fw2), "tandem lacks {addr}\n{}", diag());
    drop(kea);
    wait(
        "tandem partner-down",
        Duration::from_secs(20),
        || tandem_state_on(&l, Node::Fw2) == "partner-down",
        || l.log_tail(Node::Fw2, 30),
    );
    let lease2 = dhclient(&l, &dir, "eth0");
    assert_eq!(
        field(&lease2, "fixed-address"),
        Some(addr.as_str()),
        "{lease2}"
    );
    assert_eq!(
        field(&lease2, "option dhcp-server-identifier"),
        Some("192.168.1.20")
    );
}
