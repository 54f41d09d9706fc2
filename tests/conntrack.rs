//! sys::conntrack against the kernel, each test in its own network namespace (needs root).
//! `conntrack -L` (conntrack-tools) is the independent reader the dumps are checked against.

use std::collections::{BTreeSet, VecDeque};
use std::future::Future;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tandem::sys::conntrack::codec::Writer;
use tandem::sys::conntrack::{
    Conntrack, Entry, Error, Event, Tuple, codec, decode_events, status_bits, subscribe, tcp_flag,
    tcp_state,
};

// ------------------------------------------------------------------ namespaces

struct Netns(String);

static NEXT: AtomicU32 = AtomicU32::new(0);

impl Netns {
    fn new(role: &str) -> Netns {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("ttct{}x{n}-{role}", std::process::id());
        run("ip", &["netns", "add", &name]);
        let ns = Netns(name);
        ns.exec("ip", &["link", "set", "lo", "up"]);
        // nf_nat and ctnetlink come with a ruleset that has a nat chain and ct matching.
        ns.nft(
            "table ip ttct {
               chain pre { type nat hook prerouting priority -100; }
               chain post { type nat hook postrouting priority 100; }
               chain in { type filter hook input priority 0; ct state established accept; }
             }",
        );
        ns
    }

    fn exec(&self, prog: &str, args: &[&str]) -> String {
        let mut a = vec!["netns", "exec", self.0.as_str(), prog];
        a.extend_from_slice(args);
        run("ip", &a)
    }

    fn nft(&self, ruleset: &str) {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.0, "nft", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("spawn nft");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(ruleset.as_bytes())
            .expect("write ruleset");
        assert!(child.wait().expect("nft").success(), "nft -f failed");
    }

    /// Runs `f` on a thread inside this namespace (sockets made there stay there).
    fn thread<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.0);
        std::thread::spawn(move || {
            let fd = std::fs::File::open(&path).expect("open netns");
            nix::sched::setns(fd.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    }

    /// Runs an async body on a current-thread runtime inside this namespace.
    fn block<T, Fut>(&self, f: impl FnOnce() -> Fut + Send + 'static) -> T
    where
        T: Send + 'static,
        Fut: Future<Output = T>,
    {
        self.thread(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                tokio::time::timeout(Duration::from_secs(30), f())
                    .await
                    .expect("test body timed out")
            })
        })
    }

    fn conntrack_l(&self, extra: &[&str]) -> Vec<CtLine> {
        let mut a = vec!["-L"];
        a.extend_from_slice(extra);
        let out = Command::new("ip")
            .args(["netns", "exec", &self.0, "conntrack"])
            .args(&a)
            .output()
            .expect("conntrack");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(CtLine::parse)
            .collect()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn run(prog: &str, args: &[&str]) -> String {
    let out = Command::new(prog).args(args).output().expect("spawn");
    assert!(
        out.status.success(),
        "{prog} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One line of `conntrack -L`, reduced to what we compare.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct CtLine {
    proto: u8,
    orig: Vec<(String, String)>,
    reply: Vec<(String, String)>,
    flags: BTreeSet<String>,
    mark: u32,
    state: Option<String>,
}

impl CtLine {
    fn parse(line: &str) -> Option<CtLine> {
        let toks: Vec<&str> = line.split_whitespace().collect();
        let proto: u8 = toks.get(1)?.parse().ok()?;
        let mut orig = Vec::new();
        let mut reply = Vec::new();
        let mut flags = BTreeSet::new();
        let mut mark = 0;
        let mut state = None;
        let mut srcs = 0;
        for t in &toks[3..] {
            if let Some((k, v)) = t.split_once('=') {
                match k {
                    "mark" => mark = v.parse().ok()?,
                    "use" | "zone" => {}
                    _ => {
                        if k == "src" {
                            srcs += 1;
                        }
                        let dst = if srcs <= 1 { &mut orig } else { &mut reply };
                        dst.push((k.to_string(), v.to_string()));
                    }
                }
            } else if t.starts_with('[') {
                flags.insert(t.trim_matches(|c| c == '[' || c == ']').to_string());
            } else {
                state = Some(t.to_string());
            }
        }
        Some(CtLine {
            proto,
            orig,
            reply,
            flags,
            mark,
            state,
        })
    }

    /// What `conntrack -L` would print for one of our entries.
    fn from_entry(e: &Entry) -> CtLine {
        fn tuple(t: &Tuple) -> Vec<(String, String)> {
            let mut v = vec![
                ("src".to_string(), t.src.to_string()),
                ("dst".to_string(), t.dst.to_string()),
            ];
            if t.proto == 1 || t.proto == 58 {
                v.push(("type".into(), t.icmp_type.to_string()));
                v.push(("code".into(), t.icmp_code.to_string()));
                v.push(("id".into(), t.icmp_id.to_string()));
            } else {
                v.push(("sport".into(), t.sport.to_string()));
                v.push(("dport".into(), t.dport.to_string()));
            }
            v
        }
        let mut flags = BTreeSet::new();
        if e.status & status_bits::SEEN_REPLY == 0 {
            flags.insert("UNREPLIED".to_string());
        }
        if e.status & status_bits::ASSURED != 0 {
            flags.insert("ASSURED".to_string());
        }
        let state = e.tcp_state.map(|s| {
            [
                "NONE",
                "SYN_SENT",
                "SYN_RECV",
                "ESTABLISHED",
                "FIN_WAIT",
                "CLOSE_WAIT",
                "LAST_ACK",
                "TIME_WAIT",
                "CLOSE",
                "SYN_SENT2",
            ][s as usize]
                .to_string()
        });
        CtLine {
            proto: e.orig.proto,
            orig: tuple(&e.orig),
            reply: tuple(&e.reply),
            flags,
            mark: e.mark,
            state,
        }
    }
}

// ------------------------------------------------------------------ entries

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

fn ports(proto: u8, src: &str, sport: u16, dst: &str, dport: u16) -> Tuple {
    Tuple {
        src: ip(src),
        dst: ip(dst),
        proto,
        sport,
        dport,
        ..Tuple::default()
    }
}

fn echo(proto: u8, src: &str, dst: &str, id: u16) -> Tuple {
    Tuple {
        src: ip(src),
        dst: ip(dst),
        proto,
        icmp_id: id,
        icmp_type: if proto == 1 { 8 } else { 128 },
        ..Tuple::default()
    }
}

fn entry(orig: Tuple) -> Entry {
    Entry {
        orig,
        reply: orig.inverse(),
        timeout: 300,
        ..Entry::default()
    }
}

fn tcp_established(orig: Tuple) -> Entry {
    Entry {
        status: status_bits::SEEN_REPLY | status_bits::ASSURED,
        tcp_state: Some(tcp_state::ESTABLISHED),
        tcp_flags: Some((0, 0)),
        timeout: 3600,
        ..entry(orig)
    }
}

fn snat_entry() -> Entry {
    let orig = ports(6, "192.168.1.100", 40000, "172.18.0.250", 22);
    let mut e = tcp_established(orig);
    e.reply.dst = ip("172.18.0.100");
    e
}

fn dnat_entry() -> Entry {
    let orig = ports(17, "10.9.0.7", 5353, "172.18.0.1", 8080);
    let mut e = entry(orig);
    e.reply.src = ip("192.168.1.10");
    e.reply.sport = 80;
    e
}

fn find<'a>(v: &'a [Entry], orig: &Tuple) -> &'a Entry {
    v.iter()
        .find(|e| &e.orig == orig)
        .unwrap_or_else(|| panic!("{orig:?} not in dump {v:#?}"))
}

