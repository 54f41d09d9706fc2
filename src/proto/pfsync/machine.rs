//! The sync machine. See the module documentation of [`super`] for the rules.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use super::lag::Lag;
use super::stats::{DropReason, Stats, add};
use super::{Action, Config, Event, Input, Origin};
use crate::proto::time::Instant;
use crate::wire::pfsync::{
    self as wire, BULK_UNSOLICITED, DELETE_LEN, Delete, FLAG_BULK, FLAG_SEQ, HEADER_LEN, L4Proto,
    RANGE_LEN, Repr, STATE_LEN, SUBHEADER_LEN, Section, SeqRange, State,
};

/// A state in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    state: State,
    origin: Origin,
    /// When `state.timeout` was read (a local event) or received (a peer record): the peer's
    /// copy of a local state expires at `at + timeout` unless it hears from us again.
    at: Instant,
    /// The last table dump (`Sweep::round`) that showed it in the kernel.
    seen: u32,
    /// Dumps in a row that did not show it though it was older than the dump.
    missed: u8,
}

/// The table dump in progress: what the kernel no longer has is found by its end.
#[derive(Debug, Clone, Copy)]
struct Sweep {
    round: u32,
    started: Instant,
}

/// What one sequenced message carried, so that it can be sent again from the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Item {
    /// An INSERT/UPDATE or DELETE of a local state (resent only while still ours, or as DELETE).
    State(u64),
    /// A state of a bulk answer (resent whatever its origin, or as DELETE).
    Bulk(u64),
    Clear(u32),
    /// (states sent, the request answered).
    BulkEnd(u32, u32),
}

/// A sequenced message in the send window.
#[derive(Debug, Clone)]
struct Sent {
    at: Instant,
    retries: u32,
    items: Vec<Item>,
    /// The kernel event of its oldest state change (data messages; see `lag`).
    oldest: Option<Instant>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    Insert,
    Update,
    Delete,
}

