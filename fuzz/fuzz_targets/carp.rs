#![no_main]
//! CARP adverts from the wire: what a raw IPv4 socket hands up (IP header + CARP), and the bare
//! 36-byte header. Nothing may panic, and whatever parses must re-emit to an equal `Repr`.
use libfuzzer_sys::fuzz_target;
use tandem::wire::{carp, ipv4};

fuzz_target!(|data: &[u8]| {
    if let Ok((header, repr)) = carp::parse_ipv4(data) {
        assert_eq!(header.protocol, carp::PROTOCOL);
        assert_eq!(header.ttl, carp::TTL);
        let bytes = repr.to_bytes();
        let again = carp::Repr::parse(&carp::Packet::new_checked(&bytes[..]).unwrap()).unwrap();
        assert_eq!(again, repr);
        let _ = repr.verify_md(b"secret", &[header.dst], &[]);
    }
    let _ = ipv4::parse_header(data);
    let _ = carp::parse_payload(data, carp::TTL);
    if let Ok(packet) = carp::Packet::new_checked(data) {
        let _ = (packet.version(), packet.kind(), packet.vhid(), packet.advskew(), packet.authlen());
        let _ = (packet.demote(), packet.advbase(), packet.checksum(), packet.counter(), packet.md());
        let _ = carp::Repr::parse(&packet);
    }
});
