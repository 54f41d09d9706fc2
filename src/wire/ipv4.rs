//! A minimal IPv4 header view: enough to read what a Linux raw IPv4 socket hands up (it includes
//! the IP header) and to build a header for tests and captures. Options are skipped, not parsed.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Version|  IHL  |    DSCP/ECN   |          Total Length         |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |         Identification        |Flags|      Fragment Offset    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  Time to Live |    Protocol   |         Header Checksum       |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                       Source Address                          |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                    Destination Address                        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                    Options (IHL > 5)                          |
//! ```

use std::net::Ipv4Addr;

pub use super::Error;
use super::checksum;

mod field {
    use crate::wire::Field;
    pub const VER_IHL: usize = 0;
    pub const TOS: usize = 1;
    pub const LENGTH: Field = 2..4;
    pub const IDENT: Field = 4..6;
    pub const FLG_OFF: Field = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Field = 10..12;
    pub const SRC_ADDR: Field = 12..16;
    pub const DST_ADDR: Field = 16..20;
}

/// Length of an IPv4 header without options.
pub const HEADER_LEN: usize = field::DST_ADDR.end;

/// The "don't fragment" flag in the flags/fragment-offset word.
pub const FLAG_DF: u16 = 0x4000;

/// A read/write view of an IPv4 header at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// A view without checks; accessors may panic on a short buffer.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// A view after [`Packet::check_len`]: no accessor panics afterwards.
    pub fn new_checked(buffer: T) -> Result<Packet<T>, Error> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks the buffer holds the fixed header, the header the IHL claims, and the total length
    /// (which must cover the header).
    pub fn check_len(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let ihl = self.ihl();
        if ihl < 5 {
            return Err(Error::BadHeaderLen(ihl));
        }
        let header_len = self.header_len();
        if len < header_len {
            return Err(Error::Truncated);
        }
        let total = usize::from(self.total_len());
        if total < header_len {
            return Err(Error::BadLength);
        }
        if len < total {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in 32-bit words.
    pub fn ihl(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] & 0x0f
    }

    /// Header length in bytes (options included).
    pub fn header_len(&self) -> usize {
        usize::from(self.ihl()) * 4
    }

    pub fn tos(&self) -> u8 {
        self.buffer.as_ref()[field::TOS]
    }

    pub fn total_len(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::LENGTH];
        u16::from_be_bytes([b[0], b[1]])
    }

    pub fn ident(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::IDENT];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// The flags (high 3 bits) and fragment offset word.
    pub fn flags_frag(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::FLG_OFF];
        u16::from_be_bytes([b[0], b[1]])
    }

    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    pub fn checksum(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::CHECKSUM];
        u16::from_be_bytes([b[0], b[1]])
    }

    pub fn src_addr(&self) -> Ipv4Addr {
        let b = &self.buffer.as_ref()[field::SRC_ADDR];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    pub fn dst_addr(&self) -> Ipv4Addr {
        let b = &self.buffer.as_ref()[field::DST_ADDR];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    /// Whether the header checksum (over `header_len()` bytes) verifies.
    pub fn verify_checksum(&self) -> bool {
        checksum::verify(&self.buffer.as_ref()[..self.header_len()])
    }

    /// The bytes after the header, up to the total length.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..usize::from(self.total_len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_version_ihl(&mut self, version: u8, ihl: u8) {
        self.buffer.as_mut()[field::VER_IHL] = (version << 4) | (ihl & 0x0f);
    }

    pub fn set_tos(&mut self, tos: u8) {
        self.buffer.as_mut()[field::TOS] = tos;
    }

    pub fn set_total_len(&mut self, len: u16) {
        self.buffer.as_mut()[field::LENGTH].copy_from_slice(&len.to_be_bytes());
    }

    pub fn set_ident(&mut self, ident: u16) {
        self.buffer.as_mut()[field::IDENT].copy_from_slice(&ident.to_be_bytes());
    }

    pub fn set_flags_frag(&mut self, value: u16) {
        self.buffer.as_mut()[field::FLG_OFF].copy_from_slice(&value.to_be_bytes());
    }

    pub fn set_ttl(&mut self, ttl: u8) {
        self.buffer.as_mut()[field::TTL] = ttl;
    }

    pub fn set_protocol(&mut self, protocol: u8) {
        self.buffer.as_mut()[field::PROTOCOL] = protocol;
    }

    pub fn set_checksum(&mut self, value: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&value.to_be_bytes());
    }

    pub fn set_src_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&addr.octets());
    }

    pub fn set_dst_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&addr.octets());
    }

    /// Computes and stores the header checksum over `header_len()` bytes.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let len = self.header_len();
        let value = checksum::checksum(&self.buffer.as_ref()[..len]);
        self.set_checksum(value);
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = self.header_len();
        let end = usize::from(self.total_len());
        &mut self.buffer.as_mut()[start..end]
    }
}

