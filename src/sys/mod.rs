//! Thin OS adapters: rtnetlink, nftables, raw sockets, sysctl, mounts, conntrack.
pub mod nft;
pub mod sysctl;
