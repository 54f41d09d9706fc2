//! Pure protocol state machines: `(state, now, input) -> actions`. No I/O, no clock, no logging.

pub mod carp;
pub mod dhcp;
pub mod time;

pub use carp::{
    Action as CarpAction, Input as CarpInput, Machine as CarpMachine, State as CarpState,
    Stats as CarpStats, VhidConfig,
};
pub use time::Instant;
pub mod demotion;
pub mod hasync;
pub mod nft;
pub mod pfsync;
