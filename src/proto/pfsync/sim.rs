//! Two nodes over a lossy, reordering in-memory link on a virtual clock, each with a pure model
//! of its kernel conntrack table. Node A's traffic creates, advances and destroys states; the
//! properties: B's table converges to A's after quiescence, TCP state never moves backwards on
//! B, message counts stay bounded (no echo loops), a rebooted B gets A's table by bulk, and a
//! key mismatch injects nothing.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use super::*;
use crate::proto::time::Instant;

/// xorshift64*: deterministic per seed.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// True with probability `pct` percent.
    pub(crate) fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
}

/// A state as the kernel has it (what the comparison looks at).
/// What the comparison of two kernel tables looks at.
pub(crate) type KernelView = (L4Proto, Tuple, Tuple, TcpState, u32, u32, u16);

pub(crate) fn kernel_view(s: &State) -> KernelView {
    (
        s.proto,
        s.orig,
        s.reply,
        s.tcp_state,
        s.timeout,
        s.mark,
        s.zone,
    )
}

/// The n-th test connection: TCP/UDP/ICMP, IPv4 or IPv6, some SNAT'd.
pub(crate) fn make_state(n: u32) -> State {
    let v6 = n % 5 == 4;
    let (src, dst, nat): (IpAddr, IpAddr, IpAddr) = if v6 {
        (
            IpAddr::V6(Ipv6Addr::new(
                0xfd00,
                0,
                0,
                1,
                0,
                0,
                (n >> 16) as u16,
                n as u16,
            )),
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x250)),
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100)),
        )
    } else {
        (
            IpAddr::V4(Ipv4Addr::new(192, 168, (n >> 8) as u8, n as u8)),
            IpAddr::V4(Ipv4Addr::new(172, 18, 0, 250)),
            IpAddr::V4(Ipv4Addr::new(172, 18, 0, 100)),
        )
    };
    let proto = match n % 3 {
        0 => L4Proto::Tcp,
        1 => L4Proto::Udp,
        _ if v6 => L4Proto::Icmpv6,
        _ => L4Proto::Icmp,
    };
    let sport = 1024 + (n % 60000) as u16;
    let orig = match proto {
        L4Proto::Icmp => Tuple::icmp(src, dst, 8, 0, sport),
        L4Proto::Icmpv6 => Tuple::icmp(src, dst, 128, 0, sport),
        _ => Tuple {
            src,
            dst,
            sport,
            dport: 22,
        },
    };
    let snat = n.is_multiple_of(2);
    let mut reply = orig.inverse();
    let mut status = crate::wire::pfsync::status::CONFIRMED;
    if snat {
        reply.dst = nat;
        if matches!(proto, L4Proto::Tcp | L4Proto::Udp) {
            reply.dport = 40000 + (n % 20000) as u16;
        }
        status |= crate::wire::pfsync::status::SRC_NAT | crate::wire::pfsync::status::SRC_NAT_DONE;
    }
    let mut s = State {
        id: 0,
        creator: 0,
        version: 0,
        proto,
        orig,
        reply,
        snat: None,
        dnat: None,
        status,
        tcp_state: if proto == L4Proto::Tcp {
            TcpState::SynSent
        } else {
            TcpState::None
        },
        tcp_window: (proto == L4Proto::Tcp).then_some(TcpWindow {
            wscale_orig: 7,
            wscale_reply: 7,
            flags_orig: 0x03,
            flags_reply: 0x03,
        }),
        timeout: 120,
        mark: n,
        zone: 0,
    };
    s.derive_nat();
    s.id = State::compute_id(s.proto, &s.orig, s.zone);
    s
}

/// The next TCP state forward (stays at CLOSE).
pub(crate) fn advance(t: TcpState) -> TcpState {
    let order = [
        TcpState::None,
        TcpState::SynSent,
        TcpState::SynSent2,
        TcpState::SynRecv,
        TcpState::Established,
        TcpState::FinWait,
        TcpState::CloseWait,
        TcpState::LastAck,
        TcpState::TimeWait,
        TcpState::Close,
    ];
    let i = order.iter().position(|x| *x == t).unwrap_or(0);
    order[(i + 1).min(order.len() - 1)]
}