fn sorted(mut v: Vec<CtLine>) -> Vec<CtLine> {
    v.sort();
    v
}

// ------------------------------------------------------------------ tests

#[test]
fn create_then_dump_agrees_with_conntrack_tool() {
    let ns = Netns::new("dump");
    let entries = vec![
        entry(ports(17, "10.0.0.1", 5000, "10.0.0.2", 53)),
        tcp_established(ports(6, "10.0.0.1", 40001, "10.0.0.2", 80)),
        entry(echo(1, "10.0.0.1", "10.0.0.3", 77)),
        tcp_established(ports(6, "fd00::1", 40002, "fd00::2", 443)),
        entry(echo(58, "fd00::1", "fd00::3", 78)),
        Entry {
            mark: 9,
            ..entry(ports(17, "fd00::1", 6000, "fd00::2", 123))
        },
    ];
    let want = entries.clone();
    let (dump, count) = ns.block(move || async move {
        let ct = Conntrack::open().expect("open");
        for e in &want {
            ct.create(e)
                .await
                .unwrap_or_else(|err| panic!("create {e:?}: {err}"));
        }
        (
            ct.dump().await.expect("dump"),
            ct.count().await.expect("count"),
        )
    });
    assert_eq!(dump.len(), entries.len(), "{dump:#?}");
    assert_eq!(count, entries.len());
    for e in &entries {
        let got = find(&dump, &e.orig);
        assert_eq!(got.reply, e.reply, "reply tuple of {:?}", e.orig);
        assert_eq!(got.mark, e.mark);
        assert_eq!(got.tcp_state, e.tcp_state);
        assert!(got.timeout > 0 && got.timeout <= e.timeout, "{got:?}");
        assert!(got.status & status_bits::CONFIRMED != 0);
        assert_eq!(
            got.status & status_bits::ASSURED,
            e.status & status_bits::ASSURED
        );
        assert_eq!(got.nat(), Default::default());
        assert!(got.id.is_some());
        if e.orig.proto == 6 {
            let (fo, fr) = got.tcp_flags.expect("tcp flags");
            assert!(
                fo & tcp_flag::BE_LIBERAL != 0 && fr & tcp_flag::BE_LIBERAL != 0,
                "{got:?}"
            );
        }
    }
    let tool = sorted(ns.conntrack_l(&[]));
    let ours = sorted(dump.iter().map(CtLine::from_entry).collect());
    assert_eq!(tool, ours);
}

