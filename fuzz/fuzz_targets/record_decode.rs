//! The two-slot record's header decoder on arbitrary bytes: it must never
//! panic; whatever it accepts re-encodes to the same 64 bytes, claims a
//! value within its largest (itself bounded), a slot size that fits, and a
//! value that lies within the target — so a reader never allocates more
//! than the target holds.
#![no_main]

use fstx::formats::{decode_slot_header, slot_size_for, RECORD_HEADER_LEN, RECORD_MAX_VALUE};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first 9 bytes choose the slot, the device flag and the target's
    // length; the rest is the header.
    if data.len() < 9 {
        return;
    }
    let slot = u16::from(data[0] & 1);
    let device = data[0] & 2 != 0;
    let mut len = [0u8; 8];
    len.copy_from_slice(&data[1..9]);
    let target_len = u64::from_le_bytes(len) >> (data[0] >> 2);
    let bytes = &data[9..];
    for offset in [0, 4096, 8192, u64::MAX - 10] {
        if let Ok(h) = decode_slot_header(bytes, slot, offset, target_len, device) {
            assert_eq!(&h.encode()[..], &bytes[..RECORD_HEADER_LEN as usize]);
            assert!(h.len <= h.max_len && h.max_len <= RECORD_MAX_VALUE);
            assert_eq!(h.slot_size, slot_size_for(h.max_len));
            assert_eq!(offset, u64::from(slot) * h.slot_size);
            assert!(offset + RECORD_HEADER_LEN + h.len <= target_len);
            if device {
                assert!(h.slot_size * 2 <= target_len);
            }
        }
    }
});
