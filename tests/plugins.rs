//! Plugins in the lab: the event stream (every CARP transition, in order; calls back through the
//! control socket), misbehaving plugins (never reads stdin, exits at once, prints garbage, ignores
//! SIGTERM), gateway-monitor handing over a node whose gateway is unreachable, and
//! rc.carp_service_status.d scripts. Every test builds its own lab and tears it down on drop.

mod common;

use common::TempDir;
use common::labutil::*;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tandem::lab::{Lab, LabOptions, Node};

/// Write plugin `name` into `dir`: its manifest and one program file.
fn write_plugin(dir: &Path, name: &str, manifest: &str, file: &str, program: &str) {
    use std::os::unix::fs::PermissionsExt;
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("plugin.toml"), manifest).unwrap();
    let p = d.join(file);
    std::fs::write(&p, program).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Make the search path readable by the daemon (the temp dir is under /tmp, owned by root).
fn plugin_dir(tag: &str) -> TempDir {
    TempDir::new(tag)
}

/// Replace the `<tandem>` section of `fw`'s config with one enabling `plugins` (name, inner XML
/// of `<config>`), searching `paths` first; apply it.
fn enable(l: &Lab, fw: Node, paths: &[&Path], plugins: &[(&str, &str)]) {
    let cur = l.ctl(fw, "config.get", json!({})).unwrap();
    let mut xml = cur["xml"].as_str().unwrap().to_string();
    if let (Some(a), Some(b)) = (xml.find("<tandem>"), xml.find("</tandem>")) {
        xml.replace_range(a..b + "</tandem>".len(), "");
    }
    let mut sec = String::from("<tandem>\n    <plugins>\n");
    for p in paths {
        sec.push_str(&format!("      <path>{}</path>\n", p.display()));
    }
    for (name, cfg) in plugins {
        sec.push_str(&format!(
            "      <plugin><name>{name}</name><enabled>1</enabled><config>{cfg}</config></plugin>\n"
        ));
    }
    sec.push_str("    </plugins>\n  </tandem>\n");
    let at = xml.rfind("</opnsense>").unwrap();
    xml.insert_str(at, &sec);
    l.ctl(
        fw,
        "config.apply",
        json!({"xml": xml, "description": "enable test plugins"}),
    )
    .unwrap_or_else(|e| panic!("{fw}: config.apply: {e:#}\n{}", l.log_tail(fw, 30)));
}

fn list(l: &Lab, fw: Node) -> Value {
    l.ctl(fw, "plugins.list", json!({})).unwrap()
}

