use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use super::*;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| c.is_ascii_hexdigit()).collect();
    hex::decode(s).unwrap()
}

/// A control message: header (no key), DELETE {id 0x0102030405060708, version 9}, ACK [5, 7].
fn control_bytes() -> Vec<u8> {
    hex("01 02 0058  0000000a  11223344  00000005
         0000000000000000000000000000000000000000000000000000000000000000
         03 00 0010 0001 0000   0102030405060708 0000000000000009
         07 00 0008 0001 0000   00000005 00000007")
}

fn control_repr() -> Repr {
    Repr {
        flags: FLAG_SEQ,
        node_id: 10,
        epoch: 0x1122_3344,
        seq: 5,
        sections: vec![
            Section::Delete(vec![Delete {
                id: 0x0102_0304_0506_0708,
                version: 9,
            }]),
            Section::Ack(vec![SeqRange { first: 5, last: 7 }]),
        ],
        skipped: 0,
    }
}

/// An IPv4 TCP state, SNAT'd 10.0.0.5:1234 -> 8.8.8.8:53 to 203.0.113.1:40000.
fn v4_state() -> State {
    let orig = Tuple {
        src: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5)),
        dst: IpAddr::V4(Ipv4Addr::new(8, 8, 8, 8)),
        sport: 1234,
        dport: 53,
    };
    let mut s = State {
        id: State::compute_id(L4Proto::Tcp, &orig, 0),
        creator: 10,
        version: 3,
        proto: L4Proto::Tcp,
        orig,
        reply: Tuple {
            src: IpAddr::V4(Ipv4Addr::new(8, 8, 8, 8)),
            dst: IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1)),
            sport: 53,
            dport: 40000,
        },
        snat: None,
        dnat: None,
        status: status::CONFIRMED
            | status::SEEN_REPLY
            | status::ASSURED
            | status::SRC_NAT
            | status::SRC_NAT_DONE,
        tcp_state: TcpState::Established,
        tcp_window: Some(TcpWindow {
            wscale_orig: 7,
            wscale_reply: 8,
            flags_orig: 0x03,
            flags_reply: 0x23,
        }),
        timeout: 432000,
        mark: 0x42,
        zone: 0,
    };
    s.derive_nat();
    s
}

fn v4_record_bytes(id: u64) -> Vec<u8> {
    let mut b = hex("01 04 06 03  03 07 08 00  03 23 0000  0000009e");
    b.extend_from_slice(&id.to_be_bytes());
    b.extend(hex("0000000000000003 0000000a 00069780 00000042
         04d2 0035  0035 9c40  9c40 0000
         0a000005000000000000000000000000
         08080808000000000000000000000000
         08080808000000000000000000000000
         cb007101000000000000000000000000
         cb007101000000000000000000000000
         00000000000000000000000000000000"));
    b
}

#[test]
fn deconstruct() {
    let bytes = control_bytes();
    let p = Packet::new_checked(&bytes[..]).unwrap();
    assert_eq!(p.version(), 1);
    assert_eq!(p.flags(), FLAG_SEQ);
    assert_eq!(usize::from(p.length()), bytes.len());
    assert_eq!(p.node_id(), 10);
    assert_eq!(p.epoch(), 0x1122_3344);
    assert_eq!(p.seq(), 5);
    assert_eq!(p.mac(), [0u8; MAC_LEN]);
    assert_eq!(p.payload().len(), bytes.len() - HEADER_LEN);
    assert_eq!(p.payload()[0], 3);
}

#[test]
fn construct() {
    let bytes = control_bytes();
    let mut buf = [0xa5u8; HEADER_LEN];
    let mut p = Packet::new_unchecked(&mut buf[..]);
    p.set_version(1);
    p.set_flags(FLAG_SEQ);
    p.set_length(bytes.len() as u16);
    p.set_node_id(10);
    p.set_epoch(0x1122_3344);
    p.set_seq(5);
    p.set_mac(&[0; MAC_LEN]);
    assert_eq!(&buf[..], &bytes[..HEADER_LEN]);
}

#[test]
fn parse() {
    let bytes = control_bytes();
    let p = Packet::new_checked(&bytes[..]).unwrap();
    assert_eq!(Repr::parse(&p).unwrap(), control_repr());
    assert_eq!(super::parse(&bytes, None).unwrap(), control_repr());
}

#[test]
fn emit() {
    let repr = control_repr();
    let bytes = control_bytes();
    assert_eq!(repr.buffer_len(), bytes.len());
    let mut buf = vec![0xa5u8; repr.buffer_len()];
    repr.emit(&mut Packet::new_unchecked(&mut buf[..]));
    assert_eq!(buf, bytes);
    assert_eq!(repr.to_bytes(None), bytes);
}

#[test]
fn state_record_bytes() {
    let s = v4_state();
    assert_eq!(
        s.snat,
        Some(NatMap {
            addr: IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1)),
            port: 40000
        })
    );
    assert_eq!(s.dnat, None);
    let expected = v4_record_bytes(s.id);
    assert_eq!(expected.len(), STATE_LEN);
    let mut rec = vec![0xa5u8; STATE_LEN];
    emit_state(&s, &mut rec);
    assert_eq!(rec, expected);
    assert_eq!(parse_state(&expected).unwrap(), s);
    // The receiver creates the entry with the plain inverse and the SNAT binding.
    assert_eq!(s.unnatted_reply(), s.orig.inverse());
    assert_eq!(s.unnatted_reply().dst, s.orig.src);

    let repr = Repr {
        flags: FLAG_SEQ,
        node_id: 10,
        epoch: 1,
        seq: 2,
        sections: vec![Section::Update(vec![s])],
        skipped: 0,
    };
    let bytes = repr.to_bytes(None);
    assert_eq!(bytes.len(), HEADER_LEN + SUBHEADER_LEN + STATE_LEN);
    assert_eq!(
        &bytes[HEADER_LEN..HEADER_LEN + 8],
        &hex("02 00 0098 0001 0000")[..]
    );
    assert_eq!(&bytes[HEADER_LEN + 8..], &expected[..]);
    assert_eq!(super::parse(&bytes, None).unwrap(), repr);
}

