//! The CARP advertisement: a 36-byte header carried in IPv4 (protocol 112, to 224.0.0.18, TTL 255)
//! or IPv6 (next header 112, to ff02::12, hop limit 255), as FreeBSD, OpenBSD and ucarp send it.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Version| Type  |     VHID      |    AdvSkew    |    AuthLen    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |    Demote     |    AdvBase    |           Checksum            |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                      Counter (high word)                      |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                      Counter (low word)                       |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                                                               |
//! +                 HMAC-SHA1 digest (20 bytes)                   +
//! |                                                               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! * Version 2, type 1 (advertisement): the first byte is `0x21`.
//! * AuthLen is always 7 (counter + digest in 32-bit words); no receiver checks it.
//! * Demote is OpenBSD's group demotion counter; FreeBSD and ucarp send 0 and ignore it (so do we:
//!   our demotion travels in AdvSkew, capped at [`MAX_SKEW`], which every peer understands).
//! * The checksum is the Internet checksum of the 36-byte header alone (no pseudo-header).
//! * The digest is HMAC-SHA1 keyed with the raw password over version, type, vhid, the VHID's
//!   addresses (sorted) and the counter: see [`hmac`].

use std::net::{Ipv4Addr, Ipv6Addr};

use hmac::{KeyInit, Mac};

pub use super::Error;
use super::{checksum, ipv4};

mod field {
    use crate::wire::Field;
    pub const VER_TYPE: usize = 0;
    pub const VHID: usize = 1;
    pub const ADVSKEW: usize = 2;
    pub const AUTHLEN: usize = 3;
    pub const DEMOTE: usize = 4;
    pub const ADVBASE: usize = 5;
    pub const CHECKSUM: Field = 6..8;
    pub const COUNTER: Field = 8..16;
    pub const MD: Field = 16..36;
}

/// Length of the CARP header (`sizeof(struct carp_header)`).
pub const HEADER_LEN: usize = field::MD.end;
/// IP protocol number (`IPPROTO_CARP`, shared with VRRP).
pub const PROTOCOL: u8 = 112;
/// The TTL / hop limit every sender uses and every receiver requires (`CARP_DFLTTL`).
pub const TTL: u8 = 255;
/// `CARP_VERSION`.
pub const VERSION: u8 = 2;
/// `CARP_ADVERTISEMENT`, the only type.
pub const TYPE_ADVERTISEMENT: u8 = 1;
/// Counter + digest in 32-bit words.
pub const AUTHLEN: u8 = 7;
/// `CARP_MAXSKEW`: the cap on a demoted advskew.
pub const MAX_SKEW: u8 = 240;
/// OpenBSD's bow-out advert carries advbase 255 and advskew 255.
pub const BOW_OUT: u8 = 255;
/// The IPv4 group (`INADDR_CARP_GROUP`).
pub const MCAST_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// The IPv6 group.
pub const MCAST_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);
/// Length of the HMAC-SHA1 digest.
pub const MD_LEN: usize = 20;

