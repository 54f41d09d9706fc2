//! Group commit of the DHCP lease database under a burst, and durability across SIGKILL.
//!
//! A relay agent in the client namespace (a Python script: giaddr 192.168.1.100, unicast to the
//! server) runs 200 full DORA exchanges at once against a single-node fw1. Then:
//! - the server wrote every granted lease in far fewer transactions than leases (its
//!   `db_commits` / `db_writes` counters);
//! - no address was ACKed to two clients;
//! - a second burst (the same clients asking for another lease time) is cut short by SIGKILL
//!   of tandem from inside the script after some ACKs: every lease the script saw ACKed is in
//!   `<state>/dhcp.db` with the ACKed lease time — an ACK never goes out before its lease is on
//!   disk. The restarted node lists them as well. The node runs with
//!   `TANDEM_DHCP_COMMIT_DELAY_MS=50` (a slow disk), so that leases are still queued when it dies.
//!
//! Needs root (network namespaces) and python3.

mod common;

use common::labutil::*;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::{Value, json};
use tandem::lab::{Lab, Node};

const CLIENTS: usize = 200;

/// Relay agent: DISCOVER all clients at once, REQUEST every OFFER at once, print one JSON line
/// per ACK. argv: lease_secs, kill_after (0 = never), pid to SIGKILL.
const RELAY_PY: &str = r#"
import json, os, select, signal, socket, struct, sys, time
lease, kill_after, pid = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
N, SERVER, GI = 200, "192.168.1.10", "192.168.1.100"
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
s.bind((GI, 67))
def mac(i): return bytes([2, 0xbb, 0, 0, i >> 8, i & 255])
def pkt(i, mtype, opts):
    h = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", 1, 1, 6, 1, 0x10000 + i, 0, 0,
        bytes(4), bytes(4), bytes(4), socket.inet_aton(GI), mac(i) + bytes(10), bytes(64), bytes(128))
    o = b"\x63\x82\x53\x63" + bytes([53, 1, mtype])
    for k, v in opts: o += bytes([k, len(v)]) + v
    o += bytes([51, 4]) + struct.pack("!I", lease) + b"\xff"
    return h + o
def parse(b):
    if len(b) < 244 or b[0] != 2: return None
    xid = struct.unpack("!I", b[4:8])[0]; yi = socket.inet_ntoa(b[16:20]); t = None
    i = 240
    while i + 1 < len(b) and b[i] != 255:
        if b[i] == 0: i += 1; continue
        if b[i] == 53: t = b[i + 2]
        i += 2 + b[i + 1]
    return xid - 0x10000, yi, t
def recv_all(want, timeout):
    got, end = [], time.time() + timeout
    while time.time() < end and len(got) < want:
        r, _, _ = select.select([s], [], [], max(0, end - time.time()))
        if r:
            p = parse(s.recv(2048))
            if p: got.append(p)
    return got
for i in range(N): s.sendto(pkt(i, 1, []), (SERVER, 67))
offers = {i: yi for i, yi, t in recv_all(N, 20) if t == 2}
for i, yi in offers.items():
    s.sendto(pkt(i, 3, [(54, socket.inet_aton(SERVER)), (50, socket.inet_aton(yi))]), (SERVER, 67))
acks, end = 0, time.time() + 20
while acks < len(offers) and time.time() < end:
    r, _, _ = select.select([s], [], [], 0.5)
    if not r:
        continue
    p = parse(s.recv(2048))
    if p and p[2] == 5:
        acks += 1
        print(json.dumps({"mac": mac(p[0]).hex(":"), "ip": p[1]}), flush=True)
        if kill_after and acks == kill_after:
            os.kill(pid, signal.SIGKILL)
            # Whatever was already on its way still counts; nothing new can come.
            end = time.time() + 0.5
print(json.dumps({"offers": len(offers)}), flush=True)
"#;

fn failover(l: &Lab) -> Value {
    l.ctl(Node::Fw1, "dhcp.failover", json!({}))
        .unwrap_or(Value::Null)
}

fn counter(l: &Lab, name: &str) -> u64 {
    failover(l)["counters"]["server"][name]
        .as_u64()
        .unwrap_or(0)
}

