//! The machine on a virtual clock (single node, hand-fed messages), then two-node simulations
//! over a lossy, reordering link (see `sim.rs`).

use std::time::Duration;

use super::sim::{World, advance, make_state};
use super::*;
use crate::proto::time::Instant;
use crate::wire::pfsync::{self as wire, FLAG_BULK, FLAG_SEQ, Repr, Section, SeqRange};

const KEY: &[u8] = b"sync-key";

fn ms(n: u64) -> Instant {
    Instant::from_millis(n)
}

fn cfg(node: u32) -> Config {
    let mut c = Config::new(node).with_key(KEY);
    c.epoch = 0x0e0e_0000 + node;
    c.seq_seed = 100 * node;
    c.clock_seed = 1000;
    c
}

/// A machine past its boot bulk (the peer answered with an empty table).
fn ready(node: u32) -> Sync {
    let mut s = Sync::new(cfg(node), ms(0));
    let a = s.poll(ms(0));
    assert_eq!(a[0], Action::DemotionHold(true));
    let reqs = sent(&a);
    assert_eq!(reqs.len(), 1);
    let [Section::BulkRequest(id)] = reqs[0].sections[..] else {
        panic!("{:?}", reqs[0].sections)
    };
    let end = peer_msg(1, FLAG_SEQ | FLAG_BULK, vec![Section::BulkEnd(0, id)]);
    let a = s.handle(ms(1), Input::Received(end));
    assert_eq!(a, vec![Action::BulkDone, Action::DemotionHold(false)]);
    let _ = s.poll(ms(10)); // the ACK
    s
}

/// The peer (node 9) message with our key.
fn peer_msg(seq: u32, flags: u8, sections: Vec<Section>) -> Vec<u8> {
    Repr {
        flags,
        node_id: 9,
        epoch: 77,
        seq,
        sections,
        skipped: 0,
    }
    .to_bytes(Some(KEY))
}

fn sent(actions: &[Action]) -> Vec<Repr> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(b) => Some(wire::parse(b, Some(KEY)).expect("we emit valid messages")),
            _ => None,
        })
        .collect()
}

fn injected(actions: &[Action]) -> Vec<State> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Inject(s) => Some(*s),
            _ => None,
        })
        .collect()
}

fn local(event: Event, state: State) -> Input {
    Input::Local {
        event,
        state,
        origin: Origin::Local,
    }
}

/// A state as the peer (node 9) created it, with a version.
fn peer_state(n: u32, version: u64) -> State {
    let mut s = make_state(n);
    s.creator = 9;
    s.version = version;
    s
}

#[test]
fn boot_holds_demotion_and_retries_bulk_request_then_gives_up() {
    let mut s = Sync::new(cfg(1), ms(0));
    assert_eq!(s.poll_at(), Some(ms(0)));
    let a = s.poll(ms(0));
    assert_eq!(a[0], Action::DemotionHold(true));
    assert!(
        matches!(sent(&a)[0].sections[..], [Section::BulkRequest(_)]),
        "{:?}",
        sent(&a)[0].sections
    );
    assert!(s.holding_demotion());
    // Retried every second.
    assert_eq!(s.poll_at(), Some(ms(1000)));
    assert!(s.poll(ms(999)).is_empty());
    for t in 1..10 {
        let a = s.poll(ms(1000 * t));
        assert_eq!(sent(&a).len(), 1, "retry at {t}s");
    }
    assert_eq!(s.stats().bulk_requests_sent, 10);
    // Gives up at 10 s: the hold is released and counted.
    let a = s.poll(ms(10_000));
    assert_eq!(a[0], Action::DemotionHold(false));
    assert!(
        sent(&a).iter().all(|m| m.sections.is_empty()),
        "nothing but a heartbeat: {a:?}"
    );
    assert!(!s.holding_demotion());
    assert!(!s.bulk_pending());
    assert_eq!(s.stats().bulk_failed, 1);
    // Only the heartbeat is left to do (the peer never spoke, so it is not "silent").
    assert_eq!(s.poll_at(), Some(ms(11_000)));
    assert!(!s.peer_silent());
}

#[test]
fn bulk_data_postpones_the_retry() {
    let mut s = Sync::new(cfg(1), ms(0));
    let _ = s.poll(ms(0));
    let st = peer_state(1, 5);
    let m = peer_msg(1, FLAG_SEQ | FLAG_BULK, vec![Section::Update(vec![st])]);
    let a = s.handle(ms(900), Input::Received(m));
    assert_eq!(injected(&a), vec![st]);
    let _ = s.poll(ms(1000)); // ACK only, no request
    assert_eq!(s.stats().bulk_requests_sent, 1);
    let a = s.poll(ms(1900));
    assert!(
        matches!(sent(&a)[0].sections[..], [Section::BulkRequest(_)]),
        "{:?}",
        sent(&a)[0].sections
    );
}

#[test]
fn local_changes_coalesce_into_one_record() {
    let mut s = ready(1);
    let mut st = make_state(3);
    assert!(s.handle(ms(100), local(Event::New, st)).is_empty());
    st.tcp_state = TcpState::SynRecv;
    assert!(s.handle(ms(101), local(Event::Update, st)).is_empty());
    st.tcp_state = TcpState::Established;
    st.timeout = 432000;
    assert!(s.handle(ms(101), local(Event::Update, st)).is_empty());
    // Flushed flush_delay (2 ms) after the first record.
    assert_eq!(s.poll_at(), Some(ms(102)));
    let a = s.poll(ms(102));
    let m = sent(&a);
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].flags & FLAG_SEQ, FLAG_SEQ);
    assert_eq!(m[0].node_id, 1);
    let Section::Insert(v) = &m[0].sections[0] else {
        panic!("{m:?}")
    };
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].tcp_state, TcpState::Established);
    assert_eq!(v[0].timeout, 432000);
    assert_eq!(v[0].creator, 1);
    assert_eq!(v[0].id, State::compute_id(st.proto, &st.orig, 0));
    assert!(v[0].version > 1000);
    assert_eq!(s.stats().sent_states, 1);
}

#[test]
fn delete_replaces_a_pending_insert() {
    let mut s = ready(1);
    let st = make_state(3);
    let _ = s.handle(ms(100), local(Event::New, st));
    let _ = s.handle(ms(101), local(Event::Destroy, st));
    let m = sent(&s.poll(ms(102)));
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].sections.len(), 1);
    let Section::Delete(d) = &m[0].sections[0] else {
        panic!("{m:?}")
    };
    assert_eq!(d[0].id, State::compute_id(st.proto, &st.orig, 0));
    assert!(s.is_empty());
}

#[test]
fn a_full_packet_is_sent_at_once() {
    let mut s = ready(1);
    let per_packet = (1480 - wire::HEADER_LEN - 2 * wire::SUBHEADER_LEN) / wire::STATE_LEN;
    let mut out = Vec::new();
    for n in 0..=per_packet as u32 {
        out.extend(s.handle(ms(100), local(Event::New, make_state(n))));
    }
    let m = sent(&out);
    assert_eq!(m.len(), 1, "one full packet before the flush delay");
    let bytes = match &out[0] {
        Action::Send(b) => b.len(),
        _ => unreachable!(),
    };
    assert!(bytes <= 1480, "{bytes}");
    let Section::Insert(v) = &m[0].sections[0] else {
        panic!()
    };
    assert_eq!(v.len(), per_packet);
    // The last one waits for the flush delay.
    let m = sent(&s.poll(ms(102)));
    assert_eq!(m.len(), 1);
}

#[test]
fn mtu_is_configurable() {
    let mut c = cfg(1);
    c.mtu = 400;
    let mut s = Sync::new(c, ms(0));
    let _ = s.poll(ms(0));
    let mut out = Vec::new();
    for n in 0..10 {
        out.extend(s.handle(ms(1), local(Event::New, make_state(n))));
    }
    out.extend(s.poll(ms(10)));
    let lens: Vec<usize> = out
        .iter()
        .filter_map(|a| match a {
            Action::Send(b) => Some(b.len()),
            _ => None,
        })
        .collect();
    assert!(lens.iter().all(|l| *l <= 400), "{lens:?}");
    assert_eq!(s.stats().sent_states, 10);
}

