use std::net::{Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use sha1::{Digest, Sha1};

use super::*;

// A real advert from Debian's ucarp (1.5.2+git20192404.1a9aaf7), captured on this machine with
//
//   ip netns add carpcap-$$; ip -n carpcap-$$ link add veth0 type veth peer name veth1
//   ip -n carpcap-$$ addr add 10.99.0.2/24 dev veth0; ip -n carpcap-$$ link set veth0 up; ... veth1 up
//   ip netns exec carpcap-$$ tcpdump -i veth1 -w ucarp.pcap -c 3 'ip proto 112' &
//   ip netns exec carpcap-$$ ucarp -i veth0 -s 10.99.0.2 -v 7 -p secret -a 10.99.0.100 -b 1 -k 0 \
//       --upscript=/bin/true --downscript=/bin/true -f none
//   tcpdump -r ucarp.pcap -xx;  ip netns del carpcap-$$
//
// (the first advert after ucarp went MASTER).
//
// The other direction was checked live the same way (not a unit test: it needs root and ucarp):
// `Repr::advert(7, 1, 0)` signed here with b"secret" over 10.99.0.100 and sent with
// `to_ipv4_bytes` from 10.99.0.3 every 0.5 s (python raw socket, IP_HDRINCL, on veth1) kept
// `ucarp -v 7 -p secret -a 10.99.0.100 -b 1 -k 100` in BACKUP for 9 s (12 adverts accepted);
// the same advert signed with b"wrong" gave ucarp's "Bad digest" and ucarp went MASTER. Ethernet: 01:00:5e:00:00:12 <- 00:00:5e:00:00:07,
// type 0800 (ucarp's source MAC is 00:00:5e:00:00:<vhid>). Below: the IPv4 datagram.
pub(crate) static UCARP_IP: [u8; 56] = [
    // IPv4: tos 0x10, total 56, id 0x8445, DF, ttl 255, proto 112, 10.99.0.2 -> 224.0.0.18
    0x45, 0x10, 0x00, 0x38, 0x84, 0x45, 0x40, 0x00, 0xff, 0x70, 0x0c, 0x89, 0x0a, 0x63, 0x00, 0x02,
    0xe0, 0x00, 0x00, 0x12, //
    // CARP: v2 type 1, vhid 7, advskew 0, authlen 7, demote 0, advbase 1, cksum 0x5bdb
    0x21, 0x07, 0x00, 0x07, 0x00, 0x01, 0x5b, 0xdb, //
    // counter
    0x89, 0x47, 0x09, 0xc1, 0x98, 0x0d, 0xd8, 0x67, //
    // md
    0x34, 0xdd, 0x8e, 0xe9, 0xb6, 0x83, 0xce, 0xef, 0x73, 0x88, 0x88, 0xf2, 0x1a, 0x95, 0xa5, 0xc8,
    0xbd, 0xf6, 0xbb, 0x8d,
];

const UCARP_COUNTER: u64 = 0x8947_09c1_980d_d867;
const UCARP_MD: [u8; 20] = [
    0x34, 0xdd, 0x8e, 0xe9, 0xb6, 0x83, 0xce, 0xef, 0x73, 0x88, 0x88, 0xf2, 0x1a, 0x95, 0xa5, 0xc8,
    0xbd, 0xf6, 0xbb, 0x8d,
];

fn carp_bytes() -> &'static [u8] {
    &UCARP_IP[20..]
}

fn ucarp_repr() -> Repr {
    Repr {
        version: 2,
        kind: 1,
        vhid: 7,
        advskew: 0,
        authlen: 7,
        demote: 0,
        advbase: 1,
        counter: UCARP_COUNTER,
        md: UCARP_MD,
    }
}

#[test]
fn deconstruct() {
    let p = Packet::new_checked(carp_bytes()).unwrap();
    assert_eq!(p.version(), 2);
    assert_eq!(p.kind(), 1);
    assert_eq!(p.vhid(), 7);
    assert_eq!(p.advskew(), 0);
    assert_eq!(p.authlen(), 7);
    assert_eq!(p.demote(), 0);
    assert_eq!(p.advbase(), 1);
    assert_eq!(p.checksum(), 0x5bdb);
    assert_eq!(p.counter(), UCARP_COUNTER);
    assert_eq!(p.md(), UCARP_MD);
    assert!(p.verify_checksum());
}

