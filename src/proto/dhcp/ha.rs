//! The HA state machine, after Kea's `libdhcp_ha.so` (dhcp.md §2): waiting → syncing → ready →
//! load-balancing | hot-standby, and partner-down when the partner has been silent for
//! `max-response-delay`. Pure: the actor feeds heartbeat/sync outcomes with `now` and performs
//! the actions (heartbeats, page sync, `ha-sync-complete-notify`).

use std::time::Duration;

use serde::Serialize;

use super::server::Scope;
use crate::proto::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    Waiting,
    Syncing,
    Ready,
    LoadBalancing,
    HotStandby,
    PartnerDown,
    /// Clock skew above 60 s: serve our own scope, no lease updates (as Kea).
    Terminated,
    /// No failover peer configured: serve everything.
    Standalone,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Waiting => "waiting",
            State::Syncing => "syncing",
            State::Ready => "ready",
            State::LoadBalancing => "load-balancing",
            State::HotStandby => "hot-standby",
            State::PartnerDown => "partner-down",
            State::Terminated => "terminated",
            State::Standalone => "standalone",
        }
    }
    pub fn parse(s: &str) -> Option<State> {
        Some(match s {
            "waiting" => State::Waiting,
            "syncing" => State::Syncing,
            "ready" => State::Ready,
            "load-balancing" => State::LoadBalancing,
            "hot-standby" => State::HotStandby,
            "partner-down" => State::PartnerDown,
            "terminated" => State::Terminated,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Primary,
    Secondary,
    Standby,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    LoadBalancing,
    HotStandby,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub heartbeat: Duration,
    pub max_response_delay: Duration,
    /// Longest a partner's `dhcp-disable` holds without `dhcp-enable`.
    pub max_disable: Duration,
}

impl Default for Timing {
    /// OPNsense's Kea values: heartbeat 10 s, max-response-delay 60 s, sync-timeout 60 s.
    fn default() -> Self {
        Timing {
            heartbeat: Duration::from_secs(10),
            max_response_delay: Duration::from_secs(60),
            max_disable: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// The partner answered a heartbeat; `skew` = partner clock - ours, seconds.
    Heartbeat {
        partner: Option<State>,
        skew: i64,
    },
    /// A heartbeat (or any command) to the partner failed.
    Unreachable,
    /// Any other successful exchange with the partner (lease update acknowledged).
    Contact,
    SyncDone,
    SyncFailed,
    /// The partner asked us to stop serving (`dhcp-disable`), or to resume (`dhcp-enable`).
    Disable(Option<Duration>),
    Enable,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    SendHeartbeat,
    /// `dhcp-disable` the partner, page its leases in, then report `SyncDone`/`SyncFailed`.
    StartSync,
    /// Tell the partner our sync is done (`ha-sync-complete-notify`).
    NotifySyncComplete,
    StateChanged {
        old: State,
        new: State,
    },
    /// Clock skew seen (seconds); the actor warns at 30.
    ClockSkew(i64),
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    pub heartbeats_ok: u64,
    pub heartbeats_failed: u64,
    pub syncs: u64,
    pub syncs_failed: u64,
    pub partner_down_entered: u64,
}

pub struct Machine {
    state: State,
    pub role: Role,
    pub mode: Mode,
    timing: Timing,
    partner: Option<State>,
    last_contact: Instant,
    next_heartbeat: Instant,
    disabled_until: Option<Instant>,
    pub stats: Stats,
}

impl Machine {
    pub fn new(now: Instant, role: Role, mode: Mode, timing: Timing) -> Machine {
        Machine {
            state: State::Waiting,
            role,
            mode,
            timing,
            partner: None,
            last_contact: now,
            next_heartbeat: now,
            disabled_until: None,
            stats: Stats::default(),
        }
    }

    pub fn standalone(now: Instant) -> Machine {
        let mut m = Machine::new(now, Role::Primary, Mode::HotStandby, Timing::default());
        m.state = State::Standalone;
        m
    }

    pub fn state(&self) -> State {
        self.state
    }
    pub fn partner_state(&self) -> Option<State> {
        self.partner
    }

    fn set_state(&mut self, new: State, out: &mut Vec<Action>) {
        if new == self.state {
            return;
        }
        if new == State::PartnerDown {
            self.stats.partner_down_entered += 1;
        }
        out.push(Action::StateChanged {
            old: self.state,
            new,
        });
        self.state = new;
    }

    fn normal(&self) -> State {
        match self.mode {
            Mode::LoadBalancing => State::LoadBalancing,
            Mode::HotStandby => State::HotStandby,
        }
    }

    fn silent_too_long(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.last_contact) >= self.timing.max_response_delay
    }

    pub fn handle(&mut self, now: Instant, input: Input) -> Vec<Action> {
        let mut out = Vec::new();
        if self.state == State::Standalone {
            return out;
        }
        match input {
            Input::Heartbeat { partner, skew } => {
                self.stats.heartbeats_ok += 1;
                self.last_contact = now;
                self.partner = partner;
                if skew.abs() >= 30 {
                    out.push(Action::ClockSkew(skew));
                }
                if skew.abs() > 60 {
                    self.set_state(State::Terminated, &mut out);
                    return out;
                }
                match (self.state, partner) {
                    (State::Waiting, Some(State::Syncing)) => {}
                    // On a concurrent start the primary syncs first (Kea).
                    (State::Waiting, Some(State::Waiting)) if self.role != Role::Primary => {}
                    (State::Waiting, _) => {
                        self.stats.syncs += 1;
                        self.set_state(State::Syncing, &mut out);
                        out.push(Action::StartSync);
                    }
                    (
                        State::Ready,
                        Some(
                            State::Ready
                            | State::LoadBalancing
                            | State::HotStandby
                            | State::PartnerDown,
                        ),
                    ) => {
                        let n = self.normal();
                        self.set_state(n, &mut out);
                    }
                    (
                        State::PartnerDown,
                        Some(State::Ready | State::LoadBalancing | State::HotStandby),
                    ) => {
                        let n = self.normal();
                        self.set_state(n, &mut out);
                    }
                    // The partner took over while we thought it was fine: resync.
                    (State::LoadBalancing | State::HotStandby, Some(State::PartnerDown)) => {
                        self.set_state(State::Waiting, &mut out);
                    }
                    (State::Terminated, _) => {
                        self.set_state(State::Waiting, &mut out);
                    }
                    _ => {}
                }
            }
            Input::Contact => {
                self.last_contact = now;
            }
            Input::Unreachable => {
                self.stats.heartbeats_failed += 1;
                self.partner = None;
                if self.silent_too_long(now)
                    && matches!(
                        self.state,
                        State::Waiting
                            | State::Ready
                            | State::LoadBalancing
                            | State::HotStandby
                            | State::Syncing
                    )
                {
                    self.set_state(State::PartnerDown, &mut out);
                }
            }
            Input::SyncDone => {
                if self.state == State::Syncing {
                    self.set_state(State::Ready, &mut out);
                    out.push(Action::NotifySyncComplete);
                }
            }
            Input::SyncFailed => {
                if self.state == State::Syncing {
                    self.stats.syncs_failed += 1;
                    self.set_state(State::Waiting, &mut out);
                }
            }
            Input::Disable(max) => {
                let d = max
                    .unwrap_or(self.timing.max_disable)
                    .min(self.timing.max_disable);
                self.disabled_until = Some(now + d);
            }
            Input::Enable => self.disabled_until = None,
        }
        out
    }

    /// Time-driven work: heartbeats, partner-down after silence, the end of a `dhcp-disable`.
    pub fn poll(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if self.state == State::Standalone {
            return out;
        }
        if self.disabled_until.is_some_and(|t| t <= now) {
            self.disabled_until = None;
        }
        if now >= self.next_heartbeat {
            self.next_heartbeat = now + self.timing.heartbeat;
            out.push(Action::SendHeartbeat);
        }
        out
    }

    pub fn poll_at(&self) -> Option<Instant> {
        if self.state == State::Standalone {
            return None;
        }
        Some(match self.disabled_until {
            Some(t) => t.min(self.next_heartbeat),
            None => self.next_heartbeat,
        })
    }

    pub fn disabled(&self, now: Instant) -> bool {
        self.disabled_until.is_some_and(|t| t > now)
    }

    /// Does this node answer a client whose load-balancing server index is `index`?
    pub fn serves(&self, now: Instant, index: u8) -> bool {
        if self.disabled(now) {
            return false;
        }
        match self.state {
            State::Standalone | State::PartnerDown => true,
            State::LoadBalancing | State::Terminated => {
                index == if self.role == Role::Primary { 0 } else { 1 }
            }
            State::HotStandby => self.role == Role::Primary,
            State::Waiting | State::Syncing | State::Ready => false,
        }
    }

    /// Must the partner acknowledge a lease before the client gets its ACK?
    pub fn needs_partner_ack(&self) -> bool {
        matches!(self.state, State::LoadBalancing | State::HotStandby)
    }

    /// Where new addresses may come from.
    pub fn scope(&self) -> Scope {
        match (self.state, self.mode, self.role) {
            (State::LoadBalancing | State::Terminated, Mode::LoadBalancing, Role::Primary) => {
                Scope::FirstHalf
            }
            (State::LoadBalancing | State::Terminated, Mode::LoadBalancing, _) => Scope::SecondHalf,
            _ => Scope::All,
        }
    }

    /// Kea's scope names for `ha-heartbeat`.
    pub fn scopes(&self, now: Instant) -> Vec<&'static str> {
        let mine = if self.role == Role::Primary {
            "server1"
        } else {
            "server2"
        };
        match self.state {
            State::PartnerDown | State::Standalone => vec!["server1", "server2"],
            _ if self.serves(now, 0) || self.serves(now, 1) => vec![mine],
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: u64) -> Instant {
        Instant::from_secs(s)
    }

    fn timing() -> Timing {
        Timing {
            heartbeat: Duration::from_secs(1),
            max_response_delay: Duration::from_secs(5),
            max_disable: Duration::from_secs(60),
        }
    }

    fn hb(p: State) -> Input {
        Input::Heartbeat {
            partner: Some(p),
            skew: 0,
        }
    }

    #[test]
    fn startup_to_load_balancing() {
        let mut m = Machine::new(t(0), Role::Primary, Mode::LoadBalancing, timing());
        assert_eq!(m.poll(t(0)), vec![Action::SendHeartbeat]);
        assert_eq!(m.poll_at(), Some(t(1)));
        assert!(!m.serves(t(0), 0));
        let a = m.handle(t(0), hb(State::Waiting));
        assert!(a.contains(&Action::StartSync));
        assert_eq!(m.state(), State::Syncing);
        let a = m.handle(t(1), Input::SyncDone);
        assert!(a.contains(&Action::NotifySyncComplete));
        assert_eq!(m.state(), State::Ready);
        m.handle(t(2), hb(State::Ready));
        assert_eq!(m.state(), State::LoadBalancing);
        assert!(m.serves(t(2), 0) && !m.serves(t(2), 1));
        assert!(m.needs_partner_ack());
        assert_eq!(m.scope(), Scope::FirstHalf);
    }

    #[test]
    fn secondary_waits_for_primary_on_concurrent_start() {
        let mut m = Machine::new(t(0), Role::Secondary, Mode::LoadBalancing, timing());
        assert!(m.handle(t(0), hb(State::Waiting)).is_empty());
        assert_eq!(m.state(), State::Waiting);
        assert!(m.handle(t(1), hb(State::Syncing)).is_empty());
        m.handle(t(2), hb(State::Ready));
        assert_eq!(m.state(), State::Syncing);
    }

    #[test]
    fn partner_down_after_max_response_delay_and_back() {
        let mut m = Machine::new(t(0), Role::Secondary, Mode::LoadBalancing, timing());
        m.handle(t(0), hb(State::Ready));
        m.handle(t(0), Input::SyncDone);
        m.handle(t(1), hb(State::LoadBalancing));
        assert_eq!(m.state(), State::LoadBalancing);
        for s in 2..6 {
            m.handle(t(s), Input::Unreachable);
            assert_eq!(m.state(), State::LoadBalancing, "at {s}");
        }
        m.handle(t(6), Input::Unreachable);
        assert_eq!(m.state(), State::PartnerDown);
        assert!(m.serves(t(6), 0) && m.serves(t(6), 1));
        assert!(!m.needs_partner_ack());
        assert_eq!(m.scope(), Scope::All);
        // partner back, still syncing: stay partner-down
        m.handle(t(7), hb(State::Waiting));
        m.handle(t(8), hb(State::Syncing));
        assert_eq!(m.state(), State::PartnerDown);
        m.handle(t(9), hb(State::Ready));
        assert_eq!(m.state(), State::LoadBalancing);
    }

    #[test]
    fn a_lease_ack_counts_as_contact() {
        let mut m = Machine::new(t(0), Role::Primary, Mode::LoadBalancing, timing());
        m.handle(t(0), hb(State::Ready));
        m.handle(t(0), Input::SyncDone);
        m.handle(t(0), hb(State::Ready));
        m.handle(t(4), Input::Contact);
        m.handle(t(8), Input::Unreachable);
        assert_eq!(m.state(), State::LoadBalancing);
        m.handle(t(9), Input::Unreachable);
        assert_eq!(m.state(), State::PartnerDown);
    }

    #[test]
    fn alone_at_start_goes_partner_down() {
        let mut m = Machine::new(t(0), Role::Primary, Mode::LoadBalancing, timing());
        m.handle(t(1), Input::Unreachable);
        assert_eq!(m.state(), State::Waiting);
        m.handle(t(5), Input::Unreachable);
        assert_eq!(m.state(), State::PartnerDown);
    }

    #[test]
    fn clock_skew() {
        let mut m = Machine::new(t(0), Role::Primary, Mode::LoadBalancing, timing());
        let a = m.handle(
            t(0),
            Input::Heartbeat {
                partner: Some(State::Waiting),
                skew: 40,
            },
        );
        assert!(a.contains(&Action::ClockSkew(40)));
        assert_eq!(m.state(), State::Syncing);
        m.handle(
            t(1),
            Input::Heartbeat {
                partner: Some(State::Waiting),
                skew: -61,
            },
        );
        assert_eq!(m.state(), State::Terminated);
    }

    #[test]
    fn disable_enable_and_timeout() {
        let mut m = Machine::new(t(0), Role::Primary, Mode::LoadBalancing, timing());
        m.handle(t(5), Input::Unreachable);
        assert!(m.serves(t(5), 1));
        m.handle(t(6), Input::Disable(Some(Duration::from_secs(10))));
        assert!(!m.serves(t(7), 1));
        m.handle(t(8), Input::Enable);
        assert!(m.serves(t(8), 1));
        m.handle(t(9), Input::Disable(None));
        assert!(!m.serves(t(68), 1));
        assert!(m.serves(t(69), 1));
    }

    #[test]
    fn hot_standby_roles() {
        let mut p = Machine::new(t(0), Role::Primary, Mode::HotStandby, timing());
        let mut s = Machine::new(t(0), Role::Standby, Mode::HotStandby, timing());
        for m in [&mut p, &mut s] {
            m.handle(t(0), hb(State::Ready));
            m.handle(t(0), Input::SyncDone);
            m.handle(t(0), hb(State::Ready));
            assert_eq!(m.state(), State::HotStandby);
        }
        assert!(p.serves(t(1), 0) && p.serves(t(1), 1));
        assert!(!s.serves(t(1), 0) && !s.serves(t(1), 1));
        s.handle(t(6), Input::Unreachable);
        assert!(s.serves(t(6), 1));
    }
}
