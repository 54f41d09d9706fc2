//! tandem's state-sync message (pfsync-style, our own versioned format), carried as IP protocol
//! 240 on the sync link to the peer (unicast) or 224.0.0.240.
//!
//! A message is a 48-byte header, then sections. Each section is an 8-byte subheader
//! {action, record length, count} followed by `count` fixed-size records of `record length`
//! bytes. A receiver skips a section with an unknown action by its declared length (OpenBSD's
//! `pfsync_acts[]` rule), and reads only the prefix it knows of a longer record, so newer senders
//! can add actions and grow records without breaking older receivers.
//!
//! ```text
//! Header (48 bytes)
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |    Version    |     Flags     |        Length (bytes)         |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                  Node id (sender = creator id)                |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |             Epoch (sender's boot id, random per start)        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                  Sequence number (per sender)                 |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                                                               |
//! +        HMAC-SHA256 over the whole message, this field 0       +
//! |                          (32 bytes)                           |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//!
//! Subheader (8 bytes), then Count records of Record length bytes each
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |    Action     |   Reserved    |     Record length (bytes)     |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |             Count             |           Reserved            |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! * Version is [`VERSION`] (1). A different version is refused (`BadVersion`) before the MAC.
//! * Flags: [`FLAG_AUTH`] (the MAC field holds an HMAC-SHA256 keyed with `hasync/pfsynckey`;
//!   without a key the MAC field is zero and the flag clear), [`FLAG_SEQ`] (the message is
//!   sequenced: it carries data and the receiver tracks, ACKs and NACKs its sequence number;
//!   ACK/NACK-only messages are unsequenced, so ACKs are never ACKed), [`FLAG_BULK`] (part of an
//!   answer to a bulk request).
//! * A message may carry no section at all: the heartbeat, unsequenced, that a node sends after
//!   a second with nothing else to send (its sequence number is the sender's next, so a lost
//!   last message is noticed; the receiver takes three quiet seconds as a silent peer).
//! * Length is the whole message, header included; bytes after it are ignored.
//! * The MAC is computed over the `Length` bytes with the MAC field set to zero.
//! * All integers are big-endian.
//!
//! Actions and their records ([`Action`]):
//!
//! | code | action        | record                                         | bytes |
//! |------|---------------|------------------------------------------------|-------|
//! | 1    | INSERT        | [`State`] (below)                              | 152   |
//! | 2    | UPDATE        | [`State`]                                      | 152   |
//! | 3    | DELETE        | state id u64, version u64                      | 16    |
//! | 4    | CLEAR         | creator u32, reserved u32 (all states of it)   | 8     |
//! | 5    | BULK_REQUEST  | request id u32 (count 1; an empty record: id 0)| 4     |
//! | 6    | BULK_END      | states sent u32, request id u32                | 8     |
//! | 7    | ACK           | first seq u32, last seq u32 (inclusive range)  | 8     |
//! | 8    | NACK          | first seq u32, last seq u32 (inclusive range)  | 8     |
//! | 9    | ACK_INFO      | hold µs, apply p50 µs, apply p99 µs (u32 each; | 12    |
//! |      |               | count 1; rides with ACK, see [`AckInfo`])      |       |
//!
//! The state record (152 bytes, record version 1): one conntrack entry.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! | Rec version=1 | Family (4/6)  | L4 proto      | TCP state     |   0
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! | Rec flags     | Wscale orig   | Wscale reply  |   Reserved    |   4
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! | TCP flags orig| TCP flags rep |             Zone              |   8
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                    Conntrack status bits                      |  12
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |          State id (64 bits, hash of orig tuple + zone)        |  16
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |              Version (64 bits, per-state update counter)      |  24
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                      Creator (node id)                        |  32
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                     Timeout (seconds left)                    |  36
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                             Mark                              |  40
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |        Orig sport             |        Orig dport             |  44
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |        Reply sport            |        Reply dport            |  48
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |        SNAT port              |        DNAT port              |  52
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                  Orig src address (16 bytes)                  |  56
//! |                  Orig dst address (16 bytes)                  |  72
//! |                  Reply src address (16 bytes)                 |  88
//! |                  Reply dst address (16 bytes)                 | 104
//! |                  SNAT address (16 bytes)                      | 120
//! |                  DNAT address (16 bytes)                      | 136
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+ 152
//! ```
//!
//! * Addresses: one 16-byte layout for both families (as pf's `pf_addr`): IPv6 fills it, IPv4
//!   takes the first 4 bytes and the rest is zero. Every address of a record has its family.
//! * L4 proto: 6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6. For ICMP the "sport" is the ICMP id and the
//!   "dport" is `type << 8 | code` (orig: the request, reply: the expected reply).
//! * TCP state: conntrack's numbering ([`TcpState`]); 0 (NONE) for other protocols.
//! * Rec flags: [`REC_WINDOW`] (the wscale/TCP-flags bytes are valid, `CTA_PROTOINFO_TCP`),
//!   [`REC_SNAT`] (SNAT address+port valid), [`REC_DNAT`] (DNAT address+port valid).
//! * The reply tuple is the kernel's (NAT'd) reply tuple. The receiver creates the entry with the
//!   un-NATed inverse of the orig tuple ([`State::unnatted_reply`]) plus `CTA_NAT_SRC` from SNAT
//!   and `CTA_NAT_DST` from DNAT, so the kernel redoes the NAT binding.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hmac::{KeyInit, Mac};
use serde::Serialize;

/// Our message format version.
pub const VERSION: u8 = 1;
/// The state record version we write.
pub const RECORD_VERSION: u8 = 1;
/// IP protocol number (`IPPROTO_PFSYNC`).
pub const PROTOCOL: u8 = 240;
/// The TTL every sender uses and every receiver requires (`PFSYNC_DFLTTL`).
pub const TTL: u8 = 255;
/// The IPv4 group (`INADDR_PFSYNC_GROUP`) used when no peer address is configured.
pub const MCAST_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 240);
/// Length of the HMAC-SHA256 field.
pub const MAC_LEN: usize = 32;

