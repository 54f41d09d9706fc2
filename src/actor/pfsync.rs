//! `Pfsync`: replicates the conntrack table to the peer over the sync link (IP protocol 240), and
//! injects the peer's states into the kernel, on MASTER and BACKUP alike — the backup already has
//! every state when it takes over. The protocol is the pure `proto::pfsync::Sync`; this actor turns
//! its actions into conntrack requests and packets.
//!
//! ```text
//!  ctnetlink events ──▶ Pfsync ──Send──▶ raw IP-240 socket ──▶ peer
//!  raw IP-240 rx    ──▶ Pfsync ──Inject/Remove──▶ ctnetlink (batched)
//!  Pfsync ──SetDemotionMsg("pfsync-bulk")──▶ supervisor (held until the boot-time bulk ends)
//! ```

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures::FutureExt;
use serde::Serialize;
use serde_json::{Value, json};

use super::StopMsg;
use crate::clock;
use crate::proto::pfsync::{
    Action, Config as SyncConfig, DropReason, Event, Input, L4Proto, NatMap, Origin, State, Sync,
    TcpState, TcpWindow, Tuple,
};
use crate::supervisor::{SetDemotionMsg, Supervisor};
use crate::sys::conntrack::injector::{Injector, Op, Report};
use crate::sys::conntrack::{self, Conntrack, Entry, Tuple as CtTuple};
use crate::sys::netlink;
use crate::sys::rawip::RawIp;
use crate::wire::ipv4 as wipv4;

/// IP protocol number of the sync stream (pfsync's).
pub const PROTO: i32 = 240;
/// Multicast group used when no peer address is configured (pfsync's default).
pub const MCAST: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 240);
/// Most datagrams handed to the actor in one message.
const RX_BATCH: usize = 64;
/// Demotion held while our boot-time bulk request is outstanding.
pub const BULK_DEMOTION: u32 = 240;

/// What the actor needs from the config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PfsyncSpec {
    pub interface: String,
    pub device: String,
    /// Unicast peer, or None for 224.0.0.240.
    pub peer: Option<IpAddr>,
    pub key: Option<String>,
    /// Our own address on the sync link (its low 32 bits are the node id).
    pub local: Option<Ipv4Addr>,
}

impl PfsyncSpec {
    pub fn node_id(&self) -> u32 {
        match self.local {
            Some(a) if u32::from(a) != 0 => u32::from(a),
            _ => rand::random::<u32>() | 1,
        }
    }
}

/// Kernel-side counters the machine does not see.
#[derive(Clone, Debug, Default, Serialize)]
pub struct KernelStats {
    pub events: u64,
    pub overruns: u64,
    pub injected: u64,
    pub inject_errors: u64,
    pub removed: u64,
    pub remove_errors: u64,
    pub skipped_protocols: u64,
    pub bad_ttl: u64,
    pub send_errors: u64,
    pub last_error: Option<String>,
    /// When we last asked the peer for a bulk (Unix ms; the first request of a wait).
    pub bulk_requested_unix_ms: Option<u64>,
    /// When the last bulk we asked for was complete in our table (Unix ms; BULK_END).
    pub bulk_done_unix_ms: Option<u64>,
    /// Times NEW events were switched off while a bulk was injected.
    pub new_events_paused: u64,
    /// Entries removed because they carry the peer label and the peer no longer has them (after
    /// a restart of ours: it ended while we were down).
    pub stale_removed: u64,
    /// Peer states are written with the peer label (`ct label 127`): the label table (which
    /// makes the kernel keep labels) is loaded (at start, and found there at the last refresh).
    pub peer_label: bool,
    /// Times the label table was found missing at a refresh (deleted by someone else, e.g.
    /// `nft flush ruleset`) and loaded again.
    pub label_table_reloads: u64,
}

pub struct Pfsync {
    spec: PfsyncSpec,
    machine: Sync,
    sup: Addr<Supervisor>,
    nl: rtnetlink::Handle,
    /// Writes peer states into the kernel on worker threads.
    injector: Option<Injector>,
    /// Kernel writes waiting for the end of the current turn.
    pending_ops: Vec<Op>,
    /// Kernel writes submitted and reported done, since start.
    ops_submitted: u64,
    ops_done: u64,
    /// (writes submitted once a received batch's were, when it was read): its apply time is
    /// known when the worker has done that many.
    apply_marks: std::collections::VecDeque<(u64, std::time::Instant)>,
    /// Our apply times (a received batch → its states in the kernel).
    apply: crate::proto::pfsync::lag::Samples,
    /// When writing a peer state last failed.
    last_inject_error: Option<std::time::Instant>,
    sock: Option<Rc<RawIp>>,
    /// Messages to the sender task.
    tx: Option<tokio::sync::mpsc::UnboundedSender<Vec<u8>>>,
    /// Sends that failed (counted by the sender task).
    send_failed: Rc<std::cell::Cell<u64>>,
    ifindex: Option<u32>,
    /// The pending wake-up and its deadline (None: as soon as the scheduler comes round).
    timer: Option<(SpawnHandle, Option<crate::proto::time::Instant>)>,
    /// The last poll changed nothing: a deadline still due now waits for the timer, not a spin.
    idle_poll: bool,
    kstats: KernelStats,
    /// The label table as loaded, checked before every refresh dump (on the dump thread).
    labels: Arc<std::sync::Mutex<crate::sys::nft::Guard>>,
    /// A table dump is running; the dump asked for meanwhile (merged: a resync wins).
    dumping: bool,
    dump_again: Option<DumpKind>,
    /// Switches the event socket's NEW group (off while the peer's bulk is injected).
    new_events: Option<conntrack::NewEvents>,
    new_events_off: bool,
    /// Kernel writes handed to the injection workers and not yet reported done.
    ops_in_flight: usize,
    /// A bulk we asked for was pending at the end of the last turn.
    bulk_was_pending: bool,
    /// States received before our pending bulk request (more: the peer's bulk is streaming).
    received_at_request: u64,
    /// NEW events are off and our bulk ended at: the workers get `INJECT_GRACE` to finish.
    bulk_ended_at: Option<std::time::Instant>,
    /// A catch-up dump is due once no bulk is pending and the workers are idle (at start, and
    /// after NEW events were off).
    catch_up_owed: bool,
    /// A resync (event overrun) was asked for while the catch-up was owed: the catch-up will be
    /// a resync (before the bulk is in, an entry we do not know may be the peer's).
    resync_owed: bool,
    /// Entries the running dump found stale (see `KernelStats::stale_removed`).
    stale_this_dump: u64,
    /// A bulk we asked for completed since start.
    peer_bulk_done: bool,
    /// When the event queue last overran: a dump taken during a burst can miss entries that were
    /// being created, so dumps repeat until the table has been quiet for a moment.
    last_overrun: Option<std::time::Instant>,
    stopping: bool,
    /// The interval between refresh dumps (longer when a dump is slow).
    refresh_every: Duration,
}