impl Pending {
    /// A later change merged into a queued one.
    fn merge(self, later: Pending) -> Pending {
        match (self, later) {
            (_, Pending::Delete) => Pending::Delete,
            (Pending::Delete, _) | (Pending::Insert, _) | (_, Pending::Insert) => Pending::Insert,
            (Pending::Update, Pending::Update) => Pending::Update,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Queued {
    kind: Pending,
    retries: u32,
    /// When the change was first queued (a resend keeps the original time).
    at: Instant,
    /// Send even if the state is not ours (a bulk record being resent).
    any_origin: bool,
}

/// The coalescing output queue: each id at most once in `map`; `order` may hold stale ids
/// (skipped when popped).
#[derive(Debug, Default, Clone)]
struct Queue {
    order: VecDeque<u64>,
    map: HashMap<u64, Queued>,
    since: Option<Instant>,
}

impl Queue {
    /// Queues a change of `id` made at `at` (merged into one already queued).
    fn push(
        &mut self,
        id: u64,
        kind: Pending,
        retries: u32,
        any_origin: bool,
        now: Instant,
        at: Instant,
    ) {
        match self.map.get_mut(&id) {
            Some(q) => {
                q.kind = q.kind.merge(kind);
                q.retries = q.retries.max(retries);
                q.any_origin |= any_origin;
                q.at = q.at.min(at);
            }
            None => {
                self.map.insert(
                    id,
                    Queued {
                        kind,
                        retries,
                        at,
                        any_origin,
                    },
                );
                self.order.push_back(id);
            }
        }
        self.since.get_or_insert(now);
    }

    fn clear(&mut self) {
        self.order.clear();
        self.map.clear();
        self.since = None;
    }
}

/// A range the receiver is missing.
#[derive(Debug, Clone, Copy)]
struct Missing {
    range: SeqRange,
    since: Instant,
    nack_at: Instant,
}

/// Receive-side tracking of the peer's sequence numbers (one peer epoch).
#[derive(Debug, Clone)]
struct PeerRx {
    node_id: u32,
    epoch: u32,
    /// The next sequence number expected.
    next: u32,
    missing: Vec<Missing>,
    to_ack: Vec<SeqRange>,
    /// Messages in `to_ack` (an ACK goes at once when this reaches [`ACK_EVERY`]).
    unacked: usize,
    /// When the newest message in `to_ack` arrived (ACK_INFO's hold time).
    last_rx: Option<Instant>,
}

const MAX_MISSING: usize = 256;
const MAX_TO_ACK: usize = 1024;
/// Received sequenced messages that make an ACK due at once rather than after
/// `ack_delay`: a sender paced by its window (a bulk) is not held up by the delay.
const ACK_EVERY: usize = 32;

enum Track {
    Accepted,
    Duplicate,
}

impl PeerRx {
    fn new(node_id: u32, epoch: u32, next: u32) -> PeerRx {
        PeerRx {
            node_id,
            epoch,
            next,
            missing: Vec::new(),
            to_ack: Vec::new(),
            unacked: 0,
            last_rx: None,
        }
    }

    /// `seq` is the sender's next sequence number (an unsequenced message): anything before it
    /// that we have not seen is missing.
    fn observe_next(&mut self, seq: u32, now: Instant, nack_at: Instant) {
        let d = seq.wrapping_sub(self.next);
        if d != 0 && d < (1 << 31) {
            self.add_missing(seq.wrapping_sub(1), now, nack_at);
            self.next = seq;
        }
    }

    fn add_missing(&mut self, last: u32, now: Instant, nack_at: Instant) {
        if self.missing.len() >= MAX_MISSING {
            self.missing.remove(0);
        }
        self.missing.push(Missing {
            range: SeqRange {
                first: self.next,
                last,
            },
            since: now,
            nack_at,
        });
    }

    fn track(&mut self, seq: u32, now: Instant, nack_at: Instant) -> Track {
        let d = seq.wrapping_sub(self.next);
        if d == 0 {
            self.next = self.next.wrapping_add(1);
            return Track::Accepted;
        }
        if d < (1 << 31) {
            self.add_missing(seq.wrapping_sub(1), now, nack_at);
            self.next = seq.wrapping_add(1);
            return Track::Accepted;
        }
        // Before `next`: a late copy of a missing seq, or a duplicate.
        let Some(i) = self.missing.iter().position(|m| m.range.contains(seq)) else {
            return Track::Duplicate;
        };
        let m = self.missing.remove(i);
        if seq != m.range.first {
            self.missing.push(Missing {
                range: SeqRange {
                    first: m.range.first,
                    last: seq.wrapping_sub(1),
                },
                ..m
            });
        }
        if seq != m.range.last {
            self.missing.push(Missing {
                range: SeqRange {
                    first: seq.wrapping_add(1),
                    last: m.range.last,
                },
                ..m
            });
        }
        Track::Accepted
    }

    fn ack(&mut self, seq: u32) {
        self.unacked += 1;
        if let Some(last) = self.to_ack.last_mut()
            && last.last.wrapping_add(1) == seq
        {
            last.last = seq;
            return;
        }
        if self.to_ack.len() >= MAX_TO_ACK {
            self.to_ack.remove(0);
        }
        self.to_ack.push(SeqRange {
            first: seq,
            last: seq,
        });
    }
}

/// Our request for the peer's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    Idle,
    Waiting {
        /// Whether the demotion is held for it (the boot-time request).
        hold: bool,
        /// Give up at.
        until: Instant,
        /// Send the request (again) at.
        retry_at: Instant,
        /// The request's id (its BULK_END echoes it).
        id: u32,
    },
}

/// The id of our `n`th bulk request: fresh per request and across restarts (the epoch is
/// random per start); never 0 (an older peer's) nor `BULK_UNSOLICITED`.
fn request_id(epoch: u32, n: u32) -> u32 {
    match epoch.wrapping_add(n) {
        0 | BULK_UNSOLICITED => 1,
        id => id,
    }
}

/// A bulk answer in progress.
#[derive(Debug, Clone)]
struct BulkTx {
    ids: Vec<u64>,
    pos: usize,
    sent: u32,
    /// The request it answers ([`BULK_UNSOLICITED`]: none).
    request: u32,
}

/// Record counts of a message being built, to know when it is full.
#[derive(Debug, Default, Clone, Copy)]
struct Fill {
    states: usize,
    deletes: usize,
}

impl Fill {
    fn len(self) -> usize {
        let mut len = HEADER_LEN;
        if self.states > 0 {
            len += SUBHEADER_LEN * 2 + self.states * STATE_LEN; // INSERT and UPDATE sections
        }
        if self.deletes > 0 {
            len += SUBHEADER_LEN + self.deletes * DELETE_LEN;
        }
        len
    }

    fn with(self, kind: Pending) -> Fill {
        match kind {
            Pending::Delete => Fill {
                deletes: self.deletes + 1,
                ..self
            },
            _ => Fill {
                states: self.states + 1,
                ..self
            },
        }
    }
}

/// The sync machine of one node.
#[derive(Debug, Clone)]
pub struct Sync {
    cfg: Config,
    table: BTreeMap<u64, Entry>,
    tombstones: HashMap<u64, u64>,
    /// (expiry, id, version) in insertion order.
    tomb_order: VecDeque<(Instant, u64, u64)>,
    clock: u64,
    link_up: bool,
    last_now: Instant,
    /// Sequenced messages sent so far (the internal, non-wrapping sequence counter).
    next_k: u64,
    window: BTreeMap<u64, Sent>,
    /// The highest internal counter dropped from the window unacknowledged.
    evicted_max: Option<u64>,
    queue: Queue,
    /// Push our whole table at the next sign of life from the peer.
    need_resync: bool,
    bulk_tx: Option<BulkTx>,
    peer: Option<PeerRx>,
    ack_at: Option<Instant>,
    want: Want,
    /// Whether the demotion hold is on (announced).
    holding: bool,
    hold_announced: bool,
    /// The table dump in progress, and the number of the last one begun.
    sweep: Option<Sweep>,
    sweep_round: u32,
    /// Bulk requests we made (for their ids).
    bulk_requests: u32,
    /// A request that came while a bulk was under way, answered next.
    bulk_next: Option<u32>,
    lag: Lag,
    /// Our apply time, sent with our ACKs (set by the actor).
    apply_time: Option<(u32, u32)>,
    /// When we last sent anything (the heartbeat goes out after [`Config::heartbeat`] of quiet).
    last_sent: Instant,
    /// When a valid message of the peer's last came, and whether it has been silent since.
    last_heard: Option<Instant>,
    peer_silent: bool,
    stats: Stats,
}

impl Sync {
    /// A machine that will, at its first `poll`, hold the demotion and ask the peer for a bulk.
    /// The sync link is assumed up (say [`Input::LinkDown`] if not).
    pub fn new(cfg: Config, now: Instant) -> Sync {
        let want = Want::Waiting {
            hold: true,
            until: now + cfg.bulk_timeout,
            retry_at: now,
            id: request_id(cfg.epoch, 1),
        };
        let clock = cfg.clock_seed;
        let mut s = Sync {
            cfg,
            table: BTreeMap::new(),
            tombstones: HashMap::new(),
            tomb_order: VecDeque::new(),
            clock,
            link_up: true,
            last_now: now,
            next_k: 0,
            window: BTreeMap::new(),
            evicted_max: None,
            queue: Queue::default(),
            need_resync: false,
            bulk_tx: None,
            peer: None,
            ack_at: None,
            want,
            holding: false,
            hold_announced: false,
            sweep: None,
            sweep_round: 0,
            bulk_requests: 1,
            bulk_next: None,
            lag: Lag::default(),
            apply_time: None,
            last_sent: now,
            last_heard: None,
            peer_silent: false,
            stats: Stats::default(),
        };
        s.refresh_stats();
        s
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Every state in the table with its origin, by id.
    pub fn states(&self) -> impl Iterator<Item = (&State, Origin)> {
        self.table.values().map(|e| (&e.state, e.origin))
    }

    /// One state by id.
    pub fn state(&self, id: u64) -> Option<(&State, Origin)> {
        self.table.get(&id).map(|e| (&e.state, e.origin))
    }

    /// Number of states in the table.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Whether the demotion hold is on.
    pub fn holding_demotion(&self) -> bool {
        self.holding
    }

    /// Whether our request for the peer's table is outstanding.
    pub fn bulk_pending(&self) -> bool {
        matches!(self.want, Want::Waiting { .. })
    }

    /// Whether a bulk answer to the peer is being sent.
    pub fn bulk_sending(&self) -> bool {
        self.bulk_tx.is_some()
    }

    pub fn link_up(&self) -> bool {
        self.link_up
    }

    /// When the last valid message from the peer came (none yet: `None`).
    pub fn last_heard(&self) -> Option<Instant> {
        self.last_heard
    }

    /// The peer sent nothing for [`Config::peer_silent_after`] (link up), and nothing since.
    pub fn peer_silent(&self) -> bool {
        self.peer_silent
    }

    /// Counts a message the actor dropped before it reached the machine (e.g. TTL not 255).
    pub fn count_drop(&mut self, reason: DropReason) {
        self.stats.count(reason);
    }

    /// The next deadline: now (as last seen) if work is pending, else the earliest timer.
    pub fn poll_at(&self) -> Option<Instant> {
        let now = self.last_now;
        let mut at: Option<Instant> = None;
        let mut at_least = |t: Instant| at = Some(at.map_or(t, |a| a.min(t)));
        if let Want::Waiting {
            hold,
            until,
            retry_at,
            ..
        } = self.want
        {
            if hold && !self.hold_announced {
                at_least(now);
            }
            at_least(until);
            if self.link_up {
                at_least(retry_at);
            }
        }
        if let Some((t, _, _)) = self.tomb_order.front() {
            at_least(*t);
        }
        if self.link_up {
            if let Some(t) = self.ack_at {
                at_least(t);
            }
            if let Some(p) = &self.peer {
                for m in &p.missing {
                    at_least(m.nack_at.min(m.since + self.cfg.missing_timeout));
                }
            }
            if let Some(t) = self.queue.since
                && self.flush_has_room()
            {
                at_least(t + self.cfg.flush_delay);
            }
            if let Some(s) = self.window.values().next() {
                at_least(s.at + self.cfg.resend_timeout);
            }
            if self.bulk_ready() {
                at_least(now);
            }
            at_least(self.last_sent + self.cfg.heartbeat);
            if let Some(t) = self.last_heard
                && !self.peer_silent
            {
                at_least(t + self.cfg.peer_silent_after);
            }
        }
        at
    }

    /// Handles one input; returns what to do, in order.
    pub fn handle(&mut self, now: Instant, input: Input) -> Vec<Action> {
        self.last_now = self.last_now.max(now);
        let mut out = Vec::new();
        match input {
            Input::Local {
                event,
                state,
                origin,
            } => self.process_local(now, event, state, origin),
            Input::Received(bytes) => self.process_message(now, &bytes, &mut out),
            Input::Refresh(state, next) => self.process_refresh(now, state, next),
            Input::RequestBulk => self.request_bulk(now, false, &mut out),
            Input::SendBulk => self.start_bulk(BULK_UNSOLICITED),
            Input::Flushed => self.process_flushed(now, &mut out),
            Input::LinkUp => {
                if !self.link_up {
                    self.link_up = true;
                    self.need_resync = true;
                    self.request_bulk(now, false, &mut out);
                }
            }
            Input::LinkDown => self.process_link_down(),
            Input::DumpStarted => {
                self.sweep_round = self.sweep_round.wrapping_add(1);
                self.sweep = Some(Sweep {
                    round: self.sweep_round,
                    started: now,
                });
            }
            Input::DumpDone => self.process_sweep(now, &mut out),
            Input::Tick => return self.poll(now),
        }
        self.flush(now, false, &mut out);
        self.refresh_stats();
        out
    }

    /// Handles every deadline that has passed.
    pub fn poll(&mut self, now: Instant) -> Vec<Action> {
        self.last_now = self.last_now.max(now);
        let mut out = Vec::new();
        self.expire_tombstones(now);
        self.poll_want(now, &mut out);
        if self.link_up {
            self.poll_acks(now, &mut out);
            if self
                .queue
                .since
                .is_some_and(|t| t + self.cfg.flush_delay <= now)
            {
                self.flush(now, true, &mut out);
            }
            self.poll_resends(now, &mut out);
            self.poll_bulk(now, &mut out);
            self.poll_heartbeat(now, &mut out);
        }
        self.refresh_stats();
        out
    }

    /// An empty message after a quiet [`Config::heartbeat`] (the peer can tell "nothing to
    /// sync" from "sync stopped"), and the peer's silence noticed.
    fn poll_heartbeat(&mut self, now: Instant, out: &mut Vec<Action>) {
        if now >= self.last_sent + self.cfg.heartbeat {
            self.stats.heartbeats_sent += 1;
            self.send_ctl(Vec::new(), out);
        }
        if let Some(t) = self.last_heard
            && !self.peer_silent
            && now >= t + self.cfg.peer_silent_after
        {
            self.peer_silent = true;
            self.stats.peer_silences += 1;
            out.push(Action::PeerSilent(now.saturating_duration_since(t)));
        }
    }

    // ----- local events -----

    fn process_local(&mut self, now: Instant, event: Event, mut st: State, origin: Origin) {
        st.id = State::compute_id(st.proto, &st.orig, st.zone);
        if origin == Origin::Peer {
            // Our own injection coming back from the kernel: the table already has it.
            self.stats.echo_suppressed += 1;
            return;
        }
        let id = st.id;
        match event {
            Event::New | Event::Update => {
                let prev = self.table.get(&id);
                st.creator = match (prev, event) {
                    (Some(e), Event::Update) => e.state.creator,
                    _ => self.cfg.node_id,
                };
                let kind = if prev.is_none() || event == Event::New {
                    Pending::Insert
                } else {
                    Pending::Update
                };
                st.version = self.tick_clock();
                self.table.insert(
                    id,
                    Entry {
                        state: st,
                        origin: Origin::Local,
                        at: now,
                        seen: 0,
                        missed: 0,
                    },
                );
                self.tombstones.remove(&id);
                self.queue.push(id, kind, 0, false, now, now);
            }
            Event::Destroy => match self.table.get(&id).map(|e| e.origin) {
                None => {}
                Some(Origin::Peer) => {
                    // The peer's state timed out here; the peer still owns it: not sent.
                    self.table.remove(&id);
                }
                Some(Origin::Local) => {
                    self.table.remove(&id);
                    let version = self.tick_clock();
                    self.tombstone(id, version, now);
                    self.queue.push(id, Pending::Delete, 0, false, now, now);
                }
            },
        }
    }

    /// A local state as the kernel has it now (a periodic dump; the next one is `next` away).
    /// Conntrack reports no event when traffic only pushes a state's timeout forward, so the
    /// peer's copy of an idle-looking but alive state (a UDP stream, ICMP) would expire there:
    /// it is sent again once ours has moved past the peer's and the peer's copy has less than
    /// half of our time left, or would run out before the next look.
    fn process_refresh(&mut self, now: Instant, mut st: State, next: Duration) {
        st.id = State::compute_id(st.proto, &st.orig, st.zone);
        match self.table.get(&st.id) {
            Some(e) if e.origin == Origin::Peer => {}
            Some(e) => {
                let peer_left = (e.at + Duration::from_secs(u64::from(e.state.timeout)))
                    .saturating_duration_since(now);
                let ours = Duration::from_secs(u64::from(st.timeout));
                // Ours moved on, and theirs has less than half of it left or would run out
                // before the next look (one second of slack for the trip).
                let moved_on = ours > peer_left + Duration::from_secs(1);
                let short = peer_left * 2 < ours || peer_left < next + Duration::from_secs(1);
                if moved_on && short {
                    self.stats.refreshed += 1;
                    self.process_local(now, Event::Update, st, Origin::Local);
                }
            }
            // An event we missed.
            None => self.process_local(now, Event::Update, st, Origin::Local),
        }
    }

    /// The running dump showed this state in the kernel.
    pub fn saw(&mut self, id: u64) {
        if let (Some(sw), Some(e)) = (self.sweep, self.table.get_mut(&id)) {
            e.seen = sw.round;
            e.missed = 0;
        }
    }

    /// The dump is complete. A state that two dumps in a row did not show, though we knew it
    /// before each began, ended without an event reaching us (the event queue overran, or the
    /// entry carried no event extension). One dump is not enough: a peer's state may still be
    /// on its way into the kernel, and a false end costs a live session on failover. A local
    /// state then ends as if its DESTROY had come (the peer is told); a peer's is forgotten.
    fn process_sweep(&mut self, now: Instant, out: &mut Vec<Action>) {
        let Some(sw) = self.sweep.take() else {
            return;
        };
        let mut local = Vec::new();
        let mut peer = Vec::new();
        for (id, e) in self.table.iter_mut() {
            if e.seen == sw.round || e.at >= sw.started {
                continue;
            }
            e.missed = e.missed.saturating_add(1);
            if e.missed < 2 {
                continue;
            }
            match e.origin {
                Origin::Local => local.push(e.state),
                Origin::Peer => peer.push(*id),
            }
        }
        for st in local {
            self.stats.swept_local += 1;
            self.process_local(now, Event::Destroy, st, Origin::Local);
        }
        for id in peer {
            if let Some(e) = self.table.remove(&id) {
                self.stats.swept_peer += 1;
                out.push(Action::Remove(e.state));
            }
        }
    }

    fn process_flushed(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.table.clear();
        self.queue.clear();
        if self.link_up {
            let node = self.cfg.node_id;
            self.send_seq(
                now,
                vec![Section::Clear(vec![node])],
                0,
                vec![Item::Clear(node)],
                0,
                None,
                out,
            );
        }
        self.request_bulk(now, false, out);
    }

    fn process_link_down(&mut self) {
        if !self.link_up {
            return;
        }
        self.link_up = false;
        self.queue.clear();
        self.ack_at = None;
        if let Some(p) = &mut self.peer {
            p.missing.clear();
            p.to_ack.clear();
            p.unacked = 0;
        }
        if let Some(k) = self.window.keys().next_back() {
            self.evicted_max = Some(self.evicted_max.map_or(*k, |e| e.max(*k)));
        }
        add(&mut self.stats.window_evicted, self.window.len());
        self.window.clear();
        self.bulk_tx = None;
        self.bulk_next = None;
        self.need_resync = true;
    }

    /// A fresh version: above every version seen, its low 8 bits our node id's, so two nodes
    /// never issue the same version (concurrent changes resolve the same way on both).
    fn tick_clock(&mut self) -> u64 {
        let writer = u64::from(self.cfg.node_id & 0xff);
        self.clock = ((self.clock >> 8).saturating_add(1) << 8) | writer;
        self.clock
    }

    fn see_version(&mut self, v: u64) {
        self.clock = self.clock.max(v);
    }

    fn tombstone(&mut self, id: u64, version: u64, now: Instant) {
        let v = self.tombstones.entry(id).or_insert(version);
        *v = (*v).max(version);
        let v = *v;
        self.tomb_order
            .push_back((now + self.cfg.tombstone_ttl, id, v));
        while self.tomb_order.len() > self.cfg.max_tombstones.max(1) {
            if let Some((_, id, v)) = self.tomb_order.pop_front() {
                self.drop_tombstone(id, v);
            }
        }
    }

    fn drop_tombstone(&mut self, id: u64, version: u64) {
        if self.tombstones.get(&id) == Some(&version) {
            self.tombstones.remove(&id);
        }
    }

    fn expire_tombstones(&mut self, now: Instant) {
        while let Some((t, id, v)) = self.tomb_order.front().copied() {
            if t > now {
                break;
            }
            self.tomb_order.pop_front();
            self.drop_tombstone(id, v);
        }
    }

    // ----- receiving -----

    fn process_message(&mut self, now: Instant, bytes: &[u8], out: &mut Vec<Action>) {
        let repr = match wire::parse(bytes, self.cfg.key.as_deref()) {
            Ok(r) => r,
            Err(e) => {
                self.stats.count(DropReason::from(e));
                return;
            }
        };
        if repr.node_id == self.cfg.node_id {
            self.stats.count(DropReason::FromSelf);
            return;
        }
        if self.peer_silent {
            self.peer_silent = false;
            let since = self
                .last_heard
                .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
            out.push(Action::PeerBack(since));
        }
        self.last_heard = Some(now);
        let nack_at = now + self.cfg.ack_delay;
        let sequenced = repr.flags & FLAG_SEQ != 0;
        let fresh = self
            .peer
            .as_ref()
            .is_none_or(|p| p.node_id != repr.node_id || p.epoch != repr.epoch);
        if fresh {
            self.peer = Some(PeerRx::new(repr.node_id, repr.epoch, repr.seq));
        }
        let Some(peer) = self.peer.as_mut() else {
            return;
        };
        if sequenced {
            if let Track::Duplicate = peer.track(repr.seq, now, nack_at) {
                self.stats.count(DropReason::Duplicate);
                return;
            }
            peer.ack(repr.seq);
            peer.last_rx = Some(now);
            let t = if peer.unacked >= ACK_EVERY {
                now
            } else {
                now + self.cfg.ack_delay
            };
            self.ack_at = Some(self.ack_at.map_or(t, |a| a.min(t)));
        } else {
            peer.observe_next(repr.seq, now, nack_at);
        }
        self.stats.received_packets += 1;
        self.stats.unknown_action = self
            .stats
            .unknown_action
            .saturating_add(u64::from(repr.skipped));
        if self.need_resync && self.link_up && self.bulk_tx.is_none() {
            self.need_resync = false;
            self.stats.full_resyncs += 1;
            self.start_bulk(BULK_UNSOLICITED);
        }
        if repr.flags & FLAG_BULK != 0
            && let Want::Waiting { retry_at, .. } = &mut self.want
        {
            *retry_at = now + self.cfg.bulk_retry;
        }
        let sender = repr.node_id;
        // The peer's ACK coalescing, to take out of our round trips.
        let hold = repr.sections.iter().find_map(|x| match x {
            Section::AckInfo(i) => Some(Duration::from_micros(u64::from(i.hold_us))),
            _ => None,
        });
        for section in repr.sections {
            match section {
                Section::Insert(v) | Section::Update(v) => {
                    add(&mut self.stats.received_states, v.len());
                    for s in v {
                        self.merge(now, sender, s, out);
                    }
                }
                Section::Delete(v) => {
                    add(&mut self.stats.received_deletes, v.len());
                    for d in v {
                        self.apply_delete(now, d, out);
                    }
                }
                Section::Clear(v) => {
                    for c in v {
                        self.apply_clear(c, out);
                    }
                }
                Section::BulkRequest(id) => {
                    self.stats.bulk_requests_received += 1;
                    match &self.bulk_tx {
                        None => self.start_bulk(id),
                        // A retry of the request being answered.
                        Some(b) if b.request == id => {}
                        // A new request (the peer restarted, or asked again): the bulk under
                        // way may have begun before it was listening; a whole one follows.
                        Some(_) => self.bulk_next = Some(id),
                    }
                }
                Section::BulkEnd(_, req) => {
                    self.stats.bulk_ends_received += 1;
                    // Only the answer to our request (0: an older peer, which echoes none).
                    let ours = |id: u32| req == id || req == 0;
                    if let Want::Waiting { hold, id, .. } = self.want
                        && ours(id)
                    {
                        self.want = Want::Idle;
                        self.stats.last_bulk = Some(now);
                        out.push(Action::BulkDone);
                        if hold {
                            self.release_hold(out);
                        }
                    }
                }
                Section::Ack(ranges) => {
                    self.stats.acks_received += 1;
                    let mut newest: Option<(u64, Instant)> = None;
                    for r in ranges {
                        for k in self.window_keys(r) {
                            if let Some(sent) = self.window.remove(&k) {
                                if let Some(o) = sent.oldest {
                                    self.lag.acked.push(now.saturating_duration_since(o));
                                }
                                if newest.is_none_or(|(n, _)| k > n) {
                                    newest = Some((k, sent.at));
                                }
                            }
                        }
                    }
                    if let Some((_, at)) = newest {
                        let rtt = now.saturating_duration_since(at);
                        self.lag
                            .round_trip
                            .push(rtt.saturating_sub(hold.unwrap_or_default()));
                    }
                }
                Section::AckInfo(i) => {
                    self.lag.peer_apply = (i.apply_p50_us != wire::APPLY_UNKNOWN)
                        .then_some((i.apply_p50_us, i.apply_p99_us));
                }
                Section::Nack(ranges) => {
                    self.stats.nacks_received += 1;
                    self.process_nack(now, &ranges, out);
                }
            }
        }
    }

    /// Applies a received INSERT/UPDATE under the merge rule.
    fn merge(&mut self, now: Instant, sender: u32, s: State, out: &mut Vec<Action>) {
        if s.id != State::compute_id(s.proto, &s.orig, s.zone) {
            self.stats.count(DropReason::BadRecord);
            return;
        }
        self.see_version(s.version);
        if self.tombstones.get(&s.id).is_some_and(|v| s.version <= *v) {
            self.stats.count(DropReason::Stale);
            return;
        }
        let mut merged = s;
        if let Some(e) = self.table.get(&s.id) {
            if s.version <= e.state.version {
                self.stats.count(DropReason::Stale);
                return;
            }
            let backwards = s.proto == L4Proto::Tcp
                && e.state.proto == L4Proto::Tcp
                && s.tcp_state.rank() < e.state.tcp_state.rank();
            if backwards && sender != s.creator {
                merged.tcp_state = e.state.tcp_state;
                merged.tcp_window = e.state.tcp_window;
                self.stats.tcp_backwards_kept += 1;
            }
        }
        self.tombstones.remove(&s.id);
        self.queue.map.remove(&s.id);
        self.table.insert(
            s.id,
            Entry {
                state: merged,
                origin: Origin::Peer,
                at: now,
                seen: 0,
                missed: 0,
            },
        );
        self.stats.injected += 1;
        out.push(Action::Inject(merged));
    }

    fn apply_delete(&mut self, now: Instant, d: Delete, out: &mut Vec<Action>) {
        self.see_version(d.version);
        if let Some(e) = self.table.get(&d.id) {
            if e.state.version > d.version {
                self.stats.count(DropReason::Stale);
                return;
            }
            let state = e.state;
            self.table.remove(&d.id);
            self.stats.removed += 1;
            out.push(Action::Remove(state));
        }
        self.queue.map.remove(&d.id);
        self.tombstone(d.id, d.version, now);
    }

    fn apply_clear(&mut self, creator: u32, out: &mut Vec<Action>) {
        let ids: Vec<u64> = self
            .table
            .iter()
            .filter(|(_, e)| e.state.creator == creator && e.origin == Origin::Peer)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if let Some(e) = self.table.remove(&id) {
                self.stats.removed += 1;
                out.push(Action::Remove(e.state));
            }
        }
        out.push(Action::ClearPeer(creator));
    }

    fn process_nack(&mut self, now: Instant, ranges: &[SeqRange], out: &mut Vec<Action>) {
        let mut lost = false;
        for r in ranges {
            for k in self.window_keys(*r) {
                self.resend(now, k, out);
            }
            // Seqs we dropped unacknowledged cannot be resent: push the whole table.
            lost |= self
                .k_range(*r)
                .zip(self.evicted_max)
                .is_some_and(|((first, _), e)| first <= e);
        }
        if lost && self.bulk_tx.is_none() {
            self.evicted_max = None;
            self.stats.full_resyncs += 1;
            self.start_bulk(BULK_UNSOLICITED);
        }
        self.flush(now, true, out);
    }

    // ----- sending -----

    fn seq_of(&self, k: u64) -> u32 {
        self.cfg.seq_seed.wrapping_add(k as u32)
    }

    /// The internal counter of a sequence number we sent (within the last 2^31).
    fn k_of(&self, seq: u32) -> Option<u64> {
        let d = u64::from(self.seq_of(self.next_k).wrapping_sub(seq));
        if d == 0 || d > self.next_k || d >= (1 << 31) {
            None
        } else {
            Some(self.next_k - d)
        }
    }

    /// The internal counters a range of our sequence numbers covers (the part we have sent).
    fn k_range(&self, r: SeqRange) -> Option<(u64, u64)> {
        let len = u64::from(r.len()?);
        let last = match self.k_of(r.last) {
            Some(k) => k,
            // A range reaching past what we sent: clip it at our last message.
            None if r.contains(self.seq_of(self.next_k.checked_sub(1)?)) => self.next_k - 1,
            None => return None,
        };
        let first = self
            .k_of(r.first)
            .unwrap_or_else(|| last.saturating_sub(len.saturating_sub(1)));
        (first <= last).then_some((first, last))
    }

    /// The window entries a range covers.
    fn window_keys(&self, r: SeqRange) -> Vec<u64> {
        match self.k_range(r) {
            Some((first, last)) => self.window.range(first..=last).map(|(k, _)| *k).collect(),
            None => Vec::new(),
        }
    }

    fn window_has_room(&self) -> bool {
        self.window.len() < (self.cfg.window.saturating_mul(3) / 4).max(1)
    }

    /// Ordinary traffic goes out only below `max_in_flight` unacknowledged messages (and while
    /// the window has room); `flush` and `poll_at` must agree on this, or a due flush spins.
    fn flush_has_room(&self) -> bool {
        self.window_has_room() && self.window.len() < self.cfg.max_in_flight.max(1)
    }

    /// A bulk goes out only while few messages are unacknowledged: the receiver paces it
    /// with its ACKs instead of losing what overflows its socket buffer.
    fn bulk_can_send(&self) -> bool {
        self.window_has_room() && self.window.len() < self.cfg.bulk_window.max(1)
    }

    fn key(&self) -> Option<&[u8]> {
        self.cfg.key.as_deref()
    }

    #[allow(clippy::too_many_arguments)]
    fn send_seq(
        &mut self,
        now: Instant,
        sections: Vec<Section>,
        flags: u8,
        items: Vec<Item>,
        retries: u32,
        oldest: Option<Instant>,
        out: &mut Vec<Action>,
    ) {
        if let (Some(o), 0) = (oldest, retries) {
            self.lag.send_wait.push(now.saturating_duration_since(o));
        }
        let k = self.next_k;
        self.next_k += 1;
        let seq = self.seq_of(k);
        let repr = Repr {
            flags: flags | FLAG_SEQ,
            node_id: self.cfg.node_id,
            epoch: self.cfg.epoch,
            seq,
            sections,
            skipped: 0,
        };
        out.push(Action::Send(repr.to_bytes(self.key())));
        self.stats.sent_packets += 1;
        self.last_sent = now;
        self.window.insert(
            k,
            Sent {
                at: now,
                retries,
                items,
                oldest,
            },
        );
        while self.window.len() > self.cfg.window.max(1) {
            if let Some((k, _)) = self.window.pop_first() {
                self.evicted_max = Some(self.evicted_max.map_or(k, |e| e.max(k)));
                self.stats.window_evicted += 1;
                self.need_resync = true;
            }
        }
    }

    fn send_ctl(&mut self, sections: Vec<Section>, out: &mut Vec<Action>) {
        let repr = Repr {
            flags: 0,
            node_id: self.cfg.node_id,
            epoch: self.cfg.epoch,
            seq: self.seq_of(self.next_k),
            sections,
            skipped: 0,
        };
        out.push(Action::Send(repr.to_bytes(self.key())));
        self.stats.sent_packets += 1;
        self.last_sent = self.last_now;
    }

    /// Our apply time (a message in → its states in our kernel), sent with our ACKs so the
    /// peer can estimate its lag end to end.
    pub fn set_apply_time(&mut self, p50_us: u32, p99_us: u32) {
        self.apply_time = Some((p50_us, p99_us));
    }

    /// The sync lag estimate and its parts (see [`super::lag`]).
    pub fn lag(&self) -> super::lag::Report {
        self.lag.report()
    }

    /// The record a queued item sends now, if any.
    fn effective(&self, id: u64, q: &Queued) -> Option<Pending> {
        match q.kind {
            Pending::Delete => match self.table.get(&id) {
                Some(_) => None,
                None => Some(Pending::Delete),
            },
            kind => self
                .table
                .get(&id)
                .filter(|e| e.origin == Origin::Local || q.any_origin)
                .map(|_| kind),
        }
    }

    /// Sends the queue: only full packets, or everything when `all`.
    fn flush(&mut self, now: Instant, all: bool, out: &mut Vec<Action>) {
        if !self.link_up {
            self.queue.clear();
            return;
        }
        loop {
            // Flow control: past `max_in_flight` unacknowledged messages the queue waits (and
            // keeps coalescing) for ACKs, rather than overrunning the peer or our window.
            if !self.flush_has_room() {
                break;
            }
            // How many queued ids the next packet takes, and whether it is full.
            let mut fill = Fill::default();
            let mut take = 0;
            let mut full = false;
            for id in &self.queue.order {
                if let Some(kind) = self.queue.map.get(id).and_then(|q| self.effective(*id, q)) {
                    let next = fill.with(kind);
                    if next.len() > self.cfg.mtu && (fill.states + fill.deletes) > 0 {
                        full = true;
                        break;
                    }
                    fill = next;
                }
                take += 1;
            }
            if take == 0 || !(full || all) {
                break;
            }
            let mut inserts = Vec::new();
            let mut updates = Vec::new();
            let mut deletes = Vec::new();
            let mut items = Vec::new();
            let mut retries = 0;
            let mut oldest: Option<Instant> = None;
            for _ in 0..take {
                let Some(id) = self.queue.order.pop_front() else {
                    break;
                };
                let Some(q) = self.queue.map.remove(&id) else {
                    continue;
                };
                let Some(kind) = self.effective(id, &q) else {
                    continue;
                };
                retries = retries.max(q.retries);
                if !q.any_origin {
                    oldest = Some(oldest.map_or(q.at, |o| o.min(q.at)));
                }
                let item = if q.any_origin {
                    Item::Bulk(id)
                } else {
                    Item::State(id)
                };
                items.push(item);
                match (kind, self.table.get(&id)) {
                    (Pending::Insert, Some(e)) => inserts.push(e.state),
                    (Pending::Update, Some(e)) => updates.push(e.state),
                    _ => {
                        let version = self.tombstones.get(&id).copied().unwrap_or(self.clock);
                        deletes.push(Delete { id, version });
                    }
                }
            }
            if self.queue.order.is_empty() {
                self.queue.since = None;
            }
            if items.is_empty() {
                continue;
            }
            add(&mut self.stats.sent_states, inserts.len() + updates.len());
            add(&mut self.stats.sent_deletes, deletes.len());
            let mut sections = Vec::new();
            if !inserts.is_empty() {
                sections.push(Section::Insert(inserts));
            }
            if !updates.is_empty() {
                sections.push(Section::Update(updates));
            }
            if !deletes.is_empty() {
                sections.push(Section::Delete(deletes));
            }
            self.send_seq(now, sections, 0, items, retries, oldest, out);
        }
        if self.queue.map.is_empty() {
            self.queue.order.clear();
            self.queue.since = None;
        }
    }

    /// Sends what window entry `k` carried again, from the current table.
    fn resend(&mut self, now: Instant, k: u64, out: &mut Vec<Action>) {
        let Some(sent) = self.window.remove(&k) else {
            return;
        };
        let retries = sent.retries.saturating_add(1);
        if retries > self.cfg.max_retries {
            self.evicted_max = Some(self.evicted_max.map_or(k, |e| e.max(k)));
            self.stats.window_evicted += 1;
            self.need_resync = true;
            return;
        }
        for item in sent.items {
            match item {
                Item::State(id) | Item::Bulk(id) => {
                    let any = matches!(item, Item::Bulk(_));
                    let kind = match self.table.get(&id) {
                        Some(e) if e.origin == Origin::Local || any => Pending::Update,
                        Some(_) => continue, // the peer has a newer copy
                        None => Pending::Delete,
                    };
                    self.stats.resent += 1;
                    self.queue
                        .push(id, kind, retries, any, now, sent.oldest.unwrap_or(now));
                }
                Item::Clear(c) => self.send_seq(
                    now,
                    vec![Section::Clear(vec![c])],
                    0,
                    vec![item],
                    retries,
                    None,
                    out,
                ),
                Item::BulkEnd(n, req) => self.send_seq(
                    now,
                    vec![Section::BulkEnd(n, req)],
                    FLAG_BULK,
                    vec![item],
                    retries,
                    None,
                    out,
                ),
            }
        }
    }

    fn start_bulk(&mut self, request: u32) {
        self.bulk_tx = Some(BulkTx {
            ids: self.table.keys().copied().collect(),
            pos: 0,
            sent: 0,
            request,
        });
    }

    fn request_bulk(&mut self, now: Instant, hold: bool, out: &mut Vec<Action>) {
        let hold = hold || matches!(self.want, Want::Waiting { hold: true, .. });
        self.bulk_requests = self.bulk_requests.wrapping_add(1);
        let id = request_id(self.cfg.epoch, self.bulk_requests);
        self.want = Want::Waiting {
            hold,
            until: now + self.cfg.bulk_timeout,
            retry_at: now,
            id,
        };
        self.poll_want(now, out);
    }

    fn release_hold(&mut self, out: &mut Vec<Action>) {
        if self.holding {
            self.holding = false;
            out.push(Action::DemotionHold(false));
        }
    }

    // ----- timers -----

    fn poll_want(&mut self, now: Instant, out: &mut Vec<Action>) {
        let Want::Waiting {
            hold,
            until,
            retry_at,
            id,
        } = self.want
        else {
            return;
        };
        if hold && !self.hold_announced {
            self.hold_announced = true;
            self.holding = true;
            out.push(Action::DemotionHold(true));
        }
        if now >= until {
            self.want = Want::Idle;
            self.stats.bulk_failed += 1;
            self.release_hold(out);
            return;
        }
        if self.link_up && now >= retry_at {
            self.send_ctl(vec![Section::BulkRequest(id)], out);
            self.stats.bulk_requests_sent += 1;
            self.want = Want::Waiting {
                hold,
                until,
                retry_at: now + self.cfg.bulk_retry,
                id,
            };
        }
    }

    fn poll_acks(&mut self, now: Instant, out: &mut Vec<Action>) {
        let missing_timeout = self.cfg.missing_timeout;
        let nack_retry = self.cfg.nack_retry;
        let ack_due = self.ack_at.is_some_and(|t| t <= now);
        let max_ranges =
            (self.cfg.mtu.saturating_sub(HEADER_LEN + 2 * SUBHEADER_LEN) / RANGE_LEN / 2).max(1);
        let Some(p) = self.peer.as_mut() else {
            self.ack_at = None;
            return;
        };
        p.missing.retain(|m| m.since + missing_timeout > now);
        let mut nacks = Vec::new();
        for m in p.missing.iter_mut() {
            if m.nack_at <= now && nacks.len() < max_ranges {
                nacks.push(m.range);
                m.nack_at = now + nack_retry;
            }
        }
        let acks: Vec<SeqRange> = if ack_due {
            let n = p.to_ack.len().min(max_ranges);
            p.unacked = 0;
            p.to_ack.drain(..n).collect()
        } else {
            Vec::new()
        };
        let hold = p
            .last_rx
            .filter(|_| !acks.is_empty())
            .map(|t| now.saturating_duration_since(t));
        self.ack_at = (!p.to_ack.is_empty()).then_some(now);
        if acks.is_empty() && nacks.is_empty() {
            return;
        }
        let mut sections = Vec::new();
        if !acks.is_empty() {
            self.stats.acks_sent += 1;
            sections.push(Section::Ack(acks));
        }
        if !nacks.is_empty() {
            self.stats.nacks_sent += 1;
            sections.push(Section::Nack(nacks));
        }
        if let Some(hold) = hold {
            let (p50, p99) = self
                .apply_time
                .unwrap_or((wire::APPLY_UNKNOWN, wire::APPLY_UNKNOWN));
            sections.push(Section::AckInfo(wire::AckInfo {
                hold_us: u32::try_from(hold.as_micros()).unwrap_or(u32::MAX),
                apply_p50_us: p50,
                apply_p99_us: p99,
            }));
        }
        self.send_ctl(sections, out);
    }

    fn poll_resends(&mut self, now: Instant, out: &mut Vec<Action>) {
        let timeout = self.cfg.resend_timeout;
        let due: Vec<u64> = self
            .window
            .iter()
            .take_while(|(_, s)| s.at + timeout <= now)
            .map(|(k, _)| *k)
            .collect();
        if due.is_empty() {
            return;
        }
        for k in due {
            self.resend(now, k, out);
        }
        self.flush(now, true, out);
    }

    fn poll_bulk(&mut self, now: Instant, out: &mut Vec<Action>) {
        let per_packet =
            (self.cfg.mtu.saturating_sub(HEADER_LEN + SUBHEADER_LEN) / STATE_LEN).max(1);
        let mut packets = 0;
        while let Some(mut bulk) = self.bulk_tx.take() {
            if bulk.pos >= bulk.ids.len() {
                // Every record is out: BULK_END follows once all of them are acknowledged
                // (resends go under new sequence numbers, so the receiver cannot tell a gap
                // before BULK_END from one that was filled; the sender can).
                if self.bulk_records_unacked() {
                    self.bulk_tx = Some(bulk);
                    break;
                }
                let (n, req) = (bulk.sent, bulk.request);
                self.send_seq(
                    now,
                    vec![Section::BulkEnd(n, req)],
                    FLAG_BULK,
                    vec![Item::BulkEnd(n, req)],
                    0,
                    None,
                    out,
                );
                self.stats.bulk_ends_sent += 1;
                // A request that came in meanwhile gets a whole bulk of its own.
                if let Some(next) = self.bulk_next.take() {
                    self.start_bulk(next);
                    continue;
                }
                break;
            }
            if packets >= self.cfg.max_packets_per_poll.max(1) || !self.bulk_can_send() {
                self.bulk_tx = Some(bulk);
                break;
            }
            let mut states = Vec::new();
            let mut items = Vec::new();
            while states.len() < per_packet && bulk.pos < bulk.ids.len() {
                let id = bulk.ids[bulk.pos];
                bulk.pos += 1;
                if let Some(e) = self.table.get(&id) {
                    states.push(e.state);
                    items.push(Item::Bulk(id));
                }
            }
            if !states.is_empty() {
                bulk.sent = bulk.sent.saturating_add(states.len() as u32);
                add(&mut self.stats.sent_states, states.len());
                self.send_seq(
                    now,
                    vec![Section::Update(states)],
                    FLAG_BULK,
                    items,
                    0,
                    None,
                    out,
                );
                packets += 1;
            }
            self.bulk_tx = Some(bulk);
        }
    }

    /// A bulk record is still waiting for its ACK (in the window, or queued for a resend).
    fn bulk_records_unacked(&self) -> bool {
        self.window
            .values()
            .any(|s| s.items.iter().any(|i| matches!(i, Item::Bulk(_))))
            || self.queue.map.values().any(|q| q.any_origin)
    }

    /// The bulk answer has something to send now.
    fn bulk_ready(&self) -> bool {
        match &self.bulk_tx {
            None => false,
            Some(b) if b.pos < b.ids.len() => self.bulk_can_send(),
            Some(_) => !self.bulk_records_unacked(),
        }
    }

    fn refresh_stats(&mut self) {
        self.stats.authenticated = self.cfg.key.is_some();
        self.stats.tx_seq = self.seq_of(self.next_k);
        self.stats.rx_expected = self.peer.as_ref().map(|p| p.next);
        self.stats.peer_node_id = self.peer.as_ref().map(|p| p.node_id);
        self.stats.states = self.table.len() as u64;
        self.stats.window = self.window.len() as u64;
    }
}
