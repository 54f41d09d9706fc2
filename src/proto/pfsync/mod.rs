//! The state-sync machine of one node, pure: `handle(now, input) -> actions`, `poll(now)`,
//! `poll_at()`. pfsync's design (reference §4.1) with conntrackd FT-FW's reliability (§4.2):
//!
//! * **Table.** The machine mirrors the node's conntrack table: every state with its origin
//!   ([`Origin::Local`]: ours to send; [`Origin::Peer`]: injected from the peer). It is what
//!   resends and bulk answers are read from ("resend from the current table").
//! * **Versions.** Every change carries a per-state version taken from a Lamport clock: a local
//!   change gets the next multiple of 256 above the clock plus the low 8 bits of our node id
//!   (so the two nodes never issue equal versions: **node ids must differ in their low byte**),
//!   every version seen raises the clock. The actor seeds the clock with
//!   the wall time in microseconds ([`Config::clock_seed`]), so a rebooted node still issues
//!   versions above its old ones. Deleted ids keep a tombstone (their delete version) for
//!   [`Config::tombstone_ttl`], so a reordered older update cannot resurrect them.
//! * **Merge rule.** A received INSERT/UPDATE whose version is not above ours (concurrent
//!   changes: the higher version, so both nodes pick the same winner), or not above the id's
//!   tombstone, is stale (counted, ignored). A newer one is applied, except that a TCP state
//!   never moves backwards in [`TcpState::rank`] order (NONE < SYN_SENT < SYN_SENT2 < SYN_RECV <
//!   ESTABLISHED < FIN_WAIT < CLOSE_WAIT < LAST_ACK < TIME_WAIT < CLOSE): we keep our TCP state
//!   and window data and take the rest. **Exception:** when the sender is the state's creator,
//!   its newer version wins as is (conntrack itself moves a reused tuple from TIME_WAIT/CLOSE
//!   back to SYN_SENT, and only the creator sees that). A DELETE applies if its version is not
//!   below ours.
//! * **No echo.** Events the actor reports with [`Origin::Peer`] (caused by our own injection)
//!   only confirm the table. A local DESTROY of a state that the peer injected (its copy timed
//!   out here) is not sent: the peer still owns it. A local NEW/UPDATE of such a state (traffic
//!   moved to us) takes it over: it becomes local and is sent.
//! * **Coalescing.** A state sits at most once in the output queue; later changes merge (the
//!   record is read from the table at flush), a DELETE replaces a pending INSERT/UPDATE, a NEW
//!   after a DELETE becomes an INSERT. The queue is flushed when a packet is full, or
//!   [`Config::flush_delay`] after its first record.
//! * **Reliability.** Data messages are sequenced (per sender, u32, serial arithmetic). The
//!   receiver ACKs ranges after [`Config::ack_delay`] (coalesced, in unsequenced messages, so
//!   ACKs are never ACKed), NACKs gaps and re-NACKs them every [`Config::nack_retry`] until
//!   [`Config::missing_timeout`]. Duplicates are dropped; a late copy of a missing seq is
//!   accepted (versions make it harmless). The sender keeps a window of what each message
//!   carried (ids, not bytes) and answers a NACK, or an ACK missing for
//!   [`Config::resend_timeout`], by sending those states again from the current table (a DELETE
//!   if a state is gone). A message resent [`Config::max_retries`] times, a window overflow, or
//!   a NACK for a seq evicted unacknowledged triggers a full resync (our whole table, as a bulk
//!   answer) at the next sign of life from the peer.
//! * **Bulk.** At start the machine holds the demotion ([`Action::DemotionHold`]) and sends
//!   BULK_REQUEST every [`Config::bulk_retry`] (postponed while bulk data arrives) until
//!   BULK_END, or gives up after [`Config::bulk_timeout`] (counted). A BULK_REQUEST from the
//!   peer starts a bulk answer: every state of the table in full packets, at most
//!   [`Config::max_packets_per_poll`] per call and at most [`Config::bulk_window`] (1,024)
//!   unacknowledged (the receiver paces the bulk with its ACKs, which go at once after 32
//!   messages); BULK_END follows only when every record of the bulk has been acknowledged
//!   (resends carry new sequence numbers, so only the sender knows that nothing is missing).
//! * **Link.** While the sync link is down nothing is sent. When it comes back the machine asks
//!   the peer for a bulk (without the demotion hold) and pushes a full resync at the next sign of
//!   life from the peer.
//! * **Authentication.** With a key every message is HMAC-SHA256'd and checked; without, MACs must
//!   be absent (a key mismatch between the nodes drops everything, counted as `bad_mac`).

