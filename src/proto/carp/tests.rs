//! The machine on a virtual clock: every timer, every election rule, verification and counters.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use super::*;
use crate::proto::time::Instant;
use crate::wire::carp::{self as wcarp, Repr};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);
const PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
const SEED: u64 = 0x1000;

fn cfg(advskew: u8) -> VhidConfig {
    let mut c = VhidConfig::new(1, b"secret", vec![VIP], vec![]);
    c.advskew = advskew;
    c.seed = SEED;
    c
}

fn ms(n: u64) -> Instant {
    Instant::from_millis(n)
}

/// A valid advert from the peer for `cfg`'s VHID and addresses.
fn advert_from_peer(c: &VhidConfig, advbase: u8, advskew: u8, counter: u64) -> Input {
    let mut repr = Repr::advert(c.vhid, advbase, advskew);
    repr.counter = counter;
    repr.sign(wcarp::bsd_key(&c.key), &c.v4, &c.v6);
    Input::Advert { src: PEER, repr }
}

fn sent(actions: &[Action]) -> Vec<Repr> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::SendAdvert(r) => Some(*r),
            _ => None,
        })
        .collect()
}

fn transitions(actions: &[Action]) -> Vec<(State, State, Reason)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Transition { from, to, reason } => Some((*from, *to, *reason)),
            _ => None,
        })
        .collect()
}

/// A machine in BACKUP since `t0`.
fn backup(c: VhidConfig, t0: Instant) -> Machine {
    let mut m = Machine::new(c, t0);
    let a = m.handle(t0, Input::LinkUp);
    assert_eq!(
        a,
        vec![
            Action::Transition {
                from: State::Init,
                to: State::Backup,
                reason: Reason::LinkUp
            },
            Action::RemoveVips
        ]
    );
    m
}

/// A machine that became MASTER by the master-down timer; returns it and the time it did.
fn master(c: VhidConfig) -> (Machine, Instant) {
    let mut m = backup(c, ms(0));
    let t = m.poll_at().unwrap();
    let a = m.poll(t);
    assert_eq!(m.state(), State::Master, "{a:?}");
    (m, t)
}

#[test]
fn starts_in_init_without_deadline() {
    let m = Machine::new(cfg(0), ms(5));
    assert_eq!(m.state(), State::Init);
    assert_eq!(m.since(), ms(5));
    assert_eq!(m.poll_at(), None);
    assert_eq!(
        format!("{} {} {}", State::Init, State::Backup, State::Master),
        "INIT BACKUP MASTER"
    );
}

#[test]
fn link_up_needs_an_address() {
    let mut m = Machine::new(VhidConfig::new(1, b"k", vec![], vec![]), ms(0));
    assert!(m.handle(ms(1), Input::LinkUp).is_empty());
    assert_eq!(m.state(), State::Init);
    // The address arrives by reconfiguration: INIT -> BACKUP.
    let a = m.handle(ms(2), Input::Reconfigure(cfg(0)));
    assert_eq!(
        transitions(&a),
        vec![(State::Init, State::Backup, Reason::LinkUp)]
    );
    assert_eq!(m.poll_at(), Some(ms(2) + Duration::from_secs(3)));
}

#[test]
fn master_down_timer_uses_configured_skew() {
    let mut c = cfg(100);
    c.preempt = false;
    let mut m = backup(c, ms(0));
    // 3·advbase + 100/256 s = 3.390625 s, unaffected by demotion.
    assert!(m.handle(ms(10), Input::Demotion(240)).is_empty());
    let deadline = Instant::from_micros(3_390_625);
    assert_eq!(m.poll_at(), Some(deadline));
    assert!(m.poll(deadline - Duration::from_micros(1)).is_empty());
    assert_eq!(m.state(), State::Backup);
    let a = m.poll(deadline);
    assert_eq!(a.len(), 4);
    assert_eq!(
        a[0],
        Action::Transition {
            from: State::Backup,
            to: State::Master,
            reason: Reason::MasterDown
        }
    );
    assert_eq!(a[1], Action::InstallVips);
    let Action::SendAdvert(r) = a[2] else {
        panic!("{a:?}")
    };
    assert_eq!(a[3], Action::Announce);
    // The advert carries the demoted skew, the seeded counter and a valid digest.
    assert_eq!((r.vhid, r.advbase, r.advskew, r.counter), (1, 1, 240, SEED));
    assert!(r.verify_md(b"secret", &[VIP], &[]));
    assert_eq!(m.since(), deadline);
    assert_eq!(m.stats().became_master, 1);
}

