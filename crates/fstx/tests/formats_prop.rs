//! The record and envelope decoders on forged and mutated bytes (the stable
//! route of the fuzz targets `record_decode` and `envelope_decode`): never
//! a panic; a header is accepted only as encoded, within its bounds; one
//! flipped bit in an accepted header or payload is always rejected (CRC-32C
//! catches every single-bit error). `formats_soak` (ignored; `scripts/fuzz`
//! runs it on the stable route) runs for `FSTX_FUZZ_SECS` seconds.

use std::time::{Duration, Instant};

use fstx::formats::{
    decode_envelope, decode_slot_header, slot_size_for, EnvelopeHeader, SlotHeader,
    RECORD_HEADER_LEN, RECORD_MAX_VALUE,
};
use fstx_testkit::Rng;

fn slot(rng: &mut Rng) -> (Vec<u8>, u16, u64, u64) {
    let max = [
        0,
        1,
        100,
        4032,
        4033,
        RECORD_MAX_VALUE,
        RECORD_MAX_VALUE + 1,
    ][rng.below(7)];
    let s = rng.below(2) as u16;
    let size = if rng.one_in(8) {
        rng.next_u64() >> rng.below(64)
    } else {
        slot_size_for(max)
    };
    let len = if rng.one_in(8) {
        rng.next_u64()
    } else {
        rng.below_u64(max + 1)
    };
    let h = SlotHeader {
        slot: s,
        slot_size: size,
        max_len: max,
        seq: rng.next_u64(),
        len,
        crc: rng.next_u64() as u32,
    };
    let mut b = h.encode().to_vec();
    if rng.one_in(3) {
        let i = rng.below(b.len());
        b[i] ^= 1 << rng.below(8);
    }
    if rng.one_in(10) {
        b.truncate(rng.below(b.len()));
    }
    let offset = u64::from(s) * size;
    let target_len = offset + RECORD_HEADER_LEN + rng.below_u64(1 << 27);
    (b, s, offset, target_len)
}

fn check_once(rng: &mut Rng) -> Result<(), String> {
    let (b, s, offset, target_len) = slot(rng);
    for device in [false, true] {
        if let Ok(h) = decode_slot_header(&b, s, offset, target_len, device) {
            if h.encode()[..] != b[..64] {
                return Err("accepted a header that does not re-encode".into());
            }
            if h.len > h.max_len || h.max_len > RECORD_MAX_VALUE {
                return Err(format!("accepted len {} max {}", h.len, h.max_len));
            }
            if offset + RECORD_HEADER_LEN + h.len > target_len {
                return Err("accepted a value beyond the target".into());
            }
        }
    }
    let plen = rng.below(600);
    let payload = rng.bytes(plen);
    let h = EnvelopeHeader {
        seq: rng.next_u64(),
        len: payload.len() as u64,
        crc: crc32c_of(&payload),
    };
    let mut file = h.encode().to_vec();
    file.extend_from_slice(&payload);
    if decode_envelope(&file).is_err() {
        return Err("a well-formed envelope was rejected".into());
    }
    let i = rng.below(file.len());
    file[i] ^= 1 << rng.below(8);
    if decode_envelope(&file).is_ok() {
        return Err(format!("a bit flip at byte {i} was accepted"));
    }
    file.truncate(rng.below(file.len()));
    let _ = decode_envelope(&file);
    Ok(())
}

/// CRC-32C from the test kit (independent of the library's).
fn crc32c_of(b: &[u8]) -> u32 {
    fstx_testkit::journal::crc32c(b)
}

#[test]
fn formats_properties_on_forged_bytes() {
    let mut rng = Rng::new(0xF0F0);
    for n in 0..20_000 {
        if let Err(e) = check_once(&mut rng) {
            panic!("case {n}: {e}");
        }
    }
}

#[test]
#[ignore = "long; scripts/fuzz runs it on the stable route"]
fn formats_soak() {
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
    let secs = env("FSTX_FUZZ_SECS").unwrap_or(60);
    let max = env("FSTX_FUZZ_EXECS").unwrap_or(u64::MAX);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut rng = Rng::new(env("FSTX_FUZZ_SEED").unwrap_or(0x5EED));
    let mut n = 0u64;
    while n < max && (n % 4096 != 0 || Instant::now() < deadline) {
        if let Err(e) = check_once(&mut rng) {
            panic!("execution {n}: {e}");
        }
        n += 1;
    }
    println!("executions={n} crashes=0");
}
