//! The slot header: its layout constants, the slot size, and the decoder
//! (the record's format; the protocol is in the parent module).

/// The header's first eight bytes.
pub const RECORD_MAGIC: [u8; 8] = *b"FSTXREC\0";
/// The format version this fstx writes and reads.
pub const RECORD_VERSION: u16 = 1;
/// Bytes of a slot's header.
pub const RECORD_HEADER_LEN: u64 = 64;
/// Slots are aligned to, and sized in, multiples of this.
pub const RECORD_PAGE: u64 = 4096;
/// The largest value a record may hold (64 MiB): a bound on what a hostile
/// header can make a reader allocate or scan.
pub const RECORD_MAX_VALUE: u64 = 64 << 20;

/// The slot size for values of at most `max` bytes.
pub fn slot_size_for(max: u64) -> u64 {
    (RECORD_HEADER_LEN + max).div_ceil(RECORD_PAGE) * RECORD_PAGE
}

/// A decoded slot header (layout: `docs/design.md` §7.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotHeader {
    /// 0 or 1.
    pub slot: u16,
    /// Bytes per slot (a multiple of 4096).
    pub slot_size: u64,
    /// The largest value the record holds.
    pub max_len: u64,
    /// Sequence number: higher is newer.
    pub seq: u64,
    /// Length of the value in this slot.
    pub len: u64,
    /// CRC-32C of the value.
    pub crc: u32,
}

impl SlotHeader {
    /// The 64 header bytes.
    pub fn encode(&self) -> [u8; 64] {
        let mut h = [0u8; 64];
        h[0..8].copy_from_slice(&RECORD_MAGIC);
        h[8..10].copy_from_slice(&RECORD_VERSION.to_le_bytes());
        h[10..12].copy_from_slice(&self.slot.to_le_bytes());
        h[16..24].copy_from_slice(&self.slot_size.to_le_bytes());
        h[24..32].copy_from_slice(&self.max_len.to_le_bytes());
        h[32..40].copy_from_slice(&self.seq.to_le_bytes());
        h[40..48].copy_from_slice(&self.len.to_le_bytes());
        h[48..52].copy_from_slice(&self.crc.to_le_bytes());
        let hc = crc32c::crc32c(&h[..60]);
        h[60..64].copy_from_slice(&hc.to_le_bytes());
        h
    }
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

/// Decodes the header of slot `slot` found at byte `offset` of a target of
/// `target_len` bytes. Checks everything the header alone can show: magic,
/// header checksum, version, slot index, slot size (a multiple of 4096 that
/// fits `max`, slot 1 at offset `slot_size`; on a block device (`device`),
/// two slots within it), and a length within `max` whose value lies within
/// the target. Never allocates; never panics.
///
/// A regular file may be shorter than two slots (a lost `ftruncate` after a
/// failed flush): only the value read must be there.
///
/// # Errors
///
/// The defect, in words, for error messages.
pub fn decode_slot_header(
    bytes: &[u8],
    slot: u16,
    offset: u64,
    target_len: u64,
    device: bool,
) -> std::result::Result<SlotHeader, String> {
    if bytes.len() < RECORD_HEADER_LEN as usize {
        return Err(format!("truncated header ({} bytes)", bytes.len()));
    }
    let b = &bytes[..RECORD_HEADER_LEN as usize];
    if b[0..8] != RECORD_MAGIC {
        return Err("no record header (bad magic)".into());
    }
    if crc32c::crc32c(&b[..60]) != u32_at(b, 60) {
        return Err("header checksum mismatch".into());
    }
    let version = u16::from_le_bytes([b[8], b[9]]);
    if version != RECORD_VERSION {
        return Err(format!(
            "format version {version}; this fstx reads version {RECORD_VERSION}"
        ));
    }
    let h = SlotHeader {
        slot: u16::from_le_bytes([b[10], b[11]]),
        slot_size: u64_at(b, 16),
        max_len: u64_at(b, 24),
        seq: u64_at(b, 32),
        len: u64_at(b, 40),
        crc: u32_at(b, 48),
    };
    if h.slot != slot {
        return Err(format!(
            "header names slot {}, found in slot {slot}",
            h.slot
        ));
    }
    if h.max_len > RECORD_MAX_VALUE {
        return Err(format!(
            "claims a largest value of {} bytes (limit {RECORD_MAX_VALUE})",
            h.max_len
        ));
    }
    if h.slot_size != slot_size_for(h.max_len) {
        return Err(format!(
            "wrong slot size {} for values of at most {} bytes (expected {})",
            h.slot_size,
            h.max_len,
            slot_size_for(h.max_len)
        ));
    }
    if offset != u64::from(slot) * h.slot_size {
        return Err(format!(
            "wrong slot size {}: slot {slot} found at offset {offset}",
            h.slot_size
        ));
    }
    if device && h.slot_size.saturating_mul(2) > target_len {
        return Err(format!(
            "two slots of {} bytes do not fit in {target_len} bytes",
            h.slot_size
        ));
    }
    if h.len > h.max_len {
        return Err(format!(
            "claims a value of {} bytes, more than its largest {}",
            h.len, h.max_len
        ));
    }
    if offset
        .saturating_add(RECORD_HEADER_LEN)
        .saturating_add(h.len)
        > target_len
    {
        return Err(format!(
            "claims a value of {} bytes, beyond the end of the target ({target_len} bytes)",
            h.len
        ));
    }
    Ok(h)
}
