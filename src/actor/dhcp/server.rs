//! One DHCPv4 server per enabled `dhcpd/<if>`, with its HA peer session.
//!
//! ```text
//!  UDP 0.0.0.0:67 (SO_BINDTODEVICE, on the actor's own event loop) ──▶ DhcpServer ──▶ replies
//!  actix-web on <if addr>:8647 ──PeerCmdMsg──▶ DhcpServer ◀──awc── heartbeats, lease4-update,
//!                                                                lease4-get-page to the partner
//!  DhcpServer ──lease──▶ db thread (group commit) ──CommittedMsg──▶ DhcpServer: held replies out
//!  1 s tick: HA machine poll (heartbeats), lease reclamation
//! ```
//! The peer session (the `DhcpPeer` of the architecture) lives in this actor so that the lease
//! table is never shared: the HTTP handlers forward each command here as a message.
//!
//! A lease change is recorded in the in-memory table at once (so the address is never offered
//! or granted to anyone else), queued for the database thread, and the ACK (or the answer to the
//! partner's `lease4-update`) is held until the transaction holding the lease is durable. The
//! socket is read on the actor's own thread, every queued datagram per wake-up, so a burst
//! costs one wake-up and no hand-over between threads.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use serde::Serialize;
use serde_json::{Value, json};

use super::db::{Committed, Db, Writer};
use super::peer::{self, answer, command, first_answer, lease_from_json, lease_to_json};
use crate::actor::StopMsg;
use crate::bus::{Bus, BusMsg};
use crate::clock;
use crate::proto::dhcp::ha::{self, Action as HaAction, Input as HaInput, Machine, Role};
use crate::proto::dhcp::hash;
use crate::proto::dhcp::server::{self as core, Decision, Dest, Lease, Origin, Reply};
use crate::wire::dhcp::{MessageType, Repr};

/// What a server needs from the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub interface: String,
    pub device: String,
    pub addr: Ipv4Addr,
    pub cfg: core::Cfg,
    pub peer: Option<Ipv4Addr>,
    pub role: Role,
    pub mode: ha::Mode,
    pub timing: ha::Timing,
    /// Wait before each database transaction (test knob; zero normally).
    pub commit_delay: Duration,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    pub rx_packets: u64,
    pub rx_malformed: u64,
    pub rx_not_ours: u64,
    pub rx_not_request: u64,
    pub rx_other_server: u64,
    pub pool_exhausted: u64,
    pub no_record: u64,
    pub not_clients_lease: u64,
    pub malformed_request: u64,
    pub offers: u64,
    pub acks: u64,
    pub naks: u64,
    pub releases: u64,
    pub declines: u64,
    pub informs: u64,
    pub tx_errors: u64,
    pub db_errors: u64,
    /// Database transactions, and the lease writes they carried (group commit: fewer
    /// transactions than writes under load).
    pub db_commits: u64,
    pub db_writes: u64,
    /// Replies held for a lease that then could not be stored, or refused because too many
    /// writes were waiting for the disk (never sent).
    pub replies_withheld: u64,
    pub updates_sent: u64,
    pub updates_failed: u64,
    /// REQUESTs left unanswered because too many lease updates were already in flight.
    pub updates_shed: u64,
    pub updates_received: u64,
    pub updates_rejected: u64,
    pub sync_leases_received: u64,
    pub link_replies_raw: u64,
    pub link_replies_broadcast: u64,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub struct DhcpServer {
    spec: Spec,
    db_path: PathBuf,
    bus: Bus,
    /// The lease database on its own thread; `None` if it could not be opened (then the server
    /// answers without storing, and says so in the log).
    writer: Option<Writer>,
    /// What waits for a queued lease to be durable, by sequence number, oldest first.
    pending: VecDeque<(u64, Waiter)>,
    core: core::Server,
    ha: Machine,
    /// Non-blocking, registered with the actor's event loop.
    sock: Option<Arc<tokio::net::UdpSocket>>,
    /// AF_PACKET sender and the device MAC, for replies to clients without an address.
    link: Option<(Box<dyn pnet::datalink::DataLinkSender>, [u8; 6])>,
    http: Option<actix_web::dev::ServerHandle>,
    client: Option<awc::Client>,
    unsent_updates: u64,
    /// `lease4-update`s sent and not yet answered.
    updates_in_flight: usize,
    /// How long the last answered (or failed) `lease4-update` took.
    last_update_latency: Duration,
    stats: Stats,
    syncing: bool,
}

/// The DHCP socket has datagrams to read.
struct Readable(std::io::Result<()>);