use std::fmt;
use std::time::Duration;

pub use crate::wire::pfsync::{L4Proto, NatMap, State, TcpState, TcpWindow, Tuple};

pub mod lag;
mod machine;
mod stats;

#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;

pub use machine::Sync;
pub use stats::{DropReason, Stats};

/// Settings of one node's sync. [`Config::new`] gives the defaults.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// This node's id (the creator id of its states), non-zero; its low byte must differ from
    /// the peer's (it tags the versions this node issues).
    pub node_id: u32,
    /// `hasync/pfsynckey`; `None` sends unauthenticated messages and accepts only those.
    pub key: Option<Vec<u8>>,
    /// The largest message in bytes (the link MTU minus the IP header): 1480.
    pub mtu: usize,
    /// How long a queued record may wait for more to fill the packet: 2 ms.
    pub flush_delay: Duration,
    /// How long the receiver waits to coalesce ACKs: 5 ms.
    pub ack_delay: Duration,
    /// A sent message not ACKed within this is resent from the table: 200 ms.
    pub resend_timeout: Duration,
    /// How often a still-missing range is NACKed again: 50 ms.
    pub nack_retry: Duration,
    /// How long a missing range is NACKed before it is forgotten: 1 s.
    pub missing_timeout: Duration,
    /// Resends of one message before the peer is considered out of sync: 10.
    pub max_retries: u32,
    /// Unacknowledged messages kept for resends: 8192.
    pub window: usize,
    /// The most packets one `poll` emits for a bulk answer: 64.
    pub max_packets_per_poll: usize,
    /// Most unacknowledged messages while a bulk is being sent.
    pub bulk_window: usize,
    /// Most unacknowledged messages of ordinary traffic: beyond it the queue waits for ACKs
    /// (and keeps coalescing) instead of overrunning the peer's socket buffer.
    pub max_in_flight: usize,
    /// BULK_REQUEST retry interval: 1 s.
    pub bulk_retry: Duration,
    /// Give up waiting for BULK_END (release the demotion): 10 s.
    pub bulk_timeout: Duration,
    /// How long a deleted id's tombstone is kept: 60 s.
    pub tombstone_ttl: Duration,
    /// Tombstones kept at most (oldest evicted first): 65536.
    pub max_tombstones: usize,
    /// With nothing else to send for this long, an empty message goes out (it also carries our
    /// next sequence number, so a lost last message is noticed): 1 s.
    pub heartbeat: Duration,
    /// Nothing valid from the peer for this long, link up: the peer's sync is taken as silent
    /// ([`Action::PeerSilent`]): 3 s.
    pub peer_silent_after: Duration,
    /// Random per start: lets the peer see that we restarted.
    pub epoch: u32,
    /// Our first sequence number (random per start).
    pub seq_seed: u32,
    /// The Lamport clock's start: the wall time in microseconds since the Unix epoch.
    pub clock_seed: u64,
}

