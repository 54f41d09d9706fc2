//! Firewall rules and outbound NAT in the lab: LAN traffic leaves through the CARP VIP, a block
//! rule is enforced and lifted by config.apply, CARP survives the default-deny ruleset, and
//! configs whose rules cannot be rendered are refused with the rule's path.

mod common;

use std::process::Command;
use std::time::Duration;

use common::labutil::*;
use serde_json::json;
use tandem::lab::{Lab, Node};

/// Accept one TCP connection on the server and report the peer address it saw.
fn serve_once(l: &Lab, port: u16) -> std::process::Child {
    let code = format!(
        "import socket\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.bind(('172.18.0.250',{port})); s.listen(); s.settimeout(8)\n\
         c,a=s.accept(); print(a[0], flush=True); c.sendall(b'hi'); c.close()"
    );
    Command::new("ip")
        .args(["netns", "exec", &l.ns(Node::Server), "python3", "-c", &code])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Connect from the client; Ok(()) if the server answered.
fn connect(l: &Lab, port: u16) -> Result<(), String> {
    let code = format!(
        "import socket\ns=socket.create_connection(('172.18.0.250',{port}),timeout=2)\n\
         assert s.recv(2)==b'hi'"
    );
    let out = l
        .exec(Node::Client, &["python3", "-c", &code])
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn lan_leaves_through_the_vip_and_block_rules_apply() {
    let l = lab("n", default_opts());
    settled_pair(&l);
    // CARP kept electing under the default-deny ruleset, which is loaded on both.
    for fw in [Node::Fw1, Node::Fw2] {
        let f = l.ctl(fw, "filter.ruleset", json!({})).unwrap();
        assert!(f["loads"].as_u64().unwrap() >= 1, "{fw}: {f}");
        assert!(f["text"].as_str().unwrap().contains("policy drop"), "{fw}");
        let listed = l
            .run(fw, &["nft", "list", "table", "inet", "tandem_filter"])
            .unwrap();
        assert!(listed.contains("chain input"), "{listed}");
        assert_eq!(
            l.run(
                fw,
                &["sysctl", "-n", "net.netfilter.nf_conntrack_tcp_loose"]
            )
            .unwrap()
            .trim(),
            "0"
        );
    }
    // Identical NAT sections on both nodes: identical digests.
    let n1 = l.ctl(Node::Fw1, "nat.ruleset", json!({})).unwrap();
    let n2 = l.ctl(Node::Fw2, "nat.ruleset", json!({})).unwrap();
    assert_eq!(n1["sha256"], n2["sha256"]);
    assert_eq!(n1["sha256"].as_str().unwrap().len(), 64);

    // The client reaches the server, which sees the WAN VIP, not fw1's own address.
    let srv = serve_once(&l, 9000);
    std::thread::sleep(Duration::from_millis(300));
    connect(&l, 9000).expect("client -> server through the pair");
    let seen = String::from_utf8(srv.wait_with_output().unwrap().stdout).unwrap();
    assert_eq!(seen.trim(), "172.18.0.100");

    // A block rule on LAN for port 9001, first in the list.
    let cfg = l.ctl(Node::Fw1, "config.get", json!({})).unwrap();
    let orig = cfg["xml"].as_str().unwrap().to_string();
    let rule = "<filter>\n    <rule><type>block</type><interface>lan</interface><ipprotocol>inet</ipprotocol>\
        <protocol>tcp</protocol><source><any/></source><destination><any/><port>9001</port></destination>\
        <descr>block 9001</descr></rule>";
    assert!(orig.contains("<filter>"));
    let blocked = orig.replacen("<filter>", rule, 1);
    let r = l
        .ctl(Node::Fw1, "config.apply", json!({"xml": blocked}))
        .unwrap();
    assert_eq!(r["sections"], json!(["filter"]), "{r}");
    assert_eq!(
        r["reloaded"],
        json!(["filter"]),
        "only the filter table reloads: {r}"
    );
    let srv = serve_once(&l, 9001);
    std::thread::sleep(Duration::from_millis(300));
    assert!(connect(&l, 9001).is_err(), "port 9001 should be blocked");
    let srv2 = serve_once(&l, 9002);
    std::thread::sleep(Duration::from_millis(300));
    connect(&l, 9002).expect("other ports stay open");
    let _ = srv2.wait_with_output();
    // Lift it: the same server (still waiting) is reachable again.
    let r = l
        .ctl(Node::Fw1, "config.apply", json!({"xml": orig}))
        .unwrap();
    assert_eq!(r["reloaded"], json!(["filter"]), "{r}");
    connect(&l, 9001).expect("port 9001 open again");
    let _ = srv.wait_with_output();

    // A rule that cannot be rendered: refused, naming the rule, nothing changes.
    let bad = orig.replacen(
        "<filter>",
        "<filter>\n    <rule><type>pass</type><interface>lan</interface><protocol>icmp</protocol>\
         <source><any/></source><destination><any/><port>80</port></destination></rule>",
        1,
    );
    let err = l
        .ctl(Node::Fw1, "config.apply", json!({"xml": bad}))
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("filter/rule[1]"), "{msg}");
    let after = l.ctl(Node::Fw1, "config.get", json!({})).unwrap();
    assert_eq!(after["xml"].as_str().unwrap(), orig);
}

#[test]
fn tables_flushed_outside_tandem_are_put_back() {
    let l = lab("nf", default_opts());
    settled_pair(&l);
    let f0 = l.ctl(Node::Fw1, "filter.ruleset", json!({})).unwrap();
    let n0 = l.ctl(Node::Fw1, "nat.ruleset", json!({})).unwrap();
    assert_eq!(f0["repairs"], 0, "{f0}");
    // An admin's (or another tool's) `nft flush ruleset` on the master: unfiltered and
    // un-NATed until tandem notices.
    l.run(Node::Fw1, &["nft", "flush", "ruleset"]).unwrap();
    let tables = || {
        l.run(Node::Fw1, &["nft", "list", "tables"])
            .unwrap_or_default()
    };
    let took = wait_for(
        "filter and NAT tables back on fw1",
        Duration::from_secs(6),
        || {
            let t = tables();
            t.contains("inet tandem_filter") && t.contains("ip tandem_nat")
        },
    );
    eprintln!("filter and NAT tables back {took:?} after the flush");
    for (method, before) in [("filter.ruleset", &f0), ("nat.ruleset", &n0)] {
        let s = l.ctl(Node::Fw1, method, json!({})).unwrap();
        assert_eq!(s["repairs"], 1, "{method}: {s}");
        assert!(
            s["last_repair"].as_str().unwrap().contains("is missing"),
            "{method}: {s}"
        );
        // The same ruleset, not a new load from config.
        assert_eq!(s["sha256"], before["sha256"], "{method}");
        assert_eq!(s["loads"], before["loads"], "{method}");
    }
    assert!(
        l.log_tail(Node::Fw1, 200)
            .contains("ruleset is loaded again")
    );
    // NAT works again: a new connection leaves through the VIP.
    let srv = serve_once(&l, 9003);
    std::thread::sleep(Duration::from_millis(300));
    connect(&l, 9003).expect("client -> server after the repair");
    let seen = String::from_utf8(srv.wait_with_output().unwrap().stdout).unwrap();
    assert_eq!(seen.trim(), "172.18.0.100");
    // A rule slipped into tandem's filter table is taken out again.
    l.run(
        Node::Fw1,
        &[
            "nft",
            "insert",
            "rule",
            "inet",
            "tandem_filter",
            "forward",
            "accept",
        ],
    )
    .unwrap();
    wait_for("the foreign rule removed", Duration::from_secs(6), || {
        l.ctl(Node::Fw1, "filter.ruleset", json!({}))
            .is_ok_and(|s| s["repairs"] == 2)
    });
    let listed = l
        .run(
            Node::Fw1,
            &["nft", "list", "chain", "inet", "tandem_filter", "forward"],
        )
        .unwrap();
    let first_rule = listed
        .lines()
        .map(str::trim)
        .find(|l| {
            !l.is_empty()
                && !l.starts_with("table")
                && !l.starts_with("chain")
                && !l.starts_with("type")
        })
        .unwrap_or_default()
        .to_string();
    assert_ne!(first_rule, "accept", "{listed}");
    // The state sync's label table is put back too (checked at its refresh, every ~5 s).
    wait_for(
        "the label table back on fw1",
        Duration::from_secs(12),
        || tables().contains("inet tandem_pfsync"),
    );
    // A rule slipped into it is a change too: the table is loaded again (next refresh).
    let reloads = || {
        l.ctl(Node::Fw1, "pfsync.status", json!({}))
            .map(|s| s["kernel"]["label_table_reloads"].as_u64().unwrap_or(0))
            .unwrap_or(0)
    };
    wait_for(
        "the label table's reload counted",
        Duration::from_secs(3),
        || reloads() == 1,
    );
    l.run(
        Node::Fw1,
        &[
            "nft",
            "add",
            "rule",
            "inet",
            "tandem_pfsync",
            "peer_states",
            "accept",
        ],
    )
    .unwrap();
    wait_for(
        "the changed label table loaded again",
        Duration::from_secs(12),
        || reloads() == 2,
    );
    let listed = l
        .run(
            Node::Fw1,
            &["nft", "list", "table", "inet", "tandem_pfsync"],
        )
        .unwrap();
    assert!(!listed.contains("accept"), "{listed}");
}
