//! Thin OS adapters: rtnetlink, nftables, raw sockets, sysctl, mounts, conntrack.
pub mod announce;
pub mod atomic;
pub mod netlink;
pub mod rawip;
pub mod nft;
pub mod sysctl;
