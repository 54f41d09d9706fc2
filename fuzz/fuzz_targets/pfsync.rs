#![no_main]
//! State-sync messages from the wire, with and without a key. Nothing may panic, whatever parses
//! must re-emit to an equal `Repr` (unknown sections are dropped on re-emit), and the sync
//! machine must take any input without panicking. The same bytes also go to the decoder of the
//! peer-state file kept across restarts.
use libfuzzer_sys::fuzz_target;
use tandem::proto::Instant;
use tandem::proto::pfsync::{Config, Input, Sync, remembered};
use tandem::wire::pfsync;

fuzz_target!(|data: &[u8]| {
    let _ = pfsync::parse(data, Some(b"fuzz-key"));
    // The peer-state file read at start: refused or decoded, never a panic; decoded re-encodes.
    if let Ok(ids) = remembered::decode(data) {
        assert_eq!(remembered::encode(ids.iter().copied()), data);
    }
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