fn unix_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn l4(proto: u8) -> Option<L4Proto> {
    match proto {
        6 => Some(L4Proto::Tcp),
        17 => Some(L4Proto::Udp),
        1 => Some(L4Proto::Icmp),
        58 => Some(L4Proto::Icmpv6),
        _ => None,
    }
}

fn is_icmp(p: L4Proto) -> bool {
    matches!(p, L4Proto::Icmp | L4Proto::Icmpv6)
}

fn to_tuple(t: &CtTuple, p: L4Proto) -> Tuple {
    if is_icmp(p) {
        Tuple::icmp(t.src, t.dst, t.icmp_type, t.icmp_code, t.icmp_id)
    } else {
        Tuple {
            src: t.src,
            dst: t.dst,
            sport: t.sport,
            dport: t.dport,
        }
    }
}

fn from_tuple(t: &Tuple, p: L4Proto) -> CtTuple {
    let mut out = CtTuple {
        src: t.src,
        dst: t.dst,
        proto: p.number(),
        ..CtTuple::default()
    };
    if is_icmp(p) {
        out.icmp_id = t.sport;
        out.icmp_type = (t.dport >> 8) as u8;
        out.icmp_code = (t.dport & 0xff) as u8;
    } else {
        out.sport = t.sport;
        out.dport = t.dport;
    }
    out
}

/// A kernel entry as a sync state (`id`, `creator` and `version` are the machine's to fill).
pub fn entry_to_state(e: &Entry) -> Option<State> {
    let p = l4(e.orig.proto)?;
    let nat = e.nat();
    Some(State {
        id: 0,
        creator: 0,
        version: 0,
        proto: p,
        orig: to_tuple(&e.orig, p),
        reply: to_tuple(&e.reply, p),
        snat: nat.snat.map(|(addr, port)| NatMap {
            addr,
            port: port.unwrap_or(e.reply.dport),
        }),
        dnat: nat.dnat.map(|(addr, port)| NatMap {
            addr,
            port: port.unwrap_or(e.reply.sport),
        }),
        status: e.status,
        tcp_state: e
            .tcp_state
            .and_then(|s| TcpState::ALL.into_iter().find(|t| *t as u8 == s))
            .unwrap_or(TcpState::None),
        tcp_window: match (e.tcp_wscale, e.tcp_flags) {
            (Some((wo, wr)), Some((fo, fr))) => Some(TcpWindow {
                wscale_orig: wo,
                wscale_reply: wr,
                flags_orig: fo,
                flags_reply: fr,
            }),
            (Some((wo, wr)), None) => Some(TcpWindow {
                wscale_orig: wo,
                wscale_reply: wr,
                flags_orig: 0,
                flags_reply: 0,
            }),
            _ => None,
        },
        timeout: e.timeout,
        mark: e.mark,
        zone: e.zone,
    })
}