#[test]
fn master_advertises_every_interval_and_announces_twice() {
    let (mut m, t0) = master(cfg(128));
    let interval = Duration::from_millis(1500); // 1 + 128/256 s
    assert_eq!(m.poll_at(), Some(t0 + interval));
    let a = m.poll(t0 + interval);
    assert_eq!(a[0], Action::Announce, "{a:?}");
    assert_eq!(sent(&a).len(), 1);
    assert_eq!(sent(&a)[0].counter, SEED + 1);
    let mut t = t0 + interval;
    for i in 0..10u64 {
        assert_eq!(m.poll_at(), Some(t + interval));
        assert!(m.poll(t + interval - Duration::from_micros(1)).is_empty());
        t += interval;
        let a = m.poll(t);
        // No more announcements: only the advert.
        assert_eq!(a.len(), 1, "{a:?}");
        assert_eq!(sent(&a)[0].counter, SEED + 2 + i);
    }
    assert_eq!(m.stats().adverts_sent, 12);
    assert_eq!(m.state(), State::Master);
}

#[test]
fn late_poll_reschedules_from_now() {
    let (mut m, t0) = master(cfg(0));
    let late = t0 + Duration::from_secs(5);
    let a = m.poll(late);
    assert_eq!(sent(&a).len(), 1, "one advert, not a burst: {a:?}");
    assert_eq!(m.poll_at(), Some(late + Duration::from_secs(1)));
}

#[test]
fn backup_follows_a_better_master() {
    let c = cfg(100);
    let mut m = backup(c.clone(), ms(0));
    for i in 0..100u64 {
        let t = ms(1000 * i + 500);
        assert!(m.handle(t, advert_from_peer(&c, 1, 0, i)).is_empty());
        assert_eq!(m.poll_at(), Some(t + Duration::from_micros(3_390_625)));
        assert!(m.poll(t).is_empty());
    }
    assert_eq!(m.state(), State::Backup);
    assert_eq!(m.master(), Some(PEER));
    assert_eq!(m.stats().adverts_received, 100);
    // Silence: the master-down timer fires 3.39 s after the last advert.
    let last = ms(99_500);
    assert!(m.poll(last + Duration::from_micros(3_390_624)).is_empty());
    let a = m.poll(last + Duration::from_micros(3_390_625));
    assert_eq!(
        transitions(&a),
        vec![(State::Backup, State::Master, Reason::MasterDown)]
    );
    assert_eq!(m.master(), None);
}

#[test]
fn master_yields_to_equal_or_better() {
    for (mine, theirs, yields) in [
        (0u8, 0u8, true),
        (100, 50, true),
        (0, 100, false),
        (50, 51, false),
    ] {
        let c = cfg(mine);
        let (mut m, t0) = master(c.clone());
        let t = t0 + Duration::from_millis(10);
        let a = m.handle(t, advert_from_peer(&c, 1, theirs, 7));
        if yields {
            assert_eq!(
                a,
                vec![
                    Action::Transition {
                        from: State::Master,
                        to: State::Backup,
                        reason: Reason::PeerPreferred
                    },
                    Action::RemoveVips
                ]
            );
            assert_eq!(
                m.poll_at(),
                Some(t + election::master_down_interval(1, mine))
            );
            assert_eq!(m.master(), Some(PEER));
        } else {
            assert!(a.is_empty(), "{mine} vs {theirs}: {a:?}");
            assert_eq!(m.state(), State::Master);
        }
    }
    // advbase dominates: (2, 0) is less preferred than (1, 240).
    let c = cfg(240);
    let (mut m, t0) = master(c.clone());
    assert!(m.handle(t0, advert_from_peer(&c, 2, 0, 1)).is_empty());
}

#[test]
fn preempt_on_takes_over_a_slower_master_at_once() {
    let c = cfg(0);
    let mut m = backup(c.clone(), ms(0));
    let a = m.handle(ms(500), advert_from_peer(&c, 1, 100, 1));
    assert_eq!(a.len(), 4, "{a:?}");
    assert_eq!(
        transitions(&a),
        vec![(State::Backup, State::Master, Reason::Preempt)]
    );
    assert_eq!(a[1], Action::InstallVips);
    assert_eq!(sent(&a)[0].advskew, 0);
    assert_eq!(a[3], Action::Announce);
}

