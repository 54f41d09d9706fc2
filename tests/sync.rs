//! State sync in the lab — the how-to's test: a session through the master survives pulling the
//! master's plug because the backup already holds its (NAT) state; without sync it stalls.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::labutil::*;
use nix::sys::signal::Signal;
use serde_json::{Value, json};
use tandem::lab::{Lab, Node};

fn script(name: &str) -> String {
    common::repo_file(&format!("tests/scripts/{name}"))
        .display()
        .to_string()
}

/// The TCP+UDP echo server on the WAN side.
fn echo_server(l: &Lab, port: u16) -> Child {
    Command::new("ip")
        .args([
            "netns",
            "exec",
            &l.ns(Node::Server),
            "python3",
            &script("echo_server.py"),
            &port.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// `sessions.py` in the client namespace; its JSON result comes back on wait.
fn sessions(l: &Lab, port: u16, n: u32, secs: u32, udp: bool) -> Child {
    let mut args = vec![
        "netns".to_string(),
        "exec".into(),
        l.ns(Node::Client),
        "python3".into(),
        script("sessions.py"),
        "172.18.0.250".into(),
        port.to_string(),
        n.to_string(),
        secs.to_string(),
    ];
    if udp {
        args.push("--udp".into());
    }
    Command::new("ip")
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// ping(8) from the client to the server with these options; its output comes back on wait.
fn ping_server(l: &Lab, opts: &[&str]) -> Child {
    let ns = l.ns(Node::Client);
    let mut args = vec!["netns", "exec", &ns, "ping", "-n"];
    args.extend_from_slice(opts);
    args.push("172.18.0.250");
    Command::new("ip")
        .args(&args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Interactive traffic through the pair: `n` TCP sessions (a line every 100 ms), a UDP flow if
/// asked, and a 20/s ping stream, for `secs`; `start` returns once every TCP session's state is
/// on fw2.
struct Traffic {
    _srv: KillOnDrop,
    tcp: Child,
    udp: Option<Child>,
    ping: Child,
}

/// What [`Traffic::finish`] saw: each flow's `sessions.py` result and the pings sent and
/// answered, with ping's summary line.
struct Seen {
    tcp: (bool, Value),
    udp: Option<(bool, Value)>,
    pings: (u64, u64),
    ping_line: String,
}

impl Traffic {
    fn start(l: &Lab, n: u32, secs: u32, udp: bool) -> Traffic {
        let srv = KillOnDrop(echo_server(l, 7000));
        std::thread::sleep(Duration::from_millis(300));
        let tcp = sessions(l, 7000, n, secs, false);
        let udp = udp.then(|| sessions(l, 7000, 1, secs, true));
        let deadline = (secs + 2).to_string();
        let ping = ping_server(l, &["-q", "-i", "0.05", "-w", &deadline]);
        wait_until(
            "the sessions' states on fw2",
            Duration::from_secs(5),
            || {
                fw2_conntrack(l, 7000)
                    .iter()
                    .filter(|e| e.contains("ESTABLISHED"))
                    .count()
                    >= n as usize
            },
        );
        Traffic {
            _srv: srv,
            tcp,
            udp,
            ping,
        }
    }

    fn finish(self) -> Seen {
        let tcp = result(self.tcp);
        let udp = self.udp.map(result);
        let out = self.ping.wait_with_output().unwrap();
        let ping_line = String::from_utf8_lossy(&out.stdout)
            .lines()
            .find(|x| x.contains("packets transmitted"))
            .unwrap_or_default()
            .to_string();
        let nums: Vec<u64> = ping_line
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|x| x.parse().ok())
            .collect();
        let pings = (
            nums.first().copied().unwrap_or(0),
            nums.get(1).copied().unwrap_or(0),
        );
        Seen {
            tcp,
            udp,
            pings,
            ping_line,
        }
    }
}

fn result(c: Child) -> (bool, Value) {
    let out = c.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Value = text
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| json!({"raw": text, "stderr": String::from_utf8_lossy(&out.stderr)}));
    (out.status.success(), v)
}

/// fw2's kernel table entries for connections to `port` (conntrack -L in its namespace).
fn fw2_conntrack(l: &Lab, port: u16) -> Vec<String> {
    l.run(Node::Fw2, &["conntrack", "-L"])
        .unwrap_or_default()
        .lines()
        .filter(|x| x.contains(&format!("dport={port} ")))
        .map(str::to_string)
        .collect()
}

/// A UDP state 192.168.1.100:`sport` -> 172.18.0.250:`dport` with `timeout` seconds, made in
/// `fw`'s kernel with conntrack(8).
fn udp_state(l: &Lab, fw: Node, sport: &str, dport: &str, timeout: &str) {
    let args = [
        "conntrack",
        "-I",
        "-p",
        "udp",
        "-s",
        "192.168.1.100",
        "-d",
        "172.18.0.250",
        "--sport",
        sport,
        "--dport",
        dport,
        "-t",
        timeout,
    ];
    l.run(fw, &args).unwrap();
}

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < limit, "{what}: not after {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn ssh_like_session_survives_pulling_the_masters_plug() {
    let l = lab("s", default_opts());
    settled_pair(&l);
    let _srv = KillOnDrop(echo_server(&l, 7000));
    std::thread::sleep(Duration::from_millis(300));
    let client = sessions(&l, 7000, 1, 12, false);
    // Before the plug is pulled, fw2's kernel already holds the session's NAT state.
    wait_until("NAT state on fw2", Duration::from_secs(5), || {
        fw2_conntrack(&l, 7000)
            .iter()
            .any(|e| e.contains("ESTABLISHED") && e.contains("dst=172.18.0.100"))
    });
    let listed = l
        .ctl(Node::Fw2, "states.list", json!({"filter": ":7000"}))
        .unwrap();
    let rows = listed["states"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{listed}");
    assert_eq!(rows[0]["origin"], "peer");
    assert_eq!(rows[0]["nat"], "snat 172.18.0.100");
    assert_eq!(rows[0]["tcp_state"], "ESTABLISHED");
    std::thread::sleep(Duration::from_secs(2));
    // The lag estimate on fw1 gets all its parts: fw2 times its writes and tells fw1 with its
    // ACKs. An ACK sent before fw2's first write was timed carries none, so fw1 makes a few
    // more states until one does. On one machine the whole path is well under 50 ms (the bench
    // measures ~0.2 ms).
    let mut sport = 6000;
    wait_until("fw2's apply time on fw1", Duration::from_secs(10), || {
        sport += 1;
        udp_state(&l, Node::Fw1, &sport.to_string(), "7795", "60");
        std::thread::sleep(Duration::from_millis(100));
        let st = l.ctl(Node::Fw1, "pfsync.status", json!({})).unwrap();
        st["lag"]["peer_apply_ms"]["p50"].as_f64().is_some()
    });
    let st = l.ctl(Node::Fw1, "pfsync.status", json!({})).unwrap();
    let lag = &st["lag"];
    let p50 = lag["estimate_ms"]["p50"].as_f64().unwrap_or(f64::NAN);
    assert!(p50 > 0.0 && p50 < 50.0, "{lag}");
    let fw2 = l.ctl(Node::Fw2, "pfsync.status", json!({})).unwrap();
    assert!(
        fw2["apply_ms"]["samples"].as_u64().unwrap_or(0) > 0,
        "{fw2}"
    );
    assert_eq!(fw2["failover_safe"], true, "{fw2}");
    l.pull_plug(Node::Fw1).unwrap();
    let (ok, v) = result(client);
    assert!(ok, "session broke across the failover: {v}");
    assert_eq!(v["missing"], 0, "{v}");
    assert!(v["maxgap_s"].as_f64().unwrap() < 4.5, "{v}");
    assert!(all_in(&l, Node::Fw2, "MASTER", 2));
    eprintln!("session across failover: {v}");
}

fn without_sync(path: &PathBuf, dir: &std::path::Path, name: &str) -> PathBuf {
    let xml = std::fs::read_to_string(path).unwrap();
    assert!(xml.contains("<pfsyncinterface>opt1</pfsyncinterface>"));
    let p = dir.join(name);
    std::fs::write(
        &p,
        xml.replace(
            "<pfsyncinterface>opt1</pfsyncinterface>",
            "<pfsyncinterface/>",
        ),
    )
    .unwrap();
    p
}

#[test]
fn without_state_sync_the_session_stalls() {
    let base = default_opts();
    let dir = common::TempDir::new("ns");
    let m = without_sync(&base.master_config, &dir.0, "m.xml");
    let b = without_sync(&base.backup_config, &dir.0, "b.xml");
    let l = lab_with("o", m, b);
    settled_pair(&l);
    assert_eq!(
        l.ctl(Node::Fw2, "pfsync.status", json!({})).unwrap()["enabled"],
        false
    );
    let ha = l.ctl(Node::Fw1, "ha.status", json!({})).unwrap();
    for side in ["local", "remote"] {
        assert_eq!(ha[side]["state_sync"]["enabled"], false, "{ha:#}");
        assert_eq!(ha[side]["state_sync"]["failover_safe"], false, "{ha:#}");
    }
    let _srv = KillOnDrop(echo_server(&l, 7000));
    std::thread::sleep(Duration::from_millis(300));
    let client = sessions(&l, 7000, 1, 10, false);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        fw2_conntrack(&l, 7000).is_empty(),
        "fw2 has the state without sync?"
    );
    l.pull_plug(Node::Fw1).unwrap();
    let (ok, v) = result(client);
    // pf semantics (tcp_loose=0, state only from a SYN): fw2 drops the mid-stream packets.
    assert!(
        !ok,
        "the session survived without state sync — mid-stream pickup is on? {v}"
    );
    assert!(
        v["missing"].as_u64().unwrap_or(0) > 0 || !v["problems"].as_array().unwrap().is_empty(),
        "{v}"
    );
}

#[test]
fn thousand_sessions_udp_and_icmp_survive_failover_and_the_move_back() {
    let l = lab("t", default_opts());
    settled_pair(&l);
    let _srv = KillOnDrop(echo_server(&l, 7000));
    std::thread::sleep(Duration::from_millis(300));
    let tcp = sessions(&l, 7000, 1000, 40, false);
    let udp = sessions(&l, 7000, 1, 14, true);
    let ping = ping_server(&l, &["-i", "0.1", "-c", "140"]);
    wait_until("1000 states on fw2", Duration::from_secs(20), || {
        fw2_conntrack(&l, 7000)
            .iter()
            .filter(|e| e.contains("ESTABLISHED"))
            .count()
            >= 1000
    });
    std::thread::sleep(Duration::from_secs(1));
    l.pull_plug(Node::Fw1).unwrap();
    wait_all(&l, Node::Fw2, "MASTER", 2, Duration::from_secs(6));
    let (ok, v) = result(udp);
    assert!(ok, "udp flow: {v}");
    let out = ping.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let last_replies = text.lines().filter(|x| x.contains("bytes from")).count();
    assert!(last_replies > 60, "icmp stream did not resume: {text}");
    assert!(
        text.lines()
            .rev()
            .take(8)
            .any(|x| x.contains("icmp_seq=13")),
        "no reply at the end: {text}"
    );

    // fw1 comes back with an empty table and a restarted daemon: it must bulk-sync before it
    // takes MASTER back (the pfsync-bulk demotion holds it), and every session lives on.
    l.stop_node(Node::Fw1, Signal::SIGTERM).unwrap();
    l.run(Node::Fw1, &["conntrack", "-F"]).unwrap();
    l.restore_plug(Node::Fw1).unwrap();
    l.start_node(Node::Fw1).unwrap();
    wait_all(&l, Node::Fw1, "MASTER", 2, Duration::from_secs(20));
    let st = l.ctl(Node::Fw1, "pfsync.status", json!({})).unwrap();
    assert!(
        st["kernel"]["bulk_done_unix_ms"].is_number(),
        "fw1 took MASTER without a bulk: {st}"
    );
    let count = l.ctl(Node::Fw1, "states.count", json!({})).unwrap();
    assert!(count["kernel"].as_u64().unwrap() >= 1000, "{count}");
    let (ok, v) = result(tcp);
    assert!(ok, "sessions broke: {v}");
    assert_eq!(v["connections"], 1000);
    eprintln!("1000 sessions across failover and back: {v}");
}

#[test]
fn wrong_pfsync_key_injects_nothing() {
    let base = default_opts();
    let dir = common::TempDir::new("wk");
    let keyed = |src: &PathBuf, key: &str, name: &str| {
        let xml = std::fs::read_to_string(src).unwrap().replacen(
            "<pfsyncinterface>opt1</pfsyncinterface>",
            &format!("<pfsyncinterface>opt1</pfsyncinterface><pfsynckey>{key}</pfsynckey>"),
            1,
        );
        let p = dir.0.join(name);
        std::fs::write(&p, xml).unwrap();
        p
    };
    let m = keyed(&base.master_config, "right-key", "m.xml");
    let b = keyed(&base.backup_config, "wrong-key", "b.xml");
    let l = lab_with("k", m, b);
    settled_pair(&l);
    let _srv = KillOnDrop(echo_server(&l, 7000));
    std::thread::sleep(Duration::from_millis(300));
    let client = sessions(&l, 7000, 1, 3, false);
    let (ok, v) = result(client);
    assert!(ok, "{v}");
    let st = l.ctl(Node::Fw2, "pfsync.status", json!({})).unwrap();
    assert_eq!(st["authenticated"], true);
    assert!(st["stats"]["bad_mac"].as_u64().unwrap() >= 1, "{st}");
    assert_eq!(st["kernel"]["injected"], 0, "{st}");
    assert!(fw2_conntrack(&l, 7000).is_empty());
    // fw2 never got fw1's table: it says it is not safe to fail over to.
    assert_eq!(st["failover_safe"], false, "{st}");
    assert!(st["not_safe_because"].to_string().contains("bulk"), "{st}");
}

/// A UDP flow refreshes its conntrack timeout with every packet but raises no event; the peer's
/// copy must still be kept alive (tandem re-sends it from a periodic dump). With UDP timeouts of
/// a few seconds on both nodes, fw2 must still hold the flow's NAT state well after the last
/// event, and the flow must survive pulling fw1's plug then.
#[test]
fn an_active_udp_flow_stays_alive_on_the_peer_without_events() {
    let l = lab("u", default_opts());
    for fw in [Node::Fw1, Node::Fw2] {
        l.run(
            fw,
            &[
                "sysctl",
                "-qw",
                "net.netfilter.nf_conntrack_udp_timeout=6",
                "net.netfilter.nf_conntrack_udp_timeout_stream=8",
            ],
        )
        .unwrap();
    }
    settled_pair(&l);
    let _srv = KillOnDrop(echo_server(&l, 7000));
    std::thread::sleep(Duration::from_millis(300));
    let udp = sessions(&l, 7000, 1, 26, true);
    let udp_on_fw2 = || {
        fw2_conntrack(&l, 7000)
            .iter()
            .any(|e| e.starts_with("udp") && e.contains("dst=172.18.0.100"))
    };
    wait_until("UDP state on fw2", Duration::from_secs(5), udp_on_fw2);
    // 20 s: more than twice the stream timeout since the flow's last event (ASSURED).
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(20) {
        assert!(
            udp_on_fw2(),
            "fw2 lost the UDP flow's state after {:?}",
            t.elapsed()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let st = l.ctl(Node::Fw1, "pfsync.status", json!({})).unwrap();
    assert!(
        st["stats"]["refreshed"].as_u64().unwrap_or(0) >= 2,
        "no refresh sent: {st}"
    );
    l.pull_plug(Node::Fw1).unwrap();
    let (ok, v) = result(udp);
    assert!(ok, "udp flow broke across the failover: {v}");
}

/// fw2's daemon restarts while its kernel still holds fw1's states. They must stay fw1's: fw2 asks
/// for the bulk first and reads its own table only after it (an entry it does not know before
/// then may be the peer's), so it neither claims fw1's session as its own nor sends it back.
#[test]
fn a_restarted_backup_keeps_the_peers_states_as_the_peers() {
    let l = lab("r", default_opts());
    settled_pair(&l);
    let _srv = KillOnDrop(echo_server(&l, 7000));
    std::thread::sleep(Duration::from_millis(300));
    let client = sessions(&l, 7000, 1, 14, false);
    let nat_on_fw2 = || {
        fw2_conntrack(&l, 7000)
            .iter()
            .any(|e| e.contains("ESTABLISHED") && e.contains("dst=172.18.0.100"))
    };
    wait_until("NAT state on fw2", Duration::from_secs(5), nat_on_fw2);
    l.stop_node(Node::Fw2, Signal::SIGTERM).unwrap();
    assert!(nat_on_fw2(), "the kernel entry went with the daemon");
    // 3,000 more states made on fw1 while fw2 is down: they come in fw2's bulk, more than the
    // 1,000 queued writes that count as "not failover-safe".
    let many: String = (0..3000)
        .map(|i| {
            format!(
                "-I -p udp -s 192.168.1.100 -d 172.18.0.250 --sport {} --dport 7795 -t 600\n",
                20000 + i
            )
        })
        .collect();
    let mut load = Command::new("ip")
        .args(["netns", "exec", &l.ns(Node::Fw1), "conntrack", "-R", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut load.stdin.take().unwrap(), many.as_bytes()).unwrap();
    assert!(load.wait().unwrap().success());
    wait_until(
        "fw1 knows its 3,000 new states",
        Duration::from_secs(10),
        || {
            l.ctl(Node::Fw1, "pfsync.status", json!({}))
                .is_ok_and(|v| v["states"].as_u64().unwrap_or(0) >= 3001)
        },
    );
    l.start_node(Node::Fw2).unwrap();
    // The bulk is in and the table read (the catch-up dump follows the bulk at once).
    wait_until("fw2's bulk", Duration::from_secs(10), || {
        l.ctl(Node::Fw2, "pfsync.status", json!({}))
            .is_ok_and(|s| s["kernel"]["bulk_done_unix_ms"].is_u64() && s["bulk_pending"] == false)
    });
    // Once the bulk is written, fw2 says it can take over (the flag must not stay down after a
    // big bulk: the review of session 4 found it stuck on the bulk's apply times).
    wait_until(
        "fw2 failover-safe after the bulk",
        Duration::from_secs(5),
        || {
            l.ctl(Node::Fw2, "pfsync.status", json!({})).is_ok_and(|s| {
                s["failover_safe"] == true && s["states"].as_u64().unwrap_or(0) >= 3001
            })
        },
    );
    let in_kernel = l
        .run(
            Node::Fw2,
            &["conntrack", "-L", "-p", "udp", "--dport", "7795"],
        )
        .unwrap_or_default()
        .lines()
        .count();
    assert_eq!(in_kernel, 3000, "fw2's kernel table after the bulk");
    std::thread::sleep(Duration::from_secs(1));
    let origin = |fw: Node| {
        let v = l
            .ctl(fw, "states.list", json!({"filter": ":7000"}))
            .unwrap();
        let rows = v["states"].as_array().cloned().unwrap_or_default();
        assert_eq!(rows.len(), 1, "{fw:?}: {v}");
        rows[0]["origin"].as_str().unwrap_or_default().to_string()
    };
    assert_eq!(
        origin(Node::Fw2),
        "peer",
        "fw2 took fw1's state for its own"
    );
    assert_eq!(
        origin(Node::Fw1),
        "local",
        "fw1's own state came back to it as the peer's"
    );
    let st = l.ctl(Node::Fw2, "pfsync.status", json!({})).unwrap();
    assert!(st["kernel"]["bulk_requested_unix_ms"].is_u64(), "{st}");
    // NEW events were off while the bulk came in, and are on again: a state created on fw2 now
    // reaches fw1 at once (not only with the next refresh dump, ≥ 5 s away).
    assert_eq!(st["kernel"]["new_events_paused"], 1, "{st}");
    udp_state(&l, Node::Fw2, "5000", "7790", "120");
    wait_until(
        "fw2's new state on fw1",
        Duration::from_millis(1500),
        || {
            l.run(Node::Fw1, &["conntrack", "-L"])
                .unwrap_or_default()
                .contains("dport=7790 ")
        },
    );
    // And it still carries the session across a failover.
    l.pull_plug(Node::Fw1).unwrap();
    let (ok, v) = result(client);
    assert!(ok, "session broke across the failover: {v}");
    assert_eq!(v["missing"], 0, "{v}");
}

/// A state of fw1's that ends while fw2's daemon is down (killed: a crash, nothing written at
/// the end) stays in fw2's kernel. After the restart fw2 must remove it (it carries the peer
/// label, and fw1's bulk no longer has it) rather than take it for its own and send it back to
/// fw1; fw1's other state stays.
#[test]
fn a_peer_state_that_ended_while_the_backup_was_down_is_removed_there() {
    let l = lab("e", default_opts());
    settled_pair(&l);
    // Someone deletes the label table (as `nft flush ruleset` would): the next refresh must
    // find it gone and load it again, or the entries below carry no label and the crash
    // cleanup cannot tell them from fw2's own.
    l.run(
        Node::Fw2,
        &["nft", "delete", "table", "inet", "tandem_pfsync"],
    )
    .unwrap();
    wait_until(
        "the label table loaded again on fw2",
        Duration::from_secs(15),
        || {
            l.ctl(Node::Fw2, "pfsync.status", json!({}))
                .is_ok_and(|s| s["kernel"]["label_table_reloads"].as_u64() == Some(1))
        },
    );
    l.run(
        Node::Fw2,
        &["nft", "list", "table", "inet", "tandem_pfsync"],
    )
    .expect("the label table is back");
    let insert = |port: &str| {
        l.run(
            Node::Fw1,
            &[
                "conntrack",
                "-I",
                "-p",
                "tcp",
                "-s",
                "192.168.1.100",
                "-d",
                "172.18.0.250",
                "--sport",
                "40001",
                "--dport",
                port,
                "--state",
                "ESTABLISHED",
                "-u",
                "SEEN_REPLY,ASSURED",
                "-t",
                "600",
            ],
        )
        .unwrap();
    };
    let has = |fw: Node, port: u16| {
        l.run(fw, &["conntrack", "-L"])
            .unwrap_or_default()
            .contains(&format!("dport={port} "))
    };
    insert("7777");
    insert("7778");
    wait_until("both states on fw2", Duration::from_secs(5), || {
        has(Node::Fw2, 7777) && has(Node::Fw2, 7778)
    });
    let st = l.ctl(Node::Fw2, "pfsync.status", json!({})).unwrap();
    assert_eq!(st["kernel"]["peer_label"], true, "{st}");
    // A crash: nothing is written at the end; the peer label in the kernel is all there is.
    l.stop_node(Node::Fw2, Signal::SIGKILL).unwrap();
    l.run(
        Node::Fw1,
        &["conntrack", "-D", "-p", "tcp", "--dport", "7777"],
    )
    .unwrap();
    assert!(
        has(Node::Fw2, 7777),
        "fw2's kernel lost the entry with the daemon"
    );
    l.start_node(Node::Fw2).unwrap();
    wait_until(
        "the stale state removed on fw2",
        Duration::from_secs(10),
        || {
            l.ctl(Node::Fw2, "pfsync.status", json!({}))
                .is_ok_and(|s| s["kernel"]["stale_removed"].as_u64() == Some(1))
        },
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(!has(Node::Fw2, 7777), "the ended state is still on fw2");
    assert!(has(Node::Fw2, 7778), "fw1's live state went too");
    assert!(
        !has(Node::Fw1, 7777),
        "fw2 sent the ended state back to fw1"
    );
}

/// An entry that raises no events (created while `nf_conntrack_events` was 0, so the kernel gave
/// it no event extension) is found by fw1's table dumps and synced; its end raises no DESTROY
/// either, and only the dumps show it gone: after two in a row fw1 must tell fw2, which removes
/// it. (The same path catches a DESTROY lost to an event-queue overrun.)
#[test]
fn a_state_that_ends_without_an_event_is_removed_on_both_nodes() {
    let l = lab("q", default_opts());
    settled_pair(&l);
    let has = |fw: Node| {
        l.run(fw, &["conntrack", "-L"])
            .unwrap_or_default()
            .contains("dport=7781 ")
    };
    l.run(
        Node::Fw1,
        &["sysctl", "-qw", "net.netfilter.nf_conntrack_events=0"],
    )
    .unwrap();
    udp_state(&l, Node::Fw1, "5001", "7781", "600");
    l.run(
        Node::Fw1,
        &["sysctl", "-qw", "net.netfilter.nf_conntrack_events=2"],
    )
    .unwrap();
    wait_until("the silent state on fw2", Duration::from_secs(20), || {
        has(Node::Fw2)
    });
    l.run(
        Node::Fw1,
        &["conntrack", "-D", "-p", "udp", "--dport", "7781"],
    )
    .unwrap();
    assert!(!has(Node::Fw1));
    wait_until(
        "the silently ended state removed on fw2",
        Duration::from_secs(30),
        || !has(Node::Fw2),
    );
    let st = l.ctl(Node::Fw1, "pfsync.status", json!({})).unwrap();
    assert_eq!(st["stats"]["swept_local"], 1, "{st}");
}

/// fw1's state sync stops transmitting while CARP and everything else run on (opnsense/src#316:
/// one node never sent pfsync and nobody noticed). An idle pair still exchanges a heartbeat a
/// second, so fw2 must notice within a few seconds and say it is not failover-safe, and be safe
/// again once fw1's messages come through.
#[test]
fn a_peer_whose_sync_stops_sending_is_noticed() {
    let l = lab("h", default_opts());
    settled_pair(&l);
    let st = |fw: Node| l.ctl(fw, "pfsync.status", json!({})).unwrap_or_default();
    wait_until("fw2 failover-safe", Duration::from_secs(10), || {
        st(Node::Fw2)["failover_safe"] == true
    });
    let heard = st(Node::Fw2)["peer_heard_ms_ago"].as_u64();
    assert!(heard.is_some_and(|ms| ms < 1500), "heard {heard:?} ms ago");
    // fw1's sync messages go nowhere from now on.
    for args in [
        vec!["nft", "add", "table", "inet", "mute"],
        vec![
            "nft",
            "add",
            "chain",
            "inet",
            "mute",
            "out",
            "{ type filter hook output priority 0 ; }",
        ],
        vec![
            "nft", "add", "rule", "inet", "mute", "out", "ip", "protocol", "240", "drop",
        ],
    ] {
        l.run(Node::Fw1, &args).unwrap();
    }
    wait_until("fw2 notices the silence", Duration::from_secs(6), || {
        let s = st(Node::Fw2);
        s["failover_safe"] == false
            && s["not_safe_because"].as_array().is_some_and(|w| {
                w.iter()
                    .any(|r| r.as_str().is_some_and(|r| r.contains("nothing heard")))
            })
    });
    let s = st(Node::Fw2);
    assert_eq!(s["peer_silent"], true, "{s}");
    assert_eq!(s["stats"]["peer_silences"], 1, "{s}");
    assert!(s["peer_heard_ms_ago"].as_u64().unwrap_or(0) >= 3000, "{s}");
    // fw1 itself still hears fw2.
    assert_eq!(st(Node::Fw1)["peer_silent"], false);
    l.run(Node::Fw1, &["nft", "delete", "table", "inet", "mute"])
        .unwrap();
    wait_until("fw2 safe again", Duration::from_secs(4), || {
        st(Node::Fw2)["failover_safe"] == true
    });
    assert_eq!(st(Node::Fw2)["peer_silent"], false);
}

/// The how-to's "Updating a CARP HA Cluster", step by step, under traffic: the backup is
/// restarted ("updated") and comes back; the master enters persistent maintenance mode, so the
/// backup takes over; the old master is restarted and stays BACKUP (maintenance survives it)
/// until it has the states; maintenance is left and it takes MASTER back. Twenty interactive
/// TCP sessions, a UDP flow and a 20/s ping stream run through it all: no session may lose,
/// duplicate or reorder a line or see a reset, and the pings lost are printed and bounded.
#[test]
fn the_howtos_update_procedure_keeps_every_session() {
    let l = lab("w", default_opts());
    settled_pair(&l);
    let traffic = Traffic::start(&l, 20, 15, true);
    let t0 = Instant::now();
    let safe_after_bulk = |fw: Node| {
        wait_until(
            &format!("{fw:?} bulk-synced and failover-safe"),
            Duration::from_secs(10),
            || {
                l.ctl(fw, "pfsync.status", json!({})).is_ok_and(|s| {
                    s["kernel"]["bulk_done_unix_ms"].is_u64() && s["failover_safe"] == true
                })
            },
        )
    };
    // 1. "Update your secondary unit and wait until it is online again."
    l.stop_node(Node::Fw2, Signal::SIGTERM).unwrap();
    l.start_node(Node::Fw2).unwrap();
    wait_all(&l, Node::Fw2, "BACKUP", 2, Duration::from_secs(10));
    safe_after_bulk(Node::Fw2);
    eprintln!("{:?}: fw2 restarted and synced", t0.elapsed());
    // 2. "Enter Persistent CARP Maintenance Mode" on the primary: the secondary is MASTER.
    l.ctl(Node::Fw1, "carp.maintenance", json!({"enabled": true}))
        .unwrap();
    wait_all(&l, Node::Fw2, "MASTER", 2, Duration::from_secs(5));
    wait_all(&l, Node::Fw1, "BACKUP", 2, Duration::from_secs(5));
    eprintln!("{:?}: fw2 MASTER", t0.elapsed());
    std::thread::sleep(Duration::from_secs(2));
    // 3. "Update your primary unit": it comes back in maintenance, so BACKUP, and gets the
    //    states made and changed on fw2 meanwhile.
    l.stop_node(Node::Fw1, Signal::SIGTERM).unwrap();
    l.start_node(Node::Fw1).unwrap();
    wait_all(&l, Node::Fw1, "BACKUP", 2, Duration::from_secs(10));
    safe_after_bulk(Node::Fw1);
    assert!(all_in(&l, Node::Fw2, "MASTER", 2), "fw2 lost MASTER");
    eprintln!(
        "{:?}: fw1 restarted in maintenance and synced",
        t0.elapsed()
    );
    // 4. "Leave Persistent CARP Maintenance Mode": the primary takes MASTER back.
    l.ctl(Node::Fw1, "carp.maintenance", json!({"enabled": false}))
        .unwrap();
    wait_all(&l, Node::Fw1, "MASTER", 2, Duration::from_secs(5));
    wait_all(&l, Node::Fw2, "BACKUP", 2, Duration::from_secs(5));
    eprintln!("{:?}: fw1 MASTER again", t0.elapsed());
    // (About 3 s here; the traffic runs 15 s.)
    assert!(
        t0.elapsed() < Duration::from_secs(12),
        "the procedure outran the traffic"
    );

    let seen = traffic.finish();
    let (ok, v) = &seen.tcp;
    assert!(ok, "TCP sessions broke during the update: {v}");
    assert_eq!(v["connections"], 20, "{v}");
    assert_eq!(v["missing"], 0, "{v}");
    let (ok, u) = seen.udp.as_ref().unwrap();
    assert!(ok, "the UDP flow broke during the update: {u}");
    let (sent, got) = seen.pings;
    eprintln!(
        "update procedure: tcp {v}; udp {u}; ping {} (lost {})",
        seen.ping_line,
        sent.saturating_sub(got)
    );
    assert!(sent > 250, "{}", seen.ping_line);
    assert!(
        sent - got <= 4,
        "more than 4 of {sent} pings (20/s) lost over two planned switchovers: {}",
        seen.ping_line
    );
}

/// The configs with IPv6 on LAN and WAN (static addresses, one CARP VIP on each, routed: no
/// NAT for IPv6) for `host` 10 (master) or 20 (backup).
fn with_v6_both_sides(xml: &str, host: u8) -> String {
    let skew = if host == 10 { "0" } else { "100" };
    let vips = format!(
        r#"<vip>
      <mode>carp</mode><interface>lan</interface><vhid>5</vhid><advskew>{skew}</advskew><advbase>1</advbase>
      <password>opnsense</password><descr>VIP LAN v6</descr><subnet_bits>64</subnet_bits><subnet>fd00:1::1</subnet>
    </vip>
    <vip>
      <mode>carp</mode><interface>wan</interface><vhid>6</vhid><advskew>{skew}</advskew><advbase>1</advbase>
      <password>opnsense</password><descr>VIP WAN v6</descr><subnet_bits>64</subnet_bits><subnet>fd00:2::1</subnet>
    </vip>
  </virtualip>"#
    );
    xml.replacen("</virtualip>", &vips, 1)
        .replacen(
            "<ipaddrv6>track6</ipaddrv6>",
            &format!("<ipaddrv6>fd00:1::{host}</ipaddrv6>"),
            1,
        )
        .replacen(
            "<ipaddrv6>dhcpv6</ipaddrv6>",
            &format!("<ipaddrv6>fd00:2::{host}</ipaddrv6><subnetv6>64</subnetv6>"),
            1,
        )
}

/// The how-to's test over IPv6: an interactive session from the client to the server, routed
/// through the VIPs, is in fw2's kernel table before the plug is pulled and carries on through
/// fw2 after it.
#[test]
fn an_ipv6_session_survives_pulling_the_masters_plug() {
    let base = default_opts();
    let dir = common::TempDir::new("s6");
    let m = dir.0.join("m.xml");
    let b = dir.0.join("b.xml");
    let master = std::fs::read_to_string(&base.master_config).unwrap();
    let backup = std::fs::read_to_string(&base.backup_config).unwrap();
    assert!(
        master.contains("<ipaddrv6>dhcpv6</ipaddrv6>")
            && master.contains("<ipaddrv6>track6</ipaddrv6>"),
        "example changed: adapt the test"
    );
    std::fs::write(&m, with_v6_both_sides(&master, 10)).unwrap();
    std::fs::write(&b, with_v6_both_sides(&backup, 20)).unwrap();
    let l = lab_with("s6", m, b);
    wait_all(&l, Node::Fw1, "MASTER", 4, Duration::from_secs(15));
    wait_all(&l, Node::Fw2, "BACKUP", 4, Duration::from_secs(5));
    l.run(
        Node::Client,
        &["ip", "-6", "addr", "add", "fd00:1::100/64", "dev", "eth0"],
    )
    .unwrap();
    l.run(
        Node::Client,
        &["ip", "-6", "route", "add", "default", "via", "fd00:1::1"],
    )
    .unwrap();
    l.run(
        Node::Server,
        &["ip", "-6", "addr", "add", "fd00:2::250/64", "dev", "eth0"],
    )
    .unwrap();
    l.run(
        Node::Server,
        &[
            "ip",
            "-6",
            "route",
            "add",
            "fd00:1::/64",
            "via",
            "fd00:2::1",
        ],
    )
    .unwrap();
    let _srv = KillOnDrop(echo_server(&l, 7000));
    std::thread::sleep(Duration::from_millis(300));
    let client = Command::new("ip")
        .args([
            "netns",
            "exec",
            &l.ns(Node::Client),
            "python3",
            &script("sessions.py"),
            "fd00:2::250",
            "7000",
            "1",
            "12",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("the IPv6 state on fw2", Duration::from_secs(6), || {
        l.run(Node::Fw2, &["conntrack", "-L", "-f", "ipv6"])
            .unwrap_or_default()
            .lines()
            .any(|e| {
                e.contains("ESTABLISHED")
                    && e.contains("dst=fd00:2::250")
                    && e.contains("dport=7000 ")
            })
    });
    let listed = l
        .ctl(Node::Fw2, "states.list", json!({"filter": "fd00:2::250"}))
        .unwrap();
    let rows = listed["states"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{listed}");
    assert_eq!(rows[0]["origin"], "peer", "{listed}");
    std::thread::sleep(Duration::from_secs(1));
    l.pull_plug(Node::Fw1).unwrap();
    let (ok, v) = result(client);
    assert!(ok, "the IPv6 session broke across the failover: {v}");
    assert_eq!(v["missing"], 0, "{v}");
    assert!(v["maxgap_s"].as_f64().unwrap() < 4.5, "{v}");
    assert!(
        all_in(&l, Node::Fw2, "MASTER", 4),
        "fw2 {:?}\nfw1 {:?}\n--- fw2 log\n{}",
        states(&l, Node::Fw2),
        states(&l, Node::Fw1),
        l.log_tail(Node::Fw2, 40)
    );
    eprintln!("IPv6 session across failover: {v}");
}

/// The master's daemon crashes (SIGKILL: no bow-out advert, its VIPs and kernel tables stay) and
/// is started again, as systemd would. fw2 takes over when fw1's adverts stop; the restarted fw1
/// comes up BACKUP, bulk-syncs and only then takes MASTER back. Twenty interactive sessions run
/// through all of it without losing a line; the ping stream's loss is printed.
#[test]
fn a_crashed_master_daemon_loses_no_session() {
    let l = lab("x", default_opts());
    settled_pair(&l);
    let traffic = Traffic::start(&l, 20, 16, false);
    let t0 = Instant::now();
    l.stop_node(Node::Fw1, Signal::SIGKILL).unwrap();
    wait_all(&l, Node::Fw2, "MASTER", 2, Duration::from_secs(6));
    eprintln!("{:?}: fw2 MASTER", t0.elapsed());
    l.start_node(Node::Fw1).unwrap();
    wait_all(&l, Node::Fw1, "MASTER", 2, Duration::from_secs(15));
    wait_all(&l, Node::Fw2, "BACKUP", 2, Duration::from_secs(5));
    eprintln!("{:?}: fw1 MASTER again", t0.elapsed());
    let st = l.ctl(Node::Fw1, "pfsync.status", json!({})).unwrap();
    assert!(
        st["kernel"]["bulk_done_unix_ms"].is_u64(),
        "fw1 took MASTER back without a bulk: {st}"
    );
    assert!(
        !addrs(&l, Node::Fw2, "em0").contains("192.168.1.1/24"),
        "the LAN VIP stayed on fw2"
    );
    let seen = traffic.finish();
    let (ok, v) = &seen.tcp;
    assert!(ok, "sessions broke across the crash: {v}");
    assert_eq!(v["missing"], 0, "{v}");
    eprintln!(
        "crash of the master's daemon: tcp {v}; ping {}",
        seen.ping_line
    );
}