/// Header flag: the MAC field holds an HMAC-SHA256.
pub const FLAG_AUTH: u8 = 0x01;
/// Header flag: sequenced data message (tracked, ACKed and NACKed by the receiver).
pub const FLAG_SEQ: u8 = 0x02;
/// Header flag: part of a bulk answer.
pub const FLAG_BULK: u8 = 0x04;

/// State record flag: window scale and TCP flags are valid.
pub const REC_WINDOW: u8 = 0x01;
/// State record flag: SNAT address and port are valid.
pub const REC_SNAT: u8 = 0x02;
/// State record flag: DNAT address and port are valid.
pub const REC_DNAT: u8 = 0x04;

mod field {
    use crate::wire::Field;
    pub const VERSION: usize = 0;
    pub const FLAGS: usize = 1;
    pub const LENGTH: Field = 2..4;
    pub const NODE_ID: Field = 4..8;
    pub const EPOCH: Field = 8..12;
    pub const SEQ: Field = 12..16;
    pub const MAC: Field = 16..48;

    pub const SUB_ACTION: usize = 0;
    pub const SUB_RECLEN: Field = 2..4;
    pub const SUB_COUNT: Field = 4..6;
    pub const SUB_END: usize = 8;

    /// Offsets inside a state record.
    pub mod rec {
        use crate::wire::Field;
        pub const VERSION: usize = 0;
        pub const FAMILY: usize = 1;
        pub const PROTO: usize = 2;
        pub const TCP_STATE: usize = 3;
        pub const FLAGS: usize = 4;
        pub const WSCALE_ORIG: usize = 5;
        pub const WSCALE_REPLY: usize = 6;
        pub const TCP_FLAGS_ORIG: usize = 8;
        pub const TCP_FLAGS_REPLY: usize = 9;
        pub const ZONE: Field = 10..12;
        pub const STATUS: Field = 12..16;
        pub const ID: Field = 16..24;
        pub const VERSION_CTR: Field = 24..32;
        pub const CREATOR: Field = 32..36;
        pub const TIMEOUT: Field = 36..40;
        pub const MARK: Field = 40..44;
        pub const ORIG_SPORT: Field = 44..46;
        pub const ORIG_DPORT: Field = 46..48;
        pub const REPLY_SPORT: Field = 48..50;
        pub const REPLY_DPORT: Field = 50..52;
        pub const SNAT_PORT: Field = 52..54;
        pub const DNAT_PORT: Field = 54..56;
        pub const ORIG_SRC: Field = 56..72;
        pub const ORIG_DST: Field = 72..88;
        pub const REPLY_SRC: Field = 88..104;
        pub const REPLY_DST: Field = 104..120;
        pub const SNAT_ADDR: Field = 120..136;
        pub const DNAT_ADDR: Field = 136..152;
    }
}

/// Length of the message header.
pub const HEADER_LEN: usize = field::MAC.end;
/// Length of a subheader.
pub const SUBHEADER_LEN: usize = field::SUB_END;
/// Length of a state record (INSERT, UPDATE).
pub const STATE_LEN: usize = field::rec::DNAT_ADDR.end;
/// Length of a DELETE record.
pub const DELETE_LEN: usize = 16;
/// Length of a CLEAR record.
pub const CLEAR_LEN: usize = 8;
/// Length of a BULK_REQUEST record (older senders sent an empty one: request id 0).
pub const BULK_REQUEST_LEN: usize = 4;
/// BULK_END's request id for a bulk nobody asked for (pushed after a send-window overflow or on
/// `conntrackd -B`'s equivalent). Request ids are never 0 (an older sender) nor this.
pub const BULK_UNSOLICITED: u32 = u32::MAX;
/// Length of a BULK_END record.
pub const BULK_END_LEN: usize = 8;
/// Length of an ACK or NACK record.
pub const RANGE_LEN: usize = 8;
/// Length of an ACK_INFO record.
pub const ACK_INFO_LEN: usize = 12;
/// ACK_INFO's apply times when the sender has none yet.
pub const APPLY_UNKNOWN: u32 = u32::MAX;
/// The largest message (the length field is 16 bits).
pub const MAX_LEN: usize = u16::MAX as usize;

/// Why a message was refused. Each reason maps to one drop counter of the sync machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case", tag = "error", content = "value")]
pub enum Error {
    /// Shorter than the header, than the length field, or a section runs past the end.
    Truncated,
    /// The length field is below the header length.
    BadLength,
    /// The message version is not [`VERSION`].
    BadVersion(u8),
    /// The MAC does not verify, is missing while a key is set, or is present while none is.
    BadMac,
    /// A known action with a record shorter than its minimum.
    BadRecordLen { action: u8, len: u16 },
    /// A state record version we do not know.
    BadRecordVersion(u8),
    /// A state record's family is not 4 or 6.
    BadFamily(u8),
    /// A state record's L4 protocol is not TCP, UDP, ICMP or ICMPv6.
    BadProto(u8),
    /// A state record's TCP state is not one of conntrack's (0..=9).
    BadTcpState(u8),
    /// A BULK_REQUEST section with a count other than 1, or an ACK/NACK range with last < first
    /// in serial-number order, or more than 2^31 wide.
    BadValue(u8),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Truncated => write!(f, "truncated message"),
            Error::BadLength => write!(f, "length field below the header length"),
            Error::BadVersion(v) => write!(f, "sync version {v}, expected {VERSION}"),
            Error::BadMac => write!(f, "message authentication failed"),
            Error::BadRecordLen { action, len } => {
                write!(
                    f,
                    "action {action} with record length {len} below its minimum"
                )
            }
            Error::BadRecordVersion(v) => write!(f, "state record version {v} unknown"),
            Error::BadFamily(v) => write!(f, "state family {v}, expected 4 or 6"),
            Error::BadProto(p) => write!(f, "state protocol {p} not tcp, udp, icmp or icmpv6"),
            Error::BadTcpState(s) => write!(f, "tcp state {s} out of range"),
            Error::BadValue(a) => write!(f, "bad value in a record of action {a}"),
        }
    }
}