#[test]
fn injected_states_are_not_echoed() {
    let mut s = ready(1);
    let st = peer_state(5, 2000);
    let a = s.handle(
        ms(100),
        Input::Received(peer_msg(2, FLAG_SEQ, vec![Section::Insert(vec![st])])),
    );
    assert_eq!(a, vec![Action::Inject(st)]);
    // The kernel reports our own injection, then the peer's state times out here.
    for ev in [Event::New, Event::Update] {
        let a = s.handle(
            ms(101),
            Input::Local {
                event: ev,
                state: st,
                origin: Origin::Peer,
            },
        );
        assert!(a.is_empty());
    }
    assert!(s.handle(ms(102), local(Event::Destroy, st)).is_empty());
    let a = s.poll(ms(200));
    assert!(
        sent(&a).iter().all(|m| m
            .sections
            .iter()
            .all(|x| matches!(x, Section::Ack(_) | Section::AckInfo(_)))),
        "{a:?}"
    );
    assert_eq!(s.stats().echo_suppressed, 2);
    assert_eq!(s.stats().sent_states + s.stats().sent_deletes, 0);
}

#[test]
fn traffic_on_an_injected_state_takes_it_over() {
    let mut s = ready(1);
    let mut st = peer_state(5, 2000);
    st.tcp_state = TcpState::Established;
    let _ = s.handle(
        ms(100),
        Input::Received(peer_msg(2, FLAG_SEQ, vec![Section::Insert(vec![st])])),
    );
    st.tcp_state = TcpState::FinWait;
    let _ = s.handle(ms(101), local(Event::Update, st));
    let m = sent(&s.poll(ms(110)));
    let upd = m
        .iter()
        .flat_map(|m| m.sections.iter())
        .find_map(|x| match x {
            Section::Update(v) => Some(v[0]),
            _ => None,
        })
        .expect("an UPDATE");
    assert_eq!(upd.tcp_state, TcpState::FinWait);
    assert_eq!(upd.creator, 9, "the creator stays");
    assert!(upd.version > 2000, "above the version seen");
    assert_eq!(s.state(st.id).unwrap().1, Origin::Local);
}

/// A local state the kernel lost without an event (an overrun ate the DESTROY) is found by the
/// table dumps: after two in a row missed it, removed here and deleted on the peer. A state
/// that changed after a dump began is not judged by it.
#[test]
fn dumps_that_no_longer_show_a_local_state_end_it() {
    let mut s = ready(1);
    let gone = make_state(1);
    let kept = make_state(2);
    let young = make_state(3);
    for st in [gone, kept] {
        let _ = s.handle(ms(100), local(Event::New, st));
    }
    let _ = s.poll(ms(200));
    let _ = s.handle(ms(250), Input::DumpStarted);
    s.saw(kept.id);
    let _ = s.handle(ms(251), Input::DumpDone);
    assert!(s.state(gone.id).is_some(), "one miss is not enough");
    let _ = s.handle(ms(300), Input::DumpStarted);
    let _ = s.handle(ms(301), local(Event::New, young)); // after the dump began
    s.saw(kept.id);
    let mut out = s.handle(ms(302), Input::DumpDone);
    assert!(s.state(gone.id).is_none());
    assert!(s.state(kept.id).is_some());
    assert!(s.state(young.id).is_some(), "not older than the dump");
    assert_eq!(s.stats().swept_local, 1);
    out.extend(s.poll(ms(310)));
    let deletes: Vec<u64> = sent(&out)
        .iter()
        .flat_map(|m| m.sections.iter())
        .filter_map(|x| match x {
            Section::Delete(v) => Some(v.iter().map(|d| d.id).collect::<Vec<_>>()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(deletes, vec![gone.id]);
    // Without a dump in progress `DumpDone` judges nothing.
    let _ = s.handle(ms(500), Input::DumpDone);
    let _ = s.handle(ms(501), Input::DumpDone);
    assert!(s.state(kept.id).is_some() && s.state(young.id).is_some());
}

/// A peer state missing from one dump may still be on its way into the kernel: it goes only
/// when two dumps in a row miss it (a dump that shows it starts the count over), and silently
/// (the peer owns it).
#[test]
fn a_peer_state_goes_after_two_dumps_miss_it() {
    let mut s = ready(1);
    let st = peer_state(5, 2000);
    let back = peer_state(6, 2001);
    let _ = s.handle(
        ms(100),
        Input::Received(peer_msg(2, FLAG_SEQ, vec![Section::Insert(vec![st, back])])),
    );
    let _ = s.poll(ms(150));
    let dump = |s: &mut Sync, at: u64, show: &[u64]| {
        let _ = s.handle(ms(at), Input::DumpStarted);
        for id in show {
            s.saw(*id);
        }
        s.handle(ms(at + 1), Input::DumpDone)
    };
    assert!(dump(&mut s, 200, &[]).is_empty());
    assert!(s.state(st.id).is_some(), "one miss is not enough");
    // `back` shows up again: its count starts over.
    assert!(dump(&mut s, 300, &[back.id]).contains(&Action::Remove(st)));
    assert!(s.state(st.id).is_none());
    assert!(dump(&mut s, 400, &[]).is_empty());
    assert!(s.state(back.id).is_some());
    assert_eq!(s.stats().swept_peer, 1);
    let m = sent(&s.poll(ms(500)));
    assert!(
        m.iter()
            .flat_map(|m| m.sections.iter())
            .all(|x| !matches!(x, Section::Delete(_))),
        "a peer state is not deleted on the peer: {m:?}"
    );
}

/// The lag estimate: our event → on the wire (send wait), the round trip to the peer's ACK less
/// the time the peer held that ACK, and the apply time the peer reports with its ACKs; and our
/// ACKs carry our own hold and apply times.
#[test]
fn lag_is_estimated_from_send_wait_round_trip_and_the_peers_apply_time() {
    let mut s = ready(1);
    assert!(s.lag().estimate_ms.is_none());
    let st = make_state(1);
    let _ = s.handle(ms(100), local(Event::New, st));
    let m = sent(&s.poll(ms(103)));
    let data = m
        .iter()
        .find(|m| m.flags & FLAG_SEQ != 0)
        .expect("the state went out");
    let seq = data.seq;
    let ack = Repr {
        flags: 0,
        node_id: 9,
        epoch: 77,
        seq: 0,
        sections: vec![
            Section::Ack(vec![SeqRange {
                first: seq,
                last: seq,
            }]),
            Section::AckInfo(wire::AckInfo {
                hold_us: 5000,
                apply_p50_us: 200,
                apply_p99_us: 900,
            }),
        ],
        skipped: 0,
    }
    .to_bytes(Some(KEY));
    let _ = s.handle(ms(111), Input::Received(ack));
    let lag = s.lag();
    let send = lag.send_wait_ms.expect("send wait").p50;
    assert!((2.0..=3.0).contains(&send), "{lag:?}");
    assert_eq!(
        lag.round_trip_ms.expect("rtt").p50,
        3.0,
        "8 ms less the 5 held"
    );
    assert_eq!(lag.acked_ms.expect("acked").p50, 11.0);
    let est = lag.estimate_ms.expect("estimate");
    assert!((est.p50 - (send + 1.5 + 0.2)).abs() < 1e-9, "{lag:?}");
    assert!((est.p99 - (send + 1.5 + 0.9)).abs() < 1e-9, "{lag:?}");

    // Our ACKs say how long we held them, and our apply time once the actor has one.
    let info = |s: &mut Sync, at: u64, seq: u32| {
        let _ = s.handle(
            ms(at),
            Input::Received(peer_msg(
                seq,
                FLAG_SEQ,
                vec![Section::Insert(vec![peer_state(
                    seq,
                    2000 + u64::from(seq),
                )])],
            )),
        );
        sent(&s.poll(ms(at + 5)))
            .iter()
            .flat_map(|m| m.sections.clone())
            .find_map(|x| match x {
                Section::AckInfo(i) => Some(i),
                _ => None,
            })
            .expect("ACK_INFO with the ACK")
    };
    let first = info(&mut s, 200, 2);
    assert_eq!(first.hold_us, 5000);
    assert_eq!(first.apply_p50_us, wire::APPLY_UNKNOWN);
    s.set_apply_time(55, 66);
    let second = info(&mut s, 300, 3);
    assert_eq!((second.apply_p50_us, second.apply_p99_us), (55, 66));
}

#[test]
fn stale_and_backwards_updates() {
    let mut s = ready(1);
    let mut st = peer_state(3, 50_000);
    st.tcp_state = TcpState::Established;
    let _ = s.handle(
        ms(100),
        Input::Received(peer_msg(2, FLAG_SEQ, vec![Section::Insert(vec![st])])),
    );
    // An older version: ignored, counted.
    let mut old = st;
    old.version = 40_000;
    old.tcp_state = TcpState::SynSent;
    let a = s.handle(
        ms(101),
        Input::Received(peer_msg(3, FLAG_SEQ, vec![Section::Update(vec![old])])),
    );
    assert!(injected(&a).is_empty());
    assert_eq!(s.stats().stale, 1);
    // A newer version moving TCP backwards from a node that is not the creator: the rest is
    // taken, the TCP state kept.
    let mut back = st;
    back.version = 60_000;
    back.tcp_state = TcpState::SynRecv;
    back.creator = 4;
    back.timeout = 77;
    let a = s.handle(
        ms(102),
        Input::Received(peer_msg(4, FLAG_SEQ, vec![Section::Update(vec![back])])),
    );
    let got = injected(&a);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].tcp_state, TcpState::Established);
    assert_eq!(got[0].timeout, 77);
    assert_eq!(s.stats().tcp_backwards_kept, 1);
    // The creator itself (node 9) moving a reused tuple back to SYN_SENT wins.
    let mut reuse = st;
    reuse.version = 70_000;
    reuse.tcp_state = TcpState::SynSent;
    let a = s.handle(
        ms(103),
        Input::Received(peer_msg(5, FLAG_SEQ, vec![Section::Update(vec![reuse])])),
    );
    assert_eq!(injected(&a)[0].tcp_state, TcpState::SynSent);
    // A record whose id does not match its tuple is refused.
    let mut bad = peer_state(8, 80_000);
    bad.id ^= 1;
    let a = s.handle(
        ms(104),
        Input::Received(peer_msg(6, FLAG_SEQ, vec![Section::Insert(vec![bad])])),
    );
    assert!(injected(&a).is_empty());
    assert_eq!(s.stats().bad_record, 1);
}

#[test]
fn delete_and_tombstone() {
    let mut s = ready(1);
    let st = peer_state(3, 50_000);
    let _ = s.handle(
        ms(100),
        Input::Received(peer_msg(2, FLAG_SEQ, vec![Section::Insert(vec![st])])),
    );
    let del = wire::Delete {
        id: st.id,
        version: 50_001,
    };
    let a = s.handle(
        ms(101),
        Input::Received(peer_msg(3, FLAG_SEQ, vec![Section::Delete(vec![del])])),
    );
    assert_eq!(a, vec![Action::Remove(st)]);
    // A reordered older update does not resurrect it.
    let mut late = st;
    late.version = 50_000;
    let a = s.handle(
        ms(102),
        Input::Received(peer_msg(5, FLAG_SEQ, vec![Section::Update(vec![late])])),
    );
    assert!(injected(&a).is_empty());
    assert_eq!(s.stats().stale, 1);
    // A newer incarnation does.
    late.version = 50_002;
    let a = s.handle(
        ms(103),
        Input::Received(peer_msg(6, FLAG_SEQ, vec![Section::Insert(vec![late])])),
    );
    assert_eq!(injected(&a).len(), 1);
}

#[test]
fn clear_removes_the_creators_states() {
    let mut s = ready(1);
    let a = peer_state(3, 50_000);
    let mut b = peer_state(4, 50_000);
    b.creator = 5;
    let _ = s.handle(
        ms(100),
        Input::Received(peer_msg(2, FLAG_SEQ, vec![Section::Insert(vec![a, b])])),
    );
    let got = s.handle(
        ms(101),
        Input::Received(peer_msg(3, FLAG_SEQ, vec![Section::Clear(vec![9])])),
    );
    assert_eq!(got, vec![Action::Remove(a), Action::ClearPeer(9)]);
    assert_eq!(s.len(), 1);
}

#[test]
fn acks_are_delayed_coalesced_and_clear_the_window() {
    let mut a = ready(1);
    let mut b = ready(2);
    let mut out = Vec::new();
    for n in 0..3 {
        let _ = a.handle(ms(100 + n), local(Event::New, make_state(n as u32)));
        out.extend(a.poll(ms(102 + n)));
    }
    assert_eq!(sent(&out).len(), 3);
    assert_eq!(a.stats().window, 3);
    let mut acks = Vec::new();
    for m in &out {
        if let Action::Send(bytes) = m {
            acks.extend(b.handle(ms(110), Input::Received(bytes.clone())));
        }
    }
    assert_eq!(injected(&acks).len(), 3);
    // One ACK message after ack_delay, one range.
    assert_eq!(b.poll_at(), Some(ms(115)));
    let m = sent(&b.poll(ms(115)));
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].flags & FLAG_SEQ, 0, "ACKs are unsequenced");
    let Section::Ack(r) = &m[0].sections[0] else {
        panic!("{m:?}")
    };
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].len(), Some(3));
    let ack = m[0].to_bytes(Some(KEY));
    assert!(a.handle(ms(116), Input::Received(ack)).is_empty());
    assert_eq!(a.stats().window, 0);
    assert_eq!(a.stats().acks_received, 1);
    // Nothing more to do: no ACK of the ACK, no resend (heartbeats only).
    assert!(
        sent(&a.poll(ms(2000)))
            .iter()
            .all(|m| m.sections.is_empty())
    );
    assert!(
        sent(&b.poll(ms(2000)))
            .iter()
            .all(|m| m.sections.is_empty())
    );
}

