//! ctnetlink message encoding and decoding (pure: no sockets), and the one nf_tables message
//! tandem sends itself (`GETGEN`, the ruleset generation), which shares nfnetlink's framing.
//!
//! Layout of one message:
//! ```text
//! nlmsghdr { u32 len; u16 type; u16 flags; u32 seq; u32 pid }   (host order)
//! nfgenmsg { u8 family; u8 version = 0; be16 res_id = 0 }
//! nlattr*  { u16 len; u16 type; payload; pad to 4 }            (host order header)
//! ```
//! Attribute payloads are big-endian (network order) for ctnetlink.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{Entry, Error, Tuple};

pub const NETLINK_NETFILTER: isize = 12;

pub const NLMSG_HDR_LEN: usize = 16;
const NFGEN_LEN: usize = 4;

pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
pub const NLMSG_OVERRUN: u16 = 4;

pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_MULTI: u16 = 0x2;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_DUMP: u16 = 0x300;
pub const NLM_F_EXCL: u16 = 0x200;
pub const NLM_F_CREATE: u16 = 0x400;

const SUBSYS_CTNETLINK: u16 = 1;
pub const MSG_CT_NEW: u16 = SUBSYS_CTNETLINK << 8;
pub const MSG_CT_GET: u16 = (SUBSYS_CTNETLINK << 8) | 1;
pub const MSG_CT_DELETE: u16 = (SUBSYS_CTNETLINK << 8) | 2;
pub const MSG_CT_GET_STATS: u16 = (SUBSYS_CTNETLINK << 8) | 5;

const SUBSYS_NFTABLES: u16 = 10;
/// nf_tables: the ruleset generation, asked (`NFT_MSG_GETGEN`) and answered (`NFT_MSG_NEWGEN`).
pub const MSG_NFT_GETGEN: u16 = (SUBSYS_NFTABLES << 8) | 16;
pub const MSG_NFT_NEWGEN: u16 = (SUBSYS_NFTABLES << 8) | 15;
const NFTA_GEN_ID: u16 = 1;

/// Multicast groups (NETLINK_ADD_MEMBERSHIP numbers).
pub const GRP_NEW: u32 = 1;
pub const GRP_UPDATE: u32 = 2;
pub const GRP_DESTROY: u32 = 3;

const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;

const AF_UNSPEC: u8 = 0;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

// enum ctattr_type
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_STATUS: u16 = 3;
const CTA_PROTOINFO: u16 = 4;
const CTA_NAT_SRC: u16 = 6;
const CTA_TIMEOUT: u16 = 7;
const CTA_MARK: u16 = 8;
const CTA_ID: u16 = 12;
const CTA_NAT_DST: u16 = 13;
const CTA_ZONE: u16 = 18;
const CTA_LABELS: u16 = 22;
// enum ctattr_tuple
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
// enum ctattr_ip
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
// enum ctattr_l4proto
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
const CTA_PROTO_ICMP_ID: u16 = 4;
const CTA_PROTO_ICMP_TYPE: u16 = 5;
const CTA_PROTO_ICMP_CODE: u16 = 6;
const CTA_PROTO_ICMPV6_ID: u16 = 7;
const CTA_PROTO_ICMPV6_TYPE: u16 = 8;
const CTA_PROTO_ICMPV6_CODE: u16 = 9;
// enum ctattr_protoinfo / ctattr_protoinfo_tcp
const CTA_PROTOINFO_TCP: u16 = 1;
const CTA_PROTOINFO_TCP_STATE: u16 = 1;
const CTA_PROTOINFO_TCP_WSCALE_ORIGINAL: u16 = 2;
const CTA_PROTOINFO_TCP_WSCALE_REPLY: u16 = 3;
const CTA_PROTOINFO_TCP_FLAGS_ORIGINAL: u16 = 4;
const CTA_PROTOINFO_TCP_FLAGS_REPLY: u16 = 5;
// enum ctattr_nat / ctattr_protonat
const CTA_NAT_V4_MINIP: u16 = 1;
const CTA_NAT_V4_MAXIP: u16 = 2;
const CTA_NAT_PROTO: u16 = 3;
const CTA_NAT_V6_MINIP: u16 = 4;
const CTA_NAT_V6_MAXIP: u16 = 5;
const CTA_PROTONAT_PORT_MIN: u16 = 1;
const CTA_PROTONAT_PORT_MAX: u16 = 2;
// enum ctattr_stats_global
const CTA_STATS_GLOBAL_ENTRIES: u16 = 1;

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_ICMPV6: u8 = 58;

