//! The Linux conntrack table over ctnetlink: dump, events, create/update/delete (with NAT).
//!
//! Sockets live in the network namespace of the thread that opens them. Requests are
//! pipelined: [`Conntrack::create_batch`] packs many `CT_NEW` messages into one `send` (the
//! kernel handles them in that call) and then collects one ack per message.
//!
//! NAT entries are injected the way the kernel wants them: the reply tuple sent is the plain
//! inverse of the original tuple, and `CTA_NAT_SRC`/`CTA_NAT_DST` carry the translation, so the
//! kernel runs its NAT setup, sets `IPS_SRC_NAT`/`IPS_DST_NAT` and rewrites the reply tuple.

pub mod codec;
pub mod injector;

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use futures::Stream;
use netlink_sys::Socket;
use tokio::io::unix::AsyncFd;

use codec::{IPPROTO_ICMP, IPPROTO_ICMPV6, Writer};

pub use codec::status as status_bits;
pub use codec::tcp_flag;

/// TCP conntrack states (`enum tcp_conntrack`).
pub mod tcp_state {
    pub const NONE: u8 = 0;
    pub const SYN_SENT: u8 = 1;
    pub const SYN_RECV: u8 = 2;
    pub const ESTABLISHED: u8 = 3;
    pub const FIN_WAIT: u8 = 4;
    pub const CLOSE_WAIT: u8 = 5;
    pub const LAST_ACK: u8 = 6;
    pub const TIME_WAIT: u8 = 7;
    pub const CLOSE: u8 = 8;
    pub const SYN_SENT2: u8 = 9;
}

/// One direction of a connection. Ports are used for TCP/UDP (and other port protocols),
/// the `icmp_*` fields for ICMP and ICMPv6; the unused ones are 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tuple {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
    pub icmp_id: u16,
    pub icmp_type: u8,
    pub icmp_code: u8,
}

impl Default for Tuple {
    fn default() -> Tuple {
        Tuple {
            src: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            dst: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            proto: 0,
            sport: 0,
            dport: 0,
            icmp_id: 0,
            icmp_type: 0,
            icmp_code: 0,
        }
    }
}

impl Tuple {
    fn is_icmp(&self) -> bool {
        self.proto == IPPROTO_ICMP || self.proto == IPPROTO_ICMPV6
    }

    /// The plain inverse (what the reply tuple is without NAT). ICMP queries map to their
    /// answers (echo → echo reply, …) as the kernel's `invert_tuple` does.
    pub fn inverse(&self) -> Tuple {
        let icmp_type = match (self.proto, self.icmp_type) {
            (IPPROTO_ICMP, 8) => 0,
            (IPPROTO_ICMP, 0) => 8,
            (IPPROTO_ICMP, 13) => 14,
            (IPPROTO_ICMP, 14) => 13,
            (IPPROTO_ICMP, 15) => 16,
            (IPPROTO_ICMP, 16) => 15,
            (IPPROTO_ICMP, 17) => 18,
            (IPPROTO_ICMP, 18) => 17,
            (IPPROTO_ICMPV6, 128) => 129,
            (IPPROTO_ICMPV6, 129) => 128,
            (IPPROTO_ICMPV6, 139) => 140,
            (IPPROTO_ICMPV6, 140) => 139,
            (_, t) => t,
        };
        Tuple {
            src: self.dst,
            dst: self.src,
            proto: self.proto,
            sport: self.dport,
            dport: self.sport,
            icmp_id: self.icmp_id,
            icmp_type,
            icmp_code: self.icmp_code,
        }
    }
}

/// The translations of an entry: `snat` rewrites the original source (seen as the reply's
/// destination), `dnat` the original destination (seen as the reply's source). The port is
/// `None` when it is unchanged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Nat {
    pub snat: Option<(IpAddr, Option<u16>)>,
    pub dnat: Option<(IpAddr, Option<u16>)>,
}

