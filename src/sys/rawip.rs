//! Raw IP sockets for one IP protocol on one device (CARP = 112, state sync = 240), multicast
//! membership included. IPv4 reads include the IP header (Linux raw-socket semantics); IPv6 reads
//! do not, so the hop limit comes from a control message.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{self, ControlMessageOwned, MsgFlags, SockaddrStorage, sockopt};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::unix::AsyncFd;

/// One datagram read off the socket.
#[derive(Debug, Clone, Copy)]
pub struct Received {
    pub len: usize,
    pub src: IpAddr,
    /// IPv6 hop limit (IPv4 keeps its TTL in the header inside the buffer).
    pub hop_limit: Option<u8>,
}

/// A raw socket for `proto` bound to one device.
pub struct RawIp {
    fd: AsyncFd<OwnedFd>,
    v6: bool,
}

fn nix_err(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// Register an owned socket with the tokio reactor.
#[allow(unsafe_code)]
fn register(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: `AsyncFd::register` needs the descriptor to stay open and to keep referring to the
    // same file description for the AsyncFd's whole life, with `as_raw_fd` always returning it.
    // `OwnedFd` owns the descriptor exclusively (it came straight from `socket(2)` via socket2 and
    // was never shared), only closes it on drop, which happens when the AsyncFd is dropped, and its
    // `as_raw_fd` returns the same number every time.
    unsafe { AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)
}

/// Receive and send buffer of every raw socket: a burst of sync packets (a bulk update is thousands of
/// datagrams) waits here while the actor works, instead of being dropped.
const SOCKBUF: usize = 4 << 20;

/// SO_RCVBUFFORCE (passes `net.core.rmem_max`, needs CAP_NET_ADMIN), else SO_RCVBUF (capped);
/// the send buffer likewise, so a burst queues in the kernel instead of in our sender.
fn set_buffers(s: &Socket, bytes: usize) -> io::Result<()> {
    if socket::setsockopt(s, sockopt::RcvBufForce, &bytes).is_err() {
        s.set_recv_buffer_size(bytes)?;
    }
    if socket::setsockopt(s, sockopt::SndBufForce, &bytes).is_err() {
        s.set_send_buffer_size(bytes)?;
    }
    Ok(())
}

impl RawIp {
    /// IPv4: bound to `dev`, TTL 255 for unicast and multicast, no loopback of our own sends, and
    /// membership of `group` (e.g. 224.0.0.18) when given.
    pub fn open_v4(
        proto: i32,
        dev: &str,
        ifindex: u32,
        group: Option<Ipv4Addr>,
    ) -> io::Result<RawIp> {
        let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(proto)))?;
        s.set_nonblocking(true)?;
        s.set_cloexec(true)?;
        s.bind_device(Some(dev.as_bytes()))?;
        s.set_ttl_v4(255)?;
        s.set_multicast_ttl_v4(255)?;
        s.set_multicast_loop_v4(false)?;
        if let Some(g) = group {
            s.join_multicast_v4_n(&g, &socket2::InterfaceIndexOrAddress::Index(ifindex))?;
        }
        set_buffers(&s, SOCKBUF)?;
        Ok(RawIp {
            fd: register(OwnedFd::from(s))?,
            v6: false,
        })
    }

    /// IPv6: bound to `dev`, hop limit 255, hop limit reported on receive, membership of `group`.
    pub fn open_v6(
        proto: i32,
        dev: &str,
        ifindex: u32,
        group: Option<Ipv6Addr>,
    ) -> io::Result<RawIp> {
        let s = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::from(proto)))?;
        s.set_nonblocking(true)?;
        s.set_cloexec(true)?;
        s.bind_device(Some(dev.as_bytes()))?;
        s.set_unicast_hops_v6(255)?;
        s.set_multicast_hops_v6(255)?;
        s.set_multicast_loop_v6(false)?;
        s.set_multicast_if_v6(ifindex)?;
        if let Some(g) = group {
            s.join_multicast_v6(&g, ifindex)?;
        }
        set_buffers(&s, SOCKBUF)?;
        let fd = OwnedFd::from(s);
        socket::setsockopt(&fd, sockopt::Ipv6RecvHopLimit, &true).map_err(nix_err)?;
        Ok(RawIp {
            fd: register(fd)?,
            v6: true,
        })
    }

    /// Wait for and read one datagram.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<Received> {
        loop {
            let mut guard = self.fd.readable().await?;
            let res = guard.try_io(|fd| {
                let mut iov = [io::IoSliceMut::new(buf)];
                let mut cmsg = nix::cmsg_space!(libc::c_int);
                let msg = socket::recvmsg::<SockaddrStorage>(
                    fd.as_raw_fd(),
                    &mut iov,
                    Some(&mut cmsg),
                    MsgFlags::MSG_DONTWAIT,
                )
                .map_err(nix_err)?;
                let mut hop_limit = None;
                if let Ok(cms) = msg.cmsgs() {
                    for c in cms {
                        if let ControlMessageOwned::Ipv6HopLimit(h) = c {
                            hop_limit = u8::try_from(h).ok();
                        }
                    }
                }
                let src = msg
                    .address
                    .and_then(|a| {
                        if let Some(v4) = a.as_sockaddr_in() {
                            Some(IpAddr::V4(v4.ip()))
                        } else {
                            a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
                        }
                    })
                    .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
                Ok(Received {
                    len: msg.bytes,
                    src,
                    hop_limit,
                })
            });
            match res {
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }

    /// Send one datagram (the payload after the IP header) to `dst`.
    pub async fn send_to(&self, payload: &[u8], dst: IpAddr, ifindex: u32) -> io::Result<()> {
        let addr: SockaddrStorage = match dst {
            IpAddr::V4(a) => SockaddrStorage::from(SocketAddr::new(IpAddr::V4(a), 0)),
            IpAddr::V6(a) => {
                let scope =
                    if a.segments()[0] & 0xffc0 == 0xfe80 || a.segments()[0] & 0xff0f == 0xff02 {
                        ifindex
                    } else {
                        0
                    };
                SockaddrStorage::from(std::net::SocketAddrV6::new(a, 0, 0, scope))
            }
        };
        if self.v6 != dst.is_ipv6() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "address family mismatch",
            ));
        }
        loop {
            let mut guard = self.fd.writable().await?;
            match guard.try_io(|fd| {
                socket::sendto(fd.as_raw_fd(), payload, &addr, MsgFlags::empty()).map_err(nix_err)
            }) {
                Ok(r) => return r.map(|_| ()),
                Err(_would_block) => continue,
            }
        }
    }
}