/// Status bits (nf_conntrack_common.h): one definition, shared with the sync wire format.
pub use crate::wire::pfsync::status;

/// TCP conntrack flag bits (nf_conntrack_tcp.h).
pub mod tcp_flag {
    pub const WINDOW_SCALE: u8 = 0x01;
    pub const SACK_PERM: u8 = 0x02;
    pub const BE_LIBERAL: u8 = 0x08;
}

// ---------------------------------------------------------------- encoding

/// Appends netlink messages to one buffer (a batch that one `send` carries).
#[derive(Default)]
pub struct Writer {
    pub buf: Vec<u8>,
    nests: Vec<usize>,
    msg_start: usize,
}

fn pad4(n: usize) -> usize {
    (n + 3) & !3
}

impl Writer {
    pub fn new() -> Writer {
        Writer::default()
    }

    pub fn begin(&mut self, ty: u16, flags: u16, seq: u32, family: u8) {
        self.msg_start = self.buf.len();
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        self.buf.extend_from_slice(&[family, 0, 0, 0]);
    }

    pub fn end(&mut self) {
        let len = (self.buf.len() - self.msg_start) as u32;
        self.buf[self.msg_start..self.msg_start + 4].copy_from_slice(&len.to_ne_bytes());
    }

    /// Sets or clears `NLM_F_ACK` on the last message begun.
    pub fn set_ack(&mut self, ack: bool) {
        let at = self.msg_start + 6;
        if let Some(f) = self.buf.get_mut(at..at + 2) {
            let mut flags = u16::from_ne_bytes([f[0], f[1]]);
            if ack {
                flags |= NLM_F_ACK;
            } else {
                flags &= !NLM_F_ACK;
            }
            f.copy_from_slice(&flags.to_ne_bytes());
        }
    }

    fn attr(&mut self, ty: u16, payload: &[u8]) {
        let len = (4 + payload.len()) as u16;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        let padded = pad4(self.buf.len());
        self.buf.resize(padded, 0);
    }

    fn u8(&mut self, ty: u16, v: u8) {
        self.attr(ty, &[v]);
    }
    fn be16(&mut self, ty: u16, v: u16) {
        self.attr(ty, &v.to_be_bytes());
    }
    fn be32(&mut self, ty: u16, v: u32) {
        self.attr(ty, &v.to_be_bytes());
    }