#[test]
fn nat_entries_are_marked_and_rewritten_by_the_kernel() {
    let ns = Netns::new("nat");
    let (s, d) = (snat_entry(), dnat_entry());
    let (s2, d2) = (s.clone(), d.clone());
    let (dump, redump) = ns.block(move || async move {
        let ct = Conntrack::open().expect("open");
        ct.create(&s2).await.expect("create snat");
        ct.create(&d2).await.expect("create dnat");
        let dump = ct.dump().await.expect("dump");
        // What a sync peer does: take the dumped entries, delete, re-create from them.
        for e in &dump {
            ct.delete(&e.orig, e.zone).await.expect("delete");
        }
        assert_eq!(ct.count().await.expect("count"), 0);
        for r in ct.create_batch(&dump).await {
            r.expect("re-create");
        }
        (dump, ct.dump().await.expect("dump again"))
    });
    let gs = find(&dump, &s.orig);
    assert_eq!(gs.reply.dst, ip("172.18.0.100"));
    assert_eq!(gs.reply, s.reply);
    let want = status_bits::SRC_NAT | status_bits::SRC_NAT_DONE | status_bits::ASSURED;
    assert_eq!(gs.status & want, want, "status {:#x}", gs.status);
    assert_eq!(gs.status & status_bits::DST_NAT, 0);
    assert_eq!(gs.nat().snat, Some((ip("172.18.0.100"), None)));
    assert_eq!(gs.nat().dnat, None);

    let gd = find(&dump, &d.orig);
    assert_eq!(gd.reply, d.reply);
    assert!(
        gd.status & status_bits::DST_NAT != 0,
        "status {:#x}",
        gd.status
    );
    assert_eq!(gd.status & status_bits::SRC_NAT, 0);
    assert_eq!(gd.nat().dnat, Some((ip("192.168.1.10"), Some(80))));
    assert_eq!(gd.nat().snat, None);

    for e in &dump {
        let again = find(&redump, &e.orig);
        assert_eq!((again.reply, again.status), (e.reply, e.status));
    }

    let snat_lines = ns.conntrack_l(&["--src-nat"]);
    assert_eq!(snat_lines.len(), 1, "{snat_lines:?}");
    let l = &snat_lines[0];
    assert!(
        l.reply.contains(&("dst".into(), "172.18.0.100".into())),
        "{l:?}"
    );
    assert!(
        l.reply.contains(&("src".into(), "172.18.0.250".into())),
        "{l:?}"
    );
    assert!(l.flags.contains("ASSURED"), "{l:?}");
    assert_eq!(l.state.as_deref(), Some("ESTABLISHED"));
    let dnat_lines = ns.conntrack_l(&["--dst-nat"]);
    assert_eq!(dnat_lines.len(), 1, "{dnat_lines:?}");
    let l = &dnat_lines[0];
    assert!(
        l.reply.contains(&("src".into(), "192.168.1.10".into())),
        "{l:?}"
    );
    assert!(l.reply.contains(&("sport".into(), "80".into())), "{l:?}");
    assert!(l.flags.contains("UNREPLIED"), "{l:?}");
}

