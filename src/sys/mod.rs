//! Thin OS adapters: rtnetlink, nftables, raw sockets, sysctl, mounts, conntrack.
pub mod announce;
pub mod atomic;
pub mod conntrack;
pub mod memory;
pub mod netlink;
pub mod nft;
pub mod rawip;
pub mod sysctl;