#[test]
fn preempt_off_accepts_a_slower_master() {
    let mut c = cfg(0);
    c.preempt = false;
    let mut m = backup(c.clone(), ms(0));
    for i in 0..20u64 {
        assert!(
            m.handle(ms(500 + 1000 * i), advert_from_peer(&c, 1, 100, i))
                .is_empty()
        );
        assert!(m.poll(ms(500 + 1000 * i + 999)).is_empty());
    }
    assert_eq!(m.state(), State::Backup);
    // An equal master is not preempted either way.
    let mut c = cfg(50);
    c.preempt = true;
    let mut m = backup(c.clone(), ms(0));
    assert!(m.handle(ms(100), advert_from_peer(&c, 1, 50, 1)).is_empty());
    assert_eq!(m.state(), State::Backup);
}

#[test]
fn bow_out_makes_a_backup_take_over_at_once_even_without_preempt() {
    let mut c = cfg(100);
    c.preempt = false;
    let mut m = backup(c.clone(), ms(0));
    assert!(m.handle(ms(100), advert_from_peer(&c, 1, 0, 1)).is_empty());
    let a = m.handle(ms(200), advert_from_peer(&c, 255, 255, 2));
    assert_eq!(
        transitions(&a),
        vec![(State::Backup, State::Master, Reason::MasterWillTimeOut)]
    );
    // A master hearing a bow-out ignores it.
    let (mut m, t0) = master(cfg(0));
    assert!(m.handle(t0, advert_from_peer(&c, 255, 255, 3)).is_empty());
}

#[test]
fn shutdown_as_master_bows_out_then_stays_init() {
    let (mut m, t0) = master(cfg(0));
    let t = t0 + Duration::from_millis(300);
    let a = m.handle(t, Input::Shutdown);
    assert_eq!(a.len(), 3, "{a:?}");
    let Action::SendAdvert(r) = a[0] else {
        panic!("{a:?}")
    };
    assert!(r.is_bow_out());
    assert_eq!((r.advbase, r.advskew, r.vhid), (255, 255, 1));
    assert!(r.verify_md(b"secret", &[VIP], &[]));
    assert_eq!(
        a[1],
        Action::Transition {
            from: State::Master,
            to: State::Init,
            reason: Reason::Shutdown
        }
    );
    assert_eq!(a[2], Action::RemoveVips);
    assert_eq!(m.poll_at(), None);
    assert_eq!(m.stats().bow_outs_sent, 1);
    assert!(m.stopped());
    // Nothing brings it back.
    assert!(m.handle(t, Input::LinkUp).is_empty());
    assert!(m.handle(t, Input::Shutdown).is_empty());
    assert!(m.handle(t, Input::Reconfigure(cfg(0))).is_empty());
    assert_eq!(m.state(), State::Init);
}

#[test]
fn shutdown_as_backup_sends_nothing() {
    let mut m = backup(cfg(0), ms(0));
    let a = m.handle(ms(1), Input::Shutdown);
    assert_eq!(
        transitions(&a),
        vec![(State::Backup, State::Init, Reason::Shutdown)]
    );
    assert!(sent(&a).is_empty());
}

#[test]
fn demotion_makes_a_master_advertise_at_once() {
    let (mut m, t0) = master(cfg(0));
    let t = t0 + Duration::from_millis(250);
    let a = m.handle(t, Input::Demotion(240));
    assert_eq!(sent(&a).len(), 1, "{a:?}");
    assert_eq!(sent(&a)[0].advskew, 240);
    assert_eq!(m.advertised_skew(), 240);
    assert_eq!(m.state(), State::Master);
    // The period follows the advertised skew.
    assert_eq!(m.poll_at(), Some(t0 + Duration::from_secs(1))); // pending announcement first
    m.poll(t0 + Duration::from_secs(1));
    assert_eq!(m.poll_at(), Some(t + Duration::from_micros(1_937_500)));
    // The same total again changes nothing.
    assert!(m.handle(t, Input::Demotion(240)).is_empty());
    // Lifting it advertises at once too.
    let a = m.handle(t + Duration::from_millis(1), Input::Demotion(0));
    assert_eq!(sent(&a)[0].advskew, 0);
    // A backup just remembers it.
    let mut b = backup(cfg(10), ms(0));
    assert!(b.handle(ms(1), Input::Demotion(100)).is_empty());
    assert_eq!(b.advertised_skew(), 110);
    assert_eq!(b.demotion(), 100);
}

