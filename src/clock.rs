//! The only place that reads the monotonic clock for protocol time: `proto` layers take
//! `proto::time::Instant` values, which count from this process's start.

use std::sync::OnceLock;

use crate::proto::time::Instant;

fn epoch() -> std::time::Instant {
    static EPOCH: OnceLock<std::time::Instant> = OnceLock::new();
    *EPOCH.get_or_init(std::time::Instant::now)
}

/// Now, in protocol time.
pub fn now() -> Instant {
    Instant::from_micros(epoch().elapsed().as_micros() as u64)
}

/// How long until `at` (zero if it has passed).
pub fn until(at: Instant) -> std::time::Duration {
    at.saturating_duration_since(now())
}