/// A sync state as a kernel entry to inject.
pub fn state_to_entry(s: &State) -> Entry {
    let tcp = s.proto == L4Proto::Tcp;
    Entry {
        orig: from_tuple(&s.orig, s.proto),
        reply: from_tuple(&s.reply, s.proto),
        status: s.status,
        tcp_state: tcp.then_some(s.tcp_state as u8),
        tcp_flags: if tcp {
            s.tcp_window.map(|w| (w.flags_orig, w.flags_reply))
        } else {
            None
        },
        tcp_wscale: if tcp {
            s.tcp_window.map(|w| (w.wscale_orig, w.wscale_reply))
        } else {
            None
        },
        timeout: s.timeout.max(1),
        mark: s.mark,
        zone: s.zone,
        id: None,
        labels: 0,
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct OpenedMsg(Result<Opened, String>);

/// What `open` set up.
struct Opened {
    injector: Injector,
    events: conntrack::EventStream,
    sock: RawIp,
    ifindex: u32,
    link_up: bool,
    /// The label table is loaded: peer states can carry the peer label.
    labels: bool,
}

#[derive(Message)]
#[rtype(result = "()")]
/// Packets read from the sync socket, and when the first of them was read.
struct RxMsg(Vec<Vec<u8>>, std::time::Instant);

/// Why the kernel table is being read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DumpKind {
    /// After start or an event overrun: every local state goes to the machine as an update.
    Resync,
    /// Periodic: only states whose timeout moved on silently are sent (see [`Input::Refresh`]).
    Refresh,
    /// After NEW events were off: like a refresh (states we do not know are new local ones),
    /// but not part of the periodic schedule.
    CatchUp,
}

/// Part of a table dump (the entries of one netlink datagram).
#[derive(Message)]
#[rtype(result = "()")]
struct DumpChunkMsg(DumpKind, Vec<Entry>);

/// What the check of the label table before a refresh dump found.
#[derive(Message)]
#[rtype(result = "()")]
struct LabelTableMsg(Result<Option<crate::sys::nft::Drift>, String>);

/// A table dump ended (after `took`).
#[derive(Message)]
#[rtype(result = "()")]
struct DumpDoneMsg(DumpKind, Result<Duration, String>);

/// The shortest interval between two refresh dumps; longer when the dump is slow, so that
/// refreshing costs at most ~2 % of a core (a dump of 100k entries takes ~0.1 s).
const REFRESH_MIN: Duration = Duration::from_secs(5);

/// How long after our bulk ended NEW events may stay off while the workers still inject it.
const INJECT_GRACE: Duration = Duration::from_secs(30);

/// Kernel writes queued at once from which the node is not failover-safe (a few ms of work).
const UNSAFE_BACKLOG: usize = 1_000;

/// Received batches whose apply time is still being timed (older ones are dropped).
const APPLY_MARKS: usize = 4096;

/// What the peer label is in `Entry::labels`.
const PEER_LABEL: u128 = 1 << crate::proto::nft::PEER_LABEL_BIT;

#[derive(Message)]
#[rtype(result = "()")]
struct InjectedMsg(Report);

impl Pfsync {
    pub fn new(spec: PfsyncSpec, sup: Addr<Supervisor>, nl: rtnetlink::Handle) -> Pfsync {
        let mut cfg = SyncConfig::new(spec.node_id());
        // No coalescing timer: a partial packet goes on the next turn of the scheduler, after
        // the events already readable have been queued (see `rearm`). Under load that still
        // fills packets; at low rates it keeps the lag at the path's own cost.
        cfg.flush_delay = Duration::ZERO;
        if let Some(k) = &spec.key {
            cfg = cfg.with_key(k.as_bytes());
        }
        cfg.epoch = rand::random();
        cfg.seq_seed = rand::random();
        cfg.clock_seed = unix_micros();
        if spec.key.is_none() {
            tracing::warn!(
                interface = %spec.interface,
                "state sync runs WITHOUT authentication: set hasync/pfsynckey on both nodes"
            );
        }
        Pfsync {
            machine: Sync::new(cfg, clock::now()),
            spec,
            sup,
            nl,
            injector: None,
            pending_ops: Vec::new(),
            ops_submitted: 0,
            ops_done: 0,
            apply_marks: std::collections::VecDeque::new(),
            apply: Default::default(),
            last_inject_error: None,
            sock: None,
            tx: None,
            send_failed: Rc::default(),
            ifindex: None,
            timer: None,
            idle_poll: false,
            kstats: KernelStats::default(),
            labels: Arc::new(std::sync::Mutex::new(crate::sys::nft::Guard::new(
                crate::proto::nft::pfsync_labels(),
            ))),
            dumping: false,
            dump_again: None,
            new_events: None,
            new_events_off: false,
            ops_in_flight: 0,
            bulk_was_pending: false,
            received_at_request: 0,
            bulk_ended_at: None,
            catch_up_owed: true,
            resync_owed: false,
            stale_this_dump: 0,
            peer_bulk_done: false,
            last_overrun: None,
            stopping: false,
            refresh_every: REFRESH_MIN,
        }
    }

    fn feed(&mut self, input: Input, ctx: &mut Context<Self>) {
        let a = self.machine.handle(clock::now(), input);
        self.run(a, ctx);
    }

    fn poll(&mut self, ctx: &mut Context<Self>) {
        self.timer = None;
        let a = self.machine.poll(clock::now());
        self.idle_poll = a.is_empty();
        self.run(a, ctx);
    }

    /// Wakes the actor at the machine's next deadline. A deadline already due runs on the next
    /// turn of the scheduler rather than on a timer (tokio's timers tick in whole
    /// milliseconds, which was the floor of the sync lag). A pending wake-up that is not later
    /// than the new deadline is kept: the poll re-arms.
    fn rearm(&mut self, ctx: &mut Context<Self>) {
        let Some(at) = self.machine.poll_at() else {
            return;
        };
        let now = clock::now();
        let idle = std::mem::take(&mut self.idle_poll);
        let immediate = at <= now && !idle;
        match self.timer {
            Some((_, None)) => return,
            Some((_, Some(t))) if !immediate && t <= at => return,
            _ => {}
        }
        if let Some((h, _)) = self.timer.take() {
            ctx.cancel_future(h);
        }
        self.timer = Some(if immediate {
            let h = ctx.spawn(
                fut::wrap_future::<_, Self>(tokio::task::yield_now())
                    .map(|_, a: &mut Self, ctx| a.poll(ctx)),
            );
            (h, None)
        } else {
            // At least 1 ms: a deadline that is due but made no progress must not spin.
            let wait = clock::until(at).max(Duration::from_millis(1));
            (ctx.run_later(wait, |a, ctx| a.poll(ctx)), Some(at))
        });
    }

    fn dst(&self) -> IpAddr {
        self.spec.peer.unwrap_or(IpAddr::V4(MCAST))
    }

    fn run(&mut self, actions: Vec<Action>, ctx: &mut Context<Self>) {
        for a in actions {
            match a {
                Action::Send(bytes) => self.send(bytes),
                Action::Inject(state) => {
                    let mut e = state_to_entry(&state);
                    if self.kstats.peer_label {
                        e.labels = PEER_LABEL;
                    }
                    self.queue_op(Op::Upsert(e));
                }
                Action::Remove(state) => self.remove(vec![state]),
                Action::ClearPeer(creator) => {
                    let gone: Vec<State> = self
                        .machine
                        .states()
                        .filter(|(s, o)| *o == Origin::Peer && s.creator == creator)
                        .map(|(s, _)| *s)
                        .collect();
                    tracing::info!(creator, states = gone.len(), "peer cleared its states");
                    self.remove(gone);
                }
                Action::BulkDone => {
                    self.peer_bulk_done = true;
                    self.kstats.bulk_done_unix_ms = Some(unix_micros() / 1000);
                    tracing::info!(
                        states = self.machine.len(),
                        "bulk update from the peer complete"
                    );
                }
                Action::DemotionHold(on) => {
                    tracing::info!(
                        "{} the pfsync-bulk demotion (+{BULK_DEMOTION})",
                        if on { "holding" } else { "releasing" }
                    );
                    self.sup.do_send(SetDemotionMsg {
                        name: "pfsync-bulk".into(),
                        value: on.then_some(BULK_DEMOTION),
                        timeout: Some(Duration::from_secs(12)),
                    });
                }
                Action::PeerSilent(d) => tracing::warn!(
                    peer = %self.dst(),
                    "nothing heard from the peer's state sync for {:.1} s while the sync link \
                     is up: states it makes now do not reach us (not failover-safe)",
                    d.as_secs_f64()
                ),
                Action::PeerBack(d) => tracing::info!(
                    peer = %self.dst(),
                    "the peer's state sync is heard again after {:.1} s of silence",
                    d.as_secs_f64()
                ),
            }
        }
        self.submit_ops();
        self.bulk_events(ctx);
        if !self.stopping {
            self.rearm(ctx);
        }
    }

    /// Hands a message to the sender task (one task, so messages leave in sequence order even
    /// when the socket's send buffer is full and sends have to wait).
    fn send(&mut self, bytes: Vec<u8>) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(bytes);
        }
    }

    fn start_sender(&mut self, sock: Rc<RawIp>, ifindex: u32) {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
        let dst = self.dst();
        let count = self.send_failed.clone();
        actix_rt::spawn(async move {
            while let Some(bytes) = rx.recv().await {
                if let Err(e) = sock.send_to(&bytes, dst, ifindex).await {
                    let failed = count.get() + 1;
                    count.set(failed);
                    if failed.is_power_of_two() {
                        tracing::warn!(%dst, failed, "pfsync send failed: {e}");
                    }
                }
            }
        });
        self.tx = Some(tx);
    }

    /// Queues a kernel write (handed to the worker at the end of the turn).
    fn queue_op(&mut self, op: Op) {
        if self.injector.is_some() {
            self.pending_ops.push(op);
        }
    }

    fn submit_ops(&mut self) {
        let Some(inj) = &self.injector else { return };
        if !self.pending_ops.is_empty() {
            self.ops_in_flight += self.pending_ops.len();
            self.ops_submitted += self.pending_ops.len() as u64;
            inj.submit(std::mem::take(&mut self.pending_ops));
        }
    }

    /// Keeps the kernel from building a NEW event for every state of the peer's bulk, and
    /// reads our own table only once the bulk is in: the NEW event group is left once the peer's
    /// answer to our bulk request streams in (a silent peer leaves it on) until BULK_END (or the
    /// request's timeout) and until the workers have written everything queued by then; a
    /// catch-up dump then finds the local states created meanwhile (at boot, as BACKUP, there
    /// are few). The first dump after start waits the same way, so it neither competes with the
    /// injection nor takes entries the peer is about to claim (a restart finds the peer's states
    /// still in the kernel) for local ones. Also records when the bulk was asked for.
    fn bulk_events(&mut self, ctx: &mut Context<Self>) {
        let pending = self.machine.bulk_pending();
        let received = self.machine.stats().received_states;
        if pending && !self.bulk_was_pending {
            self.kstats.bulk_requested_unix_ms = Some(unix_micros() / 1000);
            self.received_at_request = received;
        }
        self.bulk_was_pending = pending;
        let Some(sw) = &self.new_events else { return };
        if pending {
            self.bulk_ended_at = None;
            if !self.new_events_off && received > self.received_at_request {
                match sw.set(false) {
                    Ok(()) => {
                        self.new_events_off = true;
                        self.catch_up_owed = true;
                        self.kstats.new_events_paused += 1;
                        tracing::debug!(
                            "conntrack NEW events off while the peer's bulk is injected"
                        );
                    }
                    Err(e) => tracing::debug!("conntrack NEW events stay on: {e}"),
                }
            }
            return;
        }
        if self.ops_in_flight > 0 {
            // A worker that stopped reporting must not keep NEW events off for good.
            let ended = *self
                .bulk_ended_at
                .get_or_insert_with(std::time::Instant::now);
            if !self.new_events_off || ended.elapsed() < INJECT_GRACE {
                return;
            }
            tracing::warn!(
                in_flight = self.ops_in_flight,
                "injection still busy {INJECT_GRACE:?} after the bulk; NEW events on again"
            );
        }
        self.bulk_ended_at = None;
        if self.new_events_off {
            if let Err(e) = sw.set(true) {
                // Tried again at the end of every turn; the periodic refresh still finds new
                // local states meanwhile.
                tracing::warn!("conntrack NEW events could not be switched on again: {e}");
                self.kstats.last_error = Some(format!("NEW events: {e}"));
                return;
            }
            self.new_events_off = false;
        }
        if std::mem::take(&mut self.catch_up_owed) {
            let kind = if std::mem::take(&mut self.resync_owed) {
                DumpKind::Resync
            } else {
                DumpKind::CatchUp
            };
            tracing::debug!(?kind, "reading the local table after the bulk");
            self.dump(kind, ctx);
        }
    }

    fn remove(&mut self, states: Vec<State>) {
        for s in &states {
            self.queue_op(Op::Delete(from_tuple(&s.orig, s.proto), s.zone));
        }
    }

    fn open(&mut self, ctx: &mut Context<Self>) {
        let spec = self.spec.clone();
        let nl = self.nl.clone();
        let addr = ctx.address();
        let labels = self.labels.clone();
        actix_rt::spawn(async move {
            let r = async {
                let link = netlink::link_by_name(&nl, &spec.device)
                    .await
                    .map_err(|e| format!("looking up {}: {e}", spec.device))?
                    .ok_or_else(|| format!("sync device {} does not exist", spec.device))?;
                // Labels first: the kernel gives an entry room for labels only if a rule uses
                // them when the entry is created.
                let labels = match tokio::task::spawn_blocking(move || keep_labels(&labels)).await {
                    Ok(Ok(_)) => true,
                    Ok(Err(e)) => {
                        tracing::warn!(
                            "peer states will not carry the peer label ({e}): a restarted daemon \
                             may take the peer's ended states for its own"
                        );
                        false
                    }
                    Err(e) => {
                        tracing::warn!("loading the label table: {e}");
                        false
                    }
                };
                let report_to = addr.clone();
                let injector =
                    Injector::start(Arc::new(move |r: Report| report_to.do_send(InjectedMsg(r))))
                        .await
                        .map_err(|e| format!("ctnetlink: {e}"))?;
                let mut events =
                    conntrack::subscribe().map_err(|e| format!("ctnetlink events: {e}"))?;
                events.ignore_portid(injector.portid());
                let group = match spec.peer {
                    None => Some(MCAST),
                    Some(_) => None,
                };
                let sock = RawIp::open_v4(PROTO, &spec.device, link.index, group)
                    .map_err(|e| format!("sync socket on {}: {e}", spec.device))?;
                Ok(Opened {
                    injector,
                    events,
                    sock,
                    ifindex: link.index,
                    link_up: link.is_up(),
                    labels,
                })
            }
            .await;
            addr.do_send(OpenedMsg(r));
        });
    }

    /// Reads the whole kernel table on a socket of its own (so it never interleaves with the
    /// injections), chunk by chunk (a large table is never held at once), at most one dump at a
    /// time; resyncs asked for meanwhile are merged into one more.
    fn start_dump(&mut self, ctx: &mut Context<Self>) {
        self.dump(DumpKind::Resync, ctx);
    }

    /// The periodic refresh (never during a resync dump; it waits for the next round).
    fn start_refresh(&mut self, ctx: &mut Context<Self>) {
        if self.stopping {
            return;
        }
        // Not before the first catch-up: until the bulk is in, an entry we do not know may be
        // the peer's.
        if self.dumping || self.catch_up_owed {
            ctx.run_later(REFRESH_MIN, |a, ctx| a.start_refresh(ctx));
            return;
        }
        self.dump(DumpKind::Refresh, ctx);
    }

    fn dump(&mut self, kind: DumpKind, ctx: &mut Context<Self>) {
        if kind == DumpKind::Resync && self.catch_up_owed {
            self.resync_owed = true;
            return;
        }
        if self.dumping {
            // A resync covers a catch-up; a periodic refresh re-schedules itself instead.
            match (self.dump_again, kind) {
                (_, DumpKind::Resync) => self.dump_again = Some(DumpKind::Resync),
                (None, DumpKind::CatchUp) => self.dump_again = Some(DumpKind::CatchUp),
                _ => {}
            }
            return;
        }
        self.dumping = true;
        self.feed(Input::DumpStarted, ctx);
        let addr = ctx.address();
        // On a thread of its own: the kernel fills each dump buffer inside `recv`, on the
        // calling thread (10-20 ms for a table of tens of thousands), which on the actor's
        // thread held up events and sync messages (the sync bench's lag p99 at 10k states/s
        // went from ~1 ms to ~17 ms whenever a refresh dump ran).
        let labels = self.labels.clone();
        let spawned = std::thread::Builder::new().name("ct-dump".into()).spawn({
            let addr = addr.clone();
            move || {
                // The label table first (an admin's `nft flush ruleset` takes it with
                // everything else; entries written without it carry no peer label).
                if kind == DumpKind::Refresh {
                    addr.do_send(LabelTableMsg(keep_labels(&labels)));
                }
                let t0 = std::time::Instant::now();
                let r = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt.block_on(async {
                        match Conntrack::open() {
                            Ok(ct) => ct
                                .dump_with(|chunk| {
                                    let addr = addr.clone();
                                    async move {
                                        let _ = addr.send(DumpChunkMsg(kind, chunk)).await;
                                    }
                                })
                                .await
                                .map(|_| t0.elapsed())
                                .map_err(|e| e.to_string()),
                            Err(e) => Err(format!("ctnetlink: {e}")),
                        }
                    }),
                    Err(e) => Err(format!("dump runtime: {e}")),
                };
                addr.do_send(DumpDoneMsg(kind, r));
            }
        });
        if let Err(e) = spawned {
            addr.do_send(DumpDoneMsg(kind, Err(format!("dump thread: {e}"))));
        }
    }

    /// Why this node could not take over without losing sessions now (empty: it could): the
    /// `failover_safe` flag of `pfsync.status` and `ha.status`.
    fn not_safe_because(&self) -> Vec<String> {
        let mut why = Vec::new();
        if self.injector.is_none() {
            why.push("state sync is not running (see kernel.last_error)".to_string());
            return why;
        }
        if !self.machine.link_up() {
            why.push(format!("the sync link {} is down", self.spec.device));
        }
        if self.machine.link_up()
            && self.machine.peer_silent()
            && let Some(t) = self.machine.last_heard()
        {
            why.push(format!(
                "nothing heard from the peer for {} s (its state sync may have stopped)",
                clock::now().saturating_duration_since(t).as_secs()
            ));
        }
        if self.machine.bulk_pending() {
            why.push("the bulk from the peer is not complete".to_string());
        } else if !self.peer_bulk_done {
            why.push("no complete bulk from the peer since start (it did not answer)".to_string());
        }
        // Live state only: the apply-time samples are not used here, as after a big bulk they
        // keep its figures until 256 new messages came (an idle backup would never look safe).
        if self.ops_in_flight >= UNSAFE_BACKLOG {
            why.push(format!(
                "{} of the peer's states are still waiting to be written into the kernel",
                self.ops_in_flight
            ));
        }
        if let Some(at) = self.last_inject_error
            && at.elapsed() < Duration::from_secs(60)
        {
            why.push("some of the peer's states failed to go into the kernel in the last minute (see kernel.last_error)".to_string());
        }
        why
    }

    fn status(&self) -> Value {
        let st = self.machine.stats();
        let why = self.not_safe_because();
        let mut kernel = self.kstats.clone();
        kernel.send_errors = self.send_failed.get();
        json!({
            "interface": self.spec.interface,
            "device": self.spec.device,
            "peer": self.dst().to_string(),
            "node_id": self.machine.config().node_id,
            "authenticated": self.spec.key.is_some(),
            "states": self.machine.len(),
            "holding_demotion": self.machine.holding_demotion(),
            "bulk_pending": self.machine.bulk_pending(),
            "bulk_sending": self.machine.bulk_sending(),
            "link_up": self.machine.link_up(),
            "peer_heard_ms_ago": self
                .machine
                .last_heard()
                .map(|t| clock::now().saturating_duration_since(t).as_millis() as u64),
            "peer_silent": self.machine.peer_silent(),
            "stats": st,
            "kernel": kernel,
            "lag": self.machine.lag(),
            "apply_ms": self.apply.summary(),
            "failover_safe": why.is_empty(),
            "not_safe_because": why,
        })
    }
}

