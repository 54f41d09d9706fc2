//! The XML-RPC request and response parsers never panic; what they accept re-encodes and parses
//! back to the same call.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tandem::wire::xmlrpc;

fuzz_target!(|data: &[u8]| {
    if let Ok(call) = xmlrpc::parse_call(data) {
        let again = xmlrpc::parse_call(xmlrpc::emit_call(&call).as_bytes())
            .expect("an emitted call parses");
        assert_eq!(again.method, call.method);
        assert_eq!(again.params.len(), call.params.len());
    }
    let _ = xmlrpc::parse_response(data);
});