#[test]
fn demoted_backup_does_not_preempt_and_yields_faster() {
    // A demoted backup compares with its demoted skew (FreeBSD): skew 0 + 240 vs a master at 100.
    let c = cfg(0);
    let mut m = backup(c.clone(), ms(0));
    m.handle(ms(1), Input::Demotion(240));
    assert!(m.handle(ms(2), advert_from_peer(&c, 1, 100, 1)).is_empty());
    assert_eq!(m.state(), State::Backup);
    // Demotion lifted: the next advert from the slower master is preempted.
    m.handle(ms(3), Input::Demotion(0));
    let a = m.handle(ms(4), advert_from_peer(&c, 1, 100, 2));
    assert_eq!(
        transitions(&a),
        vec![(State::Backup, State::Master, Reason::Preempt)]
    );
}

/// Maintenance on the master: the handover costs one advert round trip, no timeout.
#[test]
fn demotion_hands_over_within_one_round_trip() {
    let one_way = Duration::from_millis(1);
    let ca = VhidConfig { seed: 1, ..cfg(0) };
    let cb = VhidConfig {
        seed: 2,
        ..cfg(100)
    };
    let mut a = backup(ca, ms(0));
    let t = a.poll_at().unwrap();
    a.poll(t);
    let mut b = backup(cb, ms(500));
    // Steady state: b follows a.
    let mut now = t;
    for _ in 0..5 {
        now = a.poll_at().unwrap();
        for r in sent(&a.poll(now)) {
            assert!(
                b.handle(now + one_way, Input::Advert { src: PEER, repr: r })
                    .is_empty()
            );
        }
    }
    assert_eq!((a.state(), b.state()), (State::Master, State::Backup));
    // Maintenance: a is demoted by 240.
    let t1 = now + Duration::from_millis(100);
    let out = a.handle(t1, Input::Demotion(240));
    let ad = sent(&out);
    assert_eq!(ad.len(), 1);
    let out_b = b.handle(
        t1 + one_way,
        Input::Advert {
            src: PEER,
            repr: ad[0],
        },
    );
    assert_eq!(
        transitions(&out_b),
        vec![(State::Backup, State::Master, Reason::Preempt)]
    );
    let bd = sent(&out_b);
    let out_a = a.handle(
        t1 + one_way * 2,
        Input::Advert {
            src: PEER,
            repr: bd[0],
        },
    );
    assert_eq!(
        transitions(&out_a),
        vec![(State::Master, State::Backup, Reason::PeerPreferred)]
    );
    assert_eq!(out_a.last(), Some(&Action::RemoveVips));
    // Leave maintenance: a preempts on b's next advert.
    let t2 = t1 + Duration::from_secs(10);
    a.handle(t2, Input::Demotion(0));
    let tb = b.poll_at().unwrap().max(t2);
    let bd = sent(&b.poll(tb));
    let out_a = a.handle(
        tb + one_way,
        Input::Advert {
            src: PEER,
            repr: bd[0],
        },
    );
    assert_eq!(
        transitions(&out_a),
        vec![(State::Backup, State::Master, Reason::Preempt)]
    );
}

#[test]
fn link_down_goes_init_and_removes_vips() {
    let (mut m, t0) = master(cfg(0));
    let a = m.handle(t0, Input::LinkDown);
    assert_eq!(
        a,
        vec![
            Action::Transition {
                from: State::Master,
                to: State::Init,
                reason: Reason::LinkDown
            },
            Action::RemoveVips
        ]
    );
    assert_eq!(m.poll_at(), None);
    assert!(m.handle(t0, Input::LinkDown).is_empty());
    let a = m.handle(t0 + Duration::from_secs(1), Input::LinkUp);
    assert_eq!(
        transitions(&a),
        vec![(State::Init, State::Backup, Reason::LinkUp)]
    );
    // Adverts in INIT are verified and counted but change nothing.
    let mut i = Machine::new(cfg(0), ms(0));
    assert!(
        i.handle(ms(1), advert_from_peer(&cfg(0), 1, 0, 1))
            .is_empty()
    );
    assert_eq!(i.stats().adverts_received, 1);
}

