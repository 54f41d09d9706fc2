//! The how-to's test, scripted: CARP state of both nodes, pull the master's plug, measure.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use super::{Lab, Node};

/// (vhid, state) pairs of a node.
pub fn carp_states(lab: &Lab, fw: Node) -> Vec<(u64, String)> {
    let Ok(v) = lab.ctl(fw, "carp.status", json!({})) else {
        return Vec::new();
    };
    let mut out: Vec<(u64, String)> = v["vhids"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| {
                    (
                        x["vhid"].as_u64().unwrap_or(0),
                        x["state"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Wait until every VHID of `fw` is in `state`; the time it took.
pub fn wait_carp(lab: &Lab, fw: Node, state: &str, limit: Duration) -> anyhow::Result<Duration> {
    let t = Instant::now();
    loop {
        let s = carp_states(lab, fw);
        if !s.is_empty() && s.iter().all(|(_, st)| st == state) {
            return Ok(t.elapsed());
        }
        if t.elapsed() > limit {
            bail!("{fw}: VHIDs not all {state} after {limit:?}: {s:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn carp_summary(v: &Value) -> String {
    let mut out = format!(
        "demotion {} {}  maintenance {}  preempt {}\n",
        v["demotion"], v["reasons"], v["maintenance"], v["preempt"]
    );
    for x in v["vhids"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  vhid {:>3} {:<4} {:<4} {:<7} advbase {} advskew {:>3} (advertised {:>3})  vips {}\n",
            x["vhid"],
            x["interface"].as_str().unwrap_or(""),
            x["device"].as_str().unwrap_or(""),
            x["state"].as_str().unwrap_or(""),
            x["advbase"],
            x["advskew"],
            x["advertised_skew"],
            x["vips"]
        ));
    }
    out
}

/// ping every 10 ms from the client, timestamps on (-D).
pub fn start_probe(lab: &Lab, target: &str) -> anyhow::Result<Child> {
    Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.ns(Node::Client),
            "ping",
            "-n",
            "-D",
            "-i",
            "0.01",
            "-W",
            "1",
            target,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting ping in the client namespace")
}

/// Stop a probe; (sent, received, longest gap between replies).
pub fn stop_probe(child: Child) -> anyhow::Result<(u64, u64, Duration)> {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
    let out = child.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut stamps = Vec::new();
    for line in text.lines() {
        if line.contains("bytes from")
            && let Some(ts) = line
                .strip_prefix('[')
                .and_then(|l| l.split(']').next())
                .and_then(|t| t.parse::<f64>().ok())
        {
            stamps.push(ts);
        }
    }
    let gap = stamps
        .windows(2)
        .map(|w| w[1] - w[0])
        .fold(0.0f64, f64::max);
    let (mut sent, mut recv) = (0, 0);
    if let Some(l) = text.lines().find(|l| l.contains("packets transmitted")) {
        let n: Vec<u64> = l
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|w| w.parse().ok())
            .collect();
        sent = n.first().copied().unwrap_or(0);
        recv = n.get(1).copied().unwrap_or(0);
    }
    Ok((sent, recv, Duration::from_secs_f64(gap.max(0.0))))
}

const ECHO_SERVER: &str = include_str!("../../tests/scripts/echo_server.py");
const SESSIONS: &str = include_str!("../../tests/scripts/sessions.py");

fn states_for(lab: &Lab, fw: Node, filter: &str) -> anyhow::Result<Vec<Value>> {
    let v = lab.ctl(fw, "states.list", json!({"filter": filter}))?;
    Ok(v["states"].as_array().cloned().unwrap_or_default())
}

/// The how-to's test: CARP on both nodes, an interactive session through the VIP, the same state
/// on both nodes, pull the master's plug, the session keeps going; then plug it back.
pub fn carp_failover(lab: &Lab) -> anyhow::Result<()> {
    wait_carp(lab, Node::Fw1, "MASTER", Duration::from_secs(15))?;
    wait_carp(lab, Node::Fw2, "BACKUP", Duration::from_secs(5))?;
    for fw in Node::FIREWALLS {
        println!("== {fw} carp.status");
        println!("{}", carp_summary(&lab.ctl(fw, "carp.status", json!({}))?));
        let p = lab.ctl(fw, "pfsync.status", json!({}))?;
        println!(
            "   state sync: peer {} via {}, authenticated {}, {} states known\n",
            p["peer"], p["device"], p["authenticated"], p["states"]
        );
    }
    let server_py = lab.run_dir.join("echo_server.py");
    let sessions_py = lab.run_dir.join("sessions.py");
    std::fs::write(&server_py, ECHO_SERVER)?;
    std::fs::write(&sessions_py, SESSIONS)?;
    let mut server = Command::new("ip")
        .args(["netns", "exec", &lab.ns(Node::Server), "python3"])
        .arg(&server_py)
        .arg("7000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the echo server")?;
    std::thread::sleep(Duration::from_millis(300));
    println!(
        "The client opens an interactive TCP session to the server (172.18.0.250:7000) through the VIP:"
    );
    println!("one line every 100 ms, each echoed back and checked.");
    let session = Command::new("ip")
        .args(["netns", "exec", &lab.ns(Node::Client), "python3"])
        .arg(&sessions_py)
        .args(["172.18.0.250", "7000", "1", "12"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting the session")?;
    std::thread::sleep(Duration::from_secs(2));
    for fw in Node::FIREWALLS {
        println!("== {fw} states.list (the session)");
        for s in states_for(lab, fw, ":7000")? {
            println!(
                "  {} {}  reply {}  {}  {}  origin {}",
                s["proto"].as_str().unwrap_or(""),
                s["orig"].as_str().unwrap_or(""),
                s["reply"].as_str().unwrap_or(""),
                s["nat"].as_str().unwrap_or("no nat"),
                s["tcp_state"].as_str().unwrap_or(""),
                s["origin"].as_str().unwrap_or("")
            );
        }
    }
    let probe = start_probe(lab, "172.18.0.250")?;
    std::thread::sleep(Duration::from_millis(500));
    println!("\nPulling fw1's plug (em0 and em1 down)");
    lab.pull_plug(Node::Fw1)?;
    let took = wait_carp(lab, Node::Fw2, "MASTER", Duration::from_secs(10))?;
    let out = session.wait_with_output()?;
    let (sent, recv, gap) = stop_probe(probe)?;
    let _ = server.kill();
    let _ = server.wait();
    let result: Value = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or(Value::Null);
    println!(
        "fw2 is MASTER for every VHID {:.2} s after the plug was pulled (CARP bound 3·advbase + advskew/256 = 3.39 s)",
        took.as_secs_f64()
    );
    println!(
        "pings through the pair: {sent} sent, {recv} answered; longest gap {:.0} ms",
        gap.as_secs_f64() * 1000.0
    );
    if out.status.success() {
        println!(
            "the session kept going: {} lines, longest wait for an echo {:.2} s, 0 messages lost\n",
            result["lines"],
            result["maxgap_s"].as_f64().unwrap_or(0.0)
        );
    } else {
        println!("the session BROKE: {result}\n");
    }
    println!("Plugging fw1 back in: it preempts");
    lab.restore_plug(Node::Fw1)?;
    let back = wait_carp(lab, Node::Fw1, "MASTER", Duration::from_secs(15))?;
    println!("fw1 is MASTER again after {:.2} s\n", back.as_secs_f64());
    Ok(())
}