#[test]
fn gap_is_nacked_and_resent_from_the_current_table() {
    let mut a = ready(1);
    let mut b = ready(2);
    let s1 = make_state(1);
    let mut s2 = make_state(2);
    let s3 = make_state(3);
    let s4 = make_state(4);
    let mut msgs = Vec::new();
    for (t, st) in [(100, s1), (110, s2), (120, s3), (130, s4)] {
        let _ = a.handle(ms(t), local(Event::New, st));
        msgs.extend(a.poll(ms(t + 2)));
    }
    assert_eq!(sent(&msgs).len(), 4);
    // s2 changes again and s3 is destroyed before the NACK arrives.
    s2.tcp_state = TcpState::Established;
    let _ = a.handle(ms(135), local(Event::Update, s2));
    let _ = a.handle(ms(135), local(Event::Destroy, s3));
    let _ = a.poll(ms(137));
    // b gets the first and the fourth: it NACKs our seqs 101..=102.
    for i in [0, 3] {
        let Action::Send(bytes) = &msgs[i] else {
            panic!()
        };
        let _ = b.handle(ms(140), Input::Received(bytes.clone()));
    }
    let m = sent(&b.poll(ms(145)));
    let nack = m
        .iter()
        .flat_map(|m| m.sections.iter())
        .find_map(|x| match x {
            Section::Nack(r) => Some(r.clone()),
            _ => None,
        })
        .expect("a NACK");
    assert_eq!(
        nack,
        vec![SeqRange {
            first: 101,
            last: 102
        }]
    );
    assert_eq!(b.stats().nacks_sent, 1);
    // Still missing 50 ms later: NACKed again.
    let m2 = sent(&b.poll(ms(195)));
    assert!(
        m2.iter()
            .any(|m| m.sections.iter().any(|x| matches!(x, Section::Nack(_))))
    );
    // a resends from its table: s2 as it is now, s3 as a DELETE.
    let mut resent = Vec::new();
    for msg in &m {
        resent.extend(a.handle(ms(146), Input::Received(msg.to_bytes(Some(KEY)))));
    }
    let r = sent(&resent);
    let states: Vec<State> = r
        .iter()
        .flat_map(|m| m.sections.iter())
        .flat_map(|x| match x {
            Section::Insert(v) | Section::Update(v) => v.clone(),
            _ => vec![],
        })
        .collect();
    let deletes: Vec<u64> = r
        .iter()
        .flat_map(|m| m.sections.iter())
        .flat_map(|x| match x {
            Section::Delete(v) => v.iter().map(|d| d.id).collect(),
            _ => vec![],
        })
        .collect();
    assert_eq!(states.len(), 1);
    assert_eq!(states[0].tcp_state, TcpState::Established);
    assert_eq!(deletes, vec![s3.id]);
    assert_eq!(a.stats().resent, 2);
    assert_eq!(a.stats().nacks_received, 1);
    // A second NACK for the same seqs is ignored (already resent), no full resync.
    for msg in &m2 {
        let again = a.handle(ms(200), Input::Received(msg.to_bytes(Some(KEY))));
        assert!(sent(&again).is_empty());
    }
    assert!(!a.bulk_sending());
}