/// A read/write view of a CARP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// A view without checks; accessors may panic on a buffer shorter than [`HEADER_LEN`].
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// A view after [`Packet::check_len`]: no accessor panics afterwards.
    pub fn new_checked(buffer: T) -> Result<Packet<T>, Error> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// The buffer must hold the whole 36-byte header. Longer buffers are accepted; the bytes
    /// after the header are ignored.
    pub fn check_len(&self) -> Result<(), Error> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_TYPE] >> 4
    }

    /// The type nibble (1 = advertisement).
    pub fn kind(&self) -> u8 {
        self.buffer.as_ref()[field::VER_TYPE] & 0x0f
    }

    pub fn vhid(&self) -> u8 {
        self.buffer.as_ref()[field::VHID]
    }

    pub fn advskew(&self) -> u8 {
        self.buffer.as_ref()[field::ADVSKEW]
    }

    pub fn authlen(&self) -> u8 {
        self.buffer.as_ref()[field::AUTHLEN]
    }

    /// OpenBSD's demote byte (`carp_pad1` on FreeBSD and ucarp).
    pub fn demote(&self) -> u8 {
        self.buffer.as_ref()[field::DEMOTE]
    }

    pub fn advbase(&self) -> u8 {
        self.buffer.as_ref()[field::ADVBASE]
    }

    pub fn checksum(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::CHECKSUM];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// The 64-bit counter (two big-endian 32-bit words, high word first, i.e. big-endian).
    pub fn counter(&self) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.buffer.as_ref()[field::COUNTER]);
        u64::from_be_bytes(b)
    }

    pub fn md(&self) -> [u8; MD_LEN] {
        let mut md = [0u8; MD_LEN];
        md.copy_from_slice(&self.buffer.as_ref()[field::MD]);
        md
    }

    /// Whether the Internet checksum over the 36-byte header verifies.
    pub fn verify_checksum(&self) -> bool {
        checksum::verify(&self.buffer.as_ref()[..HEADER_LEN])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_version_kind(&mut self, version: u8, kind: u8) {
        self.buffer.as_mut()[field::VER_TYPE] = (version << 4) | (kind & 0x0f);
    }

    pub fn set_vhid(&mut self, vhid: u8) {
        self.buffer.as_mut()[field::VHID] = vhid;
    }

    pub fn set_advskew(&mut self, advskew: u8) {
        self.buffer.as_mut()[field::ADVSKEW] = advskew;
    }

    pub fn set_authlen(&mut self, authlen: u8) {
        self.buffer.as_mut()[field::AUTHLEN] = authlen;
    }

    pub fn set_demote(&mut self, demote: u8) {
        self.buffer.as_mut()[field::DEMOTE] = demote;
    }

    pub fn set_advbase(&mut self, advbase: u8) {
        self.buffer.as_mut()[field::ADVBASE] = advbase;
    }

    pub fn set_checksum(&mut self, value: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&value.to_be_bytes());
    }

    pub fn set_counter(&mut self, counter: u64) {
        self.buffer.as_mut()[field::COUNTER].copy_from_slice(&counter.to_be_bytes());
    }

    pub fn set_md(&mut self, md: &[u8; MD_LEN]) {
        self.buffer.as_mut()[field::MD].copy_from_slice(md);
    }

    /// Computes and stores the checksum over the 36-byte header.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let value = checksum::checksum(&self.buffer.as_ref()[..HEADER_LEN]);
        self.set_checksum(value);
    }
}

/// An advertisement, owned and checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Repr {
    pub version: u8,
    /// The type nibble.
    pub kind: u8,
    pub vhid: u8,
    pub advskew: u8,
    pub authlen: u8,
    /// OpenBSD's demote byte; we send 0.
    pub demote: u8,
    pub advbase: u8,
    pub counter: u64,
    pub md: [u8; MD_LEN],
}

impl Repr {
    /// An unsigned advert (counter 0, digest zero) with version 2, type 1, authlen 7, demote 0.
    pub const fn advert(vhid: u8, advbase: u8, advskew: u8) -> Repr {
        Repr {
            version: VERSION,
            kind: TYPE_ADVERTISEMENT,
            vhid,
            advskew,
            authlen: AUTHLEN,
            demote: 0,
            advbase,
            counter: 0,
            md: [0; MD_LEN],
        }
    }