/// One conntrack entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Entry {
    pub orig: Tuple,
    /// The reply tuple as the kernel reports it (translated when NAT applies).
    pub reply: Tuple,
    /// `IPS_*` bits, see [`status_bits`].
    pub status: u32,
    /// TCP state, see [`tcp_state`].
    pub tcp_state: Option<u8>,
    /// TCP conntrack flags (original, reply), see [`tcp_flag`].
    pub tcp_flags: Option<(u8, u8)>,
    /// TCP window scale (original, reply).
    pub tcp_wscale: Option<(u8, u8)>,
    /// Seconds left.
    pub timeout: u32,
    pub mark: u32,
    pub zone: u16,
    /// The kernel's `CTA_ID`; ignored on create.
    pub id: Option<u32>,
    /// Conntrack labels, bit `n` = label `n` (`ct label n` in nft). Written on create only. The
    /// kernel gives an entry room for labels only while some rule uses `ct label`; otherwise
    /// the create succeeds and the labels are silently dropped.
    pub labels: u128,
}

impl Entry {
    /// The translations, from the status bits and orig vs reply. A direction counts as
    /// translated when its NAT bit is set or the addresses/ports differ from the inverse.
    pub fn nat(&self) -> Nat {
        let r = &self.reply;
        // An all-zero reply (an entry built by hand without one) means "no NAT".
        if r == &Tuple::default() {
            return Nat::default();
        }
        let plain = self.orig.inverse();
        let ports = !self.orig.is_icmp();
        let sport_moved = ports && r.dport != plain.dport;
        let dport_moved = ports && r.sport != plain.sport;
        Nat {
            snat: (r.dst != plain.dst || sport_moved)
                .then_some((r.dst, sport_moved.then_some(r.dport))),
            dnat: (r.src != plain.src || dport_moved)
                .then_some((r.src, dport_moved.then_some(r.sport))),
        }
    }

    /// The identity of the entry in the kernel table: original tuple and zone.
    pub fn key(&self) -> (Tuple, u16) {
        (self.orig, self.zone)
    }
}

/// A change in the kernel table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    New(Entry),
    Update(Entry),
    Destroy(Entry),
    /// The event socket overflowed (ENOBUFS): events were lost, resync with a dump.
    Overrun,
}

/// A ctnetlink failure.
#[derive(Debug)]
pub enum Error {
    Io(io::Error),
    /// The kernel answered the request `op` with errno `code` (positive).
    Netlink {
        code: i32,
        op: &'static str,
    },
    Decode(String),
}

impl Error {
    /// The errno if this is a kernel or socket error.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Io(e) => e.raw_os_error(),
            Error::Netlink { code, .. } => Some(*code),
            Error::Decode(_) => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "ctnetlink socket: {e}"),
            Error::Netlink { code, op } => {
                let e = nix::errno::Errno::from_raw(*code);
                write!(f, "ctnetlink {op}: {e:?} ({})", e.desc())
            }
            Error::Decode(s) => write!(f, "ctnetlink decode: {s}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        Error::Io(e)
    }
}

const RECV_BUF: usize = 256 * 1024;
/// Bytes of requests per `send`; the acks of one chunk must fit the receive buffer.
const CHUNK_BYTES: usize = 128 * 1024;
const REQ_RCVBUF: usize = 8 * 1024 * 1024;
const EVENT_RCVBUF: usize = 8 * 1024 * 1024;

fn open_socket(rcvbuf: usize) -> io::Result<(Socket, u32)> {
    let mut s = Socket::new(codec::NETLINK_NETFILTER)?;
    let addr = s.bind_auto()?;
    // SO_RCVBUFFORCE passes rmem_max (needs CAP_NET_ADMIN); fall back to SO_RCVBUF.
    if nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::RcvBufForce, &rcvbuf).is_err() {
        s.set_rx_buf_sz(rcvbuf)?;
    }
    // Error acks without the echoed request keep the receive buffer small.
    let _ = s.set_cap_ack(true);
    s.set_non_blocking(true)?;
    Ok((s, addr.port_number()))
}