#[test]
fn state_id_is_stable_and_depends_on_tuple_and_zone() {
    let s = v4_state();
    // FNV-1a is fixed: the same value on every node and every build.
    assert_eq!(s.id, State::compute_id(L4Proto::Tcp, &s.orig, 0));
    assert_ne!(s.id, State::compute_id(L4Proto::Tcp, &s.orig, 1));
    assert_ne!(s.id, State::compute_id(L4Proto::Udp, &s.orig, 0));
    assert_ne!(s.id, State::compute_id(L4Proto::Tcp, &s.orig.inverse(), 0));
}

#[test]
fn truncated() {
    let bytes = control_bytes();
    for len in 0..bytes.len() {
        assert_eq!(
            super::parse(&bytes[..len], None).unwrap_err(),
            Error::Truncated,
            "{len}"
        );
    }
    // A section running past the length field.
    let mut b = bytes.clone();
    let len = (bytes.len() - 4) as u16;
    b[2..4].copy_from_slice(&len.to_be_bytes());
    assert_eq!(super::parse(&b, None).unwrap_err(), Error::Truncated);
    // A trailing partial subheader.
    let mut b = bytes.clone();
    b.extend_from_slice(&[7, 0, 0]);
    let len = b.len() as u16;
    b[2..4].copy_from_slice(&len.to_be_bytes());
    assert_eq!(super::parse(&b, None).unwrap_err(), Error::Truncated);
}

#[test]
fn bad_length() {
    let mut b = control_bytes();
    b[2..4].copy_from_slice(&20u16.to_be_bytes());
    assert_eq!(Packet::new_checked(&b[..]).unwrap_err(), Error::BadLength);
    // A known action whose record is shorter than its minimum.
    let mut b = control_bytes();
    b[HEADER_LEN + 2..HEADER_LEN + 4].copy_from_slice(&8u16.to_be_bytes());
    b[HEADER_LEN + 4..HEADER_LEN + 6].copy_from_slice(&2u16.to_be_bytes());
    assert_eq!(
        super::parse(&b, None).unwrap_err(),
        Error::BadRecordLen { action: 3, len: 8 }
    );
    // Bytes after the length field are ignored.
    let mut b = control_bytes();
    b.extend_from_slice(&[0xff; 9]);
    assert_eq!(super::parse(&b, None).unwrap(), control_repr());
}

#[test]
fn bad_version() {
    let mut b = control_bytes();
    b[0] = 2;
    assert_eq!(super::parse(&b, None).unwrap_err(), Error::BadVersion(2));
}

#[test]
fn bad_record_values() {
    let s = v4_state();
    let repr = Repr {
        flags: 0,
        node_id: 1,
        epoch: 1,
        seq: 1,
        sections: vec![Section::Insert(vec![s])],
        skipped: 0,
    };
    let good = repr.to_bytes(None);
    let at = HEADER_LEN + SUBHEADER_LEN;
    for (off, val, err) in [
        (0, 2, Error::BadRecordVersion(2)),
        (1, 5, Error::BadFamily(5)),
        (2, 132, Error::BadProto(132)),
        (3, 10, Error::BadTcpState(10)),
    ] {
        let mut b = good.clone();
        b[at + off] = val;
        assert_eq!(super::parse(&b, None).unwrap_err(), err);
    }
    // An ACK range with last before first.
    let repr = Repr {
        sections: vec![Section::Nack(vec![SeqRange { first: 9, last: 3 }])],
        ..repr
    };
    assert_eq!(
        super::parse(&repr.to_bytes(None), None).unwrap_err(),
        Error::BadValue(8)
    );
}