    fn nest(&mut self, ty: u16) {
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&[0, 0]);
        self.buf
            .extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
    }

    fn unnest(&mut self) {
        if let Some(start) = self.nests.pop() {
            let len = (self.buf.len() - start) as u16;
            self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        }
    }

    fn tuple(&mut self, ty: u16, t: &Tuple) {
        self.nest(ty);
        self.nest(CTA_TUPLE_IP);
        match (t.src, t.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                self.attr(CTA_IP_V4_SRC, &s.octets());
                self.attr(CTA_IP_V4_DST, &d.octets());
            }
            (s, d) => {
                self.attr(CTA_IP_V6_SRC, &v6(s).octets());
                self.attr(CTA_IP_V6_DST, &v6(d).octets());
            }
        }
        self.unnest();
        self.nest(CTA_TUPLE_PROTO);
        self.u8(CTA_PROTO_NUM, t.proto);
        match t.proto {
            IPPROTO_ICMP => {
                self.be16(CTA_PROTO_ICMP_ID, t.icmp_id);
                self.u8(CTA_PROTO_ICMP_TYPE, t.icmp_type);
                self.u8(CTA_PROTO_ICMP_CODE, t.icmp_code);
            }
            IPPROTO_ICMPV6 => {
                self.be16(CTA_PROTO_ICMPV6_ID, t.icmp_id);
                self.u8(CTA_PROTO_ICMPV6_TYPE, t.icmp_type);
                self.u8(CTA_PROTO_ICMPV6_CODE, t.icmp_code);
            }
            _ => {
                self.be16(CTA_PROTO_SRC_PORT, t.sport);
                self.be16(CTA_PROTO_DST_PORT, t.dport);
            }
        }
        self.unnest();
        self.unnest();
    }

    fn nat(&mut self, ty: u16, addr: IpAddr, port: Option<u16>) {
        self.nest(ty);
        match addr {
            IpAddr::V4(a) => {
                self.attr(CTA_NAT_V4_MINIP, &a.octets());
                self.attr(CTA_NAT_V4_MAXIP, &a.octets());
            }
            IpAddr::V6(a) => {
                self.attr(CTA_NAT_V6_MINIP, &a.octets());
                self.attr(CTA_NAT_V6_MAXIP, &a.octets());
            }
        }
        if let Some(p) = port {
            self.nest(CTA_NAT_PROTO);
            self.be16(CTA_PROTONAT_PORT_MIN, p);
            self.be16(CTA_PROTONAT_PORT_MAX, p);
            self.unnest();
        }
        self.unnest();
    }

    fn protoinfo_tcp(&mut self, e: &Entry, be_liberal: bool) {
        if e.orig.proto != IPPROTO_TCP {
            return;
        }
        let (fo, fr) = e.tcp_flags.unwrap_or((0, 0));
        let extra = if be_liberal { tcp_flag::BE_LIBERAL } else { 0 };
        let (fo, fr) = (fo | extra, fr | extra);
        if e.tcp_state.is_none() && fo == 0 && fr == 0 {
            return;
        }
        self.nest(CTA_PROTOINFO);
        self.nest(CTA_PROTOINFO_TCP);
        if let Some(s) = e.tcp_state {
            self.u8(CTA_PROTOINFO_TCP_STATE, s);
        }
        if let Some((wo, wr)) = e.tcp_wscale {
            self.u8(CTA_PROTOINFO_TCP_WSCALE_ORIGINAL, wo);
            self.u8(CTA_PROTOINFO_TCP_WSCALE_REPLY, wr);
        }
        // struct nf_ct_tcp_flags { u8 flags; u8 mask; }: set exactly these bits.
        self.attr(CTA_PROTOINFO_TCP_FLAGS_ORIGINAL, &[fo, fo]);
        self.attr(CTA_PROTOINFO_TCP_FLAGS_REPLY, &[fr, fr]);
        self.unnest();
        self.unnest();
    }

    /// `IPCTNL_MSG_CT_NEW` with `NLM_F_CREATE|NLM_F_EXCL`: orig, the un-NATed inverse as reply,
    /// NAT ranges, timeout, status, mark, TCP protoinfo with BE_LIBERAL.
    pub fn create(&mut self, e: &Entry, seq: u32) {
        self.begin(
            MSG_CT_NEW,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
            seq,
            family_of(&e.orig),
        );
        self.tuple(CTA_TUPLE_ORIG, &e.orig);
        self.tuple(CTA_TUPLE_REPLY, &e.orig.inverse());
        let nat = e.nat();
        if let Some((a, p)) = nat.snat {
            self.nat(CTA_NAT_SRC, a, p);
        }
        if let Some((a, p)) = nat.dnat {
            self.nat(CTA_NAT_DST, a, p);
        }
        if e.zone != 0 {
            self.be16(CTA_ZONE, e.zone);
        }
        self.be32(CTA_TIMEOUT, e.timeout.max(1));
        // CONFIRMED is required; SEEN_REPLY and ASSURED may be set; NAT bits are the kernel's.
        let st = status::CONFIRMED | (e.status & (status::SEEN_REPLY | status::ASSURED));
        self.be32(CTA_STATUS, st);
        self.be32(CTA_MARK, e.mark);
        if e.labels != 0 {
            self.attr(CTA_LABELS, &labels_bytes(e.labels));
        }
        self.protoinfo_tcp(e, true);
        self.end();
    }

    /// `IPCTNL_MSG_CT_NEW` without `NLM_F_CREATE`: timeout, mark, TCP state. NAT can not change.
    pub fn update(&mut self, e: &Entry, seq: u32) {
        self.begin(
            MSG_CT_NEW,
            NLM_F_REQUEST | NLM_F_ACK,
            seq,
            family_of(&e.orig),
        );
        self.tuple(CTA_TUPLE_ORIG, &e.orig);
        if e.zone != 0 {
            self.be16(CTA_ZONE, e.zone);
        }
        self.be32(CTA_TIMEOUT, e.timeout.max(1));
        // Status bits can only be set, never cleared (EBUSY); only send the full set.
        if e.status & status::ASSURED != 0 {
            self.be32(
                CTA_STATUS,
                status::CONFIRMED | status::SEEN_REPLY | status::ASSURED,
            );
        }
        self.be32(CTA_MARK, e.mark);
        self.protoinfo_tcp(e, true);
        self.end();
    }

    pub fn delete(&mut self, key: &Tuple, zone: u16, seq: u32) {
        self.begin(
            MSG_CT_DELETE,
            NLM_F_REQUEST | NLM_F_ACK,
            seq,
            family_of(key),
        );
        self.tuple(CTA_TUPLE_ORIG, key);
        if zone != 0 {
            self.be16(CTA_ZONE, zone);
        }
        self.end();
    }

    pub fn dump(&mut self, seq: u32) {
        self.begin(MSG_CT_GET, NLM_F_REQUEST | NLM_F_DUMP, seq, AF_UNSPEC);
        self.end();
    }

    pub fn stats(&mut self, seq: u32) {
        self.begin(MSG_CT_GET_STATS, NLM_F_REQUEST | NLM_F_ACK, seq, AF_UNSPEC);
        self.end();
    }

    /// Asks for the nftables ruleset generation (answered by one `NFT_MSG_NEWGEN`).
    pub fn getgen(&mut self, seq: u32) {
        self.begin(MSG_NFT_GETGEN, NLM_F_REQUEST, seq, AF_UNSPEC);
        self.end();
    }
}