/// Registers a netlink socket with the tokio reactor.
#[allow(unsafe_code)]
fn register(s: Socket) -> io::Result<AsyncFd<Socket>> {
    // SAFETY: `AsyncFd::register` needs the descriptor to stay open and to keep referring to the
    // same file description for the AsyncFd's whole life, with `as_raw_fd` always returning it.
    // `netlink_sys::Socket` owns its descriptor exclusively (it came from `socket(2)` in
    // `Socket::new` and is moved in here, never duplicated), closes it only in its `Drop`, which
    // runs when the AsyncFd drops it, and `as_raw_fd` returns that same stored number every time.
    unsafe { AsyncFd::register(s) }.map_err(|e| e.into_parts().1)
}

struct Inner {
    fd: AsyncFd<Socket>,
    seq: u32,
    rbuf: Vec<u8>,
}

impl Inner {
    fn next_seq(&mut self, n: usize) -> u32 {
        let s = self.seq;
        self.seq = self.seq.wrapping_add(n as u32);
        s
    }

    fn send(&self, buf: &[u8]) -> io::Result<()> {
        // A send to the kernel is handled synchronously within the call.
        let n = self.fd.get_ref().send(buf, 0)?;
        if n != buf.len() {
            return Err(io::Error::other("short netlink send"));
        }
        Ok(())
    }

