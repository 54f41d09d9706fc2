//! `scripts/bench dhcp`: DHCPv4 throughput of tandem and of Kea 2.2, measured the same way on the
//! same lab topology in one run: the highest rate of full DORA exchanges per second that `perfdhcp`
//! (Debian `kea-admin`) completes for 10 s with zero drops.
//!
//! Method: perfdhcp runs in the client namespace (192.168.1.100 on the LAN) and acts as a relay:
//! giaddr = 192.168.1.100, requests broadcast (`all`) to 255.255.255.255:67 on the LAN, replies come back
//! to 192.168.1.100:67. 200 distinct clients (`-R 200`, the LAN pool holds 234 addresses); a 3 s
//! warm-up at 100/s (not counted) gives each its first lease, so the measured exchanges re-grant
//! existing leases, which every server still writes to its lease store. The offered rate doubles from 500/s while a run is clean, then is bisected
//! twice between the last clean and the first failed rate. A run is clean when both
//! DISCOVER-OFFER and REQUEST-ACK show 0 drops and the achieved rate is at least 97 % of the
//! offered one.
//!
//! Setups: tandem single node (fw1 with its failover peer removed from the config, fw2 stopped),
//! tandem HA pair (the example configs: load-balancing), Kea single node (kea-dhcp4 in fw1's
//! namespace on em0 with the same pool) and Kea HA pair (kea-dhcp4 with libdhcp_ha in load-balancing
//! and kea-ctrl-agent on both firewalls). Lease stores: tandem SQLite WAL `synchronous=FULL`; Kea
//! memfile with `persist: true`, `lfc-interval: 0` (a CSV append per lease change, no fsync).
//! Both live under /run/tandem-lab (on this box the root file system, ext4 on a virtual disk, so
//! tandem's fsyncs are real; Kea does not fsync). Kea: raw sockets (a UDP socket bound to the interface
//! address does not see the broadcasts), multi-threading off (the 2.2 default). The achieved rate
//! is REQUEST-ACK received packets / 10 s (perfdhcp's own "Rate" also counts the `-W` wait).
//! perfdhcp and every thread of the server under test run at nice -10 (from the first measured
//! run on), above the other work of the shared box. Each run also reports the server's CPU time
//! (all its processes, user + system) per 1000 ACKs, and how many of perfdhcp's drops were
//! replies lost in perfdhcp's own socket receive buffer (the client namespace's UDP
//! `RcvbufErrors`): those were answered by the server, but perfdhcp read them too late.
//! Not a test: it prints figures.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};
use tandem::lab::{Lab, LabGuard, LabOptions, Node};

const HOOKS: &str = "/usr/lib/x86_64-linux-gnu/kea/hooks";
const CLIENTS: &str = "200";
const PERIOD_S: &str = "10";
/// Between two runs, so that a server's backlog from an overloaded run drains first.
const PAUSE: Duration = Duration::from_secs(3);