impl Actor for Pfsync {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.open(ctx);
    }
}

impl Handler<OpenedMsg> for Pfsync {
    type Result = ();
    fn handle(&mut self, m: OpenedMsg, ctx: &mut Context<Self>) {
        match m.0 {
            Ok(Opened {
                injector,
                events,
                sock,
                ifindex,
                link_up: up,
                labels,
            }) => {
                self.kstats.peer_label = labels;
                let sock = Rc::new(sock);
                self.new_events = Some(events.new_events());
                self.ifindex = Some(ifindex);
                self.injector = Some(injector);
                self.sock = Some(sock.clone());
                self.start_sender(sock.clone(), ifindex);
                ctx.add_stream(events);
                // rx task: everything readable goes to the actor as one batch, and the next
                // read waits until the actor has handled it (backpressure lands in the socket's
                // receive buffer, where the kernel counts it, never in a silent mailbox drop).
                let addr = ctx.address();
                actix_rt::spawn(async move {
                    let mut buf = vec![0u8; 65536];
                    loop {
                        let mut batch = Vec::new();
                        let read_at;
                        match sock.recv(&mut buf).await {
                            Ok(r) => {
                                read_at = std::time::Instant::now();
                                batch.push(buf[..r.len.min(buf.len())].to_vec());
                            }
                            Err(e) => {
                                tracing::warn!("pfsync receive failed: {e}");
                                tokio::time::sleep(Duration::from_millis(100)).await;
                                if !addr.connected() {
                                    break;
                                }
                                continue;
                            }
                        }
                        while batch.len() < RX_BATCH {
                            match sock.recv(&mut buf).now_or_never() {
                                Some(Ok(r)) => batch.push(buf[..r.len.min(buf.len())].to_vec()),
                                _ => break,
                            }
                        }
                        if addr.send(RxMsg(batch, read_at)).await.is_err() {
                            break;
                        }
                    }
                });
                // Start syncing: with the link up, the bulk request goes first and our own table
                // is read once the bulk is in (`bulk_events`), otherwise at once; refresh dumps
                // from then on.
                ctx.run_later(REFRESH_MIN, |a, ctx| a.start_refresh(ctx));
                tracing::info!(device = %self.spec.device, peer = %self.dst(), "state sync started");
                if up {
                    self.feed(Input::LinkUp, ctx);
                } else {
                    self.bulk_events(ctx);
                    self.rearm(ctx);
                }
            }
            Err(e) => {
                tracing::warn!("state sync not started: {e}; retrying");
                self.kstats.last_error = Some(e);
                ctx.run_later(Duration::from_secs(2), |a, ctx| a.open(ctx));
            }
        }
    }
}

