//! DHCP in the lab with real clients (dhclient, busybox udhcpc): leases from the pair with router
//! and DNS = the VIP, replicated to both nodes, failover to fw2 keeping the address, resync when
//! fw1 returns, 50 clients at once without a duplicate address, and no lease lost over a restart
//! or a SIGKILL; fw2 publishes its HA state change (`dhcp.ha.changed`) on its bus. Needs root;
//! `dhclient` and `udhcpc` are installed with apt-get if missing.
//!
//! One test function on purpose: it sets the HA timing knobs in the environment before any node
//! starts (see `set_timing`), which must happen while no other thread reads the environment.

mod common;

use common::labutil::*;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::{Value, json};
use tandem::lab::{Lab, Node};

fn ensure_clients() {
    let have = |b: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {b}")])
            .status()
            .is_ok_and(|s| s.success())
    };
    if !have("dhclient") || !have("udhcpc") {
        let st = Command::new("apt-get")
            .args([
                "install",
                "-y",
                "--no-install-recommends",
                "isc-dhcp-client",
                "udhcpc",
            ])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .expect("apt-get");
        assert!(st.success(), "cannot install dhcp clients");
    }
}

fn set_timing() {
    // SAFETY: this binary has a single #[test], and this runs at its start, before the lab or
    // any thread of ours exists; the libtest main thread only waits for the test thread, so no
    // other thread reads the environment concurrently.
    unsafe {
        std::env::set_var("TANDEM_DHCP_HEARTBEAT_MS", "500");
        std::env::set_var("TANDEM_DHCP_MAX_RESPONSE_DELAY_MS", "4000");
    }
}

/// Subscribe to `kind` on `fw`'s control socket; the events received so far, filled by a
/// reader thread that ends when the node (and so the connection) goes away.
fn subscribe(l: &Lab, fw: Node, kind: &str) -> Arc<Mutex<Vec<Value>>> {
    let mut s = UnixStream::connect(l.socket(fw)).expect("control socket");
    let req = json!({"jsonrpc": "2.0", "id": 1, "method": "events.subscribe",
                     "params": {"events": [kind]}});
    writeln!(s, "{req}").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut lines = BufReader::new(s).lines();
    let first: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(first["result"]["subscribed"], true, "{first}");
    let got: Arc<Mutex<Vec<Value>>> = Arc::default();
    let g = got.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<Value>(&line)
                && v["method"] == "event"
            {
                g.lock().unwrap().push(v["params"].clone());
            }
        }
    });
    got
}

fn failover(l: &Lab, fw: Node) -> Value {
    l.ctl(fw, "dhcp.failover", json!({})).unwrap_or(Value::Null)
}

