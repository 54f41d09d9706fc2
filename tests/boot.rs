//! `tandem boot` in a network namespace: interfaces from config.xml, the control socket, config
//! apply/history, crash safety of config writes, and a clean SIGTERM.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::{Daemon, Netns, TempDir, flush_disk, repo_file};
use serde_json::{Value, json};

fn master() -> std::path::PathBuf {
    repo_file("etc/examples/carp-master.xml")
}

#[test]
fn boot_master_example_then_sigterm() {
    let ns = Netns::new("b", &["em0", "em1", "em2"]);
    let tmp = TempDir::new("bs");
    let mut d = Daemon::start(&ns, &tmp.0.join("state"), Some(&master()));
    let want = [
        ("em0", "192.168.1.10/24"),
        ("em1", "172.18.0.101/24"),
        ("em2", "10.0.0.1/24"),
    ];
    // Addresses are applied right after start; give the actors a moment.
    let t = std::time::Instant::now();
    while want
        .iter()
        .any(|(dev, a)| !ns.addrs(dev).contains(&a.to_string()))
        && t.elapsed() < Duration::from_secs(5)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    for (dev, a) in want {
        assert!(
            ns.addrs(dev).contains(&a.to_string()),
            "{dev} lacks {a}: {:?}",
            ns.addrs(dev)
        );
        assert!(ns.link_up(dev), "{dev} is not up");
    }
    let st = d.call("system.status", json!({}));
    assert_eq!(st["hostname"], "OPNsense");
    assert_eq!(st["config_revision"], 1);
    let list = d.call("interfaces.list", json!({}));
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 3);
    let lan = list.iter().find(|i| i["key"] == "lan").unwrap();
    assert_eq!(lan["device"], "em0");
    assert_eq!(lan["link"], "up");
    assert_eq!(lan["configured"], json!(["192.168.1.10/24"]));

    flush_disk();
    let (status, took) = d.stop(15);
    assert!(status.success(), "exit status {status:?}\n{}", d.log_text());
    assert!(
        took < Duration::from_secs(2),
        "SIGTERM took {took:?}\n{}",
        d.log_text()
    );
    assert!(!d.socket.exists(), "socket left behind");
}

/// Replace the first occurrence of `from` with `to` in the running config and apply it.
fn edit_and_apply(d: &Daemon, from: &str, to: &str) -> Result<Value, tandem::ctl::CtlError> {
    let cur = d.call("config.get", json!({}));
    let xml = cur["xml"].as_str().unwrap();
    assert!(xml.contains(from), "config has no {from:?}");
    let new = xml.replacen(from, to, 1);
    d.try_call(
        "config.apply",
        json!({"xml": new, "description": "test edit"}),
    )
}