impl std::error::Error for Error {}

/// Section actions. Unknown codes are kept (and skipped by the parser), never an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Insert,
    Update,
    Delete,
    Clear,
    BulkRequest,
    BulkEnd,
    Ack,
    Nack,
    AckInfo,
    Unknown(u8),
}

impl From<u8> for Action {
    fn from(v: u8) -> Action {
        match v {
            1 => Action::Insert,
            2 => Action::Update,
            3 => Action::Delete,
            4 => Action::Clear,
            5 => Action::BulkRequest,
            6 => Action::BulkEnd,
            7 => Action::Ack,
            8 => Action::Nack,
            9 => Action::AckInfo,
            other => Action::Unknown(other),
        }
    }
}

impl From<Action> for u8 {
    fn from(a: Action) -> u8 {
        match a {
            Action::Insert => 1,
            Action::Update => 2,
            Action::Delete => 3,
            Action::Clear => 4,
            Action::BulkRequest => 5,
            Action::BulkEnd => 6,
            Action::Ack => 7,
            Action::Nack => 8,
            Action::AckInfo => 9,
            Action::Unknown(v) => v,
        }
    }
}

impl Action {
    /// The minimum record length of a known action (`None` for unknown actions).
    pub const fn min_record_len(self) -> Option<usize> {
        match self {
            Action::Insert | Action::Update => Some(STATE_LEN),
            Action::Delete => Some(DELETE_LEN),
            Action::Clear => Some(CLEAR_LEN),
            Action::BulkRequest => Some(0),
            Action::BulkEnd => Some(BULK_END_LEN),
            Action::Ack | Action::Nack => Some(RANGE_LEN),
            Action::AckInfo => Some(ACK_INFO_LEN),
            Action::Unknown(_) => None,
        }
    }
}

/// L4 protocols we sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum L4Proto {
    Tcp,
    Udp,
    Icmp,
    Icmpv6,
}

impl L4Proto {
    /// The IP protocol number.
    pub const fn number(self) -> u8 {
        match self {
            L4Proto::Tcp => 6,
            L4Proto::Udp => 17,
            L4Proto::Icmp => 1,
            L4Proto::Icmpv6 => 58,
        }
    }

    pub const fn from_number(n: u8) -> Option<L4Proto> {
        match n {
            6 => Some(L4Proto::Tcp),
            17 => Some(L4Proto::Udp),
            1 => Some(L4Proto::Icmp),
            58 => Some(L4Proto::Icmpv6),
            _ => None,
        }
    }
}

/// Conntrack's TCP states, with conntrack's numbering (`enum tcp_conntrack`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TcpState {
    None = 0,
    SynSent = 1,
    SynRecv = 2,
    Established = 3,
    FinWait = 4,
    CloseWait = 5,
    LastAck = 6,
    TimeWait = 7,
    Close = 8,
    SynSent2 = 9,
}

impl TcpState {
    pub const ALL: [TcpState; 10] = [
        TcpState::None,
        TcpState::SynSent,
        TcpState::SynRecv,
        TcpState::Established,
        TcpState::FinWait,
        TcpState::CloseWait,
        TcpState::LastAck,
        TcpState::TimeWait,
        TcpState::Close,
        TcpState::SynSent2,
    ];

    pub const fn from_u8(v: u8) -> Option<TcpState> {
        if (v as usize) < Self::ALL.len() {
            Some(Self::ALL[v as usize])
        } else {
            None
        }
    }

    /// Conntrack's number.
    pub const fn as_u8(self) -> u8 {
        self as u8
    }

    /// The progress order used by the merge rule ("never backwards"):
    /// NONE < SYN_SENT < SYN_SENT2 < SYN_RECV < ESTABLISHED < FIN_WAIT < CLOSE_WAIT < LAST_ACK
    /// < TIME_WAIT < CLOSE.
    pub const fn rank(self) -> u8 {
        match self {
            TcpState::None => 0,
            TcpState::SynSent => 1,
            TcpState::SynSent2 => 2,
            TcpState::SynRecv => 3,
            TcpState::Established => 4,
            TcpState::FinWait => 5,
            TcpState::CloseWait => 6,
            TcpState::LastAck => 7,
            TcpState::TimeWait => 8,
            TcpState::Close => 9,
        }
    }
}

/// One direction's tuple. For ICMP/ICMPv6, `sport` is the ICMP id and `dport` is
/// `type << 8 | code` (see [`Tuple::icmp`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Tuple {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
}

impl Tuple {
    /// An ICMP tuple.
    pub const fn icmp(src: IpAddr, dst: IpAddr, kind: u8, code: u8, id: u16) -> Tuple {
        Tuple {
            src,
            dst,
            sport: id,
            dport: ((kind as u16) << 8) | code as u16,
        }
    }

