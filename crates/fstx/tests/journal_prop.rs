//! The journal decoder's properties on random and mutated records, on
//! stable Rust (the cargo-fuzz target `fuzz/fuzz_targets/journal_decode.rs`
//! checks the same on nightly):
//!
//! - it never panics;
//! - a record whose framing (length, CRC) is invalid is only ever
//!   `Truncated` or `BadChecksum`, whatever its version byte says;
//! - a CRC-valid record of another version is `UnsupportedVersion`;
//! - every accepted record's paths stay inside the root (each component
//!   one name: not empty, `.` or `..`, no `/` or NUL; the staged name too);
//! - whatever it accepts re-encodes to exactly the same bytes.
//!
//! Inputs are records forged from hostile path fragments (`..`, absolute
//! paths, `//`, NUL, staged names followed by a path), then mutated, and
//! most of the time resealed with a valid CRC so that mutations reach the
//! field checks. `journal_decode_soak` (ignored; `scripts/fuzz` runs it on
//! the stable route) runs the same for `FSTX_FUZZ_SECS` seconds or
//! `FSTX_FUZZ_EXECS` executions.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, Instant};

use fstx::txn::journal::{DecodeError, Op, Record, RelPath};
use fstx_testkit::journal as j;
use fstx_testkit::Rng;
use proptest::prelude::*;

const FRAGMENTS: &[&[u8]] = &[
    b"a",
    b"conf",
    b"..",
    b".",
    b"",
    b"/",
    b"//",
    b"/etc/passwd",
    b"a/../b",
    b"../victim",
    b"sub/../../victim",
    b"x\0y",
    b".fstx-stage.00000000000000ab.f",
    b".fstx-stage.00000000000000ab./../../victim",
    b".fstx-stage.00000000000000ab.a/b",
    b".fstx-txn",
];

fn path(rng: &mut Rng) -> Vec<u8> {
    let n = rng.below_u64(4) as usize;
    let mut out = Vec::new();
    for i in 0..n {
        if i > 0 && rng.below_u64(4) != 0 {
            out.push(b'/');
        }
        out.extend_from_slice(FRAGMENTS[rng.below_u64(FRAGMENTS.len() as u64) as usize]);
    }
    if rng.below_u64(50) == 0 {
        out = vec![b'x'; 250 + rng.below_u64(10) as usize];
    }
    out
}

/// A record forged from hostile fragments, then mutated.
fn input(rng: &mut Rng) -> Vec<u8> {
    let nops = rng.below_u64(5) as usize;
    let ops: Vec<j::OpBytes> = (0..nops)
        .map(|_| match rng.below_u64(4) {
            0 => j::mkdir(&path(rng), rng.below_u64(0o20000) as u32),
            1 => j::put(
                &path(rng),
                &path(rng),
                FRAGMENTS[12 + rng.below_u64(3) as usize],
                rng.below_u64(100),
                rng.next_u64() as u32,
            ),
            2 => j::remove(&path(rng), rng.next_u64()),
            _ => j::rename(&path(rng), &path(rng), rng.next_u64()),
        })
        .collect();
    let version = if rng.below_u64(20) == 0 { 3 } else { 1 };
    let kind = [j::BEGIN, j::COMMIT, j::COMMIT, 7][rng.below_u64(4) as usize];
    let ops = if kind == j::BEGIN && rng.below_u64(2) == 0 {
        Vec::new()
    } else {
        ops
    };
    let mut b = j::record(version, kind, rng.next_u64(), &ops);
    for _ in 0..rng.below_u64(4) {
        let i = rng.below_u64(b.len() as u64) as usize;
        b[i] = rng.next_u64() as u8;
    }
    match rng.below_u64(8) {
        0 => {
            let cut = rng.below_u64(b.len() as u64 + 1) as usize;
            b.truncate(cut);
        }
        1 => b.push(rng.next_u64() as u8),
        _ => {}
    }
    if rng.below_u64(4) != 0 && b.len() >= 44 {
        j::reseal(&mut b);
    }
    b
}

fn one_name(c: &OsStr) -> bool {
    let b = c.as_bytes();
    !b.is_empty() && b != b"." && b != b".." && !b.contains(&b'/') && !b.contains(&0)
}

fn inside(p: &RelPath) -> bool {
    p.components().iter().all(|c| one_name(c))
}