    /// Receives one datagram into `rbuf`.
    async fn recv(&mut self) -> io::Result<()> {
        loop {
            let mut guard = self.fd.readable().await?;
            self.rbuf.clear();
            let rbuf = &mut self.rbuf;
            match guard.try_io(|s| s.get_ref().recv(rbuf, 0)) {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }
}

/// A ctnetlink request socket in the current network namespace.
pub struct Conntrack {
    inner: tokio::sync::Mutex<Inner>,
    portid: u32,
}

impl Conntrack {
    /// Opens the socket in the calling thread's network namespace. Needs a tokio runtime.
    pub fn open() -> io::Result<Conntrack> {
        let (s, portid) = open_socket(REQ_RCVBUF)?;
        Ok(Conntrack {
            inner: tokio::sync::Mutex::new(Inner {
                fd: register(s)?,
                seq: 1,
                rbuf: Vec::with_capacity(RECV_BUF),
            }),
            portid,
        })
    }

    /// The netlink port id; events caused by this socket's requests carry it
    /// (see [`EventStream::ignore_portid`]).
    pub fn portid(&self) -> u32 {
        self.portid
    }

    /// All entries, IPv4 and IPv6. Entries that fail to decode are skipped and counted in
    /// the second value of [`Conntrack::dump_counted`]; this drops the count.
    pub async fn dump(&self) -> Result<Vec<Entry>, Error> {
        Ok(self.dump_counted().await?.0)
    }

    /// Like [`Conntrack::dump`], also returning how many entries were skipped as malformed.
    pub async fn dump_counted(&self) -> Result<(Vec<Entry>, usize), Error> {
        let mut out = Vec::new();
        let bad = self
            .dump_with(|chunk| {
                out.extend(chunk);
                std::future::ready(())
            })
            .await?;
        Ok((out, bad))
    }

    /// Dumps the table chunk by chunk (the entries of one received datagram at a time, awaiting
    /// `f` before reading on), so a large table is never held in memory at once. Returns how
    /// many entries were skipped as malformed.
    pub async fn dump_with<F, Fut>(&self, mut f: F) -> Result<usize, Error>
    where
        F: FnMut(Vec<Entry>) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let mut inner = self.inner.lock().await;
        let seq = inner.next_seq(1);
        let mut w = Writer::new();
        w.dump(seq);
        inner.send(&w.buf)?;
        let mut bad = 0usize;
        loop {
            inner.recv().await?;
            let mut chunk = Vec::new();
            let mut done = false;
            for m in codec::messages(&inner.rbuf) {
                let m = m?;
                if m.seq != seq {
                    continue;
                }
                match m.ty {
                    codec::NLMSG_DONE => {
                        done = true;
                        break;
                    }
                    codec::NLMSG_ERROR => {
                        let (code, _) = codec::parse_error(&m)?;
                        if code != 0 {
                            return Err(Error::Netlink { code, op: "dump" });
                        }
                    }
                    codec::NLMSG_OVERRUN => return Err(Error::Decode("dump overrun".into())),
                    codec::MSG_CT_NEW => match codec::parse_entry(m.payload) {
                        Ok(e) => chunk.push(e),
                        Err(_) => bad += 1,
                    },
                    _ => {}
                }
            }
            if !chunk.is_empty() {
                f(chunk).await;
            }
            if done {
                return Ok(bad);
            }
        }
    }

    /// Number of entries in this namespace's table.
    pub async fn count(&self) -> Result<usize, Error> {
        let mut inner = self.inner.lock().await;
        let seq = inner.next_seq(1);
        let mut w = Writer::new();
        w.stats(seq);
        inner.send(&w.buf)?;
        let mut count = None;
        loop {
            inner.recv().await?;
            for m in codec::messages(&inner.rbuf) {
                let m = m?;
                if m.seq != seq {
                    continue;
                }
                match m.ty {
                    codec::NLMSG_ERROR => {
                        let (code, _) = codec::parse_error(&m)?;
                        if code != 0 {
                            return Err(Error::Netlink { code, op: "count" });
                        }
                        return count
                            .map(|c: u32| c as usize)
                            .ok_or_else(|| Error::Decode("stats: no answer before ack".into()));
                    }
                    codec::MSG_CT_GET_STATS => count = Some(codec::parse_count(m.payload)?),
                    _ => {}
                }
            }
        }
    }

    /// Sends one request per item (packed into few `send`s) and collects every ack.
    async fn batch<T>(
        &self,
        items: &[T],
        op: &'static str,
        mut enc: impl FnMut(&mut Writer, &T, u32),
    ) -> Vec<Result<(), Error>> {
        let mut results: Vec<Option<Result<(), Error>>> = (0..items.len()).map(|_| None).collect();
        let mut inner = self.inner.lock().await;
        let mut start = 0;
        let mut w = Writer::new();
        while start < items.len() {
            w.buf.clear();
            let base = inner.next_seq(0);
            let mut end = start;
            while end < items.len() && w.buf.len() < CHUNK_BYTES {
                enc(&mut w, &items[end], base.wrapping_add((end - start) as u32));
                w.set_ack(false);
                end += 1;
            }
            w.set_ack(true);
            inner.next_seq(end - start);
            if let Err(e) = inner.send(&w.buf) {
                for r in &mut results[start..end] {
                    *r = Some(Err(Error::Io(copy_io(&e))));
                }
                start = end;
                continue;
            }
            // Only the last request of a chunk asks for an ack: the kernel handles the whole
            // chunk inside `send`, in order, and always answers a failed request with an error,
            // so once the last ack is in, every request without an error has succeeded.
            let last = end - start - 1;
            let mut done = false;
            while !done {
                if let Err(e) = inner.recv().await {
                    for r in results[start..end].iter_mut().filter(|r| r.is_none()) {
                        *r = Some(Err(Error::Io(copy_io(&e))));
                    }
                    break;
                }
                for m in codec::messages(&inner.rbuf) {
                    let Ok(m) = m else { break };
                    if m.ty != codec::NLMSG_ERROR {
                        continue;
                    }
                    let Ok((code, seq)) = codec::parse_error(&m) else {
                        continue;
                    };
                    let idx = seq.wrapping_sub(base) as usize;
                    if idx > last {
                        continue;
                    }
                    results[start + idx] = Some(if code == 0 {
                        Ok(())
                    } else {
                        Err(Error::Netlink { code, op })
                    });
                    done |= idx == last;
                }
            }
            if done {
                for r in results[start..end].iter_mut().filter(|r| r.is_none()) {
                    *r = Some(Ok(()));
                }
            }
            start = end;
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(Error::Decode("no ack".into()))))
            .collect()
    }