fn v6(a: IpAddr) -> Ipv6Addr {
    match a {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    }
}

fn family_of(t: &Tuple) -> u8 {
    if t.src.is_ipv4() && t.dst.is_ipv4() {
        AF_INET
    } else {
        AF_INET6
    }
}

// ---------------------------------------------------------------- decoding

/// One netlink message borrowed from a receive buffer.
#[derive(Debug, Clone, Copy)]
pub struct Msg<'a> {
    pub ty: u16,
    pub flags: u16,
    pub seq: u32,
    pub pid: u32,
    /// Everything after the nlmsghdr.
    pub payload: &'a [u8],
}

/// Iterates the netlink messages of one datagram; a bad length ends it with an error.
pub struct Msgs<'a> {
    rest: &'a [u8],
}

pub fn messages(buf: &[u8]) -> Msgs<'_> {
    Msgs { rest: buf }
}

fn rd_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn rd_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

impl<'a> Iterator for Msgs<'a> {
    type Item = Result<Msg<'a>, Error>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let b = self.rest;
        let parsed = (|| {
            let len = rd_u32(b, 0)? as usize;
            if len < NLMSG_HDR_LEN || len > b.len() {
                return None;
            }
            Some((
                len,
                Msg {
                    ty: rd_u16(b, 4)?,
                    flags: rd_u16(b, 6)?,
                    seq: rd_u32(b, 8)?,
                    pid: rd_u32(b, 12)?,
                    payload: &b[NLMSG_HDR_LEN..len],
                },
            ))
        })();
        match parsed {
            Some((len, m)) => {
                self.rest = b.get(pad4(len)..).unwrap_or(&[]);
                Some(Ok(m))
            }
            None => {
                self.rest = &[];
                Some(Err(Error::Decode(format!(
                    "bad netlink message header ({} bytes left)",
                    b.len()
                ))))
            }
        }
    }
}