    /// The ICMP (type, code, id) of an ICMP tuple.
    pub const fn icmp_parts(&self) -> (u8, u8, u16) {
        (
            (self.dport >> 8) as u8,
            (self.dport & 0xff) as u8,
            self.sport,
        )
    }

    /// Source and destination swapped (ports too).
    pub const fn inverse(&self) -> Tuple {
        Tuple {
            src: self.dst,
            dst: self.src,
            sport: self.dport,
            dport: self.sport,
        }
    }
}

/// A NAT mapping: the address and port of a `CTA_NAT_SRC`/`CTA_NAT_DST` range (min = max).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct NatMap {
    pub addr: IpAddr,
    pub port: u16,
}

/// `CTA_PROTOINFO_TCP` window data of both directions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct TcpWindow {
    pub wscale_orig: u8,
    pub wscale_reply: u8,
    /// `nf_ct_tcp_flags.flags` of the original direction (WINDOW_SCALE 0x01, SACK_PERM 0x02, ...).
    pub flags_orig: u8,
    pub flags_reply: u8,
}

/// Conntrack status bits used by the sync (`IPS_*`).
pub mod status {
    pub const EXPECTED: u32 = 1 << 0;
    pub const SEEN_REPLY: u32 = 1 << 1;
    pub const ASSURED: u32 = 1 << 2;
    pub const CONFIRMED: u32 = 1 << 3;
    pub const SRC_NAT: u32 = 1 << 4;
    pub const DST_NAT: u32 = 1 << 5;
    pub const SRC_NAT_DONE: u32 = 1 << 7;
    pub const DST_NAT_DONE: u32 = 1 << 8;
}

/// One conntrack entry as the sync carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct State {
    /// [`State::compute_id`] of the orig tuple and zone: the same on both nodes.
    pub id: u64,
    /// The node that created the entry.
    pub creator: u32,
    /// Per-state update counter (a Lamport clock value, see `proto::pfsync`).
    pub version: u64,
    pub proto: L4Proto,
    pub orig: Tuple,
    /// The kernel's reply tuple (NAT applied).
    pub reply: Tuple,
    /// Source NAT: the reply's destination (address, port), when `SRC_NAT_DONE`.
    pub snat: Option<NatMap>,
    /// Destination NAT: the reply's source (address, port), when `DST_NAT_DONE`.
    pub dnat: Option<NatMap>,
    /// Conntrack status bits (`IPS_*`, see [`status`]).
    pub status: u32,
    /// TCP state; [`TcpState::None`] for other protocols.
    pub tcp_state: TcpState,
    pub tcp_window: Option<TcpWindow>,
    /// Seconds left.
    pub timeout: u32,
    pub mark: u32,
    pub zone: u16,
}

impl State {
    /// The address family: 4 or 6 (that of the orig source).
    pub const fn family(&self) -> u8 {
        match self.orig.src {
            IpAddr::V4(_) => 4,
            IpAddr::V6(_) => 6,
        }
    }

    /// The stable 64-bit id: FNV-1a over family, protocol, the orig tuple (16-byte address
    /// layout) and the zone. Both nodes compute the same id for the same connection.
    pub fn compute_id(proto: L4Proto, orig: &Tuple, zone: u16) -> u64 {
        const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        let family = match orig.src {
            IpAddr::V4(_) => 4u8,
            IpAddr::V6(_) => 6,
        };
        let mut h = OFFSET;
        let mut feed = |bytes: &[u8]| {
            for b in bytes {
                h ^= u64::from(*b);
                h = h.wrapping_mul(PRIME);
            }
        };
        feed(&[family, proto.number()]);
        feed(&addr16(orig.src));
        feed(&addr16(orig.dst));
        feed(&orig.sport.to_be_bytes());
        feed(&orig.dport.to_be_bytes());
        feed(&zone.to_be_bytes());
        h
    }

    /// The reply tuple to create the entry with: the plain inverse of the orig tuple. The kernel
    /// rewrites it from `CTA_NAT_SRC`/`CTA_NAT_DST` ([`State::snat`], [`State::dnat`]).
    pub const fn unnatted_reply(&self) -> Tuple {
        self.orig.inverse()
    }

    /// Fills `snat`/`dnat` from the reply tuple and the status bits, as conntrackd decides it:
    /// SNAT when `SRC_NAT_DONE` and reply.dst differs from orig.src (or the ports differ),
    /// DNAT when `DST_NAT_DONE` and reply.src differs from orig.dst (or the ports differ).
    pub fn derive_nat(&mut self) {
        let inv = self.orig.inverse();
        self.snat = (self.status & status::SRC_NAT_DONE != 0
            && (self.reply.dst != inv.dst || self.reply.dport != inv.dport))
            .then_some(NatMap {
                addr: self.reply.dst,
                port: self.reply.dport,
            });
        self.dnat = (self.status & status::DST_NAT_DONE != 0
            && (self.reply.src != inv.src || self.reply.sport != inv.sport))
            .then_some(NatMap {
                addr: self.reply.src,
                port: self.reply.sport,
            });
    }
}

/// A DELETE record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Delete {
    pub id: u64,
    /// The version of the deletion (greater than every version of the deleted state).
    pub version: u64,
}

/// An inclusive range of sequence numbers (serial-number order, may wrap).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct SeqRange {
    pub first: u32,
    pub last: u32,
}

impl SeqRange {
    /// How many seqs the range covers, if it is well-formed (last not before first, < 2^31).
    pub const fn len(&self) -> Option<u32> {
        let d = self.last.wrapping_sub(self.first);
        if d < (1 << 31) { Some(d + 1) } else { None }
    }

