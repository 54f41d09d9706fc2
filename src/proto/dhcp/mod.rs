//! DHCPv4 server core: RFC 2131 decisions and lease table ([`server`]), the Kea-style HA state
//! machine ([`ha`]), the RFC 3074 load-balancing hash ([`hash`]) and RFC 1123 dates ([`date`]).
//! Pure: no I/O, no clock; Unix seconds and [`crate::proto::time::Instant`] come from the actor.

pub mod date;
pub mod ha;
pub mod hash;
pub mod server;