/// An `NLMSG_ERROR` payload: the errno (0 = ack) and the seq of the request it answers.
pub fn parse_error(m: &Msg) -> Result<(i32, u32), Error> {
    let code = rd_u32(m.payload, 0).ok_or_else(|| Error::Decode("short nlmsgerr".into()))? as i32;
    let seq = rd_u32(m.payload, 4 + 8).ok_or_else(|| Error::Decode("short nlmsgerr".into()))?;
    Ok((code.checked_neg().unwrap_or(i32::MAX), seq))
}

/// Iterator over a buffer of attributes: `(type without flags, payload)`.
struct Attrs<'a> {
    rest: &'a [u8],
}

fn attrs(b: &[u8]) -> Attrs<'_> {
    Attrs { rest: b }
}

impl<'a> Iterator for Attrs<'a> {
    type Item = Result<(u16, &'a [u8]), Error>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.len() < 4 {
            // Trailing bytes shorter than a header are padding at most.
            return if self.rest.iter().all(|&x| x == 0) {
                None
            } else {
                self.rest = &[];
                Some(Err(Error::Decode("truncated attribute header".into())))
            };
        }
        let b = self.rest;
        let len = rd_u16(b, 0).unwrap_or(0) as usize;
        let ty = rd_u16(b, 2).unwrap_or(0) & NLA_TYPE_MASK;
        if len < 4 || len > b.len() {
            self.rest = &[];
            return Some(Err(Error::Decode(format!(
                "attribute {ty}: length {len} outside 4..={}",
                b.len()
            ))));
        }
        self.rest = b.get(pad4(len)..).unwrap_or(&[]);
        Some(Ok((ty, &b[4..len])))
    }
}

fn be16(ty: &str, p: &[u8]) -> Result<u16, Error> {
    p.get(..2)
        .and_then(|x| x.try_into().ok())
        .map(u16::from_be_bytes)
        .ok_or_else(|| Error::Decode(format!("{ty}: {} bytes, want 2", p.len())))
}
fn be32(ty: &str, p: &[u8]) -> Result<u32, Error> {
    p.get(..4)
        .and_then(|x| x.try_into().ok())
        .map(u32::from_be_bytes)
        .ok_or_else(|| Error::Decode(format!("{ty}: {} bytes, want 4", p.len())))
}
fn u8_(ty: &str, p: &[u8]) -> Result<u8, Error> {
    p.first()
        .copied()
        .ok_or_else(|| Error::Decode(format!("{ty}: empty")))
}
fn ip4(ty: &str, p: &[u8]) -> Result<IpAddr, Error> {
    let o: [u8; 4] = p
        .get(..4)
        .and_then(|x| x.try_into().ok())
        .ok_or_else(|| Error::Decode(format!("{ty}: {} bytes, want 4", p.len())))?;
    Ok(IpAddr::V4(Ipv4Addr::from(o)))
}
fn ip6(ty: &str, p: &[u8]) -> Result<IpAddr, Error> {
    let o: [u8; 16] = p
        .get(..16)
        .and_then(|x| x.try_into().ok())
        .ok_or_else(|| Error::Decode(format!("{ty}: {} bytes, want 16", p.len())))?;
    Ok(IpAddr::V6(Ipv6Addr::from(o)))
}

