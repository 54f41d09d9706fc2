//! rtnetlink adapter: links, addresses, and a link-state monitor. Async, tokio-based.

use std::net::IpAddr;

use futures::{StreamExt, TryStreamExt};
use netlink_packet_core::NetlinkPayload;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use rtnetlink::{Handle, LinkUnspec, MulticastGroup};
use serde::Serialize;

/// What we know of one link.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LinkInfo {
    pub index: u32,
    pub name: String,
    /// Administratively up (IFF_UP).
    pub admin_up: bool,
    /// Carrier present (IFF_LOWER_UP): "link up" in CARP's sense.
    pub lower_up: bool,
    pub mac: Option<String>,
    pub mtu: Option<u32>,
}

impl LinkInfo {
    /// Up in the sense CARP and the demotion care about: admin up and carrier.
    pub fn is_up(&self) -> bool {
        self.admin_up && self.lower_up
    }

    fn from_msg(m: &LinkMessage) -> Option<LinkInfo> {
        let mut name = None;
        let mut mac = None;
        let mut mtu = None;
        for a in &m.attributes {
            match a {
                LinkAttribute::IfName(n) => name = Some(n.clone()),
                LinkAttribute::Address(b) => {
                    mac = Some(
                        b.iter()
                            .map(|x| format!("{x:02x}"))
                            .collect::<Vec<_>>()
                            .join(":"),
                    )
                }
                LinkAttribute::Mtu(v) => mtu = Some(*v),
                _ => {}
            }
        }
        Some(LinkInfo {
            index: m.header.index,
            name: name?,
            admin_up: m.header.flags.contains(LinkFlags::Up),
            lower_up: m.header.flags.contains(LinkFlags::LowerUp),
            mac,
            mtu,
        })
    }
}

/// Open an rtnetlink connection; its driver task is spawned on the current runtime.
pub fn connect() -> std::io::Result<Handle> {
    let (conn, handle, _) = rtnetlink::new_connection()?;
    tokio::spawn(conn);
    Ok(handle)
}

/// Look a link up by name. `Ok(None)` when it does not exist.
pub async fn link_by_name(h: &Handle, name: &str) -> Result<Option<LinkInfo>, rtnetlink::Error> {
    let mut s = h.link().get().match_name(name.to_string()).execute();
    match s.try_next().await {
        Ok(Some(m)) => Ok(LinkInfo::from_msg(&m)),
        Ok(None) => Ok(None),
        // ENODEV comes back as a netlink error: the link does not exist.
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(None),
        Err(e) => Err(e),
    }
}

/// All links.
pub async fn links(h: &Handle) -> Result<Vec<LinkInfo>, rtnetlink::Error> {
    let msgs: Vec<LinkMessage> = h.link().get().execute().try_collect().await?;
    Ok(msgs.iter().filter_map(LinkInfo::from_msg).collect())
}

/// Set a link administratively up.
pub async fn set_up(h: &Handle, index: u32) -> Result<(), rtnetlink::Error> {
    h.link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
}

/// Addresses on one link (prefix length included).
pub async fn addresses(h: &Handle, index: u32) -> Result<Vec<(IpAddr, u8)>, rtnetlink::Error> {
    let msgs: Vec<AddressMessage> = h
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await?;
    Ok(msgs
        .iter()
        .filter(|m| m.header.index == index)
        .filter_map(|m| {
            // IFA_LOCAL is the address for point-to-point links; IFA_ADDRESS otherwise.
            let local = m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(ip) => Some(*ip),
                _ => None,
            });
            let addr = m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            });
            local.or(addr).map(|ip| (ip, m.header.prefix_len))
        })
        .collect())
}

/// Add an address; an address that is already there is not an error.
pub async fn add_address(
    h: &Handle,
    index: u32,
    ip: IpAddr,
    prefix: u8,
) -> Result<(), rtnetlink::Error> {
    match h.address().add(index, ip, prefix).execute().await {
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => Ok(()),
        r => r,
    }
}

/// Remove an address; an address that is not there is not an error.
pub async fn del_address(
    h: &Handle,
    index: u32,
    ip: IpAddr,
    prefix: u8,
) -> Result<(), rtnetlink::Error> {
    let msgs: Vec<AddressMessage> = h
        .address()
        .get()
        .set_link_index_filter(index)
        .set_address_filter(ip)
        .set_prefix_length_filter(prefix)
        .execute()
        .try_collect()
        .await?;
    for m in msgs {
        match h.address().del(m).execute().await {
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EADDRNOTAVAIL => {}
            r => r?,
        }
    }
    Ok(())
}

/// A link event from the kernel.
#[derive(Clone, Debug)]
pub enum LinkEvent {
    Changed(LinkInfo),
    Removed { index: u32, name: Option<String> },
}

/// Subscribe to link events. The returned receiver yields every change; the driver runs as a task.
pub fn monitor() -> std::io::Result<tokio::sync::mpsc::UnboundedReceiver<LinkEvent>> {
    let (conn, _handle, mut messages) =
        rtnetlink::new_multicast_connection(&[MulticastGroup::Link])?;
    tokio::spawn(conn);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some((msg, _)) = messages.next().await {
            let ev = match msg.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(m)) => {
                    LinkInfo::from_msg(&m).map(LinkEvent::Changed)
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(m)) => {
                    Some(LinkEvent::Removed {
                        index: m.header.index,
                        name: LinkInfo::from_msg(&m).map(|l| l.name),
                    })
                }
                _ => None,
            };
            if let Some(ev) = ev
                && tx.send(ev).is_err()
            {
                break;
            }
        }
    });
    Ok(rx)
}
