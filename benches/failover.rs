//! `scripts/bench carp`: the failover gap of tandem, keepalived (VRRP) and ucarp, measured the same
//! way on the same lab topology in one run.
//!
//! Method: the client pings the server (through the pair: LAN VIP as gateway, NAT to the WAN VIP)
//! every 10 ms; the master's plug is pulled at a random point of the advert cycle; the gap is the
//! longest interval between two replies around the pull. Timers: advbase/advert_int 1 s, backup skew
//! 100 (keepalived: priority 200/100). Not a test: it prints figures.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use anyhow::Context;
use tandem::lab::demo::{start_probe, stop_probe, wait_carp};
use tandem::lab::{Lab, LabGuard, LabOptions, Node};

const PULLS: usize = 5;

fn repo(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// The tandem binary beside this bench's `deps/` directory (built by `scripts/bench`), so a
/// `CARGO_TARGET_DIR` elsewhere works too.
fn tandem_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    exe.parent()
        .and_then(std::path::Path::parent)
        .map(|d| d.join("tandem"))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| repo("target/release/tandem"))
}

fn opts(boot: bool) -> LabOptions {
    LabOptions {
        boot,
        tandem: tandem_bin(),
        master_config: repo("etc/examples/carp-master.xml"),
        backup_config: repo("etc/examples/carp-backup.xml"),
        fw_addresses: !boot,
        ..LabOptions::default()
    }
}

fn rand_ms(max: u64) -> u64 {
    let mut b = [0u8; 8];
    let _ = std::fs::File::open("/dev/urandom").and_then(|mut f| {
        use std::io::Read;
        f.read_exact(&mut b)
    });
    u64::from_le_bytes(b) % max
}

/// Forwarding and outbound NAT to the WAN VIP for the peers (tandem does this itself).
fn peer_forwarding(lab: &Lab) -> anyhow::Result<()> {
    for fw in Node::FIREWALLS {
        lab.run(fw, &["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        lab.run(
            fw,
            &["nft", "add table ip bnat; add chain ip bnat post { type nat hook postrouting priority 100; }; add rule ip bnat post oifname em1 ip saddr 192.168.1.0/24 snat to 172.18.0.100"],
        )?;
    }
    Ok(())
}

fn spawn_in(lab: &Lab, fw: Node, argv: &[&str], log: &str) -> anyhow::Result<Child> {
    lab.spawn(fw, argv, &lab.run_dir.join(log))
}

fn start_keepalived(lab: &Lab) -> anyhow::Result<Vec<Child>> {
    let mut out = Vec::new();
    for (fw, prio) in [(Node::Fw1, 200), (Node::Fw2, 100)] {
        let conf = lab.run_dir.join(format!("keepalived-{fw}.conf"));
        std::fs::write(
            &conf,
            format!(
                "global_defs {{ enable_script_security }}\n\
                 vrrp_sync_group G {{ group {{ WAN LAN }} }}\n\
                 vrrp_instance WAN {{ state BACKUP; interface em1; virtual_router_id 1; priority {prio}; advert_int 1; virtual_ipaddress {{ 172.18.0.100/24 }} }}\n\
                 vrrp_instance LAN {{ state BACKUP; interface em0; virtual_router_id 3; priority {prio}; advert_int 1; virtual_ipaddress {{ 192.168.1.1/24 }} }}\n"
            )
            .replace("; ", "\n"),
        )?;
        let d = lab.run_dir.join(format!("ka-{fw}"));
        std::fs::create_dir_all(&d)?;
        let argv: Vec<String> = vec![
            "keepalived".into(),
            "-n".into(),
            "-l".into(),
            "-P".into(),
            "-f".into(),
            conf.display().to_string(),
            "-p".into(),
            d.join("k.pid").display().to_string(),
            "-r".into(),
            d.join("v.pid").display().to_string(),
        ];
        let a: Vec<&str> = argv.iter().map(String::as_str).collect();
        out.push(spawn_in(lab, fw, &a, &format!("keepalived-{fw}.log"))?);
    }
    Ok(out)
}

fn start_ucarp(lab: &Lab, nodes: &[Node]) -> anyhow::Result<Vec<Child>> {
    let mut out = Vec::new();
    let up = lab.run_dir.join("vip-up.sh");
    let down = lab.run_dir.join("vip-down.sh");
    // ucarp passes the interface as $1; the VIP comes from the environment we set per instance.
    std::fs::write(&up, "#!/bin/sh\nip addr add \"$VIP\" dev \"$1\"\n")?;
    std::fs::write(&down, "#!/bin/sh\nip addr del \"$VIP\" dev \"$1\"\n")?;
    for p in [&up, &down] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755))?;
    }
    for (fw, skew, lan_src, wan_src) in [
        (Node::Fw1, "0", "192.168.1.10", "172.18.0.101"),
        (Node::Fw2, "100", "192.168.1.20", "172.18.0.102"),
    ]
    .into_iter()
    .filter(|(fw, ..)| nodes.contains(fw))
    {
        for (dev, src, vhid, vip) in [
            ("em0", lan_src, "3", "192.168.1.1"),
            ("em1", wan_src, "1", "172.18.0.100"),
        ] {
            let log = std::fs::File::create(lab.run_dir.join(format!("ucarp-{fw}-{dev}.log")))?;
            let child = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &lab.ns(fw),
                    "ucarp",
                    "-i",
                    dev,
                    "-s",
                    src,
                    "-v",
                    vhid,
                    "-p",
                    "opnsense",
                    "-a",
                    vip,
                    "-b",
                    "1",
                    "-k",
                    skew,
                    "-P",
                    "-u",
                ])
                .arg(&up)
                .arg("-d")
                .arg(&down)
                .env("VIP", format!("{vip}/24"))
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .context("ucarp")?;
            out.push(child);
        }
    }
    Ok(out)
}

