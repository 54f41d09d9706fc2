//! `scripts/bench sync`: state sync of tandem (pfsync over em2) and of keepalived + conntrackd
//! (FT-FW over the same em2 link), measured the same way in one lab run each. Not a test: it
//! prints figures.
//!
//! - lag: an ESTABLISHED/SNAT conntrack entry is created on fw1 (ctnetlink, from a thread in
//!   fw1's namespace) and seen appearing in fw2's kernel table (a ctnetlink event subscription
//!   from a thread in fw2's namespace); both timestamps are `Instant`s of this process.
//!   conntrackd keeps peer states in its external cache, not in the kernel, until it is told to
//!   commit; for this part it runs with `DisableExternalCache On` (it then writes peer states
//!   into fw2's kernel table at once), the rest uses the FT-FW setup of peer-baseline.md.
//! - throughput: new states at a stepped rate for 1 s each; the highest rate at which every
//!   state arrived and the largest lag stayed under 100 ms.
//! - bulk: 100,000 states on fw1; fw2's kernel table emptied; time until fw2's kernel holds them
//!   all. tandem: fw2's daemon is restarted; it asks for a bulk at start and records when it
//!   sent the request (`pfsync.status` kernel.bulk_requested_unix_ms): the time counts from the
//!   request (the time from the process start is printed too). conntrackd: `-f external`, `-n`
//!   (resync request), then `-c` (commit): the time counts from `-n`.
//! - failover: 10,000 TCP sessions (10 `sessions.py` of 1,000, 10 echo servers) through fw1,
//!   its plug pulled, sessions checked after fw2 took over.
//! - RSS (VmRSS) of the sync daemon on both nodes at 10,000 and 100,000 states, and of the whole
//!   HA stack at 10,000 (tandem's one process; conntrackd plus keepalived's processes).
//! - the kernel alone: 100,000 bench states created by one ctnetlink socket in an empty
//!   namespace, with and without a NEW-event listener in another namespace (`-- kernel` runs only
//!   this). All namespaces share one kernel here, and it builds conntrack events for a namespace
//!   whenever any namespace listens: this shows what that costs a bulk in the lab.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use serde_json::{Value, json};
use tandem::lab::demo::wait_carp;
use tandem::lab::{Lab, LabGuard, LabOptions, Node, TempNetns};
use tandem::sys::conntrack::{self, Conntrack, Entry, Event, Tuple, status_bits, tcp_state};

const LAG_N: u32 = 1000;
const LAG_RATE: f64 = 500.0;
const RATES: [f64; 6] = [2_000.0, 5_000.0, 10_000.0, 20_000.0, 40_000.0, 80_000.0];
const BULK_N: u32 = 100_000;
const SESSIONS_PER_PROC: u32 = 1000;
const SESSION_PROCS: u16 = 10;
const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 100);
const SERVER: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 250);
const WAN_VIP: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 100);

fn repo(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// The tandem binary beside this bench's `deps/` directory (built by `scripts/bench`).
fn tandem_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let beside = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("tandem"))
        .filter(|p| p.is_file());
    beside.unwrap_or_else(|| repo("target/release/tandem"))
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

// ------------------------------------------------------------------ namespaces and states

/// Run `f` on a thread that entered namespace `ns`, with a current-thread tokio runtime.
fn in_ns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce(&tokio::runtime::Runtime) -> anyhow::Result<T> + Send + 'static,
) -> JoinHandle<anyhow::Result<T>> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).with_context(|| path.clone())?;
        nix::sched::setns(&file, CloneFlags::CLONE_NEWNET).context("setns")?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        f(&rt)
    })
}

fn join<T>(h: JoinHandle<anyhow::Result<T>>) -> anyhow::Result<T> {
    h.join().map_err(|_| anyhow::anyhow!("thread panicked"))?
}

/// State number `i`: client:sport -> server:dport, SNAT to the WAN VIP; (sport, dport) unique.
fn key(i: u32) -> (u16, u16) {
    let sport = 1024 + (i % 64_000) as u16;
    let dport = 2000 + (i / 64_000) as u16;
    (sport, dport)
}

fn state(i: u32) -> Entry {
    let (sport, dport) = key(i);
    let orig = Tuple {
        src: IpAddr::V4(CLIENT),
        dst: IpAddr::V4(SERVER),
        proto: 6,
        sport,
        dport,
        ..Tuple::default()
    };
    let mut reply = orig.inverse();
    reply.dst = IpAddr::V4(WAN_VIP);
    Entry {
        orig,
        reply,
        status: status_bits::SEEN_REPLY | status_bits::ASSURED,
        tcp_state: Some(tcp_state::ESTABLISHED),
        tcp_flags: Some((0, 0)),
        timeout: 1800,
        ..Entry::default()
    }
}

type Seen = Arc<Mutex<HashMap<(u16, u16), Instant>>>;

/// A ctnetlink event watcher in one firewall's namespace: first sight of each bench state.
struct Watch {
    seen: Seen,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<anyhow::Result<u64>>>,
}