/// From the database thread: a transaction ended.
#[derive(Message)]
#[rtype(result = "()")]
struct CommittedMsg(Committed);

/// What is released when a queued lease is on disk.
enum Waiter {
    /// The client's ACK.
    Reply(Reply),
    /// The partner's `lease4-update` / `lease4-del`: the answer to give it.
    Peer(futures::channel::oneshot::Sender<Value>, Value),
    Nothing,
}

/// An answer to the partner, now or once the lease it carried is stored.
enum PeerAnswer {
    Now(Value),
    Later(futures::channel::oneshot::Receiver<Value>),
}

/// With this many `lease4-update`s awaiting the partner's answer and the last one slower than
/// [`SHED_AFTER`], further REQUESTs are dropped (the client retransmits) instead of queueing
/// towards the 2 s timeout. A short stall of the partner (a slow fsync) sheds nothing.
const MAX_UPDATES_IN_FLIGHT: usize = 64;
const SHED_AFTER: Duration = Duration::from_secs(1);

/// Most lease writes awaiting their transaction before new ACKs are refused.
const MAX_PENDING: usize = 65_536;

/// Receive (and send) buffer of the DHCP socket, bytes.
const RX_BUF: usize = 8 << 20;

/// Most datagrams read per wake-up before the actor looks at its mailbox again.
const RX_BATCH: usize = 64;

/// A command from the partner (or anyone reaching the HA port), answered with Kea's JSON.
#[derive(Message)]
#[rtype(result = "Value")]
pub struct PeerCmdMsg(pub Value);

#[derive(Message)]
#[rtype(result = "Vec<Value>")]
pub struct LeasesMsg;

#[derive(Message)]
#[rtype(result = "Value")]
pub struct FailoverMsg;

impl DhcpServer {
    pub fn new(spec: Spec, db_path: PathBuf, bus: Bus) -> DhcpServer {
        let now = clock::now();
        let ha = match spec.peer {
            Some(_) => Machine::new(now, spec.role, spec.mode, spec.timing),
            None => Machine::standalone(now),
        };
        DhcpServer {
            core: core::Server::new(spec.cfg.clone()),
            spec,
            db_path,
            bus,
            writer: None,
            pending: VecDeque::new(),
            ha,
            sock: None,
            link: None,
            http: None,
            client: None,
            unsent_updates: 0,
            updates_in_flight: 0,
            last_update_latency: Duration::ZERO,
            stats: Stats::default(),
            syncing: false,
        }
    }

    /// Queue a lease change for the database; `waiter` is released once it is durable.
    fn persist(&mut self, l: Lease, waiter: Waiter) {
        let Some(w) = self.writer.as_mut() else {
            // No database at all (logged at start): serve without storing.
            self.release(waiter);
            return;
        };
        if matches!(waiter, Waiter::Reply(_)) && self.pending.len() >= MAX_PENDING {
            // The disk is not keeping up at all: the client retransmits, memory stays bounded.
            self.stats.replies_withheld += 1;
            return;
        }
        match w.queue(l) {
            Some(seq) => self.pending.push_back((seq, waiter)),
            None => {
                self.stats.db_errors += 1;
                tracing::warn!("lease database thread is gone; lease not stored");
                self.withhold(waiter);
            }
        }
    }

    fn release(&mut self, waiter: Waiter) {
        match waiter {
            Waiter::Reply(r) => self.send(&r),
            Waiter::Peer(tx, v) => {
                let _ = tx.send(v);
            }
            Waiter::Nothing => {}
        }
    }

    fn withhold(&mut self, waiter: Waiter) {
        match waiter {
            Waiter::Reply(_) => self.stats.replies_withheld += 1,
            Waiter::Peer(tx, _) => {
                let _ = tx.send(answer(1, "cannot store the lease", None));
            }
            Waiter::Nothing => {}
        }
    }

    fn on_committed(&mut self, c: Committed) {
        self.stats.db_commits += 1;
        self.stats.db_writes += c.leases as u64;
        if !c.ok {
            self.stats.db_errors += c.leases as u64;
            tracing::warn!(
                leases = c.leases,
                "cannot store leases: {}",
                c.error.as_deref().unwrap_or("?")
            );
        }
        while self.pending.front().is_some_and(|(seq, _)| *seq <= c.upto) {
            let Some((_, w)) = self.pending.pop_front() else {
                break;
            };
            if c.ok {
                self.release(w);
            } else {
                self.withhold(w);
            }
        }
    }

