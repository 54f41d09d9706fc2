//! Counters of the sync machine: packets and states in and out, reliability, bulk, and one
//! counter per drop reason (OpenBSD's `pfsyncstats` style).

use std::fmt;

use serde::Serialize;

use crate::proto::time::Instant;
use crate::wire::pfsync as wire;

/// Why a received message (or one record of it) was dropped. One counter each in [`Stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// MAC missing, wrong, or present while we have no key.
    BadMac,
    /// Message version not ours.
    BadVersion,
    /// Shorter than its header or its sections.
    Truncated,
    /// Length field or a record length inconsistent.
    BadLength,
    /// A record with a value we do not know (family, protocol, TCP state, record version).
    BadRecord,
    /// A section with an unknown action (skipped by length; the rest of the message applies).
    UnknownAction,
    /// A record older than what we hold (version not newer, or deleted since).
    Stale,
    /// Our own message came back (multicast loop).
    FromSelf,
    /// A sequenced message we already had.
    Duplicate,
}

impl DropReason {
    pub const ALL: [DropReason; 9] = [
        DropReason::BadMac,
        DropReason::BadVersion,
        DropReason::Truncated,
        DropReason::BadLength,
        DropReason::BadRecord,
        DropReason::UnknownAction,
        DropReason::Stale,
        DropReason::FromSelf,
        DropReason::Duplicate,
    ];

    /// The counter's name in [`Stats`].
    pub const fn name(self) -> &'static str {
        match self {
            DropReason::BadMac => "bad_mac",
            DropReason::BadVersion => "bad_version",
            DropReason::Truncated => "truncated",
            DropReason::BadLength => "bad_length",
            DropReason::BadRecord => "bad_record",
            DropReason::UnknownAction => "unknown_action",
            DropReason::Stale => "stale",
            DropReason::FromSelf => "from_self",
            DropReason::Duplicate => "duplicate",
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl From<wire::Error> for DropReason {
    fn from(e: wire::Error) -> DropReason {
        match e {
            wire::Error::Truncated => DropReason::Truncated,
            wire::Error::BadLength | wire::Error::BadRecordLen { .. } => DropReason::BadLength,
            wire::Error::BadVersion(_) => DropReason::BadVersion,
            wire::Error::BadMac => DropReason::BadMac,
            wire::Error::BadRecordVersion(_)
            | wire::Error::BadFamily(_)
            | wire::Error::BadProto(_)
            | wire::Error::BadTcpState(_)
            | wire::Error::BadValue(_) => DropReason::BadRecord,
        }
    }
}

/// Counters and status of one node's sync. Serialisable for `pfsync.status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Whether messages are MAC'd (a key is configured).
    pub authenticated: bool,
    pub sent_packets: u64,
    /// State records sent (INSERT + UPDATE), bulk included.
    pub sent_states: u64,
    pub sent_deletes: u64,
    /// Messages that passed every check.
    pub received_packets: u64,
    pub received_states: u64,
    pub received_deletes: u64,
    /// `Inject` actions emitted.
    pub injected: u64,
    /// `Remove` actions emitted.
    pub removed: u64,
    /// Local-origin events of states the peer injected (not echoed back).
    pub echo_suppressed: u64,
    /// Local states a table dump no longer showed (their DESTROY event was lost): removed and
    /// the peer told.
    pub swept_local: u64,
    /// Peer states two table dumps in a row no longer showed: forgotten.
    pub swept_peer: u64,
    /// Local states sent again by a periodic refresh (their timeout moved on without an event).
    pub refreshed: u64,
    /// Updates applied with our TCP state kept because theirs was behind.
    pub tcp_backwards_kept: u64,
    /// Records sent again (after a NACK or an ACK timeout).
    pub resent: u64,
    /// Empty messages sent because nothing else went out for [`Config::heartbeat`].
    pub heartbeats_sent: u64,
    /// Times the peer fell silent ([`Config::peer_silent_after`]).
    pub peer_silences: u64,
    pub acks_sent: u64,
    pub acks_received: u64,
    pub nacks_sent: u64,
    pub nacks_received: u64,
    pub bulk_requests_sent: u64,
    pub bulk_requests_received: u64,
    pub bulk_ends_sent: u64,
    pub bulk_ends_received: u64,
    /// Our bulk request got no BULK_END in time.
    pub bulk_failed: u64,
    /// Full resyncs we pushed because the window overflowed or a NACK asked for lost data.
    pub full_resyncs: u64,
    /// Unacknowledged messages dropped from the send window (overflow or too many retries).
    pub window_evicted: u64,
    pub bad_mac: u64,
    pub bad_version: u64,
    pub truncated: u64,
    pub bad_length: u64,
    pub bad_record: u64,
    pub unknown_action: u64,
    pub stale: u64,
    pub from_self: u64,
    pub duplicate: u64,
    /// When our last bulk request completed.
    pub last_bulk: Option<Instant>,
    /// The sequence number of our next sequenced message.
    pub tx_seq: u32,
    /// The next sequence number expected from the peer (none before its first message).
    pub rx_expected: Option<u32>,
    /// The peer's node id (from its last valid message).
    pub peer_node_id: Option<u32>,
    /// States in the table (local and peer).
    pub states: u64,
    /// Messages sent but not yet acknowledged.
    pub window: u64,
}

impl Stats {
    /// Counts one drop.
    pub fn count(&mut self, reason: DropReason) {
        let c = self.counter_mut(reason);
        *c = c.saturating_add(1);
    }