    /// Inserts an entry (fails with EEXIST if it exists). NAT entries are sent as the
    /// un-NATed reply tuple plus `CTA_NAT_SRC`/`CTA_NAT_DST`; TCP entries get BE_LIBERAL.
    pub async fn create(&self, e: &Entry) -> Result<(), Error> {
        one(self.create_batch(std::slice::from_ref(e)).await)
    }

    /// [`Conntrack::create`] for many entries, pipelined; one result per entry, in order.
    pub async fn create_batch(&self, entries: &[Entry]) -> Vec<Result<(), Error>> {
        self.batch(entries, "create", |w, e, seq| w.create(e, seq))
            .await
    }

    /// Changes timeout, mark, TCP state/flags (and sets ASSURED) of an existing entry.
    pub async fn update(&self, e: &Entry) -> Result<(), Error> {
        one(self.update_batch(std::slice::from_ref(e)).await)
    }

    /// [`Conntrack::update`] for many entries, pipelined.
    pub async fn update_batch(&self, entries: &[Entry]) -> Vec<Result<(), Error>> {
        self.batch(entries, "update", |w, e, seq| w.update(e, seq))
            .await
    }

    /// Creates the entry, or updates it if it exists.
    pub async fn upsert(&self, e: &Entry) -> Result<(), Error> {
        one(self.upsert_batch(std::slice::from_ref(e)).await)
    }

    /// [`Conntrack::upsert`] for many entries: a create batch, then an update batch for
    /// those that existed.
    pub async fn upsert_batch(&self, entries: &[Entry]) -> Vec<Result<(), Error>> {
        let mut res = self.create_batch(entries).await;
        let existing: Vec<usize> = res
            .iter()
            .enumerate()
            .filter(|(_, r)| matches!(r, Err(Error::Netlink { code, .. }) if *code == libc::EEXIST))
            .map(|(i, _)| i)
            .collect();
        if existing.is_empty() {
            return res;
        }
        let again: Vec<Entry> = existing.iter().map(|&i| entries[i].clone()).collect();
        for (i, r) in existing.into_iter().zip(self.update_batch(&again).await) {
            res[i] = r;
        }
        res
    }

    /// Deletes the entry with this original tuple in `zone`; a missing entry is not an error.
    pub async fn delete(&self, key: &Tuple, zone: u16) -> Result<(), Error> {
        one(self.delete_batch(&[(*key, zone)]).await)
    }

    /// [`Conntrack::delete`] for many keys, pipelined.
    pub async fn delete_batch(&self, keys: &[(Tuple, u16)]) -> Vec<Result<(), Error>> {
        self.batch(keys, "delete", |w, (t, z), seq| w.delete(t, *z, seq))
            .await
            .into_iter()
            .map(|r| match r {
                Err(Error::Netlink { code, .. }) if code == libc::ENOENT => Ok(()),
                r => r,
            })
            .collect()
    }
}

/// An `io::Error` for each of several failed requests, keeping the errno.
fn copy_io(e: &io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::new(e.kind(), e.to_string()),
    }
}

fn one(mut v: Vec<Result<(), Error>>) -> Result<(), Error> {
    v.pop()
        .unwrap_or_else(|| Err(Error::Decode("no ack".into())))
}

/// Decodes one event datagram into `out`; returns how many messages failed to decode.
pub fn decode_events(buf: &[u8], ignore: Option<u32>, out: &mut VecDeque<Event>) -> usize {
    let mut ignored = 0;
    let ignore: Vec<u32> = ignore.into_iter().collect();
    decode_events_counted(buf, &ignore, out, &mut ignored)
}

