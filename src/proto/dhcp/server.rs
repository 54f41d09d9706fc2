//! RFC 2131 server decisions over an in-memory lease table. Pure: the caller passes Unix time
//! (leases outlive the process, so they are kept in wall-clock seconds) and the allocation scope
//! the HA machine allows; the caller persists what [`Decision::Commit`] asks for, gets the
//! partner's acknowledgement, and only then sends the reply.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::wire::dhcp::{FLAG_BROADCAST, MessageType, OP_REPLY, OP_REQUEST, Repr, opt};

/// Lease state (Kea's numbering for the peer protocol: 0 default, 1 declined, 2 expired-reclaimed,
/// 3 released).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LeaseState {
    Active,
    Declined,
    Expired,
    Released,
}

impl LeaseState {
    pub fn kea(self) -> u8 {
        match self {
            LeaseState::Active => 0,
            LeaseState::Declined => 1,
            LeaseState::Expired => 2,
            LeaseState::Released => 3,
        }
    }
    pub fn from_kea(v: u64) -> LeaseState {
        match v {
            1 => LeaseState::Declined,
            2 => LeaseState::Expired,
            3 => LeaseState::Released,
            _ => LeaseState::Active,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            LeaseState::Active => "active",
            LeaseState::Declined => "declined",
            LeaseState::Expired => "expired",
            LeaseState::Released => "released",
        }
    }
    pub fn parse(s: &str) -> LeaseState {
        match s {
            "declined" => LeaseState::Declined,
            "expired" => LeaseState::Expired,
            "released" => LeaseState::Released,
            _ => LeaseState::Active,
        }
    }
}

/// Which node granted the lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    Local,
    Partner,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub addr: Ipv4Addr,
    /// Hardware address (`chaddr[..hlen]`).
    pub mac: Vec<u8>,
    pub client_id: Option<Vec<u8>>,
    pub hostname: Option<String>,
    /// Client last transaction time, Unix seconds.
    pub cltt: u64,
    /// Unix seconds.
    pub expires: u64,
    pub state: LeaseState,
    pub origin: Origin,
}