fn parse_tuple(b: &[u8]) -> Result<(Tuple, Option<u16>), Error> {
    let mut src = None;
    let mut dst = None;
    let mut proto = None;
    let mut zone = None;
    let mut t = Tuple::default();
    for a in attrs(b) {
        let (ty, p) = a?;
        match ty {
            CTA_TUPLE_IP => {
                for a in attrs(p) {
                    let (ty, p) = a?;
                    match ty {
                        CTA_IP_V4_SRC => src = Some(ip4("ip.v4src", p)?),
                        CTA_IP_V4_DST => dst = Some(ip4("ip.v4dst", p)?),
                        CTA_IP_V6_SRC => src = Some(ip6("ip.v6src", p)?),
                        CTA_IP_V6_DST => dst = Some(ip6("ip.v6dst", p)?),
                        _ => {}
                    }
                }
            }
            CTA_TUPLE_PROTO => {
                for a in attrs(p) {
                    let (ty, p) = a?;
                    match ty {
                        CTA_PROTO_NUM => proto = Some(u8_("proto.num", p)?),
                        CTA_PROTO_SRC_PORT => t.sport = be16("proto.sport", p)?,
                        CTA_PROTO_DST_PORT => t.dport = be16("proto.dport", p)?,
                        CTA_PROTO_ICMP_ID | CTA_PROTO_ICMPV6_ID => {
                            t.icmp_id = be16("proto.icmp_id", p)?
                        }
                        CTA_PROTO_ICMP_TYPE | CTA_PROTO_ICMPV6_TYPE => {
                            t.icmp_type = u8_("proto.icmp_type", p)?
                        }
                        CTA_PROTO_ICMP_CODE | CTA_PROTO_ICMPV6_CODE => {
                            t.icmp_code = u8_("proto.icmp_code", p)?
                        }
                        _ => {}
                    }
                }
            }
            3 /* CTA_TUPLE_ZONE */ => zone = Some(be16("tuple.zone", p)?),
            _ => {}
        }
    }
    t.src = src.ok_or_else(|| Error::Decode("tuple without source address".into()))?;
    t.dst = dst.ok_or_else(|| Error::Decode("tuple without destination address".into()))?;
    t.proto = proto.ok_or_else(|| Error::Decode("tuple without protocol".into()))?;
    Ok((t, zone))
}

fn parse_protoinfo(b: &[u8], e: &mut Entry) -> Result<(), Error> {
    for a in attrs(b) {
        let (ty, p) = a?;
        if ty != CTA_PROTOINFO_TCP {
            continue;
        }
        let (mut wo, mut wr, mut fo, mut fr) = (None, None, None, None);
        for a in attrs(p) {
            let (ty, p) = a?;
            match ty {
                CTA_PROTOINFO_TCP_STATE => e.tcp_state = Some(u8_("tcp.state", p)?),
                CTA_PROTOINFO_TCP_WSCALE_ORIGINAL => wo = Some(u8_("tcp.wscale_orig", p)?),
                CTA_PROTOINFO_TCP_WSCALE_REPLY => wr = Some(u8_("tcp.wscale_reply", p)?),
                CTA_PROTOINFO_TCP_FLAGS_ORIGINAL => fo = Some(u8_("tcp.flags_orig", p)?),
                CTA_PROTOINFO_TCP_FLAGS_REPLY => fr = Some(u8_("tcp.flags_reply", p)?),
                _ => {}
            }
        }
        if let (Some(a), Some(b)) = (wo, wr) {
            e.tcp_wscale = Some((a, b));
        }
        if fo.is_some() || fr.is_some() {
            e.tcp_flags = Some((fo.unwrap_or(0), fr.unwrap_or(0)));
        }
    }
    Ok(())
}

/// `CTA_LABELS` as the kernel keeps it: an array of two `unsigned long` in host order, bit `n`
/// of the array being label `n` (what `ct label n` in nft matches).
fn labels_bytes(labels: u128) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&(labels as u64).to_ne_bytes());
    out[8..].copy_from_slice(&((labels >> 64) as u64).to_ne_bytes());
    out
}