/// [`decode_events`], counting the messages dropped for coming from `ignore` in `ignored`.
pub fn decode_events_counted(
    buf: &[u8],
    ignore: &[u32],
    out: &mut VecDeque<Event>,
    ignored: &mut u64,
) -> usize {
    let mut bad = 0;
    for m in codec::messages(buf) {
        let m = match m {
            Ok(m) => m,
            Err(_) => {
                bad += 1;
                break;
            }
        };
        if m.pid != 0 && ignore.contains(&m.pid) {
            *ignored += 1;
            continue;
        }
        let is_new = m.flags & (codec::NLM_F_CREATE | codec::NLM_F_EXCL) != 0;
        let ev = match m.ty {
            codec::MSG_CT_NEW => codec::parse_entry(m.payload).map(|e| {
                if is_new {
                    Event::New(e)
                } else {
                    Event::Update(e)
                }
            }),
            codec::MSG_CT_DELETE => codec::parse_entry(m.payload).map(Event::Destroy),
            _ => continue,
        };
        match ev {
            Ok(ev) => out.push_back(ev),
            Err(_) => bad += 1,
        }
    }
    bad
}

/// Conntrack NEW/UPDATE/DESTROY events of the current network namespace.
pub struct EventStream {
    fd: Arc<AsyncFd<Socket>>,
    buf: Vec<u8>,
    pending: VecDeque<Event>,
    decode_errors: u64,
    overruns: u64,
    ignore: Vec<u32>,
    ignored: u64,
}

/// Switches an [`EventStream`]'s NEW events on and off (a handle that may outlive the stream).
///
/// The kernel builds a NEW event for every entry created, injected ones included, only while
/// some socket of the namespace listens to the NEW group; building it is about a quarter of the
/// kernel's work per injected entry. While NEW is off, entries created meanwhile are seen only
/// by a later dump (UPDATE and DESTROY events keep flowing).
#[derive(Clone)]
pub struct NewEvents {
    fd: Arc<AsyncFd<Socket>>,
}

impl NewEvents {
    pub fn set(&self, on: bool) -> io::Result<()> {
        let s = self.fd.get_ref();
        if on {
            s.add_membership(codec::GRP_NEW)
        } else {
            s.drop_membership(codec::GRP_NEW)
        }
    }
}

impl EventStream {
    /// A handle that switches this stream's NEW events on and off.
    pub fn new_events(&self) -> NewEvents {
        NewEvents {
            fd: self.fd.clone(),
        }
    }

    /// Messages that failed to decode (skipped).
    pub fn decode_errors(&self) -> u64 {
        self.decode_errors
    }

    /// ENOBUFS overruns seen (each also yielded as [`Event::Overrun`]).
    pub fn overruns(&self) -> u64 {
        self.overruns
    }

    /// Events of the ignored port that reached user space (0 while the kernel filter works).
    pub fn ignored_in_user_space(&self) -> u64 {
        self.ignored
    }

    /// Drops events caused by requests of this netlink port (e.g. [`Conntrack::portid`]), so
    /// entries we inject are not echoed.
    ///
    /// The kernel drops them before they are queued (a socket filter on `nlmsg_pid`), so a bulk
    /// injection of 100k entries neither costs 100k wake-ups nor overruns the event queue; the
    /// same check also runs here in case the filter could not be attached.
    pub fn ignore_portid(&mut self, portid: u32) {
        self.ignore_portids(&[portid]);
    }

    /// [`EventStream::ignore_portid`] for several ports (e.g. one per injection worker).
    pub fn ignore_portids(&mut self, portids: &[u32]) {
        self.ignore = portids.to_vec();
        let prog = portid_filter(portids);
        if let Err(e) = socket2::SockRef::from(self.fd.get_ref()).attach_filter(&prog) {
            tracing::debug!("conntrack event filter not attached ({e}); filtering in user space");
        }
    }
}

