//! The ids of the peer's states, kept across a restart of the daemon.
//!
//! Conntrack entries do not say who created them, and they outlive the daemon. After a restart,
//! an entry the peer's bulk did not bring back and that we do not know is either a local state
//! created meanwhile or one of the peer's that the peer removed while we were not listening. The
//! ids the last run knew as the peer's tell them apart. Written on a clean stop, read (and removed)
//! at start; a crash leaves none, and then such entries are taken for local ones.
//!
//! Format: `TDMPEER1`, a little-endian u32 count, then that many little-endian u64 state ids.

const MAGIC: &[u8; 8] = b"TDMPEER1";

pub fn encode(ids: impl ExactSizeIterator<Item = u64>) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + 8 * ids.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(ids.len() as u32).to_le_bytes());
    for id in ids {
        out.extend_from_slice(&id.to_le_bytes());
    }
    out
}

/// The ids, or why the file is not one of ours (wrong magic, count and length disagree).
pub fn decode(data: &[u8]) -> Result<Vec<u64>, &'static str> {
    let rest = data.strip_prefix(MAGIC).ok_or("not a peer-state file")?;
    let (count, ids) = rest.split_first_chunk::<4>().ok_or("truncated header")?;
    let count = u32::from_le_bytes(*count) as usize;
    if ids.len() != count.saturating_mul(8) {
        return Err("length does not match the count");
    }
    Ok(ids
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let ids = vec![1, u64::MAX, 0x0102_0304_0506_0708];
        assert_eq!(decode(&encode(ids.iter().copied())).unwrap(), ids);
        assert_eq!(
            decode(&encode(std::iter::empty())).unwrap(),
            Vec::<u64>::new()
        );
    }

    #[test]
    fn malformed_files_are_refused() {
        let good = encode([7u64, 8].into_iter());
        assert!(decode(b"").is_err());
        assert!(decode(b"TDMPEER").is_err());
        assert!(decode(b"TDMPEER2\0\0\0\0").is_err());
        assert!(decode(&good[..11]).is_err(), "truncated header");
        assert!(decode(&good[..good.len() - 1]).is_err(), "truncated id");
        let mut long = good.clone();
        long.push(0);
        assert!(decode(&long).is_err(), "trailing byte");
        let mut huge = good.clone();
        huge[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&huge).is_err(), "count beyond the data");
    }
}