impl Handler<DumpChunkMsg> for Pfsync {
    type Result = ();
    fn handle(&mut self, m: DumpChunkMsg, ctx: &mut Context<Self>) {
        let now = clock::now();
        let mut actions = Vec::new();
        for e in &m.1 {
            let Some(state) = entry_to_state(e) else {
                continue;
            };
            self.machine
                .saw(State::compute_id(state.proto, &state.orig, state.zone));
            if e.labels & PEER_LABEL != 0 && self.peer_bulk_done {
                // We wrote it for the peer, and the peer no longer has it: it ended while we
                // were down (the peer's bulk did not bring it back), or its removal is on the
                // way. It is never taken for ours. (Without a completed bulk the peer may be
                // gone, and its states are ours to carry.)
                let id = State::compute_id(state.proto, &state.orig, state.zone);
                if self.machine.state(id).is_none() {
                    if m.0 != DumpKind::Refresh {
                        self.kstats.stale_removed += 1;
                        self.stale_this_dump += 1;
                    }
                    self.queue_op(Op::Delete(e.orig, e.zone));
                    continue;
                }
            }
            let input = match m.0 {
                DumpKind::Refresh | DumpKind::CatchUp => Input::Refresh(state, self.refresh_every),
                DumpKind::Resync => {
                    // A state the machine learned from the peer stays the peer's.
                    let id = State::compute_id(state.proto, &state.orig, state.zone);
                    if self
                        .machine
                        .state(id)
                        .is_some_and(|(_, o)| o == Origin::Peer)
                    {
                        continue;
                    }
                    Input::Local {
                        event: Event::Update,
                        state,
                        origin: Origin::Local,
                    }
                }
            };
            actions.extend(self.machine.handle(now, input));
        }
        self.run(actions, ctx);
    }
}

