//! Node-wide events: published by actors, fanned out to every subscriber (other actors, the
//! control socket's `events.subscribe`, plugins). A broadcast channel: a slow subscriber loses the
//! oldest events (and is told how many), it never blocks a publisher.

use serde::Serialize;
use tokio::sync::broadcast;

/// One event. Serialised as `{"event": "<kind>", ...fields}` on the control socket.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "event")]
pub enum BusMsg {
    /// A configured interface's link went up or down.
    #[serde(rename = "link.changed")]
    LinkChanged {
        key: String,
        device: String,
        up: bool,
    },
    /// A new configuration revision is in force.
    #[serde(rename = "config.applied")]
    ConfigApplied {
        revision: i64,
        description: String,
        sections: Vec<String>,
    },
    /// A CARP VHID changed state.
    #[serde(rename = "carp.transition")]
    CarpTransition {
        vhid: u8,
        device: String,
        interface: String,
        from: String,
        to: String,
        reason: String,
    },
    /// The node demotion changed (sum of all reasons).
    #[serde(rename = "demotion.changed")]
    DemotionChanged { total: u32, reasons: Vec<String> },
    /// A DHCP server's HA state changed (Kea's names: waiting, syncing, ready, load-balancing,
    /// hot-standby, partner-down).
    #[serde(rename = "dhcp.ha.changed")]
    DhcpHaChanged {
        interface: String,
        from: String,
        to: String,
    },
    /// An actor died and was restarted, or gave up.
    #[serde(rename = "actor.restarted")]
    ActorRestarted {
        actor: String,
        restarts: u32,
        reason: String,
    },
}

impl BusMsg {
    /// The event's kind, as plugins subscribe to it (`carp.transition`, `link.changed`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            BusMsg::LinkChanged { .. } => "link.changed",
            BusMsg::ConfigApplied { .. } => "config.applied",
            BusMsg::CarpTransition { .. } => "carp.transition",
            BusMsg::DemotionChanged { .. } => "demotion.changed",
            BusMsg::ActorRestarted { .. } => "actor.restarted",
            BusMsg::DhcpHaChanged { .. } => "dhcp.ha.changed",
        }
    }
}

/// The bus handle: cheap to clone.
#[derive(Clone)]
pub struct Bus {
    tx: broadcast::Sender<BusMsg>,
}

impl Default for Bus {
    fn default() -> Self {
        Self::new()
    }
}

impl Bus {
    pub fn new() -> Bus {
        let (tx, _) = broadcast::channel(1024);
        Bus { tx }
    }

    /// Publish; having no subscriber is fine.
    pub fn publish(&self, msg: BusMsg) {
        let _ = self.tx.send(msg);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<BusMsg> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fan_out_and_kinds() {
        let bus = Bus::new();
        let mut a = bus.subscribe();
        let mut b = bus.subscribe();
        bus.publish(BusMsg::LinkChanged {
            key: "lan".into(),
            device: "em0".into(),
            up: false,
        });
        let ea = a.try_recv().unwrap();
        assert_eq!(ea.kind(), "link.changed");
        assert!(b.try_recv().is_ok());
        let j = serde_json::to_value(&ea).unwrap();
        assert_eq!(j["event"], "link.changed");
        assert_eq!(j["device"], "em0");
    }
}
