//! Thin OS adapters: rtnetlink, nftables, raw sockets, sysctl, mounts, conntrack.