    /// The counter of one drop reason.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        match reason {
            DropReason::BadMac => self.bad_mac,
            DropReason::BadVersion => self.bad_version,
            DropReason::Truncated => self.truncated,
            DropReason::BadLength => self.bad_length,
            DropReason::BadRecord => self.bad_record,
            DropReason::UnknownAction => self.unknown_action,
            DropReason::Stale => self.stale,
            DropReason::FromSelf => self.from_self,
            DropReason::Duplicate => self.duplicate,
        }
    }

    /// All drops, every reason.
    pub fn dropped_total(&self) -> u64 {
        DropReason::ALL
            .iter()
            .map(|r| self.dropped(*r))
            .fold(0, u64::saturating_add)
    }

    fn counter_mut(&mut self, reason: DropReason) -> &mut u64 {
        match reason {
            DropReason::BadMac => &mut self.bad_mac,
            DropReason::BadVersion => &mut self.bad_version,
            DropReason::Truncated => &mut self.truncated,
            DropReason::BadLength => &mut self.bad_length,
            DropReason::BadRecord => &mut self.bad_record,
            DropReason::UnknownAction => &mut self.unknown_action,
            DropReason::Stale => &mut self.stale,
            DropReason::FromSelf => &mut self.from_self,
            DropReason::Duplicate => &mut self.duplicate,
        }
    }
}

/// `*c += n`, saturating.
pub(crate) fn add(c: &mut u64, n: usize) {
    *c = c.saturating_add(u64::try_from(n).unwrap_or(u64::MAX));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_counter_per_reason() {
        let mut s = Stats::default();
        for (i, r) in DropReason::ALL.iter().enumerate() {
            for _ in 0..=i {
                s.count(*r);
            }
        }
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(s.dropped(*r), i as u64 + 1, "{r}");
        }
        assert_eq!(s.dropped_total(), 45);
        let json = serde_json::to_value(&s).unwrap();
        for r in DropReason::ALL {
            assert_eq!(json[r.name()], s.dropped(r));
        }
    }

    #[test]
    fn wire_errors_map_to_reasons() {
        assert_eq!(DropReason::from(wire::Error::BadMac), DropReason::BadMac);
        assert_eq!(
            DropReason::from(wire::Error::Truncated),
            DropReason::Truncated
        );
        assert_eq!(
            DropReason::from(wire::Error::BadRecordLen { action: 1, len: 3 }),
            DropReason::BadLength
        );
        assert_eq!(
            DropReason::from(wire::Error::BadVersion(9)),
            DropReason::BadVersion
        );
        assert_eq!(
            DropReason::from(wire::Error::BadTcpState(12)),
            DropReason::BadRecord
        );
    }
}