    pub const fn is_empty(&self) -> bool {
        self.len().is_none()
    }

    pub const fn contains(&self, seq: u32) -> bool {
        let d = seq.wrapping_sub(self.first);
        match self.len() {
            Some(n) => d < n,
            None => false,
        }
    }
}

/// One parsed section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "action", content = "records")]
pub enum Section {
    Insert(Vec<State>),
    Update(Vec<State>),
    Delete(Vec<Delete>),
    /// Creator ids whose states are all to be removed.
    Clear(Vec<u32>),
    /// Send me your whole table; the id comes back in the answer's BULK_END.
    BulkRequest(u32),
    /// The number of states the bulk answer carried, and the request it answers
    /// ([`BULK_UNSOLICITED`] for none; 0 from an older sender).
    BulkEnd(u32, u32),
    Ack(Vec<SeqRange>),
    Nack(Vec<SeqRange>),
    /// Timing that rides with an ACK, so the other side can estimate its sync lag end to end.
    AckInfo(AckInfo),
}

/// ACK_INFO: how long the newest message this ACK covers waited at the receiver for the ACK
/// (its ACK coalescing), and the receiver's time from a message's arrival to its states being
/// in the kernel table over its recent messages ([`APPLY_UNKNOWN`] before it has any), all in
/// microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AckInfo {
    pub hold_us: u32,
    pub apply_p50_us: u32,
    pub apply_p99_us: u32,
}

impl Section {
    pub fn action(&self) -> Action {
        match self {
            Section::Insert(_) => Action::Insert,
            Section::Update(_) => Action::Update,
            Section::Delete(_) => Action::Delete,
            Section::Clear(_) => Action::Clear,
            Section::BulkRequest(_) => Action::BulkRequest,
            Section::BulkEnd(..) => Action::BulkEnd,
            Section::Ack(_) => Action::Ack,
            Section::Nack(_) => Action::Nack,
            Section::AckInfo(_) => Action::AckInfo,
        }
    }

    /// (record length, count) as emitted.
    pub fn shape(&self) -> (usize, usize) {
        match self {
            Section::Insert(v) | Section::Update(v) => (STATE_LEN, v.len()),
            Section::Delete(v) => (DELETE_LEN, v.len()),
            Section::Clear(v) => (CLEAR_LEN, v.len()),
            Section::BulkRequest(_) => (BULK_REQUEST_LEN, 1),
            Section::BulkEnd(..) => (BULK_END_LEN, 1),
            Section::Ack(v) | Section::Nack(v) => (RANGE_LEN, v.len()),
            Section::AckInfo(_) => (ACK_INFO_LEN, 1),
        }
    }

    /// Bytes this section takes on the wire, subheader included.
    pub fn buffer_len(&self) -> usize {
        let (len, count) = self.shape();
        SUBHEADER_LEN + len * count
    }
}

/// A read/write view of a sync message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// A view without checks; header accessors may panic on a buffer shorter than [`HEADER_LEN`].
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// A view after [`Packet::check_len`]: no accessor panics afterwards.
    pub fn new_checked(buffer: T) -> Result<Packet<T>, Error> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// The buffer holds the header, the length field is at least the header length, and the
    /// buffer holds `length` bytes.
    pub fn check_len(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let claimed = usize::from(self.length());
        if claimed < HEADER_LEN {
            return Err(Error::BadLength);
        }
        if claimed > len {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VERSION]
    }

    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    pub fn length(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::LENGTH])
    }

    pub fn node_id(&self) -> u32 {
        be32(&self.buffer.as_ref()[field::NODE_ID])
    }

    pub fn epoch(&self) -> u32 {
        be32(&self.buffer.as_ref()[field::EPOCH])
    }

    pub fn seq(&self) -> u32 {
        be32(&self.buffer.as_ref()[field::SEQ])
    }

    pub fn mac(&self) -> [u8; MAC_LEN] {
        let mut mac = [0u8; MAC_LEN];
        mac.copy_from_slice(&self.buffer.as_ref()[field::MAC]);
        mac
    }

    /// The `length` bytes after the header (the sections). Needs `check_len`.
    pub fn payload(&self) -> &[u8] {
        let end = usize::from(self.length()).min(self.buffer.as_ref().len());
        self.buffer.as_ref().get(HEADER_LEN..end).unwrap_or(&[])
    }

    /// The MAC this message should carry under `key`.
    pub fn compute_mac(&self, key: &[u8]) -> [u8; MAC_LEN] {
        let end = usize::from(self.length()).min(self.buffer.as_ref().len());
        let bytes = &self.buffer.as_ref()[..end];
        mac_over(key, bytes)
    }

    /// Checks authentication. With a key: [`FLAG_AUTH`] set and the MAC verifies (constant-time).
    /// Without a key: [`FLAG_AUTH`] clear and the MAC field zero (a keyed peer is a mismatch).
    pub fn verify_mac(&self, key: Option<&[u8]>) -> Result<(), Error> {
        match key {
            Some(key) => {
                if self.flags() & FLAG_AUTH == 0 {
                    return Err(Error::BadMac);
                }
                if ct_eq(&self.mac(), &self.compute_mac(key)) {
                    Ok(())
                } else {
                    Err(Error::BadMac)
                }
            }
            None => {
                if self.flags() & FLAG_AUTH != 0 || self.mac() != [0u8; MAC_LEN] {
                    Err(Error::BadMac)
                } else {
                    Ok(())
                }
            }
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_version(&mut self, v: u8) {
        self.buffer.as_mut()[field::VERSION] = v;
    }

    pub fn set_flags(&mut self, v: u8) {
        self.buffer.as_mut()[field::FLAGS] = v;
    }

    pub fn set_length(&mut self, v: u16) {
        self.buffer.as_mut()[field::LENGTH].copy_from_slice(&v.to_be_bytes());
    }

    pub fn set_node_id(&mut self, v: u32) {
        self.buffer.as_mut()[field::NODE_ID].copy_from_slice(&v.to_be_bytes());
    }

    pub fn set_epoch(&mut self, v: u32) {
        self.buffer.as_mut()[field::EPOCH].copy_from_slice(&v.to_be_bytes());
    }

    pub fn set_seq(&mut self, v: u32) {
        self.buffer.as_mut()[field::SEQ].copy_from_slice(&v.to_be_bytes());
    }

    pub fn set_mac(&mut self, mac: &[u8; MAC_LEN]) {
        self.buffer.as_mut()[field::MAC].copy_from_slice(mac);
    }

    /// With a key: sets [`FLAG_AUTH`], zeroes the MAC field, computes and stores the MAC.
    /// Without: clears the flag and zeroes the field. Needs `check_len`.
    pub fn fill_mac(&mut self, key: Option<&[u8]>) {
        self.set_mac(&[0u8; MAC_LEN]);
        let flags = self.flags();
        match key {
            Some(key) => {
                self.set_flags(flags | FLAG_AUTH);
                let mac = self.compute_mac(key);
                self.set_mac(&mac);
            }
            None => self.set_flags(flags & !FLAG_AUTH),
        }
    }
}

/// A whole message, owned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Repr {
    /// Header flags; [`FLAG_AUTH`] is set or cleared by [`Repr::to_bytes`] from the key.
    pub flags: u8,
    pub node_id: u32,
    pub epoch: u32,
    pub seq: u32,
    pub sections: Vec<Section>,
    /// Sections with an unknown action that the parser skipped (not emitted).
    pub skipped: u16,
}

