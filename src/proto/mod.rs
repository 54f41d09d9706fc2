//! Pure protocol state machines: `(state, now, input) -> actions`. No I/O, no clock, no logging.
pub mod nft;