/// Loads the label table if it was never loaded, is missing or was changed. Blocking.
fn keep_labels(
    labels: &std::sync::Mutex<crate::sys::nft::Guard>,
) -> Result<Option<crate::sys::nft::Drift>, String> {
    let mut g = labels.lock().unwrap_or_else(|p| p.into_inner());
    g.keep(crate::sys::nft::load).map_err(|e| e.to_string())
}

impl Handler<LabelTableMsg> for Pfsync {
    type Result = ();
    fn handle(&mut self, m: LabelTableMsg, _: &mut Context<Self>) {
        let table = format!("inet {}", crate::proto::nft::PFSYNC_TABLE);
        match m.0 {
            Ok(None) => {}
            Ok(Some(crate::sys::nft::Drift::NotLoaded)) => {}
            Ok(Some(drift)) => {
                self.kstats.label_table_reloads += 1;
                if matches!(drift, crate::sys::nft::Drift::Missing(_)) {
                    tracing::warn!(
                        "{drift}: the label table is loaded again; the peer's states written \
                         meanwhile carry no peer label"
                    );
                } else {
                    tracing::warn!("{drift}: the label table is loaded again");
                }
            }
            Err(e) => {
                if self.kstats.peer_label {
                    tracing::warn!(
                        "the label table {table} is missing and cannot be loaded ({e}): peer \
                         states will not carry the peer label"
                    );
                }
                self.kstats.peer_label = false;
                return;
            }
        }
        if !self.kstats.peer_label {
            tracing::info!("the label table {table} is loaded: peer states carry the peer label");
        }
        self.kstats.peer_label = true;
    }
}