#[test]
fn construct() {
    let mut buf = [0xa5u8; HEADER_LEN];
    let mut p = Packet::new_unchecked(&mut buf[..]);
    p.set_version_kind(2, 1);
    p.set_vhid(7);
    p.set_advskew(0);
    p.set_authlen(7);
    p.set_demote(0);
    p.set_advbase(1);
    p.set_counter(UCARP_COUNTER);
    p.set_md(&UCARP_MD);
    p.fill_checksum();
    assert_eq!(&buf[..], carp_bytes());
}

#[test]
fn parse() {
    let p = Packet::new_checked(carp_bytes()).unwrap();
    assert_eq!(Repr::parse(&p).unwrap(), ucarp_repr());
}

#[test]
fn emit() {
    let repr = ucarp_repr();
    assert_eq!(repr.buffer_len(), HEADER_LEN);
    let mut buf = [0xa5u8; HEADER_LEN];
    repr.emit(&mut Packet::new_unchecked(&mut buf[..]));
    assert_eq!(&buf[..], carp_bytes());
    assert_eq!(&repr.to_bytes()[..], carp_bytes());
}

#[test]
fn truncated() {
    for len in 0..HEADER_LEN {
        assert_eq!(
            Packet::new_checked(&carp_bytes()[..len]).unwrap_err(),
            Error::Truncated
        );
    }
    assert_eq!(parse_ipv4(&UCARP_IP[..55]).unwrap_err(), Error::Truncated);
}

#[test]
fn bad_checksum() {
    let mut bytes = carp_bytes().to_vec();
    bytes[2] = 100; // advskew changed, checksum kept
    let p = Packet::new_checked(&bytes[..]).unwrap();
    assert!(!p.verify_checksum());
    assert_eq!(Repr::parse(&p).unwrap_err(), Error::BadChecksum);
}

#[test]
fn bad_version_and_type() {
    let mut repr = ucarp_repr();
    repr.version = 3;
    let bytes = repr.to_bytes();
    assert_eq!(
        Repr::parse(&Packet::new_checked(&bytes[..]).unwrap()).unwrap_err(),
        Error::BadVersion(3)
    );
    let mut repr = ucarp_repr();
    repr.kind = 2;
    let bytes = repr.to_bytes();
    assert_eq!(
        Repr::parse(&Packet::new_checked(&bytes[..]).unwrap()).unwrap_err(),
        Error::BadType(2)
    );
}

/// The byte-exact vector from a real ucarp: IP header as ucarp sends it, fields as configured,
/// checksum valid, and our HMAC equals ucarp's.
#[test]
fn ucarp_capture() {
    let (ip, repr) = parse_ipv4(&UCARP_IP).unwrap();
    assert_eq!(ip.ttl, 255);
    assert_eq!(ip.protocol, 112);
    assert_eq!(ip.dst, Ipv4Addr::new(224, 0, 0, 18));
    assert_eq!(ip.dst, MCAST_V4);
    assert_eq!(ip.src, Ipv4Addr::new(10, 99, 0, 2));
    assert_eq!(ip.total_len, 56);
    assert_eq!(ip.tos, 0x10);
    assert_eq!(ip.flags_frag, ipv4::FLAG_DF);
    assert_eq!(repr, ucarp_repr());
    assert!(Packet::new_checked(carp_bytes()).unwrap().verify_checksum());

    let vip = [Ipv4Addr::new(10, 99, 0, 100)];
    assert_eq!(hmac(b"secret", 2, 1, 7, &vip, &[], repr.counter), UCARP_MD);
    assert!(repr.verify_md(b"secret", &vip, &[]));
    assert!(!repr.verify_md(b"secreT", &vip, &[]));
    assert!(!repr.verify_md(b"secret", &[Ipv4Addr::new(10, 99, 0, 101)], &[]));
    assert!(!repr.verify_md(b"secret", &vip, &["fe80::1".parse().unwrap()]));

    // Rebuilding the whole datagram from the Repr gives the captured bytes.
    assert_eq!(repr.to_ipv4_bytes(ip.src, ip.dst, ip.ident), UCARP_IP);
}