#[test]
fn unacked_messages_are_resent_then_given_up() {
    let mut a = ready(1);
    let _ = a.handle(ms(100), local(Event::New, make_state(1)));
    let _ = a.poll(ms(102));
    let mut t = 102;
    for i in 1..=10 {
        t += 200;
        assert_eq!(a.poll_at(), Some(ms(t)), "retry {i}");
        let m = sent(&a.poll(ms(t)));
        assert_eq!(m.len(), 1, "retry {i}");
    }
    t += 200;
    assert!(sent(&a.poll(ms(t))).is_empty());
    assert_eq!(a.stats().window, 0);
    assert_eq!(a.stats().window_evicted, 1);
    // At the next sign of life the peer gets a full resync (our table as a bulk answer).
    let hello = peer_msg(
        50,
        0,
        vec![Section::Ack(vec![SeqRange { first: 1, last: 1 }])],
    );
    let _ = a.handle(ms(t + 10), Input::Received(hello));
    assert!(a.bulk_sending());
    let m = sent(&a.poll(ms(t + 10)));
    assert!(m.iter().all(|m| m.flags & FLAG_BULK != 0));
    assert_eq!(m.len(), 1, "one record; BULK_END waits for its ACK");
    let end = ack_and_poll(&mut a, ms(t + 11), 50, &m);
    assert_eq!(end.len(), 1);
    assert!(
        end[0]
            .sections
            .iter()
            .any(|x| matches!(x, Section::BulkEnd(1, _)))
    );
    assert_eq!(a.stats().full_resyncs, 1);
}

#[test]
fn bulk_answer_is_sliced() {
    let mut c = cfg(1);
    c.max_packets_per_poll = 4;
    let mut a = Sync::new(c, ms(0));
    let _ = a.poll(ms(0));
    let _ = a.handle(
        ms(1),
        Input::Received(peer_msg(
            1,
            FLAG_SEQ | FLAG_BULK,
            vec![Section::BulkEnd(0, 0)],
        )),
    );
    for n in 0..100 {
        let _ = a.handle(ms(2), local(Event::New, make_state(n)));
    }
    let _ = a.poll(ms(10));
    let sent_before = a.stats().sent_states;
    let _ = a.handle(
        ms(20),
        Input::Received(peer_msg(2, 0, vec![Section::BulkRequest(7)])),
    );
    assert_eq!(a.stats().bulk_requests_received, 1);
    let mut total = 0;
    let mut ends = 0;
    let mut polls = 0;
    let mut peer_seq = 3;
    while a.bulk_sending() {
        assert!(polls < 1000, "the bulk never ends");
        let m = sent(&a.poll(ms(20)));
        polls += 1;
        assert!(m.len() <= 4 + 1, "{}", m.len());
        // The peer acknowledges every message.
        let acks: Vec<SeqRange> = m
            .iter()
            .map(|x| SeqRange {
                first: x.seq,
                last: x.seq,
            })
            .collect();
        let _ = a.handle(
            ms(20),
            Input::Received(peer_msg(peer_seq, 0, vec![Section::Ack(acks)])),
        );
        peer_seq += 1;
        for msg in m {
            assert_eq!(msg.flags & FLAG_BULK, FLAG_BULK);
            for x in msg.sections {
                match x {
                    Section::Update(v) => total += v.len(),
                    Section::BulkEnd(n, _) => {
                        ends += 1;
                        assert_eq!(n, 100);
                    }
                    other => panic!("{other:?}"),
                }
            }
        }
    }
    assert_eq!(total, 100);
    assert_eq!(ends, 1);
    assert!(polls >= 3);
    assert_eq!(a.stats().sent_states - sent_before, 100);
}

/// A machine (node 1) past its boot bulk that holds `n` local states and was just asked for a
/// bulk by the peer (node 9, whose next message has sequence number 3).
fn bulk_sender(n: u32, c: Config) -> Sync {
    let mut a = Sync::new(c, ms(0));
    let _ = a.poll(ms(0));
    let _ = a.handle(
        ms(1),
        Input::Received(peer_msg(
            1,
            FLAG_SEQ | FLAG_BULK,
            vec![Section::BulkEnd(0, 0)],
        )),
    );
    for i in 0..n {
        let _ = a.handle(ms(2), local(Event::New, make_state(i)));
    }
    let _ = a.poll(ms(10));
    let _ = a.handle(
        ms(20),
        Input::Received(peer_msg(2, 0, vec![Section::BulkRequest(7)])),
    );
    a
}

/// BULK_END answers one request: the end of a bulk asked for by someone else (our previous run,
/// say) does not complete ours; an older peer's (request id 0) does.
#[test]
fn only_the_answer_to_our_request_ends_our_bulk_wait() {
    let boot = |node| {
        let mut s = Sync::new(cfg(node), ms(0));
        let m = sent(&s.poll(ms(0)));
        let [Section::BulkRequest(id)] = m[0].sections[..] else {
            panic!("{m:?}")
        };
        assert!(id != 0 && id != wire::BULK_UNSOLICITED);
        (s, id)
    };
    let (mut s, id) = boot(1);
    for (seq, other) in [(1, id.wrapping_add(1)), (2, wire::BULK_UNSOLICITED)] {
        let a = s.handle(
            ms(5),
            Input::Received(peer_msg(
                seq,
                FLAG_SEQ | FLAG_BULK,
                vec![Section::BulkEnd(0, other)],
            )),
        );
        assert!(!a.contains(&Action::BulkDone), "{a:?}");
        assert!(s.bulk_pending());
    }
    let a = s.handle(
        ms(6),
        Input::Received(peer_msg(
            3,
            FLAG_SEQ | FLAG_BULK,
            vec![Section::BulkEnd(0, id)],
        )),
    );
    assert!(a.contains(&Action::BulkDone), "{a:?}");
    // A retry keeps the id; a new request gets a new one; the next run's differ.
    let (mut old, first) = boot(2);
    let m = sent(&old.poll(ms(1000)));
    assert!(matches!(m[0].sections[..], [Section::BulkRequest(x)] if x == first));
    let _ = old.handle(ms(1001), Input::RequestBulk);
    let a = old.handle(
        ms(1002),
        Input::Received(peer_msg(
            1,
            FLAG_SEQ | FLAG_BULK,
            vec![Section::BulkEnd(0, 0)],
        )),
    );
    assert!(
        a.contains(&Action::BulkDone),
        "an older peer echoes no id: {a:?}"
    );
    let mut c = cfg(2);
    c.epoch ^= 0x5555;
    let mut next_run = Sync::new(c, ms(0));
    let m = sent(&next_run.poll(ms(0)));
    assert!(!matches!(m[0].sections[..], [Section::BulkRequest(x)] if x == first));
}

/// A request that arrives while a bulk is under way for another gets a whole bulk of its own
/// after it (the first began before the new requester listened); a retry of the request being
/// answered does not.
#[test]
fn a_new_request_during_a_bulk_gets_a_whole_bulk_after_it() {
    let mut c = cfg(1);
    c.max_packets_per_poll = 1;
    let mut a = bulk_sender(30, c); // answering request 7
    let mut ends = Vec::new();
    let mut records = 0;
    let mut peer_seq = 3;
    let mut polls = 0;
    while a.bulk_sending() {
        polls += 1;
        assert!(polls < 1000, "the bulk never ends");
        if polls == 2 {
            for id in [7, 8, 7] {
                let _ = a.handle(
                    ms(20),
                    Input::Received(peer_msg(peer_seq, 0, vec![Section::BulkRequest(id)])),
                );
                peer_seq += 1;
            }
        }
        let m = sent(&a.poll(ms(20)));
        for msg in &m {
            for x in &msg.sections {
                match x {
                    Section::Update(v) => records += v.len(),
                    Section::BulkEnd(n, id) => ends.push((*n, *id)),
                    _ => {}
                }
            }
        }
        let seqs: Vec<u32> = m
            .iter()
            .filter(|m| m.flags & FLAG_SEQ != 0)
            .map(|m| m.seq)
            .collect();
        let more = a.handle(
            ms(20),
            Input::Received(peer_msg(peer_seq, 0, vec![ack_of(&seqs)])),
        );
        assert!(sent(&more).is_empty(), "{more:?}");
        peer_seq += 1;
    }
    assert_eq!(ends, vec![(30, 7), (30, 8)]);
    assert_eq!(records, 60);
}