#[test]
fn update_upsert_delete() {
    let ns = Netns::new("upd");
    ns.block(|| async {
        let ct = Conntrack::open().expect("open");
        let mut e = tcp_established(ports(6, "10.0.0.1", 40100, "10.0.0.2", 22));
        e.tcp_state = Some(tcp_state::SYN_RECV);
        e.status = 0;
        ct.create(&e).await.expect("create");
        let err = ct.create(&e).await.expect_err("second create must fail");
        assert_eq!(err.errno(), Some(libc::EEXIST), "{err}");
        assert!(err.to_string().contains("EEXIST"), "{err}");

        e.timeout = 1000;
        e.mark = 42;
        e.tcp_state = Some(tcp_state::ESTABLISHED);
        e.status = status_bits::SEEN_REPLY | status_bits::ASSURED;
        ct.update(&e).await.expect("update");
        let got = ct.dump().await.expect("dump").pop().expect("one entry");
        assert_eq!(got.mark, 42);
        assert!((990..=1000).contains(&got.timeout), "{got:?}");
        assert_eq!(got.tcp_state, Some(tcp_state::ESTABLISHED));
        assert!(got.status & status_bits::ASSURED != 0);

        e.mark = 43;
        ct.upsert(&e).await.expect("upsert existing");
        ct.upsert(&e).await.expect("upsert again");
        let other = entry(ports(17, "10.0.0.1", 1, "10.0.0.2", 2));
        ct.upsert(&other).await.expect("upsert new");
        let dump = ct.dump().await.expect("dump");
        assert_eq!(dump.len(), 2);
        assert_eq!(find(&dump, &e.orig).mark, 43);

        let missing = entry(ports(17, "10.0.0.9", 1, "10.0.0.2", 2));
        let err = ct
            .update(&missing)
            .await
            .expect_err("update of a missing entry");
        assert_eq!(err.errno(), Some(libc::ENOENT));

        // A batch reports each request's own result, failures in the middle included.
        let a = entry(ports(17, "10.0.0.5", 1, "10.0.0.6", 2));
        let b = entry(ports(17, "10.0.0.5", 3, "10.0.0.6", 4));
        let res = ct
            .create_batch(&[a.clone(), a.clone(), e.clone(), b.clone()])
            .await;
        let errnos: Vec<_> = res
            .iter()
            .map(|r| r.as_ref().err().and_then(Error::errno))
            .collect();
        assert_eq!(errnos, [None, Some(libc::EEXIST), Some(libc::EEXIST), None]);
        let res = ct.delete_batch(&[a.key(), b.key(), b.key()]).await;
        assert!(res.iter().all(|r| r.is_ok()), "{res:?}");

        ct.delete(&e.orig, 0).await.expect("delete");
        ct.delete(&e.orig, 0)
            .await
            .expect("delete of a missing entry is ok");
        let dump = ct.dump().await.expect("dump");
        assert_eq!(dump.len(), 1);
        assert_eq!(dump[0].orig, other.orig);
        assert_eq!(ct.count().await.expect("count"), 1);
    });
}