/// The advert in the reference's appendix (ucarp, the how-to's LAN VIP, vhid 3 advskew 100).
#[test]
fn reference_appendix_vector() {
    let ip: [u8; 56] = [
        0x45, 0x10, 0x00, 0x38, 0x6e, 0x5f, 0x40, 0x00, 0xff, 0x70, 0x6b, 0x17, 0xc0, 0xa8, 0x01,
        0x14, 0xe0, 0x00, 0x00, 0x12, 0x21, 0x03, 0x64, 0x07, 0x00, 0x01, 0xf5, 0xfd, 0xb9, 0xd6,
        0x84, 0xdc, 0xfa, 0xda, 0xbb, 0xc1, 0xbb, 0x73, 0xf1, 0xbb, 0xac, 0x7b, 0x2f, 0x9d, 0x5c,
        0xd2, 0x3f, 0xd2, 0xd2, 0xaf, 0x47, 0x9a, 0x08, 0xb0, 0x46, 0xbf,
    ];
    let (h, repr) = parse_ipv4(&ip).unwrap();
    assert_eq!(h.src, Ipv4Addr::new(192, 168, 1, 20));
    assert_eq!((repr.vhid, repr.advbase, repr.advskew), (3, 1, 100));
    assert!(repr.verify_md(b"opnsense", &[Ipv4Addr::new(192, 168, 1, 1)], &[]));
}

#[test]
fn parse_ipv4_checks_protocol_and_ttl() {
    let repr = ucarp_repr();
    let src = Ipv4Addr::new(10, 99, 0, 2);
    let mut bytes = repr.to_ipv4_bytes(src, MCAST_V4, 1);
    let mut p = ipv4::Packet::new_unchecked(&mut bytes[..]);
    p.set_ttl(254);
    p.fill_checksum();
    assert_eq!(parse_ipv4(&bytes).unwrap_err(), Error::BadTtl(254));
    let mut bytes = repr.to_ipv4_bytes(src, MCAST_V4, 1);
    let mut p = ipv4::Packet::new_unchecked(&mut bytes[..]);
    p.set_protocol(17);
    p.fill_checksum();
    assert_eq!(parse_ipv4(&bytes).unwrap_err(), Error::BadProtocol(17));
    // An IP payload shorter than the CARP header (VRRPv2 with one address is 20 bytes).
    let mut short = UCARP_IP[..40].to_vec();
    let mut p = ipv4::Packet::new_unchecked(&mut short[..]);
    p.set_total_len(40);
    p.fill_checksum();
    assert_eq!(parse_ipv4(&short).unwrap_err(), Error::Truncated);
}

#[test]
fn parse_payload_checks_the_hop_limit() {
    assert_eq!(parse_payload(carp_bytes(), 255).unwrap(), ucarp_repr());
    assert_eq!(
        parse_payload(carp_bytes(), 64).unwrap_err(),
        Error::BadTtl(64)
    );
    assert_eq!(
        parse_payload(&carp_bytes()[..20], 255).unwrap_err(),
        Error::Truncated
    );
}

/// The HMAC written out the way the BSD kernels do it (key copied into a 20-byte zeroed buffer,
/// padded to 64, ipad/opad by hand) equals ours.
fn bsd_style_hmac(
    password: &[u8],
    vhid: u8,
    v4_sorted: &[Ipv4Addr],
    v6_sorted: &[Ipv6Addr],
    counter: u64,
) -> [u8; 20] {
    let mut key = [0u8; 20];
    key[..password.len()].copy_from_slice(password);
    let mut pad = [0u8; 64];
    pad[..20].copy_from_slice(&key);
    let ipad: Vec<u8> = pad.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = pad.iter().map(|b| b ^ 0x5c).collect();
    let mut inner = Sha1::new();
    inner.update(&ipad);
    inner.update([2u8, 1, vhid]);
    for a in v4_sorted {
        inner.update(a.octets());
    }
    for a in v6_sorted {
        inner.update(a.octets());
    }
    inner.update(counter.to_be_bytes());
    let inner = inner.finalize();
    let mut outer = Sha1::new();
    outer.update(&opad);
    outer.update(inner);
    let mut md = [0u8; 20];
    md.copy_from_slice(&outer.finalize());
    md
}

