//! The journal record's unit tests: golden bytes, every truncation and bit
//! flip, hostile records, random garbage.

use super::*;

fn p(s: &str) -> RelPath {
    RelPath::from_bytes(s.as_bytes(), true).unwrap()
}

fn sample() -> Record {
    Record {
        kind: Kind::Commit,
        seq: 0x0102_0304_0506_0708,
        txn_id: 0x1122_3344_5566_7788,
        ops: vec![
            Op::Mkdir {
                path: p("d"),
                mode: 0o755,
            },
            Op::Put {
                path: p("d/f"),
                stage_dir: p(""),
                stage_name: ".fstx-stage.00000000000000aa.f".into(),
                len: 5,
                crc: crc32c::crc32c(b"hello"),
                meta: Some(StagedMeta {
                    ino: 99,
                    digest: 0xAABB_CCDD,
                }),
            },
            Op::Remove {
                path: p("old"),
                ino: 42,
            },
            Op::Rename {
                from: p("a"),
                to: p("b"),
                ino: 7,
            },
        ],
    }
}

/// The golden bytes: any change to the encoding breaks this test, which
/// is the point (journals written by one build are read by another,
/// on any architecture).
#[test]
fn golden_begin() {
    let rec = Record {
        kind: Kind::Begin,
        seq: 1,
        txn_id: 0xDEAD_BEEF_0000_0001,
        ops: vec![],
    };
    let bytes = rec.encode().unwrap();
    let mut want = Vec::new();
    want.extend_from_slice(b"FSTXJRNL");
    want.extend_from_slice(&[2, 0]); // version 2
    want.extend_from_slice(&[1, 0]); // BEGIN, flags
    want.extend_from_slice(&[0, 0, 0, 0]); // reserved
    want.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]); // seq
    want.extend_from_slice(&[0x01, 0, 0, 0, 0xEF, 0xBE, 0xAD, 0xDE]); // txn id
    want.extend_from_slice(&[0, 0, 0, 0]); // op count
    want.extend_from_slice(&[0, 0, 0, 0]); // body length
    let crc = crc32c::crc32c(&want);
    want.extend_from_slice(&crc.to_le_bytes());
    assert_eq!(bytes, want);
    // Pin the checksum itself (CRC-32C of the 40 header bytes above).
    // Computed independently (bitwise CRC-32C in Python).
    assert_eq!(
        crc, 0x8DED_CACA_u32,
        "crc32c of the golden header is {crc:#x}"
    );
    assert_eq!(Record::decode(&bytes).unwrap(), rec);
}

/// The sample's encoding, as hex, in format `version` (1: PUT without the
/// staged inode and metadata digest, as fstx wrote before the one-round commit).
fn sample_hex(version: u16) -> String {
    let v2 = version == 2;
    [
        "465354584a524e4c",                       // magic
        if v2 { "0200" } else { "0100" },         // version
        "02",                                     // COMMIT
        "00",                                     // flags
        "00000000",                               // reserved
        "0807060504030201",                       // seq
        "8877665544332211",                       // txn id
        "04000000",                               // 4 ops
        if v2 { "65000000" } else { "59000000" }, // body length 101 / 89
        // MKDIR "d" 0o755
        "01",
        "0100",
        "64",
        "ed010000",
        // PUT "d/f" "" ".fstx-stage.00000000000000aa.f" 5 crc("hello") [meta]
        "02",
        "0300",
        "642f66",
        "0000",
        "1e00",
        "2e667374782d73746167652e303030303030303030303030303061612e66",
        "0500000000000000",
        "4cbb719a",                                       // crc32c("hello") = 0x9a71bb4c
        if v2 { "6300000000000000ddccbbaa" } else { "" }, // staged inode 99, digest
        // REMOVE "old" 42
        "03",
        "0300",
        "6f6c64",
        "2a00000000000000",
        // RENAME "a" "b" 7
        "04",
        "0100",
        "61",
        "0100",
        "62",
        "0700000000000000",
        // The record's own CRC-32C, computed independently (Python).
        if v2 { "e2272b33" } else { "aa137ffc" },
    ]
    .concat()
}

#[test]
fn golden_commit() {
    let bytes = sample().encode().unwrap();
    let hex: String = bytes.iter().fold(String::new(), |mut s, b| {
        use std::fmt::Write as _;
        let _ = write!(s, "{b:02x}");
        s
    });
    assert_eq!(hex, sample_hex(2));
    assert_eq!(Record::decode(&bytes).unwrap(), sample());
}

/// A version 1 record (written before the one-round commit) still
/// decodes, its PUT without a metadata digest; it is never written.
#[test]
fn golden_commit_version_1_still_decodes() {
    let hex = sample_hex(1);
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    let mut want = sample();
    for op in &mut want.ops {
        if let Op::Put { meta, .. } = op {
            *meta = None;
        }
    }
    assert_eq!(Record::decode(&bytes).unwrap(), want);
    assert!(
        want.encode().is_err(),
        "a PUT without its digest is never written"
    );
}