impl Repr {
    /// Parses a checked view: version, then every section (the MAC is checked separately by
    /// [`Packet::verify_mac`], see [`parse`]).
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Packet<&T>) -> Result<Repr, Error> {
        packet.check_len()?;
        if packet.version() != VERSION {
            return Err(Error::BadVersion(packet.version()));
        }
        let mut rest = packet.payload();
        let mut sections = Vec::new();
        let mut skipped: u16 = 0;
        while !rest.is_empty() {
            let sub = rest.get(..SUBHEADER_LEN).ok_or(Error::Truncated)?;
            let action = Action::from(sub[field::SUB_ACTION]);
            let reclen = be16(&sub[field::SUB_RECLEN]);
            let count = be16(&sub[field::SUB_COUNT]);
            let body_len = usize::from(reclen)
                .checked_mul(usize::from(count))
                .ok_or(Error::BadLength)?;
            let end = SUBHEADER_LEN
                .checked_add(body_len)
                .ok_or(Error::BadLength)?;
            let body = rest.get(SUBHEADER_LEN..end).ok_or(Error::Truncated)?;
            rest = rest.get(end..).ok_or(Error::Truncated)?;
            let Some(min) = action.min_record_len() else {
                skipped = skipped.saturating_add(1);
                continue;
            };
            let reclen = usize::from(reclen);
            if reclen < min {
                return Err(Error::BadRecordLen {
                    action: action.into(),
                    len: reclen as u16,
                });
            }
            let records = || -> Box<dyn Iterator<Item = &[u8]>> {
                if reclen == 0 {
                    Box::new(std::iter::repeat_n(&[][..], usize::from(count)))
                } else {
                    Box::new(body.chunks_exact(reclen))
                }
            };
            let section = match action {
                Action::Insert => {
                    Section::Insert(records().map(parse_state).collect::<Result<Vec<_>, _>>()?)
                }
                Action::Update => {
                    Section::Update(records().map(parse_state).collect::<Result<Vec<_>, _>>()?)
                }
                Action::Delete => Section::Delete(
                    records()
                        .map(|r| Delete {
                            id: be64(&r[0..8]),
                            version: be64(&r[8..16]),
                        })
                        .collect(),
                ),
                Action::Clear => Section::Clear(records().map(|r| be32(&r[0..4])).collect()),
                Action::BulkRequest => {
                    if count != 1 {
                        return Err(Error::BadValue(action.into()));
                    }
                    Section::BulkRequest(if reclen >= 4 { be32(&body[0..4]) } else { 0 })
                }
                Action::BulkEnd => {
                    if count != 1 {
                        return Err(Error::BadValue(action.into()));
                    }
                    Section::BulkEnd(be32(&body[0..4]), be32(&body[4..8]))
                }
                Action::Ack | Action::Nack => {
                    let ranges = records()
                        .map(|r| SeqRange {
                            first: be32(&r[0..4]),
                            last: be32(&r[4..8]),
                        })
                        .collect::<Vec<_>>();
                    if ranges.iter().any(|r| r.is_empty()) {
                        return Err(Error::BadValue(action.into()));
                    }
                    if action == Action::Ack {
                        Section::Ack(ranges)
                    } else {
                        Section::Nack(ranges)
                    }
                }
                Action::AckInfo => {
                    if count != 1 {
                        return Err(Error::BadValue(action.into()));
                    }
                    Section::AckInfo(AckInfo {
                        hold_us: be32(&body[0..4]),
                        apply_p50_us: be32(&body[4..8]),
                        apply_p99_us: be32(&body[8..12]),
                    })
                }
                Action::Unknown(_) => unreachable!("unknown actions have no minimum length"),
            };
            sections.push(section);
        }
        Ok(Repr {
            flags: packet.flags(),
            node_id: packet.node_id(),
            epoch: packet.epoch(),
            seq: packet.seq(),
            sections,
            skipped,
        })
    }

    /// Bytes of the whole message.
    pub fn buffer_len(&self) -> usize {
        self.sections
            .iter()
            .fold(HEADER_LEN, |acc, s| acc.saturating_add(s.buffer_len()))
    }

    /// Writes the message with a zero MAC field (call [`Packet::fill_mac`] after). The buffer
    /// must hold [`Repr::buffer_len`] bytes, which must not exceed [`MAX_LEN`], and no section
    /// may hold more than 65535 records (the builders of `proto::pfsync` never come near).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]> + ?Sized>(&self, packet: &mut Packet<&mut T>) {
        let total = self.buffer_len();
        packet.set_version(VERSION);
        packet.set_flags(self.flags);
        packet.set_length(u16::try_from(total).unwrap_or(u16::MAX));
        packet.set_node_id(self.node_id);
        packet.set_epoch(self.epoch);
        packet.set_seq(self.seq);
        packet.set_mac(&[0u8; MAC_LEN]);
        let buf = packet.buffer.as_mut();
        let mut off = HEADER_LEN;
        for section in &self.sections {
            let (reclen, count) = section.shape();
            let sub = &mut buf[off..off + SUBHEADER_LEN];
            sub[field::SUB_ACTION] = section.action().into();
            sub[1] = 0;
            sub[field::SUB_RECLEN].copy_from_slice(&(reclen as u16).to_be_bytes());
            sub[field::SUB_COUNT]
                .copy_from_slice(&u16::try_from(count).unwrap_or(u16::MAX).to_be_bytes());
            sub[6..8].copy_from_slice(&[0, 0]);
            off += SUBHEADER_LEN;
            let mut put = |rec: &mut dyn FnMut(&mut [u8])| {
                rec(&mut buf[off..off + reclen]);
                off += reclen;
            };
            match section {
                Section::Insert(v) | Section::Update(v) => {
                    for s in v {
                        put(&mut |r| emit_state(s, r));
                    }
                }
                Section::Delete(v) => {
                    for d in v {
                        put(&mut |r| {
                            r[0..8].copy_from_slice(&d.id.to_be_bytes());
                            r[8..16].copy_from_slice(&d.version.to_be_bytes());
                        });
                    }
                }
                Section::Clear(v) => {
                    for c in v {
                        put(&mut |r| {
                            r[0..4].copy_from_slice(&c.to_be_bytes());
                            r[4..8].copy_from_slice(&[0; 4]);
                        });
                    }
                }
                Section::BulkRequest(id) => {
                    put(&mut |r| r[0..4].copy_from_slice(&id.to_be_bytes()))
                }
                Section::BulkEnd(n, id) => put(&mut |r| {
                    r[0..4].copy_from_slice(&n.to_be_bytes());
                    r[4..8].copy_from_slice(&id.to_be_bytes());
                }),
                Section::Ack(v) | Section::Nack(v) => {
                    for x in v {
                        put(&mut |r| {
                            r[0..4].copy_from_slice(&x.first.to_be_bytes());
                            r[4..8].copy_from_slice(&x.last.to_be_bytes());
                        });
                    }
                }
                Section::AckInfo(a) => put(&mut |r| {
                    r[0..4].copy_from_slice(&a.hold_us.to_be_bytes());
                    r[4..8].copy_from_slice(&a.apply_p50_us.to_be_bytes());
                    r[8..12].copy_from_slice(&a.apply_p99_us.to_be_bytes());
                }),
            }
        }
    }

    /// The whole message, MAC'd with `key` (or with a zero MAC and no [`FLAG_AUTH`]).
    pub fn to_bytes(&self, key: Option<&[u8]>) -> Vec<u8> {
        let mut buf = vec![0u8; self.buffer_len()];
        let mut packet = Packet::new_unchecked(&mut buf[..]);
        self.emit(&mut packet);
        packet.fill_mac(key);
        buf
    }
}

