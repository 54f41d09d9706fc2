//! The per-VHID machine. Every transition goes through [`Machine::set_state`]; the deadlines live
//! in the state variants, so `poll_at` is derived from the state alone.

use std::net::IpAddr;
use std::time::Duration;

use super::election::{self, Interval};
use super::stats::{DropReason, Stats};
use super::{Action, Input, Reason, State, VhidConfig};
use crate::proto::time::Instant;
use crate::wire::carp;

/// The state with its deadlines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Run {
    Init,
    Backup {
        /// When the master is declared down.
        master_down_at: Instant,
    },
    Master {
        /// The next periodic advert.
        advert_at: Instant,
        /// The repeated announcement (GARP/NA) one advert after becoming MASTER.
        announce_at: Option<Instant>,
    },
}

impl Run {
    fn state(self) -> State {
        match self {
            Run::Init => State::Init,
            Run::Backup { .. } => State::Backup,
            Run::Master { .. } => State::Master,
        }
    }
}

/// The CARP machine of one VHID. See the module documentation of [`super`] for the rules.
#[derive(Debug, Clone)]
pub struct Machine {
    cfg: VhidConfig,
    run: Run,
    since: Instant,
    link_up: bool,
    demotion: u32,
    /// The counter of the next advert we send.
    next_counter: u64,
    /// After [`Input::Shutdown`] the machine stays in INIT.
    stopped: bool,
    /// The sender of the last valid advert that we accepted as the master (BACKUP only).
    master: Option<IpAddr>,
    stats: Stats,
}

impl Machine {
    /// A machine in INIT; the link is assumed down until [`Input::LinkUp`].
    pub fn new(cfg: VhidConfig, now: Instant) -> Machine {
        let next_counter = cfg.seed;
        Machine {
            cfg,
            run: Run::Init,
            since: now,
            link_up: false,
            demotion: 0,
            next_counter,
            stopped: false,
            master: None,
            stats: Stats::default(),
        }
    }

    pub fn state(&self) -> State {
        self.run.state()
    }

    /// When the current state was entered.
    pub fn since(&self) -> Instant {
        self.since
    }

