//! XML-RPC config sync in the lab: fw1 (master) pushes to fw2 (backup) after every config.apply,
//! with OPNsense's rewrite and merge rules; `ha.status` compares both nodes; the server refuses
//! bad credentials, XML bombs and huge bodies; Python's standard `xmlrpc.client` interoperates.

mod common;

use std::time::{Duration, Instant};

use common::labutil::*;
use serde_json::{Value, json};
use tandem::lab::{Lab, Node};

fn xml(l: &Lab, fw: Node) -> String {
    l.ctl(fw, "config.get", json!({})).unwrap()["xml"]
        .as_str()
        .unwrap()
        .to_string()
}

fn apply(l: &Lab, fw: Node, xml: &str) -> Value {
    l.ctl(fw, "config.apply", json!({"xml": xml}))
        .unwrap_or_else(|e| panic!("{fw}: config.apply: {e:#}\n{}", l.log_tail(fw, 30)))
}

fn revision(l: &Lab, fw: Node) -> i64 {
    l.ctl(fw, "system.status", json!({})).unwrap()["config_revision"]
        .as_i64()
        .unwrap()
}

fn ha_status(l: &Lab) -> Value {
    l.ctl(Node::Fw1, "ha.status", json!({})).unwrap()
}

/// Wait until fw2's config contains (or lacks) `needle`.
fn wait_fw2(l: &Lab, needle: &str, present: bool) {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(15) {
        if xml(l, Node::Fw2).contains(needle) == present {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "fw2: {needle:?} present={present} not reached\nfw1:\n{}\nfw2:\n{}",
        l.log_tail(Node::Fw1, 30),
        l.log_tail(Node::Fw2, 30)
    );
}

fn python(l: &Lab, fw: Node, code: &str) -> (bool, String, Duration) {
    let t = Instant::now();
    let out = l.exec(fw, &["python3", "-c", code]).unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        t.elapsed(),
    )
}

