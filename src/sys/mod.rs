//! Thin OS adapters: rtnetlink, nftables, raw sockets, sysctl, mounts, conntrack.
pub mod netlink;
pub mod atomic;
pub mod rawip;
pub mod announce;