impl Watch {
    fn start(lab: &Lab, fw: Node) -> anyhow::Result<Watch> {
        let seen: Seen = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (s2, st2) = (seen.clone(), stop.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = in_ns(&lab.ns(fw), move |rt| {
            rt.block_on(async move {
                let mut ev = conntrack::subscribe_with(64 << 20, false)?;
                let _ = tx.send(());
                while !st2.load(Ordering::Relaxed) {
                    let e = match tokio::time::timeout(Duration::from_millis(50), ev.next()).await {
                        Ok(Some(Event::New(e) | Event::Update(e))) => e,
                        Ok(None) => break,
                        _ => continue,
                    };
                    if e.orig.src == IpAddr::V4(CLIENT) && e.orig.dst == IpAddr::V4(SERVER) {
                        let now = Instant::now();
                        if let Ok(mut m) = s2.lock() {
                            m.entry((e.orig.sport, e.orig.dport)).or_insert(now);
                        }
                    }
                }
                Ok(ev.overruns())
            })
        });
        rx.recv_timeout(Duration::from_secs(5))
            .context("watcher did not subscribe")?;
        Ok(Watch {
            seen,
            stop,
            thread: Some(thread),
        })
    }

    fn get(&self, k: (u16, u16)) -> Option<Instant> {
        self.seen.lock().ok().and_then(|m| m.get(&k).copied())
    }

    fn finish(mut self) -> anyhow::Result<u64> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take() {
            Some(t) => join(t),
            None => Ok(0),
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Create states `range` on `fw` at `rate` per second (in 1 ms batches; `rate` 0 = one batch);
/// returns the send time of each and how many the kernel refused.
fn inject(
    lab: &Lab,
    fw: Node,
    range: std::ops::Range<u32>,
    rate: f64,
) -> anyhow::Result<(Vec<Instant>, usize)> {
    in_ns(&lab.ns(fw), move |rt| {
        rt.block_on(async move {
            let ct = Conntrack::open()?;
            let all: Vec<Entry> = range.map(state).collect();
            let mut sent = Vec::with_capacity(all.len());
            let mut failed = 0;
            let t0 = Instant::now();
            let mut done = 0usize;
            while done < all.len() {
                let due = if rate > 0.0 {
                    ((t0.elapsed().as_secs_f64() * rate) as usize + 1).min(all.len())
                } else {
                    all.len()
                };
                if due > done {
                    let now = Instant::now();
                    for chunk in all[done..due].chunks(2000) {
                        failed += ct
                            .create_batch(chunk)
                            .await
                            .iter()
                            .filter(|r| r.is_err())
                            .count();
                    }
                    sent.extend(std::iter::repeat_n(now, due - done));
                    done = due;
                } else {
                    tokio::time::sleep(Duration::from_micros(500)).await;
                }
            }
            Ok((sent, failed))
        })
    })
    .join()
    .map_err(|_| anyhow::anyhow!("injector panicked"))?
}

fn kernel_count(lab: &Lab, fw: Node) -> anyhow::Result<usize> {
    join(in_ns(&lab.ns(fw), |rt| {
        rt.block_on(async { Ok(Conntrack::open()?.count().await?) })
    }))
}

/// Lags (ms) of states `range` whose send times are `sent`, waiting up to `grace` after the last
/// send for stragglers; returns the lags of those that arrived and how many did not.
fn lags(
    w: &Watch,
    range: std::ops::Range<u32>,
    sent: &[Instant],
    grace: Duration,
) -> (Vec<f64>, usize) {
    let deadline = Instant::now() + grace;
    loop {
        let missing = range.clone().filter(|&i| w.get(key(i)).is_none()).count();
        if missing == 0 || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut out = Vec::new();
    let mut missing = 0;
    for (i, t) in range.zip(sent) {
        match w.get(key(i)) {
            Some(seen) => out.push(seen.saturating_duration_since(*t).as_secs_f64() * 1000.0),
            None => missing += 1,
        }
    }
    out.sort_by(f64::total_cmp);
    (out, missing)
}

fn pct(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

/// (VmRSS, RssAnon) of `pid` in kB: the anonymous part is what grows with the states; the rest
/// is the mapped binary and libraries (tandem's binary is ~15 MB, conntrackd's far smaller).
fn rss_kb(pid: u32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| -> u64 {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("RssAnon:"))
}

/// VmRSS (kB) of `pid` and all its descendants: the whole daemon (keepalived runs as a parent
/// and a VRRP child).
fn tree_rss_kb(pid: u32) -> u64 {
    let mut total = 0;
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        total += rss_kb(p).0;
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) {
            for t in tasks.flatten() {
                let kids = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
                todo.extend(
                    kids.split_whitespace()
                        .filter_map(|k| k.parse::<u32>().ok()),
                );
            }
        }
    }
    total
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> anyhow::Result<Duration> {
    let t = Instant::now();
    while !f() {
        if t.elapsed() > limit {
            bail!("{what}: not after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(t.elapsed())
}

// ------------------------------------------------------------------ results

#[derive(Default, Debug)]
struct Results {
    lag_p50: f64,
    lag_p99: f64,
    lag_max: f64,
    lag_missing: usize,
    steps: Vec<(f64, f64, f64, usize)>,
    bulk: String,
    failover: String,
    rss10k: ((u64, u64), (u64, u64)),
    rss100k: ((u64, u64), (u64, u64)),
    /// VmRSS (kB) of everything doing the HA job on fw1 / fw2 at 10k states (tandem: its one
    /// process; the peer: conntrackd plus keepalived's processes).
    stack10k: (u64, u64),
    notes: Vec<String>,
}

impl Results {
    fn best_rate(&self) -> String {
        let mut best = None;
        for &(rate, _p99, max, missing) in &self.steps {
            if missing == 0 && max < 100.0 {
                best = Some(rate);
            } else {
                break;
            }
        }
        match best {
            Some(r) if Some(&r) == RATES.last() => format!("≥ {r:.0}"),
            Some(r) => format!("{r:.0}"),
            None => format!("< {:.0}", RATES[0]),
        }
    }
}

/// The rate steps and the lag run, with the watcher on fw2.
fn lag_and_steps(
    lab: &Lab,
    r: &mut Results,
    next: &mut u32,
    lag: bool,
    steps: bool,
) -> anyhow::Result<()> {
    let w = Watch::start(lab, Node::Fw2)?;
    if lag {
        let range = *next..*next + LAG_N;
        *next += LAG_N;
        let (sent, failed) = inject(lab, Node::Fw1, range.clone(), LAG_RATE)?;
        let (l, missing) = lags(&w, range, &sent, Duration::from_secs(3));
        eprintln!(
            "lag: {} arrived, {missing} missing, {failed} refused on fw1",
            l.len()
        );
        (r.lag_p50, r.lag_p99, r.lag_max, r.lag_missing) =
            (pct(&l, 0.5), pct(&l, 0.99), pct(&l, 1.0), missing);
    }
    for rate in RATES.into_iter().filter(|_| steps) {
        let n = rate as u32; // one second's worth
        let range = *next..*next + n;
        *next += n;
        let mono = || {
            let mut ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: clock_gettime writes only into the timespec passed, which lives here.
            unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
            ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
        };
        let t0 = mono();
        let (sent, failed) = inject(lab, Node::Fw1, range.clone(), rate)?;
        eprintln!("rate {rate}: monotonic {t0:.3} .. {:.3}", mono());
        let took = sent
            .last()
            .zip(sent.first())
            .map(|(b, a)| b.duration_since(*a))
            .unwrap_or_default();
        let (l, missing) = lags(&w, range, &sent, Duration::from_secs(5));
        let (p99, max) = (pct(&l, 0.99), pct(&l, 1.0));
        eprintln!(
            "rate {rate}: sent in {:.3} s, {failed} refused, p99 {p99:.1} ms, max {max:.1} ms, {missing} missing",
            took.as_secs_f64()
        );
        r.steps.push((rate, p99, max, missing));
        if missing > 0 || max >= 100.0 {
            break;
        }
    }
    let overruns = w.finish()?;
    if overruns > 0 {
        r.notes.push(format!(
            "fw2 watcher overran {overruns} times (lag of the lost events unknown)"
        ));
    }
    Ok(())
}

/// Bring fw1's table to `target` bench states (one batch) and wait until `synced` says fw2 has them.
fn fill(
    lab: &Lab,
    next: &mut u32,
    target: u32,
    mut synced: impl FnMut() -> usize,
) -> anyhow::Result<()> {
    let have = *next;
    if target > have {
        let (_, failed) = inject(lab, Node::Fw1, have..target, 0.0)?;
        *next = target;
        if failed > 0 {
            eprintln!("fill: {failed} refused");
        }
    }
    let want = (*next as usize) * 99 / 100;
    let _ = wait_for("fw2 has the states", Duration::from_secs(60), || {
        synced() >= want
    })
    .inspect_err(|e| eprintln!("{e}"));
    Ok(())
}

// ------------------------------------------------------------------ sessions

struct Kids(Vec<Child>);
impl Drop for Kids {
    fn drop(&mut self) {
        for k in &mut self.0 {
            let _ = k.kill();
            let _ = k.wait();
        }
    }
}

fn echo_servers(lab: &Lab) -> anyhow::Result<Kids> {
    let mut k = Vec::new();
    for p in 0..SESSION_PROCS {
        let port = (7000 + p).to_string();
        let script = repo("tests/scripts/echo_server.py").display().to_string();
        k.push(
            Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &lab.ns(Node::Server),
                    "python3",
                    &script,
                    &port,
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?,
        );
    }
    // Every server must listen before the clients connect (a slow start under load refused them).
    let listening = || {
        lab.run(Node::Server, &["ss", "-Hltn"]).map_or(0, |s| {
            (0..SESSION_PROCS)
                .filter(|p| s.contains(&format!(":{} ", 7000 + p)))
                .count()
        })
    };
    wait_for("echo servers listen", Duration::from_secs(20), || {
        listening() == usize::from(SESSION_PROCS)
    })?;
    Ok(Kids(k))
}

fn session_clients(lab: &Lab, secs: u32) -> anyhow::Result<Kids> {
    let mut k = Vec::new();
    for p in 0..SESSION_PROCS {
        let script = repo("tests/scripts/sessions.py").display().to_string();
        k.push(
            Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &lab.ns(Node::Client),
                    "python3",
                    &script,
                    "172.18.0.250",
                ])
                .arg((7000 + p).to_string())
                .arg(SESSIONS_PER_PROC.to_string())
                .arg(secs.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()?,
        );
    }
    Ok(Kids(k))
}

fn established_to_server(lab: &Lab, fw: Node) -> usize {
    lab.run(
        fw,
        &[
            "conntrack",
            "-L",
            "-p",
            "tcp",
            "-d",
            "172.18.0.250",
            "--state",
            "ESTABLISHED",
        ],
    )
    .map(|s| s.lines().filter(|l| l.contains("dport=70")).count())
    .unwrap_or(0)
}

/// 10,000 sessions through fw1, plug pulled once `synced` reaches them, sessions checked.
fn failover(
    lab: &Lab,
    synced: impl Fn() -> usize,
    took_over: impl Fn() -> bool,
) -> anyhow::Result<String> {
    let _srv = echo_servers(lab)?;
    let mut clients = session_clients(lab, 30)?;
    let total = usize::from(SESSION_PROCS) * SESSIONS_PER_PROC as usize;
    let open = wait_for("sessions open on fw1", Duration::from_secs(30), || {
        established_to_server(lab, Node::Fw1) >= total
    });
    let sync = wait_for("sessions synced", Duration::from_secs(20), || {
        synced() >= total
    });
    eprintln!("failover: open {open:?}, synced {sync:?}");
    std::thread::sleep(Duration::from_secs(1));
    let before = synced();
    lab.pull_plug(Node::Fw1)?;
    let master = wait_for("fw2 takes over", Duration::from_secs(10), &took_over).ok();
    let mut ok = 0u64;
    let mut problems = Vec::new();
    for c in std::mem::take(&mut clients.0) {
        let out = c.wait_with_output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let v: Value = text
            .lines()
            .last()
            .and_then(|l| serde_json::from_str(l).ok())
            .unwrap_or(json!({}));
        let n = v["connections"].as_u64().unwrap_or(0);
        let broken = v["problems"].as_array().map_or(n, |p| p.len() as u64);
        if out.status.success() {
            ok += n;
        } else {
            problems.push(format!(
                "{} ({broken} problems listed) {}",
                v["problems"],
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            ));
            // A failed run reports its first problems only; count its connections as lost.
        }
    }
    lab.restore_plug(Node::Fw1)?;
    for p in problems.iter().take(3) {
        eprintln!("failover problem: {p}");
    }
    Ok(format!(
        "{ok}/{total} ({before} synced at the pull; takeover {})",
        master.map_or("not seen".into(), |d| format!("{:.2} s", d.as_secs_f64()))
    ))
}

// ------------------------------------------------------------------ tandem

fn tandem_pid(lab: &Lab, fw: Node) -> u32 {
    lab.node_pid(fw).map_or(0, |p| p as u32)
}

fn run_tandem(r: &mut Results) -> anyhow::Result<()> {
    let pfx = format!("bs{}", std::process::id() % 100_000);
    let lab = LabGuard(Lab::up(&pfx, opts(true))?);
    wait_carp(&lab, Node::Fw1, "MASTER", Duration::from_secs(15))?;
    wait_carp(&lab, Node::Fw2, "BACKUP", Duration::from_secs(10))?;
    let mut next = 0u32;
    if let Some(v) = std::env::var_os("SYNC_BENCH_STEPS") {
        // Development loop: the lag and the rate steps only, on fresh tables ("after-flush":
        // after 100k states were synced and flushed, as in the full run).
        if v == "after-flush" {
            let fw2_count = || kernel_count(&lab, Node::Fw2).unwrap_or(0);
            fill(&lab, &mut next, BULK_N, fw2_count)?;
            lab.run(Node::Fw1, &["conntrack", "-F"])?;
            let _ = wait_for("fw2 emptied", Duration::from_secs(30), || fw2_count() < 100);
        }
        return lag_and_steps(&lab, r, &mut next, true, true);
    }
    lag_and_steps(&lab, r, &mut next, true, false)?;
    let fw2_count = || kernel_count(&lab, Node::Fw2).unwrap_or(0);
    let target = next.max(10_000);
    fill(&lab, &mut next, target, fw2_count)?;
    r.rss10k = (
        rss_kb(tandem_pid(&lab, Node::Fw1)),
        rss_kb(tandem_pid(&lab, Node::Fw2)),
    );
    if let Ok(dir) = std::env::var("SYNC_BENCH_SMAPS") {
        // Where the resident pages are, per mapping (diagnostics for the RSS row).
        for (fw, name) in [(Node::Fw1, "fw1"), (Node::Fw2, "fw2")] {
            let from = format!("/proc/{}/smaps", tandem_pid(&lab, fw));
            let _ = std::fs::copy(from, format!("{dir}/smaps-{name}"));
        }
    }
    r.stack10k = (
        tree_rss_kb(tandem_pid(&lab, Node::Fw1)),
        tree_rss_kb(tandem_pid(&lab, Node::Fw2)),
    );
    if next < BULK_N {
        fill(&lab, &mut next, BULK_N, fw2_count)?;
    }
    r.rss100k = (
        rss_kb(tandem_pid(&lab, Node::Fw1)),
        rss_kb(tandem_pid(&lab, Node::Fw2)),
    );
    // The figure above is taken the moment fw2 has them all, while its last writes may still
    // be queued; what it settles to 2 s later is noted too.
    std::thread::sleep(Duration::from_secs(2));
    let settled = (
        rss_kb(tandem_pid(&lab, Node::Fw1)),
        rss_kb(tandem_pid(&lab, Node::Fw2)),
    );
    r.notes.push(format!(
        "tandem RSS fw1 / fw2 at 100k states 2 s later, kB: {} / {} ({} / {})",
        settled.0.0, settled.1.0, settled.0.1, settled.1.1
    ));
    let n = kernel_count(&lab, Node::Fw1)?.min(next as usize);
    eprintln!("fw1 {n} bench states, fw2 {}", fw2_count());

    // Bulk: fw2 restarted with an empty kernel table; it requests a bulk at start.
    lab.stop_node(Node::Fw2, Signal::SIGTERM)?;
    lab.run(Node::Fw2, &["conntrack", "-F"])?;
    let t0 = Instant::now();
    lab.start_node(Node::Fw2)?;
    // Development aid: SYNC_BENCH_PERF=1 profiles both daemons during the bulk.
    let mut perfs = Vec::new();
    if std::env::var_os("SYNC_BENCH_PERF").is_some() {
        std::thread::sleep(Duration::from_millis(20));
        for (fw, name) in [(Node::Fw1, "fw1"), (Node::Fw2, "fw2")] {
            let pid = tandem_pid(&lab, fw).to_string();
            let out = format!("/tmp/perf-{name}.data");
            perfs.push(
                Command::new("perf")
                    .args(["record", "-g", "-F", "2000", "-o", &out, "-p", &pid])
                    .args(["--", "sleep", "0.8"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()?,
            );
        }
    }
    let ready = wait_for("fw2 answers", Duration::from_secs(15), || {
        lab.ctl(Node::Fw2, "pfsync.status", json!({})).is_ok()
    })?;
    let mut at_ready = 0;
    let done = wait_for("bulk into fw2's kernel", Duration::from_secs(30), || {
        let c = fw2_count();
        if at_ready == 0 {
            at_ready = c.max(1);
        }
        c >= n
    });
    let total = t0.elapsed();
    let done_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let full = fw2_count();
    // The issue's measure starts at the bulk request (fw2 records when it sent it).
    let requested = lab
        .ctl(Node::Fw2, "pfsync.status", json!({}))
        .ok()
        .and_then(|v| v["kernel"]["bulk_requested_unix_ms"].as_u64());
    for mut p in perfs {
        let _ = p.wait();
    }
    r.bulk = match done {
        Ok(_) => format!(
            "{} after the bulk request ({:.3} s from daemon start; {full} states; control socket up at {:.3} s with {at_ready} in)",
            requested.map_or("?".into(), |r| format!(
                "{:.3} s",
                done_unix_ms.saturating_sub(r) as f64 / 1000.0
            )),
            total.as_secs_f64(),
            ready.as_secs_f64()
        ),
        Err(_) => format!("not complete after 30 s: {full}/{n}"),
    };
    // An explicit pfsync.bulk on a full table, for the record: how long the request takes to answer.
    let tb = Instant::now();
    let _ = lab.ctl(Node::Fw2, "pfsync.bulk", json!({}));
    r.notes.push(format!(
        "tandem pfsync.bulk call answered in {:.3} s",
        tb.elapsed().as_secs_f64()
    ));
    wait_carp(&lab, Node::Fw2, "BACKUP", Duration::from_secs(20))?;

    if std::env::var_os("SYNC_BENCH_QUICK").is_some() {
        // Development loop: lag, RSS and bulk only.
        for (fw, name) in [(Node::Fw1, "fw1"), (Node::Fw2, "fw2")] {
            let _ = std::fs::copy(lab.log_path(fw), format!("/tmp/sync-bench-{name}.log"));
        }
        eprintln!("--- fw1 log\n{}", lab.log_tail(Node::Fw1, 15));
        eprintln!("--- fw2 log\n{}", lab.log_tail(Node::Fw2, 40));
        for fw in [Node::Fw1, Node::Fw2] {
            eprintln!(
                "--- {fw:?} em2 / raw drops\n{}\n{}",
                lab.run(fw, &["ip", "-s", "link", "show", "em2"])
                    .unwrap_or_default(),
                lab.run(fw, &["cat", "/proc/net/raw"]).unwrap_or_default()
            );
        }
        eprintln!(
            "--- fw1 pfsync.status\n{}",
            lab.ctl(Node::Fw1, "pfsync.status", json!({}))
                .map(|v| v.to_string())
                .unwrap_or_default()
        );
        eprintln!(
            "--- fw2 pfsync.status\n{}",
            lab.ctl(Node::Fw2, "pfsync.status", json!({}))
                .map(|v| v.to_string())
                .unwrap_or_default()
        );
        return Ok(());
    }
    // Rate steps on empty tables (after the RSS figures, which never shrink again).
    lab.run(Node::Fw1, &["conntrack", "-F"])?;
    let _ = wait_for("fw2 emptied", Duration::from_secs(30), || fw2_count() < 100);
    lag_and_steps(&lab, r, &mut next, false, true)?;

    // Failover of 10,000 sessions: first the synthetic states go.
    lab.run(Node::Fw1, &["conntrack", "-F"])?;
    let _ = wait_for("fw2 emptied", Duration::from_secs(30), || fw2_count() < 100);
    r.failover = failover(
        &lab,
        || established_to_server(&lab, Node::Fw2),
        || wait_carp(&lab, Node::Fw2, "MASTER", Duration::from_millis(5)).is_ok(),
    )?;
    Ok(())
}

// ------------------------------------------------------------------ the kernel's own part

/// Seconds for one ctnetlink socket to create the `n` bench states (SNAT, ESTABLISHED) in an
/// empty namespace, with or without a NEW-event listener in another namespace. The kernel tests
/// for event listeners per protocol, not per namespace: in the lab, fw1's daemon listening for NEW
/// makes fw2's kernel build a NEW event for every entry tandem injects there, which two separate
/// boxes never do (tandem leaves the NEW group while it injects a bulk).
fn kernel_insert(n: u32, listener_elsewhere: bool) -> anyhow::Result<f64> {
    let pid = std::process::id() % 100_000;
    let target = TempNetns::new(&format!("tbkt{pid}"))?;
    let other = TempNetns::new(&format!("tbko{pid}"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let st = stop.clone();
    let listener = in_ns(&other.0, move |rt| {
        rt.block_on(async move {
            let ev = listener_elsewhere.then(conntrack::subscribe).transpose()?;
            let _ = tx.send(());
            while !st.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            drop(ev);
            Ok(())
        })
    });
    rx.recv_timeout(Duration::from_secs(5))
        .context("listener thread")?;
    let took = join(in_ns(&target.0, move |rt| {
        rt.block_on(async move {
            let ct = Conntrack::open()?;
            let all: Vec<Entry> = (0..n).map(state).collect();
            let t = Instant::now();
            let failed = ct
                .create_batch(&all)
                .await
                .iter()
                .filter(|r| r.is_err())
                .count();
            let took = t.elapsed().as_secs_f64();
            anyhow::ensure!(failed == 0, "{failed} creates failed");
            Ok(took)
        })
    }));
    stop.store(true, Ordering::Relaxed);
    join(listener)?;
    took
}

// ------------------------------------------------------------------ keepalived + conntrackd

struct Peer {
    dir: PathBuf,
    ctd: Vec<(Node, Child)>,
    ka: Vec<Child>,
}

impl Drop for Peer {
    fn drop(&mut self) {
        for (_, c) in self.ctd.iter_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for c in &mut self.ka {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), Signal::SIGTERM);
            std::thread::sleep(Duration::from_millis(100));
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn ctd_conf(dir: &Path, fw: Node) -> PathBuf {
    dir.join(format!("conntrackd-{fw}.conf"))
}

fn write_ctd_conf(dir: &Path, fw: Node, external_cache: bool) -> anyhow::Result<()> {
    let (me, peer) = match fw {
        Node::Fw1 => ("10.0.0.1", "10.0.0.2"),
        _ => ("10.0.0.2", "10.0.0.1"),
    };
    let d = dir.display();
    let disable = if external_cache { "Off" } else { "On" };
    std::fs::write(
        ctd_conf(dir, fw),
        format!(
            "Sync {{
  Mode FTFW {{
    DisableExternalCache {disable}
  }}
  UDP {{
    IPv4_address {me}
    IPv4_Destination_Address {peer}
    Port 3780
    Interface em2
    SndSocketBuffer 1249280
    RcvSocketBuffer 1249280
    Checksum on
  }}
}}
General {{
  HashSize 32768
  HashLimit 262144
  LogFile {d}/conntrackd-{fw}.log
  Syslog off
  LockFile {d}/conntrackd-{fw}.lock
  UNIX {{
    Path {d}/conntrackd-{fw}.sock
  }}
  NetlinkBufferSize 2097152
  NetlinkBufferSizeMaxGrowth 67108864
  Filter From Userspace {{
    Protocol Accept {{
      TCP
      UDP
      ICMP
    }}
    Address Ignore {{
      IPv4_address 127.0.0.1
      IPv4_address 10.0.0.1
      IPv4_address 10.0.0.2
      IPv4_address 192.168.1.10
      IPv4_address 192.168.1.20
      IPv4_address 172.18.0.101
      IPv4_address 172.18.0.102
      IPv4_address 192.168.1.1
      IPv4_address 172.18.0.100
    }}
  }}
}}
"
        ),
    )?;
    Ok(())
}

impl Peer {
    fn ctd(&self, fw: Node, args: &[&str]) -> Vec<String> {
        let conf = ctd_conf(&self.dir, fw).display().to_string();
        let mut v = vec!["conntrackd".to_string(), "-C".into(), conf];
        v.extend(args.iter().map(|s| s.to_string()));
        v
    }

    fn start_ctd(&mut self, lab: &Lab, external_cache: bool) -> anyhow::Result<()> {
        for (_, mut c) in self.ctd.drain(..) {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), Signal::SIGTERM);
            let _ = c.wait();
        }
        for fw in Node::FIREWALLS {
            write_ctd_conf(&self.dir, fw, external_cache)?;
            let _ = std::fs::remove_file(self.dir.join(format!("conntrackd-{fw}.lock")));
            let argv = self.ctd(fw, &[]);
            let a: Vec<&str> = argv.iter().map(String::as_str).collect();
            let c = lab.spawn(fw, &a, &self.dir.join(format!("conntrackd-{fw}.out")))?;
            self.ctd.push((fw, c));
        }
        for fw in Node::FIREWALLS {
            wait_for("conntrackd socket", Duration::from_secs(10), || {
                self.dir.join(format!("conntrackd-{fw}.sock")).exists()
            })?;
        }
        std::thread::sleep(Duration::from_millis(300));
        Ok(())
    }

    fn run(&self, lab: &Lab, fw: Node, args: &[&str]) -> anyhow::Result<String> {
        let argv = self.ctd(fw, args);
        let a: Vec<&str> = argv.iter().map(String::as_str).collect();
        lab.run(fw, &a)
    }

    /// Active objects in the external (`external`) or internal cache, from `conntrackd -s cache`
    /// (lines like `cache:external\tactive objects:\t\t   N`).
    fn cache_count(&self, lab: &Lab, fw: Node, external: bool) -> usize {
        let Ok(s) = self.run(lab, fw, &["-s", "cache"]) else {
            return 0;
        };
        let want = if external {
            "cache:external"
        } else {
            "cache:internal"
        };
        s.lines()
            .find(|l| l.starts_with(want))
            .and_then(|l| l.rsplit(':').next())
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }

    fn pid(&self, fw: Node) -> u32 {
        self.ctd
            .iter()
            .find(|(f, _)| *f == fw)
            .map_or(0, |(_, c)| c.id())
    }
}

/// Forwarding, the strict sysctls and tandem's own rendered ruleset (filter + NAT) on both firewalls.
fn peer_ruleset(lab: &Lab, dir: &Path) -> anyhow::Result<()> {
    for (fw, cfg) in [
        (Node::Fw1, "carp-master.xml"),
        (Node::Fw2, "carp-backup.xml"),
    ] {
        let bytes = std::fs::read(repo(&format!("etc/examples/{cfg}")))?;
        let cfg = tandem::config::Config::parse(&bytes).map_err(|e| anyhow::anyhow!("{e}"))?;
        let f = tandem::proto::nft::convert::filter(&cfg).map_err(|e| anyhow::anyhow!("{e}"))?;
        let n = tandem::proto::nft::convert::nat(&cfg).map_err(|e| anyhow::anyhow!("{e}"))?;
        let path = dir.join(format!("ruleset-{fw}.nft"));
        std::fs::write(
            &path,
            format!(
                "{}\n{}\ninsert rule inet {} input iifname \"em2\" accept\n",
                f.script(),
                n.script(),
                tandem::proto::nft::FILTER_TABLE
            ),
        )?;
        for s in [
            "net.ipv4.ip_forward=1",
            "net.netfilter.nf_conntrack_tcp_loose=0",
            "net.netfilter.nf_conntrack_tcp_be_liberal=1",
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.all.arp_ignore=1",
            "net.ipv4.conf.all.arp_announce=2",
        ] {
            lab.run(fw, &["sysctl", "-qw", s])?;
        }
        lab.run(fw, &["nft", "-f", &path.display().to_string()])?;
    }
    Ok(())
}

fn start_keepalived(lab: &Lab, peer: &Peer) -> anyhow::Result<Vec<Child>> {
    let mut out = Vec::new();
    for (fw, prio) in [(Node::Fw1, 100), (Node::Fw2, 90)] {
        let c = |args: &str| format!("{} {args}", peer.ctd(fw, &[]).join(" "));
        let script = peer.dir.join(format!("notify-{fw}.sh"));
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\n# conntrack-tools primary-backup.sh\ncase \"$3\" in\n\
                 MASTER) {} ; {} ; {} ; {} ;;\n\
                 BACKUP) {} ; {} ;;\n\
                 FAULT) {} ;;\nesac\necho \"$(date +%s.%N) $3\" >> {}/notify-{fw}.log\n",
                c("-c"),
                c("-f"),
                c("-R"),
                c("-B"),
                c("-t"),
                c("-n"),
                c("-t"),
                peer.dir.display()
            ),
        )?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
        let conf = peer.dir.join(format!("keepalived-{fw}.conf"));
        std::fs::write(
            &conf,
            format!(
                "global_defs {{\n  enable_script_security\n  script_user root\n  vrrp_garp_master_delay 1\n  vrrp_garp_master_repeat 3\n}}\n\
                 vrrp_sync_group G {{\n  group {{\n    WAN\n    LAN\n  }}\n  notify {}\n}}\n\
                 vrrp_instance WAN {{\n  state BACKUP\n  interface em1\n  virtual_router_id 1\n  priority {prio}\n  advert_int 1\n  virtual_ipaddress {{\n    172.18.0.100/24\n  }}\n}}\n\
                 vrrp_instance LAN {{\n  state BACKUP\n  interface em0\n  virtual_router_id 3\n  priority {prio}\n  advert_int 1\n  virtual_ipaddress {{\n    192.168.1.1/24\n  }}\n}}\n",
                script.display()
            ),
        )?;
        let d = peer.dir.join(format!("ka-{fw}"));
        std::fs::create_dir_all(&d)?;
        for f in ["k.pid", "v.pid"] {
            let _ = std::fs::remove_file(d.join(f));
        }
        let argv: Vec<String> = vec![
            "keepalived".into(),
            "-n".into(),
            "-l".into(),
            "-D".into(),
            "-P".into(),
            "-f".into(),
            conf.display().to_string(),
            "-p".into(),
            d.join("k.pid").display().to_string(),
            "-r".into(),
            d.join("v.pid").display().to_string(),
        ];
        let a: Vec<&str> = argv.iter().map(String::as_str).collect();
        out.push(lab.spawn(fw, &a, &peer.dir.join(format!("keepalived-{fw}.log")))?);
    }
    Ok(out)
}

fn has_vip(lab: &Lab, fw: Node) -> bool {
    lab.run(fw, &["ip", "-o", "addr", "show", "dev", "em0"])
        .is_ok_and(|s| s.contains("192.168.1.1/24"))
}

fn run_conntrackd(r: &mut Results) -> anyhow::Result<()> {
    let pfx = format!("bc{}", std::process::id() % 100_000);
    let lab = LabGuard(Lab::up(&pfx, opts(false))?);
    let dir = lab.run_dir.join("peer");
    std::fs::create_dir_all(&dir)?;
    peer_ruleset(&lab, &dir)?;
    let mut peer = Peer {
        dir,
        ctd: Vec::new(),
        ka: Vec::new(),
    };
    // Phase A: no external cache, so peer states go straight into fw2's kernel table.
    peer.start_ctd(&lab, false)?;
    peer.ka = start_keepalived(&lab, &peer)?;
    wait_for("keepalived master on fw1", Duration::from_secs(20), || {
        has_vip(&lab, Node::Fw1) && !has_vip(&lab, Node::Fw2)
    })?;
    std::thread::sleep(Duration::from_secs(2));
    let mut next = 0u32;
    lag_and_steps(&lab, r, &mut next, true, true)?;

    // Phase B: FT-FW with the external cache (peer-baseline.md) for the rest.
    for fw in Node::FIREWALLS {
        lab.run(fw, &["conntrack", "-F"])?;
    }
    peer.start_ctd(&lab, true)?;
    next = 0;
    fill(&lab, &mut next, 10_000, || {
        peer.cache_count(&lab, Node::Fw2, true)
    })?;
    r.rss10k = (rss_kb(peer.pid(Node::Fw1)), rss_kb(peer.pid(Node::Fw2)));
    let ka = |i: usize| peer.ka.get(i).map_or(0, |c| tree_rss_kb(c.id()));
    r.stack10k = (r.rss10k.0.0 + ka(0), r.rss10k.1.0 + ka(1));
    fill(&lab, &mut next, BULK_N, || {
        peer.cache_count(&lab, Node::Fw2, true)
    })?;
    r.rss100k = (rss_kb(peer.pid(Node::Fw1)), rss_kb(peer.pid(Node::Fw2)));
    let n = kernel_count(&lab, Node::Fw1)?.min(next as usize);
    eprintln!(
        "fw1 {n} bench states, fw2 external cache {}",
        peer.cache_count(&lab, Node::Fw2, true)
    );

    // Bulk: fw2's external cache and kernel emptied, resync (-n), then commit (-c).
    peer.run(&lab, Node::Fw2, &["-f", "external"])?;
    lab.run(Node::Fw2, &["conntrack", "-F"])?;
    let t0 = Instant::now();
    peer.run(&lab, Node::Fw2, &["-n"])?;
    let cached = wait_for("resync into fw2's cache", Duration::from_secs(30), || {
        peer.cache_count(&lab, Node::Fw2, true) >= n
    });
    let t1 = Instant::now();
    peer.run(&lab, Node::Fw2, &["-c"])?;
    let commit = t1.elapsed();
    let k = kernel_count(&lab, Node::Fw2)?;
    r.bulk = format!(
        "{:.3} s = resync to cache {} + commit {:.3} s ({k} states in fw2's kernel)",
        t0.elapsed().as_secs_f64(),
        cached.map_or("(incomplete)".into(), |d| format!(
            "{:.3} s",
            d.as_secs_f64()
        )),
        commit.as_secs_f64()
    );
    r.rss100k.1 = r.rss100k.1.max(rss_kb(peer.pid(Node::Fw2))); // (VmRSS, RssAnon) pairs

    // Failover of 10,000 sessions.
    for fw in Node::FIREWALLS {
        lab.run(fw, &["conntrack", "-F"])?;
        let _ = peer.run(&lab, fw, &["-f"]);
    }
    r.failover = failover(
        &lab,
        || peer.cache_count(&lab, Node::Fw2, true),
        || has_vip(&lab, Node::Fw2),
    )?;
    Ok(())
}

fn ms(v: f64) -> String {
    if v.is_nan() {
        "—".into()
    } else {
        format!("{v:.1}")
    }
}

fn main() -> anyhow::Result<()> {
    let which = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let mut rows: Vec<(&str, Results)> = Vec::new();
    for imp in ["tandem", "conntrackd"] {
        if which.as_deref().is_some_and(|w| w != imp && w != "sync") {
            continue;
        }
        let mut r = Results::default();
        let res = if imp == "tandem" {
            run_tandem(&mut r)
        } else {
            run_conntrackd(&mut r)
        };
        if let Err(e) = res {
            eprintln!("{imp}: {e:#}");
            r.notes.push(format!("run aborted: {e:#}"));
        }
        rows.push((imp, r));
    }
    // The kernel's part of a bulk, alone (no lab up, so no other listener on the machine).
    let mut kernel_rows = Vec::new();
    if which
        .as_deref()
        .is_none_or(|w| w == "sync" || w == "kernel")
    {
        for elsewhere in [true, false] {
            let r = kernel_insert(BULK_N, elsewhere);
            kernel_rows.push((elsewhere, r));
        }
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "\nstate sync, fw1 -> fw2 over em2 (load average at the end: {})",
        load.trim()
    );
    println!(
        "| | {} |",
        rows.iter().map(|(i, _)| *i).collect::<Vec<_>>().join(" | ")
    );
    println!("|---|{}", "---|".repeat(rows.len()));
    let line = |name: &str, f: &dyn Fn(&Results) -> String| {
        println!(
            "| {name} | {} |",
            rows.iter()
                .map(|(_, r)| f(r))
                .collect::<Vec<_>>()
                .join(" | ")
        );
    };
    line(
        &format!("sync lag p50 / p99 / max, ms ({LAG_N} states at {LAG_RATE}/s)"),
        &|r| {
            format!(
                "{} / {} / {} ({} lost)",
                ms(r.lag_p50),
                ms(r.lag_p99),
                ms(r.lag_max),
                r.lag_missing
            )
        },
    );
    for (i, rate) in RATES.iter().enumerate() {
        line(
            &format!("{rate:.0} new states/s for 1 s: p99 / max lag ms, lost"),
            &|r| {
                r.steps.get(i).map_or("—".into(), |s| {
                    format!("{} / {} / {}", ms(s.1), ms(s.2), s.3)
                })
            },
        );
    }
    line("highest rate with max lag < 100 ms, states/s", &|r| {
        r.best_rate()
    });
    line(
        &format!("{BULK_N} states into fw2's kernel after a bulk"),
        &|r| r.bulk.clone(),
    );
    line("sessions surviving failover", &|r| r.failover.clone());
    line("RSS fw1 / fw2 at 10k states, kB (anonymous part)", &|r| {
        format!(
            "{} / {} ({} / {})",
            r.rss10k.0.0, r.rss10k.1.0, r.rss10k.0.1, r.rss10k.1.1
        )
    });
    line(
        "RSS fw1 / fw2 at 10k states of the whole HA stack, kB (tandem: its process; peer: conntrackd + keepalived)",
        &|r| format!("{} / {}", r.stack10k.0, r.stack10k.1),
    );
    line("RSS fw1 / fw2 at 100k states, kB (anonymous part)", &|r| {
        format!(
            "{} / {} ({} / {})",
            r.rss100k.0.0, r.rss100k.1.0, r.rss100k.0.1, r.rss100k.1.1
        )
    });
    for (elsewhere, r) in &kernel_rows {
        println!(
            "- kernel alone: {BULK_N} bench states created by one ctnetlink socket in an empty namespace, {}: {}",
            if *elsewhere {
                "another namespace listening for NEW events (as fw1's daemon in the lab)"
            } else {
                "no NEW listener anywhere (as on two separate boxes)"
            },
            match r {
                Ok(s) => format!("{s:.3} s"),
                Err(e) => format!("failed: {e:#}"),
            }
        );
    }
    for (imp, r) in &rows {
        for n in &r.notes {
            println!("- {imp}: {n}");
        }
    }
    println!(
        "conntrackd: lag and rate steps with DisableExternalCache On (peer states written to the kernel at once);"
    );
    println!("bulk, failover and RSS with the FT-FW external cache of peer-baseline.md.");
    Ok(())
}
