#![no_main]
//! DHCP messages from the wire: nothing may panic, whatever parses re-emits to an equal `Repr`,
//! and the server's decisions on it (every scope) never panic either.
use std::net::Ipv4Addr;

use libfuzzer_sys::fuzz_target;
use tandem::proto::dhcp::{hash, server};
use tandem::wire::dhcp;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = dhcp::Packet::new_checked(data) {
        let _ = (p.op(), p.htype(), p.hlen(), p.xid(), p.secs(), p.flags(), p.chaddr());
        let _ = (p.ciaddr(), p.yiaddr(), p.siaddr(), p.giaddr(), p.cookie(), p.options());
    }
    let Ok(repr) = dhcp::Repr::parse_bytes(data) else {
        return;
    };
    let bytes = repr.to_bytes();
    assert_eq!(bytes.len(), repr.buffer_len());
    assert_eq!(dhcp::Repr::parse_bytes(&bytes).unwrap(), repr);
    let _ = (repr.hostname(), repr.requested_ip(), repr.server_id(), repr.client_id());
    let _ = hash::server_index(repr.client_id(), repr.mac());
    let cfg = server::Cfg {
        server_id: Ipv4Addr::new(192, 168, 1, 10),
        network: Ipv4Addr::new(192, 168, 1, 0),
        prefix: 24,
        pool: (100..=103).map(|i| Ipv4Addr::new(192, 168, 1, i)).collect(),
        routers: Some(Ipv4Addr::new(192, 168, 1, 1)),
        dns: vec![Ipv4Addr::new(192, 168, 1, 1)],
        domain: None,
        default_lease: 7200,
        max_lease: 86400,
        statics: Vec::new(),
        decline_hold: 600,
        offer_hold: 30,
    };
    let mut s = server::Server::new(cfg);
    for scope in [server::Scope::All, server::Scope::FirstHalf, server::Scope::SecondHalf] {
        match s.handle(1_800_000_000, &repr, scope) {
            server::Decision::Commit(l, r) => {
                let _ = r.repr.to_bytes();
                s.commit(l);
            }
            server::Decision::Reply(r) => {
                let _ = r.repr.to_bytes();
            }
            _ => {}
        }
    }
    let _ = s.reclaim(u64::MAX);
});
