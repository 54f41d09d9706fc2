//! Simulations: several nodes, each with one machine per VHID, over an in-memory link that loses
//! and delays adverts at random (seeded, so every failure replays). Adverts travel as real bytes
//! (`Repr::to_ipv4_bytes` → `wire::carp::parse_ipv4`), and a node's demotion is the sum of its
//! reasons (240 per interface down, 240 for maintenance), fed to all of its VHIDs as the actor
//! does. Invariants checked on every step: VIPs are installed exactly while MASTER, and every
//! `Transition.from` is the state the machine was in.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use super::*;
use crate::proto::time::Instant;
use crate::wire::carp as wcarp;

/// splitmix64: small, seedable, good enough to pick losses and delays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..=max`.
    fn upto(&mut self, max: u64) -> u64 {
        self.next() % (max + 1)
    }

    fn chance(&mut self, permille: u32) -> bool {
        self.upto(999) < u64::from(permille)
    }
}

struct Vhid {
    m: Machine,
    link: bool,
    vips: bool,
    state: State,
}

struct Node {
    addr: Ipv4Addr,
    vhids: Vec<Vhid>,
    maintenance: bool,
}

struct Frame {
    at: Instant,
    seq: u64,
    to: usize,
    bytes: [u8; 56],
}

#[derive(Debug, Clone, Copy)]
struct Event {
    at: Instant,
    node: usize,
    vhid: u8,
    from: State,
    to: State,
    reason: Reason,
}

struct Sim {
    now: Instant,
    rng: Rng,
    nodes: Vec<Node>,
    frames: Vec<Frame>,
    seq: u64,
    loss_permille: u32,
    max_delay: Duration,
    log: Vec<Event>,
}

const KEY: &[u8] = b"opnsense";

fn vhid_cfg(vhid: u8, advskew: u8, preempt: bool) -> VhidConfig {
    let mut c = VhidConfig::new(vhid, KEY, vec![Ipv4Addr::new(192, 168, vhid, 1)], vec![]);
    c.advskew = advskew;
    c.preempt = preempt;
    c
}

impl Sim {
    /// `nodes[i]` lists node i's VHIDs. Machines start in INIT with the link down.
    fn new(seed: u64, nodes: Vec<Vec<VhidConfig>>) -> Sim {
        let mut rng = Rng(seed);
        let nodes = nodes
            .into_iter()
            .enumerate()
            .map(|(i, cfgs)| Node {
                addr: Ipv4Addr::new(10, 0, 0, u8::try_from(i + 1).unwrap()),
                vhids: cfgs
                    .into_iter()
                    .map(|mut c| {
                        c.seed = rng.next();
                        Vhid {
                            m: Machine::new(c, Instant::ZERO),
                            link: false,
                            vips: false,
                            state: State::Init,
                        }
                    })
                    .collect(),
                maintenance: false,
            })
            .collect();
        Sim {
            now: Instant::ZERO,
            rng,
            nodes,
            frames: Vec::new(),
            seq: 0,
            loss_permille: 0,
            max_delay: Duration::from_millis(5),
            log: Vec::new(),
        }
    }

    fn demotion(&self, node: usize) -> u32 {
        let n = &self.nodes[node];
        let down = n.vhids.iter().filter(|v| !v.link).count() as u32;
        240 * down + if n.maintenance { 240 } else { 0 }
    }

    fn feed(&mut self, node: usize, idx: usize, input: Input) {
        let now = self.now;
        let actions = self.nodes[node].vhids[idx].m.handle(now, input);
        self.apply(node, idx, actions);
    }

    fn update_demotion(&mut self, node: usize) {
        let total = self.demotion(node);
        for idx in 0..self.nodes[node].vhids.len() {
            self.feed(node, idx, Input::Demotion(total));
        }
    }