impl Config {
    /// Defaults for `node_id`, no key, epoch/seeds 0 (the actor sets them).
    pub fn new(node_id: u32) -> Config {
        Config {
            node_id,
            key: None,
            mtu: 1480,
            flush_delay: Duration::from_millis(2),
            ack_delay: Duration::from_millis(5),
            resend_timeout: Duration::from_millis(200),
            nack_retry: Duration::from_millis(50),
            missing_timeout: Duration::from_secs(1),
            max_retries: 10,
            window: 8192,
            max_packets_per_poll: 256,
            bulk_window: 1024,
            max_in_flight: 1024,
            bulk_retry: Duration::from_secs(1),
            bulk_timeout: Duration::from_secs(10),
            tombstone_ttl: Duration::from_secs(60),
            max_tombstones: 65536,
            heartbeat: Duration::from_secs(1),
            peer_silent_after: Duration::from_secs(3),
            epoch: 0,
            seq_seed: 0,
            clock_seed: 0,
        }
    }

    /// With `hasync/pfsynckey` (an empty key means none).
    pub fn with_key(mut self, key: &[u8]) -> Config {
        self.key = (!key.is_empty()).then(|| key.to_vec());
        self
    }
}

/// Never prints the key.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("node_id", &self.node_id)
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .field("mtu", &self.mtu)
            .field("flush_delay", &self.flush_delay)
            .field("ack_delay", &self.ack_delay)
            .field("resend_timeout", &self.resend_timeout)
            .field("window", &self.window)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

/// A conntrack event kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    New,
    Update,
    Destroy,
}

/// Who caused a conntrack event, or where a table entry came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// Traffic through this node (or, for a table entry, last changed here).
    Local,
    /// Our own injection of a peer's state (the actor matches the netlink portid).
    Peer,
}

/// What the machine is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A conntrack event. `state.id`, `creator` and `version` are filled in by the machine (the
    /// actor may leave them 0); for DESTROY only the orig tuple, protocol and zone matter.
    Local {
        event: Event,
        state: State,
        origin: Origin,
    },
    /// A message from the sync link (the IP payload, after the actor checked TTL 255).
    Received(Vec<u8>),
    /// A local state as a periodic dump of the kernel table shows it, and the time until the
    /// next dump: sent again if the peer's copy would expire well before ours, or before the
    /// next dump (traffic that only extends a timeout raises no event).
    Refresh(State, Duration),
    /// Ask the peer for its whole table (no demotion hold), e.g. `conntrackd -n`.
    RequestBulk,
    /// Push our whole table to the peer, e.g. `conntrackd -B`.
    SendBulk,
    /// Our conntrack table was flushed: forget local states and tell the peer (CLEAR).
    Flushed,
    /// The sync link came up.
    LinkUp,
    /// The sync link went down.
    LinkDown,
    /// The actor begins reading the whole kernel table: every state it shows is reported with
    /// [`Sync::saw`] before [`Input::DumpDone`].
    DumpStarted,
    /// The dump is complete: states known before it began and not shown by it have ended
    /// without an event (see the machine's sweep).
    DumpDone,
    /// Same as [`Sync::poll`].
    Tick,
}

/// What the actor must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send this message (encoded and MAC'd) to the peer or the group, IP protocol 240, TTL 255.
    Send(Vec<u8>),
    /// Create the entry in the kernel, or update it if it exists (reply tuple:
    /// [`State::unnatted_reply`] plus `CTA_NAT_SRC/DST` from `snat`/`dnat`; TCP be-liberal).
    Inject(State),
    /// Delete this entry from the kernel (the last state we knew).
    Remove(State),
    /// Every state created by this node id was removed (the `Remove`s precede this).
    ClearPeer(u32),
    /// Our bulk request completed (BULK_END received).
    BulkDone,
    /// Hold (true) or release (false) the `pfsync bulk` demotion (240).
    DemotionHold(bool),
    /// Nothing valid came from the peer for this long while the link is up (its sync may have
    /// stopped: states it makes now do not reach us).
    PeerSilent(Duration),
    /// A valid message from the peer again, after a silence of this long.
    PeerBack(Duration),
}