#[test]
fn every_truncation_and_bit_flip_is_rejected() {
    let bytes = sample().encode().unwrap();
    for n in 0..bytes.len() {
        let r = Record::decode(&bytes[..n]);
        assert!(
            matches!(r, Err(DecodeError::BadChecksum | DecodeError::Truncated)),
            "truncated to {n}: {r:?}"
        );
    }
    for i in 0..bytes.len() {
        for bit in 0..8 {
            let mut b = bytes.clone();
            b[i] ^= 1 << bit;
            // Damaged, never "malformed" or "unknown version": the framing
            // and CRC are checked before any field is trusted.
            let r = Record::decode(&b);
            assert!(
                matches!(r, Err(DecodeError::BadChecksum | DecodeError::Truncated)),
                "flip byte {i} bit {bit}: {r:?}"
            );
        }
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(Record::decode(&longer).is_err());
}

/// Recomputes the CRC of an edited record (the last 4 bytes).
fn reseal(rec: &mut [u8]) {
    let n = rec.len() - CRC_LEN;
    let crc = crc32c::crc32c(&rec[..n]);
    rec[n..].copy_from_slice(&crc.to_le_bytes());
}

/// Records that carry a valid checksum but hostile content.
#[test]
fn hostile_records_with_valid_checksums() {
    fn forge(kind: u8, count: u32, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&[kind, 0, 0, 0, 0, 0]);
        out.extend_from_slice(&1u64.to_le_bytes());
        out.extend_from_slice(&2u64.to_le_bytes());
        out.extend_from_slice(&count.to_le_bytes());
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(body);
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }
    fn remove(path: &[u8]) -> Vec<u8> {
        let mut b = vec![OP_REMOVE];
        b.extend_from_slice(&(path.len() as u16).to_le_bytes());
        b.extend_from_slice(path);
        b.extend_from_slice(&0u64.to_le_bytes());
        b
    }
    for path in [
        &b"/etc/passwd"[..],
        b"../x",
        b"a/../../x",
        b"a//b",
        b"a/",
        b"",
        b".",
        b"a/./b",
        b"a\0b",
    ] {
        let rec = forge(KIND_COMMIT, 1, &remove(path));
        assert!(
            matches!(Record::decode(&rec), Err(DecodeError::Malformed(_))),
            "{:?}",
            String::from_utf8_lossy(path)
        );
    }
    let long = vec![b'x'; 256];
    assert!(Record::decode(&forge(KIND_COMMIT, 1, &remove(&long))).is_err());
    // Absurd counts and lengths.
    assert!(Record::decode(&forge(KIND_COMMIT, u32::MAX, &remove(b"a"))).is_err());
    assert!(Record::decode(&forge(KIND_COMMIT, 2, &remove(b"a"))).is_err());
    assert!(Record::decode(&forge(KIND_COMMIT, 0, &remove(b"a"))).is_err());
    assert!(Record::decode(&forge(KIND_BEGIN, 1, &remove(b"a"))).is_err());
    assert!(Record::decode(&forge(9, 1, &remove(b"a"))).is_err());
    let mut put = vec![OP_PUT, 1, 0, b'a', 0, 0, 4, 0];
    put.extend_from_slice(b"evil"); // not a staging name
    put.extend_from_slice(&[0; 12]);
    assert!(Record::decode(&forge(KIND_COMMIT, 1, &put)).is_err());
    let mut mkdir = vec![OP_MKDIR, 1, 0, b'a'];
    mkdir.extend_from_slice(&0o10000u32.to_le_bytes());
    assert!(Record::decode(&forge(KIND_COMMIT, 1, &mkdir)).is_err());
    // A body length field pointing far past the end.
    let mut rec = forge(KIND_COMMIT, 1, &remove(b"a"));
    rec[36..40].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(Record::decode(&rec), Err(DecodeError::Truncated));
    // A newer version is refused, never guessed at — but only when the
    // record's CRC is valid.
    let mut rec = forge(KIND_COMMIT, 1, &remove(b"a"));
    rec[8] = 3;
    assert_eq!(Record::decode(&rec), Err(DecodeError::BadChecksum));
    reseal(&mut rec);
    assert_eq!(
        Record::decode(&rec),
        Err(DecodeError::UnsupportedVersion(3))
    );
    // Wrong magic with a valid CRC: malformed, not "damaged".
    let mut rec = forge(KIND_COMMIT, 1, &remove(b"a"));
    rec[0] = b'X';
    reseal(&mut rec);
    assert_eq!(
        Record::decode(&rec),
        Err(DecodeError::Malformed("wrong magic number"))
    );
    // A staged name that is a staging name followed by a path.
    for name in [
        &b".fstx-stage.00000000000000ab./../../victim"[..],
        b".fstx-stage.00000000000000ab.a/b",
        b".fstx-stage.00000000000000ab.a\0",
    ] {
        let mut put = vec![OP_PUT, 1, 0, b'a', 0, 0];
        put.extend_from_slice(&(name.len() as u16).to_le_bytes());
        put.extend_from_slice(name);
        put.extend_from_slice(&[0; 12]);
        assert!(
            matches!(
                Record::decode(&forge(KIND_COMMIT, 1, &put)),
                Err(DecodeError::Malformed(_))
            ),
            "{:?}",
            String::from_utf8_lossy(name)
        );
    }
    // And the good one decodes.
    assert!(Record::decode(&forge(KIND_COMMIT, 1, &remove(b"a"))).is_ok());
}

/// Pseudo-random garbage never panics (the fuzz target does this at scale).
#[test]
fn random_garbage_never_panics() {
    let base = sample().encode().unwrap();
    let mut rng = fstx_testkit::Rng::new(0x9E37_79B9_7F4A_7C15);
    let mut next = || rng.next_u64();
    for _ in 0..20_000 {
        let mut b = base.clone();
        let edits = next() % 8;
        for _ in 0..edits {
            let i = (next() as usize) % b.len();
            b[i] = next() as u8;
        }
        let cut = (next() as usize) % (b.len() + 1);
        b.truncate(cut);
        // Whatever is accepted re-encodes to the same bytes (as in the
        // fuzz target fuzz/fuzz_targets/journal_decode.rs).
        if let Ok(r) = Record::decode(&b) {
            assert_eq!(r.encode().unwrap(), b);
        }
        let len = (next() % 200) as usize;
        let junk: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let _ = Record::decode(&junk);
    }
}