/// Acknowledges the sequenced messages of `msgs` as the peer would (in an unsequenced message
/// announcing `next`), polls, and returns what was sent then.
fn ack_and_poll(a: &mut Sync, now: Instant, next: u32, msgs: &[Repr]) -> Vec<Repr> {
    let seqs: Vec<u32> = msgs
        .iter()
        .filter(|m| m.flags & FLAG_SEQ != 0)
        .map(|m| m.seq)
        .collect();
    let _ = a.handle(now, Input::Received(peer_msg(next, 0, vec![ack_of(&seqs)])));
    sent(&a.poll(now))
}

fn ack_of(seqs: &[u32]) -> Section {
    Section::Ack(
        seqs.iter()
            .map(|&s| SeqRange { first: s, last: s })
            .collect(),
    )
}

#[test]
fn bulk_is_paced_by_the_window_and_ends_only_when_every_record_is_acked() {
    let mut c = cfg(1);
    c.bulk_window = 4;
    c.max_packets_per_poll = 100;
    let mut a = bulk_sender(100, c);
    // The normal traffic before the bulk request was acknowledged by nobody: ack it.
    let early: Vec<u32> = (0..a.stats().tx_seq).collect();
    let _ = a.handle(
        ms(20),
        Input::Received(peer_msg(3, 0, vec![ack_of(&early)])),
    );
    let mut data = Vec::new();
    let mut t = 21;
    // Without ACKs, at most 4 messages go out however often it is polled.
    for _ in 0..5 {
        data.extend(
            sent(&a.poll(ms(t)))
                .into_iter()
                .filter(|m| m.flags & FLAG_BULK != 0),
        );
        t += 1;
    }
    assert_eq!(
        data.len(),
        4,
        "the bulk window holds it at 4 unacked messages"
    );
    assert!(
        a.poll_at().is_none_or(|p| p > ms(t)),
        "no busy wake-up while paced"
    );
    // ACK all but the first; then everything else flows, but BULK_END waits for the first.
    let held = data[0].seq;
    let mut next_peer = 4;
    let mut ended = false;
    for _ in 0..200 {
        let seqs: Vec<u32> = data.iter().map(|m| m.seq).filter(|s| *s != held).collect();
        let _ = a.handle(
            ms(t),
            Input::Received(peer_msg(next_peer, 0, vec![ack_of(&seqs)])),
        );
        next_peer += 1;
        data = sent(&a.poll(ms(t)));
        t += 1;
        assert!(
            data.iter().all(|m| !m
                .sections
                .iter()
                .any(|x| matches!(x, Section::BulkEnd(100, _)))),
            "BULK_END sent while a record is unacknowledged"
        );
        if data.is_empty() {
            ended = true;
            break;
        }
    }
    assert!(ended, "all records but one should be out and acked");
    assert!(a.bulk_sending());
    // The held message is NACKed: its records go again under a new sequence number...
    let mut again = sent(&a.handle(
        ms(t),
        Input::Received(peer_msg(
            next_peer,
            0,
            vec![Section::Nack(vec![SeqRange {
                first: held,
                last: held,
            }])],
        )),
    ));
    again.extend(sent(&a.poll(ms(t))));
    let resent: Vec<u32> = again.iter().map(|m| m.seq).collect();
    assert!(!resent.is_empty(), "the NACKed records are resent");
    assert!(again.iter().all(|m| {
        !m.sections
            .iter()
            .any(|x| matches!(x, Section::BulkEnd(100, _)))
    }));
    // ... and once that copy is acknowledged, BULK_END follows.
    let _ = a.handle(
        ms(t + 1),
        Input::Received(peer_msg(next_peer + 1, 0, vec![ack_of(&resent)])),
    );
    let end: Vec<Repr> = sent(&a.poll(ms(t + 1)))
        .into_iter()
        .filter(|m| m.flags & FLAG_BULK != 0)
        .collect();
    assert_eq!(end.len(), 1, "{end:?}");
    assert!(
        matches!(end[0].sections[..], [Section::BulkEnd(100, _)]),
        "{:?}",
        end[0].sections
    );
    assert!(!a.bulk_sending());
}

#[test]
fn many_received_messages_are_acked_at_once() {
    let mut s = ready(1);
    let mut acked_early = false;
    for i in 0..40u32 {
        let m = peer_msg(
            2 + i,
            FLAG_SEQ,
            vec![Section::Update(vec![peer_state(i, 5)])],
        );
        let a = s.handle(ms(100), Input::Received(m));
        assert!(sent(&a).is_empty());
        if s.poll_at() == Some(ms(100)) {
            let acks = sent(&s.poll(ms(100)));
            assert_eq!(acks.len(), 1);
            assert!(matches!(acks[0].sections[0], Section::Ack(_)));
            assert!(i + 1 >= 32, "ACK before 32 messages: {i}");
            acked_early = true;
            break;
        }
    }
    assert!(acked_early, "32 messages did not make the ACK due at once");
}

#[test]
fn refresh_resends_a_state_whose_timeout_moved_on_silently() {
    let mut s = ready(1);
    let mut st = make_state(1);
    st.timeout = 30;
    let _ = s.handle(ms(100), local(Event::New, st));
    let first = sent(&s.poll(ms(102)));
    assert_eq!(first.len(), 1);
    let _ = ack_and_poll(&mut s, ms(103), 2, &first);
    let upd = |m: &[Repr]| -> usize {
        m.iter()
            .flat_map(|m| m.sections.iter())
            .map(|x| match x {
                Section::Update(v) | Section::Insert(v) => v.len(),
                _ => 0,
            })
            .sum()
    };
    // 5 s later the kernel shows 30 s left again (traffic): the peer's copy still has 25 s.
    let mut a = s.handle(ms(5_100), Input::Refresh(st, Duration::from_secs(5)));
    a.extend(s.poll(ms(5_102)));
    assert_eq!(upd(&sent(&a)), 0, "peer copy has more than half left");
    // 20 s later: the peer's copy has 10 s left, ours 30: sent again.
    let mut a = s.handle(ms(20_100), Input::Refresh(st, Duration::from_secs(5)));
    a.extend(s.poll(ms(20_102)));
    let m = sent(&a);
    assert_eq!(upd(&m), 1);
    let _ = ack_and_poll(&mut s, ms(20_103), 2, &m);
    assert_eq!(s.stats().refreshed, 1);
    // And not again right after.
    let mut a = s.handle(ms(21_100), Input::Refresh(st, Duration::from_secs(5)));
    a.extend(s.poll(ms(21_102)));
    assert_eq!(upd(&sent(&a)), 0);
    // A state we never heard of (a missed event) is sent; a peer's state never is.
    let mut unknown = make_state(2);
    unknown.timeout = 30;
    let mut a = s.handle(ms(22_000), Input::Refresh(unknown, Duration::from_secs(5)));
    a.extend(s.poll(ms(22_002)));
    let m = sent(&a);
    assert_eq!(upd(&m), 1);
    let _ = ack_and_poll(&mut s, ms(22_003), 2, &m);
    let theirs = peer_state(3, 5);
    let _ = s.handle(
        ms(22_100),
        Input::Received(peer_msg(2, FLAG_SEQ, vec![Section::Update(vec![theirs])])),
    );
    let mut a = s.handle(ms(60_000), Input::Refresh(theirs, Duration::from_secs(5)));
    a.extend(s.poll(ms(60_002)));
    assert_eq!(upd(&sent(&a)), 0);
    assert_eq!(s.stats().refreshed, 1);
}