impl Handler<DumpDoneMsg> for Pfsync {
    type Result = ();
    fn handle(&mut self, m: DumpDoneMsg, ctx: &mut Context<Self>) {
        self.dumping = false;
        let took = match m.1 {
            Ok(took) => {
                // What the dump did not show has ended without an event.
                self.feed(Input::DumpDone, ctx);
                Some(took)
            }
            Err(e) => {
                tracing::warn!(kind = ?m.0, "conntrack dump failed: {e}");
                self.kstats.last_error = Some(e);
                None
            }
        };
        if let Some(kind) = self.dump_again.take() {
            self.dump(kind, ctx);
        } else if m.0 == DumpKind::Resync
            && self
                .last_overrun
                .is_some_and(|t| t.elapsed() < Duration::from_secs(2))
        {
            // The burst that overran may still have been running while we dumped: look again
            // once it has settled (a dump of 100k entries takes about 0.1 s).
            ctx.run_later(Duration::from_millis(500), |a, ctx| a.start_dump(ctx));
        }
        if self.stale_this_dump > 0 {
            tracing::info!(
                states = self.stale_this_dump,
                "removed states written for the peer that the peer no longer has (they ended \
                 while we were down)"
            );
            self.stale_this_dump = 0;
        }
        if m.0 == DumpKind::Refresh {
            self.refresh_every = took.map_or(REFRESH_MIN, |t| REFRESH_MIN.max(t * 50));
            ctx.run_later(self.refresh_every, |a, ctx| a.start_refresh(ctx));
        }
    }
}

impl StreamHandler<conntrack::Event> for Pfsync {
    fn handle(&mut self, ev: conntrack::Event, ctx: &mut Context<Self>) {
        self.kstats.events += 1;
        let (event, entry) = match ev {
            conntrack::Event::New(e) => (Event::New, e),
            conntrack::Event::Update(e) => (Event::Update, e),
            conntrack::Event::Destroy(e) => (Event::Destroy, e),
            conntrack::Event::Overrun => {
                self.kstats.overruns += 1;
                self.last_overrun = Some(std::time::Instant::now());
                tracing::warn!("conntrack events overran; resyncing from a dump");
                self.start_dump(ctx);
                return;
            }
        };
        let Some(state) = entry_to_state(&entry) else {
            self.kstats.skipped_protocols += 1;
            return;
        };
        self.feed(
            Input::Local {
                event,
                state,
                origin: Origin::Local,
            },
            ctx,
        );
    }

    fn finished(&mut self, _: &mut Context<Self>) {
        tracing::error!("conntrack event stream ended; local states are no longer synced");
    }
}

impl Handler<RxMsg> for Pfsync {
    type Result = ();
    fn handle(&mut self, m: RxMsg, ctx: &mut Context<Self>) {
        let mut actions = Vec::new();
        let now = clock::now();
        let before = self.ops_submitted + self.pending_ops.len() as u64;
        for pkt in m.0 {
            match wipv4::parse_header(&pkt) {
                Ok((h, payload)) if h.ttl == 255 => {
                    let p = payload.to_vec();
                    actions.extend(self.machine.handle(now, Input::Received(p)));
                }
                Ok(_) => {
                    self.kstats.bad_ttl += 1;
                }
                Err(_) => self.machine.count_drop(DropReason::Truncated),
            }
        }
        self.run(actions, ctx);
        let after = self.ops_submitted + self.pending_ops.len() as u64;
        if after > before {
            if self.apply_marks.len() >= APPLY_MARKS {
                self.apply_marks.pop_front();
            }
            self.apply_marks.push_back((after, m.1));
        }
    }
}

impl Handler<InjectedMsg> for Pfsync {
    type Result = ();
    fn handle(&mut self, m: InjectedMsg, ctx: &mut Context<Self>) {
        let r = m.0;
        let bad = r.upsert_errors.len();
        let done = r.upserted + bad + r.deleted + r.delete_errors;
        self.ops_in_flight = self.ops_in_flight.saturating_sub(done);
        self.ops_done += done as u64;
        let mut timed = false;
        while let Some(&(n, read_at)) = self.apply_marks.front() {
            if n > self.ops_done {
                break;
            }
            self.apply_marks.pop_front();
            self.apply.push(read_at.elapsed());
            timed = true;
        }
        if let (true, Some((p50, p99))) = (timed, self.apply.p50_p99()) {
            self.machine.set_apply_time(p50, p99);
        }
        if self.new_events_off {
            self.bulk_events(ctx);
        }
        self.kstats.injected += r.upserted as u64;
        self.kstats.inject_errors += bad as u64;
        if bad > 0 {
            self.last_inject_error = Some(std::time::Instant::now());
        }
        self.kstats.removed += r.deleted as u64;
        self.kstats.remove_errors += r.delete_errors as u64;
        if let Some(first) = r.upsert_errors.first() {
            tracing::warn!(
                failed = bad,
                of = bad + r.upserted,
                "injecting peer states failed, e.g. {first}"
            );
            self.kstats.last_error = Some(first.clone());
        }
        if r.delete_errors > 0 {
            tracing::debug!(
                bad = r.delete_errors,
                "some peer states could not be removed"
            );
        }
    }
}

