//! The sync lag estimate of `pfsync.status`: how long a change of one of our states takes to
//! reach the peer's kernel table, from the parts each side can time exactly.
//!
//! * **send wait** (here): our kernel event → the message carrying it on the wire (coalescing,
//!   flow control);
//! * **round trip** (here): a message on the wire → the peer's ACK of it, for the newest
//!   message an ACK covers (the one the peer's ACK coalescing held least);
//! * **apply time** (the peer's, from the ACK_INFO record riding on its ACKs): a message in →
//!   its states written into the peer's kernel. ACK_INFO also says how long the peer held the
//!   ACK (its coalescing), which comes off the round trip.
//!
//! estimate = send wait + round trip / 2 + the peer's apply time, at p50 and at p99 (the p99
//! sum is an upper bound). `acked` times the whole path to the peer's ACK: it includes the
//! peer's ACK coalescing (up to `Config::ack_delay`), so it bounds the lag from above.

use std::time::Duration;

use serde::Serialize;

/// Samples kept per measure (the most recent ones).
pub const SAMPLES: usize = 256;

/// The last [`SAMPLES`] durations, in microseconds.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    buf: Vec<u32>,
    next: usize,
    total: u64,
}

/// p50/p99/max of [`Samples`] in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    /// Samples taken since start (the figures cover the last [`SAMPLES`]).
    pub samples: u64,
}

impl Samples {
    pub fn push(&mut self, d: Duration) {
        let us = u32::try_from(d.as_micros()).unwrap_or(u32::MAX);
        if self.buf.len() < SAMPLES {
            self.buf.push(us);
        } else {
            self.buf[self.next] = us;
        }
        self.next = (self.next + 1) % SAMPLES;
        self.total += 1;
    }

    /// (p50, p99, max) in microseconds.
    pub fn percentiles(&self) -> Option<(u32, u32, u32)> {
        if self.buf.is_empty() {
            return None;
        }
        let mut v = self.buf.clone();
        v.sort_unstable();
        // Nearest rank.
        let at = |q: usize| v[(v.len() * q).div_ceil(100).max(1) - 1];
        Some((at(50), at(99), v[v.len() - 1]))
    }

    pub fn summary(&self) -> Option<Summary> {
        self.percentiles().map(|(p50, p99, max)| Summary {
            p50: ms(p50),
            p99: ms(p99),
            max: ms(max),
            samples: self.total,
        })
    }

    /// (p50, p99) in microseconds, as ACK_INFO carries them.
    pub fn p50_p99(&self) -> Option<(u32, u32)> {
        self.percentiles().map(|(p50, p99, _)| (p50, p99))
    }
}

fn ms(us: u32) -> f64 {
    f64::from(us) / 1000.0
}

/// The estimate and its parts, as `pfsync.status` shows them (`lag`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Our change → in the peer's kernel, ms (`None` until we sent and the peer ACKed).
    pub estimate_ms: Option<Pair>,
    pub send_wait_ms: Option<Summary>,
    pub round_trip_ms: Option<Summary>,
    /// Our change → the peer's ACK (an upper bound, with the peer's ACK coalescing).
    pub acked_ms: Option<Summary>,
    /// The peer's apply time as it last reported it (`None` from a peer that does not).
    pub peer_apply_ms: Option<Pair>,
}

/// A p50 and a p99, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Pair {
    pub p50: f64,
    pub p99: f64,
}

/// What the machine times.
#[derive(Debug, Clone, Default)]
pub struct Lag {
    pub send_wait: Samples,
    pub round_trip: Samples,
    pub acked: Samples,
    /// The peer's apply time (p50, p99) in µs.
    pub peer_apply: Option<(u32, u32)>,
}

impl Lag {
    pub fn report(&self) -> Report {
        let send = self.send_wait.percentiles();
        let rtt = self.round_trip.percentiles();
        let (a50, a99) = self.peer_apply.unwrap_or_default();
        let estimate_ms = match (send, rtt) {
            (Some((s50, s99, _)), Some((r50, r99, _))) => Some(Pair {
                p50: (f64::from(s50) + f64::from(r50) / 2.0 + f64::from(a50)) / 1000.0,
                p99: (f64::from(s99) + f64::from(r99) / 2.0 + f64::from(a99)) / 1000.0,
            }),
            _ => None,
        };
        Report {
            estimate_ms,
            send_wait_ms: self.send_wait.summary(),
            round_trip_ms: self.round_trip.summary(),
            acked_ms: self.acked.summary(),
            peer_apply_ms: self.peer_apply.map(|(p50, p99)| Pair {
                p50: ms(p50),
                p99: ms(p99),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_the_last_samples() {
        let mut s = Samples::default();
        assert!(s.summary().is_none());
        for i in 1..=100u64 {
            s.push(Duration::from_micros(i * 10));
        }
        assert_eq!(s.percentiles(), Some((500, 990, 1000)));
        // Only the last SAMPLES count.
        for _ in 0..SAMPLES {
            s.push(Duration::from_micros(7));
        }
        assert_eq!(s.percentiles(), Some((7, 7, 7)));
        assert_eq!(s.summary().map(|x| x.samples), Some(100 + SAMPLES as u64));
        s.push(Duration::from_secs(1 << 40));
        assert_eq!(s.percentiles().map(|p| p.2), Some(u32::MAX));
    }

    #[test]
    fn the_estimate_adds_send_wait_half_the_round_trip_and_the_peers_apply_time() {
        let mut lag = Lag::default();
        assert!(lag.report().estimate_ms.is_none());
        lag.send_wait.push(Duration::from_micros(2000));
        assert!(lag.report().estimate_ms.is_none(), "no round trip yet");
        lag.round_trip.push(Duration::from_micros(400));
        assert_eq!(lag.report().estimate_ms, Some(Pair { p50: 2.2, p99: 2.2 }));
        lag.peer_apply = Some((100, 900));
        let r = lag.report();
        assert_eq!(r.estimate_ms, Some(Pair { p50: 2.3, p99: 3.1 }));
        assert_eq!(r.peer_apply_ms, Some(Pair { p50: 0.1, p99: 0.9 }));
    }
}
