#![no_main]
//! config.xml from an untrusted source (XML-RPC, config.apply): parse, and an unchanged document
//! writes back the bytes it was read from.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(doc) = tandem::config::dom::Document::parse(data) {
        assert_eq!(doc.to_bytes(), data);
    }
});