pub(crate) struct Node {
    pub(crate) sync: Sync,
    /// The kernel conntrack table model.
    pub(crate) kernel: BTreeMap<u64, State>,
    pub(crate) holding: bool,
    pub(crate) bulk_done: u32,
    pub(crate) injected: u64,
    pub(crate) sent: u64,
    /// A TCP state moved backwards in this kernel (id, from, to).
    pub(crate) backwards: Vec<(u64, TcpState, TcpState)>,
}

impl Node {
    pub(crate) fn new(cfg: Config, now: Instant) -> Node {
        Node {
            sync: Sync::new(cfg, now),
            kernel: BTreeMap::new(),
            holding: false,
            bulk_done: 0,
            injected: 0,
            sent: 0,
            backwards: Vec::new(),
        }
    }
}

pub(crate) struct Link {
    pub(crate) loss_pct: u64,
    /// Extra random delay up to this, in microseconds (reordering).
    pub(crate) jitter_us: u64,
    pub(crate) base_us: u64,
    /// (deliver at, to node index, bytes)
    pub(crate) flight: Vec<(Instant, usize, Vec<u8>)>,
    pub(crate) delivered: u64,
}

pub(crate) struct World {
    pub(crate) now: Instant,
    pub(crate) nodes: [Node; 2],
    pub(crate) link: Link,
    pub(crate) rng: Rng,
    /// The number of the next connection A creates.
    pub(crate) next_conn: u32,
    /// Pending kernel echoes (node, input) to feed back.
    echoes: VecDeque<(usize, Input)>,
}

impl World {
    pub(crate) fn new(seed: u64, loss_pct: u64, key_a: &[u8], key_b: &[u8]) -> World {
        let mut rng = Rng::new(seed);
        let now = Instant::from_secs(1);
        let mut ca = Config::new(1).with_key(key_a);
        ca.epoch = rng.next() as u32;
        ca.seq_seed = rng.next() as u32;
        ca.clock_seed = 1_000_000;
        let mut cb = Config::new(2).with_key(key_b);
        cb.epoch = rng.next() as u32;
        cb.seq_seed = rng.next() as u32;
        cb.clock_seed = 1_000_000;
        World {
            now,
            nodes: [Node::new(ca, now), Node::new(cb, now)],
            link: Link {
                loss_pct,
                jitter_us: 3_000,
                base_us: 200,
                flight: Vec::new(),
                delivered: 0,
            },
            rng,
            next_conn: 1,
            echoes: VecDeque::new(),
        }
    }

    /// Replaces node `i` by a fresh one (a reboot: empty kernel, new epoch and seq).
    pub(crate) fn reboot(&mut self, i: usize) {
        let mut cfg = self.nodes[i].sync.config().clone();
        cfg.epoch = self.rng.next() as u32;
        cfg.seq_seed = self.rng.next() as u32;
        cfg.clock_seed = self.now.as_micros();
        self.nodes[i] = Node::new(cfg, self.now);
        self.link.flight.retain(|(_, to, _)| *to != i);
    }