    /// Parses a checked view: the checksum must verify, the version must be 2 and the type 1
    /// (in that order, as FreeBSD checks). AuthLen and the demote byte are kept, not checked.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Packet<&T>) -> Result<Repr, Error> {
        packet.check_len()?;
        if !packet.verify_checksum() {
            return Err(Error::BadChecksum);
        }
        if packet.version() != VERSION {
            return Err(Error::BadVersion(packet.version()));
        }
        if packet.kind() != TYPE_ADVERTISEMENT {
            return Err(Error::BadType(packet.kind()));
        }
        Ok(Repr {
            version: packet.version(),
            kind: packet.kind(),
            vhid: packet.vhid(),
            advskew: packet.advskew(),
            authlen: packet.authlen(),
            demote: packet.demote(),
            advbase: packet.advbase(),
            counter: packet.counter(),
            md: packet.md(),
        })
    }

    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header and fills the checksum. The buffer must hold [`HEADER_LEN`] bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]> + ?Sized>(&self, packet: &mut Packet<&mut T>) {
        packet.set_version_kind(self.version, self.kind);
        packet.set_vhid(self.vhid);
        packet.set_advskew(self.advskew);
        packet.set_authlen(self.authlen);
        packet.set_demote(self.demote);
        packet.set_advbase(self.advbase);
        packet.set_counter(self.counter);
        packet.set_md(&self.md);
        packet.fill_checksum();
    }

    /// The 36 header bytes.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut buf = [0u8; HEADER_LEN];
        self.emit(&mut Packet::new_unchecked(&mut buf[..]));
        buf
    }

    /// The digest this advert should carry for the given key and addresses.
    pub fn expected_md(&self, key: &[u8], v4: &[Ipv4Addr], v6: &[Ipv6Addr]) -> [u8; MD_LEN] {
        hmac(
            key,
            self.version,
            self.kind,
            self.vhid,
            v4,
            v6,
            self.counter,
        )
    }

    /// Fills `md` from the current counter.
    pub fn sign(&mut self, key: &[u8], v4: &[Ipv4Addr], v6: &[Ipv6Addr]) {
        self.md = self.expected_md(key, v4, v6);
    }

    /// Whether `md` is right for the key and addresses (constant-time comparison).
    pub fn verify_md(&self, key: &[u8], v4: &[Ipv4Addr], v6: &[Ipv6Addr]) -> bool {
        ct_eq(&self.md, &self.expected_md(key, v4, v6))
    }

    /// Whether this is a bow-out advert (advbase 255, advskew 255).
    pub const fn is_bow_out(&self) -> bool {
        self.advbase == BOW_OUT && self.advskew == BOW_OUT
    }

    /// A whole IPv4 datagram (20-byte header, TTL 255, DF, TOS 0x10, protocol 112) carrying
    /// this advert, as ucarp and the BSDs put it on the wire.
    pub fn to_ipv4_bytes(
        &self,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        ident: u16,
    ) -> [u8; ipv4::HEADER_LEN + HEADER_LEN] {
        let mut buf = [0u8; ipv4::HEADER_LEN + HEADER_LEN];
        let mut header = ipv4::Header::new(src, dst, PROTOCOL, TTL, HEADER_LEN);
        header.ident = ident;
        header.emit(&mut ipv4::Packet::new_unchecked(&mut buf[..]));
        self.emit(&mut Packet::new_unchecked(&mut buf[ipv4::HEADER_LEN..]));
        buf
    }
}

/// Parses what a Linux raw IPv4 socket (protocol 112) hands up: the IP header (checked, see
/// [`ipv4::parse_header`]), protocol 112, TTL 255, then the CARP header ([`Repr::parse`]).
/// The destination is not checked here (multicast or a unicast peer): that is the caller's call.
pub fn parse_ipv4(bytes: &[u8]) -> Result<(ipv4::Header, Repr), Error> {
    let (header, payload) = ipv4::parse_header(bytes)?;
    if header.protocol != PROTOCOL {
        return Err(Error::BadProtocol(header.protocol));
    }
    if header.ttl != TTL {
        return Err(Error::BadTtl(header.ttl));
    }
    let packet = Packet::new_checked(payload)?;
    let repr = Repr::parse(&packet)?;
    Ok((header, repr))
}

/// Parses a CARP header received without its IP header (an IPv6 raw socket, which reports the
/// hop limit in a control message): the hop limit must be 255, then [`Repr::parse`].
pub fn parse_payload(payload: &[u8], hop_limit: u8) -> Result<Repr, Error> {
    if hop_limit != TTL {
        return Err(Error::BadTtl(hop_limit));
    }
    Repr::parse(&Packet::new_checked(payload)?)
}

