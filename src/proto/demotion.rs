//! The node demotion: a set of named reasons, each with its value, start time and (for automatic
//! ones) a deadline. The advertised CARP skew of every VHID adds the sum, so all VHIDs of a node
//! move together. Every reason is visible, and a reason with a deadline cannot outlive it.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::time::Instant;

/// Well-known reason values (FreeBSD's and OPNsense's).
pub const LINK_DOWN: u32 = 240;
pub const MAINTENANCE: u32 = 240;
pub const PFSYNC_BULK: u32 = 240;
pub const SERVICE: u32 = 1 << 20;

#[derive(Clone, Debug, PartialEq, Eq)]
struct Reason {
    value: u32,
    since: Instant,
    until: Option<Instant>,
}

/// One reason as shown on the control socket.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReasonView {
    pub name: String,
    pub value: u32,
    pub age_s: f64,
    /// Seconds left before the reason expires on its own; `None` = held until cleared.
    pub expires_in_s: Option<f64>,
}

#[derive(Clone, Debug, Default)]
pub struct Demotion {
    reasons: BTreeMap<String, Reason>,
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

impl Demotion {
    pub fn new() -> Demotion {
        Demotion::default()
    }

    /// Add or update a reason. A reason already present keeps its start time. Returns true when
    /// the total changed.
    pub fn set(&mut self, name: &str, value: u32, now: Instant, timeout: Option<Duration>) -> bool {
        let before = self.total();
        let until = timeout.map(|t| now + t);
        self.reasons
            .entry(name.to_string())
            .and_modify(|r| {
                r.value = value;
                r.until = until;
            })
            .or_insert(Reason {
                value,
                since: now,
                until,
            });
        before != self.total()
    }

    /// Remove a reason. Returns true when the total changed.
    pub fn clear(&mut self, name: &str) -> bool {
        let before = self.total();
        self.reasons.remove(name);
        before != self.total()
    }

    /// Drop reasons whose deadline has passed; returns their names.
    pub fn expire(&mut self, now: Instant) -> Vec<String> {
        let gone: Vec<String> = self
            .reasons
            .iter()
            .filter(|(_, r)| r.until.is_some_and(|u| u <= now))
            .map(|(n, _)| n.clone())
            .collect();
        for n in &gone {
            self.reasons.remove(n);
        }
        gone
    }

    /// The earliest deadline.
    pub fn poll_at(&self) -> Option<Instant> {
        self.reasons.values().filter_map(|r| r.until).min()
    }

    /// The sum of all reasons (saturating).
    pub fn total(&self) -> u32 {
        self.reasons
            .values()
            .fold(0u32, |a, r| a.saturating_add(r.value))
    }

    pub fn has(&self, name: &str) -> bool {
        self.reasons.contains_key(name)
    }

    pub fn view(&self, now: Instant) -> Vec<ReasonView> {
        self.reasons
            .iter()
            .map(|(n, r)| ReasonView {
                name: n.clone(),
                value: r.value,
                age_s: secs(now.saturating_duration_since(r.since)),
                expires_in_s: r.until.map(|u| secs(u.saturating_duration_since(now))),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    #[test]
    fn sum_and_clear() {
        let mut d = Demotion::new();
        assert_eq!(d.total(), 0);
        assert!(d.set("link:em0", LINK_DOWN, t(0), None));
        assert!(d.set("maintenance", MAINTENANCE, t(10), None));
        assert_eq!(d.total(), 480);
        assert!(
            !d.set("maintenance", MAINTENANCE, t(20), None),
            "same value: no change"
        );
        assert_eq!(d.view(t(1000))[1].age_s, 0.99, "start time kept");
        assert!(d.clear("link:em0"));
        assert!(!d.clear("link:em0"));
        assert_eq!(d.total(), 240);
    }

    #[test]
    fn automatic_reasons_expire() {
        let mut d = Demotion::new();
        d.set(
            "pfsync-bulk",
            PFSYNC_BULK,
            t(0),
            Some(Duration::from_secs(10)),
        );
        d.set("maintenance", MAINTENANCE, t(0), None);
        assert_eq!(d.poll_at(), Some(t(10_000)));
        assert!(d.expire(t(9_999)).is_empty());
        assert_eq!(d.expire(t(10_000)), vec!["pfsync-bulk".to_string()]);
        assert_eq!(d.total(), 240);
        assert_eq!(d.poll_at(), None);
        let v = d.view(t(12_000));
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].expires_in_s, None);
    }

    #[test]
    fn saturates() {
        let mut d = Demotion::new();
        d.set("a", u32::MAX, t(0), None);
        d.set("b", SERVICE, t(0), None);
        assert_eq!(d.total(), u32::MAX);
    }
}