    fn apply(&mut self, i: usize, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Send(bytes) => {
                    self.nodes[i].sent += 1;
                    if self.rng.chance(self.link.loss_pct) {
                        continue;
                    }
                    let delay = self.link.base_us + self.rng.below(self.link.jitter_us + 1);
                    let at = self.now + Duration::from_micros(delay);
                    self.link.flight.push((at, 1 - i, bytes));
                }
                Action::Inject(s) => {
                    let node = &mut self.nodes[i];
                    node.injected += 1;
                    let existed = node.kernel.insert(s.id, s);
                    if let Some(old) = existed
                        && old.proto == L4Proto::Tcp
                        && s.tcp_state.rank() < old.tcp_state.rank()
                    {
                        node.backwards.push((s.id, old.tcp_state, s.tcp_state));
                    }
                    let event = if existed.is_some() {
                        Event::Update
                    } else {
                        Event::New
                    };
                    self.echoes.push_back((
                        i,
                        Input::Local {
                            event,
                            state: s,
                            origin: Origin::Peer,
                        },
                    ));
                }
                Action::Remove(s) => {
                    if let Some(old) = self.nodes[i].kernel.remove(&s.id) {
                        self.echoes.push_back((
                            i,
                            Input::Local {
                                event: Event::Destroy,
                                state: old,
                                origin: Origin::Peer,
                            },
                        ));
                    }
                }
                Action::ClearPeer(_) => {}
                Action::BulkDone => self.nodes[i].bulk_done += 1,
                Action::DemotionHold(h) => self.nodes[i].holding = h,
                Action::PeerSilent(_) | Action::PeerBack(_) => {}
            }
        }
    }

    pub(crate) fn input(&mut self, i: usize, input: Input) {
        let a = self.nodes[i].sync.handle(self.now, input);
        self.apply(i, a);
        self.drain_echoes();
    }

    fn drain_echoes(&mut self) {
        while let Some((i, input)) = self.echoes.pop_front() {
            let a = self.nodes[i].sync.handle(self.now, input);
            assert!(
                !a.iter().any(|x| matches!(x, Action::Send(_))),
                "an echo of an injection made node {i} send: {a:?}"
            );
            self.apply(i, a);
        }
    }

    /// A local conntrack event on node `i` (kernel first, then the sync).
    pub(crate) fn local(&mut self, i: usize, event: Event, state: State) {
        match event {
            Event::Destroy => {
                self.nodes[i].kernel.remove(&state.id);
            }
            _ => {
                self.nodes[i].kernel.insert(state.id, state);
            }
        }
        self.input(
            i,
            Input::Local {
                event,
                state,
                origin: Origin::Local,
            },
        );
    }

    /// One random traffic event on node `i`.
    pub(crate) fn random_event(&mut self, i: usize) {
        let n = self.nodes[i].kernel.len() as u64;
        let roll = self.rng.below(100);
        if n == 0 || roll < 35 {
            let s = make_state(self.next_conn);
            self.next_conn += 1;
            self.local(i, Event::New, s);
        } else {
            let pick = self.rng.below(n) as usize;
            let Some(mut s) = self.nodes[i].kernel.values().nth(pick).copied() else {
                return;
            };
            if roll < 85 {
                if s.proto == L4Proto::Tcp {
                    s.tcp_state = advance(s.tcp_state);
                }
                s.timeout = 60 + self.rng.below(400000) as u32;
                s.status |= crate::wire::pfsync::status::SEEN_REPLY;
                self.local(i, Event::Update, s);
            } else if self.nodes[i]
                .sync
                .state(s.id)
                .is_some_and(|(_, o)| o == Origin::Peer)
            {
                // A DESTROY of an untouched peer state is its local timeout, which is not synced
                // (the peer still owns it): traffic here first takes it over.
                self.local(i, Event::Update, s);
            } else {
                self.local(i, Event::Destroy, s);
            }
        }
    }

    /// Moves the clock to `until`, delivering packets and polling both nodes on the way.
    pub(crate) fn run_until(&mut self, until: Instant) {
        let mut guard = 0u64;
        loop {
            guard += 1;
            assert!(guard < 5_000_000, "livelock at {}", self.now);
            let mut next = until;
            for (at, _, _) in &self.link.flight {
                next = next.min(*at);
            }
            for n in &self.nodes {
                if let Some(t) = n.sync.poll_at() {
                    next = next.min(t.max(self.now));
                }
            }
            if next > until {
                break;
            }
            self.now = self.now.max(next);
            // Deliver everything due, in arrival order.
            let mut due: Vec<(Instant, usize, Vec<u8>)> = Vec::new();
            let now = self.now;
            let mut k = 0;
            while k < self.link.flight.len() {
                if self.link.flight[k].0 <= now {
                    due.push(self.link.flight.swap_remove(k));
                } else {
                    k += 1;
                }
            }
            due.sort_by_key(|(at, _, _)| *at);
            for (_, to, bytes) in due {
                self.link.delivered += 1;
                self.input(to, Input::Received(bytes));
            }
            for i in 0..2 {
                if self.nodes[i].sync.poll_at().is_some_and(|t| t <= self.now) {
                    let a = self.nodes[i].sync.poll(self.now);
                    self.apply(i, a);
                    self.drain_echoes();
                }
            }
            if self.now >= until && self.link.flight.iter().all(|(at, _, _)| *at > until) {
                let idle = self
                    .nodes
                    .iter()
                    .all(|n| n.sync.poll_at().is_none_or(|t| t > until));
                if idle {
                    break;
                }
            }
        }
        self.now = self.now.max(until);
    }

    pub(crate) fn kernel(&self, i: usize) -> BTreeMap<u64, KernelView> {
        self.nodes[i]
            .kernel
            .iter()
            .map(|(id, s)| (*id, kernel_view(s)))
            .collect()
    }
}