/// A classic BPF program that drops netlink messages whose `nlmsg_pid` is one of `portids` (the
/// port of the request that caused the event) and accepts everything else. BPF loads are
/// big-endian, `nlmsg_pid` is in host order: each constant is the host-order bytes read as
/// big-endian. At most 250 ports (a jump offset is 8 bits); more are filtered in user space.
fn portid_filter(portids: &[u32]) -> Vec<socket2::SockFilter> {
    const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const RET_K: u16 = 0x06; // BPF_RET | BPF_K
    const NLMSG_PID_OFFSET: u32 = 12;
    let ports = &portids[..portids.len().min(250)];
    let n = ports.len();
    let mut prog = vec![socket2::SockFilter::new(LD_W_ABS, 0, 0, NLMSG_PID_OFFSET)];
    for (i, p) in ports.iter().enumerate() {
        let k = u32::from_be_bytes(p.to_ne_bytes());
        // Equal: jump to "drop" (after the remaining compares and "accept").
        let to_drop = (n - i) as u8; // remaining compares after this one + accept
        prog.push(socket2::SockFilter::new(JEQ_K, to_drop, 0, k));
    }
    prog.push(socket2::SockFilter::new(RET_K, 0, 0, u32::MAX));
    prog.push(socket2::SockFilter::new(RET_K, 0, 0, 0));
    prog
}

impl Stream for EventStream {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        let this = &mut *self;
        loop {
            if let Some(ev) = this.pending.pop_front() {
                return Poll::Ready(Some(ev));
            }
            let mut guard = match ready!(this.fd.poll_read_ready(cx)) {
                Ok(g) => g,
                Err(_) => return Poll::Ready(None),
            };
            this.buf.clear();
            let buf = &mut this.buf;
            match guard.try_io(|s| s.get_ref().recv(buf, 0)) {
                Err(_would_block) => continue,
                Ok(Ok(_)) => {
                    let bad = decode_events_counted(
                        &this.buf,
                        &this.ignore,
                        &mut this.pending,
                        &mut this.ignored,
                    );
                    this.decode_errors += bad as u64;
                }
                Ok(Err(e)) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    this.overruns += 1;
                    this.pending.push_back(Event::Overrun);
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(Err(_)) => return Poll::Ready(None),
            }
        }
    }
}

/// Subscribes to NEW, UPDATE and DESTROY events with an 8 MiB receive buffer. A queue overflow
/// is reported as [`Event::Overrun`] (so `NETLINK_NO_ENOBUFS` is left off here: it would hide
/// the overrun); see [`subscribe_with`].
pub fn subscribe() -> io::Result<EventStream> {
    subscribe_with(EVENT_RCVBUF, false)
}

/// Subscribes with a given receive buffer. `reliable` sets `NETLINK_BROADCAST_SEND_ERROR` and
/// `NETLINK_NO_ENOBUFS` (conntrackd's `NetlinkEventsReliable`): the kernel then keeps and
/// re-sends events that did not fit instead of reporting ENOBUFS.
pub fn subscribe_with(rcvbuf: usize, reliable: bool) -> io::Result<EventStream> {
    let (s, _) = open_socket(rcvbuf)?;
    for g in [codec::GRP_NEW, codec::GRP_UPDATE, codec::GRP_DESTROY] {
        s.add_membership(g)?;
    }
    if reliable {
        s.set_broadcast_error(true)?;
        s.set_no_enobufs(true)?;
    }
    Ok(EventStream {
        fd: Arc::new(register(s)?),
        buf: Vec::with_capacity(RECV_BUF),
        pending: VecDeque::new(),
        decode_errors: 0,
        overruns: 0,
        ignore: Vec::new(),
        ignored: 0,
    })
}