    pub fn config(&self) -> &VhidConfig {
        &self.cfg
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The node-wide demotion last given.
    pub fn demotion(&self) -> u32 {
        self.demotion
    }

    pub fn link_up(&self) -> bool {
        self.link_up
    }

    /// Whether [`Input::Shutdown`] was handled.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// The address of the master we follow (BACKUP only).
    pub fn master(&self) -> Option<IpAddr> {
        self.master
    }

    /// The advskew our adverts carry: `min(advskew + demotion, 240)`.
    pub fn advertised_skew(&self) -> u8 {
        election::advertised_skew(self.cfg.advskew, self.demotion)
    }

    /// Counts a packet the actor dropped before it reached the machine (bad TTL, length, ...).
    pub fn count_drop(&mut self, reason: DropReason) {
        self.stats.count(reason);
    }

    fn advbase(&self) -> u8 {
        self.cfg.advbase.max(1)
    }

    /// Our interval as compared in elections (advertised skew, as FreeBSD's `DEMOTE_ADVSKEW`).
    fn my_interval(&self) -> Interval {
        Interval::new(self.advbase(), self.advertised_skew())
    }

    fn advert_interval(&self) -> Duration {
        election::advert_interval(self.advbase(), self.advertised_skew())
    }

    fn master_down_interval(&self) -> Duration {
        election::master_down_interval(self.advbase(), self.cfg.advskew)
    }

    fn can_run(&self) -> bool {
        self.link_up && !self.stopped && self.cfg.has_addresses()
    }

    fn key(&self) -> &[u8] {
        carp::bsd_key(&self.cfg.key)
    }

    /// The next deadline, if any: the master-down timer in BACKUP, the next advert or the
    /// repeated announcement in MASTER, none in INIT.
    pub fn poll_at(&self) -> Option<Instant> {
        match self.run {
            Run::Init => None,
            Run::Backup { master_down_at } => Some(master_down_at),
            Run::Master {
                advert_at,
                announce_at,
            } => Some(announce_at.map_or(advert_at, |a| a.min(advert_at))),
        }
    }

    /// Runs the deadlines that have passed at `now`.
    pub fn poll(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        match self.run {
            Run::Init => {}
            Run::Backup { master_down_at } => {
                if now >= master_down_at {
                    self.set_state(now, State::Master, Reason::MasterDown, &mut actions);
                }
            }
            Run::Master {
                advert_at,
                announce_at,
            } => {
                let mut announce_at = announce_at;
                if announce_at.is_some_and(|a| now >= a) {
                    actions.push(Action::Announce);
                    announce_at = None;
                }
                let mut advert_at = advert_at;
                if now >= advert_at {
                    actions.push(self.advert());
                    advert_at = now + self.advert_interval();
                }
                self.run = Run::Master {
                    advert_at,
                    announce_at,
                };
            }
        }
        actions
    }

    /// Handles one input at `now`.
    pub fn handle(&mut self, now: Instant, input: Input) -> Vec<Action> {
        let mut actions = Vec::new();
        match input {
            Input::LinkUp => {
                self.link_up = true;
                if self.state() == State::Init && self.can_run() {
                    self.set_state(now, State::Backup, Reason::LinkUp, &mut actions);
                }
            }
            Input::LinkDown => {
                self.link_up = false;
                if self.state() != State::Init {
                    self.set_state(now, State::Init, Reason::LinkDown, &mut actions);
                }
            }
            Input::Demotion(total) => self.process_demotion(now, total, &mut actions),
            Input::Advert { src, repr } => self.process_advert(now, src, &repr, &mut actions),
            Input::Shutdown => self.process_shutdown(now, &mut actions),
            Input::Reconfigure(cfg) => self.process_reconfigure(now, cfg, &mut actions),
        }
        actions
    }

    fn process_demotion(&mut self, now: Instant, total: u32, actions: &mut Vec<Action>) {
        if total == self.demotion {
            return;
        }
        self.demotion = total;
        // FreeBSD `carp_send_ad_all`: every MASTER tells the peers at once, so a planned
        // handover costs one advert round trip instead of a master-down timeout.
        if let Run::Master { announce_at, .. } = self.run {
            actions.push(self.advert());
            self.run = Run::Master {
                advert_at: now + self.advert_interval(),
                announce_at,
            };
        }
    }

    /// Version, type, vhid, HMAC: the checks of FreeBSD `carp_input_c` after the wire ones.
    fn verify(&self, repr: &carp::Repr) -> Result<(), DropReason> {
        if repr.version != carp::VERSION {
            return Err(DropReason::BadVersion);
        }
        if repr.kind != carp::TYPE_ADVERTISEMENT {
            return Err(DropReason::BadType);
        }
        if repr.vhid != self.cfg.vhid {
            return Err(DropReason::BadVhid);
        }
        if !repr.verify_md(self.key(), &self.cfg.v4, &self.cfg.v6) {
            return Err(DropReason::BadAuth);
        }
        Ok(())
    }

    fn process_advert(
        &mut self,
        now: Instant,
        src: IpAddr,
        repr: &carp::Repr,
        actions: &mut Vec<Action>,
    ) {
        if let Err(reason) = self.verify(repr) {
            self.stats.count(reason);
            return;
        }
        self.stats.adverts_received = self.stats.adverts_received.saturating_add(1);
        // Adopt the peer's counter (FreeBSD/ucarp `sc_counter = tmp_counter`).
        self.next_counter = repr.counter.wrapping_add(1);
        let theirs = Interval::new(repr.advbase, repr.advskew);
        let mine = self.my_interval();
        match self.run {
            Run::Init => {}
            Run::Master { .. } => {
                if election::master_yields(mine, theirs) {
                    self.set_state(now, State::Backup, Reason::PeerPreferred, actions);
                    self.master = Some(src);
                }
            }
            Run::Backup { .. } => {
                let dead = Interval::dead(self.advbase(), self.advertised_skew());
                match election::backup_verdict(mine, dead, theirs, self.cfg.preempt) {
                    Some(reason) => self.set_state(now, State::Master, reason, actions),
                    None => {
                        self.master = Some(src);
                        self.run = Run::Backup {
                            master_down_at: now + self.master_down_interval(),
                        };
                    }
                }
            }
        }
    }

    fn process_shutdown(&mut self, now: Instant, actions: &mut Vec<Action>) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        match self.state() {
            State::Init => {}
            State::Backup => self.set_state(now, State::Init, Reason::Shutdown, actions),
            State::Master => {
                // OpenBSD's bow-out: the backups see an interval beyond 3·advbase and take over
                // at once. Only a MASTER sends it: from a BACKUP it would make the other backups
                // think the master is leaving.
                let mut repr = carp::Repr::advert(self.cfg.vhid, carp::BOW_OUT, carp::BOW_OUT);
                repr.counter = self.take_counter();
                repr.sign(self.key(), &self.cfg.v4, &self.cfg.v6);
                self.stats.adverts_sent = self.stats.adverts_sent.saturating_add(1);
                self.stats.bow_outs_sent = self.stats.bow_outs_sent.saturating_add(1);
                actions.push(Action::SendAdvert(repr));
                self.set_state(now, State::Init, Reason::Shutdown, actions);
            }
        }
    }