/// ACK_INFO: action 9, one 12-byte record of three big-endian u32; any other count is refused.
#[test]
fn ack_info_record() {
    let repr = Repr {
        flags: 0,
        node_id: 1,
        epoch: 1,
        seq: 1,
        sections: vec![Section::AckInfo(AckInfo {
            hold_us: 5000,
            apply_p50_us: 0x0102_0304,
            apply_p99_us: 7,
        })],
        skipped: 0,
    };
    let b = repr.to_bytes(None);
    assert_eq!(
        &b[HEADER_LEN..],
        &hex("09 00 000c 0001 0000  00001388 01020304 00000007")[..]
    );
    assert_eq!(super::parse(&b, None).unwrap(), repr);
    let mut two = b.clone();
    two.extend_from_slice(&[0; 12]);
    two[HEADER_LEN + 4..HEADER_LEN + 6].copy_from_slice(&2u16.to_be_bytes());
    let len = two.len() as u16;
    two[2..4].copy_from_slice(&len.to_be_bytes());
    assert_eq!(super::parse(&two, None).unwrap_err(), Error::BadValue(9));
}

#[test]
fn unknown_action_skipped_by_length() {
    let mut b = control_bytes();
    // Insert an unknown section (action 200, 3 records of 5 bytes) between the two.
    let unknown = hex("c8 00 0005 0003 0000  0102030405 0607080910 1112131415");
    let at = HEADER_LEN + SUBHEADER_LEN + DELETE_LEN;
    b.splice(at..at, unknown.iter().copied());
    let len = b.len() as u16;
    b[2..4].copy_from_slice(&len.to_be_bytes());
    let mut expected = control_repr();
    expected.skipped = 1;
    assert_eq!(super::parse(&b, None).unwrap(), expected);
    // A longer record of a known action: only the known prefix is read.
    let mut b = control_bytes();
    let at = HEADER_LEN + SUBHEADER_LEN + DELETE_LEN;
    b.splice(at..at, [0xee; 4]);
    b[HEADER_LEN + 2..HEADER_LEN + 4].copy_from_slice(&20u16.to_be_bytes());
    let len = b.len() as u16;
    b[2..4].copy_from_slice(&len.to_be_bytes());
    assert_eq!(super::parse(&b, None).unwrap(), control_repr());
}

#[test]
fn mac() {
    let repr = control_repr();
    let key = b"pfsync-secret";
    let bytes = repr.to_bytes(Some(key));
    assert_eq!(bytes[1], FLAG_SEQ | FLAG_AUTH);
    assert_ne!(&bytes[16..48], &[0u8; 32]);
    let mut expected = repr.clone();
    expected.flags |= FLAG_AUTH;
    assert_eq!(super::parse(&bytes, Some(key)).unwrap(), expected);
    // Wrong key, a flipped bit anywhere, no key on one side: refused.
    assert_eq!(
        super::parse(&bytes, Some(b"other")).unwrap_err(),
        Error::BadMac
    );
    assert_eq!(super::parse(&bytes, None).unwrap_err(), Error::BadMac);
    for i in [1, 5, 12, 20, 47, 50, bytes.len() - 1] {
        let mut b = bytes.clone();
        b[i] ^= 0x10;
        assert_eq!(
            super::parse(&b, Some(key)).unwrap_err(),
            Error::BadMac,
            "{i}"
        );
    }
    let plain = repr.to_bytes(None);
    assert_eq!(super::parse(&plain, Some(key)).unwrap_err(), Error::BadMac);
    // The MAC is HMAC-SHA256 over the message with the MAC field zero.
    use hmac::{KeyInit, Mac};
    let mut zeroed = bytes.clone();
    zeroed[16..48].fill(0);
    let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    m.update(&zeroed);
    assert_eq!(&m.finalize().into_bytes()[..], &bytes[16..48]);
}

fn arb_addr(v6: bool) -> impl Strategy<Value = IpAddr> {
    if v6 {
        any::<[u8; 16]>()
            .prop_map(|o| IpAddr::V6(Ipv6Addr::from(o)))
            .boxed()
    } else {
        any::<[u8; 4]>()
            .prop_map(|o| IpAddr::V4(Ipv4Addr::from(o)))
            .boxed()
    }
}

fn arb_tuple(v6: bool) -> impl Strategy<Value = Tuple> {
    (arb_addr(v6), arb_addr(v6), any::<u16>(), any::<u16>()).prop_map(|(src, dst, sport, dport)| {
        Tuple {
            src,
            dst,
            sport,
            dport,
        }
    })
}