#[test]
fn refresh_also_resends_what_would_expire_before_the_next_look() {
    let mut s = ready(1);
    let mut st = make_state(1);
    st.timeout = 8;
    let _ = s.handle(ms(100), local(Event::New, st));
    let first = sent(&s.poll(ms(102)));
    let _ = ack_and_poll(&mut s, ms(103), 2, &first);
    // 3.9 s later: the peer's copy has 4.1 s left, more than half of our 8 s, but the next
    // look is 5 s away: sent now.
    let _ = s.handle(ms(4_000), Input::Refresh(st, Duration::from_secs(1)));
    assert_eq!(s.stats().refreshed, 0, "next look in 1 s: not yet");
    let _ = s.handle(ms(4_000), Input::Refresh(st, Duration::from_secs(5)));
    assert_eq!(s.stats().refreshed, 1);
    // A state that did not move on (ours no longer than the peer's) is never re-sent.
    let mut idle = make_state(2);
    idle.timeout = 8;
    let _ = s.handle(ms(4_100), local(Event::New, idle));
    idle.timeout = 4;
    let _ = s.handle(ms(8_100), Input::Refresh(idle, Duration::from_secs(5)));
    assert_eq!(s.stats().refreshed, 1);
}

#[test]
fn drops_are_counted_per_reason() {
    let mut s = ready(1);
    let good = peer_msg(
        2,
        FLAG_SEQ,
        vec![Section::Insert(vec![peer_state(1, 5000)])],
    );
    // Wrong key.
    let wrong = Repr {
        flags: FLAG_SEQ,
        node_id: 9,
        epoch: 77,
        seq: 2,
        sections: vec![Section::Insert(vec![peer_state(1, 5000)])],
        skipped: 0,
    }
    .to_bytes(Some(b"other"));
    assert!(s.handle(ms(10), Input::Received(wrong)).is_empty());
    assert_eq!(s.stats().bad_mac, 1);
    // No MAC at all.
    let plain = Repr::parse(&wire::Packet::new_checked(&good[..]).unwrap())
        .unwrap()
        .to_bytes(None);
    assert!(s.handle(ms(10), Input::Received(plain)).is_empty());
    assert_eq!(s.stats().bad_mac, 2);
    assert!(
        s.handle(ms(10), Input::Received(good[..40].to_vec()))
            .is_empty()
    );
    assert_eq!(s.stats().truncated, 1);
    let mut v = good.clone();
    v[0] = 7;
    assert!(s.handle(ms(10), Input::Received(v)).is_empty());
    assert_eq!(s.stats().bad_version, 1);
    // Our own message looped back.
    let own = Repr {
        flags: 0,
        node_id: 1,
        epoch: 1,
        seq: 1,
        sections: vec![],
        skipped: 0,
    }
    .to_bytes(Some(KEY));
    assert!(s.handle(ms(10), Input::Received(own)).is_empty());
    assert_eq!(s.stats().from_self, 1);
    // Accepted once, then a duplicate.
    assert_eq!(
        injected(&s.handle(ms(11), Input::Received(good.clone()))).len(),
        1
    );
    assert!(s.handle(ms(12), Input::Received(good)).is_empty());
    assert_eq!(s.stats().duplicate, 1);
    assert_eq!(s.stats().injected, 1);
    assert!(s.stats().authenticated);
}

#[test]
fn unknown_action_is_skipped_and_counted() {
    let mut s = ready(1);
    let st = peer_state(1, 5000);
    let mut bytes = Repr {
        flags: FLAG_SEQ,
        node_id: 9,
        epoch: 77,
        seq: 2,
        sections: vec![Section::Insert(vec![st])],
        skipped: 0,
    }
    .to_bytes(None);
    bytes.extend_from_slice(&[99, 0, 0, 2, 0, 1, 0, 0, 0xaa, 0xbb]);
    let len = bytes.len() as u16;
    bytes[2..4].copy_from_slice(&len.to_be_bytes());
    let mut p = wire::Packet::new_unchecked(&mut bytes[..]);
    p.fill_mac(Some(KEY));
    let a = s.handle(ms(10), Input::Received(bytes));
    assert_eq!(injected(&a), vec![st]);
    assert_eq!(s.stats().unknown_action, 1);
}

/// With nothing to sync a node still sends an empty message every second, so the peer can tell
/// "nothing to send" from "its sync stopped" (opnsense/src#316: one node never transmitted and
/// nobody noticed); three quiet seconds from the peer raise `PeerSilent` once, its next message
/// `PeerBack`.
#[test]
fn a_quiet_node_sends_heartbeats_and_notices_a_silent_peer() {
    let mut s = ready(1); // its last message (the ACK) went out at 10 ms; the peer's came at 1 ms
    assert!(s.poll_at().is_some_and(|t| t <= ms(1010)));
    assert!(sent(&s.poll(ms(1009))).is_empty());
    let hb = sent(&s.poll(ms(1010)));
    assert_eq!(hb.len(), 1);
    assert!(hb[0].sections.is_empty(), "{:?}", hb[0].sections);
    assert_eq!(hb[0].flags & FLAG_SEQ, 0, "a heartbeat is not sequenced");
    assert_eq!(s.stats().heartbeats_sent, 1);
    // Traffic of our own replaces the heartbeat.
    let _ = s.handle(ms(1500), local(Event::New, make_state(1)));
    let a = s.poll(ms(1503));
    assert_eq!(sent(&a).len(), 1);
    for t in [1700, 2100, 2502] {
        // (the unacknowledged message is resent meanwhile)
        assert!(sent(&s.poll(ms(t))).iter().all(|m| !m.sections.is_empty()));
    }
    assert_eq!(s.stats().heartbeats_sent, 1);

    assert!(!s.peer_silent());
    let a = s.poll(ms(3000));
    assert!(
        !a.iter().any(|a| matches!(a, Action::PeerSilent(_))),
        "{a:?}"
    );
    let a = s.poll(ms(3001));
    assert!(
        a.contains(&Action::PeerSilent(Duration::from_millis(3000))),
        "{a:?}"
    );
    assert!(s.peer_silent());
    let a = s.poll(ms(6000));
    assert!(
        !a.iter().any(|a| matches!(a, Action::PeerSilent(_))),
        "raised once: {a:?}"
    );
    assert_eq!(s.stats().peer_silences, 1);
    // The peer's heartbeat (unsequenced, no sections) ends the silence.
    let a = s.handle(ms(7001), Input::Received(peer_msg(2, 0, vec![])));
    assert!(
        a.contains(&Action::PeerBack(Duration::from_millis(7000))),
        "{a:?}"
    );
    assert!(!s.peer_silent());
    assert_eq!(s.last_heard(), Some(ms(7001)));
    // And the next silence is counted again.
    let _ = s.poll(ms(10_001));
    assert!(s.peer_silent());
    assert_eq!(s.stats().peer_silences, 2);
}

/// No heartbeats and no silence while the link is down (the link itself is the reason then).
#[test]
fn no_heartbeat_or_silence_while_the_link_is_down() {
    let mut s = ready(1);
    let _ = s.handle(ms(20), Input::LinkDown);
    let a = s.poll(ms(10_000));
    assert!(sent(&a).is_empty(), "{a:?}");
    assert!(
        !a.iter().any(|a| matches!(a, Action::PeerSilent(_))),
        "{a:?}"
    );
    assert!(!s.peer_silent());
}

#[test]
fn link_down_stops_sending_and_link_up_resyncs() {
    let mut s = ready(1);
    let _ = s.handle(ms(100), Input::LinkDown);
    let _ = s.handle(ms(101), local(Event::New, make_state(1)));
    assert_eq!(s.poll_at(), None);
    assert!(s.poll(ms(500)).is_empty());
    let a = s.handle(ms(600), Input::LinkUp);
    let m = sent(&a);
    assert!(
        matches!(m[0].sections[..], [Section::BulkRequest(_)]),
        "{:?}",
        m[0].sections
    );
    assert!(!s.holding_demotion(), "no hold after boot");
    // The peer's first message triggers a full resync carrying the state.
    let _ = s.handle(
        ms(601),
        Input::Received(peer_msg(5, 0, vec![Section::BulkRequest(7)])),
    );
    let m = sent(&s.poll(ms(601)));
    assert!(m.iter().any(|m| {
        m.sections
            .iter()
            .any(|x| matches!(x, Section::Update(v) if v.len() == 1))
    }));
}

#[test]
fn stats_serialize() {
    let s = ready(1);
    let v = serde_json::to_value(s.stats()).unwrap();
    for k in [
        "sent_packets",
        "received_packets",
        "resent",
        "acks_sent",
        "nacks_received",
        "bulk_requests_sent",
        "bulk_ends_received",
        "bad_mac",
        "bad_version",
        "truncated",
        "bad_length",
        "unknown_action",
        "stale",
        "from_self",
        "last_bulk",
        "tx_seq",
        "rx_expected",
        "authenticated",
    ] {
        assert!(v.get(k).is_some(), "{k}");
    }
    assert_eq!(v["bulk_ends_received"], 1);
    assert!(format!("{:?}", s.config()).contains("<redacted>"));
    assert!(!format!("{:?}", s.config()).contains("sync-key"));
}