/// The IPv4 header fields tandem cares about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Header length in bytes, options included.
    pub ihl_len: usize,
    pub tos: u8,
    pub total_len: u16,
    pub ident: u16,
    pub flags_frag: u16,
    pub ttl: u8,
    pub protocol: u8,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
}

/// Parses and checks an IPv4 header (version 4, IHL ≥ 5, lengths consistent with the buffer,
/// header checksum) and returns it with the payload (`total_len - ihl_len` bytes; bytes past
/// the total length, e.g. Ethernet padding, are ignored).
pub fn parse_header(bytes: &[u8]) -> Result<(Header, &[u8]), Error> {
    if bytes.len() < HEADER_LEN {
        return Err(Error::Truncated);
    }
    let packet = Packet::new_unchecked(bytes);
    if packet.version() != 4 {
        return Err(Error::BadIpVersion(packet.version()));
    }
    packet.check_len()?;
    if !packet.verify_checksum() {
        return Err(Error::BadIpChecksum);
    }
    let header = Header {
        ihl_len: packet.header_len(),
        tos: packet.tos(),
        total_len: packet.total_len(),
        ident: packet.ident(),
        flags_frag: packet.flags_frag(),
        ttl: packet.ttl(),
        protocol: packet.protocol(),
        src: packet.src_addr(),
        dst: packet.dst_addr(),
    };
    let payload = bytes
        .get(header.ihl_len..usize::from(header.total_len))
        .ok_or(Error::Truncated)?;
    Ok((header, payload))
}

impl Header {
    /// A header without options for a payload of `payload_len` bytes (DF set, TOS 0x10 as ucarp
    /// and the BSDs send adverts).
    pub fn new(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, ttl: u8, payload_len: usize) -> Header {
        Header {
            ihl_len: HEADER_LEN,
            tos: 0x10,
            total_len: u16::try_from(HEADER_LEN + payload_len).unwrap_or(u16::MAX),
            ident: 0,
            flags_frag: FLAG_DF,
            ttl,
            protocol,
            src,
            dst,
        }
    }

    /// Always [`HEADER_LEN`]: `emit` writes no options.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header (no options, whatever `ihl_len` says) and fills its checksum.
    /// `packet` must hold at least [`HEADER_LEN`] bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.set_version_ihl(4, 5);
        packet.set_tos(self.tos);
        packet.set_total_len(self.total_len);
        packet.set_ident(self.ident);
        packet.set_flags_frag(self.flags_frag);
        packet.set_ttl(self.ttl);
        packet.set_protocol(self.protocol);
        packet.set_src_addr(self.src);
        packet.set_dst_addr(self.dst);
        packet.fill_checksum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The IPv4 header of the ucarp advert in `wire::carp::tests` (10.99.0.2 -> 224.0.0.18).
    static HEADER: [u8; 20] = [
        0x45, 0x10, 0x00, 0x38, 0x84, 0x45, 0x40, 0x00, 0xff, 0x70, 0x0c, 0x89, 0x0a, 0x63, 0x00,
        0x02, 0xe0, 0x00, 0x00, 0x12,
    ];

    fn packet_with_payload() -> Vec<u8> {
        let mut bytes = HEADER.to_vec();
        bytes.extend_from_slice(&[0u8; 36]);
        bytes
    }