pub(crate) fn arb_state() -> impl Strategy<Value = State> {
    any::<bool>().prop_flat_map(|v6| {
        (
            (any::<u64>(), any::<u32>(), any::<u64>(), 0usize..4),
            (arb_tuple(v6), arb_tuple(v6)),
            (
                proptest::option::of((arb_addr(v6), any::<u16>())),
                proptest::option::of((arb_addr(v6), any::<u16>())),
            ),
            (
                any::<u32>(),
                0usize..10,
                proptest::option::of(any::<[u8; 4]>()),
            ),
            (any::<u32>(), any::<u32>(), any::<u16>()),
        )
            .prop_map(
                |(
                    (id, creator, version, p),
                    (orig, reply),
                    (snat, dnat),
                    (st, ts, w),
                    (timeout, mark, zone),
                )| {
                    State {
                        id,
                        creator,
                        version,
                        proto: [L4Proto::Tcp, L4Proto::Udp, L4Proto::Icmp, L4Proto::Icmpv6][p],
                        orig,
                        reply,
                        snat: snat.map(|(addr, port)| NatMap { addr, port }),
                        dnat: dnat.map(|(addr, port)| NatMap { addr, port }),
                        status: st,
                        tcp_state: TcpState::ALL[ts],
                        tcp_window: w.map(|w| TcpWindow {
                            wscale_orig: w[0],
                            wscale_reply: w[1],
                            flags_orig: w[2],
                            flags_reply: w[3],
                        }),
                        timeout,
                        mark,
                        zone,
                    }
                },
            )
    })
}

fn arb_range() -> impl Strategy<Value = SeqRange> {
    (any::<u32>(), 0u32..1000).prop_map(|(first, n)| SeqRange {
        first,
        last: first.wrapping_add(n),
    })
}

fn arb_section() -> impl Strategy<Value = Section> {
    prop_oneof![
        proptest::collection::vec(arb_state(), 0..4).prop_map(Section::Insert),
        proptest::collection::vec(arb_state(), 0..4).prop_map(Section::Update),
        proptest::collection::vec(
            (any::<u64>(), any::<u64>()).prop_map(|(id, version)| Delete { id, version }),
            0..4
        )
        .prop_map(Section::Delete),
        proptest::collection::vec(any::<u32>(), 0..3).prop_map(Section::Clear),
        any::<u32>().prop_map(Section::BulkRequest),
        (any::<u32>(), any::<u32>()).prop_map(|(n, id)| Section::BulkEnd(n, id)),
        proptest::collection::vec(arb_range(), 0..4).prop_map(Section::Ack),
        proptest::collection::vec(arb_range(), 0..4).prop_map(Section::Nack),
        (any::<u32>(), any::<u32>(), any::<u32>()).prop_map(
            |(hold_us, apply_p50_us, apply_p99_us)| {
                Section::AckInfo(AckInfo {
                    hold_us,
                    apply_p50_us,
                    apply_p99_us,
                })
            }
        ),
    ]
}

proptest! {
    #[test]
    fn parse_emit_roundtrip(
        flags in any::<u8>(),
        node_id in any::<u32>(),
        epoch in any::<u32>(),
        seq in any::<u32>(),
        sections in proptest::collection::vec(arb_section(), 0..6),
        keyed in any::<bool>(),
    ) {
        let repr = Repr { flags: flags & !FLAG_AUTH, node_id, epoch, seq, sections, skipped: 0 };
        let key: Option<&[u8]> = if keyed { Some(b"k") } else { None };
        let bytes = repr.to_bytes(key);
        prop_assert_eq!(bytes.len(), repr.buffer_len());
        let mut back = super::parse(&bytes, key).unwrap();
        back.flags &= !FLAG_AUTH;
        prop_assert_eq!(back, repr);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = super::parse(&bytes, None);
        let _ = super::parse(&bytes, Some(b"k"));
        if let Ok(p) = Packet::new_checked(&bytes[..]) {
            let _ = Repr::parse(&p);
        }
    }

    #[test]
    fn mutated_messages_never_panic(
        sections in proptest::collection::vec(arb_section(), 1..4),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
    ) {
        let repr = Repr { flags: 0, node_id: 1, epoch: 1, seq: 1, sections, skipped: 0 };
        let mut bytes = repr.to_bytes(None);
        for (at, v) in flips {
            let n = bytes.len();
            bytes[at % n] = v;
        }
        if let Ok(r) = Packet::new_checked(&bytes[..]).and_then(|p| Repr::parse(&p)) {
            // Whatever parses re-emits to an equal Repr (unknown sections dropped).
            let again = r.to_bytes(None);
            let mut back = super::parse(&again, None).unwrap();
            back.flags = r.flags;
            back.skipped = r.skipped;
            prop_assert_eq!(back, r);
        }
    }
}