/// Parses a received message: lengths, version, MAC (see [`Packet::verify_mac`]), sections.
pub fn parse(bytes: &[u8], key: Option<&[u8]>) -> Result<Repr, Error> {
    let packet = Packet::new_checked(bytes)?;
    if packet.version() != VERSION {
        return Err(Error::BadVersion(packet.version()));
    }
    packet.verify_mac(key)?;
    Repr::parse(&packet)
}

fn parse_state(r: &[u8]) -> Result<State, Error> {
    use field::rec as f;
    if r.len() < STATE_LEN {
        return Err(Error::Truncated);
    }
    if r[f::VERSION] != RECORD_VERSION {
        return Err(Error::BadRecordVersion(r[f::VERSION]));
    }
    let v6 = match r[f::FAMILY] {
        4 => false,
        6 => true,
        other => return Err(Error::BadFamily(other)),
    };
    let proto = L4Proto::from_number(r[f::PROTO]).ok_or(Error::BadProto(r[f::PROTO]))?;
    let tcp_state =
        TcpState::from_u8(r[f::TCP_STATE]).ok_or(Error::BadTcpState(r[f::TCP_STATE]))?;
    let flags = r[f::FLAGS];
    let addr = |field: std::ops::Range<usize>| read_addr(&r[field], v6);
    let tcp_window = (flags & REC_WINDOW != 0).then(|| TcpWindow {
        wscale_orig: r[f::WSCALE_ORIG],
        wscale_reply: r[f::WSCALE_REPLY],
        flags_orig: r[f::TCP_FLAGS_ORIG],
        flags_reply: r[f::TCP_FLAGS_REPLY],
    });
    Ok(State {
        id: be64(&r[f::ID]),
        creator: be32(&r[f::CREATOR]),
        version: be64(&r[f::VERSION_CTR]),
        proto,
        orig: Tuple {
            src: addr(f::ORIG_SRC),
            dst: addr(f::ORIG_DST),
            sport: be16(&r[f::ORIG_SPORT]),
            dport: be16(&r[f::ORIG_DPORT]),
        },
        reply: Tuple {
            src: addr(f::REPLY_SRC),
            dst: addr(f::REPLY_DST),
            sport: be16(&r[f::REPLY_SPORT]),
            dport: be16(&r[f::REPLY_DPORT]),
        },
        snat: (flags & REC_SNAT != 0).then(|| NatMap {
            addr: addr(f::SNAT_ADDR),
            port: be16(&r[f::SNAT_PORT]),
        }),
        dnat: (flags & REC_DNAT != 0).then(|| NatMap {
            addr: addr(f::DNAT_ADDR),
            port: be16(&r[f::DNAT_PORT]),
        }),
        status: be32(&r[f::STATUS]),
        tcp_state,
        tcp_window,
        timeout: be32(&r[f::TIMEOUT]),
        mark: be32(&r[f::MARK]),
        zone: be16(&r[f::ZONE]),
    })
}

