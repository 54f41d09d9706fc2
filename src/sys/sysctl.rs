//! Read and write sysctls through `/proc/sys` (of the calling thread's network namespace for
//! `net.*`).

use std::io;
use std::path::PathBuf;

/// `/proc/sys/...` of a dotted sysctl name. Names with `/` or `..` parts are refused.
pub fn path(key: &str) -> io::Result<PathBuf> {
    if key.is_empty() || key.contains('/') || key.split('.').any(|p| p.is_empty()) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad sysctl name {key:?}"),
        ));
    }
    Ok(PathBuf::from("/proc/sys").join(key.replace('.', "/")))
}

/// The current value, trimmed.
pub fn get(key: &str) -> io::Result<String> {
    Ok(std::fs::read_to_string(path(key)?)?.trim().to_string())
}

/// Set a value.
pub fn set(key: &str, value: &str) -> io::Result<()> {
    std::fs::write(path(key)?, format!("{value}\n"))
}

/// IPv4 forwarding on (`net.ipv4.ip_forward=1`), and IPv6 forwarding when `ipv6` is set.
pub fn enable_forwarding(ipv6: bool) -> io::Result<()> {
    set("net.ipv4.ip_forward", "1")?;
    if ipv6 {
        set("net.ipv6.conf.all.forwarding", "1")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(
            path("net.netfilter.nf_conntrack_tcp_loose").unwrap(),
            PathBuf::from("/proc/sys/net/netfilter/nf_conntrack_tcp_loose")
        );
        assert!(path("net/../x").is_err());
        assert!(path("net..x").is_err());
        assert!(path("").is_err());
    }
}
