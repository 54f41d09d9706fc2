//! Telling the segment that an address moved: gratuitous ARP (IPv4) and unsolicited neighbour
//! advertisements (IPv6), sent from the device's own MAC (tandem, like ucarp, moves addresses, not MACs).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use pnet::datalink::{self, Channel};

use super::rawip::RawIp;

/// A gratuitous ARP request for `ip` from `mac` (sender = target = ip), to broadcast.
pub fn garp_frame(mac: [u8; 6], ip: Ipv4Addr) -> [u8; 42] {
    let mut f = [0u8; 42];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    f[14..16].copy_from_slice(&1u16.to_be_bytes()); // Ethernet
    f[16..18].copy_from_slice(&0x0800u16.to_be_bytes()); // IPv4
    f[18] = 6;
    f[19] = 4;
    f[20..22].copy_from_slice(&1u16.to_be_bytes()); // request
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&ip.octets());
    // target MAC stays zero
    f[38..42].copy_from_slice(&ip.octets());
    f
}

/// An unsolicited neighbour advertisement for `target` (Router + Override flags, target
/// link-layer address option). The kernel fills in the ICMPv6 checksum on raw ICMPv6 sockets.
pub fn na_message(mac: [u8; 6], target: Ipv6Addr) -> [u8; 32] {
    let mut m = [0u8; 32];
    m[0] = 136; // neighbour advertisement
    m[4] = 0xa0; // R | O
    m[8..24].copy_from_slice(&target.octets());
    m[24] = 2; // target link-layer address
    m[25] = 1; // 8 bytes
    m[26..32].copy_from_slice(&mac);
    m
}

/// Parse "aa:bb:cc:dd:ee:ff".
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in out.iter_mut() {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// Announce every address in `ips` on `dev`. Blocking for the ARP part (an AF_PACKET send).
pub async fn announce(dev: &str, ifindex: u32, mac: [u8; 6], ips: &[IpAddr]) -> io::Result<()> {
    let v4: Vec<Ipv4Addr> = ips
        .iter()
        .filter_map(|i| match i {
            IpAddr::V4(a) => Some(*a),
            _ => None,
        })
        .collect();
    let v6: Vec<Ipv6Addr> = ips
        .iter()
        .filter_map(|i| match i {
            IpAddr::V6(a) => Some(*a),
            _ => None,
        })
        .collect();
    if !v4.is_empty() {
        let dev = dev.to_string();
        tokio::task::spawn_blocking(move || send_garps(&dev, mac, &v4))
            .await
            .map_err(io::Error::other)??;
    }
    if !v6.is_empty() {
        let s = RawIp::open_v6(libc::IPPROTO_ICMPV6, dev, ifindex, None)?;
        let all_nodes = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
        for t in v6 {
            s.send_to(&na_message(mac, t), IpAddr::V6(all_nodes), ifindex)
                .await?;
        }
    }
    Ok(())
}

fn send_garps(dev: &str, mac: [u8; 6], ips: &[Ipv4Addr]) -> io::Result<()> {
    let iface = datalink::interfaces()
        .into_iter()
        .find(|i| i.name == dev)
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no device {dev}")))?;
    let (mut tx, _rx) = match datalink::channel(&iface, Default::default())? {
        Channel::Ethernet(tx, rx) => (tx, rx),
        _ => return Err(io::Error::other("unexpected datalink channel type")),
    };
    for ip in ips {
        if let Some(r) = tx.send_to(&garp_frame(mac, *ip), None) {
            r?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames() {
        let mac = [0x02, 0, 0, 0, 0, 1];
        let f = garp_frame(mac, Ipv4Addr::new(192, 168, 1, 1));
        assert_eq!(&f[12..14], &[0x08, 0x06]);
        assert_eq!(&f[28..32], &[192, 168, 1, 1]);
        assert_eq!(&f[38..42], &[192, 168, 1, 1]);
        assert_eq!(&f[32..38], &[0; 6]);
        let n = na_message(mac, "2001:db8::1".parse().unwrap());
        assert_eq!(n[0], 136);
        assert_eq!(n[4], 0xa0);
        assert_eq!(&n[26..32], &mac);
        assert_eq!(parse_mac("02:00:00:00:00:01"), Some(mac));
        assert_eq!(parse_mac("02:00:00:00:00"), None);
        assert_eq!(parse_mac("02:00:00:00:00:01:02"), None);
        assert_eq!(parse_mac("zz:00:00:00:00:01"), None);
    }
}
