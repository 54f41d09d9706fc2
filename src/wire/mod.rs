//! Packet formats: zero-copy views and owned `Repr`s. No I/O, no clock, no logging.
//!
//! Every format follows the smoltcp pattern: a `Packet<T: AsRef<[u8]>>` view with `new_unchecked`,
//! `new_checked` (after which no accessor panics), getters, setters under `T: AsMut<[u8]>`, and an
//! owned `Repr` with `parse`, `emit` and `buffer_len` (`emit` never panics on a buffer of exactly
//! `buffer_len()` bytes). Parse errors are one `Copy` [`Error`] enum that says why.

use std::fmt;

use serde::Serialize;

pub mod carp;
pub mod checksum;
pub mod dhcp;
pub mod ipv4;
pub mod pfsync;
pub mod xmlrpc;

pub use carp::{HEADER_LEN as CARP_HEADER_LEN, Packet as CarpPacket, Repr as CarpRepr};
pub use ipv4::{HEADER_LEN as IPV4_HEADER_LEN, Header as Ipv4Header, Packet as Ipv4Packet};

/// Why a packet was refused. `Copy` and serialisable, so actors can forward it and count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case", tag = "error", content = "value")]
pub enum Error {
    /// The buffer is shorter than the header (or than the length the header claims).
    Truncated,
    /// A length field is inconsistent (e.g. an IPv4 total length below its header length).
    BadLength,
    /// The IPv4 version nibble is not 4.
    BadIpVersion(u8),
    /// The IPv4 header length (IHL, in 32-bit words) is below 5.
    BadHeaderLen(u8),
    /// The IPv4 header checksum does not verify.
    BadIpChecksum,
    /// The IP protocol is not the one expected (112 for CARP).
    BadProtocol(u8),
    /// The IP TTL / IPv6 hop limit is not 255.
    BadTtl(u8),
    /// The CARP checksum over the 36-byte header does not verify.
    BadChecksum,
    /// The CARP version nibble is not 2.
    BadVersion(u8),
    /// The CARP type nibble is not 1 (advertisement).
    BadType(u8),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Truncated => write!(f, "truncated packet"),
            Error::BadLength => write!(f, "inconsistent length field"),
            Error::BadIpVersion(v) => write!(f, "ip version {v}, expected 4"),
            Error::BadHeaderLen(ihl) => {
                write!(f, "ip header length {ihl} words, expected at least 5")
            }
            Error::BadIpChecksum => write!(f, "bad ip header checksum"),
            Error::BadProtocol(p) => write!(f, "ip protocol {p}, expected 112"),
            Error::BadTtl(t) => write!(f, "ttl {t}, expected 255"),
            Error::BadChecksum => write!(f, "bad carp checksum"),
            Error::BadVersion(v) => write!(f, "carp version {v}, expected 2"),
            Error::BadType(t) => write!(f, "carp type {t}, expected 1 (advertisement)"),
        }
    }
}

impl std::error::Error for Error {}

/// A byte range inside a header (smoltcp's `Field`).
pub(crate) type Field = std::ops::Range<usize>;