impl Lease {
    /// The client key: option 61 when present, else the hardware address.
    pub fn key(&self) -> &[u8] {
        self.client_id.as_deref().unwrap_or(&self.mac)
    }
    pub fn valid_lft(&self) -> u64 {
        self.expires.saturating_sub(self.cltt)
    }
    /// Held by its client at `now` (active and not expired, or declined and still quarantined).
    pub fn busy(&self, now: u64) -> bool {
        matches!(self.state, LeaseState::Active | LeaseState::Declined) && self.expires > now
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticHost {
    pub mac: Vec<u8>,
    pub addr: Ipv4Addr,
    pub hostname: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cfg {
    /// Option 54; the interface's own address.
    pub server_id: Ipv4Addr,
    pub network: Ipv4Addr,
    pub prefix: u8,
    /// Addresses to hand out, in order (the range minus own/peer/VIP/static addresses).
    pub pool: Vec<Ipv4Addr>,
    pub routers: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub domain: Option<String>,
    pub default_lease: u32,
    pub max_lease: u32,
    pub statics: Vec<StaticHost>,
    /// How long a DECLINEd address stays out (seconds).
    pub decline_hold: u32,
    /// How long an OFFER reserves an address (seconds).
    pub offer_hold: u32,
}

/// Which part of the pool this node may allocate new addresses from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    All,
    /// First half of the pool (primary, load-balancing).
    FirstHalf,
    /// Second half (secondary, load-balancing).
    SecondHalf,
}

/// Where a reply goes (RFC 2131 §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dest {
    /// To the relay, port 67.
    Relay(Ipv4Addr),
    /// To the client's address, port 68 (it has one).
    Unicast(Ipv4Addr),
    /// 255.255.255.255:68.
    Broadcast,
    /// To `yiaddr` at the client's MAC (it cannot answer ARP yet): a raw frame.
    Link { ip: Ipv4Addr, mac: [u8; 6] },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub repr: Repr,
    pub dest: Dest,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Drop {
    /// A BOOTREPLY, or a message type a server never receives.
    NotRequest,
    /// REQUEST naming another server (our offer is withdrawn).
    OtherServer,
    /// No free address in our scope.
    PoolExhausted,
    /// INIT-REBOOT / RENEW for an address we have no record of: RFC 2131 says stay silent.
    NoRecord,
    /// RELEASE / DECLINE that does not match a lease of this client.
    NotClientsLease,
    /// A REQUEST without the fields its state needs.
    Malformed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Send this (OFFER, NAK, INFORM's ACK): nothing to persist.
    Reply(Reply),
    /// Persist and replicate this lease, then send the ACK.
    Commit(Lease, Reply),
    /// Persist and replicate the lease change; no reply (RELEASE, DECLINE).
    Update(Lease),
    Drop(Drop),
}

pub struct Server {
    pub cfg: Cfg,
    leases: BTreeMap<Ipv4Addr, Lease>,
    /// addr -> (client key, hold until).
    offers: BTreeMap<Ipv4Addr, (Vec<u8>, u64)>,
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    }
}

pub fn in_subnet(addr: Ipv4Addr, net: Ipv4Addr, prefix: u8) -> bool {
    u32::from(addr) & mask(prefix) == u32::from(net) & mask(prefix)
}

fn client_key(req: &Repr) -> Vec<u8> {
    match req.client_id() {
        Some(c) => c.to_vec(),
        None => req.mac().to_vec(),
    }
}

impl Server {
    pub fn new(cfg: Cfg) -> Server {
        Server {
            cfg,
            leases: BTreeMap::new(),
            offers: BTreeMap::new(),
        }
    }

    pub fn leases(&self) -> impl Iterator<Item = &Lease> {
        self.leases.values()
    }

    pub fn lease(&self, addr: Ipv4Addr) -> Option<&Lease> {
        self.leases.get(&addr)
    }

    /// Load a lease from the database or the partner. A partner's copy replaces ours only when it
    /// is newer (later cltt); returns whether the table changed.
    pub fn merge(&mut self, lease: Lease) -> bool {
        if let Some(old) = self.leases.get(&lease.addr)
            && (old.cltt > lease.cltt || *old == lease)
        {
            return false;
        }
        self.offers.remove(&lease.addr);
        self.leases.insert(lease.addr, lease);
        true
    }

    /// Would a partner's update for this lease conflict with a lease another client holds?
    pub fn conflicts(&self, lease: &Lease, now: u64) -> bool {
        self.leases
            .get(&lease.addr)
            .is_some_and(|l| l.busy(now) && l.key() != lease.key() && l.cltt > lease.cltt)
    }

    /// Mark leases past their end as expired; returns those that changed (to persist).
    pub fn reclaim(&mut self, now: u64) -> Vec<Lease> {
        self.offers.retain(|_, (_, until)| *until > now);
        let mut out = Vec::new();
        for l in self.leases.values_mut() {
            if l.state == LeaseState::Active && l.expires <= now {
                l.state = LeaseState::Expired;
                out.push(l.clone());
            }
        }
        out
    }

    fn static_for(&self, mac: &[u8]) -> Option<&StaticHost> {
        self.cfg.statics.iter().find(|s| s.mac == mac)
    }

    fn is_static_addr(&self, addr: Ipv4Addr) -> bool {
        self.cfg.statics.iter().any(|s| s.addr == addr)
    }

    fn in_scope(&self, addr: Ipv4Addr, scope: Scope) -> bool {
        let Some(ix) = self.cfg.pool.iter().position(|a| *a == addr) else {
            return false;
        };
        let half = self.cfg.pool.len().div_ceil(2);
        match scope {
            Scope::All => true,
            Scope::FirstHalf => ix < half,
            Scope::SecondHalf => ix >= half,
        }
    }

    /// Free for `key` at `now`: not held by another client, not offered to another, not static.
    fn free_for(&self, addr: Ipv4Addr, key: &[u8], now: u64) -> bool {
        if self.is_static_addr(addr) || addr == self.cfg.server_id {
            return false;
        }
        if let Some(l) = self.leases.get(&addr)
            && l.busy(now)
            && l.key() != key
        {
            return false;
        }
        if let Some((k, until)) = self.offers.get(&addr)
            && *until > now
            && k.as_slice() != key
        {
            return false;
        }
        true
    }

    /// The address for this client: its static map, its current or last lease, the requested
    /// address, a never-used address, then the longest-expired one.
    fn choose(&self, req: &Repr, key: &[u8], now: u64, scope: Scope) -> Option<Ipv4Addr> {
        if let Some(s) = self.static_for(req.mac()) {
            return Some(s.addr);
        }
        if let Some((a, _)) = self.offers.iter().find(|(_, (k, u))| k == key && *u > now) {
            return Some(*a);
        }
        let mut mine: Vec<&Lease> = self
            .leases
            .values()
            .filter(|l| l.key() == key && l.state != LeaseState::Declined)
            .collect();
        mine.sort_by_key(|l| std::cmp::Reverse(l.cltt));
        if let Some(l) = mine.first()
            && self.cfg.pool.contains(&l.addr)
            && self.free_for(l.addr, key, now)
            && (l.busy(now) || self.in_scope(l.addr, scope))
        {
            return Some(l.addr);
        }
        if let Some(r) = req.requested_ip()
            && self.in_scope(r, scope)
            && self.free_for(r, key, now)
        {
            return Some(r);
        }
        let candidates = self
            .cfg
            .pool
            .iter()
            .copied()
            .filter(|a| self.in_scope(*a, scope) && self.free_for(*a, key, now));
        let mut best: Option<(Ipv4Addr, u64)> = None;
        for a in candidates {
            match self.leases.get(&a) {
                None => return Some(a),
                Some(l) => {
                    if best.is_none_or(|(_, e)| l.expires < e) {
                        best = Some((a, l.expires));
                    }
                }
            }
        }
        best.map(|(a, _)| a)
    }

    fn lease_time(&self, req: &Repr) -> u32 {
        let asked = match req.option(opt::LEASE_TIME) {
            Some([a, b, c, d]) => Some(u32::from_be_bytes([*a, *b, *c, *d])),
            _ => None,
        };
        asked
            .unwrap_or(self.cfg.default_lease)
            .clamp(60.min(self.cfg.max_lease), self.cfg.max_lease.max(1))
    }

    /// The reply skeleton: header copied from the request, options 54 (and 61 echoed, RFC 6842).
    fn reply(&self, req: &Repr, mt: MessageType, yiaddr: Ipv4Addr) -> Repr {
        let mut options = vec![(opt::SERVER_ID, self.cfg.server_id.octets().to_vec())];
        if let Some(c) = req.client_id() {
            options.push((opt::CLIENT_ID, c.to_vec()));
        }
        Repr {
            op: OP_REPLY,
            htype: req.htype,
            hlen: req.hlen,
            hops: 0,
            xid: req.xid,
            secs: 0,
            flags: req.flags,
            ciaddr: if mt == MessageType::Nak {
                Ipv4Addr::UNSPECIFIED
            } else {
                req.ciaddr
            },
            yiaddr,
            siaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: req.giaddr,
            chaddr: req.chaddr,
            message_type: mt,
            options,
        }
    }

    fn add_config_options(&self, r: &mut Repr, lease_secs: Option<u32>) {
        if let Some(t) = lease_secs {
            r.options.push((opt::LEASE_TIME, t.to_be_bytes().to_vec()));
            let t1 = t / 2;
            let t2 = (u64::from(t) * 7 / 8) as u32;
            r.options
                .push((opt::RENEWAL_TIME, t1.to_be_bytes().to_vec()));
            r.options
                .push((opt::REBINDING_TIME, t2.to_be_bytes().to_vec()));
        }
        r.options.push((
            opt::SUBNET_MASK,
            mask(self.cfg.prefix).to_be_bytes().to_vec(),
        ));
        if let Some(g) = self.cfg.routers {
            r.options.push((opt::ROUTER, g.octets().to_vec()));
        }
        if !self.cfg.dns.is_empty() {
            let v: Vec<u8> = self.cfg.dns.iter().flat_map(|a| a.octets()).collect();
            r.options.push((opt::DNS, v));
        }
        if let Some(d) = &self.cfg.domain
            && !d.is_empty()
        {
            r.options.push((opt::DOMAIN, d.as_bytes().to_vec()));
        }
    }

    fn nak(&self, req: &Repr) -> Decision {
        let mut r = self.reply(req, MessageType::Nak, Ipv4Addr::UNSPECIFIED);
        r.options
            .push((opt::MESSAGE, b"address not available".to_vec()));
        if req.giaddr != Ipv4Addr::UNSPECIFIED {
            r.flags |= FLAG_BROADCAST;
        }
        let dest = destination(&r, req);
        Decision::Reply(Reply { repr: r, dest })
    }

    fn ack(&self, req: &Repr, addr: Ipv4Addr, now: u64) -> Decision {
        let secs = self.lease_time(req);
        let mut r = self.reply(req, MessageType::Ack, addr);
        self.add_config_options(&mut r, Some(secs));
        let hostname = req
            .hostname()
            .or_else(|| self.static_for(req.mac()).and_then(|s| s.hostname.clone()));
        let lease = Lease {
            addr,
            mac: req.mac().to_vec(),
            client_id: req.client_id().map(<[u8]>::to_vec),
            hostname,
            cltt: now,
            expires: now.saturating_add(u64::from(secs)),
            state: LeaseState::Active,
            origin: Origin::Local,
        };
        let dest = destination(&r, req);
        Decision::Commit(lease, Reply { repr: r, dest })
    }

    /// Whether `addr` may be ACKed to this client: its static address, its own lease, an offer
    /// to it, or a free pool address in our scope.
    fn acceptable(&self, req: &Repr, key: &[u8], addr: Ipv4Addr, now: u64, scope: Scope) -> bool {
        if let Some(s) = self.static_for(req.mac()) {
            return s.addr == addr;
        }
        if !self.cfg.pool.contains(&addr) || !self.free_for(addr, key, now) {
            return false;
        }
        let own = self.leases.get(&addr).is_some_and(|l| l.key() == key);
        let offered = self.offers.get(&addr).is_some_and(|(k, _)| k == key);
        own || offered || self.in_scope(addr, scope)
    }

    /// Decide on one request.
    pub fn handle(&mut self, now: u64, req: &Repr, scope: Scope) -> Decision {
        if req.op != OP_REQUEST {
            return Decision::Drop(Drop::NotRequest);
        }
        let key = client_key(req);
        match req.message_type {
            MessageType::Discover => {
                let Some(addr) = self.choose(req, &key, now, scope) else {
                    return Decision::Drop(Drop::PoolExhausted);
                };
                self.offers.retain(|_, (k, _)| *k != key);
                self.offers.insert(
                    addr,
                    (key, now.saturating_add(u64::from(self.cfg.offer_hold))),
                );
                let mut r = self.reply(req, MessageType::Offer, addr);
                self.add_config_options(&mut r, Some(self.lease_time(req)));
                let dest = destination(&r, req);
                Decision::Reply(Reply { repr: r, dest })
            }
            MessageType::Request => {
                if let Some(sid) = req.server_id() {
                    // SELECTING
                    if sid != self.cfg.server_id {
                        self.offers.retain(|_, (k, _)| *k != key);
                        return Decision::Drop(Drop::OtherServer);
                    }
                    let Some(addr) = req.requested_ip().or(if req.ciaddr.is_unspecified() {
                        None
                    } else {
                        Some(req.ciaddr)
                    }) else {
                        return Decision::Drop(Drop::Malformed);
                    };
                    if self.acceptable(req, &key, addr, now, scope) {
                        self.ack(req, addr, now)
                    } else {
                        self.nak(req)
                    }
                } else if req.ciaddr.is_unspecified() {
                    // INIT-REBOOT
                    let Some(addr) = req.requested_ip() else {
                        return Decision::Drop(Drop::Malformed);
                    };
                    if !in_subnet(addr, self.cfg.network, self.cfg.prefix) {
                        return self.nak(req);
                    }
                    self.verify(req, &key, addr, now, scope)
                } else {
                    // RENEWING (unicast) or REBINDING (broadcast)
                    let addr = req.ciaddr;
                    if !in_subnet(addr, self.cfg.network, self.cfg.prefix) {
                        return self.nak(req);
                    }
                    self.verify(req, &key, addr, now, scope)
                }
            }
            MessageType::Release => {
                let Some(l) = self.leases.get_mut(&req.ciaddr) else {
                    return Decision::Drop(Drop::NotClientsLease);
                };
                if l.key() != key.as_slice() || l.state != LeaseState::Active {
                    return Decision::Drop(Drop::NotClientsLease);
                }
                l.state = LeaseState::Released;
                l.expires = now;
                l.cltt = now;
                l.origin = Origin::Local;
                Decision::Update(l.clone())
            }
            MessageType::Decline => {
                let Some(addr) = req.requested_ip() else {
                    return Decision::Drop(Drop::Malformed);
                };
                let ours = self.leases.get(&addr).is_some_and(|l| l.key() == key)
                    || self.offers.get(&addr).is_some_and(|(k, _)| *k == key);
                if !ours {
                    return Decision::Drop(Drop::NotClientsLease);
                }
                self.offers.remove(&addr);
                let l = Lease {
                    addr,
                    mac: Vec::new(),
                    client_id: None,
                    hostname: None,
                    cltt: now,
                    expires: now.saturating_add(u64::from(self.cfg.decline_hold)),
                    state: LeaseState::Declined,
                    origin: Origin::Local,
                };
                self.leases.insert(addr, l.clone());
                Decision::Update(l)
            }
            MessageType::Inform => {
                let mut r = self.reply(req, MessageType::Ack, Ipv4Addr::UNSPECIFIED);
                self.add_config_options(&mut r, None);
                let dest = if req.giaddr.is_unspecified() {
                    Dest::Unicast(req.ciaddr)
                } else {
                    Dest::Relay(req.giaddr)
                };
                if req.ciaddr.is_unspecified() && req.giaddr.is_unspecified() {
                    return Decision::Drop(Drop::Malformed);
                }
                Decision::Reply(Reply { repr: r, dest })
            }
            _ => Decision::Drop(Drop::NotRequest),
        }
    }

    /// INIT-REBOOT / RENEWING / REBINDING: ACK the client's own lease, NAK an address that is
    /// someone else's or not servable, stay silent without a record.
    fn verify(&self, req: &Repr, key: &[u8], addr: Ipv4Addr, now: u64, scope: Scope) -> Decision {
        if let Some(s) = self.static_for(req.mac()) {
            return if s.addr == addr {
                self.ack(req, addr, now)
            } else {
                self.nak(req)
            };
        }
        match self.leases.get(&addr) {
            Some(l) if l.key() == key && l.state != LeaseState::Declined => {
                if self.free_for(addr, key, now) && self.cfg.pool.contains(&addr) {
                    self.ack(req, addr, now)
                } else {
                    self.nak(req)
                }
            }
            Some(l) if l.busy(now) => self.nak(req),
            Some(_) => {
                if self.acceptable(req, key, addr, now, scope) {
                    self.ack(req, addr, now)
                } else {
                    self.nak(req)
                }
            }
            None if !self.cfg.pool.contains(&addr) => self.nak(req),
            None => Decision::Drop(Drop::NoRecord),
        }
    }

    /// Record a committed lease (after the partner acknowledged it).
    pub fn commit(&mut self, lease: Lease) {
        self.offers.remove(&lease.addr);
        self.leases.insert(lease.addr, lease);
    }
}

/// RFC 2131 §4.1: where a reply to `req` goes.
pub fn destination(reply: &Repr, req: &Repr) -> Dest {
    if !req.giaddr.is_unspecified() {
        return Dest::Relay(req.giaddr);
    }
    if reply.message_type == MessageType::Nak {
        return Dest::Broadcast;
    }
    if !req.ciaddr.is_unspecified() {
        return Dest::Unicast(req.ciaddr);
    }
    if req.broadcast() || req.htype != 1 || req.hlen != 6 {
        return Dest::Broadcast;
    }
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&req.chaddr[..6]);
    Dest::Link {
        ip: reply.yiaddr,
        mac,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn cfg() -> Cfg {
        Cfg {
            server_id: Ipv4Addr::new(192, 168, 1, 10),
            network: Ipv4Addr::new(192, 168, 1, 0),
            prefix: 24,
            pool: (100..=109).map(|i| Ipv4Addr::new(192, 168, 1, i)).collect(),
            routers: Some(Ipv4Addr::new(192, 168, 1, 1)),
            dns: vec![Ipv4Addr::new(192, 168, 1, 1)],
            domain: Some("lab".into()),
            default_lease: 7200,
            max_lease: 86400,
            statics: vec![StaticHost {
                mac: vec![2, 0, 0, 0, 0, 0x99],
                addr: Ipv4Addr::new(192, 168, 1, 50),
                hostname: Some("printer".into()),
            }],
            decline_hold: 600,
            offer_hold: 30,
        }
    }

    fn req(mt: MessageType, mac_last: u8) -> Repr {
        let mut chaddr = [0u8; 16];
        chaddr[..6].copy_from_slice(&[2, 0, 0, 0, 0, mac_last]);
        Repr {
            op: OP_REQUEST,
            htype: 1,
            hlen: 6,
            hops: 0,
            xid: 42,
            secs: 0,
            flags: 0,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: Ipv4Addr::UNSPECIFIED,
            siaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: Ipv4Addr::UNSPECIFIED,
            chaddr,
            message_type: mt,
            options: Vec::new(),
        }
    }

    fn ip(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(192, 168, 1, last)
    }

    fn offer_addr(d: &Decision) -> Ipv4Addr {
        match d {
            Decision::Reply(r) if r.repr.message_type == MessageType::Offer => r.repr.yiaddr,
            other => panic!("expected offer, got {other:?}"),
        }
    }

    fn dora(s: &mut Server, mac: u8, scope: Scope) -> Lease {
        let o = offer_addr(&s.handle(NOW, &req(MessageType::Discover, mac), scope));
        let mut r = req(MessageType::Request, mac);
        r.options.push((opt::SERVER_ID, ip(10).octets().to_vec()));
        r.options.push((opt::REQUESTED_IP, o.octets().to_vec()));
        match s.handle(NOW, &r, scope) {
            Decision::Commit(l, reply) => {
                assert_eq!(reply.repr.message_type, MessageType::Ack);
                assert_eq!(reply.repr.yiaddr, o);
                s.commit(l.clone());
                l
            }
            other => panic!("expected ack, got {other:?}"),
        }
    }

    #[test]
    fn discover_offer_has_the_options() {
        let mut s = Server::new(cfg());
        let d = s.handle(NOW, &req(MessageType::Discover, 1), Scope::All);
        let Decision::Reply(r) = d else { panic!() };
        assert_eq!(r.repr.yiaddr, ip(100));
        assert_eq!(r.repr.option(opt::SERVER_ID), Some(&[192, 168, 1, 10][..]));
        assert_eq!(r.repr.option(opt::ROUTER), Some(&[192, 168, 1, 1][..]));
        assert_eq!(r.repr.option(opt::DNS), Some(&[192, 168, 1, 1][..]));
        assert_eq!(
            r.repr.option(opt::SUBNET_MASK),
            Some(&[255, 255, 255, 0][..])
        );
        assert_eq!(r.repr.option(opt::DOMAIN), Some(&b"lab"[..]));
        assert_eq!(
            r.repr.option(opt::LEASE_TIME),
            Some(&7200u32.to_be_bytes()[..])
        );
        assert_eq!(
            r.repr.option(opt::RENEWAL_TIME),
            Some(&3600u32.to_be_bytes()[..])
        );
        assert_eq!(
            r.repr.option(opt::REBINDING_TIME),
            Some(&6300u32.to_be_bytes()[..])
        );
        assert_eq!(
            r.dest,
            Dest::Link {
                ip: ip(100),
                mac: [2, 0, 0, 0, 0, 1]
            }
        );
        // a second client gets another address while the first offer is held
        let o2 = offer_addr(&s.handle(NOW, &req(MessageType::Discover, 2), Scope::All));
        assert_eq!(o2, ip(101));
    }

    #[test]
    fn requested_lease_time_clamped_to_max() {
        let mut s = Server::new(cfg());
        let mut r = req(MessageType::Discover, 1);
        r.options
            .push((opt::LEASE_TIME, 1_000_000u32.to_be_bytes().to_vec()));
        let Decision::Reply(o) = s.handle(NOW, &r, Scope::All) else {
            panic!()
        };
        assert_eq!(
            o.repr.option(opt::LEASE_TIME),
            Some(&86400u32.to_be_bytes()[..])
        );
    }

    #[test]
    fn selecting_other_server_withdraws_offer() {
        let mut s = Server::new(cfg());
        let o = offer_addr(&s.handle(NOW, &req(MessageType::Discover, 1), Scope::All));
        let mut r = req(MessageType::Request, 1);
        r.options.push((opt::SERVER_ID, ip(20).octets().to_vec()));
        r.options.push((opt::REQUESTED_IP, o.octets().to_vec()));
        assert_eq!(
            s.handle(NOW, &r, Scope::All),
            Decision::Drop(Drop::OtherServer)
        );
        // the address is free again for another client
        assert_eq!(
            offer_addr(&s.handle(NOW, &req(MessageType::Discover, 2), Scope::All)),
            o
        );
    }

    #[test]
    fn selecting_someone_elses_address_is_nak() {
        let mut s = Server::new(cfg());
        let a = dora(&mut s, 1, Scope::All);
        let mut r = req(MessageType::Request, 2);
        r.options.push((opt::SERVER_ID, ip(10).octets().to_vec()));
        r.options
            .push((opt::REQUESTED_IP, a.addr.octets().to_vec()));
        let Decision::Reply(n) = s.handle(NOW, &r, Scope::All) else {
            panic!()
        };
        assert_eq!(n.repr.message_type, MessageType::Nak);
        assert_eq!(n.dest, Dest::Broadcast);
    }

    #[test]
    fn same_client_gets_same_address_again() {
        let mut s = Server::new(cfg());
        let a = dora(&mut s, 1, Scope::All);
        let b = dora(&mut s, 1, Scope::All);
        assert_eq!(a.addr, b.addr);
        // also after release
        let mut rel = req(MessageType::Release, 1);
        rel.ciaddr = a.addr;
        assert!(
            matches!(s.handle(NOW, &rel, Scope::All), Decision::Update(l) if l.state == LeaseState::Released)
        );
        assert_eq!(dora(&mut s, 1, Scope::All).addr, a.addr);
    }

    #[test]
    fn init_reboot_cases() {
        let mut s = Server::new(cfg());
        let a = dora(&mut s, 1, Scope::All);
        let mut r = req(MessageType::Request, 1);
        r.options
            .push((opt::REQUESTED_IP, a.addr.octets().to_vec()));
        assert!(matches!(
            s.handle(NOW + 10, &r, Scope::All),
            Decision::Commit(..)
        ));
        // wrong subnet -> NAK
        let mut r = req(MessageType::Request, 1);
        r.options.push((opt::REQUESTED_IP, vec![10, 9, 9, 9]));
        assert!(
            matches!(s.handle(NOW, &r, Scope::All), Decision::Reply(n) if n.repr.message_type == MessageType::Nak)
        );
        // someone else's address -> NAK
        let mut r = req(MessageType::Request, 2);
        r.options
            .push((opt::REQUESTED_IP, a.addr.octets().to_vec()));
        assert!(
            matches!(s.handle(NOW, &r, Scope::All), Decision::Reply(n) if n.repr.message_type == MessageType::Nak)
        );
        // no record for a pool address -> silent
        let mut r = req(MessageType::Request, 3);
        r.options
            .push((opt::REQUESTED_IP, ip(105).octets().to_vec()));
        assert_eq!(
            s.handle(NOW, &r, Scope::All),
            Decision::Drop(Drop::NoRecord)
        );
        // no requested address -> malformed
        assert_eq!(
            s.handle(NOW, &req(MessageType::Request, 3), Scope::All),
            Decision::Drop(Drop::Malformed)
        );
    }

    #[test]
    fn renewing_and_rebinding() {
        let mut s = Server::new(cfg());
        let a = dora(&mut s, 1, Scope::All);
        let mut r = req(MessageType::Request, 1);
        r.ciaddr = a.addr;
        match s.handle(NOW + 3600, &r, Scope::All) {
            Decision::Commit(l, reply) => {
                assert_eq!(l.expires, NOW + 3600 + 7200);
                assert_eq!(reply.dest, Dest::Unicast(a.addr));
                assert_eq!(reply.repr.ciaddr, a.addr);
            }
            other => panic!("{other:?}"),
        }
        // another client claiming it -> NAK
        let mut r = req(MessageType::Request, 2);
        r.ciaddr = a.addr;
        assert!(
            matches!(s.handle(NOW, &r, Scope::All), Decision::Reply(n) if n.repr.message_type == MessageType::Nak)
        );
    }

    #[test]
    fn decline_quarantines() {
        let mut s = Server::new(cfg());
        let a = dora(&mut s, 1, Scope::All);
        let mut d = req(MessageType::Decline, 1);
        d.options
            .push((opt::REQUESTED_IP, a.addr.octets().to_vec()));
        assert!(
            matches!(s.handle(NOW, &d, Scope::All), Decision::Update(l) if l.state == LeaseState::Declined)
        );
        // nobody gets it while quarantined, not even the same client
        assert_ne!(dora(&mut s, 1, Scope::All).addr, a.addr);
        assert_ne!(dora(&mut s, 2, Scope::All).addr, a.addr);
        // a stranger cannot decline an address it does not hold
        let mut d = req(MessageType::Decline, 7);
        d.options
            .push((opt::REQUESTED_IP, ip(109).octets().to_vec()));
        assert_eq!(
            s.handle(NOW, &d, Scope::All),
            Decision::Drop(Drop::NotClientsLease)
        );
        // after the hold it comes back
        s.reclaim(NOW + 601);
        let mut fresh = Server::new(cfg());
        for l in s.leases() {
            fresh.merge(l.clone());
        }
        assert!(fresh.free_for(a.addr, &[9], NOW + 601));
    }

    #[test]
    fn inform_has_no_lease_time() {
        let mut s = Server::new(cfg());
        let mut r = req(MessageType::Inform, 1);
        r.ciaddr = ip(77);
        let Decision::Reply(a) = s.handle(NOW, &r, Scope::All) else {
            panic!()
        };
        assert_eq!(a.repr.message_type, MessageType::Ack);
        assert_eq!(a.repr.option(opt::LEASE_TIME), None);
        assert_eq!(a.repr.yiaddr, Ipv4Addr::UNSPECIFIED);
        assert_eq!(a.dest, Dest::Unicast(ip(77)));
    }

    #[test]
    fn static_map_wins() {
        let mut s = Server::new(cfg());
        let l = {
            let o = s.handle(NOW, &req(MessageType::Discover, 0x99), Scope::FirstHalf);
            offer_addr(&o)
        };
        assert_eq!(l, ip(50));
    }

    #[test]
    fn scopes_split_the_pool_without_overlap() {
        let mut p = Server::new(cfg());
        let mut q = Server::new(cfg());
        let mut seen = std::collections::BTreeSet::new();
        for mac in 1..=5 {
            assert!(seen.insert(dora(&mut p, mac, Scope::FirstHalf).addr));
            assert!(seen.insert(dora(&mut q, mac + 100, Scope::SecondHalf).addr));
        }
        // both halves are now full
        assert_eq!(
            p.handle(NOW, &req(MessageType::Discover, 50), Scope::FirstHalf),
            Decision::Drop(Drop::PoolExhausted)
        );
        assert_eq!(seen.len(), 10);
    }

    #[test]
    fn expired_leases_are_reused_oldest_first() {
        let mut s = Server::new(cfg());
        for mac in 1..=10 {
            dora(&mut s, mac, Scope::All);
        }
        assert_eq!(
            s.handle(NOW, &req(MessageType::Discover, 50), Scope::All),
            Decision::Drop(Drop::PoolExhausted)
        );
        let later = NOW + 7201;
        assert_eq!(s.reclaim(later).len(), 10);
        let o = s.handle(later, &req(MessageType::Discover, 50), Scope::All);
        assert!(s.cfg.pool.contains(&offer_addr(&o)));
    }

    #[test]
    fn destinations() {
        let mut r = req(MessageType::Discover, 1);
        let mut rep = r.clone();
        rep.yiaddr = ip(100);
        rep.message_type = MessageType::Offer;
        assert!(matches!(destination(&rep, &r), Dest::Link { .. }));
        r.flags = FLAG_BROADCAST;
        assert_eq!(destination(&rep, &r), Dest::Broadcast);
        r.giaddr = ip(254);
        assert_eq!(destination(&rep, &r), Dest::Relay(ip(254)));
    }

    #[test]
    fn merge_keeps_newer() {
        let mut s = Server::new(cfg());
        let a = dora(&mut s, 1, Scope::All);
        let mut older = a.clone();
        older.cltt -= 10;
        older.mac = vec![9];
        assert!(!s.merge(older.clone()));
        assert!(s.conflicts(
            &Lease {
                client_id: None,
                ..older
            },
            NOW
        ));
        let mut newer = a.clone();
        newer.cltt += 10;
        newer.origin = Origin::Partner;
        assert!(s.merge(newer));
        assert_eq!(s.lease(a.addr).unwrap().origin, Origin::Partner);
    }

    /// Two nodes in load-balancing (each answers its hash half, allocates from its pool half,
    /// and replicates every commit to the other), then one alone in partner-down serving
    /// everyone from the whole pool, then the other back after syncing: no address is ever
    /// held by two clients at once, on either node.
    #[test]
    fn two_node_simulation_never_double_allocates() {
        let mut cfg = cfg();
        cfg.pool = (100..=179).map(|i| Ipv4Addr::new(192, 168, 1, i)).collect();
        let mut a = Server::new(cfg.clone());
        let mut b = Server::new(Cfg {
            server_id: ip(20),
            ..cfg
        });
        let check = |s: &Server| {
            let mut seen: BTreeMap<Ipv4Addr, Vec<u8>> = BTreeMap::new();
            for l in s
                .leases()
                .filter(|l| l.busy(NOW) && l.state == LeaseState::Active)
            {
                assert!(seen.insert(l.addr, l.key().to_vec()).is_none());
            }
            let keys: std::collections::BTreeSet<_> = seen.values().collect();
            assert_eq!(keys.len(), seen.len(), "a client holds two addresses");
        };
        let run = |s: &mut Server, other: Option<&mut Server>, mac: u8, scope: Scope| {
            let sid = s.cfg.server_id;
            let d = s.handle(NOW, &req(MessageType::Discover, mac), scope);
            let Decision::Reply(o) = d else {
                panic!("{d:?}")
            };
            let mut r = req(MessageType::Request, mac);
            r.options.push((opt::SERVER_ID, sid.octets().to_vec()));
            r.options
                .push((opt::REQUESTED_IP, o.repr.yiaddr.octets().to_vec()));
            let Decision::Commit(l, _) = s.handle(NOW, &r, scope) else {
                panic!()
            };
            if let Some(p) = other {
                assert!(!p.conflicts(&l, NOW));
                p.merge(Lease {
                    origin: Origin::Partner,
                    ..l.clone()
                });
            }
            s.commit(l);
        };
        for mac in 0..30u8 {
            let key = [2, 0, 0, 0, 0, mac];
            if super::super::hash::server_index(None, &key) == 0 {
                run(&mut a, Some(&mut b), mac, Scope::FirstHalf);
            } else {
                run(&mut b, Some(&mut a), mac, Scope::SecondHalf);
            }
        }
        check(&a);
        check(&b);
        // b is down: a serves old and new clients from the whole pool
        for mac in 0..60u8 {
            run(&mut a, None, mac, Scope::All);
        }
        check(&a);
        // b returns and syncs from a
        for l in a.leases().cloned().collect::<Vec<_>>() {
            b.merge(l);
        }
        check(&b);
        assert_eq!(
            a.leases().filter(|l| l.busy(NOW)).count(),
            b.leases().filter(|l| l.busy(NOW)).count()
        );
    }
}