    fn set_link(&mut self, node: usize, vhid: u8, up: bool) {
        let idx = self.nodes[node]
            .vhids
            .iter()
            .position(|v| v.m.config().vhid == vhid)
            .unwrap();
        if self.nodes[node].vhids[idx].link == up {
            return;
        }
        self.nodes[node].vhids[idx].link = up;
        // The interface's own VHID first, then the node-wide demotion to every VHID.
        self.feed(node, idx, if up { Input::LinkUp } else { Input::LinkDown });
        self.update_demotion(node);
    }

    /// Every interface of the node at once (a pulled plug or a crash: no advert gets out).
    fn set_plug(&mut self, node: usize, up: bool) {
        for idx in 0..self.nodes[node].vhids.len() {
            if self.nodes[node].vhids[idx].link != up {
                self.nodes[node].vhids[idx].link = up;
                self.feed(node, idx, if up { Input::LinkUp } else { Input::LinkDown });
            }
        }
        self.update_demotion(node);
    }

    fn set_maintenance(&mut self, node: usize, on: bool) {
        self.nodes[node].maintenance = on;
        self.update_demotion(node);
    }

    fn shutdown(&mut self, node: usize) {
        for idx in 0..self.nodes[node].vhids.len() {
            self.feed(node, idx, Input::Shutdown);
        }
    }

