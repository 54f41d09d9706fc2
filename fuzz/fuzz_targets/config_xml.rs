#![no_main]
//! config.xml from an untrusted source (XML-RPC, config.apply): parse, and an unchanged document
//! writes back the bytes it was read from. The typed model and validation never panic, and a
//! config rebuilt from its own bytes reads the same.
use libfuzzer_sys::fuzz_target;
use tandem::config::Config;

fuzz_target!(|data: &[u8]| {
    if let Ok(doc) = tandem::config::dom::Document::parse(data) {
        assert_eq!(doc.to_bytes(), data);
    }
    if let Ok(mut cfg) = Config::parse(data) {
        assert_eq!(cfg.to_bytes(), data);
        let findings = cfg.validate();
        let again = Config::parse(&cfg.to_bytes()).expect("own bytes parse");
        assert_eq!(again.validate(), findings);
        assert!(cfg.changed_sections(&again).is_empty());
        let _ = cfg.errors();
        cfg.set_maintenance(!cfg.maintenance);
        let toggled = Config::parse(&cfg.to_bytes()).expect("edited bytes parse");
        assert_eq!(toggled.maintenance, cfg.maintenance);
    }
});