    fn process_reconfigure(&mut self, now: Instant, cfg: VhidConfig, actions: &mut Vec<Action>) {
        let old = std::mem::replace(&mut self.cfg, cfg);
        if self.stopped {
            return;
        }
        let state = self.state();
        if state != State::Init {
            if !self.cfg.has_addresses() {
                self.set_state(now, State::Init, Reason::NoAddresses, actions);
                return;
            }
            if old.vhid != self.cfg.vhid {
                self.set_state(now, State::Init, Reason::Reconfigured, actions);
            }
        }
        match self.run {
            Run::Init => {
                if self.can_run() {
                    self.set_state(now, State::Backup, Reason::LinkUp, actions);
                }
            }
            Run::Backup { .. } => {
                if old.advbase != self.cfg.advbase || old.advskew != self.cfg.advskew {
                    self.run = Run::Backup {
                        master_down_at: now + self.master_down_interval(),
                    };
                }
            }
            Run::Master {
                advert_at,
                announce_at,
            } => {
                if old.v4 != self.cfg.v4 || old.v6 != self.cfg.v6 {
                    actions.push(Action::InstallVips);
                    actions.push(Action::Announce);
                }
                let timing = old.advbase != self.cfg.advbase || old.advskew != self.cfg.advskew;
                let auth =
                    old.key != self.cfg.key || old.v4 != self.cfg.v4 || old.v6 != self.cfg.v6;
                if timing || auth {
                    actions.push(self.advert());
                    self.run = Run::Master {
                        advert_at: now + self.advert_interval(),
                        announce_at,
                    };
                } else {
                    self.run = Run::Master {
                        advert_at,
                        announce_at,
                    };
                }
            }
        }
    }

    fn take_counter(&mut self) -> u64 {
        let c = self.next_counter;
        self.next_counter = c.wrapping_add(1);
        c
    }

    /// A signed periodic advert with the advertised skew; counts it.
    fn advert(&mut self) -> Action {
        let mut repr = carp::Repr::advert(self.cfg.vhid, self.advbase(), self.advertised_skew());
        repr.counter = self.take_counter();
        repr.sign(self.key(), &self.cfg.v4, &self.cfg.v6);
        self.stats.adverts_sent = self.stats.adverts_sent.saturating_add(1);
        Action::SendAdvert(repr)
    }

    /// The one place where the state changes: emits `Transition`, then the entry effects
    /// (MASTER: install VIPs, advert, announce; BACKUP and INIT: remove VIPs) and arms the
    /// new state's timer.
    fn set_state(&mut self, now: Instant, to: State, reason: Reason, actions: &mut Vec<Action>) {
        let from = self.state();
        debug_assert_ne!(from, to, "set_state to the same state");
        if from == to {
            return;
        }
        self.since = now;
        self.master = None;
        self.stats.transitions = self.stats.transitions.saturating_add(1);
        actions.push(Action::Transition { from, to, reason });
        match to {
            State::Init => {
                self.run = Run::Init;
                actions.push(Action::RemoveVips);
            }
            State::Backup => {
                self.run = Run::Backup {
                    master_down_at: now + self.master_down_interval(),
                };
                actions.push(Action::RemoveVips);
            }
            State::Master => {
                self.stats.became_master = self.stats.became_master.saturating_add(1);
                actions.push(Action::InstallVips);
                actions.push(self.advert());
                actions.push(Action::Announce);
                let interval = self.advert_interval();
                self.run = Run::Master {
                    advert_at: now + interval,
                    announce_at: Some(now + interval),
                };
            }
        }
    }
}