/// Whether the framing every version keeps is valid (independently of the
/// decoder): `44 + body length` bytes, the last 4 the CRC-32C of the rest.
fn framed(b: &[u8]) -> bool {
    if b.len() < 44 {
        return false;
    }
    let body = u32::from_le_bytes(b[36..40].try_into().unwrap()) as usize;
    b.len() == 44 + body && j::crc32c(&b[..b.len() - 4]).to_le_bytes() == b[b.len() - 4..]
}

/// The properties, on one input.
fn check(b: &[u8]) -> Result<(), String> {
    let r = Record::decode(b);
    if !framed(b) {
        return match r {
            Err(DecodeError::Truncated | DecodeError::BadChecksum) => Ok(()),
            other => Err(format!("a record with bad framing decoded as {other:?}")),
        };
    }
    if b[..8] == *b"FSTXJRNL" && b[8..10] != [1, 0] && b[8..10] != [2, 0] {
        return match r {
            Err(DecodeError::UnsupportedVersion(v)) if v.to_le_bytes() == b[8..10] => Ok(()),
            other => Err(format!("a CRC-valid record of another version: {other:?}")),
        };
    }
    let Ok(rec) = r else { return Ok(()) };
    for op in &rec.ops {
        let ok = match op {
            Op::Mkdir { path, .. } | Op::Remove { path, .. } => inside(path) && !path.is_root(),
            Op::Rename { from, to, .. } => inside(from) && inside(to),
            Op::Put {
                path,
                stage_dir,
                stage_name,
                ..
            } => inside(path) && inside(stage_dir) && one_name(stage_name),
        };
        if !ok {
            return Err(format!("an accepted record's path leaves the root: {op:?}"));
        }
    }
    if b[8..10] == [2, 0] {
        return match rec.encode() {
            Ok(again) if again == b => Ok(()),
            other => Err(format!("decode/encode is not the identity: {other:?}")),
        };
    }
    // Version 1 (read, never written): re-encoded as version 2, it decodes
    // to the same record; one with a PUT (no metadata digest) is not
    // written at all.
    let has_put = rec.ops.iter().any(|op| matches!(op, Op::Put { .. }));
    match rec.encode() {
        Err(_) if has_put => Ok(()),
        Ok(again) if !has_put && Record::decode(&again).as_ref() == Ok(&rec) => Ok(()),
        other => Err(format!("a version 1 record re-encoded: {other:?}")),
    }
}

fn cases() -> u32 {
    std::env::var("FSTX_PROP_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    /// Forged, mutated records (seeded): every property holds.
    #[test]
    fn decoder_properties_on_forged_records(seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let b = input(&mut rng);
        prop_assert_eq!(check(&b), Ok(()), "input {:02x?}", b);
    }

    /// Arbitrary bytes, with and without a valid CRC.
    #[test]
    fn decoder_properties_on_arbitrary_bytes(
        mut b in proptest::collection::vec(any::<u8>(), 0..200),
        seal in any::<bool>(),
    ) {
        if seal && b.len() >= 44 {
            let body = (b.len() - 44) as u32;
            b[36..40].copy_from_slice(&body.to_le_bytes());
            j::reseal(&mut b);
        }
        prop_assert_eq!(check(&b), Ok(()), "input {:02x?}", b);
    }
}

/// The soak: the forged-record property for `FSTX_FUZZ_SECS` seconds
/// (default 60) or `FSTX_FUZZ_EXECS` executions, whichever comes first;
/// prints `executions=N crashes=0`. Run by `scripts/fuzz` on the stable
/// route (`scripts/fuzz --soak`: 10^7 executions).
#[test]
#[ignore = "a soak: run by scripts/fuzz"]
fn journal_decode_soak() {
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
    let secs = env("FSTX_FUZZ_SECS").unwrap_or(60);
    let max = env("FSTX_FUZZ_EXECS").unwrap_or(u64::MAX);
    let seed = env("FSTX_FUZZ_SEED").unwrap_or(0x5EED);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut rng = Rng::new(seed);
    let mut n = 0u64;
    while n < max && (n % 4096 != 0 || Instant::now() < deadline) {
        let b = input(&mut rng);
        if let Err(e) = check(&b) {
            panic!("execution {n} (seed {seed}): {e}; input {b:02x?}");
        }
        n += 1;
    }
    println!("executions={n} crashes=0");
}