/// The CARP digest, exactly as FreeBSD (`carp_hmac_prepare`/`carp_hmac_generate`), OpenBSD and
/// ucarp compute it: HMAC-SHA1 keyed with the raw password bytes over
/// `version | type | vhid | IPv4 addresses | IPv6 addresses | counter (8 bytes, big-endian)`.
///
/// The lists are sorted here as the BSD selection loop does: IPv4 ascending as numbers, IPv6
/// ascending as bytes, each address once; `0.0.0.0`, `255.255.255.255`, `::` and
/// `ffff:…:ffff` can never be selected by that loop and are left out. The KAME embedded scope
/// (bytes 2–3 of link-local and link/interface-local multicast addresses) is zeroed.
///
/// For ucarp interop the VHID must carry exactly one IPv4 address (ucarp's `--addr`) and no IPv6.
/// Note that BSD `ifconfig` and ucarp keep at most 19 bytes of the password: the caller decides
/// whether to truncate.
pub fn hmac(
    key: &[u8],
    version: u8,
    kind: u8,
    vhid: u8,
    v4: &[Ipv4Addr],
    v6: &[Ipv6Addr],
    counter: u64,
) -> [u8; MD_LEN] {
    // HMAC accepts keys of any length (longer ones are hashed first), so this cannot fail.
    let mut mac = match hmac::Hmac::<sha1::Sha1>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("hmac takes keys of any length"),
    };
    mac.update(&[version, kind, vhid]);
    for a in sorted_v4(v4) {
        mac.update(&a.octets());
    }
    for a in sorted_v6(v6) {
        mac.update(&a);
    }
    mac.update(&counter.to_be_bytes());
    let mut md = [0u8; MD_LEN];
    md.copy_from_slice(&mac.finalize().into_bytes());
    md
}

fn sorted_v4(v4: &[Ipv4Addr]) -> Vec<Ipv4Addr> {
    let mut list: Vec<Ipv4Addr> = v4
        .iter()
        .copied()
        .filter(|a| a.to_bits() != 0 && a.to_bits() != u32::MAX)
        .collect();
    list.sort_unstable();
    list.dedup();
    list
}

fn sorted_v6(v6: &[Ipv6Addr]) -> Vec<[u8; 16]> {
    let mut list: Vec<[u8; 16]> = v6
        .iter()
        .map(|a| {
            let mut o = a.octets();
            let link_local = o[0] == 0xfe && (o[1] & 0xc0) == 0x80;
            let local_mcast = o[0] == 0xff && matches!(o[1] & 0x0f, 0x01 | 0x02);
            if link_local || local_mcast {
                o[2] = 0;
                o[3] = 0;
            }
            o
        })
        .filter(|o| *o != [0u8; 16] && *o != [0xffu8; 16])
        .collect();
    list.sort_unstable();
    list.dedup();
    list
}

/// The longest password BSD `ifconfig ... pass` and ucarp keep (`strlcpy` into a 20-byte key).
pub const MAX_KEY_LEN: usize = 19;

/// The key bytes the BSD kernels and ucarp actually use for a configured password: up to the
/// first NUL, at most [`MAX_KEY_LEN`] bytes. A longer OPNsense password therefore only counts
/// by its first 19 bytes on a FreeBSD peer; we do the same so both ends agree.
pub fn bsd_key(password: &[u8]) -> &[u8] {
    let end = password
        .iter()
        .position(|b| *b == 0)
        .unwrap_or(password.len())
        .min(MAX_KEY_LEN);
    &password[..end]
}

/// Compares two digests in time independent of where they differ.
pub fn ct_eq(a: &[u8; MD_LEN], b: &[u8; MD_LEN]) -> bool {
    let diff = a
        .iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
pub(crate) mod tests;