fn repo(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn opts(boot: bool, master: PathBuf) -> LabOptions {
    LabOptions {
        boot,
        tandem: PathBuf::from(env!("CARGO_BIN_EXE_tandem")),
        master_config: master,
        backup_config: repo("etc/examples/carp-backup.xml"),
        fw_addresses: !boot,
        ..LabOptions::default()
    }
}

/// fw1's example config without its DHCP failover peer: a standalone server.
fn standalone_config(dir: &Path) -> anyhow::Result<PathBuf> {
    let text = std::fs::read_to_string(repo("etc/examples/carp-master.xml"))?;
    let out: String = text
        .lines()
        .filter(|l| !l.contains("<failover_peerip>"))
        .map(|l| format!("{l}\n"))
        .collect();
    anyhow::ensure!(
        out.len() < text.len(),
        "no failover_peerip in carp-master.xml"
    );
    std::fs::create_dir_all(dir)?;
    let p = dir.join("dhcp-bench-standalone.xml");
    std::fs::write(&p, out)?;
    Ok(p)
}

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> anyhow::Result<()> {
    let t = Instant::now();
    while t.elapsed() < limit {
        if f() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    anyhow::bail!("{what}: not after {limit:?}")
}

fn tandem_state(lab: &Lab, fw: Node) -> Value {
    lab.ctl(fw, "dhcp.failover", json!({}))
        .unwrap_or(Value::Null)
}

/// Kea's processes on one firewall; killed on drop.
struct Kids(Vec<Child>);

impl Drop for Kids {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn start_kea(lab: &Lab, fw: Node, ha: bool) -> anyhow::Result<Vec<Child>> {
    let (me, my_ip) = match fw {
        Node::Fw1 => ("server1", "192.168.1.10"),
        _ => ("server2", "192.168.1.20"),
    };
    let dir = lab.run_dir.join(format!("kea-{fw}"));
    std::fs::create_dir_all(&dir)?;
    let d = dir.display();
    let mut hooks = Vec::new();
    if ha {
        hooks.push(json!({"library": format!("{HOOKS}/libdhcp_lease_cmds.so")}));
        hooks.push(json!({"library": format!("{HOOKS}/libdhcp_ha.so"), "parameters": {"high-availability": [{
            "this-server-name": me,
            "mode": "load-balancing",
            "heartbeat-delay": 10000,
            "max-response-delay": 60000,
            "max-ack-delay": 5000,
            "max-unacked-clients": 5,
            "peers": [
                {"name": "server1", "url": "http://192.168.1.10:8647/", "role": "primary"},
                {"name": "server2", "url": "http://192.168.1.20:8647/", "role": "secondary"}
            ]
        }]}}));
    }
    let dhcp4 = json!({"Dhcp4": {
        "interfaces-config": {"interfaces": ["em0"], "dhcp-socket-type": "raw"},
        "control-socket": {"socket-type": "unix", "socket-name": format!("{d}/kea4.sock")},
        "lease-database": {"type": "memfile", "persist": true,
                           "name": format!("{d}/leases4.csv"), "lfc-interval": 0},
        "multi-threading": {"enable-multi-threading": false},
        "valid-lifetime": 7200,
        "hooks-libraries": hooks,
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
        "loggers": [{"name": "kea-dhcp4", "severity": "WARN",
                     "output_options": [{"output": format!("{d}/kea4.log")}]}]
    }});
    std::fs::write(dir.join("dhcp4.json"), dhcp4.to_string())?;
    let spawn = |bin: &str, cfg: &str, log: &str| -> anyhow::Result<Child> {
        Command::new("ip")
            .args(["netns", "exec", &lab.ns(fw), "env"])
            .arg(format!("KEA_PIDFILE_DIR={d}"))
            .arg(format!("KEA_LOCKFILE_DIR={d}"))
            .args([bin, "-c", &dir.join(cfg).to_string_lossy()])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join(log))?)
            .stderr(std::fs::File::create(dir.join(format!("{log}.err")))?)
            .spawn()
            .with_context(|| format!("spawning {bin}"))
    };
    let mut kids = vec![spawn("kea-dhcp4", "dhcp4.json", "kea4.out")?];
    if ha {
        let ca = json!({"Control-agent": {
            "http-host": my_ip,
            "http-port": 8647,
            "control-sockets": {"dhcp4": {"socket-type": "unix", "socket-name": format!("{d}/kea4.sock")}},
            "loggers": [{"name": "kea-ctrl-agent", "severity": "WARN",
                         "output_options": [{"output": format!("{d}/ca.log")}]}]
        }});
        std::fs::write(dir.join("ca.json"), ca.to_string())?;
        std::thread::sleep(Duration::from_millis(300));
        kids.push(spawn("kea-ctrl-agent", "ca.json", "ca.out")?);
    }
    Ok(kids)
}

fn kea_ha_state(lab: &Lab, fw: Node) -> String {
    let ip = if fw == Node::Fw1 {
        "192.168.1.10"
    } else {
        "192.168.1.20"
    };
    let body = json!({"command": "status-get", "service": ["dhcp4"]}).to_string();
    let url = format!("http://{ip}:8647/");
    let Ok(out) = lab.exec(
        fw,
        &[
            "curl",
            "-s",
            "-m",
            "3",
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "-d",
            &body,
            &url,
        ],
    ) else {
        return String::new();
    };
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    v.pointer("/0/arguments/high-availability/0/ha-servers/local/state")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

/// The 1-minute load average: the box is shared, so every figure is printed with it.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_default()
}

/// CPU time (user + system, all threads) the given processes have used, in ms.
fn cpu_ms(pids: &[i32]) -> f64 {
    let tick = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    pids.iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
        .filter_map(|s| {
            // Fields after the parenthesised command name: state is the 3rd, utime the 14th.
            let rest = &s[s.rfind(')')? + 1..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
            Some(ticks as f64 * 1000.0 / tick)
        })
        .sum()
}

/// UDP datagrams the client namespace dropped on a full socket receive buffer (perfdhcp could
/// not read its replies in time: a drop of the load generator, not of the server).
fn client_rcvbuf_errors(lab: &Lab) -> u64 {
    let Ok(out) = lab.exec(Node::Client, &["cat", "/proc/net/snmp"]) else {
        return 0;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let mut udp = text.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(head), Some(vals)) = (udp.next(), udp.next()) else {
        return 0;
    };
    head.split_whitespace()
        .zip(vals.split_whitespace())
        .find(|(k, _)| *k == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// One perfdhcp run's figures.
#[derive(Clone, Copy, Debug, Default)]
struct Run {
    offered: u32,
    achieved: f64,
    drops_do: u64,
    drops_ra: u64,
    sent_do: u64,
    delay_do_ms: f64,
    /// Server CPU (all its processes) during the run, ms per 1000 ACKs.
    cpu_per_k: f64,
    /// Replies lost in perfdhcp's own socket buffer (part of the drops).
    client_drops: u64,
}

impl Run {
    fn clean(&self) -> bool {
        self.sent_do > 0
            && self.drops_do == 0
            && self.drops_ra == 0
            && self.achieved >= 0.97 * f64::from(self.offered)
    }
}

/// Niceness of perfdhcp and of the server under test: above the background work of the shared
/// box (builds, VMs at 0), so that a busy neighbour starves the measurement less. The same for
/// every setup.
const NICE: &str = "-10";

/// Renice every thread of these processes to [`NICE`].
fn renice(pids: &[i32]) {
    let tids: Vec<String> = pids
        .iter()
        .flat_map(|p| {
            std::fs::read_dir(format!("/proc/{p}/task"))
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
        })
        .collect();
    if tids.is_empty() {
        return;
    }
    let ok = Command::new("renice")
        .args(["-n", NICE, "-p"])
        .args(&tids)
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("warning: cannot renice {pids:?}");
    }
}

fn perfdhcp_argv(rate: u32, period: &str) -> Vec<String> {
    [
        "nice",
        "-n",
        NICE,
        "perfdhcp",
        "-4",
        "-l",
        "192.168.1.100",
        "-r",
        &rate.to_string(),
        "-R",
        CLIENTS,
        "-p",
        period,
        "-W",
        "1000000",
        "all",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The number after `key` on the first line after the `section` header that starts with `key`.
fn stat(text: &str, section: &str, key: &str) -> Option<f64> {
    let start = text.find(section)?;
    text[start..]
        .lines()
        .find_map(|l| l.trim().strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

fn perfdhcp(lab: &Lab, pids: &[i32], rate: u32, period: &str) -> anyhow::Result<Run> {
    let argv = perfdhcp_argv(rate, period);
    let a: Vec<&str> = argv.iter().map(String::as_str).collect();
    let (cpu0, rcv0) = (cpu_ms(pids), client_rcvbuf_errors(lab));
    let out = lab.exec(Node::Client, &a)?;
    let (cpu1, rcv1) = (cpu_ms(pids), client_rcvbuf_errors(lab));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    // perfdhcp's own "Rate:" divides by the run time including the -W wait, so count the ACKs.
    let period: f64 = period.parse()?;
    let acks = stat(&text, "REQUEST-ACK", "received packets:");
    let Some(acks) = acks else {
        anyhow::bail!(
            "perfdhcp -r {rate}: no rate in its output:\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let do_ = "DISCOVER-OFFER";
    let ra = "REQUEST-ACK";
    let n = |s: &str, k: &str| stat(&text, s, k).unwrap_or(f64::NAN);
    Ok(Run {
        offered: rate,
        achieved: acks / period,
        drops_do: n(do_, "drops:") as u64,
        drops_ra: n(ra, "drops:") as u64,
        sent_do: n(do_, "sent packets:") as u64,
        delay_do_ms: n(do_, "avg delay:"),
        cpu_per_k: (cpu1 - cpu0) / acks.max(1.0) * 1000.0,
        client_drops: rcv1.saturating_sub(rcv0),
    })
}

/// The best clean run, and the run with the most ACKs whatever its drops (saturation).
type Found = (Option<Run>, Option<Run>);

/// Double from 500/s while clean, then bisect twice.
fn search(lab: &Lab, pids: &[i32], name: &str) -> anyhow::Result<Found> {
    let mut best: Option<Run> = None;
    let mut top: Option<Run> = None;
    let mut bad: Option<u32> = None;
    // Warm-up, not counted: the 200 clients get their first lease at a low rate.
    let warm = perfdhcp(lab, pids, 100, "3")?;
    eprintln!(
        "{name}: warm-up -r 100 for 3 s -> {:.0} ACKs",
        warm.achieved * 3.0
    );
    let mut rate = 500u32;
    // After the warm-up: the server has started all the threads it uses.
    renice(pids);
    let mut log = |r: &Run| {
        if top.is_none_or(|t| r.achieved > t.achieved) {
            top = Some(*r);
        }
        eprintln!(
            "{name}: -r {} -> {:.1}/s, drops D-O {} R-A {} (in perfdhcp's socket buffer: {}), D-O delay {:.2} ms, server CPU {:.0} ms/1000 DORA, load {}{}",
            r.offered,
            r.achieved,
            r.drops_do,
            r.drops_ra,
            r.client_drops,
            r.delay_do_ms,
            r.cpu_per_k,
            loadavg(),
            if r.clean() { "" } else { "  (not clean)" }
        );
    };
    while rate <= 64_000 {
        let r = perfdhcp(lab, pids, rate, PERIOD_S)?;
        log(&r);
        if r.clean() {
            best = Some(r);
            rate *= 2;
        } else {
            bad = Some(rate);
            break;
        }
        std::thread::sleep(PAUSE);
    }
    let Some(mut hi) = bad else {
        return Ok((best, top));
    };
    let mut lo = best.map_or(0, |b| b.offered);
    for _ in 0..2 {
        let mid = (lo + hi) / 2;
        if mid <= lo || mid >= hi {
            break;
        }
        std::thread::sleep(PAUSE);
        let r = perfdhcp(lab, pids, mid, PERIOD_S)?;
        log(&r);
        if r.clean() {
            best = Some(r);
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok((best, top))
}

fn tandem_single(pfx: &str) -> anyhow::Result<Found> {
    let dir = std::env::temp_dir().join(pfx);
    let r = standalone_config(&dir).and_then(|cfg| {
        let lab = LabGuard(Lab::up(pfx, opts(true, cfg))?);
        lab.stop_node(Node::Fw2, nix::sys::signal::Signal::SIGTERM)?;
        wait_until("fw1 dhcp serving", Duration::from_secs(20), || {
            tandem_state(&lab, Node::Fw1).is_object()
        })?;
        let pids: Vec<i32> = lab.node_pid(Node::Fw1).into_iter().collect();
        search(&lab, &pids, "tandem single")
    });
    let _ = std::fs::remove_dir_all(&dir);
    r
}

fn tandem_pair(pfx: &str) -> anyhow::Result<Found> {
    let lab = LabGuard(Lab::up(
        pfx,
        opts(true, repo("etc/examples/carp-master.xml")),
    )?);
    wait_until(
        "tandem pair load-balancing",
        Duration::from_secs(60),
        || {
            [Node::Fw1, Node::Fw2]
                .iter()
                .all(|fw| tandem_state(&lab, *fw)["state"] == "load-balancing")
        },
    )?;
    let pids: Vec<i32> = [Node::Fw1, Node::Fw2]
        .iter()
        .filter_map(|fw| lab.node_pid(*fw))
        .collect();
    search(&lab, &pids, "tandem HA pair")
}

fn kea(pfx: &str, ha: bool) -> anyhow::Result<Found> {
    let lab = LabGuard(Lab::up(
        pfx,
        opts(false, repo("etc/examples/carp-master.xml")),
    )?);
    let mut kids = Kids(start_kea(&lab, Node::Fw1, ha)?);
    if ha {
        kids.0.extend(start_kea(&lab, Node::Fw2, true)?);
        wait_until("kea pair load-balancing", Duration::from_secs(60), || {
            [Node::Fw1, Node::Fw2]
                .iter()
                .all(|fw| kea_ha_state(&lab, *fw) == "load-balancing")
        })?;
    } else {
        std::thread::sleep(Duration::from_secs(2));
    }
    let name = if ha { "Kea HA pair" } else { "Kea single" };
    let pids: Vec<i32> = kids.0.iter().map(|c| c.id() as i32).collect();
    let r = search(&lab, &pids, name);
    drop(kids);
    r
}

fn main() -> anyhow::Result<()> {
    let which = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .filter(|a| a != "dhcp");
    let pfx = format!("bd{}", std::process::id() % 100_000);
    let setups: [(&str, &str); 4] = [
        ("tandem-single", "tandem, single node"),
        ("tandem-ha", "tandem, HA pair (load-balancing)"),
        ("kea-single", "Kea 2.2, single node"),
        ("kea-ha", "Kea 2.2, HA pair (load-balancing)"),
    ];
    let mut rows = Vec::new();
    for (key, label) in setups {
        if which.as_deref().is_some_and(|w| !key.starts_with(w)) {
            continue;
        }
        let r = match key {
            "tandem-single" => tandem_single(&pfx),
            "tandem-ha" => tandem_pair(&pfx),
            "kea-single" => kea(&pfx, false),
            _ => kea(&pfx, true),
        };
        match r {
            Ok((best, top)) => rows.push((label, best, top, String::new())),
            Err(e) => {
                eprintln!("{label}: {e:#}");
                rows.push((label, None, None, format!("{e:#}")));
            }
        }
    }
    println!(
        "\nDHCPv4 full DORA exchanges/s with zero drops for {PERIOD_S} s (perfdhcp, {CLIENTS} clients, relayed via 192.168.1.100):"
    );
    println!(
        "command: ip netns exec <client> {} (rate stepped)",
        perfdhcp_argv(0, PERIOD_S)
            .join(" ")
            .replace("-r 0", "-r <rate>")
    );
    println!(
        "(2 vCPU shared by the servers, perfdhcp and anything else running; load average now {})",
        loadavg()
    );
    println!(
        "| setup | highest clean offered rate | achieved DORA/s | avg D-O delay (ms) | server CPU ms per 1000 DORA | most ACKs/s in any run (drops D-O/R-A; of which in perfdhcp's buffer) |"
    );
    println!("|---|---|---|---|---|---|");
    for (label, best, top, err) in rows {
        let top = top.map_or("-".to_string(), |t| {
            format!(
                "{:.1} at -r {} ({}/{}; {})",
                t.achieved, t.offered, t.drops_do, t.drops_ra, t.client_drops
            )
        });
        match best {
            Some(r) => println!(
                "| {label} | {} | {:.1} | {:.2} | {:.0} | {top} |",
                r.offered, r.achieved, r.delay_do_ms, r.cpu_per_k
            ),
            None if err.is_empty() => {
                println!("| {label} | none clean at 500/s | - | - | - | {top} |")
            }
            None => println!(
                "| {label} | error: {} | - | - | - | - |",
                err.replace('\n', " ")
            ),
        }
    }
    Ok(())
}