    fn open_socket(&self) -> std::io::Result<UdpSocket> {
        use socket2::{Domain, Protocol, Socket, Type};
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        s.set_reuse_address(true)?;
        s.set_broadcast(true)?;
        s.bind_device(Some(self.spec.device.as_bytes()))?;
        s.bind(&SocketAddr::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 67)).into())?;
        s.set_nonblocking(true)?;
        // A deep receive queue rides out a moment without CPU (the default ~200 KiB holds
        // under 100 queued requests): beyond net.core.rmem_max when we may, else what it allows.
        if nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::RcvBufForce, &RX_BUF)
            .is_err()
        {
            let _ = s.set_recv_buffer_size(RX_BUF);
        }
        // Sends do not block: the ACKs of one transaction leave in a burst, which a NIC may
        // still hold (charged to this socket) when the next burst comes.
        if nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::SndBufForce, &RX_BUF)
            .is_err()
        {
            let _ = s.set_send_buffer_size(RX_BUF);
        }
        Ok(s.into())
    }

    fn start_rx(&mut self, ctx: &mut Context<Self>) {
        let sock = match self.open_socket().and_then(tokio::net::UdpSocket::from_std) {
            Ok(s) => Arc::new(s),
            Err(e) => {
                tracing::warn!(dev = %self.spec.device, "cannot open dhcp socket: {e}; retrying");
                ctx.run_later(Duration::from_secs(2), |a, ctx| a.start_rx(ctx));
                return;
            }
        };
        self.sock = Some(sock.clone());
        // Readiness only; the handler drains the socket itself (no thread, no copy, no hop).
        ctx.add_stream(futures::stream::unfold(sock, |s| async move {
            let r = s.readable().await;
            Some((Readable(r), s))
        }));
        tracing::info!(interface = %self.spec.interface, dev = %self.spec.device, "dhcp server listening on port 67");
    }

    fn start_http(&mut self, ctx: &mut Context<Self>) {
        let Some(peer_ip) = self.spec.peer else {
            return;
        };
        use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
        let me = ctx.address();
        async fn handle(
            req: HttpRequest,
            body: web::Bytes,
            st: web::Data<(Addr<DhcpServer>, Ipv4Addr)>,
        ) -> HttpResponse {
            let (addr, peer_ip) = st.get_ref();
            let from_peer = matches!(req.peer_addr(), Some(SocketAddr::V4(a)) if a.ip() == peer_ip);
            if !from_peer {
                return HttpResponse::Forbidden().finish();
            }
            let Ok(v) = serde_json::from_slice::<Value>(&body) else {
                return HttpResponse::Ok().json(answer(1, "invalid json", None));
            };
            let listed = v.get("service").is_some();
            let r = addr
                .send(PeerCmdMsg(v))
                .await
                .unwrap_or_else(|_| answer(1, "server stopped", None));
            if listed {
                HttpResponse::Ok().json(json!([r]))
            } else {
                HttpResponse::Ok().json(r)
            }
        }
        let data = web::Data::new((me, peer_ip));
        let bound = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::PayloadConfig::new(1 << 20))
                .default_service(web::to(handle))
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(1)
        .bind((self.spec.addr, peer::PORT));
        match bound {
            Ok(srv) => {
                let srv = srv.run();
                self.http = Some(srv.handle());
                actix_rt::spawn(srv);
                tracing::info!(addr = %self.spec.addr, port = peer::PORT, peer = %peer_ip, "dhcp ha listener up");
            }
            Err(e) => {
                tracing::debug!("cannot bind dhcp ha listener yet: {e}");
                ctx.run_later(Duration::from_secs(1), |a, ctx| a.start_http(ctx));
            }
        }
    }

    /// POST one command to the partner; the first answer, or an error text.
    fn call(
        &self,
        cmd: Value,
    ) -> impl std::future::Future<Output = Result<Value, String>> + 'static {
        let client = self.client.clone();
        let url = self
            .spec
            .peer
            .map(|p| format!("http://{p}:{}/", peer::PORT));
        async move {
            let (Some(client), Some(url)) = (client, url) else {
                return Err("no peer".into());
            };
            let mut resp = client
                .post(url)
                .send_json(&cmd)
                .await
                .map_err(|e| e.to_string())?;
            if !resp.status().is_success() {
                return Err(format!("http status {}", resp.status()));
            }
            let v: Value = resp
                .json()
                .limit(64 << 20)
                .await
                .map_err(|e| e.to_string())?;
            Ok(first_answer(v))
        }
    }

    fn ha_input(&mut self, input: HaInput, ctx: &mut Context<Self>) {
        let acts = self.ha.handle(clock::now(), input);
        self.ha_actions(acts, ctx);
    }

    fn ha_actions(&mut self, acts: Vec<HaAction>, ctx: &mut Context<Self>) {
        for a in acts {
            match a {
                HaAction::SendHeartbeat => self.send_heartbeat(ctx),
                HaAction::StartSync => self.start_sync(ctx),
                HaAction::NotifySyncComplete => {
                    let f = self.call(command("ha-sync-complete-notify", None));
                    let g = self.call(command("dhcp-enable", None));
                    actix_rt::spawn(async move {
                        let _ = f.await;
                        let _ = g.await;
                    });
                }
                HaAction::StateChanged { old, new } => {
                    tracing::info!(interface = %self.spec.interface, from = old.as_str(), to = new.as_str(), "dhcp ha state changed");
                    self.bus.publish(BusMsg::DhcpHaChanged {
                        interface: self.spec.interface.clone(),
                        from: old.as_str().to_string(),
                        to: new.as_str().to_string(),
                    });
                }
                HaAction::ClockSkew(s) => {
                    tracing::warn!(skew_s = s, "clock skew with the dhcp partner");
                }
            }
        }
    }

    fn send_heartbeat(&mut self, ctx: &mut Context<Self>) {
        let f = self.call(command("ha-heartbeat", None));
        ctx.spawn(f.into_actor(self).map(|res, act, ctx| {
            let input = match res {
                Ok(v) if v.get("result").and_then(Value::as_u64) == Some(0) => {
                    let args = v.get("arguments").cloned().unwrap_or(Value::Null);
                    let partner = args
                        .get("state")
                        .and_then(Value::as_str)
                        .and_then(ha::State::parse);
                    let skew = args
                        .get("date-time")
                        .and_then(Value::as_str)
                        .and_then(crate::proto::dhcp::date::parse)
                        .map(|t| t as i64 - unix_now() as i64)
                        .unwrap_or(0);
                    HaInput::Heartbeat { partner, skew }
                }
                Ok(_) | Err(_) => HaInput::Unreachable,
            };
            act.ha_input(input, ctx);
        }));
    }

    fn start_sync(&mut self, ctx: &mut Context<Self>) {
        if self.syncing {
            return;
        }
        self.syncing = true;
        let client = self.client.clone();
        let url = self
            .spec
            .peer
            .map(|p| format!("http://{p}:{}/", peer::PORT));
        tracing::info!(interface = %self.spec.interface, "dhcp ha: syncing leases from the partner");
        let fut = async move {
            let (Some(client), Some(url)) = (client, url) else {
                return Err("no peer".to_string());
            };
            let post = |cmd: Value| {
                let (client, url) = (client.clone(), url.clone());
                async move {
                    let mut r = client
                        .post(url)
                        .timeout(Duration::from_secs(30))
                        .send_json(&cmd)
                        .await
                        .map_err(|e| e.to_string())?;
                    let v: Value = r.json().limit(64 << 20).await.map_err(|e| e.to_string())?;
                    Ok::<Value, String>(first_answer(v))
                }
            };
            post(command("dhcp-disable", Some(json!({"max-period": 60})))).await?;
            let mut out = Vec::new();
            let mut from = "start".to_string();
            loop {
                let v = post(command(
                    "lease4-get-page",
                    Some(json!({"from": from, "limit": 1000})),
                ))
                .await?;
                match v.get("result").and_then(Value::as_u64) {
                    Some(0) => {}
                    Some(3) => break,
                    other => return Err(format!("lease4-get-page result {other:?}")),
                }
                let leases = v
                    .pointer("/arguments/leases")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                let n = leases.len();
                let mut last = None;
                for l in &leases {
                    if let Some(l) = lease_from_json(l) {
                        last = Some(l.addr);
                        out.push(l);
                    }
                }
                match last {
                    Some(a) if n >= 1000 => from = a.to_string(),
                    _ => break,
                }
            }
            Ok(out)
        };
        ctx.spawn(fut.into_actor(self).map(|res, act, ctx| {
            act.syncing = false;
            match res {
                Ok(leases) => {
                    let n = leases.len();
                    for l in leases {
                        act.stats.sync_leases_received += 1;
                        if act.core.merge(l.clone()) {
                            act.persist(l, Waiter::Nothing);
                        }
                    }
                    tracing::info!(leases = n, "dhcp ha: sync from the partner done");
                    act.ha_input(HaInput::SyncDone, ctx);
                }
                Err(e) => {
                    tracing::warn!("dhcp ha: sync failed: {e}");
                    act.ha_input(HaInput::SyncFailed, ctx);
                }
            }
        }));
    }

    fn send(&mut self, reply: &Reply) {
        if self.sock.is_none() {
            return;
        }
        let bytes = reply.repr.to_bytes();
        let to = match reply.dest {
            Dest::Relay(ip) => SocketAddrV4::new(ip, 67),
            Dest::Unicast(ip) => SocketAddrV4::new(ip, 68),
            Dest::Broadcast => SocketAddrV4::new(Ipv4Addr::BROADCAST, 68),
            Dest::Link { ip, mac } => {
                if self.send_link(ip, mac, &bytes) {
                    self.stats.link_replies_raw += 1;
                    self.count_sent(reply);
                    return;
                }
                // No AF_PACKET socket: a broadcast, which every RFC 2131 client accepts.
                self.stats.link_replies_broadcast += 1;
                SocketAddrV4::new(Ipv4Addr::BROADCAST, 68)
            }
        };
        if let Some(sock) = &self.sock
            && let Err(e) = sock.try_send_to(&bytes, to.into())
        {
            self.stats.tx_errors += 1;
            tracing::debug!(to = %to, "dhcp send failed: {e}");
        }
        self.count_sent(reply);
    }

    /// Send to `ip` at `mac` as a hand-built frame; false if that is not possible.
    fn send_link(&mut self, ip: Ipv4Addr, mac: [u8; 6], payload: &[u8]) -> bool {
        if self.link.is_none() {
            self.link = open_link(&self.spec.device);
        }
        let Some((tx, src_mac)) = self.link.as_mut() else {
            return false;
        };
        let Some(frame) =
            crate::wire::dhcp::udp_frame(*src_mac, mac, self.spec.cfg.server_id, ip, payload)
        else {
            return false;
        };
        match tx.send_to(&frame, None) {
            Some(Ok(())) => true,
            Some(Err(e)) => {
                tracing::debug!("raw dhcp send failed: {e}");
                self.link = None;
                false
            }
            None => false,
        }
    }

    fn count_sent(&mut self, reply: &Reply) {
        match reply.repr.message_type {
            MessageType::Offer => self.stats.offers += 1,
            MessageType::Ack => self.stats.acks += 1,
            MessageType::Nak => self.stats.naks += 1,
            _ => {}
        }
    }

    /// Should this node answer `req` at all (HA filter)?
    fn mine(&self, req: &Repr) -> bool {
        let now = clock::now();
        let index = hash::server_index(req.client_id(), req.mac());
        if self.ha.serves(now, index) {
            return true;
        }
        if self.ha.disabled(now)
            || matches!(
                self.ha.state(),
                ha::State::Waiting | ha::State::Syncing | ha::State::Ready
            )
        {
            return false;
        }
        // A REQUEST answering our own offer, or a renewal of a lease we granted.
        if req.server_id() == Some(self.spec.cfg.server_id) {
            return true;
        }
        !req.ciaddr.is_unspecified()
            && self
                .core
                .lease(req.ciaddr)
                .is_some_and(|l| l.origin == Origin::Local)
    }

    fn on_packet(&mut self, bytes: &[u8], ctx: &mut Context<Self>) {
        self.stats.rx_packets += 1;
        let req = match Repr::parse_bytes(bytes) {
            Ok(r) => r,
            Err(e) => {
                self.stats.rx_malformed += 1;
                tracing::debug!("dropped dhcp packet: {e}");
                return;
            }
        };
        let other_server = req
            .server_id()
            .is_some_and(|s| s != self.spec.cfg.server_id);
        if !other_server && !self.mine(&req) {
            self.stats.rx_not_ours += 1;
            return;
        }
        let now = unix_now();
        match self.core.handle(now, &req, self.ha.scope()) {
            Decision::Reply(r) => {
                if req.message_type == MessageType::Inform {
                    self.stats.informs += 1;
                }
                self.send(&r)
            }
            Decision::Commit(lease, reply) => self.commit(lease, Some(reply), ctx),
            Decision::Update(lease) => {
                match lease.state {
                    core::LeaseState::Declined => {
                        tracing::warn!(addr = %lease.addr, "address declined by a client; held out");
                        self.stats.declines += 1;
                    }
                    _ => self.stats.releases += 1,
                }
                self.commit(lease, None, ctx)
            }
            Decision::Drop(d) => match d {
                core::Drop::NotRequest => self.stats.rx_not_request += 1,
                core::Drop::OtherServer => self.stats.rx_other_server += 1,
                core::Drop::PoolExhausted => {
                    self.stats.pool_exhausted += 1;
                    tracing::warn!(interface = %self.spec.interface, "dhcp pool exhausted");
                }
                core::Drop::NoRecord => self.stats.no_record += 1,
                core::Drop::NotClientsLease => self.stats.not_clients_lease += 1,
                core::Drop::Malformed => self.stats.malformed_request += 1,
            },
        }
    }

    /// Persist a lease change, replicate it, and send the reply: in load-balancing/hot-standby
    /// only after the partner acknowledged it (Kea); if it does not, the client gets nothing.
    fn commit(&mut self, lease: Lease, reply: Option<Reply>, ctx: &mut Context<Self>) {
        if !self.ha.needs_partner_ack() {
            if self.spec.peer.is_some() && self.ha.state() != ha::State::Standalone {
                self.unsent_updates += 1;
            }
            self.core.commit(lease.clone());
            self.persist(lease, reply.map_or(Waiter::Nothing, Waiter::Reply));
            return;
        }
        if reply.is_some()
            && self.updates_in_flight >= MAX_UPDATES_IN_FLIGHT
            && self.last_update_latency > SHED_AFTER
        {
            // Overload (the partner answers later than a client waits): the client retransmits
            // its REQUEST; queueing it behind updates that would time out only wastes the
            // partner's work and keeps the pair overloaded.
            self.stats.updates_shed += 1;
            return;
        }
        self.updates_in_flight += 1;
        self.stats.updates_sent += 1;
        let mut args = lease_to_json(&lease);
        args["force-create"] = json!(true);
        args["origin"] = json!("ha-partner");
        let f = self.call(command("lease4-update", Some(args)));
        let sent = std::time::Instant::now();
        ctx.spawn(f.into_actor(self).map(move |res, act, ctx| {
            act.updates_in_flight = act.updates_in_flight.saturating_sub(1);
            act.last_update_latency = sent.elapsed();
            let ok = matches!(&res, Ok(v) if v.get("result").and_then(Value::as_u64) == Some(0));
            if ok {
                act.ha_input(HaInput::Contact, ctx);
                act.core.commit(lease.clone());
                act.persist(lease, reply.map_or(Waiter::Nothing, Waiter::Reply));
            } else {
                act.stats.updates_failed += 1;
                // Logged at 1, 2, 4, 8, ... failures: an overload must not also flood the log.
                if act.stats.updates_failed.is_power_of_two() {
                    tracing::warn!(addr = %lease.addr, res = ?res, failed = act.stats.updates_failed, "partner did not acknowledge the lease; client not answered");
                } else {
                    tracing::debug!(addr = %lease.addr, res = ?res, "partner did not acknowledge the lease; client not answered");
                }
                if res.is_err() {
                    act.ha_input(HaInput::Unreachable, ctx);
                }
            }
        }));
    }

    fn peer_command(&mut self, v: Value, ctx: &mut Context<Self>) -> PeerAnswer {
        match self.peer_command_now(v, ctx) {
            Ok(v) => PeerAnswer::Now(v),
            Err(b) => {
                let (lease, ok) = *b;
                let (tx, rx) = futures::channel::oneshot::channel();
                self.persist(lease, Waiter::Peer(tx, ok));
                PeerAnswer::Later(rx)
            }
        }
    }

    /// The answer to a partner's command, or a lease change to store first and the answer to
    /// give once it is stored.
    fn peer_command_now(
        &mut self,
        v: Value,
        ctx: &mut Context<Self>,
    ) -> Result<Value, Box<(Lease, Value)>> {
        let name = v.get("command").and_then(Value::as_str).unwrap_or("");
        let args = v.get("arguments").cloned().unwrap_or(Value::Null);
        let now = clock::now();
        Ok(match name {
            "ha-heartbeat" => answer(
                0,
                "HA peer status.",
                Some(json!({
                    "state": self.ha.state().as_str(),
                    "date-time": crate::proto::dhcp::date::format(unix_now()),
                    "scopes": self.ha.scopes(now),
                    "unsent-update-count": self.unsent_updates,
                })),
            ),
            "lease4-update" => {
                self.stats.updates_received += 1;
                let Some(l) = lease_from_json(&args) else {
                    self.stats.updates_rejected += 1;
                    return Ok(answer(1, "malformed lease", None));
                };
                if self.core.conflicts(&l, unix_now()) {
                    self.stats.updates_rejected += 1;
                    return Ok(answer(1, "address leased to another client", None));
                }
                self.ha_input(HaInput::Contact, ctx);
                let ok = answer(0, "IPv4 lease updated.", None);
                if self.core.merge(l.clone()) {
                    // Answered once it is on disk: the partner ACKs its client on our answer.
                    return Err(Box::new((l, ok)));
                }
                ok
            }
            "lease4-del" => {
                let addr = args
                    .get("ip-address")
                    .and_then(Value::as_str)
                    .and_then(|s| s.parse::<Ipv4Addr>().ok());
                match addr.and_then(|a| self.core.lease(a).cloned()) {
                    Some(mut l) => {
                        l.state = core::LeaseState::Released;
                        l.expires = unix_now();
                        l.cltt = unix_now();
                        l.origin = Origin::Partner;
                        self.core.merge(l.clone());
                        return Err(Box::new((l, answer(0, "IPv4 lease deleted.", None))));
                    }
                    None => answer(3, "IPv4 lease not found.", None),
                }
            }
            "lease4-get-all" => {
                let leases: Vec<Value> = self.core.leases().map(lease_to_json).collect();
                answer(
                    if leases.is_empty() { 3 } else { 0 },
                    "leases",
                    Some(json!({"leases": leases})),
                )
            }
            "lease4-get-page" => {
                let from = match args.get("from").and_then(Value::as_str) {
                    Some("start") | None => None,
                    Some(s) => match s.parse::<Ipv4Addr>() {
                        Ok(a) => Some(a),
                        Err(_) => return Ok(answer(1, "bad from", None)),
                    },
                };
                let limit = args
                    .get("limit")
                    .and_then(Value::as_u64)
                    .unwrap_or(1000)
                    .clamp(1, 100_000) as usize;
                let leases: Vec<Value> = self
                    .core
                    .leases()
                    .filter(|l| from.is_none_or(|f| l.addr > f))
                    .take(limit)
                    .map(lease_to_json)
                    .collect();
                let count = leases.len();
                if count == 0 {
                    answer(
                        3,
                        "0 IPv4 lease(s) found.",
                        Some(json!({"leases": [], "count": 0})),
                    )
                } else {
                    answer(
                        0,
                        &format!("{count} IPv4 lease(s) found."),
                        Some(json!({"leases": leases, "count": count})),
                    )
                }
            }
            "dhcp-disable" => {
                let max = args
                    .get("max-period")
                    .and_then(Value::as_u64)
                    .map(Duration::from_secs);
                self.ha_input(HaInput::Disable(max), ctx);
                answer(0, "DHCPv4 service disabled", None)
            }
            "dhcp-enable" | "ha-sync-complete-notify" => {
                self.ha_input(HaInput::Enable, ctx);
                answer(0, "DHCP service re-enabled", None)
            }
            "status-get" => answer(0, "", Some(self.failover_json())),
            "list-commands" => answer(
                0,
                "",
                Some(json!([
                    "ha-heartbeat",
                    "lease4-update",
                    "lease4-del",
                    "lease4-get-all",
                    "lease4-get-page",
                    "dhcp-disable",
                    "dhcp-enable",
                    "ha-sync-complete-notify",
                    "status-get",
                    "list-commands"
                ])),
            ),
            _ => answer(2, &format!("'{name}' command not supported."), None),
        })
    }

    fn failover_json(&self) -> Value {
        json!({
            "interface": self.spec.interface,
            "device": self.spec.device,
            "server_id": self.spec.cfg.server_id,
            "peer": self.spec.peer,
            "state": self.ha.state().as_str(),
            "partner_state": self.ha.partner_state().map(|s| s.as_str()),
            "role": self.ha.role,
            "mode": self.ha.mode,
            "scope": self.ha.scope(),
            "unsent_updates": self.unsent_updates,
            "updates_in_flight": self.updates_in_flight,
            "counters": {"server": self.stats, "ha": self.ha.stats},
        })
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        let acts = self.ha.poll(clock::now());
        self.ha_actions(acts, ctx);
        for l in self.core.reclaim(unix_now()) {
            self.persist(l, Waiter::Nothing);
        }
    }
}

