//! The verified envelope's decoder on arbitrary bytes: it must never
//! panic; whatever it accepts has a header that re-encodes to the same 40
//! bytes, a payload of exactly the claimed length and a matching CRC-32C.
//! The header alone, given any file length, never accepts a length other
//! than what the file holds after the header.
#![no_main]

use fstx::formats::{decode_envelope, decode_envelope_header, ENVELOPE_HEADER_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((h, payload)) = decode_envelope(data) {
        assert_eq!(&h.encode()[..], &data[..ENVELOPE_HEADER_LEN as usize]);
        assert_eq!(payload.len() as u64, h.len);
        assert_eq!(crc32c::crc32c(payload), h.crc);
    }
    for file_len in [0, 40, data.len() as u64, u64::MAX] {
        if let Ok(h) = decode_envelope_header(data, file_len) {
            assert_eq!(h.len, file_len - ENVELOPE_HEADER_LEN);
        }
    }
});