/// The sync link's carrier changed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PfsyncLinkMsg(pub bool);

impl Handler<PfsyncLinkMsg> for Pfsync {
    type Result = ();
    fn handle(&mut self, m: PfsyncLinkMsg, ctx: &mut Context<Self>) {
        if self.injector.is_some() {
            self.feed(if m.0 { Input::LinkUp } else { Input::LinkDown }, ctx);
        }
    }
}

/// `pfsync.status`.
#[derive(Message)]
#[rtype(result = "Value")]
pub struct PfsyncStatusMsg;

impl Handler<PfsyncStatusMsg> for Pfsync {
    type Result = MessageResult<PfsyncStatusMsg>;
    fn handle(&mut self, _: PfsyncStatusMsg, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.status())
    }
}

/// Origins of the states the machine knows, by state id (for `states.list`).
#[derive(Message)]
#[rtype(result = "HashMap<u64, (Origin, u32)>")]
pub struct PfsyncOriginsMsg;

impl Handler<PfsyncOriginsMsg> for Pfsync {
    type Result = MessageResult<PfsyncOriginsMsg>;
    fn handle(&mut self, _: PfsyncOriginsMsg, _: &mut Context<Self>) -> Self::Result {
        MessageResult(
            self.machine
                .states()
                .map(|(s, o)| (s.id, (o, s.creator)))
                .collect(),
        )
    }
}

/// Ask the peer for its whole table now.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PfsyncBulkMsg;

impl Handler<PfsyncBulkMsg> for Pfsync {
    type Result = ();
    fn handle(&mut self, _: PfsyncBulkMsg, ctx: &mut Context<Self>) {
        self.feed(Input::RequestBulk, ctx);
    }
}

impl Handler<StopMsg> for Pfsync {
    type Result = ();
    fn handle(&mut self, _: StopMsg, ctx: &mut Context<Self>) {
        self.stopping = true;
        // Injected states stay in the kernel: they are what keeps sessions alive. The peer
        // label on them tells the next run which are the peer's.
        ctx.stop();
    }
}

/// One row of `states.list` (OPNsense's "States Dump").
#[derive(Clone, Debug, Serialize)]
pub struct StateRow {
    pub proto: String,
    pub orig: String,
    pub reply: String,
    pub nat: Option<String>,
    pub tcp_state: Option<String>,
    pub timeout: u32,
    pub mark: u32,
    pub origin: Origin,
}

fn fmt_tuple(t: &CtTuple) -> String {
    let host = |a: &IpAddr| match a {
        IpAddr::V6(v) => format!("[{v}]"),
        v => v.to_string(),
    };
    if t.proto == 1 || t.proto == 58 {
        format!(
            "{} -> {} type {} code {} id {}",
            t.src, t.dst, t.icmp_type, t.icmp_code, t.icmp_id
        )
    } else {
        format!(
            "{}:{} -> {}:{}",
            host(&t.src),
            t.sport,
            host(&t.dst),
            t.dport
        )
    }
}

fn proto_name(p: u8) -> String {
    match p {
        6 => "tcp".into(),
        17 => "udp".into(),
        1 => "icmp".into(),
        58 => "icmpv6".into(),
        n => n.to_string(),
    }
}

fn tcp_name(s: u8) -> &'static str {
    match TcpState::ALL.into_iter().find(|t| *t as u8 == s) {
        Some(TcpState::SynSent) => "SYN_SENT",
        Some(TcpState::SynRecv) => "SYN_RECV",
        Some(TcpState::Established) => "ESTABLISHED",
        Some(TcpState::FinWait) => "FIN_WAIT",
        Some(TcpState::CloseWait) => "CLOSE_WAIT",
        Some(TcpState::LastAck) => "LAST_ACK",
        Some(TcpState::TimeWait) => "TIME_WAIT",
        Some(TcpState::Close) => "CLOSE",
        Some(TcpState::SynSent2) => "SYN_SENT2",
        _ => "NONE",
    }
}

/// The kernel's state table as rows, newest knowledge of origin from the sync machine.
/// `filter` matches a substring of the row's text; `limit` caps the rows.
pub async fn states_list(
    origins: HashMap<u64, (Origin, u32)>,
    limit: usize,
    filter: Option<String>,
) -> Result<(Vec<StateRow>, usize), String> {
    let ct = Conntrack::open().map_err(|e| format!("ctnetlink: {e}"))?;
    let entries = ct.dump().await.map_err(|e| e.to_string())?;
    let total = entries.len();
    let mut rows = Vec::new();
    for e in &entries {
        let origin = entry_to_state(e)
            .map(|s| State::compute_id(s.proto, &s.orig, s.zone))
            .and_then(|id| origins.get(&id).map(|(o, _)| *o))
            .unwrap_or(Origin::Local);
        let nat = e.nat();
        let nat_text = match (nat.snat, nat.dnat) {
            (None, None) => None,
            (s, d) => Some(
                [
                    s.map(|(a, p)| {
                        format!("snat {a}{}", p.map(|p| format!(":{p}")).unwrap_or_default())
                    }),
                    d.map(|(a, p)| {
                        format!("dnat {a}{}", p.map(|p| format!(":{p}")).unwrap_or_default())
                    }),
                ]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(", "),
            ),
        };
        let row = StateRow {
            proto: proto_name(e.orig.proto),
            orig: fmt_tuple(&e.orig),
            reply: fmt_tuple(&e.reply),
            nat: nat_text,
            tcp_state: e.tcp_state.map(|s| tcp_name(s).to_string()),
            timeout: e.timeout,
            mark: e.mark,
            origin,
        };
        if let Some(f) = &filter {
            let text = format!(
                "{} {} {} {} {:?}",
                row.proto,
                row.orig,
                row.reply,
                row.nat.clone().unwrap_or_default(),
                row.origin
            )
            .to_lowercase();
            if !text.contains(&f.to_lowercase()) {
                continue;
            }
        }
        if rows.len() < limit {
            rows.push(row);
        }
    }
    Ok((rows, total))
}