#[test]
fn master_pushes_to_backup_and_status_compares_both() {
    let l = lab("hs", default_opts());
    settled_pair(&l);

    // Same synced sections from the start (the examples differ only where the rewrite says).
    let st = ha_status(&l);
    assert_eq!(st["role"], "master", "{st}");
    assert_eq!(st["all_equal"], true, "{st:#}");
    assert_eq!(st["remote"]["hostname"], "OPNsense");
    assert_eq!(st["local"]["vhids"].as_array().unwrap().len(), 2);
    assert_eq!(st["remote"]["vhids"][0]["state"], "BACKUP", "{st:#}");
    assert!(st["warnings"].as_array().unwrap().is_empty(), "{st:#}");
    // Both nodes' state sync: running, and (once each has the other's bulk) failover-safe.
    let t = std::time::Instant::now();
    loop {
        let st = ha_status(&l);
        let safe = |side: &str| st[side]["state_sync"]["failover_safe"] == true;
        assert_eq!(st["remote"]["state_sync"]["enabled"], true, "{st:#}");
        if safe("local") && safe("remote") {
            assert!(
                st["local"]["state_sync"]["not_safe_because"] == json!([]),
                "{st:#}"
            );
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "never failover-safe: {st:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // By hand on fw2: an IP alias without a VHID (must survive syncs) and a drifted rule.
    let fw2_orig = xml(&l, Node::Fw2);
    let alias = "<virtualip>\n    <vip><mode>ipalias</mode><interface>lan</interface><subnet>192.168.1.50</subnet>\
        <subnet_bits>24</subnet_bits><descr>fw2 only alias</descr></vip>";
    let drifted = fw2_orig.replacen("<virtualip>", alias, 1).replacen(
        "Default allow LAN to any rule",
        "edited by hand on fw2",
        1,
    );
    apply(&l, Node::Fw2, &drifted);
    let st = ha_status(&l);
    assert_eq!(st["all_equal"], false, "{st:#}");
    assert_eq!(st["sections"]["filter"]["equal"], false, "{st:#}");
    assert_eq!(
        st["sections"]["virtualip"]["equal"], true,
        "a VHID-less alias is not part of the synced view: {st:#}"
    );
    assert!(
        st["warnings"].to_string().contains("filter"),
        "the drift is named: {st:#}"
    );

    // A block rule on fw1 only: fw2 gets it with no call on fw2.
    let fw2_rev = revision(&l, Node::Fw2);
    let orig = xml(&l, Node::Fw1);
    let rule = "<filter>\n    <rule><type>block</type><interface>lan</interface><ipprotocol>inet</ipprotocol>\
        <protocol>tcp</protocol><source><any/></source><destination><any/><port>9001</port></destination>\
        <descr>hasync block 9001</descr></rule>";
    let blocked = orig.replacen("<filter>", rule, 1);
    apply(&l, Node::Fw1, &blocked);
    wait_fw2(&l, "hasync block 9001", true);
    assert!(revision(&l, Node::Fw2) > fw2_rev);
    let hist = l
        .ctl(Node::Fw2, "config.history", json!({"limit": 1}))
        .unwrap();
    let d = hist[0]["description"].as_str().unwrap();
    assert!(
        d.starts_with("Merged ") && d.contains("filter") && d.ends_with("from XMLRPC client"),
        "{d}"
    );
    let fw2_xml = xml(&l, Node::Fw2);
    assert!(!fw2_xml.contains("edited by hand on fw2"), "drift repaired");
    assert!(fw2_xml.contains("fw2 only alias"), "VHID-less alias kept");
    assert!(fw2_xml.contains("<failover_peerip>192.168.1.10</failover_peerip>"));
    assert!(
        fw2_xml.contains("<hostname>OPNsense</hostname>")
            && fw2_xml.contains("<ipaddr>192.168.1.20</ipaddr>"),
        "interfaces and hostname stay fw2's own"
    );
    // The rule is loaded on fw2: its nft ruleset blocks tcp 9001 on the LAN device.
    // (The table reloads just after the commit.)
    wait_for("fw2 loads the block rule", Duration::from_secs(10), || {
        l.ctl(Node::Fw2, "filter.ruleset", json!({})).unwrap()["text"]
            .as_str()
            .unwrap()
            .contains("dport 9001")
    });
    // The push finishes (filter_configure) just after fw2 commits: wait for its record.
    let t = Instant::now();
    let st = loop {
        let st = ha_status(&l);
        if st["last_sync"]["result"] == "ok" || t.elapsed() > Duration::from_secs(10) {
            break st;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(st["last_sync"]["result"], "ok", "{st:#}");
    assert_eq!(st["all_equal"], true, "{st:#}");
    assert_eq!(st["sections"]["filter"]["equal"], true);
    // fw2's VHIDs run with advskew 100 and stay BACKUP.
    let carp2 = l.ctl(Node::Fw2, "carp.status", json!({})).unwrap();
    for v in carp2["vhids"].as_array().unwrap() {
        assert_eq!(v["advskew"], 100, "{carp2}");
    }

    // A third VIP on fw1 arrives on fw2 with advskew 100; deleting it removes it there.
    let cur = xml(&l, Node::Fw1);
    let vip5 = "<virtualip>\n    <vip><mode>carp</mode><interface>lan</interface><vhid>5</vhid><advskew>0</advskew>\
        <advbase>1</advbase><password>opnsense</password><descr>VIP five</descr>\
        <subnet_bits>24</subnet_bits><subnet>192.168.1.5</subnet></vip>";
    apply(&l, Node::Fw1, &cur.replacen("<virtualip>", vip5, 1));
    wait_fw2(&l, "VIP five", true);
    let t = Instant::now();
    loop {
        let c = l.ctl(Node::Fw2, "carp.status", json!({})).unwrap();
        let v5: Vec<&Value> = c["vhids"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v["vhid"] == 5)
            .collect();
        if v5.len() == 1 {
            assert_eq!(v5[0]["advskew"], 100, "{c}");
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "vhid 5 not on fw2: {c}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    apply(&l, Node::Fw1, &cur);
    wait_fw2(&l, "VIP five", false);
    let fw2_xml = xml(&l, Node::Fw2);
    assert!(
        fw2_xml.contains("fw2 only alias"),
        "VHID-less alias survives again"
    );
    assert!(fw2_xml.contains("hasync block 9001"));
    let st = ha_status(&l);
    assert_eq!(st["all_equal"], true, "{st:#}");

    // ha.sync by hand reports the sections.
    let r = l.ctl(Node::Fw1, "ha.sync", json!({})).unwrap();
    assert_eq!(r["result"], "ok");
    assert!(
        r["sections"]
            .as_array()
            .unwrap()
            .contains(&json!("virtualip"))
    );
    // verifypeer: fw2's self-signed certificate is no longer accepted, and nothing is sent.
    let fw2_rev = revision(&l, Node::Fw2);
    let strict = cur.replacen("<hasync>", "<hasync>\n    <verifypeer>1</verifypeer>", 1);
    apply(&l, Node::Fw1, &strict);
    let e = l.ctl(Node::Fw1, "ha.sync", json!({})).unwrap_err();
    assert!(format!("{e:#}").contains("certificate"), "{e:#}");
    assert_eq!(revision(&l, Node::Fw2), fw2_rev);
    let st = ha_status(&l);
    assert_eq!(st["last_sync"]["result"], "failed", "{st:#}");
    // Plain HTTP when the webgui says so: fw2 listens on port 80, fw1 pushes to http://.
    let fw2_now = xml(&l, Node::Fw2);
    assert!(fw2_now.contains("<protocol>https</protocol>"));
    apply(
        &l,
        Node::Fw2,
        &fw2_now.replacen("<protocol>https</protocol>", "<protocol>http</protocol>", 1),
    );
    let http = cur
        .replacen("<protocol>https</protocol>", "<protocol>http</protocol>", 1)
        .replacen("Default allow LAN to any rule", "pushed over http", 1);
    apply(&l, Node::Fw1, &http);
    wait_fw2(&l, "pushed over http", true);
    let r = l.ctl(Node::Fw1, "ha.sync", json!({})).unwrap();
    assert_eq!(r["target"], "http://10.0.0.2/xmlrpc.php", "{r}");
    let st = ha_status(&l);
    assert_eq!(st["all_equal"], true, "{st:#}");
    assert_eq!(st["remote"]["hostname"], "OPNsense");
    // On the backup there is nothing to push.
    let e = l.ctl(Node::Fw2, "ha.sync", json!({})).unwrap_err();
    assert!(format!("{e:#}").contains("synchronizetoip"), "{e:#}");
}

#[test]
fn server_refuses_bad_input_and_python_interoperates() {
    let l = lab("hx", default_opts());
    settled_pair(&l);
    let rev = revision(&l, Node::Fw2);
    let url = "https://10.0.0.2/xmlrpc.php";

    // Wrong password: refused after a delay, counted, nothing changed.
    let code = "import ssl, xmlrpc.client\n\
         p = xmlrpc.client.ServerProxy('https://root:wrong@10.0.0.2/xmlrpc.php', context=ssl._create_unverified_context())\n\
         r = p.opnsense.restore_config_section({'filter': {'rule': []}})\n\
         assert r == 'Authentication failed', r\n";
    let (ok, out, took) = python(&l, Node::Fw1, code);
    assert!(ok, "{out}");
    assert!(took >= Duration::from_millis(900), "{took:?}");
    assert_eq!(revision(&l, Node::Fw2), rev);
    let st = l.ctl(Node::Fw2, "ha.status", json!({})).unwrap();
    assert_eq!(st["server"]["stats"]["auth_failures"], 1, "{st:#}");
    assert_eq!(st["role"], "backup");

    // Billion laughs: refused at once, daemon fine.
    let bomb = "<?xml version=\"1.0\"?><!DOCTYPE lolz [<!ENTITY lol \"lol\">\
        <!ENTITY lol1 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\">\
        <!ENTITY lol2 \"&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;\">\
        <!ENTITY lol3 \"&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;\">\
        <!ENTITY lol9 \"&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;\">]>\
        <methodCall><methodName>opnsense.restore_config_section</methodName><params><param>\
        <value><struct><member><name>filter</name><value>&lol9;</value></member></struct></value>\
        </param></params></methodCall>";
    let code = format!(
        "import ssl, http.client, base64, time\n\
         h = {{'Content-Type': 'text/xml', 'Authorization': 'Basic ' + base64.b64encode(b'root:opnsense').decode()}}\n\
         def timed(body):\n    \
         c = http.client.HTTPSConnection('10.0.0.2', 443, context=ssl._create_unverified_context(), timeout=10); \
         t = time.time(); c.request('POST', '/xmlrpc.php', body=body, headers=h); \
         r = c.getresponse(); return r.status, r.read().decode(), time.time() - t\n\
         s0, b0, normal = timed('<methodCall><methodName>opnsense.firmware_version</methodName></methodCall>')\n\
         assert s0 == 200 and 'version' in b0, b0\n\
         s, b, took = timed({bomb:?})\n\
         assert s == 200 and 'faultCode' in b and 'DTD' in b, (s, b)\n\
         print('normal call', normal, 'bomb', took)\n\
         assert took < 2 * normal + 0.5, (took, normal)\n\
         c = http.client.HTTPSConnection('10.0.0.2', 443, context=ssl._create_unverified_context(), timeout=10)\n\
         t = time.time()\n\
         c.putrequest('POST', '/xmlrpc.php')\n\
         for k, v in h.items(): c.putheader(k, v)\n\
         c.putheader('Content-Length', str(100 * 1024 * 1024))\n\
         c.endheaders()\n\
         try:\n    c.send(b'<' * (1024 * 1024))\n\
         except OSError:\n    pass\n\
         def status(c):\n    \
         try: return c.getresponse().status\n    \
         except OSError: return 'reset'\n\
         st = status(c)\n\
         assert st in (413, 'reset'), st\n\
         assert time.time() - t < 2.0, time.time() - t\n\
         def chunks():\n    \
         for _ in range(17): yield b' ' * (1024 * 1024)\n\
         c = http.client.HTTPSConnection('10.0.0.2', 443, context=ssl._create_unverified_context(), timeout=20)\n\
         try:\n    \
         c.request('POST', '/xmlrpc.php', body=chunks(), headers=h, encode_chunked=True)\n\
         except OSError:\n    pass\n\
         st = status(c)\n\
         assert st in (413, 'reset'), st\n\
         print('ok')\n"
    );
    let (ok, out, _) = python(&l, Node::Fw1, &code);
    assert!(ok, "{out}");
    assert_eq!(revision(&l, Node::Fw2), rev);
    let st = l.ctl(Node::Fw2, "ha.status", json!({})).unwrap();
    assert_eq!(st["server"]["stats"]["dtd"], 1, "{st:#}");
    // Both oversized bodies were refused by the size check (the client may see a 413 or, as the
    // server closes without reading the rest, a reset).
    assert_eq!(st["server"]["stats"]["too_large"], 2, "{st:#}");
    l.ctl(Node::Fw2, "system.status", json!({})).unwrap();

    // Python's standard client: firmware_version, listMethods, an unknown method's fault, and
    // restore_config_section of a section fw1 does not sync (aliases).
    let code = format!(
        "import ssl, xmlrpc.client\n\
         p = xmlrpc.client.ServerProxy('https://root:opnsense@10.0.0.2/xmlrpc.php', context=ssl._create_unverified_context())\n\
         v = p.opnsense.firmware_version()\n\
         assert v['firmware']['version'] and v['base']['version'], v\n\
         assert 'opnsense.restore_config_section' in p.system.listMethods()\n\
         try:\n    p.opnsense.nope()\n    raise SystemExit('no fault')\n\
         except xmlrpc.client.Fault as f:\n    assert f.faultCode == -32601, f\n\
         r = p.opnsense.restore_config_section({{'aliases': {{'alias': [{{'name': 'pyalias', 'type': 'host', 'content': '10.9.9.9', 'descr': 'from python'}}]}}}})\n\
         assert r is True, r\n\
         assert p.opnsense.filter_configure() is True\n\
         print('ok', {url:?})\n"
    );
    let (ok, out, _) = python(&l, Node::Fw1, &code);
    assert!(ok, "{out}\n{}", l.log_tail(Node::Fw2, 30));
    let x = xml(&l, Node::Fw2);
    assert!(x.contains("<name>pyalias</name>"), "{x}");
    assert_eq!(revision(&l, Node::Fw2), rev + 1);
    let hist = l
        .ctl(Node::Fw2, "config.history", json!({"limit": 1}))
        .unwrap();
    assert_eq!(
        hist[0]["description"],
        "Merged aliases config sections from XMLRPC client"
    );
}