fn wait_state(l: &Lab, fw: Node, state: &str, limit: Duration) {
    let t = std::time::Instant::now();
    while t.elapsed() < limit {
        if failover(l, fw)["state"] == state {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "{fw}: dhcp not {state} after {limit:?}: {}\n{}",
        failover(l, fw),
        l.log_tail(fw, 40)
    );
}

/// Active leases of a node: address -> mac.
fn leases(l: &Lab, fw: Node) -> BTreeMap<String, String> {
    let v = l.ctl(fw, "dhcp.leases", json!({})).unwrap_or(Value::Null);
    v["leases"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|x| x["state"] == "active")
                .map(|x| {
                    (
                        x["address"].as_str().unwrap_or("").to_string(),
                        x["mac"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn client_mac(l: &Lab, dev: &str) -> String {
    let out = l
        .run(
            Node::Client,
            &["cat", &format!("/sys/class/net/{dev}/address")],
        )
        .unwrap();
    out.trim().to_string()
}

/// dhclient once on eth0 (no script: only the lease file); returns the lease block text.
fn dhclient(l: &Lab, dir: &Path) -> String {
    let lf = dir.join("dhclient.leases");
    let pf = dir.join("dhclient.pid");
    let out = l
        .exec(
            Node::Client,
            &[
                "timeout",
                "40",
                "dhclient",
                "-4",
                "-1",
                "-v",
                "-sf",
                "/bin/true",
                "-lf",
                &lf.to_string_lossy(),
                "-pf",
                &pf.to_string_lossy(),
                "eth0",
            ],
        )
        .unwrap();
    assert!(
        out.status.success(),
        "dhclient failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
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
    // the last lease block
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

/// udhcpc once on `dev`; returns (ip, router, dns) from the script's environment.
fn udhcpc(l: &Lab, dir: &Path, dev: &str) -> Option<(String, String, String)> {
    let script = dir.join("udhcpc.sh");
    if !script.exists() {
        std::fs::write(
            &script,
            "#!/bin/sh\n[ \"$1\" = bound ] && echo \"$ip $router $dns\" > \"$OUT_DIR/$interface.bound\"\nexit 0\n",
        )
        .unwrap();
        Command::new("chmod")
            .arg("+x")
            .arg(&script)
            .status()
            .unwrap();
    }
    let out = l
        .exec(
            Node::Client,
            &[
                "env",
                &format!("OUT_DIR={}", dir.display()),
                "timeout",
                "60",
                "udhcpc",
                "-i",
                dev,
                "-f",
                "-q",
                "-n",
                "-t",
                "8",
                "-T",
                "2",
                "-s",
                &script.to_string_lossy(),
            ],
        )
        .unwrap();
    let bound = std::fs::read_to_string(dir.join(format!("{dev}.bound"))).ok();
    if bound.is_none() {
        eprintln!(
            "udhcpc on {dev}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let b = bound?;
    let mut it = b.split_whitespace().map(str::to_string);
    Some((it.next()?, it.next()?, it.next()?))
}

#[test]
fn dhcp_pair_with_real_clients() {
    set_timing();
    ensure_clients();
    let mut opts = default_opts();
    opts.client_addr = None;
    let l = lab("d", opts);
    let dir = l.node_dir(Node::Client);
    std::fs::create_dir_all(&dir).unwrap();
    settled_pair(&l);
    wait_state(&l, Node::Fw1, "load-balancing", Duration::from_secs(20));
    wait_state(&l, Node::Fw2, "load-balancing", Duration::from_secs(5));
    assert_eq!(failover(&l, Node::Fw1)["role"], "primary");
    assert_eq!(failover(&l, Node::Fw2)["role"], "secondary");

    // 0. Garbage to port 67 is dropped and counted; nothing breaks.
    let py = "import socket\n\
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)\n\
s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b'eth0')\n\
bad = [b'', b'x' * 10, b'\\x01' * 240, b'\\x01\\x01\\x06' + b'\\x00' * 233 + b'\\x63\\x82\\x53\\x63' + b'\\x35\\xff']\n\
for b in bad:\n    s.sendto(b, ('255.255.255.255', 67))\n";
    l.run(Node::Client, &["python3", "-c", py]).unwrap();
    wait_for("garbage counted", Duration::from_secs(3), || {
        [Node::Fw1, Node::Fw2].iter().all(|fw| {
            failover(&l, *fw)["counters"]["server"]["rx_malformed"]
                .as_u64()
                .unwrap_or(0)
                >= 4
        })
    });

    // 1. dhclient: address, router and DNS = the VIP; the lease is on both nodes.
    let lease = dhclient(&l, &dir);
    let addr = field(&lease, "fixed-address")
        .expect("fixed-address")
        .to_string();
    assert_eq!(
        field(&lease, "option routers"),
        Some("192.168.1.1"),
        "{lease}"
    );
    assert_eq!(
        field(&lease, "option domain-name-servers"),
        Some("192.168.1.1"),
        "{lease}"
    );
    assert_eq!(field(&lease, "option subnet-mask"), Some("255.255.255.0"));
    let sid = field(&lease, "option dhcp-server-identifier")
        .unwrap()
        .to_string();
    assert!(sid == "192.168.1.10" || sid == "192.168.1.20", "{sid}");
    let mac = client_mac(&l, "eth0");
    eprintln!("dhclient got {addr} from {sid}");
    // dhclient sends flags=0: the OFFER/ACK went as a raw frame to its MAC, not a broadcast.
    let raw: u64 = [Node::Fw1, Node::Fw2]
        .iter()
        .map(|fw| {
            failover(&l, *fw)["counters"]["server"]["link_replies_raw"]
                .as_u64()
                .unwrap_or(0)
        })
        .sum();
    let bcast: u64 = [Node::Fw1, Node::Fw2]
        .iter()
        .map(|fw| {
            failover(&l, *fw)["counters"]["server"]["link_replies_broadcast"]
                .as_u64()
                .unwrap_or(0)
        })
        .sum();
    assert!(raw >= 2 && bcast == 0, "raw {raw} broadcast {bcast}");
    for fw in [Node::Fw1, Node::Fw2] {
        assert_eq!(
            leases(&l, fw).get(&addr),
            Some(&mac),
            "{fw} does not list {addr}: {:?}",
            leases(&l, fw)
        );
    }

    // 2. udhcpc (sends a client id, so it is another client): the same options.
    let (uip, urouter, udns) = udhcpc(&l, &dir, "eth0").expect("udhcpc got no lease");
    assert_eq!(urouter, "192.168.1.1");
    assert_eq!(udns, "192.168.1.1");
    assert_ne!(uip, addr);
    wait_for("udhcpc lease on both", Duration::from_secs(3), || {
        leases(&l, Node::Fw1).contains_key(&uip) && leases(&l, Node::Fw2).contains_key(&uip)
    });

    // 3. fw1 stops: fw2 goes partner-down (and says so on its bus) and the client keeps its
    //    address (INIT-REBOOT).
    let events = subscribe(&l, Node::Fw2, "dhcp.ha.changed");
    l.stop_node(Node::Fw1, Signal::SIGTERM).unwrap();
    wait_state(&l, Node::Fw2, "partner-down", Duration::from_secs(15));
    wait_for(
        "dhcp.ha.changed on fw2's bus",
        Duration::from_secs(3),
        || {
            events.lock().unwrap().iter().any(|e| {
                e["event"] == "dhcp.ha.changed"
                    && e["interface"] == "lan"
                    && e["from"] == "load-balancing"
                    && e["to"] == "partner-down"
            })
        },
    );
    let lease2 = dhclient(&l, &dir);
    assert_eq!(
        field(&lease2, "fixed-address"),
        Some(addr.as_str()),
        "{lease2}"
    );
    assert_eq!(
        field(&lease2, "option dhcp-server-identifier"),
        Some("192.168.1.20")
    );
    // fw1 returns, syncs, and both lists match.
    l.start_node(Node::Fw1).unwrap();
    wait_state(&l, Node::Fw1, "load-balancing", Duration::from_secs(30));
    wait_state(&l, Node::Fw2, "load-balancing", Duration::from_secs(10));
    assert_eq!(leases(&l, Node::Fw1), leases(&l, Node::Fw2));

    // 4. 50 clients at once (macvlans on the client's eth0): no address handed out twice.
    let n = 50;
    for i in 0..n {
        let dev = format!("mv{i}");
        l.run(
            Node::Client,
            &[
                "ip", "link", "add", &dev, "link", "eth0", "type", "macvlan", "mode", "bridge",
            ],
        )
        .unwrap();
        l.run(Node::Client, &["ip", "link", "set", &dev, "up"])
            .unwrap();
    }
    let got: Vec<Option<(String, String, String)>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..n)
            .map(|i| {
                let (l, dir) = (&l, &dir);
                s.spawn(move || udhcpc(l, dir, &format!("mv{i}")))
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ips: Vec<String> = got.iter().flatten().map(|(ip, _, _)| ip.clone()).collect();
    let unique: BTreeSet<&String> = ips.iter().collect();
    assert_eq!(
        ips.len(),
        n,
        "only {} of {n} clients got a lease",
        ips.len()
    );
    assert_eq!(unique.len(), n, "duplicate addresses: {ips:?}");
    let f1 = failover(&l, Node::Fw1);
    let f2 = failover(&l, Node::Fw2);
    eprintln!(
        "50 clients: fw1 acks {} fw2 acks {}",
        f1["counters"]["server"]["acks"], f2["counters"]["server"]["acks"]
    );
    wait_for("lease lists converge", Duration::from_secs(5), || {
        leases(&l, Node::Fw1) == leases(&l, Node::Fw2)
    });
    let all = leases(&l, Node::Fw1);
    for ip in &ips {
        assert!(all.contains_key(ip), "{ip} not listed");
    }

    // 5. No lease lost over SIGKILL (fw2) and a clean stop (fw1). Each node restarts while its
    //    partner is down, so the leases can only come from its own database.
    l.stop_node(Node::Fw1, Signal::SIGTERM).unwrap();
    l.stop_node(Node::Fw2, Signal::SIGKILL).unwrap();
    assert!(l.state_dir(Node::Fw2).join("dhcp.db").exists());
    l.start_node(Node::Fw2).unwrap();
    l.wait_ready(Node::Fw2, Duration::from_secs(20)).unwrap();
    wait_for(
        "fw2 reloads its leases alone",
        Duration::from_secs(5),
        || leases(&l, Node::Fw2) == all,
    );
    assert_eq!(failover(&l, Node::Fw2)["partner_state"], Value::Null);
    l.stop_node(Node::Fw2, Signal::SIGTERM).unwrap();
    l.start_node(Node::Fw1).unwrap();
    l.wait_ready(Node::Fw1, Duration::from_secs(20)).unwrap();
    wait_for(
        "fw1 reloads its leases alone",
        Duration::from_secs(5),
        || leases(&l, Node::Fw1) == all,
    );
    l.start_node(Node::Fw2).unwrap();
    wait_state(&l, Node::Fw1, "load-balancing", Duration::from_secs(30));
    wait_state(&l, Node::Fw2, "load-balancing", Duration::from_secs(10));
    assert_eq!(leases(&l, Node::Fw1), leases(&l, Node::Fw2));
}
