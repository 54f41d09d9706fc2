//! The Internet checksum (RFC 1071): the ones' complement of the ones' complement sum of 16-bit
//! big-endian words, an odd trailing byte padded with zero.

/// The folded ones' complement sum of `data` (not inverted). A region whose checksum field is
/// correct sums to `0xffff`.
pub fn sum(data: &[u8]) -> u16 {
    let mut acc: u64 = 0;
    let mut chunks = data.chunks_exact(2);
    for word in &mut chunks {
        acc += u64::from(u16::from_be_bytes([word[0], word[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u64::from(u16::from_be_bytes([*last, 0]));
    }
    // At most 2^63 / 2^16 words before overflow: far beyond any packet. Fold the carries back in.
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The value to store in a checksum field that was zero while summing.
pub fn checksum(data: &[u8]) -> u16 {
    !sum(data)
}

/// Whether `data`, checksum field included, verifies.
pub fn verify(data: &[u8]) -> bool {
    sum(data) == 0xffff
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to ddf2.
        assert_eq!(
            sum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            0xddf2
        );
        assert_eq!(
            checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            0x220d
        );
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(sum(&[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
        assert_eq!(sum(&[]), 0);
    }

    #[test]
    fn filled_checksum_verifies() {
        let mut buf = [
            0x45, 0x00, 0x00, 0x38, 0xde, 0xad, 0x40, 0x00, 0xff, 0x70, 0, 0, 10, 0, 0, 1, 224, 0,
            0, 18,
        ];
        let c = checksum(&buf);
        buf[10..12].copy_from_slice(&c.to_be_bytes());
        assert!(verify(&buf));
        buf[3] ^= 1;
        assert!(!verify(&buf));
    }
}
