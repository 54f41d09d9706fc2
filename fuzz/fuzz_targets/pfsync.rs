#![no_main]
//! State-sync messages from the wire, with and without a key. Nothing may panic, whatever parses
//! must re-emit to an equal `Repr` (unknown sections are dropped on re-emit), and the sync
//! machine must take any input without panicking. The same bytes also go to the ctnetlink
//! decoders (kernel entries and events, labels included): an error, never a panic.
use libfuzzer_sys::fuzz_target;
use tandem::proto::Instant;
use tandem::proto::pfsync::{Config, Input, Sync};
use tandem::sys::conntrack::{codec, decode_events};
use tandem::wire::pfsync;

fuzz_target!(|data: &[u8]| {
    let _ = pfsync::parse(data, Some(b"fuzz-key"));
    let _ = codec::parse_entry(data);
    let _ = codec::parse_generation(data);
    let mut events = std::collections::VecDeque::new();
    let _ = decode_events(data, None, &mut events);
    if let Ok(packet) = pfsync::Packet::new_checked(data) {
        let _ = (packet.version(), packet.flags(), packet.node_id(), packet.epoch(), packet.seq());
        let _ = (packet.mac(), packet.payload().len(), packet.verify_mac(None));
        if let Ok(repr) = pfsync::Repr::parse(&packet) {
            let bytes = repr.to_bytes(None);
            let mut again = pfsync::parse(&bytes, None).expect("re-emitted message parses");
            again.flags = repr.flags;
            again.skipped = repr.skipped;
            assert_eq!(again, repr);
        }
    }
    let mut sync = Sync::new(Config::new(1), Instant::ZERO);
    let _ = sync.poll(Instant::ZERO);
    let _ = sync.handle(Instant::from_millis(1), Input::Received(data.to_vec()));
    let _ = sync.handle(Instant::from_millis(2), Input::Received(data.to_vec()));
    if let Some(at) = sync.poll_at() {
        let _ = sync.poll(at);
    }
});