/// The inverse of [`labels_bytes`]; a shorter attribute holds the low labels (the kernel sends
/// all 16 bytes).
fn parse_labels(p: &[u8]) -> Result<u128, Error> {
    if p.len() > 16 || !p.len().is_multiple_of(4) {
        return Err(Error::Decode(format!(
            "labels: {} bytes, want a multiple of 4 up to 16",
            p.len()
        )));
    }
    let mut b = [0u8; 16];
    b[..p.len()].copy_from_slice(p);
    let lo = u64::from_ne_bytes(b[..8].try_into().unwrap_or_default());
    let hi = u64::from_ne_bytes(b[8..].try_into().unwrap_or_default());
    Ok(u128::from(lo) | (u128::from(hi) << 64))
}

/// Decodes the payload (nfgenmsg + attributes) of a `CT_NEW`/`CT_DELETE` message.
pub fn parse_entry(payload: &[u8]) -> Result<Entry, Error> {
    let body = payload
        .get(NFGEN_LEN..)
        .ok_or_else(|| Error::Decode(format!("nfgenmsg: {} bytes, want 4", payload.len())))?;
    let mut orig = None;
    let mut reply = None;
    let mut e = Entry::default();
    for a in attrs(body) {
        let (ty, p) = a?;
        match ty {
            CTA_TUPLE_ORIG => orig = Some(parse_tuple(p)?),
            CTA_TUPLE_REPLY => reply = Some(parse_tuple(p)?),
            CTA_STATUS => e.status = be32("status", p)?,
            CTA_PROTOINFO => parse_protoinfo(p, &mut e)?,
            CTA_TIMEOUT => e.timeout = be32("timeout", p)?,
            CTA_MARK => e.mark = be32("mark", p)?,
            CTA_ID => e.id = Some(be32("id", p)?),
            CTA_ZONE => e.zone = be16("zone", p)?,
            CTA_LABELS => e.labels = parse_labels(p)?,
            _ => {}
        }
    }
    let (o, oz) = orig.ok_or_else(|| Error::Decode("entry without original tuple".into()))?;
    let (r, _) = reply.ok_or_else(|| Error::Decode("entry without reply tuple".into()))?;
    if e.zone == 0 {
        e.zone = oz.unwrap_or(0);
    }
    e.orig = o;
    e.reply = r;
    Ok(e)
}

/// Decodes the answer to [`Writer::getgen`] (one datagram): the namespace's nftables ruleset
/// generation, which the kernel bumps with every committed ruleset change, whoever made it.
pub fn parse_generation(buf: &[u8]) -> Result<u32, Error> {
    for m in messages(buf) {
        let m = m?;
        match m.ty {
            NLMSG_ERROR => {
                let (code, _) = parse_error(&m)?;
                if code != 0 {
                    return Err(Error::Netlink { code, op: "getgen" });
                }
            }
            MSG_NFT_NEWGEN => {
                let body = m
                    .payload
                    .get(NFGEN_LEN..)
                    .ok_or_else(|| Error::Decode("newgen: short nfgenmsg".into()))?;
                for a in attrs(body) {
                    let (ty, p) = a?;
                    if ty == NFTA_GEN_ID {
                        return be32("gen.id", p);
                    }
                }
                return Err(Error::Decode("newgen without a generation id".into()));
            }
            _ => {}
        }
    }
    Err(Error::Decode("no generation in the answer".into()))
}

/// Decodes the payload of a `GET_STATS` answer: the number of entries.
pub fn parse_count(payload: &[u8]) -> Result<u32, Error> {
    let body = payload
        .get(NFGEN_LEN..)
        .ok_or_else(|| Error::Decode("stats: short nfgenmsg".into()))?;
    for a in attrs(body) {
        let (ty, p) = a?;
        if ty == CTA_STATS_GLOBAL_ENTRIES {
            return be32("stats.entries", p);
        }
    }
    Err(Error::Decode("stats without entry count".into()))
}
