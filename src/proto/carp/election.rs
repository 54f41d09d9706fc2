//! CARP time values and the election rules (FreeBSD `carp_input_c`, reference §2.2).
//!
//! An advert interval `advbase + skew/256` s is kept exactly as a count of 1/256 s units,
//! `advbase·256 + skew`; comparing those is comparing the intervals. Smaller means more frequent,
//! which means more preferred.

use std::time::Duration;

use super::Reason;
use crate::wire::carp::MAX_SKEW;

/// An advert interval in 1/256 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Interval(u32);

impl Interval {
    pub fn new(advbase: u8, skew: u8) -> Interval {
        Interval(u32::from(advbase) * 256 + u32::from(skew))
    }

    /// `(3·advbase, skew)`: the "master will time out" bound of a backup.
    pub fn dead(advbase: u8, skew: u8) -> Interval {
        Interval(3 * u32::from(advbase) * 256 + u32::from(skew))
    }

    pub const fn units(self) -> u32 {
        self.0
    }
}

/// `skew/256` s, truncated to microseconds as FreeBSD does (`advskew * 1000000 / 256`).
fn skew_duration(skew: u8) -> Duration {
    Duration::from_micros(u64::from(skew) * 1_000_000 / 256)
}

/// The MASTER's advert period: `advbase + skew/256`, `skew` the advertised (demoted) skew.
pub fn advert_interval(advbase: u8, skew: u8) -> Duration {
    Duration::from_secs(u64::from(advbase)) + skew_duration(skew)
}

/// The BACKUP's master-down interval: `3·advbase + advskew/256`, the configured skew.
pub fn master_down_interval(advbase: u8, advskew: u8) -> Duration {
    Duration::from_secs(3 * u64::from(advbase)) + skew_duration(advskew)
}

/// FreeBSD's `DEMOTE_ADVSKEW`: `min(advskew + demotion, 240)`. A configured advskew above 240
/// is advertised as 240 too, as FreeBSD does.
pub fn advertised_skew(advskew: u8, demotion: u32) -> u8 {
    let sum = u32::from(advskew).saturating_add(demotion);
    u8::try_from(sum.min(u32::from(MAX_SKEW))).unwrap_or(MAX_SKEW)
}

/// A MASTER hearing `theirs` steps down if it is at least as preferred as `mine` (ties yield:
/// FreeBSD has no address tie-break).
pub fn master_yields(mine: Interval, theirs: Interval) -> bool {
    mine >= theirs
}

/// What a BACKUP does on a valid advert: `Some(reason)` to become MASTER now, `None` to accept
/// the sender as master and re-arm the master-down timer.
pub fn backup_verdict(
    mine: Interval,
    dead: Interval,
    theirs: Interval,
    preempt: bool,
) -> Option<Reason> {
    if preempt && mine < theirs {
        Some(Reason::Preempt)
    } else if theirs > dead {
        Some(Reason::MasterWillTimeOut)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals() {
        assert_eq!(advert_interval(1, 0), Duration::from_secs(1));
        assert_eq!(advert_interval(1, 128), Duration::from_millis(1500));
        assert_eq!(master_down_interval(1, 0), Duration::from_secs(3));
        // The reference: advskew 100 gives 3.39 s.
        assert_eq!(
            master_down_interval(1, 100),
            Duration::from_micros(3_390_625)
        );
        assert_eq!(
            master_down_interval(2, 255),
            Duration::from_micros(6_996_093)
        );
    }

    #[test]
    fn demotion_caps_at_240() {
        assert_eq!(advertised_skew(0, 0), 0);
        assert_eq!(advertised_skew(100, 0), 100);
        assert_eq!(advertised_skew(100, 100), 200);
        assert_eq!(advertised_skew(100, 240), 240);
        assert_eq!(advertised_skew(0, u32::MAX), 240);
        assert_eq!(advertised_skew(254, 0), 240);
    }

    #[test]
    fn comparisons_are_time_values() {
        // advbase dominates: (1, 240) is more frequent than (2, 0).
        assert!(Interval::new(1, 240) < Interval::new(2, 0));
        assert!(master_yields(Interval::new(1, 100), Interval::new(1, 100)));
        assert!(master_yields(Interval::new(1, 100), Interval::new(1, 0)));
        assert!(!master_yields(Interval::new(1, 0), Interval::new(1, 100)));
    }

    #[test]
    fn backup_rules() {
        let mine = Interval::new(1, 0);
        let dead = Interval::dead(1, 0);
        assert_eq!(
            backup_verdict(mine, dead, Interval::new(1, 100), true),
            Some(Reason::Preempt)
        );
        assert_eq!(
            backup_verdict(mine, dead, Interval::new(1, 100), false),
            None
        );
        assert_eq!(backup_verdict(mine, dead, Interval::new(1, 0), true), None);
        // The bow-out (255, 255) exceeds 3·advbase whatever preempt says.
        assert_eq!(
            backup_verdict(mine, dead, Interval::new(255, 255), false),
            Some(Reason::MasterWillTimeOut)
        );
        // Exactly the bound does not.
        assert_eq!(
            backup_verdict(
                Interval::new(1, 10),
                Interval::dead(1, 10),
                Interval::new(3, 10),
                false
            ),
            None
        );
        assert_eq!(
            backup_verdict(
                Interval::new(1, 10),
                Interval::dead(1, 10),
                Interval::new(3, 11),
                false
            ),
            Some(Reason::MasterWillTimeOut)
        );
    }
}