    #[test]
    fn deconstruct() {
        let bytes = packet_with_payload();
        let p = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.tos(), 0x10);
        assert_eq!(p.total_len(), 56);
        assert_eq!(p.ident(), 0x8445);
        assert_eq!(p.flags_frag(), FLAG_DF);
        assert_eq!(p.ttl(), 255);
        assert_eq!(p.protocol(), 112);
        assert_eq!(p.checksum(), 0x0c89);
        assert_eq!(p.src_addr(), Ipv4Addr::new(10, 99, 0, 2));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(224, 0, 0, 18));
        assert!(p.verify_checksum());
        assert_eq!(p.payload().len(), 36);
    }

    #[test]
    fn construct_matches_capture() {
        let mut h = Header::new(
            Ipv4Addr::new(10, 99, 0, 2),
            Ipv4Addr::new(224, 0, 0, 18),
            112,
            255,
            36,
        );
        h.ident = 0x8445;
        let mut buf = [0xa5u8; 20];
        h.emit(&mut Packet::new_unchecked(&mut buf[..]));
        assert_eq!(buf, HEADER);
    }

    #[test]
    fn parse() {
        let bytes = packet_with_payload();
        let (h, payload) = parse_header(&bytes).unwrap();
        assert_eq!(h.ihl_len, 20);
        assert_eq!(h.ttl, 255);
        assert_eq!(h.protocol, 112);
        assert_eq!(h.total_len, 56);
        assert_eq!(h.src, Ipv4Addr::new(10, 99, 0, 2));
        assert_eq!(h.dst, Ipv4Addr::new(224, 0, 0, 18));
        assert_eq!(payload.len(), 36);
    }

    #[test]
    fn trailing_bytes_after_total_len_are_ignored() {
        let mut bytes = packet_with_payload();
        bytes.extend_from_slice(&[0xee; 4]);
        let (_, payload) = parse_header(&bytes).unwrap();
        assert_eq!(payload, &[0u8; 36][..]);
    }

    #[test]
    fn options_are_skipped() {
        let mut h = Header::new(
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 2),
            112,
            255,
            4,
        );
        h.total_len = 28;
        let mut buf = vec![0u8; 28];
        h.emit(&mut Packet::new_unchecked(&mut buf[..]));
        let mut p = Packet::new_unchecked(&mut buf[..]);
        p.set_version_ihl(4, 6); // 4 bytes of (NOP) options, then 4 bytes of payload
        p.fill_checksum();
        buf[24..28].copy_from_slice(&[1, 2, 3, 4]);
        let (h, payload) = parse_header(&buf).unwrap();
        assert_eq!(h.ihl_len, 24);
        assert_eq!(payload, &[1, 2, 3, 4]);
    }

    #[test]
    fn truncated_and_malformed() {
        let bytes = packet_with_payload();
        assert_eq!(parse_header(&bytes[..19]).unwrap_err(), Error::Truncated);
        assert_eq!(parse_header(&bytes[..55]).unwrap_err(), Error::Truncated);
        let mut bad = bytes.clone();
        bad[0] = 0x65;
        assert_eq!(parse_header(&bad).unwrap_err(), Error::BadIpVersion(6));
        let mut bad = bytes.clone();
        bad[0] = 0x44;
        assert_eq!(parse_header(&bad).unwrap_err(), Error::BadHeaderLen(4));
        let mut bad = bytes.clone();
        bad[0] = 0x4f; // 60-byte header in a 56-byte packet
        assert_eq!(parse_header(&bad).unwrap_err(), Error::Truncated);
        let mut bad = bytes.clone();
        bad[2..4].copy_from_slice(&10u16.to_be_bytes());
        assert_eq!(parse_header(&bad).unwrap_err(), Error::BadLength);
    }

    #[test]
    fn bad_checksum() {
        let mut bytes = packet_with_payload();
        bytes[8] = 64; // TTL changed, checksum not refilled
        assert_eq!(parse_header(&bytes).unwrap_err(), Error::BadIpChecksum);
    }
}