#[test]
fn hmac_equals_bsd_construction_and_sorts() {
    let a: Ipv4Addr = "192.168.1.1".parse().unwrap();
    let b: Ipv4Addr = "10.0.0.1".parse().unwrap();
    let c: Ipv4Addr = "172.18.0.100".parse().unwrap();
    let x: Ipv6Addr = "2001:db8::1".parse().unwrap();
    let y: Ipv6Addr = "fe80::1".parse().unwrap();
    let want = bsd_style_hmac(b"opnsense", 3, &[b, c, a], &[x, y], 42);
    assert_eq!(hmac(b"opnsense", 2, 1, 3, &[a, b, c], &[y, x], 42), want);
    assert_eq!(
        hmac(b"opnsense", 2, 1, 3, &[c, a, b, a], &[x, y, y], 42),
        want
    );
    // Numeric, not lexical, order: 9.0.0.1 < 10.0.0.1.
    let nine: Ipv4Addr = "9.0.0.1".parse().unwrap();
    assert_eq!(
        hmac(b"k", 2, 1, 1, &[b, nine], &[], 1),
        bsd_style_hmac(b"k", 1, &[nine, b], &[], 1)
    );
    // A 19-byte password (the longest ifconfig/ucarp keep).
    let long = b"0123456789abcdefghi";
    assert_eq!(
        hmac(long, 2, 1, 9, &[a], &[], u64::MAX),
        bsd_style_hmac(long, 9, &[a], &[], u64::MAX)
    );
    // Any change in vhid or counter changes the digest.
    assert_ne!(
        hmac(b"k", 2, 1, 1, &[a], &[], 1),
        hmac(b"k", 2, 1, 2, &[a], &[], 1)
    );
    assert_ne!(
        hmac(b"k", 2, 1, 1, &[a], &[], 1),
        hmac(b"k", 2, 1, 1, &[a], &[], 2)
    );
}

#[test]
fn bsd_key_truncates_like_strlcpy() {
    assert_eq!(bsd_key(b"secret"), b"secret");
    assert_eq!(bsd_key(b"0123456789abcdefghijKLM"), b"0123456789abcdefghi");
    assert_eq!(bsd_key(b"ab\0cd"), b"ab");
    assert_eq!(bsd_key(b""), b"");
    // A 20-byte password digests like its first 19 bytes, as on a FreeBSD peer.
    let a = Ipv4Addr::new(10, 0, 0, 1);
    assert_eq!(
        hmac(bsd_key(b"0123456789abcdefghij"), 2, 1, 1, &[a], &[], 5),
        bsd_style_hmac(b"0123456789abcdefghi", 1, &[a], &[], 5)
    );
}

#[test]
fn ct_eq_compares() {
    assert!(ct_eq(&UCARP_MD, &UCARP_MD));
    let mut other = UCARP_MD;
    other[19] ^= 0x80;
    assert!(!ct_eq(&UCARP_MD, &other));
}

#[test]
fn bow_out() {
    assert!(Repr::advert(1, 255, 255).is_bow_out());
    assert!(!Repr::advert(1, 1, 255).is_bow_out());
}

proptest! {
    #[test]
    fn parse_emit_roundtrip(vhid: u8, advskew: u8, authlen: u8, demote: u8, advbase: u8, counter: u64, md: [u8; 20]) {
        let repr = Repr { version: 2, kind: 1, vhid, advskew, authlen, demote, advbase, counter, md };
        let bytes = repr.to_bytes();
        let parsed = Repr::parse(&Packet::new_checked(&bytes[..]).unwrap()).unwrap();
        prop_assert_eq!(parsed, repr);
        let ip = repr.to_ipv4_bytes(Ipv4Addr::new(10, 0, 0, 1), MCAST_V4, 7);
        let (_, parsed) = parse_ipv4(&ip).unwrap();
        prop_assert_eq!(parsed, repr);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
        let _ = parse_ipv4(&bytes);
        if let Ok(p) = Packet::new_checked(&bytes[..]) {
            let _ = Repr::parse(&p);
            let _ = (p.version(), p.kind(), p.vhid(), p.counter(), p.md(), p.verify_checksum());
        }
        let _ = ipv4::parse_header(&bytes);
    }

    #[test]
    fn mutated_capture_never_panics(idx in 0usize..56, val: u8, cut in 0usize..=56) {
        let mut bytes = UCARP_IP.to_vec();
        bytes[idx] = val;
        bytes.truncate(cut);
        if let Ok((h, r)) = parse_ipv4(&bytes) {
            // Only a change that keeps every checksum valid can get through.
            prop_assert_eq!(h.protocol, 112);
            prop_assert_eq!(r.version, 2);
        }
    }
}
