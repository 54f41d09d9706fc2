//! Counters of one VHID: adverts in and out, transitions, and one counter per drop reason
//! (OpenBSD's `carpstats` style).

use std::fmt;

use serde::Serialize;

use crate::wire;

/// Why a received packet was dropped. Each reason has exactly one counter in [`Stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// IP TTL / hop limit not 255.
    BadTtl,
    /// Shorter than IP header + 36, or inconsistent lengths.
    BadLen,
    /// CARP checksum does not verify.
    BadChecksum,
    /// Not our VHID.
    BadVhid,
    /// CARP version not 2.
    BadVersion,
    /// CARP type not 1 (advertisement).
    BadType,
    /// HMAC does not match (wrong password, vhid or address list).
    BadAuth,
    /// Malformed IP header (version, header length, header checksum, protocol).
    BadIp,
    /// Our own advert came back (multicast loop): the actor filters these by source address.
    Own,
}

impl DropReason {
    pub const ALL: [DropReason; 9] = [
        DropReason::BadTtl,
        DropReason::BadLen,
        DropReason::BadChecksum,
        DropReason::BadVhid,
        DropReason::BadVersion,
        DropReason::BadType,
        DropReason::BadAuth,
        DropReason::BadIp,
        DropReason::Own,
    ];

    /// The counter's name in [`Stats`] (and on the control socket).
    pub const fn name(self) -> &'static str {
        match self {
            DropReason::BadTtl => "bad_ttl",
            DropReason::BadLen => "bad_len",
            DropReason::BadChecksum => "bad_checksum",
            DropReason::BadVhid => "bad_vhid",
            DropReason::BadVersion => "bad_version",
            DropReason::BadType => "bad_type",
            DropReason::BadAuth => "bad_auth",
            DropReason::BadIp => "bad_ip",
            DropReason::Own => "own",
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl From<wire::Error> for DropReason {
    fn from(e: wire::Error) -> DropReason {
        match e {
            wire::Error::Truncated | wire::Error::BadLength => DropReason::BadLen,
            wire::Error::BadIpVersion(_)
            | wire::Error::BadHeaderLen(_)
            | wire::Error::BadIpChecksum
            | wire::Error::BadProtocol(_) => DropReason::BadIp,
            wire::Error::BadTtl(_) => DropReason::BadTtl,
            wire::Error::BadChecksum => DropReason::BadChecksum,
            wire::Error::BadVersion(_) => DropReason::BadVersion,
            wire::Error::BadType(_) => DropReason::BadType,
        }
    }
}

/// Counters of one VHID. Serialisable so the actor can show them on the control socket.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Adverts sent (bow-outs included).
    pub adverts_sent: u64,
    /// Bow-out adverts sent (graceful shutdown as MASTER).
    pub bow_outs_sent: u64,
    /// Adverts that passed every check.
    pub adverts_received: u64,
    /// State changes.
    pub transitions: u64,
    /// Times this VHID became MASTER.
    pub became_master: u64,
    pub bad_ttl: u64,
    pub bad_len: u64,
    pub bad_checksum: u64,
    pub bad_vhid: u64,
    pub bad_version: u64,
    pub bad_type: u64,
    pub bad_auth: u64,
    pub bad_ip: u64,
    pub own: u64,
}

impl Stats {
    /// Counts one drop.
    pub fn count(&mut self, reason: DropReason) {
        let c = self.counter_mut(reason);
        *c = c.saturating_add(1);
    }

    /// The counter of one drop reason.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        match reason {
            DropReason::BadTtl => self.bad_ttl,
            DropReason::BadLen => self.bad_len,
            DropReason::BadChecksum => self.bad_checksum,
            DropReason::BadVhid => self.bad_vhid,
            DropReason::BadVersion => self.bad_version,
            DropReason::BadType => self.bad_type,
            DropReason::BadAuth => self.bad_auth,
            DropReason::BadIp => self.bad_ip,
            DropReason::Own => self.own,
        }
    }

    /// All drops, every reason.
    pub fn dropped_total(&self) -> u64 {
        DropReason::ALL
            .iter()
            .map(|r| self.dropped(*r))
            .fold(0, u64::saturating_add)
    }

    fn counter_mut(&mut self, reason: DropReason) -> &mut u64 {
        match reason {
            DropReason::BadTtl => &mut self.bad_ttl,
            DropReason::BadLen => &mut self.bad_len,
            DropReason::BadChecksum => &mut self.bad_checksum,
            DropReason::BadVhid => &mut self.bad_vhid,
            DropReason::BadVersion => &mut self.bad_version,
            DropReason::BadType => &mut self.bad_type,
            DropReason::BadAuth => &mut self.bad_auth,
            DropReason::BadIp => &mut self.bad_ip,
            DropReason::Own => &mut self.own,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_counter_per_reason() {
        let mut s = Stats::default();
        for (i, r) in DropReason::ALL.iter().enumerate() {
            for _ in 0..=i {
                s.count(*r);
            }
        }
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(s.dropped(*r), i as u64 + 1, "{r}");
        }
        assert_eq!(s.dropped_total(), 45);
        // The serialised names are the counter names.
        let json = serde_json::to_value(&s).unwrap();
        for r in DropReason::ALL {
            assert_eq!(json[r.name()], s.dropped(r));
        }
    }

    #[test]
    fn wire_errors_map_to_reasons() {
        assert_eq!(DropReason::from(wire::Error::Truncated), DropReason::BadLen);
        assert_eq!(
            DropReason::from(wire::Error::BadTtl(64)),
            DropReason::BadTtl
        );
        assert_eq!(
            DropReason::from(wire::Error::BadChecksum),
            DropReason::BadChecksum
        );
        assert_eq!(
            DropReason::from(wire::Error::BadVersion(3)),
            DropReason::BadVersion
        );
        assert_eq!(
            DropReason::from(wire::Error::BadType(2)),
            DropReason::BadType
        );
        assert_eq!(
            DropReason::from(wire::Error::BadIpChecksum),
            DropReason::BadIp
        );
    }
}