/// Writes one state record into `r` (exactly [`STATE_LEN`] bytes, all of them written).
fn emit_state(s: &State, r: &mut [u8]) {
    use field::rec as f;
    r.fill(0);
    r[f::VERSION] = RECORD_VERSION;
    r[f::FAMILY] = s.family();
    r[f::PROTO] = s.proto.number();
    r[f::TCP_STATE] = s.tcp_state.as_u8();
    let mut flags = 0;
    if let Some(w) = s.tcp_window {
        flags |= REC_WINDOW;
        r[f::WSCALE_ORIG] = w.wscale_orig;
        r[f::WSCALE_REPLY] = w.wscale_reply;
        r[f::TCP_FLAGS_ORIG] = w.flags_orig;
        r[f::TCP_FLAGS_REPLY] = w.flags_reply;
    }
    if let Some(n) = s.snat {
        flags |= REC_SNAT;
        r[f::SNAT_ADDR].copy_from_slice(&addr16(n.addr));
        r[f::SNAT_PORT].copy_from_slice(&n.port.to_be_bytes());
    }
    if let Some(n) = s.dnat {
        flags |= REC_DNAT;
        r[f::DNAT_ADDR].copy_from_slice(&addr16(n.addr));
        r[f::DNAT_PORT].copy_from_slice(&n.port.to_be_bytes());
    }
    r[f::FLAGS] = flags;
    r[f::ZONE].copy_from_slice(&s.zone.to_be_bytes());
    r[f::STATUS].copy_from_slice(&s.status.to_be_bytes());
    r[f::ID].copy_from_slice(&s.id.to_be_bytes());
    r[f::VERSION_CTR].copy_from_slice(&s.version.to_be_bytes());
    r[f::CREATOR].copy_from_slice(&s.creator.to_be_bytes());
    r[f::TIMEOUT].copy_from_slice(&s.timeout.to_be_bytes());
    r[f::MARK].copy_from_slice(&s.mark.to_be_bytes());
    r[f::ORIG_SPORT].copy_from_slice(&s.orig.sport.to_be_bytes());
    r[f::ORIG_DPORT].copy_from_slice(&s.orig.dport.to_be_bytes());
    r[f::REPLY_SPORT].copy_from_slice(&s.reply.sport.to_be_bytes());
    r[f::REPLY_DPORT].copy_from_slice(&s.reply.dport.to_be_bytes());
    r[f::ORIG_SRC].copy_from_slice(&addr16(s.orig.src));
    r[f::ORIG_DST].copy_from_slice(&addr16(s.orig.dst));
    r[f::REPLY_SRC].copy_from_slice(&addr16(s.reply.src));
    r[f::REPLY_DST].copy_from_slice(&addr16(s.reply.dst));
}

/// The 16-byte address layout: IPv6 as is, IPv4 in the first 4 bytes.
fn addr16(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V6(a) => a.octets(),
        IpAddr::V4(a) => {
            let mut o = [0u8; 16];
            o[..4].copy_from_slice(&a.octets());
            o
        }
    }
}

fn read_addr(b: &[u8], v6: bool) -> IpAddr {
    if v6 {
        let mut o = [0u8; 16];
        o.copy_from_slice(&b[..16]);
        IpAddr::V6(Ipv6Addr::from(o))
    } else {
        IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
    }
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn be64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

/// HMAC-SHA256 of `bytes` with the MAC field taken as zero.
fn mac_over(key: &[u8], bytes: &[u8]) -> [u8; MAC_LEN] {
    // HMAC accepts keys of any length (longer ones are hashed first), so this cannot fail.
    let mut mac = match hmac::Hmac::<sha2::Sha256>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("hmac takes keys of any length"),
    };
    let mac_field = field::MAC;
    mac.update(bytes.get(..mac_field.start).unwrap_or(bytes));
    if bytes.len() > mac_field.start {
        mac.update(&[0u8; MAC_LEN]);
    }
    mac.update(bytes.get(mac_field.end..).unwrap_or(&[]));
    let mut out = [0u8; MAC_LEN];
    out.copy_from_slice(&mac.finalize().into_bytes());
    out
}

/// Compares two MACs in time independent of where they differ.
fn ct_eq(a: &[u8; MAC_LEN], b: &[u8; MAC_LEN]) -> bool {
    let diff = a
        .iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
pub(crate) mod tests;