    fn apply(&mut self, node: usize, idx: usize, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::SendAdvert(repr) => {
                    assert!(
                        self.nodes[node].vhids[idx].link,
                        "advert sent with the link down"
                    );
                    let src = self.nodes[node].addr;
                    self.seq += 1;
                    let bytes = repr.to_ipv4_bytes(src, wcarp::MCAST_V4, self.seq as u16);
                    for to in 0..self.nodes.len() {
                        if to == node || self.rng.chance(self.loss_permille) {
                            continue;
                        }
                        let delay =
                            Duration::from_micros(self.rng.upto(self.max_delay.as_micros() as u64));
                        self.seq += 1;
                        self.frames.push(Frame {
                            at: self.now + delay,
                            seq: self.seq,
                            to,
                            bytes,
                        });
                    }
                }
                Action::InstallVips => self.nodes[node].vhids[idx].vips = true,
                Action::RemoveVips => self.nodes[node].vhids[idx].vips = false,
                Action::Announce => {
                    assert!(
                        self.nodes[node].vhids[idx].vips,
                        "announce without the vips"
                    )
                }
                Action::Transition { from, to, reason } => {
                    let v = &mut self.nodes[node].vhids[idx];
                    assert_eq!(
                        v.state, from,
                        "transition from a state the machine was not in"
                    );
                    v.state = to;
                    let vhid = v.m.config().vhid;
                    self.log.push(Event {
                        at: self.now,
                        node,
                        vhid,
                        from,
                        to,
                        reason,
                    });
                }
            }
        }
        let v = &self.nodes[node].vhids[idx];
        assert_eq!(v.state, v.m.state());
        assert_eq!(
            v.vips,
            v.state == State::Master,
            "vips installed iff MASTER"
        );
    }

    fn deliver(&mut self, frame: Frame) {
        let (ip, repr) = wcarp::parse_ipv4(&frame.bytes).expect("our own bytes parse");
        let node = frame.to;
        let Some(idx) = self.nodes[node]
            .vhids
            .iter()
            .position(|v| v.m.config().vhid == repr.vhid)
        else {
            return;
        };
        if !self.nodes[node].vhids[idx].link {
            return;
        }
        self.feed(
            node,
            idx,
            Input::Advert {
                src: IpAddr::V4(ip.src),
                repr,
            },
        );
    }

    fn run_until(&mut self, end: Instant) {
        loop {
            let next_timer = self
                .nodes
                .iter()
                .flat_map(|n| n.vhids.iter())
                .filter_map(|v| v.m.poll_at())
                .min();
            let next_frame = self.frames.iter().map(|f| f.at).min();
            let next = match (next_timer, next_frame) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => match a.or(b) {
                    Some(t) => t,
                    None => break,
                },
            };
            if next > end {
                break;
            }
            self.now = self.now.max(next);
            // Frames due now, in send order.
            let mut due: Vec<Frame> = Vec::new();
            let mut i = 0;
            while i < self.frames.len() {
                if self.frames[i].at <= self.now {
                    due.push(self.frames.swap_remove(i));
                } else {
                    i += 1;
                }
            }
            due.sort_by_key(|f| (f.at, f.seq));
            for f in due {
                self.deliver(f);
            }
            for node in 0..self.nodes.len() {
                for idx in 0..self.nodes[node].vhids.len() {
                    if self.nodes[node].vhids[idx]
                        .m
                        .poll_at()
                        .is_some_and(|t| t <= self.now)
                    {
                        let now = self.now;
                        let actions = self.nodes[node].vhids[idx].m.poll(now);
                        self.apply(node, idx, actions);
                    }
                }
            }
        }
        self.now = end;
    }

    /// Runs for `base` plus a random 0..=`max_ms` milliseconds.
    fn run_for_jittered(&mut self, base: Duration, max_ms: u64) {
        let d = base + Duration::from_millis(self.rng.upto(max_ms));
        self.run_for(d);
    }

    fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        self.run_until(end);
    }

    fn vhid_numbers(&self) -> Vec<u8> {
        let mut v: Vec<u8> = self
            .nodes
            .iter()
            .flat_map(|n| n.vhids.iter().map(|v| v.m.config().vhid))
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    fn state(&self, node: usize, vhid: u8) -> State {
        self.nodes[node]
            .vhids
            .iter()
            .find(|v| v.m.config().vhid == vhid)
            .unwrap()
            .m
            .state()
    }

    fn masters(&self, vhid: u8) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|n| self.state(*n, vhid) == State::Master)
            .collect()
    }

    /// The node that should win `vhid`: the most frequent (advbase, advertised skew) among the
    /// nodes whose link is up and that still run.
    fn best(&self, vhid: u8) -> usize {
        let mut cands: Vec<(u32, usize)> = (0..self.nodes.len())
            .filter_map(|n| {
                let v = self.nodes[n]
                    .vhids
                    .iter()
                    .find(|v| v.m.config().vhid == vhid)?;
                (v.link && !v.m.stopped()).then(|| {
                    (
                        u32::from(v.m.config().advbase) * 256 + u32::from(v.m.advertised_skew()),
                        n,
                    )
                })
            })
            .collect();
        cands.sort_unstable();
        assert!(
            cands.len() < 2 || cands[0].0 < cands[1].0,
            "the test needs a unique best node"
        );
        cands[0].1
    }

    /// First time `node` became MASTER of `vhid` at or after `since`.
    fn became_master(&self, node: usize, vhid: u8, since: Instant) -> Option<Instant> {
        self.log
            .iter()
            .find(|e| e.at >= since && e.node == node && e.vhid == vhid && e.to == State::Master)
            .map(|e| e.at)
    }

    fn transitions_since(&self, since: Instant) -> usize {
        self.log.iter().filter(|e| e.at >= since).count()
    }

    fn dump(&self) -> String {
        self.log
            .iter()
            .map(|e| {
                format!(
                    "{} n{} v{} {}->{} ({})\n",
                    e.at, e.node, e.vhid, e.from, e.to, e.reason
                )
            })
            .collect()
    }

    /// After quiescence: exactly one MASTER per VHID, and nothing moved during the last `quiet`.
    fn assert_one_master_each(&self, quiet: Duration, ctx: &str) {
        for vhid in self.vhid_numbers() {
            assert_eq!(
                self.masters(vhid).len(),
                1,
                "{ctx}: vhid {vhid} masters {:?}\n{}",
                self.masters(vhid),
                self.dump()
            );
        }
        assert_eq!(
            self.transitions_since(self.now - quiet),
            0,
            "{ctx}: not quiescent\n{}",
            self.dump()
        );
    }

    fn assert_best_wins(&self, ctx: &str) {
        for vhid in self.vhid_numbers() {
            assert_eq!(
                self.masters(vhid),
                vec![self.best(vhid)],
                "{ctx}: vhid {vhid}\n{}",
                self.dump()
            );
        }
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// A lossy start: plugs in at random times, random loss up to 60 %, random flaps of every node,
/// then a clean link. After quiescence exactly one MASTER per VHID, the best node (preempt on).
fn lossy_then_clean(seed: u64, skews: &[u8], preempt: bool) -> Sim {
    let nodes = skews
        .iter()
        .map(|s| vec![vhid_cfg(1, *s, preempt), vhid_cfg(3, *s, preempt)])
        .collect();
    let mut sim = Sim::new(seed, nodes);
    sim.loss_permille = sim.rng.upto(600) as u32;
    sim.max_delay = Duration::from_millis(sim.rng.upto(20));
    let n = skews.len();
    for node in 0..n {
        let at = Duration::from_millis(sim.rng.upto(3000));
        sim.run_until(Instant::ZERO + at);
        sim.set_plug(node, true);
    }
    // 60 s of loss with random flaps (a node's plug or one interface) that heal before the end.
    let end = sim.now + secs(60);
    while sim.now < end {
        let step = Duration::from_millis(sim.rng.upto(8000));
        sim.run_for(step);
        let node = sim.rng.upto(n as u64 - 1) as usize;
        let vhid = if sim.rng.upto(1) == 0 { 1 } else { 3 };
        match sim.rng.upto(3) {
            0 => sim.set_plug(node, false),
            1 => sim.set_link(node, vhid, false),
            2 => sim.set_maintenance(node, true),
            _ => {}
        }
        sim.run_for_jittered(Duration::ZERO, 5000);
        sim.set_plug(node, true);
        sim.set_maintenance(node, false);
    }
    sim.loss_permille = 0;
    sim.run_for(secs(15));
    sim.assert_one_master_each(secs(8), &format!("seed {seed}"));
    sim
}

#[test]
fn two_nodes_over_a_lossy_link_converge_to_the_best() {
    let mut loss_takeovers = 0;
    for seed in 0..150 {
        let sim = lossy_then_clean(seed, &[0, 100], true);
        sim.assert_best_wins(&format!("seed {seed}"));
        assert_eq!(sim.masters(1), vec![0]);
        // Takeovers by the worse node (lost adverts, flaps of the better one).
        loss_takeovers += sim
            .log
            .iter()
            .filter(|e| e.node == 1 && e.to == State::Master && e.reason == Reason::MasterDown)
            .count();
    }
    // The lossy phase must really contest the election, or this test proves little.
    assert!(
        loss_takeovers > 300,
        "only {loss_takeovers} takeovers by the worse node"
    );
}

#[test]
fn three_nodes_over_a_lossy_link_converge_fail_over_and_fail_back() {
    for seed in 1000..1100 {
        let mut sim = lossy_then_clean(seed, &[0, 50, 100], true);
        let ctx = format!("seed {seed}");
        sim.assert_best_wins(&ctx);
        assert_eq!(sim.masters(3), vec![0], "{ctx}");
        // Pull node 0's plug at a random point of the advert cycle: node 1 takes both VHIDs
        // within 3·advbase + advskew/256 (+ link delay) of the last advert it heard.
        sim.run_for_jittered(Duration::ZERO, 1000);
        let pulled = sim.now;
        sim.set_plug(0, false);
        sim.run_for(secs(10));
        for vhid in [1, 3] {
            let at = sim
                .became_master(1, vhid, pulled)
                .unwrap_or_else(|| panic!("{ctx}\n{}", sim.dump()));
            let gap = at - pulled;
            let bound = election::master_down_interval(1, 50) + sim.max_delay;
            assert!(gap <= bound, "{ctx}: vhid {vhid} gap {gap:?} > {bound:?}");
            assert!(
                gap >= election::master_down_interval(1, 50) - secs(1) - Duration::from_millis(250),
                "{ctx}: {gap:?}"
            );
        }
        sim.assert_one_master_each(secs(5), &ctx);
        sim.assert_best_wins(&ctx);
        assert_eq!(sim.masters(1), vec![1], "{ctx}");
        // Plug back: node 0 preempts on node 1's next advert.
        let back = sim.now;
        sim.set_plug(0, true);
        sim.run_for(secs(10));
        for vhid in [1, 3] {
            let at = sim
                .became_master(0, vhid, back)
                .unwrap_or_else(|| panic!("{ctx}\n{}", sim.dump()));
            let bound = election::advert_interval(1, 50) + sim.max_delay * 2;
            assert!(
                at - back <= bound,
                "{ctx}: fail back of vhid {vhid} took {:?}",
                at - back
            );
        }
        sim.assert_one_master_each(secs(5), &ctx);
        sim.assert_best_wins(&ctx);
        assert_eq!(sim.masters(1), vec![0], "{ctx}");
    }
}

#[test]
fn without_preempt_there_is_still_exactly_one_master() {
    for seed in 2000..2100 {
        // lossy_then_clean asserts one MASTER per VHID; without preempt it need not be the best.
        let sim = lossy_then_clean(seed, &[0, 100, 200], false);
        assert!(sim.log.iter().any(|e| e.to == State::Master));
    }
}

#[test]
fn without_preempt_the_running_master_keeps_the_vhid() {
    for seed in 3000..3050 {
        let mut sim = Sim::new(
            seed,
            vec![vec![vhid_cfg(1, 0, false)], vec![vhid_cfg(1, 100, false)]],
        );
        sim.set_plug(1, true);
        sim.run_for(secs(10));
        assert_eq!(sim.masters(1), vec![1]);
        sim.set_plug(0, true);
        sim.run_for(secs(30));
        sim.assert_one_master_each(secs(25), &format!("seed {seed}"));
        assert_eq!(sim.masters(1), vec![1], "the better node must not preempt");
        // With preempt on it would take over at once.
        let mut sim = Sim::new(
            seed,
            vec![vec![vhid_cfg(1, 0, true)], vec![vhid_cfg(1, 100, true)]],
        );
        sim.set_plug(1, true);
        sim.run_for(secs(10));
        sim.set_plug(0, true);
        sim.run_for(secs(30));
        assert_eq!(sim.masters(1), vec![0]);
    }
}

/// Maintenance (demotion 240) on the master: the backup is MASTER of every VHID within one
/// advert round trip; leaving it gives them back within one of the backup's advert intervals.
#[test]
fn maintenance_hands_over_within_one_round_trip() {
    for seed in 4000..4100 {
        let mut sim = Sim::new(
            seed,
            vec![
                vec![vhid_cfg(1, 0, true), vhid_cfg(3, 0, true)],
                vec![vhid_cfg(1, 100, true), vhid_cfg(3, 100, true)],
            ],
        );
        let ctx = format!("seed {seed}");
        sim.set_plug(0, true);
        sim.set_plug(1, true);
        sim.run_for_jittered(secs(10), 1000);
        assert_eq!(
            (sim.masters(1), sim.masters(3)),
            (vec![0], vec![0]),
            "{ctx}"
        );
        let t = sim.now;
        sim.set_maintenance(0, true);
        sim.run_for(sim.max_delay * 2);
        assert_eq!(
            (sim.masters(1), sim.masters(3)),
            (vec![1], vec![1]),
            "{ctx}\n{}",
            sim.dump()
        );
        sim.run_for(secs(10));
        sim.assert_one_master_each(secs(9), &ctx);
        assert!(
            sim.became_master(1, 1, t)
                .is_some_and(|at| at - t <= sim.max_delay),
            "{ctx}"
        );
        sim.set_maintenance(0, false);
        let back = sim.now;
        sim.run_for(election::advert_interval(1, 100) + sim.max_delay * 2);
        assert_eq!(
            (sim.masters(1), sim.masters(3)),
            (vec![0], vec![0]),
            "{ctx}\n{}",
            sim.dump()
        );
        assert!(sim.became_master(0, 3, back).is_some(), "{ctx}");
    }
}

/// A graceful stop of the master: its bow-out makes the backup MASTER on receipt.
#[test]
fn graceful_shutdown_hands_over_on_the_bow_out() {
    for seed in 5000..5050 {
        let mut sim = Sim::new(
            seed,
            vec![vec![vhid_cfg(1, 0, false)], vec![vhid_cfg(1, 100, false)]],
        );
        sim.set_plug(0, true);
        sim.set_plug(1, true);
        sim.run_for_jittered(secs(10), 1000);
        assert_eq!(sim.masters(1), vec![0]);
        let t = sim.now;
        sim.shutdown(0);
        sim.run_for(sim.max_delay + Duration::from_micros(1));
        assert_eq!(sim.masters(1), vec![1], "seed {seed}\n{}", sim.dump());
        let e = sim
            .log
            .iter()
            .rev()
            .find(|e| e.node == 1 && e.to == State::Master)
            .unwrap();
        assert_eq!(e.reason, Reason::MasterWillTimeOut);
        assert!(e.at - t <= sim.max_delay);
        sim.run_for(secs(20));
        sim.assert_one_master_each(secs(19), &format!("seed {seed}"));
    }
}

/// One interface down on the master: that VHID goes INIT, the node's demotion moves the other
/// VHID too (group failover), and both come back with the link.
#[test]
fn one_interface_down_moves_every_vhid() {
    for seed in 6000..6050 {
        let ctx = format!("seed {seed}");
        let mut sim = Sim::new(
            seed,
            vec![
                vec![vhid_cfg(1, 0, true), vhid_cfg(3, 0, true)],
                vec![vhid_cfg(1, 100, true), vhid_cfg(3, 100, true)],
            ],
        );
        sim.set_plug(0, true);
        sim.set_plug(1, true);
        sim.run_for_jittered(secs(10), 1000);
        let t = sim.now;
        sim.set_link(0, 3, false);
        sim.run_for(secs(5));
        assert_eq!(
            (sim.masters(1), sim.masters(3)),
            (vec![1], vec![1]),
            "{ctx}\n{}",
            sim.dump()
        );
        // vhid 1 moved by demotion at once; vhid 3 after its master-down timer.
        assert!(
            sim.became_master(1, 1, t).unwrap() - t <= sim.max_delay,
            "{ctx}"
        );
        assert!(
            sim.became_master(1, 3, t).unwrap() - t
                <= election::master_down_interval(1, 100) + sim.max_delay
        );
        let back = sim.now;
        sim.set_link(0, 3, true);
        sim.run_for(secs(3));
        assert_eq!(
            (sim.masters(1), sim.masters(3)),
            (vec![0], vec![0]),
            "{ctx}\n{}",
            sim.dump()
        );
        assert!(sim.became_master(0, 1, back).is_some());
        sim.run_for(secs(10));
        sim.assert_one_master_each(secs(9), &ctx);
    }
}

#[test]
fn wrong_password_is_counted_and_both_claim_master() {
    let mut a = vhid_cfg(1, 0, true);
    a.key = b"right".to_vec();
    let mut b = vhid_cfg(1, 100, true);
    b.key = b"wrong".to_vec();
    let mut sim = Sim::new(7, vec![vec![a], vec![b]]);
    sim.set_plug(0, true);
    sim.set_plug(1, true);
    sim.run_for(secs(20));
    // Neither accepts the other: both MASTER, each counting the other's adverts as bad auth.
    assert_eq!(sim.masters(1), vec![0, 1]);
    for n in 0..2 {
        let s = sim.nodes[n].vhids[0].m.stats();
        assert!(s.bad_auth >= 10, "node {n}: {s:?}");
        assert_eq!(s.adverts_received, 0);
    }
}