#[test]
fn bad_adverts_are_counted_and_ignored() {
    let c = cfg(50);
    let (mut m, t0) = master(c.clone());
    let valid = |counter| match advert_from_peer(&c, 1, 0, counter) {
        Input::Advert { repr, .. } => repr,
        _ => unreachable!(),
    };
    let mut wrong_key = valid(1);
    wrong_key.sign(b"other", &[VIP], &[]);
    let mut wrong_vip = valid(2);
    wrong_vip.sign(b"secret", &[Ipv4Addr::new(10, 0, 0, 101)], &[]);
    let mut wrong_vhid = valid(3);
    wrong_vhid.vhid = 2;
    wrong_vhid.sign(b"secret", &[VIP], &[]);
    let mut wrong_version = valid(4);
    wrong_version.version = 3;
    let mut wrong_type = valid(5);
    wrong_type.kind = 2;
    let mut tampered = valid(6);
    tampered.counter += 1;
    for repr in [
        wrong_key,
        wrong_vip,
        wrong_vhid,
        wrong_version,
        wrong_type,
        tampered,
    ] {
        assert!(m.handle(t0, Input::Advert { src: PEER, repr }).is_empty());
    }
    assert_eq!(m.state(), State::Master);
    let s = m.stats();
    assert_eq!(
        (s.bad_auth, s.bad_vhid, s.bad_version, s.bad_type),
        (3, 1, 1, 1)
    );
    assert_eq!(s.adverts_received, 0);
    m.count_drop(DropReason::BadTtl);
    m.count_drop(DropReason::from(crate::wire::Error::Truncated));
    assert_eq!((m.stats().bad_ttl, m.stats().bad_len), (1, 1));
    // A backup does not re-arm its timer on a bad advert.
    let mut b = backup(c.clone(), ms(0));
    let deadline = b.poll_at();
    b.handle(
        ms(1000),
        Input::Advert {
            src: PEER,
            repr: wrong_key,
        },
    );
    assert_eq!(b.poll_at(), deadline);
}

#[test]
fn counter_is_adopted_from_the_peer() {
    let c = cfg(100);
    let mut m = backup(c.clone(), ms(0));
    m.handle(ms(100), advert_from_peer(&c, 1, 0, 0xdead_beef));
    let t = m.poll_at().unwrap();
    let a = m.poll(t);
    assert_eq!(sent(&a)[0].counter, 0xdead_bef0);
    // Wrap-around is fine.
    m.handle(t, advert_from_peer(&c, 1, 200, u64::MAX));
    let a = m.poll(m.poll_at().unwrap());
    assert_eq!(sent(&a)[0].counter, 0);
}

#[test]
fn reconfigure() {
    let (mut m, t0) = master(cfg(0));
    // New addresses while MASTER: install, announce, advertise with the new digest.
    let mut c2 = cfg(0);
    c2.v4.push(Ipv4Addr::new(10, 0, 1, 1));
    c2.v6.push("2001:db8::1".parse().unwrap());
    let a = m.handle(t0, Input::Reconfigure(c2.clone()));
    assert_eq!(a[0], Action::InstallVips);
    assert_eq!(a[1], Action::Announce);
    let r = sent(&a)[0];
    assert!(r.verify_md(b"secret", &c2.v4, &c2.v6));
    assert!(!r.verify_md(b"secret", &[VIP], &[]));
    // Same config again: nothing.
    assert!(m.handle(t0, Input::Reconfigure(c2.clone())).is_empty());
    // No address left: INIT.
    let empty = VhidConfig {
        v4: vec![],
        v6: vec![],
        ..c2.clone()
    };
    let a = m.handle(t0, Input::Reconfigure(empty));
    assert_eq!(
        transitions(&a),
        vec![(State::Master, State::Init, Reason::NoAddresses)]
    );
    // Addresses back with the link up: BACKUP.
    let a = m.handle(t0, Input::Reconfigure(c2.clone()));
    assert_eq!(
        transitions(&a),
        vec![(State::Init, State::Backup, Reason::LinkUp)]
    );
    // A new vhid restarts from INIT.
    let c3 = VhidConfig { vhid: 9, ..c2 };
    let a = m.handle(t0, Input::Reconfigure(c3));
    assert_eq!(
        transitions(&a),
        vec![
            (State::Backup, State::Init, Reason::Reconfigured),
            (State::Init, State::Backup, Reason::LinkUp)
        ]
    );
    assert_eq!(m.config().vhid, 9);
}

