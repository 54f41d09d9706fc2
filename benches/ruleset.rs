//! `scripts/bench ruleset`: how long rendering (`proto::nft`) and loading (`sys::nft::load`, one
//! `nft -f` transaction in a fresh namespace) take for 1,000 and 10,000 filter rules, and the TCP
//! forwarding rate (iperf3, client -> server through fw1 as the VIP holder, SNAT to the WAN VIP)
//! with an empty filter (forwarding + NAT only) and with the how-to's rendered ruleset. Not a
//! test: it prints figures.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sched::CloneFlags;
use serde_json::Value;
use tandem::config::Config;
use tandem::lab::{Lab, LabGuard, LabOptions, Node, TempNetns};
use tandem::proto::nft::{self, PortRange, Proto, Ruleset};

const SIZES: [usize; 2] = [1_000, 10_000];
const IPERF_SECS: &str = "5";

fn repo(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn config(name: &str) -> anyhow::Result<Config> {
    let bytes = std::fs::read(repo(&format!("etc/examples/{name}")))?;
    Config::parse(&bytes).map_err(|e| anyhow::anyhow!("{name}: {e}"))
}

/// The example's filter set with its first user rule cloned into `n` TCP rules on distinct
/// destination ports (a realistic many-services ruleset: every rule differs).
fn rules(cfg: &Config, n: usize) -> anyhow::Result<nft::FilterSet> {
    let mut set = nft::convert::filter_set(cfg).map_err(|e| anyhow::anyhow!("{e}"))?;
    let Some(template) = set.rules.first().cloned() else {
        bail!("the example config has no filter rule to clone");
    };
    set.rules = (0..n)
        .map(|i| {
            let mut r = template.clone();
            let port = 1000 + (i % 60_000) as u16;
            r.proto = Proto::Tcp;
            r.dst.ports = vec![PortRange { lo: port, hi: port }];
            r.descr = format!("bench rule {i}");
            r
        })
        .collect();
    Ok(set)
}

/// Load `rs` from a thread inside `ns` (the `nft` child inherits the thread's namespace).
fn load_in(ns: &str, rs: Ruleset) -> anyhow::Result<Duration> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || -> anyhow::Result<Duration> {
        let f = std::fs::File::open(&path)?;
        nix::sched::setns(&f, CloneFlags::CLONE_NEWNET).context("setns")?;
        let t = Instant::now();
        tandem::sys::nft::load(&rs).map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(t.elapsed())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("load thread panicked"))?
}

/// Rules, nft lines, render ms, first load ms, reload ms.
type LoadRow = (usize, usize, f64, f64, f64);

fn render_load() -> anyhow::Result<Vec<LoadRow>> {
    let cfg = config("carp-master.xml")?;
    let view = nft::convert::view(&cfg);
    let ns = TempNetns::new(&format!("brs{}", std::process::id() % 100_000))?;
    let mut rows = Vec::new();
    for n in SIZES {
        let set = rules(&cfg, n)?;
        let t = Instant::now();
        let rs = nft::render_filter(&set, &view).map_err(|e| anyhow::anyhow!("{e}"))?;
        let render = t.elapsed();
        let lines = rs.text.lines().count();
        // First load into an empty namespace, then a replacement of the same size (a reload).
        let first = load_in(&ns.0, rs.clone())?;
        let again = load_in(&ns.0, rs)?;
        eprintln!("{n} rules: render {render:?}, load {first:?}, reload {again:?}");
        rows.push((
            n,
            lines,
            render.as_secs_f64() * 1000.0,
            first.as_secs_f64() * 1000.0,
            again.as_secs_f64() * 1000.0,
        ));
    }
    Ok(rows)
}

// ------------------------------------------------------------------ forwarding

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn iperf(lab: &Lab, reverse: bool) -> anyhow::Result<f64> {
    let mut argv = vec!["iperf3", "-c", "172.18.0.250", "-t", IPERF_SECS, "-J"];
    if reverse {
        argv.push("-R");
    }
    let out = lab.exec(Node::Client, &argv)?;
    let v: Value = serde_json::from_slice(&out.stdout).context("iperf3 -J output")?;
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .with_context(|| format!("iperf3: {}", v["error"]))
}

fn forwarding() -> anyhow::Result<Vec<(&'static str, f64, f64)>> {
    let pfx = format!("bru{}", std::process::id() % 100_000);
    let lab = LabGuard(Lab::up(
        &pfx,
        LabOptions {
            boot: false,
            fw_addresses: true,
            master_config: repo("etc/examples/carp-master.xml"),
            backup_config: repo("etc/examples/carp-backup.xml"),
            ..LabOptions::default()
        },
    )?);
    // fw1 holds both VIPs (what CARP master does); fw2 stays out of the path.
    lab.run(
        Node::Fw1,
        &["ip", "addr", "add", "192.168.1.1/24", "dev", "em0"],
    )?;
    lab.run(
        Node::Fw1,
        &["ip", "addr", "add", "172.18.0.100/24", "dev", "em1"],
    )?;
    lab.run(Node::Fw1, &["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
    let cfg = config("carp-master.xml")?;
    let filter = nft::convert::filter(&cfg).map_err(|e| anyhow::anyhow!("{e}"))?;
    let nat = nft::convert::nat(&cfg).map_err(|e| anyhow::anyhow!("{e}"))?;
    let dir = lab.run_dir.join("ruleset");
    std::fs::create_dir_all(&dir)?;
    let nat_file = dir.join("nat.nft");
    std::fs::write(&nat_file, nat.script())?;
    let filter_file = dir.join("filter.nft");
    std::fs::write(&filter_file, filter.script())?;
    lab.run(Node::Fw1, &["nft", "-f", &nat_file.display().to_string()])?;
    let log = lab.run_dir.join("iperf3-server.log");
    let _srv = Kill(lab.spawn(Node::Server, &["iperf3", "-s"], &log)?);
    std::thread::sleep(Duration::from_millis(500));
    let mut rows = Vec::new();
    let up = iperf(&lab, false)?;
    let down = iperf(&lab, true)?;
    rows.push(("forwarding + NAT only", up, down));
    lab.run(
        Node::Fw1,
        &["nft", "-f", &filter_file.display().to_string()],
    )?;
    lab.run(
        Node::Fw1,
        &["sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_loose=0"],
    )?;
    let up = iperf(&lab, false)?;
    let down = iperf(&lab, true)?;
    rows.push(("how-to ruleset (tandem_filter + tandem_nat)", up, down));
    let _ = Command::new("true").stdout(Stdio::null()).status();
    Ok(rows)
}

fn main() -> anyhow::Result<()> {
    let rl = render_load()?;
    let fwd = forwarding()?;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "\nruleset render + load (load average at the end: {})",
        load.trim()
    );
    println!("| rules | nft lines | render ms | first load ms | reload ms |");
    println!("|---|---|---|---|---|");
    for (n, lines, r, l, a) in rl {
        println!("| {n} | {lines} | {r:.1} | {l:.1} | {a:.1} |");
    }
    println!("\nTCP forwarding through fw1 (iperf3, {IPERF_SECS} s, one stream, veths):");
    println!("| ruleset | client -> server Gbit/s | server -> client Gbit/s |");
    println!("|---|---|---|");
    for (name, up, down) in fwd {
        println!("| {name} | {:.2} | {:.2} |", up / 1e9, down / 1e9);
    }
    Ok(())
}