// ----- two nodes over a lossy, reordering link -----

/// Random traffic on A, then quiet: B's kernel equals A's, no TCP state went backwards on B,
/// and traffic stops (no echo loops).
fn converge(seed: u64, loss: u64, events: usize) {
    let mut w = World::new(seed, loss, b"k", b"k");
    w.run_until(Instant::from_millis(1500));
    for _ in 0..events {
        let n = 1 + w.rng.below(3);
        for _ in 0..n {
            w.random_event(0);
        }
        let step = w.rng.below(4000);
        let t = w.now + Duration::from_micros(step);
        w.run_until(t);
    }
    w.run_until(w.now + Duration::from_secs(15));
    assert_eq!(
        w.kernel(1),
        w.kernel(0),
        "seed {seed} loss {loss}: tables differ (a {} b {})",
        w.nodes[0].kernel.len(),
        w.nodes[1].kernel.len()
    );
    assert!(
        w.nodes[1].backwards.is_empty(),
        "seed {seed}: TCP backwards {:?}",
        w.nodes[1].backwards
    );
    assert!(w.nodes.iter().all(|n| !n.holding), "seed {seed}: hold kept");
    // Quiescent: nothing more is sent but one heartbeat a second.
    let data = |w: &World| -> Vec<u64> {
        w.nodes
            .iter()
            .map(|n| n.sent - n.sync.stats().heartbeats_sent)
            .collect()
    };
    let before = data(&w);
    let beats = w.nodes[0].sync.stats().heartbeats_sent;
    w.run_until(w.now + Duration::from_secs(30));
    assert_eq!(before, data(&w), "seed {seed}: still talking");
    let beats = w.nodes[0].sync.stats().heartbeats_sent - beats;
    assert!(
        (29..=31).contains(&beats),
        "seed {seed}: {beats} heartbeats in 30 s"
    );
    // (With loss, three heartbeats in a row can go: a silence then is what happened.)
    assert!(
        loss > 0 || w.nodes.iter().all(|n| !n.sync.peer_silent()),
        "seed {seed}: a peer taken as silent"
    );
    // Bounded traffic: far fewer messages than a loop would make.
    let bound = 40 * events as u64 + 200;
    let total: u64 = before.iter().sum();
    assert!(
        total < bound,
        "seed {seed}: {total} messages (heartbeats aside) for {events} events"
    );
}

#[test]
fn converges_without_loss() {
    for seed in 0..10 {
        converge(seed, 0, 300);
    }
}

#[test]
fn converges_with_loss_and_reordering() {
    for seed in 0..40 {
        let loss = [5, 10, 20, 30][(seed % 4) as usize];
        converge(seed, loss, 200);
    }
}

#[test]
fn bulk_after_reboot_brings_b_to_a() {
    for seed in 0..10 {
        let mut w = World::new(100 + seed, if seed % 2 == 0 { 0 } else { 20 }, b"k", b"k");
        w.run_until(Instant::from_millis(1500));
        for _ in 0..400 {
            w.random_event(0);
        }
        w.run_until(w.now + Duration::from_secs(5));
        assert_eq!(w.kernel(1), w.kernel(0));
        w.reboot(1);
        assert!(w.nodes[1].kernel.is_empty());
        // B holds its demotion until the bulk ends.
        w.run_until(w.now + Duration::from_millis(1));
        assert!(w.nodes[1].holding, "seed {seed}");
        w.run_until(w.now + Duration::from_secs(15));
        assert_eq!(w.kernel(1), w.kernel(0), "seed {seed}");
        assert!(!w.nodes[1].holding);
        assert_eq!(w.nodes[1].bulk_done, 1, "seed {seed}");
        assert!(!w.kernel(1).is_empty());
        // A's later changes still reach B (A saw B's new epoch).
        for _ in 0..50 {
            w.random_event(0);
        }
        w.run_until(w.now + Duration::from_secs(15));
        assert_eq!(w.kernel(1), w.kernel(0), "seed {seed} after reboot");
    }
}

#[test]
fn reboot_of_a_gets_its_states_back_from_b() {
    let mut w = World::new(7, 10, b"k", b"k");
    w.run_until(Instant::from_millis(1500));
    for _ in 0..200 {
        w.random_event(0);
    }
    w.run_until(w.now + Duration::from_secs(5));
    let before = w.kernel(0);
    w.reboot(0);
    w.run_until(w.now + Duration::from_secs(15));
    assert_eq!(w.kernel(0), before);
    assert_eq!(w.nodes[0].bulk_done, 1);
}

#[test]
fn big_bulk_is_sliced_and_complete() {
    let mut w = World::new(3, 5, b"k", b"k");
    w.run_until(Instant::from_millis(1500));
    for n in 0..5000 {
        let s = make_state(100_000 + n);
        w.local(0, Event::New, s);
    }
    w.run_until(w.now + Duration::from_secs(10));
    w.reboot(1);
    w.run_until(w.now + Duration::from_secs(15));
    assert_eq!(w.kernel(1).len(), 5000);
    assert_eq!(w.kernel(1), w.kernel(0));
}

#[test]
fn a_burst_beyond_the_flight_limit_waits_for_acks_instead_of_evicting() {
    let mut w = World::new(4, 0, b"k", b"k");
    w.run_until(Instant::from_millis(1500));
    // 80,000 new states at once: ~8,900 full messages, more than the window (8,192) holds.
    for n in 0..80_000 {
        w.local(0, Event::New, make_state(200_000 + n));
    }
    w.run_until(w.now + Duration::from_secs(10));
    assert_eq!(w.kernel(1).len(), 80_000);
    assert_eq!(w.kernel(1), w.kernel(0));
    let st = w.nodes[0].sync.stats();
    assert_eq!(st.window_evicted, 0, "{st:?}");
    assert_eq!(st.full_resyncs, 0, "{st:?}");
    assert_eq!(st.resent, 0, "{st:?}");
}

#[test]
fn both_nodes_with_traffic_converge() {
    // After a failover both nodes see traffic: B takes over A's states and creates its own.
    for seed in 0..10 {
        let mut w = World::new(500 + seed, 10, b"k", b"k");
        w.run_until(Instant::from_millis(1500));
        for _ in 0..150 {
            w.random_event(0);
            let t = w.now + Duration::from_micros(w.rng.below(3000));
            w.run_until(t);
        }
        w.run_until(w.now + Duration::from_secs(5));
        for _ in 0..150 {
            w.random_event(1);
            let t = w.now + Duration::from_micros(w.rng.below(3000));
            w.run_until(t);
        }
        w.run_until(w.now + Duration::from_secs(15));
        assert_eq!(w.kernel(0), w.kernel(1), "seed {seed}");
        assert!(w.nodes[0].backwards.is_empty(), "seed {seed}");
        assert!(w.nodes[1].backwards.is_empty(), "seed {seed}");
    }
}

#[test]
fn wrong_key_injects_nothing() {
    let mut w = World::new(11, 0, b"key-one", b"key-two");
    w.run_until(Instant::from_millis(1500));
    for _ in 0..100 {
        w.random_event(0);
    }
    w.run_until(w.now + Duration::from_secs(15));
    assert!(w.nodes[1].kernel.is_empty());
    assert_eq!(w.nodes[1].injected, 0);
    assert!(w.nodes[1].sync.stats().bad_mac > 0);
    assert!(w.nodes[0].sync.stats().bad_mac > 0);
    // Both gave up their boot bulk and released the hold.
    assert!(!w.nodes[0].holding && !w.nodes[1].holding);
    assert_eq!(w.nodes[1].sync.stats().bulk_failed, 1);
}

#[test]
fn no_key_on_both_sides_still_syncs() {
    let mut w = World::new(12, 0, b"", b"");
    w.run_until(Instant::from_millis(1500));
    for _ in 0..50 {
        w.random_event(0);
    }
    w.run_until(w.now + Duration::from_secs(5));
    assert_eq!(w.kernel(1), w.kernel(0));
    assert!(!w.nodes[1].sync.stats().authenticated);
}