/// fw1's example config without its DHCP failover peer: a standalone server.
fn standalone_config(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(common::repo_file("etc/examples/carp-master.xml")).unwrap();
    let out: String = text
        .lines()
        .filter(|l| !l.contains("<failover_peerip>"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(
        out.len() < text.len(),
        "no failover_peerip in carp-master.xml"
    );
    std::fs::create_dir_all(dir).unwrap();
    let p = dir.join("dhcp-standalone.xml");
    std::fs::write(&p, out).unwrap();
    p
}

/// Run the relay script; the ACKs it saw (ip -> mac) in order, and how many offers it got.
fn relay(
    l: &Lab,
    script: &Path,
    lease: u32,
    kill_after: usize,
    pid: i32,
) -> (Vec<(String, String)>, u64) {
    let out = l
        .exec(
            Node::Client,
            &[
                "timeout",
                "60",
                "python3",
                &script.to_string_lossy(),
                &lease.to_string(),
                &kill_after.to_string(),
                &pid.to_string(),
            ],
        )
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "relay failed: {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut acks = Vec::new();
    let mut offers = 0;
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        if let Some(n) = v["offers"].as_u64() {
            offers = n;
        } else {
            acks.push((
                v["ip"].as_str().unwrap().to_string(),
                v["mac"].as_str().unwrap().to_string(),
            ));
        }
    }
    (acks, offers)
}

/// Rows of the lease database: address -> (mac as aa:bb:.., expires - cltt).
fn db_rows(path: &Path) -> BTreeMap<String, (String, i64)> {
    let c = rusqlite::Connection::open(path).unwrap();
    let mut st = c
        .prepare("SELECT address, mac, cltt, expires FROM leases WHERE state = 'active'")
        .unwrap();
    st.query_map([], |r| {
        let mac: Vec<u8> = r.get(1)?;
        let mac = mac
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":");
        Ok((
            r.get::<_, String>(0)?,
            (mac, r.get::<_, i64>(3)? - r.get::<_, i64>(2)?),
        ))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

#[test]
fn burst_is_group_committed_and_every_ack_survives_sigkill() {
    // SAFETY: this binary has a single #[test], and this runs at its start, before the lab or
    // any thread of ours exists; the libtest main thread only waits for the test thread, so no
    // other thread reads the environment concurrently. A slow disk (50 ms per transaction)
    // leaves many leases queued at the SIGKILL, so an ACK sent ahead of its commit is caught.
    unsafe {
        std::env::set_var("TANDEM_DHCP_COMMIT_DELAY_MS", "50");
    }
    let tmp = std::env::temp_dir().join(format!("tandem-dhcp-batch-{}", std::process::id()));
    let mut opts = default_opts();
    opts.master_config = standalone_config(&tmp);
    let l = lab("b", opts);
    l.stop_node(Node::Fw2, Signal::SIGTERM).unwrap();
    wait_for("fw1 dhcp serving", Duration::from_secs(20), || {
        failover(&l)["state"].is_string()
    });
    let script = l.node_dir(Node::Client).join("relay.py");
    std::fs::create_dir_all(script.parent().unwrap()).unwrap();
    std::fs::write(&script, RELAY_PY).unwrap();
    let pid = l.node_pid(Node::Fw1).expect("fw1 pid");

    // 1. A burst of 200 DORAs: every client gets a distinct address, in few transactions.
    let (c0, w0) = (counter(&l, "db_commits"), counter(&l, "db_writes"));
    let (acks, offers) = relay(&l, &script, 3600, 0, pid);
    assert_eq!(offers as usize, CLIENTS, "offers");
    assert_eq!(acks.len(), CLIENTS, "acks: {acks:?}");
    let ips: BTreeSet<&String> = acks.iter().map(|(ip, _)| ip).collect();
    assert_eq!(ips.len(), CLIENTS, "an address was ACKed twice: {acks:?}");
    wait_for("the burst's writes counted", Duration::from_secs(5), || {
        counter(&l, "db_writes") - w0 >= CLIENTS as u64
    });
    let (commits, writes) = (
        counter(&l, "db_commits") - c0,
        counter(&l, "db_writes") - w0,
    );
    eprintln!("burst: {writes} lease writes in {commits} transactions");
    assert!(writes >= CLIENTS as u64, "{writes} writes");
    assert!(
        commits * 4 <= writes,
        "no group commit: {commits} transactions for {writes} writes"
    );
    assert_eq!(counter(&l, "replies_withheld"), 0);

    // 2. The same clients again with another lease time; SIGKILL after 60 ACKs.
    let (acks2, _) = relay(&l, &script, 5000, 60, pid);
    assert!(
        acks2.len() >= 60,
        "only {} ACKs before the kill",
        acks2.len()
    );
    eprintln!("{} ACKs seen before/around SIGKILL", acks2.len());
    wait_for("fw1 gone", Duration::from_secs(5), || {
        l.node_pid(Node::Fw1).is_none()
    });
    let rows = db_rows(&l.state_dir(Node::Fw1).join("dhcp.db"));
    for (ip, mac) in &acks2 {
        assert_eq!(
            rows.get(ip),
            Some(&(mac.clone(), 5000)),
            "{ip} was ACKed to {mac} for 5000 s but the database has {:?}",
            rows.get(ip)
        );
    }
    for (ip, mac) in &acks {
        assert_eq!(rows.get(ip).map(|r| &r.0), Some(mac), "{ip} lost");
    }

    // 3. The restarted node serves them from its database.
    l.start_node(Node::Fw1).unwrap();
    l.wait_ready(Node::Fw1, Duration::from_secs(20)).unwrap();
    wait_for("leases reloaded", Duration::from_secs(10), || {
        let v = l
            .ctl(Node::Fw1, "dhcp.leases", json!({}))
            .unwrap_or(Value::Null);
        let listed: BTreeSet<String> = v["leases"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x["address"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        acks.iter().all(|(ip, _)| listed.contains(ip))
    });
    let _ = std::fs::remove_dir_all(&tmp);
}