/// An AF_PACKET sender on `dev` (its receive side is dropped) and the device's MAC.
fn open_link(dev: &str) -> Option<(Box<dyn pnet::datalink::DataLinkSender>, [u8; 6])> {
    use pnet::datalink::{self, Channel};
    let iface = datalink::interfaces().into_iter().find(|i| i.name == dev)?;
    let mac = iface.mac?.octets();
    let cfg = datalink::Config {
        read_buffer_size: 4096,
        ..Default::default()
    };
    match datalink::channel(&iface, cfg) {
        Ok(Channel::Ethernet(tx, _rx)) => Some((tx, mac)),
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(dev, "cannot open AF_PACKET socket for dhcp replies: {e}");
            None
        }
    }
}

impl Actor for DhcpServer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(4096);
        match Db::open(&self.db_path) {
            Ok(db) => {
                match db.load(&self.spec.interface) {
                    Ok(ls) => {
                        let n = ls.len();
                        for l in ls {
                            self.core.merge(l);
                        }
                        tracing::info!(interface = %self.spec.interface, leases = n, "dhcp leases loaded");
                    }
                    Err(e) => tracing::error!("cannot read leases: {e}"),
                }
                let me = ctx.address();
                let iface = self.spec.interface.clone();
                match Writer::start(db, iface, self.spec.commit_delay, move |c| {
                    me.do_send(CommittedMsg(c))
                }) {
                    Ok(w) => self.writer = Some(w),
                    Err(e) => tracing::error!("cannot start the lease database thread: {e}"),
                }
            }
            Err(e) => {
                tracing::error!(path = %self.db_path.display(), "cannot open lease database: {e}")
            }
        }
        self.client = Some(
            awc::Client::builder()
                .timeout(Duration::from_secs(2))
                .finish(),
        );
        self.start_rx(ctx);
        self.start_http(ctx);
        let ms = self.spec.timing.heartbeat.as_millis().clamp(100, 1000) as u64;
        ctx.run_interval(Duration::from_millis(ms), |a, ctx| a.tick(ctx));
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        if let Some(h) = self.http.take() {
            actix_rt::spawn(async move { h.stop(true).await });
        }
        // Lets the database thread write what is queued, then close (checkpointing the WAL).
        self.writer = None;
    }
}