#[test]
fn events_new_update_destroy() {
    let ns = Netns::new("ev");
    ns.block(|| async {
        let mut events = subscribe().expect("subscribe");
        let ct = Conntrack::open().expect("open");
        let mut e = snat_entry();
        ct.create(&e).await.expect("create");
        e.mark = 5;
        ct.update(&e).await.expect("update");
        ct.delete(&e.orig, 0).await.expect("delete");

        let mut next = async || {
            tokio::time::timeout(Duration::from_secs(5), events.next())
                .await
                .expect("event in time")
                .expect("stream open")
        };
        match next().await {
            Event::New(n) => {
                assert_eq!(n.orig, e.orig);
                assert_eq!(n.reply.dst, ip("172.18.0.100"));
                assert!(n.status & status_bits::SRC_NAT != 0);
            }
            other => panic!("want New, got {other:?}"),
        }
        // The update may arrive as one or more UPDATE events; the last carries the mark.
        let mut saw_update = false;
        loop {
            match next().await {
                Event::Update(u) => {
                    assert_eq!(u.orig, e.orig);
                    saw_update |= u.mark == 5;
                }
                Event::Destroy(d) => {
                    assert_eq!(d.orig, e.orig);
                    assert_eq!(d.reply.dst, ip("172.18.0.100"));
                    break;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(saw_update, "no UPDATE with the new mark");
        assert_eq!(events.decode_errors(), 0);

        // Events caused by a port we ignore are dropped; the kernel's own (pid 0) are not.
        let mut quiet = subscribe().expect("subscribe");
        quiet.ignore_portid(ct.portid());
        ct.create(&entry(ports(17, "10.0.0.1", 7, "10.0.0.2", 7)))
            .await
            .expect("create");
        let none = tokio::time::timeout(Duration::from_millis(300), quiet.next()).await;
        assert!(none.is_err(), "event from an ignored port: {none:?}");
        // Another port's request is seen; the ignored one before it never reached user space
        // (the kernel-side filter dropped it: events are delivered in order).
        let other = Conntrack::open().expect("second socket");
        let seen = entry(ports(17, "10.0.0.3", 7, "10.0.0.4", 7));
        other.create(&seen).await.expect("create");
        match tokio::time::timeout(Duration::from_secs(2), quiet.next()).await {
            Ok(Some(Event::New(e))) => assert_eq!(e.orig, seen.orig),
            other => panic!("want the other port's New, got {other:?}"),
        }
        assert_eq!(
            quiet.ignored_in_user_space(),
            0,
            "the ignored port's event reached user space: kernel filter missing"
        );
    });
}

#[test]
fn new_events_switch_off_and_on() {
    let ns = Netns::new("nw");
    ns.block(|| async {
        let mut events = subscribe().expect("subscribe");
        let switch = events.new_events();
        let ct = Conntrack::open().expect("open");
        let mut next = async || {
            tokio::time::timeout(Duration::from_secs(2), events.next())
                .await
                .ok()
                .flatten()
        };
        switch.set(false).expect("NEW off");
        let quiet = entry(ports(17, "10.0.0.1", 1000, "10.0.0.2", 53));
        ct.create(&quiet).await.expect("create");
        // No NEW for it; its removal still comes as DESTROY (that group stays on).
        ct.delete(&quiet.orig, 0).await.expect("delete");
        match next().await {
            Some(Event::Destroy(d)) => assert_eq!(d.orig, quiet.orig),
            other => panic!("want only the DESTROY while NEW is off, got {other:?}"),
        }
        switch.set(true).expect("NEW on");
        let seen = entry(ports(17, "10.0.0.1", 1001, "10.0.0.2", 53));
        ct.create(&seen).await.expect("create");
        match next().await {
            Some(Event::New(n)) => assert_eq!(n.orig, seen.orig),
            other => panic!("want NEW once it is on again, got {other:?}"),
        }
    });
}

/// Labels: silently dropped while no rule uses `ct label` (the kernel gives entries no room for
/// them); kept once the state sync's label table is loaded (read back by a dump, left alone by
/// an update and by reloading the table).
#[test]
fn labels_are_kept_once_the_label_table_is_loaded() {
    let ns = Netns::new("lbl");
    // A label rule in another namespace changes nothing here (the kernel counts per namespace).
    let other = Netns::new("lbo");
    other.block(|| async {
        tandem::sys::nft::load(&tandem::proto::nft::pfsync_labels()).expect("label table loads");
    });
    let peer = 1u128 << tandem::proto::nft::PEER_LABEL_BIT;
    ns.block(move || async move {
        let ct = Conntrack::open().expect("open");
        let early = Entry {
            labels: peer,
            ..tcp_established(ports(6, "10.0.0.1", 40001, "10.0.0.2", 22))
        };
        ct.create(&early)
            .await
            .expect("create without a label rule");
        tandem::sys::nft::load(&tandem::proto::nft::pfsync_labels()).expect("label table loads");
        let labeled = Entry {
            labels: peer,
            ..tcp_established(ports(6, "10.0.0.1", 40002, "10.0.0.2", 22))
        };
        ct.create(&labeled).await.expect("create with the label");
        // Loading the table again (a restart) keeps the labels usable.
        tandem::sys::nft::load(&tandem::proto::nft::pfsync_labels()).expect("reload");
        ct.update(&Entry {
            timeout: 1200,
            ..labeled.clone()
        })
        .await
        .expect("update");
        let dump = ct.dump().await.expect("dump");
        assert_eq!(find(&dump, &labeled.orig).labels, peer);
        assert_eq!(find(&dump, &early.orig).labels, 0);
    });
}

#[test]
fn malformed_messages_error_and_never_panic() {
    let mut w = Writer::new();
    w.create(&snat_entry(), 1);
    w.create(&tcp_established(ports(6, "fd00::1", 1, "fd00::2", 2)), 2);
    w.create(
        &Entry {
            labels: 1 << 127 | 5,
            ..entry(ports(17, "10.0.0.1", 1, "10.0.0.2", 2))
        },
        3,
    );
    let buf = w.buf.clone();
    // The whole buffer decodes (a create message has the same attribute layout as an event).
    let mut out = VecDeque::new();
    assert_eq!(decode_events(&buf, None, &mut out), 0);
    assert_eq!(out.len(), 3);
    match &out[2] {
        Event::New(e) => assert_eq!(e.labels, 1 << 127 | 5),
        other => panic!("{other:?}"),
    }
    // A labels attribute of a length the kernel never sends is an error.
    let third = codec::messages(&buf)
        .nth(2)
        .expect("msg")
        .expect("ok")
        .payload;
    let at = third
        .windows(4)
        .position(|w| w == [20, 0, 22, 0])
        .expect("CTA_LABELS, 16 bytes");
    let mut odd = third.to_vec();
    odd[at] = 19; // 15 bytes
    assert!(codec::parse_entry(&odd).is_err());
    let first = codec::messages(&buf).next().expect("msg").expect("ok");
    let payload = first.payload;
    let e = codec::parse_entry(payload).expect("full payload decodes");
    assert_eq!(e.orig, snat_entry().orig);
    // Every truncation of the attribute area inside an attribute is an error, none panics.
    let mut errors = 0;
    for cut in 0..payload.len() {
        if codec::parse_entry(&payload[..cut]).is_err() {
            errors += 1;
        }
    }
    assert!(
        errors > payload.len() * 3 / 4,
        "{errors} of {}",
        payload.len()
    );
    // Corrupt attribute lengths.
    for i in 4..payload.len() {
        let mut p = payload.to_vec();
        p[i] = 0xff;
        let _ = codec::parse_entry(&p);
        p[i] = 0x01;
        let _ = codec::parse_entry(&p);
    }
    // Truncated datagrams count as decode errors.
    let mut bad = 0;
    for cut in 1..buf.len() {
        let mut out = VecDeque::new();
        bad += decode_events(&buf[..cut], None, &mut out);
    }
    assert!(bad > 0);
    let e = Error::Netlink {
        code: libc::ENOENT,
        op: "delete",
    };
    assert_eq!(
        e.to_string(),
        "ctnetlink delete: ENOENT (No such file or directory)"
    );
}

/// An `NFT_MSG_NEWGEN` answer as the kernel sends it: nlmsghdr, nfgenmsg, NFTA_GEN_ID
/// (big-endian), NFTA_GEN_PROC_PID, NFTA_GEN_PROC_NAME.
fn newgen(id: u32) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&0u32.to_ne_bytes());
    b.extend_from_slice(&codec::MSG_NFT_NEWGEN.to_ne_bytes());
    b.extend_from_slice(&0u16.to_ne_bytes());
    b.extend_from_slice(&7u32.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes());
    b.extend_from_slice(&[0, 0, 0, 0]);
    for (ty, p) in [
        (1u16, id.to_be_bytes().to_vec()),
        (2, 42u32.to_be_bytes().to_vec()),
        (3, b"nft\0".to_vec()),
    ] {
        b.extend_from_slice(&((4 + p.len()) as u16).to_ne_bytes());
        b.extend_from_slice(&ty.to_ne_bytes());
        b.extend_from_slice(&p);
        while b.len() % 4 != 0 {
            b.push(0);
        }
    }
    let len = b.len() as u32;
    b[..4].copy_from_slice(&len.to_ne_bytes());
    b
}

#[test]
fn the_ruleset_generation_is_decoded_and_malformed_answers_are_errors() {
    assert_eq!(
        codec::parse_generation(&newgen(0x0102_0304)).unwrap(),
        0x0102_0304
    );
    // Every truncation is an error, never a panic or a wrong number.
    let full = newgen(9);
    for cut in 0..full.len() {
        let mut b = full[..cut].to_vec();
        if b.len() >= 4 {
            // Keep the header's length consistent with what is left.
            let len = b.len() as u32;
            b[..4].copy_from_slice(&len.to_ne_bytes());
        }
        if let Ok(g) = codec::parse_generation(&b) {
            assert_eq!(g, 9, "a cut at {cut} gave another generation");
            assert!(cut >= 16 + 4 + 8, "a cut at {cut} decoded");
        }
    }
    // No generation attribute; an id of the wrong size; a kernel error.
    let mut b = newgen(9);
    b[20 + 2..20 + 4].copy_from_slice(&5u16.to_ne_bytes());
    assert!(codec::parse_generation(&b).is_err());
    let mut b = newgen(9);
    b[20..22].copy_from_slice(&6u16.to_ne_bytes());
    assert!(codec::parse_generation(&b).is_err());
    let mut err = Vec::new();
    err.extend_from_slice(&36u32.to_ne_bytes());
    err.extend_from_slice(&codec::NLMSG_ERROR.to_ne_bytes());
    err.extend_from_slice(&[0; 10]);
    err.extend_from_slice(&(-libc::EPERM).to_ne_bytes());
    err.extend_from_slice(&[0; 16]);
    match codec::parse_generation(&err) {
        Err(tandem::sys::conntrack::Error::Netlink { code, .. }) => assert_eq!(code, libc::EPERM),
        other => panic!("want EPERM, got {other:?}"),
    }
    assert!(codec::parse_generation(&[]).is_err());
}

proptest::proptest! {
    #[test]
    fn random_bytes_never_panic_the_decoders(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
        let _ = codec::parse_entry(&bytes);
        let _ = codec::parse_count(&bytes);
        let _ = codec::parse_generation(&bytes);
        let mut out = VecDeque::new();
        let _ = decode_events(&bytes, None, &mut out);
    }
}

#[test]
fn handles_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send + Unpin>() {}
    send_sync::<Conntrack>();
    send::<tandem::sys::conntrack::EventStream>();
}

