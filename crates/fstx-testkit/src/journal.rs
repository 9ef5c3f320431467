//! Forging transaction journals byte by byte, from the documented format
//! (`docs/design.md` §3, "Journal format"), with an independent bitwise
//! CRC-32C: hostile-journal tests write records the library's own encoder
//! would never produce (paths that escape the root, unknown versions), with
//! checksums that are valid or deliberately not.

/// CRC-32C (Castagnoli, reflected polynomial `0x82F63B78`), bit by bit:
/// written independently of the library's `crc32c` dependency.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Record kind BEGIN.
pub const BEGIN: u8 = 1;
/// Record kind COMMIT.
pub const COMMIT: u8 = 2;

fn str_field(out: &mut Vec<u8>, s: &[u8]) {
    // Test inputs: a string longer than a u16 is a bug in the test.
    out.extend_from_slice(&u16::try_from(s.len()).expect("short string").to_le_bytes());
    out.extend_from_slice(s);
}

/// One operation's bytes.
#[derive(Debug, Clone)]
pub struct OpBytes(pub Vec<u8>);

/// MKDIR `path` with `mode`.
pub fn mkdir(path: &[u8], mode: u32) -> OpBytes {
    let mut b = vec![1];
    str_field(&mut b, path);
    b.extend_from_slice(&mode.to_le_bytes());
    OpBytes(b)
}

/// PUT staged file `stage_dir/stage_name` (`len` bytes, CRC-32C `crc`) over `path`.
pub fn put(path: &[u8], stage_dir: &[u8], stage_name: &[u8], len: u64, crc: u32) -> OpBytes {
    let mut b = vec![2];
    str_field(&mut b, path);
    str_field(&mut b, stage_dir);
    str_field(&mut b, stage_name);
    b.extend_from_slice(&len.to_le_bytes());
    b.extend_from_slice(&crc.to_le_bytes());
    OpBytes(b)
}

/// REMOVE `path` if it is inode `ino`.
pub fn remove(path: &[u8], ino: u64) -> OpBytes {
    let mut b = vec![3];
    str_field(&mut b, path);
    b.extend_from_slice(&ino.to_le_bytes());
    OpBytes(b)
}

/// RENAME `from` (inode `ino`) to `to`.
pub fn rename(from: &[u8], to: &[u8], ino: u64) -> OpBytes {
    let mut b = vec![4];
    str_field(&mut b, from);
    str_field(&mut b, to);
    b.extend_from_slice(&ino.to_le_bytes());
    OpBytes(b)
}

/// A whole journal file: the 40-byte header (`version`, `kind`, `seq`, a
/// fixed transaction id, the operation count, the body length), the body,
/// and the CRC-32C of everything before it. Checksum-valid.
///
/// # Panics
///
/// If there are more than `u32::MAX` operations or bytes of them.
pub fn record(version: u16, kind: u8, seq: u64, ops: &[OpBytes]) -> Vec<u8> {
    let body: Vec<u8> = ops.iter().flat_map(|o| o.0.iter().copied()).collect();
    let mut out = Vec::with_capacity(44 + body.len());
    out.extend_from_slice(b"FSTXJRNL");
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&[kind, 0, 0, 0, 0, 0]);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&0x00AB_u64.to_le_bytes());
    out.extend_from_slice(&u32::try_from(ops.len()).unwrap().to_le_bytes());
    out.extend_from_slice(&u32::try_from(body.len()).unwrap().to_le_bytes());
    out.extend_from_slice(&body);
    let crc = crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Recomputes the trailing CRC after an edit.
///
/// # Panics
///
/// If `rec` is shorter than 4 bytes.
pub fn reseal(rec: &mut [u8]) {
    let n = rec.len() - 4;
    let crc = crc32c(&rec[..n]);
    rec[n..].copy_from_slice(&crc.to_le_bytes());
}

#[cfg(test)]
mod tests {
    #[test]
    fn crc32c_check_value() {
        // The CRC-32C check value (RFC 3720, B.4).
        assert_eq!(super::crc32c(b"123456789"), 0xE306_9283);
    }
}