impl StreamHandler<Readable> for DhcpServer {
    fn handle(&mut self, m: Readable, ctx: &mut Context<Self>) {
        if let Err(e) = m.0 {
            tracing::warn!(dev = %self.spec.device, "dhcp socket failed: {e}");
            return;
        }
        let Some(sock) = self.sock.clone() else {
            return;
        };
        let mut buf = [0u8; 2048];
        for _ in 0..RX_BATCH {
            match sock.try_recv_from(&mut buf) {
                Ok((n, _)) => self.on_packet(buf.get(..n).unwrap_or_default(), ctx),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::debug!(dev = %self.spec.device, "dhcp receive failed: {e}");
                    break;
                }
            }
        }
    }

    /// The readiness stream never ends; if it did, the server would keep running.
    fn finished(&mut self, _: &mut Context<Self>) {}
}

impl Handler<CommittedMsg> for DhcpServer {
    type Result = ();
    fn handle(&mut self, m: CommittedMsg, _: &mut Context<Self>) {
        self.on_committed(m.0);
    }
}

impl Handler<PeerCmdMsg> for DhcpServer {
    type Result = ResponseFuture<Value>;
    fn handle(&mut self, m: PeerCmdMsg, ctx: &mut Context<Self>) -> Self::Result {
        match self.peer_command(m.0, ctx) {
            PeerAnswer::Now(v) => Box::pin(async move { v }),
            PeerAnswer::Later(rx) => Box::pin(async move {
                rx.await
                    .unwrap_or_else(|_| answer(1, "server stopped before storing the lease", None))
            }),
        }
    }
}

impl Handler<LeasesMsg> for DhcpServer {
    type Result = MessageResult<LeasesMsg>;
    fn handle(&mut self, _: LeasesMsg, _: &mut Context<Self>) -> Self::Result {
        let now = unix_now();
        MessageResult(
            self.core
                .leases()
                .map(|l| {
                    json!({
                        "interface": self.spec.interface,
                        "address": l.addr,
                        "mac": peer::hex(&l.mac),
                        "client_id": l.client_id.as_deref().map(peer::hex),
                        "hostname": l.hostname,
                        "cltt": l.cltt,
                        "expires": l.expires,
                        "expires_in": l.expires.saturating_sub(now),
                        "state": l.state.as_str(),
                        "origin": l.origin,
                    })
                })
                .collect(),
        )
    }
}

impl Handler<FailoverMsg> for DhcpServer {
    type Result = MessageResult<FailoverMsg>;
    fn handle(&mut self, _: FailoverMsg, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.failover_json())
    }
}

impl Handler<StopMsg> for DhcpServer {
    type Result = ();
    fn handle(&mut self, _: StopMsg, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