fn plugin(l: &Lab, fw: Node, name: &str) -> Value {
    list(l, fw)["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .cloned()
        .unwrap_or(Value::Null)
}

fn wait_running(l: &Lab, fw: Node, name: &str) {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(10) {
        if plugin(l, fw, name)["state"] == "running" {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "{fw}: plugin {name} not running: {}\n{}",
        list(l, fw),
        l.log_tail(fw, 30)
    );
}

fn state_file(l: &Lab, fw: Node, plugin: &str, file: &str) -> PathBuf {
    l.state_dir(fw).join("plugins").join(plugin).join(file)
}

fn lines(p: &Path) -> Vec<Value> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{p:?}: {l:?}: {e}")))
        .collect()
}

/// The carp.transition events a plugin logged, as (vhid, from, to).
fn transitions(events: &[Value]) -> Vec<(u64, String, String)> {
    events
        .iter()
        .filter(|e| e["event"] == "carp.transition")
        .map(|e| {
            (
                e["vhid"].as_u64().unwrap(),
                e["from"].as_str().unwrap().to_string(),
                e["to"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn carp_demotion(l: &Lab, fw: Node) -> Value {
    l.ctl(fw, "carp.status", json!({})).unwrap()
}

fn has_reason(st: &Value, name: &str) -> bool {
    st["reasons"]
        .as_array()
        .is_some_and(|a| a.iter().any(|r| r["name"] == name))
}

const EVT_TOML: &str = r#"
name = "evt"
version = "1"
description = "test: log every event, call carp.status on each transition"
command = ["python3", "evt.py"]
events = ["carp.transition", "link.changed"]
"#;

const EVT_PY: &str = r#"
import json, os, socket, sys
st = os.environ["TANDEM_PLUGIN_STATE"]
def call(method):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(os.environ["TANDEM_SOCKET"])
    s.sendall((json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": {}}) + "\n").encode())
    buf = b""
    while not buf.endswith(b"\n"):
        c = s.recv(65536)
        if not c:
            break
        buf += c
    s.close()
    return json.loads(buf)
for line in sys.stdin:
    with open(os.path.join(st, "events.jsonl"), "a") as f:
        f.write(line)
    ev = json.loads(line)
    if ev.get("event") == "carp.transition":
        r = call("carp.status")
        with open(os.path.join(st, "calls.jsonl"), "a") as f:
            f.write(json.dumps(r) + "\n")
"#;

const NOREAD_TOML: &str = r#"
name = "noread"
version = "1"
command = ["python3", "noread.py"]
events = ["carp.transition", "link.changed"]
"#;

/// Never reads stdin; shrinks its stdin pipe (F_SETPIPE_SZ) so it fills quickly.
const NOREAD_PY: &str = r#"
import fcntl, time
try:
    fcntl.fcntl(0, 1031, 4096)
except OSError:
    pass
while True:
    time.sleep(3600)
"#;

#[test]
fn plugin_gets_every_transition_in_order_and_a_stuck_plugin_blocks_nothing() {
    let l = lab("pe", default_opts());
    let dir = plugin_dir("pep");
    write_plugin(&dir.0, "evt", EVT_TOML, "evt.py", EVT_PY);
    write_plugin(&dir.0, "noread", NOREAD_TOML, "noread.py", NOREAD_PY);
    settled_pair(&l);
    // fw1 also runs the shipped carp-notify, logging to a file and running a command.
    let out = TempDir::new("peo");
    let notify_cfg = format!(
        "<log>{0}/carp.log</log><command>echo \"$CARP_SUBSYSTEM $CARP_FROM $CARP_TO\" &gt;&gt; {0}/cmd.log</command>",
        out.0.display()
    );
    for fw in Node::FIREWALLS {
        let mut on = vec![("evt", ""), ("noread", "")];
        if fw == Node::Fw1 {
            on.push(("carp-notify", notify_cfg.as_str()));
        }
        enable(&l, fw, &[&dir.0], &on);
        wait_running(&l, fw, "evt");
        wait_running(&l, fw, "noread");
    }
    wait_running(&l, Node::Fw1, "carp-notify");

    // Fill noread's queue: link flaps of the sync link (em2 carries no VHID).
    let flaps = l.node_dir(Node::Fw1).join("flaps.batch");
    std::fs::write(&flaps, "link set em2 down\nlink set em2 up\n".repeat(300)).unwrap();
    let t = Instant::now();
    loop {
        l.run(Node::Fw1, &["ip", "-batch", flaps.to_str().unwrap()])
            .unwrap();
        if plugin(&l, Node::Fw1, "noread")["dropped"].as_u64().unwrap() > 0 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "noread never dropped: {}",
            list(&l, Node::Fw1)
        );
    }
    // The node still answers at once, and CARP is undisturbed.
    let t = Instant::now();
    l.ctl(Node::Fw1, "carp.status", json!({})).unwrap();
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    assert!(all_in(&l, Node::Fw1, "MASTER", 2));

    // A planned failover and back.
    l.ctl(Node::Fw1, "carp.maintenance", json!({"enabled": true}))
        .unwrap();
    wait_all(&l, Node::Fw2, "MASTER", 2, Duration::from_secs(5));
    wait_all(&l, Node::Fw1, "BACKUP", 2, Duration::from_secs(5));
    l.ctl(Node::Fw1, "carp.maintenance", json!({"enabled": false}))
        .unwrap();
    wait_all(&l, Node::Fw1, "MASTER", 2, Duration::from_secs(6));
    wait_all(&l, Node::Fw2, "BACKUP", 2, Duration::from_secs(5));

    // Every transition reached evt, in order: per VHID MASTER->BACKUP then BACKUP->MASTER on
    // fw1, the mirror image on fw2; all of the first pair before any of the second.
    let expect = |fw: Node, a: &str, b: &str| {
        let path = state_file(&l, fw, "evt", "events.jsonl");
        let t = Instant::now();
        loop {
            let tr = transitions(&lines(&path));
            if tr.len() >= 4 || t.elapsed() > Duration::from_secs(10) {
                let mut first: Vec<(u64, String, String)> = tr.iter().take(2).cloned().collect();
                first.sort();
                let mut second: Vec<(u64, String, String)> = tr.iter().skip(2).cloned().collect();
                second.sort();
                let mk = |v: u64, f: &str, t: &str| (v, f.to_string(), t.to_string());
                assert_eq!(
                    first,
                    vec![mk(1, a, b), mk(3, a, b)],
                    "{fw}: transitions {tr:?}"
                );
                assert_eq!(
                    second,
                    vec![mk(1, b, a), mk(3, b, a)],
                    "{fw}: transitions {tr:?}"
                );
                return tr.len();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    assert_eq!(expect(Node::Fw1, "MASTER", "BACKUP"), 4);
    assert_eq!(expect(Node::Fw2, "BACKUP", "MASTER"), 4);

    // The plugin called carp.status through TANDEM_SOCKET once per transition.
    let calls = lines(&state_file(&l, Node::Fw1, "evt", "calls.jsonl"));
    assert_eq!(calls.len(), 4, "{calls:?}");
    for c in &calls {
        assert_eq!(
            c["result"]["vhids"].as_array().map(Vec::len),
            Some(2),
            "{c}"
        );
    }

    // carp-notify logged each transition and ran its command for each, in order.
    let mut notified = String::new();
    wait_for(
        "carp-notify ran its command 4 times",
        Duration::from_secs(10),
        || {
            notified = std::fs::read_to_string(out.0.join("cmd.log")).unwrap_or_default();
            notified.lines().count() >= 4
        },
    );
    let cmd: Vec<&str> = notified.lines().collect();
    let mut first = cmd[..2].to_vec();
    first.sort();
    let mut second = cmd[2..].to_vec();
    second.sort();
    assert_eq!(
        first,
        ["1@em1 MASTER BACKUP", "3@em0 MASTER BACKUP"],
        "{cmd:?}"
    );
    assert_eq!(
        second,
        ["1@em1 BACKUP MASTER", "3@em0 BACKUP MASTER"],
        "{cmd:?}"
    );
    let logged = std::fs::read_to_string(out.0.join("carp.log")).unwrap();
    assert_eq!(logged.lines().count(), 4, "{logged}");
    assert!(
        logged.lines().next().unwrap().contains("MASTER -> BACKUP"),
        "{logged}"
    );
    assert_eq!(plugin(&l, Node::Fw1, "carp-notify")["dropped"], 0);

    // evt lost nothing; noread dropped and still runs (nothing killed it, nothing waited on it).
    let evt = plugin(&l, Node::Fw1, "evt");
    let nr = plugin(&l, Node::Fw1, "noread");
    assert_eq!(evt["dropped"], 0, "{evt}");
    assert_eq!(nr["state"], "running", "{nr}");
    assert_eq!(nr["restarts"], 0, "{nr}");
    let logged = lines(&state_file(&l, Node::Fw1, "evt", "events.jsonl")).len() as u64;
    assert_eq!(evt["delivered"].as_u64().unwrap(), logged, "{evt}");
    assert!(
        logged >= nr["delivered"].as_u64().unwrap() + nr["dropped"].as_u64().unwrap(),
        "evt {evt} noread {nr}"
    );
    eprintln!(
        "evt delivered {logged}; noread delivered {} dropped {}",
        nr["delivered"], nr["dropped"]
    );
}

#[test]
fn crashing_garbage_and_sigterm_ignoring_plugins() {
    let l = lab("pm", default_opts());
    let dir = plugin_dir("pmp");
    write_plugin(
        &dir.0,
        "crasher",
        "name = \"crasher\"\nversion = \"1\"\ncommand = [\"sh\", \"crash.sh\"]\nevents = [\"*\"]\n",
        "crash.sh",
        "echo crashing >&2\nexit 3\n",
    );
    // Floods both streams with binary garbage and escape sequences, then idles.
    write_plugin(
        &dir.0,
        "garbage",
        "name = \"garbage\"\nversion = \"1\"\ncommand = [\"sh\", \"garbage.sh\"]\nevents = [\"*\"]\n",
        "garbage.sh",
        "head -c 3000000 /dev/urandom\nhead -c 1000000 /dev/urandom >&2\nprintf '\\033[2J\\033]0;pwned\\007\\n'\nexec sleep 100000\n",
    );
    write_plugin(
        &dir.0,
        "stubborn",
        "name = \"stubborn\"\nversion = \"1\"\ncommand = [\"sh\", \"stubborn.sh\"]\n",
        "stubborn.sh",
        "trap '' TERM\necho $$ > \"$TANDEM_PLUGIN_STATE/pid\"\nwhile :; do sleep 1; done\n",
    );
    // A bad manifest, and a plugin that is not installed: failed, with the reason.
    write_plugin(
        &dir.0,
        "broken",
        "name = \"broken\"\nversion = \"1\"\ncommand = []\n",
        "x",
        "",
    );
    settled_pair(&l);
    enable(
        &l,
        Node::Fw1,
        &[&dir.0],
        &[
            ("crasher", ""),
            ("garbage", ""),
            ("stubborn", ""),
            ("broken", ""),
            ("missing", ""),
        ],
    );
    wait_running(&l, Node::Fw1, "garbage");
    wait_running(&l, Node::Fw1, "stubborn");
    let b = plugin(&l, Node::Fw1, "broken");
    assert_eq!(b["state"], "failed", "{b}");
    assert!(
        b["last_error"]
            .as_str()
            .unwrap()
            .contains("command is empty"),
        "{b}"
    );
    let m = plugin(&l, Node::Fw1, "missing");
    assert_eq!(m["state"], "failed", "{m}");
    assert!(
        m["last_error"]
            .as_str()
            .unwrap()
            .contains("no missing/plugin.toml"),
        "{m}"
    );
    let err = l
        .ctl(Node::Fw1, "plugins.restart", json!({"name": "broken"}))
        .unwrap_err();
    assert!(format!("{err:#}").contains("command is empty"), "{err:#}");

    // crasher: restarted after 1 s, 2 s, 4 s, 8 s: each delay twice the one before. Measured
    // between observed increments of `restarts` (the first observation may be mid-delay).
    let t0 = Instant::now();
    let mut last: Option<u64> = None;
    let mut at: Vec<Instant> = Vec::new();
    while at.len() < 3 && t0.elapsed() < Duration::from_secs(25) {
        let r = plugin(&l, Node::Fw1, "crasher")["restarts"]
            .as_u64()
            .unwrap();
        if last.is_some_and(|n| n != r) {
            assert_eq!(Some(r), last.map(|n| n + 1), "one restart at a time");
            at.push(Instant::now());
        }
        last = Some(r);
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(at.len(), 3, "restarts seen at {at:?}");
    let gaps: Vec<f64> = at
        .windows(2)
        .map(|w| w[1].duration_since(w[0]).as_secs_f64())
        .collect();
    eprintln!("crasher restart gaps {gaps:?}");
    assert!((1.6..9.0).contains(&gaps[0]), "{gaps:?}");
    let ratio = gaps[1] / gaps[0];
    assert!((1.7..2.4).contains(&ratio), "{gaps:?}");
    let c = plugin(&l, Node::Fw1, "crasher");
    assert!(c["state"] == "backoff" || c["state"] == "running", "{c}");
    assert_eq!(c["last_exit"], "exit status: 3", "{c}");
    assert!(c["backoff_ms"].as_u64().unwrap() >= 8000, "{c}");
    // plugins.restart starts it now and resets the delay.
    let r = l
        .ctl(Node::Fw1, "plugins.restart", json!({"name": "crasher"}))
        .unwrap();
    assert_eq!(r["restarted"], "crasher");
    std::thread::sleep(Duration::from_millis(500));
    let c = plugin(&l, Node::Fw1, "crasher");
    assert_eq!(c["backoff_ms"], 2000, "{c}");
    assert!(
        l.ctl(Node::Fw1, "plugins.restart", json!({"name": "nosuch"}))
            .is_err()
    );

    // garbage: logged (escaped, rate limited) and ignored; it keeps running, the node answers.
    let g = plugin(&l, Node::Fw1, "garbage");
    assert_eq!(g["state"], "running", "{g}");
    assert_eq!(g["restarts"], 0, "{g}");
    assert!(g["garbage_lines"].as_u64().unwrap() > 0, "{g}");
    assert!(g["log_suppressed"].as_u64().unwrap() > 0, "{g}");
    let log = std::fs::read_to_string(l.log_path(Node::Fw1)).unwrap();
    assert!(
        log.contains("plugin wrote garbage"),
        "no garbage line logged"
    );
    assert!(
        !log.contains("\u{1b}]0;pwned"),
        "a raw escape sequence reached the log"
    );
    assert!(all_in(&l, Node::Fw1, "MASTER", 2));

    // Shutdown: stubborn ignores SIGTERM and is killed after 2 s; nothing lingers.
    let pid: i32 = std::fs::read_to_string(state_file(&l, Node::Fw1, "stubborn", "pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    let took = l
        .stop_node(Node::Fw1, nix::sys::signal::Signal::SIGTERM)
        .unwrap();
    assert!(took < Duration::from_secs(6), "stop took {took:?}");
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "stubborn plugin (pid {pid}) outlived the node"
    );
    let log = std::fs::read_to_string(l.log_path(Node::Fw1)).unwrap();
    assert!(
        log.contains("stopping plugin"),
        "{}",
        l.log_tail(Node::Fw1, 20)
    );
}

#[test]
fn gateway_monitor_hands_over_a_node_whose_gateway_is_unreachable() {
    let l = lab("pg", default_opts());
    settled_pair(&l);
    let cfg = "<down_after>3</down_after><up_after>2</up_after>";
    for fw in Node::FIREWALLS {
        enable(&l, fw, &[], &[("gateway-monitor", cfg)]);
        wait_running(&l, fw, "gateway-monitor");
    }
    // Both see the gateway (172.18.0.250, from config.get) up.
    for fw in Node::FIREWALLS {
        wait_for(
            &format!("{fw}: gateway up"),
            Duration::from_secs(10),
            || {
                std::fs::read_to_string(state_file(&l, fw, "gateway-monitor", "state.json"))
                    .is_ok_and(|s| s.contains("\"up\"") && s.contains("172.18.0.250"))
            },
        );
    }
    wait_for(
        "fw1: gateway-monitor health check passes",
        Duration::from_secs(10),
        || plugin(&l, Node::Fw1, "gateway-monitor")["health"]["ok"] == true,
    );

    // The server drops fw1's pings only; fw1's WAN link stays up.
    let table = format!("{}gw", l.prefix);
    let server = Node::Server;
    l.run(server, &["nft", "add", "table", "ip", &table])
        .unwrap();
    l.run(
        server,
        &[
            "nft",
            "add",
            "chain",
            "ip",
            &table,
            "in",
            "{ type filter hook input priority 0 ; }",
        ],
    )
    .unwrap();
    l.run(
        server,
        &[
            "nft",
            "add",
            "rule",
            "ip",
            &table,
            "in",
            "ip",
            "saddr",
            "172.18.0.101",
            "icmp",
            "type",
            "echo-request",
            "drop",
        ],
    )
    .unwrap();
    let t = Instant::now();
    wait_all(&l, Node::Fw2, "MASTER", 2, Duration::from_secs(15));
    eprintln!("gateway unreachable -> fw2 MASTER in {:?}", t.elapsed());
    wait_all(&l, Node::Fw1, "BACKUP", 2, Duration::from_secs(5));
    let st = carp_demotion(&l, Node::Fw1);
    assert!(has_reason(&st, "service"), "{st}");
    assert!(!has_reason(&carp_demotion(&l, Node::Fw2), "service"));
    assert!(
        l.run(Node::Fw1, &["ip", "link", "show", "em1"])
            .unwrap()
            .contains("state UP")
    );
    let gm = plugin(&l, Node::Fw1, "gateway-monitor");
    assert_eq!(gm["health"]["ok"], false, "{gm}");
    let log = std::fs::read_to_string(l.log_path(Node::Fw1)).unwrap();
    assert!(
        log.contains(
            "carp demoted by 1048576 due to service disruption (services: gateway-monitor)"
        ),
        "{}",
        l.log_tail(Node::Fw1, 30)
    );

    // Restore: fw1 recovers and takes both VHIDs back.
    l.run(server, &["nft", "delete", "table", "ip", &table])
        .unwrap();
    wait_all(&l, Node::Fw1, "MASTER", 2, Duration::from_secs(15));
    wait_all(&l, Node::Fw2, "BACKUP", 2, Duration::from_secs(5));
    assert!(!has_reason(&carp_demotion(&l, Node::Fw1), "service"));
    let log = std::fs::read_to_string(l.log_path(Node::Fw1)).unwrap();
    assert!(log.contains("carp promoted by 1048576 due to service recovery"));
}

#[test]
fn failing_service_status_script_fails_over_and_passing_restores() {
    let l = lab(
        "ps",
        LabOptions {
            boot: false,
            ..default_opts()
        },
    );
    let flag = TempDir::new("psf");
    let fail = flag.0.join("fail");
    let dir = l
        .state_dir(Node::Fw1)
        .join("upper/usr/local/etc/rc.carp_service_status.d");
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("50-test");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nif [ -e {} ]; then echo 'test service down'; exit 1; fi\nexit 0\n",
            fail.display()
        ),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    for fw in Node::FIREWALLS {
        l.start_node(fw).unwrap();
    }
    for fw in Node::FIREWALLS {
        l.wait_ready(fw, Duration::from_secs(15)).unwrap();
    }
    settled_pair(&l);
    wait_for("service check ran", Duration::from_secs(10), || {
        list(&l, Node::Fw1)["services"]
            .as_array()
            .is_some_and(|a| a.iter().any(|s| s["name"] == "50-test" && s["ok"] == true))
    });

    std::fs::write(&fail, "").unwrap();
    let t = Instant::now();
    wait_all(&l, Node::Fw2, "MASTER", 2, Duration::from_secs(15));
    eprintln!("service script failing -> fw2 MASTER in {:?}", t.elapsed());
    let st = carp_demotion(&l, Node::Fw1);
    assert!(has_reason(&st, "service"), "{st}");
    let svc = list(&l, Node::Fw1);
    assert_eq!(svc["service_demoted"], true, "{svc}");
    assert_eq!(svc["services"][0]["output"], "test service down", "{svc}");
    let log = std::fs::read_to_string(l.log_path(Node::Fw1)).unwrap();
    assert!(
        log.contains("carp demoted by 1048576 due to service disruption (services: 50-test)"),
        "{}",
        l.log_tail(Node::Fw1, 30)
    );

    std::fs::remove_file(&fail).unwrap();
    wait_all(&l, Node::Fw1, "MASTER", 2, Duration::from_secs(15));
    wait_all(&l, Node::Fw2, "BACKUP", 2, Duration::from_secs(5));
    assert!(!has_reason(&carp_demotion(&l, Node::Fw1), "service"));
    let log = std::fs::read_to_string(l.log_path(Node::Fw1)).unwrap();
    assert!(log.contains("carp promoted by 1048576 due to service recovery"));
}