/// Wait until the client reaches the server through the pair.
fn wait_path(lab: &Lab, limit: Duration) -> anyhow::Result<()> {
    let t = std::time::Instant::now();
    while t.elapsed() < limit {
        if lab
            .exec(Node::Client, &["ping", "-c1", "-W1", "172.18.0.250"])
            .is_ok_and(|o| o.status.success())
        {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    anyhow::bail!("no path client -> server after {limit:?}")
}

fn has_vip(lab: &Lab, fw: Node) -> bool {
    lab.run(fw, &["ip", "-o", "addr", "show", "dev", "em0"])
        .is_ok_and(|s| s.contains("192.168.1.1/24"))
}

/// fw1 holds the VIPs and fw2 does not (ucarp keeps a VIP on an unplugged node, so both count).
fn master_on_fw1(lab: &Lab, which: &str) -> bool {
    let carp_ok =
        which != "tandem" || wait_carp(lab, Node::Fw1, "MASTER", Duration::from_millis(10)).is_ok();
    carp_ok && has_vip(lab, Node::Fw1) && !has_vip(lab, Node::Fw2)
}

/// `kids`: the peer daemons; for ucarp, fw1's two are restarted after each plug-back (see below).
fn pulls(lab: &Lab, which: &str, kids: &mut Vec<Child>) -> anyhow::Result<Vec<f64>> {
    let mut gaps = Vec::new();
    for i in 0..PULLS {
        // fw1 must be master again before each pull.
        let t = std::time::Instant::now();
        while !master_on_fw1(lab, which) {
            anyhow::ensure!(
                t.elapsed() < Duration::from_secs(30),
                "{which}: fw1 did not become the only master again"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_millis(1500));
        wait_path(lab, Duration::from_secs(10))?;
        let probe = start_probe(lab, "172.18.0.250")?;
        std::thread::sleep(Duration::from_millis(500 + rand_ms(1000)));
        lab.pull_plug(Node::Fw1)?;
        std::thread::sleep(Duration::from_secs(6));
        let (sent, recv, gap) = stop_probe(probe)?;
        eprintln!(
            "{which} pull {}: gap {:.3} s ({recv}/{sent} answered)",
            i + 1,
            gap.as_secs_f64()
        );
        gaps.push(gap.as_secs_f64());
        lab.restore_plug(Node::Fw1)?;
        if which == "ucarp" {
            // ucarp does not watch the link: its send errors while unplugged leave it suppressed
            // (advskew 240) for good once it is BACKUP, so it never preempts back. Restart fw1's
            // instances so every pull starts from the same state (the measured gap is fw2's).
            for mut k in kids.drain(..2) {
                let _ = k.kill();
                let _ = k.wait();
            }
            let mut fresh = start_ucarp(lab, &[Node::Fw1])?;
            fresh.append(kids);
            *kids = fresh;
        }
    }
    Ok(gaps)
}

fn stats(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

fn main() -> anyhow::Result<()> {
    let which = std::env::args().nth(1).filter(|a| !a.starts_with('-'));
    let pfx = format!("bf{}", std::process::id() % 100_000);
    let mut rows = Vec::new();
    for imp in ["tandem", "keepalived", "ucarp"] {
        if which.as_deref().is_some_and(|w| w != imp && w != "carp") {
            continue;
        }
        let lab = LabGuard(Lab::up(&pfx, opts(imp == "tandem"))?);
        let mut kids = Vec::new();
        match imp {
            "tandem" => {
                wait_carp(&lab, Node::Fw1, "MASTER", Duration::from_secs(15))?;
            }
            "keepalived" => {
                peer_forwarding(&lab)?;
                kids = start_keepalived(&lab)?;
            }
            _ => {
                peer_forwarding(&lab)?;
                kids = start_ucarp(&lab, &[Node::Fw1, Node::Fw2])?;
            }
        }
        let mut g = pulls(&lab, imp, &mut kids)?;
        for mut k in kids {
            let _ = k.kill();
            let _ = k.wait();
        }
        drop(lab);
        let (min, med, max) = stats(&mut g);
        rows.push((imp, min, med, max));
    }
    println!(
        "\nfailover gap (plug pulled -> first reply through the backup), {PULLS} pulls each, advbase 1 s, backup skew 100:"
    );
    println!("| implementation | min (s) | median (s) | max (s) |");
    println!("|---|---|---|---|");
    for (imp, min, med, max) in rows {
        println!("| {imp} | {min:.3} | {med:.3} | {max:.3} |");
    }
    println!("CARP bound 3·advbase + advskew/256 = 3.391 s");
    Ok(())
}