/// `n` TCP entries, half of them SNAT'd, with distinct original tuples.
fn many(n: u32) -> Vec<Entry> {
    (0..n)
        .map(|i| {
            let mut e = tcp_established(ports(
                6,
                &format!("10.{}.{}.{}", 1 + i / 65536, (i / 256) % 256, i % 256),
                (1024 + i % 60000) as u16,
                "172.18.0.250",
                22,
            ));
            if i % 2 == 0 {
                e.reply.dst = ip("172.18.0.100");
            }
            e
        })
        .collect()
}

/// Creates, dumps, upserts and deletes `n` entries, printing the rates (no speed assertion).
fn batch_rates(n: u32) {
    let ns = Netns::new("bench");
    ns.block(move || async move {
        let ct = Conntrack::open().expect("open");
        let entries = many(n);
        let t = Instant::now();
        let res = ct.create_batch(&entries).await;
        let dt = t.elapsed();
        let failed: Vec<_> = res.iter().filter(|r| r.is_err()).collect();
        assert!(
            failed.is_empty(),
            "{} failed, first {:?}",
            failed.len(),
            failed.first()
        );
        println!(
            "create_batch: {n} entries (half SNAT) in {dt:?} = {:.0} entries/s",
            f64::from(n) / dt.as_secs_f64()
        );
        assert_eq!(ct.count().await.expect("count"), n as usize);
        let t = Instant::now();
        let dump = ct.dump().await.expect("dump");
        println!("dump: {} entries in {:?}", dump.len(), t.elapsed());
        assert_eq!(dump.len(), n as usize);
        let t = Instant::now();
        let res = ct.upsert_batch(&entries).await;
        assert!(res.iter().all(|r| r.is_ok()));
        println!("upsert_batch (all existing): {:?}", t.elapsed());
        let keys: Vec<_> = entries.iter().map(Entry::key).collect();
        let t = Instant::now();
        assert!(ct.delete_batch(&keys).await.iter().all(|r| r.is_ok()));
        println!("delete_batch: {:?}", t.elapsed());
        assert_eq!(ct.count().await.expect("count"), 0);
    });
}