#[test]
fn advance_is_monotonic() {
    let mut t = TcpState::None;
    for _ in 0..12 {
        let n = advance(t);
        assert!(n.rank() >= t.rank());
        t = n;
    }
    assert_eq!(t, TcpState::Close);
}

/// Delivers every `Send` of `actions` to `to`, returns what `to` did.
fn deliver(to: &mut Sync, now: Instant, actions: &[Action]) -> Vec<Action> {
    let mut out = Vec::new();
    for a in actions {
        if let Action::Send(bytes) = a {
            out.extend(to.handle(now, Input::Received(bytes.clone())));
        }
    }
    out
}

#[test]
fn concurrent_changes_resolve_the_same_way_on_both_nodes() {
    let mut a = ready(1);
    let mut b = ready(2);
    let mut st = make_state(7);
    let _ = a.handle(ms(100), local(Event::New, st));
    let m = a.poll(ms(102));
    let _ = deliver(&mut b, ms(103), &m);
    let v = a.state(st.id).unwrap().0.version;
    assert_eq!(b.state(st.id).unwrap().0.version, v);
    // Both nodes change it at once, from the same clock.
    st.tcp_state = TcpState::Established;
    st.mark = 1;
    let _ = a.handle(ms(110), local(Event::Update, st));
    st.mark = 2;
    let _ = b.handle(ms(110), local(Event::Update, st));
    let ma = a.poll(ms(112));
    let mb = b.poll(ms(112));
    // Same Lamport time, told apart by the writer's low byte.
    let (va, vb) = (
        a.state(st.id).unwrap().0.version,
        b.state(st.id).unwrap().0.version,
    );
    assert_eq!(va >> 8, vb >> 8);
    assert_eq!((va & 0xff, vb & 0xff), (1, 2));
    let _ = deliver(&mut b, ms(113), &ma);
    let _ = deliver(&mut a, ms(113), &mb);
    // The higher node id (b) wins on both.
    assert_eq!(a.state(st.id).unwrap().0.mark, 2);
    assert_eq!(b.state(st.id).unwrap().0.mark, 2);
    assert_eq!(b.stats().stale, 1);
}

proptest::proptest! {
    /// Whatever arrives on the sync link, the machine does not panic and keeps its invariants.
    #[test]
    fn random_messages_never_panic(
        msgs in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300), 1..8),
        states in proptest::collection::vec(crate::wire::pfsync::tests::arb_state(), 0..6),
        seqs in proptest::collection::vec(proptest::prelude::any::<u32>(), 6),
    ) {
        let mut c = Config::new(1);
        c.window = 4;
        let mut s = Sync::new(c, ms(0));
        let _ = s.poll(ms(0));
        let mut t = 1;
        for m in msgs {
            let _ = s.handle(ms(t), Input::Received(m));
            t += 1;
        }
        // Well-formed messages with arbitrary records, acks and nacks.
        for (i, st) in states.iter().enumerate() {
            let _ = s.handle(ms(t), local(Event::New, make_state(i as u32)));
            let sections = vec![
                Section::Update(vec![*st]),
                Section::Delete(vec![wire::Delete { id: st.id, version: st.version }]),
                Section::Ack(vec![SeqRange { first: seqs[i], last: seqs[i].wrapping_add(3) }]),
                Section::Nack(vec![SeqRange { first: seqs[5 - i], last: seqs[5 - i].wrapping_add(100) }]),
                Section::BulkRequest(seqs[i]),
            ];
            let m = Repr { flags: FLAG_SEQ, node_id: 2, epoch: 3, seq: seqs[i], sections, skipped: 0 };
            let _ = s.handle(ms(t), Input::Received(m.to_bytes(None)));
            let _ = s.poll(ms(t + 300));
            t += 301;
        }
        for _ in 0..50 {
            match s.poll_at() {
                Some(at) => { let _ = s.poll(at.max(ms(t))); t += 1; }
                None => break,
            }
        }
        proptest::prop_assert!(s.stats().window <= 4);
    }
}

#[test]
fn nack_for_an_evicted_seq_pushes_the_whole_table() {
    let mut c = cfg(1);
    c.max_retries = 0;
    let mut a = Sync::new(c, ms(0));
    let _ = a.poll(ms(0));
    let _ = a.handle(
        ms(1),
        Input::Received(peer_msg(
            1,
            FLAG_SEQ | FLAG_BULK,
            vec![Section::BulkEnd(0, 0)],
        )),
    );
    for n in 0..6 {
        let _ = a.handle(ms(10 + n), local(Event::New, make_state(n as u32)));
        let _ = a.poll(ms(12 + n));
    }
    assert_eq!(a.stats().window, 6);
    // 102..105 are acknowledged; 100 and 101 are not and, with no retries allowed, are dropped
    // from the window when their resend is due.
    let m = peer_msg(
        2,
        0,
        vec![Section::Ack(vec![SeqRange {
            first: 102,
            last: 105,
        }])],
    );
    let _ = a.handle(ms(20), Input::Received(m));
    let _ = a.poll(ms(13 + 200));
    assert_eq!(a.stats().window, 0);
    assert_eq!(a.stats().window_evicted, 2);
    // The peer ACKs the rest and NACKs our first message (seq 100), which we no longer have.
    let m = peer_msg(
        2,
        0,
        vec![
            Section::Ack(vec![SeqRange {
                first: 102,
                last: 105,
            }]),
            Section::Nack(vec![SeqRange {
                first: 100,
                last: 100,
            }]),
        ],
    );
    let _ = a.handle(ms(30), Input::Received(m));
    assert_eq!(a.stats().window, 0);
    assert!(a.bulk_sending());
    assert_eq!(a.stats().full_resyncs, 1);
    let m = sent(&a.poll(ms(30)));
    let n: usize = m
        .iter()
        .flat_map(|m| m.sections.iter())
        .map(|x| match x {
            Section::Update(v) => v.len(),
            _ => 0,
        })
        .sum();
    assert_eq!(n, 6);
    let end = ack_and_poll(&mut a, ms(31), 100, &m);
    assert!(
        end.last()
            .unwrap()
            .sections
            .iter()
            .any(|x| matches!(x, Section::BulkEnd(6, _)))
    );
}

#[test]
fn send_bulk_and_flushed() {
    let mut a = ready(1);
    let _ = a.handle(ms(10), local(Event::New, make_state(1)));
    let _ = a.poll(ms(12));
    let _ = a.handle(ms(20), Input::SendBulk);
    let m = sent(&a.poll(ms(20)));
    assert_eq!(m.len(), 1);
    let end = ack_and_poll(&mut a, ms(21), 2, &m);
    assert_eq!(end.len(), 1);
    assert!(m.iter().chain(end.iter()).all(|m| m.flags & FLAG_BULK != 0));
    assert!(
        matches!(end[0].sections[..], [Section::BulkEnd(1, _)]),
        "{:?}",
        end[0].sections
    );
    // Our table was flushed: the peer is told to clear our states, and we ask for its table.
    let a2 = a.handle(ms(30), Input::Flushed);
    let m = sent(&a2);
    assert_eq!(m[0].sections, vec![Section::Clear(vec![1])]);
    assert!(
        matches!(m[1].sections[..], [Section::BulkRequest(_)]),
        "{:?}",
        m[1].sections
    );
    assert!(a.is_empty());
    assert!(a.bulk_pending());
    assert!(!a.holding_demotion());
}

#[test]
fn our_states_coming_back_in_a_bulk_stay_ours() {
    let mut a = ready(1);
    let mut b = ready(2);
    let st = make_state(7);
    let _ = a.handle(ms(100), local(Event::New, st));
    let m = a.poll(ms(102));
    let _ = deliver(&mut b, ms(103), &m);
    let _ = b.handle(ms(110), Input::SendBulk);
    let m = b.poll(ms(110));
    let got = deliver(&mut a, ms(111), &m);
    assert!(injected(&got).is_empty(), "{got:?}");
    assert_eq!(a.state(st.id).unwrap().1, Origin::Local);
    // So its later expiry here is still sent.
    let _ = a.handle(ms(120), local(Event::Destroy, st));
    let m = a.poll(ms(122));
    let got = deliver(&mut b, ms(123), &m);
    assert_eq!(
        got.iter()
            .filter(|x| matches!(x, Action::Remove(_)))
            .count(),
        1
    );
    assert!(b.is_empty());
}
