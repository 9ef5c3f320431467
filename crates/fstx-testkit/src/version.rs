//! The self-verifying version codec: the content of version `n` of the thing
//! tagged `tag` (a file name, a transaction root's file, a counter) says
//! which thing and which version it is, and [`decode`] tells a complete
//! version from a torn, zeroed, corrupt or mixed one, in words.
//!
//! ```text
//! fstx-pc <tag> n=<version> len=<L> crc=<CRC-32C of the body, 8 hex digits>\n
//! <L body bytes, a-z, derived from tag and n>
//! ```
//!
//! Sizes vary between about 100 bytes and 12 KiB, so versions span several
//! blocks and a torn or mixed file shows. The same `(tag, n)` always gives
//! the same bytes.

/// The first word of every version's header.
pub const MAGIC: &str = "fstx-pc";

/// The content of version `n` of the thing tagged `tag`.
pub fn encode(tag: &str, n: u64) -> Vec<u8> {
    let len = 100 + (n.wrapping_mul(2_654_435_761) % 12_000) as usize;
    let body = body(tag, n, len);
    let mut out = format!("{MAGIC} {tag} n={n} len={len} crc={:08x}\n", crc32c(&body)).into_bytes();
    out.extend_from_slice(&body);
    out
}

fn body(tag: &str, n: u64, len: usize) -> Vec<u8> {
    let seed = tag
        .bytes()
        .fold(n, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    (0..len)
        .map(|k| b'a' + ((seed.wrapping_add(k as u64 * 7)) % 26) as u8)
        .collect()
}

/// Decodes a version of `tag`, or says in words what is wrong with it.
pub fn decode(tag: &str, bytes: &[u8]) -> Result<u64, String> {
    if bytes.is_empty() {
        return Err("is an empty file (0 bytes)".into());
    }
    if bytes.iter().all(|&b| b == 0) {
        return Err(format!("holds only zero bytes ({} bytes)", bytes.len()));
    }
    let Some(nl) = bytes.iter().position(|&b| b == b'\n') else {
        return Err(format!(
            "has no complete header ({} bytes of garbage)",
            bytes.len()
        ));
    };
    let header = String::from_utf8_lossy(&bytes[..nl]);
    let fields: Vec<&str> = header.split(' ').collect();
    let parsed = (|| {
        if fields.len() != 5 || fields[0] != MAGIC || fields[1] != tag {
            return None;
        }
        let n: u64 = fields[2].strip_prefix("n=")?.parse().ok()?;
        let len: usize = fields[3].strip_prefix("len=")?.parse().ok()?;
        let crc = u32::from_str_radix(fields[4].strip_prefix("crc=")?, 16).ok()?;
        Some((n, len, crc))
    })();
    let Some((n, len, crc)) = parsed else {
        return Err(format!("has a corrupt header {header:?}"));
    };
    let got = &bytes[nl + 1..];
    if got.len() != len {
        return Err(format!(
            "is torn: version {n} should have {len} body bytes, it has {}",
            got.len()
        ));
    }
    if crc32c(got) != crc {
        #[allow(clippy::naive_bytecount)] // an error message, not a hot path
        let zeros = got.iter().filter(|b| **b == 0).count();
        return Err(format!(
            "has the header of version {n} but a body that fails its checksum ({zeros} of {len} bytes are zero)"
        ));
    }
    if bytes != encode(tag, n) {
        return Err(format!("mixes version {n} with other data"));
    }
    Ok(n)
}

/// CRC-32C (Castagnoli, reflected polynomial `0x82F6_3B78`), the checksum
/// of the header's `crc=` field.
pub fn crc32c(data: &[u8]) -> u32 {
    !data.iter().fold(!0u32, |crc, &b| {
        (crc >> 8) ^ CRC_TABLE[((crc ^ u32::from(b)) & 0xFF) as usize]
    })
}

const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 == 1 {
                (c >> 1) ^ 0x82F6_3B78
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    fn versions_verify_and_damage_is_named() {
        for n in [0, 1, 2, 17, 1000, 123_456] {
            assert_eq!(decode("w1.dat", &encode("w1.dat", n)), Ok(n));
        }
        let v = encode("w1.dat", 5);
        assert!(decode("w1.dat", &[]).unwrap_err().contains("empty"));
        assert!(decode("w1.dat", &vec![0; 4096])
            .unwrap_err()
            .contains("zero"));
        assert!(decode("w1.dat", &v[..v.len() - 1])
            .unwrap_err()
            .contains("torn"));
        let mut z = v.clone();
        let at = z.len() - 10;
        z[at..].fill(0);
        assert!(decode("w1.dat", &z).unwrap_err().contains("checksum"));
        assert!(
            decode("w2.dat", &v).is_err(),
            "another file's content is not accepted"
        );
    }

    #[test]
    fn tears_flips_and_mixes_never_verify() {
        for n in 0..50 {
            let v = encode("shared", n);
            for cut in [0, 1, v.len() / 2, v.len() - 1] {
                assert!(decode("shared", &v[..cut]).is_err(), "cut at {cut}");
            }
            let mut flipped = v.clone();
            flipped[v.len() / 3] ^= 1;
            assert!(decode("shared", &flipped).is_err());
            let other = encode("shared", n + 1);
            let mut mixed = other[..other.len() / 2].to_vec();
            mixed.extend_from_slice(&v[v.len() / 2..]);
            assert!(decode("shared", &mixed).is_err());
        }
    }
}