#[test]
fn long_password_counts_by_its_first_19_bytes() {
    let mut c = cfg(0);
    c.key = b"0123456789abcdefghijklmnop".to_vec();
    let mut m = backup(c.clone(), ms(0));
    let mut repr = Repr::advert(1, 1, 0);
    repr.counter = 5;
    repr.sign(b"0123456789abcdefghi", &[VIP], &[]);
    assert!(
        m.handle(ms(1), Input::Advert { src: PEER, repr })
            .is_empty()
    );
    assert_eq!(m.stats().adverts_received, 1);
    assert_eq!(m.stats().bad_auth, 0);
}

/// The captured ucarp advert is accepted by a machine configured like that ucarp.
#[test]
fn accepts_the_real_ucarp_advert() {
    let (ip, repr) = wcarp::parse_ipv4(&crate::wire::carp::tests::UCARP_IP).unwrap();
    let mut c = VhidConfig::new(7, b"secret", vec![Ipv4Addr::new(10, 99, 0, 100)], vec![]);
    c.advskew = 100;
    let mut m = backup(c, ms(0));
    assert!(
        m.handle(
            ms(10),
            Input::Advert {
                src: IpAddr::V4(ip.src),
                repr
            }
        )
        .is_empty()
    );
    assert_eq!(m.stats().adverts_received, 1);
    assert_eq!(m.master(), Some(IpAddr::V4(Ipv4Addr::new(10, 99, 0, 2))));
    // Our next advert continues ucarp's counter.
    let a = m.handle(
        ms(20),
        advert_from_peer(
            &VhidConfig::new(7, b"secret", vec![Ipv4Addr::new(10, 99, 0, 100)], vec![]),
            255,
            255,
            repr.counter,
        ),
    );
    assert_eq!(sent(&a)[0].counter, repr.counter.wrapping_add(1));
}

#[test]
fn config_validation_and_redacted_debug() {
    assert_eq!(cfg(0).validate(), Ok(()));
    assert_eq!(
        VhidConfig { vhid: 0, ..cfg(0) }.validate(),
        Err(ConfigError::VhidZero)
    );
    assert_eq!(
        VhidConfig {
            advbase: 0,
            ..cfg(0)
        }
        .validate(),
        Err(ConfigError::AdvbaseZero)
    );
    assert_eq!(
        VhidConfig {
            advskew: 255,
            ..cfg(0)
        }
        .validate(),
        Err(ConfigError::AdvskewTooLarge(255))
    );
    assert_eq!(
        VhidConfig {
            v4: vec![],
            ..cfg(0)
        }
        .validate(),
        Err(ConfigError::NoAddresses)
    );
    let dbg = format!("{:?}", cfg(0));
    assert!(
        !dbg.contains("secret") && !dbg.contains("115, 101"),
        "{dbg}"
    );
    // advbase 0 runs as 1.
    let mut m = backup(
        VhidConfig {
            advbase: 0,
            ..cfg(0)
        },
        ms(0),
    );
    assert_eq!(m.poll_at(), Some(ms(3000)));
    let a = m.poll(ms(3000));
    assert_eq!(sent(&a)[0].advbase, 1);
}

#[test]
fn actions_serialise_for_recordings() {
    let a = Action::Transition {
        from: State::Backup,
        to: State::Master,
        reason: Reason::MasterDown,
    };
    assert_eq!(
        serde_json::to_string(&a).unwrap(),
        r#"{"transition":{"from":"BACKUP","to":"MASTER","reason":"master_down"}}"#
    );
    assert_eq!(
        serde_json::to_string(&Action::InstallVips).unwrap(),
        r#""install_vips""#
    );
    let (mut m, t0) = master(cfg(0));
    let a = m.poll(t0 + Duration::from_secs(1));
    let json = serde_json::to_value(&a).unwrap();
    assert_eq!(json[1]["send_advert"]["vhid"], 1);
}
