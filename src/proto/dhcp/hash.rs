//! The RFC 3074 load-balancing hash (the "mixing table" of draft-ietf-dhc-loadb), as ISC and Kea
//! use it: the key is option 61 (client identifier) when present, else `chaddr[..hlen]`.
//! Kea maps the hash to a server by `h % servers`; index 0 is the primary (`server1`).

/// RFC 3074 §6: 256 distinct values in pseudo-random order.
const MIX: [u8; 256] = [
    251, 175, 119, 215, 81, 14, 79, 191, 103, 49, 181, 143, 186, 157, 0, 232, 31, 32, 55, 60, 152,
    58, 17, 237, 174, 70, 160, 144, 220, 90, 57, 223, 59, 3, 18, 140, 111, 166, 203, 196, 134, 243,
    124, 95, 222, 179, 197, 65, 180, 48, 36, 15, 107, 46, 233, 130, 165, 30, 123, 161, 209, 23, 97,
    16, 40, 91, 219, 61, 100, 10, 210, 109, 250, 127, 22, 138, 29, 108, 244, 67, 207, 9, 178, 204,
    74, 98, 126, 249, 167, 116, 34, 77, 193, 200, 121, 5, 20, 113, 71, 35, 128, 13, 182, 94, 25,
    226, 227, 199, 75, 27, 41, 245, 230, 224, 43, 225, 177, 26, 155, 150, 212, 142, 218, 115, 241,
    73, 88, 105, 39, 114, 62, 255, 192, 201, 145, 214, 168, 158, 221, 148, 154, 122, 12, 84, 82,
    163, 44, 139, 228, 236, 205, 242, 217, 11, 187, 146, 159, 64, 86, 239, 195, 42, 106, 198, 118,
    112, 184, 172, 87, 2, 173, 117, 176, 229, 247, 253, 137, 185, 99, 164, 102, 147, 45, 66, 231,
    52, 141, 211, 194, 206, 246, 238, 56, 110, 78, 248, 63, 240, 189, 93, 92, 51, 53, 183, 19, 171,
    72, 50, 33, 104, 101, 69, 8, 252, 83, 120, 76, 135, 85, 54, 202, 125, 188, 213, 96, 235, 136,
    208, 162, 129, 190, 132, 156, 38, 47, 1, 7, 254, 24, 4, 216, 131, 89, 21, 28, 133, 37, 153,
    149, 80, 170, 68, 6, 169, 234, 151,
];

/// The hash of a key: start from the length (mod 256), fold the bytes from last to first.
pub fn hash(key: &[u8]) -> u8 {
    let mut h = key.len() as u8;
    for b in key.iter().rev() {
        h = MIX[usize::from(h ^ b)];
    }
    h
}

/// The server index (0 = primary, 1 = secondary) Kea's load-balancing gives this client.
pub fn server_index(client_id: Option<&[u8]>, mac: &[u8]) -> u8 {
    hash(client_id.unwrap_or(mac)) % 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_a_permutation() {
        let mut seen = [false; 256];
        for v in MIX {
            assert!(!seen[usize::from(v)]);
            seen[usize::from(v)] = true;
        }
    }

    /// Vectors checked against a live ISC pair (dhcp.md §1.4): key = 01:00:0c:01:02:03:XX.
    #[test]
    fn isc_vectors() {
        let cases = [
            (0x04, 104),
            (0x05, 62),
            (0x06, 202),
            (0x07, 69),
            (0x08, 232),
            (0x09, 132),
            (0x0a, 106),
            (0x0b, 164),
            (0x0c, 214),
            (0x0d, 28),
            (0x0e, 165),
            (0x0f, 183),
            (0x10, 45),
            (0x11, 22),
            (0x12, 113),
            (0x13, 118),
        ];
        for (xx, h) in cases {
            let key = [0x01, 0x00, 0x0c, 0x01, 0x02, 0x03, xx];
            assert_eq!(hash(&key), h, "key ..{xx:02x}");
            assert_eq!(server_index(Some(&key), &[]), h % 2);
        }
    }

    #[test]
    fn mac_when_no_client_id_and_roughly_half() {
        let mac = [0u8, 0x0c, 1, 2, 3, 4];
        assert_eq!(server_index(None, &mac), hash(&mac) % 2);
        let mut ones = 0;
        for i in 0..=255u8 {
            ones += u32::from(server_index(None, &[2, 0, 0, 0, 0, i]));
        }
        assert!((96..=160).contains(&ones), "{ones}");
    }
}