#[test]
fn config_apply_changes_the_running_node_and_invalid_changes_nothing() {
    let ns = Netns::new("a", &["em0", "em1", "em2"]);
    let tmp = TempDir::new("as");
    let d = Daemon::start(&ns, &tmp.0.join("state"), Some(&master()));
    let r = edit_and_apply(
        &d,
        "<ipaddr>192.168.1.10</ipaddr>",
        "<ipaddr>192.168.1.11</ipaddr>",
    )
    .expect("apply");
    assert_eq!(r["revision"], 2);
    assert_eq!(r["sections"], json!(["interfaces"]));
    let t = std::time::Instant::now();
    while !ns.addrs("em0").contains(&"192.168.1.11/24".to_string())
        && t.elapsed() < Duration::from_secs(5)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let addrs = ns.addrs("em0");
    assert!(addrs.contains(&"192.168.1.11/24".to_string()), "{addrs:?}");
    assert!(
        !addrs.contains(&"192.168.1.10/24".to_string()),
        "old address kept: {addrs:?}"
    );
    let h = d.call("config.history", json!({}));
    let h = h.as_array().unwrap();
    assert_eq!(h.len(), 2);
    assert_eq!(h[0]["description"], "test edit");

    // Invalid: vhid out of range. Refused with findings, nothing changes.
    let before = d.call("config.get", json!({}));
    let err = edit_and_apply(&d, "<vhid>1</vhid>", "<vhid>300</vhid>").unwrap_err();
    match err {
        tandem::ctl::CtlError::Rpc {
            code,
            message,
            data,
        } => {
            assert_eq!(code, -32001, "{message}");
            assert!(
                data.unwrap()["findings"]
                    .as_array()
                    .is_some_and(|f| !f.is_empty())
            );
        }
        e => panic!("unexpected {e}"),
    }
    // Not even XML.
    let err = d
        .try_call("config.apply", json!({"xml": "<opnsense><broken>"}))
        .unwrap_err();
    assert!(
        matches!(err, tandem::ctl::CtlError::Rpc { code: -32001, .. }),
        "{err}"
    );
    let err = d.try_call("config.apply", json!({})).unwrap_err();
    assert!(
        matches!(err, tandem::ctl::CtlError::Rpc { code: -32602, .. }),
        "{err}"
    );
    let after = d.call("config.get", json!({}));
    assert_eq!(before["xml"], after["xml"]);
    assert_eq!(after["revision"], 2);
    assert_eq!(
        d.call("config.history", json!({}))
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert!(ns.addrs("em0").contains(&"192.168.1.11/24".to_string()));
}

#[test]
fn sigkill_during_config_apply_never_leaves_a_broken_config() {
    let ns = Netns::new("k", &["em0", "em1", "em2"]);
    let tmp = TempDir::new("ks");
    let state = tmp.0.join("state");
    let base = std::fs::read_to_string(master()).unwrap();
    let mut applied_seen = 0;
    for i in 0..50u32 {
        let mut d = Daemon::start(&ns, &state, Some(&master()));
        // Alternate between two valid configs so every apply is a real write.
        let xml = if i % 2 == 0 {
            base.replacen(
                "<hostname>OPNsense</hostname>",
                &format!("<hostname>fw{i}</hostname>"),
                1,
            )
        } else {
            base.clone()
        };
        let sock = d.socket.clone();
        let caller = std::thread::spawn(move || {
            tandem::ctl::call(
                &sock,
                "config.apply",
                json!({"xml": xml}),
                Duration::from_secs(5),
            )
        });
        std::thread::sleep(Duration::from_micros(u64::from(i % 10) * 700));
        let (st, _) = d.stop(9);
        assert!(!st.success());
        if caller.join().unwrap().is_ok() {
            applied_seen += 1;
        }
        let path = state.join("upper/conf/config.xml");
        let bytes = std::fs::read(&path).expect("config exists");
        let cfg = tandem::config::Config::parse(&bytes)
            .unwrap_or_else(|e| panic!("iteration {i}: config broken: {e}"));
        assert!(cfg.errors().is_empty(), "iteration {i}: {:?}", cfg.errors());
    }
    // Not a requirement, but the loop should have hit both sides of the write.
    eprintln!("applies answered before the kill: {applied_seen}/50");
}

fn line_call(s: &mut UnixStream, r: &mut BufReader<UnixStream>, line: &[u8]) -> Value {
    s.write_all(line).unwrap();
    s.write_all(b"\n").unwrap();
    let mut out = String::new();
    r.read_line(&mut out).unwrap();
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("bad reply {out:?}: {e}"))
}

#[test]
fn control_socket_answers_abuse_cleanly() {
    let ns = Netns::new("c", &["em0", "em1", "em2"]);
    let tmp = TempDir::new("cs");
    let d = Daemon::start(&ns, &tmp.0.join("state"), Some(&master()));
    let mut s = UnixStream::connect(&d.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());

    let v = line_call(&mut s, &mut r, b"{this is not json");
    assert_eq!(v["error"]["code"], -32700);
    let v = line_call(
        &mut s,
        &mut r,
        br#"{"jsonrpc":"2.0","id":2,"method":"no.such"}"#,
    );
    assert_eq!(v["error"]["code"], -32601);
    assert_eq!(v["id"], 2);
    let mut big = vec![b'x'; 2 << 20];
    big.splice(
        0..0,
        br#"{"jsonrpc":"2.0","id":3,"method":"system.status","params":{"pad":""#
            .iter()
            .copied(),
    );
    let v = line_call(&mut s, &mut r, &big);
    assert_eq!(v["error"]["code"], -32600, "{v}");
    // The same connection still works.
    let v = line_call(
        &mut s,
        &mut r,
        br#"{"jsonrpc":"2.0","id":4,"method":"system.status"}"#,
    );
    assert_eq!(v["id"], 4);
    assert!(v["result"]["version"].is_string());
    // Socket permissions.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&d.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    // 200 concurrent connections: each gets a result or a clean "busy" error.
    let mut conns = Vec::new();
    for _ in 0..200 {
        let c = UnixStream::connect(&d.socket).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        conns.push(c);
    }
    for c in conns.iter_mut() {
        let _ = c.write_all(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"system.status\"}\n");
    }
    let (mut ok, mut busy) = (0, 0);
    for c in conns {
        let mut line = String::new();
        BufReader::new(c).read_line(&mut line).unwrap();
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
        if v["result"].is_object() {
            ok += 1;
        } else {
            assert_eq!(v["error"]["code"], -32000, "{v}");
            busy += 1;
        }
    }
    assert_eq!(ok + busy, 200);
    assert!(ok >= 60, "only {ok} served");
    let st = d.call("system.status", json!({}));
    assert_eq!(st["control"]["refused_busy"], busy);
}
