//! The CARP state machine of one VHID, pure: `handle(now, input) -> actions`, `poll(now)`,
//! `poll_at()`. FreeBSD semantics (as OPNsense runs them), see the reference §2:
//!
//! * INIT → BACKUP when the link is up and the VHID has at least one address.
//! * BACKUP → MASTER when the master-down timer `3·advbase + advskew/256` (configured skew)
//!   expires, at once when preempting a less-preferred master, or at once when an advert says the
//!   master will time out (its interval exceeds `3·advbase`; OpenBSD's 255/255 bow-out does).
//! * MASTER sends an advert every `advbase + s/256`, `s` the advertised skew
//!   `min(advskew + demotion, 240)`; it yields (→ BACKUP) to an equal-or-better advert (no IP
//!   tie-break, unlike ucarp). A demotion change makes a MASTER advertise at once.
//! * Election compares `(advbase, skew)` as time values: smaller is more preferred.
//! * LinkDown → INIT. Shutdown as MASTER sends one bow-out advert (advbase 255, advskew 255).
//! * VIPs are installed exactly while MASTER: every transition emits `InstallVips` (to MASTER)
//!   or `RemoveVips` (to BACKUP/INIT); becoming MASTER also announces (GARP/NA) at once and once
//!   more one advert interval later.
//! * Received adverts are verified here (version, type, vhid, HMAC in constant time); each
//!   failure is counted. The counter is seeded by the caller and adopted from valid peer adverts,
//!   as FreeBSD and ucarp do (there is no replay protection in CARP).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Serialize;

use crate::wire::carp;

pub mod election;
mod fsm;
mod stats;

#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;

pub use fsm::Machine;
pub use stats::{DropReason, Stats};

/// The configuration of one VHID.
#[derive(Clone, PartialEq, Eq)]
pub struct VhidConfig {
    /// 1..=255.
    pub vhid: u8,
    /// Seconds, 1..=255.
    pub advbase: u8,
    /// 1/256 s units, 0..=254 (OPNsense); the advertised value is capped at 240.
    pub advskew: u8,
    /// Take over from a less-preferred master (off with OPNsense's `hasync/disablepreempt`).
    pub preempt: bool,
    /// The password bytes. Only the first 19 (up to a NUL) count, as on the BSDs and ucarp.
    pub key: Vec<u8>,
    /// The VHID's IPv4 addresses (VIPs and IP aliases), any order.
    pub v4: Vec<Ipv4Addr>,
    /// The VHID's IPv6 addresses, any order.
    pub v6: Vec<Ipv6Addr>,
    /// The first advert counter. The actor passes a random value (the proto draws none).
    pub seed: u64,
}

impl VhidConfig {
    /// advbase 1, advskew 0, preempt on, seed 0.
    pub fn new(vhid: u8, key: &[u8], v4: Vec<Ipv4Addr>, v6: Vec<Ipv6Addr>) -> VhidConfig {
        VhidConfig {
            vhid,
            advbase: 1,
            advskew: 0,
            preempt: true,
            key: key.to_vec(),
            v4,
            v6,
            seed: 0,
        }
    }

    /// Whether the VHID has any address to serve.
    pub fn has_addresses(&self) -> bool {
        !self.v4.is_empty() || !self.v6.is_empty()
    }

    /// Checks the values the BSD ioctl would refuse. [`Machine`] also runs with a config that
    /// fails here (advbase 0 is treated as 1; no address keeps it in INIT).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.vhid == 0 {
            return Err(ConfigError::VhidZero);
        }
        if self.advbase == 0 {
            return Err(ConfigError::AdvbaseZero);
        }
        if self.advskew == 255 {
            return Err(ConfigError::AdvskewTooLarge(self.advskew));
        }
        if !self.has_addresses() {
            return Err(ConfigError::NoAddresses);
        }
        Ok(())
    }
}

/// Never prints the key.
impl fmt::Debug for VhidConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VhidConfig")
            .field("vhid", &self.vhid)
            .field("advbase", &self.advbase)
            .field("advskew", &self.advskew)
            .field("preempt", &self.preempt)
            .field("key", &"<redacted>")
            .field("v4", &self.v4)
            .field("v6", &self.v6)
            .finish_non_exhaustive()
    }
}

/// Why a [`VhidConfig`] is not valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ConfigError {
    VhidZero,
    AdvbaseZero,
    AdvskewTooLarge(u8),
    NoAddresses,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::VhidZero => write!(f, "vhid must be 1..255"),
            ConfigError::AdvbaseZero => write!(f, "advbase must be 1..255 seconds"),
            ConfigError::AdvskewTooLarge(s) => write!(f, "advskew {s} out of range 0..254"),
            ConfigError::NoAddresses => write!(f, "vhid has no address"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// The CARP states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum State {
    Init,
    Backup,
    Master,
}

impl State {
    /// `INIT`, `BACKUP`, `MASTER` (as FreeBSD's devctl and OPNsense's syshooks spell them).
    pub const fn as_str(self) -> &'static str {
        match self {
            State::Init => "INIT",
            State::Backup => "BACKUP",
            State::Master => "MASTER",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a transition happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The link came up (or the VHID got addresses) with the link up.
    LinkUp,
    /// The link went down.
    LinkDown,
    /// No advert within the master-down interval.
    MasterDown,
    /// A less-preferred master was heard and preemption is on.
    Preempt,
    /// The master advertises an interval beyond our master-down (a bow-out, or a huge advbase).
    MasterWillTimeOut,
    /// An equal or more frequent advert was heard while MASTER.
    PeerPreferred,
    /// Graceful stop.
    Shutdown,
    /// The configuration left the VHID without addresses.
    NoAddresses,
    /// The configuration changed the VHID number: restart from INIT.
    Reconfigured,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reason::LinkUp => "link up",
            Reason::LinkDown => "link down",
            Reason::MasterDown => "master down timer expired",
            Reason::Preempt => "preempting a slower master",
            Reason::MasterWillTimeOut => "master will time out",
            Reason::PeerPreferred => "more frequent advertisement received",
            Reason::Shutdown => "shutdown",
            Reason::NoAddresses => "no addresses",
            Reason::Reconfigured => "reconfigured",
        })
    }
}

/// What the machine is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// The VHID's device has carrier and is up.
    LinkUp,
    /// The device lost carrier or went down.
    LinkDown,
    /// The node-wide demotion total changed (the sum of every reason).
    Demotion(u32),
    /// A CARP advert that passed the wire checks (IP header, TTL 255, length, checksum); the
    /// machine checks version, type, vhid and HMAC. `src` is the sender's (real) address.
    Advert { src: IpAddr, repr: carp::Repr },
    /// Graceful stop: as MASTER one bow-out advert (advbase 255, advskew 255), then INIT for good.
    Shutdown,
    /// New settings for this VHID (the counter and the link state are kept).
    Reconfigure(VhidConfig),
}

/// What the actor must do, in order. Serialisable for conformance tests and recordings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Send this advert (counter and digest filled in) to the group or the unicast peers.
    SendAdvert(carp::Repr),
    /// Make the installed addresses equal the config's `v4`/`v6` (also emitted again when the
    /// addresses change while MASTER).
    InstallVips,
    /// Remove every address of this VHID.
    RemoveVips,
    /// Gratuitous ARP (IPv4) / unsolicited NA with Override (IPv6) for every VIP.
    Announce,
    /// The state changed: run the syshooks, publish on the bus, log.
    Transition {
        from: State,
        to: State,
        reason: Reason,
    },
}