#[test]
fn batch_create_rate_10k() {
    batch_rates(10_000);
}

/// The benchmark's size; run with `--release --ignored --nocapture`.
#[test]
#[ignore]
fn batch_create_rate_100k() {
    batch_rates(100_000);
}

// ------------------------------------------------------------------ a real forwarded flow

fn roundtrip(
    reader: &mut BufReader<TcpStream>,
    writer: &mut TcpStream,
    msg: &str,
    wait: Duration,
) -> Option<String> {
    reader
        .get_ref()
        .set_read_timeout(Some(wait))
        .expect("timeout");
    if !msg.is_empty() {
        writer.write_all(msg.as_bytes()).expect("write");
    }
    let mut line = String::new();
    match reader.read_line(&mut line) {
        Ok(n) if n > 0 => Some(line),
        _ => None,
    }
}

fn sysctl(ns: &Netns, kv: &str) {
    ns.exec("sysctl", &["-qw", kv]);
}

#[test]
fn forwarded_tcp_flow_survives_reinjection_with_nat() {
    let client = Netns::new("cli");
    let router = Netns::new("rtr");
    let server = Netns::new("srv");
    run(
        "ip",
        &[
            "link", "add", "c0", "netns", &client.0, "type", "veth", "peer", "name", "rc", "netns",
            &router.0,
        ],
    );
    run(
        "ip",
        &[
            "link", "add", "s0", "netns", &server.0, "type", "veth", "peer", "name", "rs", "netns",
            &router.0,
        ],
    );
    for (ns, dev, addr) in [
        (&client, "c0", "10.71.1.2/24"),
        (&router, "rc", "10.71.1.1/24"),
        (&router, "rs", "10.71.2.1/24"),
        (&server, "s0", "10.71.2.2/24"),
    ] {
        ns.exec("ip", &["addr", "add", addr, "dev", dev]);
        ns.exec("ip", &["link", "set", dev, "up"]);
    }
    client.exec("ip", &["route", "add", "default", "via", "10.71.1.1"]);
    // The server has no route back to the client net: only the SNAT makes replies work.
    sysctl(&router, "net.ipv4.ip_forward=1");
    sysctl(&router, "net.netfilter.nf_conntrack_tcp_loose=0");
    router.nft(
        "table inet fw {
           chain forwarding { type filter hook forward priority 0; policy drop;
             ct state established,related accept
             ct state new tcp flags & (syn|ack) == syn iifname \"rc\" accept
           }
         }
         table ip nat {
           chain post { type nat hook postrouting priority 100; oifname \"rs\" snat to 10.71.2.1; }
         }",
    );

    let listener = server.thread(|| TcpListener::bind("10.71.2.2:9000").expect("bind"));
    let echo = std::thread::spawn(move || {
        let (s, _) = listener.accept().expect("accept");
        let mut r = BufReader::new(s.try_clone().expect("clone"));
        let mut w = s;
        let mut line = String::new();
        while r.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
            if w.write_all(line.as_bytes()).is_err() {
                break;
            }
            line.clear();
        }
    });
    let stream = client.thread(|| {
        TcpStream::connect_timeout(&"10.71.2.2:9000".parse().unwrap(), Duration::from_secs(3))
            .expect("connect through the router")
    });
    stream.set_nodelay(true).expect("nodelay");
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut writer = stream;
    let mut roundtrip = |msg: &str, wait: Duration| roundtrip(&mut reader, &mut writer, msg, wait);
    assert_eq!(
        roundtrip("one\n", Duration::from_secs(3)).as_deref(),
        Some("one\n")
    );

    // Take the router's entry out of the kernel, as a failover would leave it missing.
    let saved = router.block(|| async {
        let ct = Conntrack::open().expect("open");
        let dump = ct.dump().await.expect("dump");
        let e = dump
            .into_iter()
            .find(|e| e.orig.proto == 6 && e.orig.dport == 9000)
            .expect("router holds the flow");
        ct.delete(&e.orig, e.zone).await.expect("delete");
        e
    });
    assert_eq!(saved.reply.dst, ip("10.71.2.1"), "{saved:?}");
    assert!(saved.status & status_bits::SRC_NAT != 0);

    // Without the entry, mid-stream packets are INVALID (tcp_loose=0) and dropped: stall.
    assert_eq!(
        roundtrip("two\n", Duration::from_millis(1200)),
        None,
        "flow should stall"
    );
    let count = router.block(|| async {
        let ct = Conntrack::open().expect("open");
        ct.count().await.expect("count")
    });
    assert_eq!(
        count, 0,
        "the stalled packets must not have created an entry"
    );

    // Re-inject the saved entry: the retransmission and everything after pass again.
    // Like a sync peer that carries no window data: no wscale, no flags. `create` adds
    // BE_LIBERAL; without it (checked by hand: pass `false` in `Writer::create`) the bulk
    // transfer below stalls, because the kernel then judges windows with a scale of 0.
    let e = Entry {
        tcp_wscale: None,
        tcp_flags: None,
        ..saved.clone()
    };
    router.block(move || async move {
        let ct = Conntrack::open().expect("open");
        ct.create(&e).await.expect("re-inject");
    });
    // The stalled line is retransmitted by TCP; send nothing new until its echo is back.
    assert_eq!(
        roundtrip("", Duration::from_secs(8)).as_deref(),
        Some("two\n"),
        "the stalled line must get through after re-injection"
    );
    // Bulk both ways after the pickup: the injected entry must track windows it never saw open.
    let big = "x".repeat(256 * 1024);
    for i in 0..8 {
        let msg = format!("{i}{big}\n");
        assert_eq!(
            roundtrip(&msg, Duration::from_secs(3)).map(|l| l.len()),
            Some(msg.len()),
            "bulk round trip {i}"
        );
    }
    for i in 0..5 {
        let msg = format!("line {i}\n");
        assert_eq!(
            roundtrip(&msg, Duration::from_secs(3)).as_deref(),
            Some(msg.as_str())
        );
    }
    drop(writer);
    drop(reader);
    let _ = echo.join();
}
