//! Two-slot records and verified reads on the real kernel: the slot
//! protocol (alternating slots, newest wins, a damaged slot falls back),
//! and hostile inputs — forged headers with a huge length, a wrong version,
//! a wrong slot size, a target smaller than two slots, a FIFO, a symlink to
//! a regular file — each a clear error, no panic, no allocation of the
//! claimed length (the forged headers are built here byte by byte, with the
//! test kit's own CRC-32C).
#![allow(clippy::many_single_char_names)]

use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::Path;

use fstx::{ReadOptions, RecordOptions, Step};
use fstx_testkit::dir::TempDir;
use fstx_testkit::journal::crc32c;

/// A slot header as the format describes it (`crates/fstx/src/record.rs`).
#[allow(clippy::too_many_arguments)]
fn forge(
    version: u16,
    slot: u16,
    slot_size: u64,
    max: u64,
    seq: u64,
    len: u64,
    value_crc: u32,
) -> [u8; 64] {
    let mut h = [0u8; 64];
    h[0..8].copy_from_slice(b"FSTXREC\0");
    h[8..10].copy_from_slice(&version.to_le_bytes());
    h[10..12].copy_from_slice(&slot.to_le_bytes());
    h[16..24].copy_from_slice(&slot_size.to_le_bytes());
    h[24..32].copy_from_slice(&max.to_le_bytes());
    h[32..40].copy_from_slice(&seq.to_le_bytes());
    h[40..48].copy_from_slice(&len.to_le_bytes());
    h[48..52].copy_from_slice(&value_crc.to_le_bytes());
    let c = crc32c(&h[..60]);
    h[60..64].copy_from_slice(&c.to_le_bytes());
    h
}

fn put(path: &Path, at: u64, bytes: &[u8]) {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .unwrap();
    f.write_all_at(bytes, at).unwrap();
}

fn read_err(path: &Path) -> fstx::Error {
    fstx::read_record(path).expect_err("a hostile record must not read")
}

#[test]
fn record_writes_alternate_slots_and_read_picks_the_newest() {
    let d = TempDir::new("record-alt");
    let p = d.join("r");
    let w = RecordOptions::new().max_len(100).write(&p, b"one").unwrap();
    assert_eq!((w.slot, w.seq, w.created), (0, 1, true));
    assert_eq!(std::fs::metadata(&p).unwrap().len(), 8192);
    let w = RecordOptions::new().write(&p, b"two").unwrap();
    assert_eq!((w.slot, w.seq, w.created), (1, 2, false));
    let w = RecordOptions::new().write(&p, b"three").unwrap();
    assert_eq!((w.slot, w.seq), (0, 3));
    let v = fstx::read_record(&p).unwrap();
    assert_eq!(
        (v.value.as_slice(), v.seq, v.slot, v.max_len),
        (&b"three"[..], 3, 0, 100)
    );
    // Damage the newest slot's value: the previous value comes back, and
    // the damage is reported.
    put(&p, 64, b"X");
    let v = fstx::read_record(&p).unwrap();
    assert_eq!((v.value.as_slice(), v.seq), (&b"two"[..], 2));
    assert!(
        v.slots
            .iter()
            .any(|s| s.result.as_ref().is_err_and(|e| e.contains("checksum"))),
        "{:?}",
        v.slots
    );
    // The next write goes into the damaged slot, not over "two".
    let w = RecordOptions::new().write(&p, b"four").unwrap();
    assert_eq!((w.slot, w.seq), (0, 4));
    // A torn slot 0 header: slot 1 is still found.
    put(&p, 0, &[0u8; 64]);
    assert_eq!(fstx::read_record(&p).unwrap().value, b"two");
    let w = RecordOptions::new().write(&p, b"five").unwrap();
    assert_eq!(w.slot, 0);
    assert_eq!(fstx::read_record(&p).unwrap().value, b"five");
}

#[test]
fn record_size_rules() {
    let d = TempDir::new("record-size");
    let p = d.join("r");
    let e = RecordOptions::new().write(&p, b"x").unwrap_err();
    assert_eq!(
        (e.step(), e.kind()),
        (Step::CheckRecordSize, ErrorKind::InvalidInput)
    );
    assert!(!p.exists() || std::fs::metadata(&p).unwrap().len() == 0);
    RecordOptions::new().max_len(4).write(&p, b"abcd").unwrap();
    let e = RecordOptions::new().write(&p, b"abcde").unwrap_err();
    assert_eq!(e.step(), Step::CheckRecordSize);
    assert!(
        e.to_string().contains("larger than the record's largest 4"),
        "{e}"
    );
    assert_eq!(fstx::read_record(&p).unwrap().value, b"abcd");
    let e = RecordOptions::new().max_len(5).write(&p, b"a").unwrap_err();
    assert!(e.to_string().contains("--init"), "{e}");
    // A file that holds something else: refused without init.
    let q = d.join("other");
    std::fs::write(&q, b"not a record").unwrap();
    let e = RecordOptions::new()
        .max_len(10)
        .write(&q, b"a")
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidData);
    assert_eq!(std::fs::read(&q).unwrap(), b"not a record");
    RecordOptions::new()
        .max_len(10)
        .init(true)
        .write(&q, b"a")
        .unwrap();
    assert_eq!(fstx::read_record(&q).unwrap().value, b"a");
    // Re-initialised with another size.
    RecordOptions::new()
        .max_len(5000)
        .init(true)
        .write(&p, b"big")
        .unwrap();
    let v = fstx::read_record(&p).unwrap();
    assert_eq!((v.value.as_slice(), v.max_len), (&b"big"[..], 5000));
    RecordOptions::new().write(&p, b"bigger").unwrap();
    assert_eq!(fstx::read_record(&p).unwrap().value, b"bigger");
}

#[test]
fn record_hostile_headers_are_clear_errors() {
    let d = TempDir::new("record-hostile");
    let p = d.join("r");
    // A huge claimed length (and largest value): refused before reading
    // the value (no allocation of u64::MAX bytes).
    put(
        &p,
        0,
        &forge(1, 0, 4096, u64::MAX - 100, 1, u64::MAX - 200, 0),
    );
    put(&p, 8191, b"\0");
    let e = read_err(&p);
    assert_eq!(
        (e.step(), e.kind()),
        (Step::VerifyRecord, ErrorKind::InvalidData)
    );
    assert!(e.to_string().contains("largest value of"), "{e}");
    // Within the largest, but longer than it: refused.
    put(&p, 0, &forge(1, 0, 4096, 100, 1, 1 << 40, 0));
    assert!(read_err(&p).to_string().contains("more than its largest"));
    // Wrong version.
    put(&p, 0, &forge(2, 0, 4096, 100, 1, 0, 0));
    assert!(read_err(&p).to_string().contains("format version 2"));
    // Wrong slot size.
    put(&p, 0, &forge(1, 0, 8192, 100, 1, 0, 0));
    assert!(read_err(&p).to_string().contains("wrong slot size"));
    put(&p, 0, &forge(1, 0, 4095, 100, 1, 0, 0));
    assert!(read_err(&p).to_string().contains("wrong slot size"));
    // A value beyond the end of the file (a regular file may be shorter
    // than two slots; the value must be there).
    let short = d.join("short-file");
    put(&short, 0, &forge(1, 0, 8192, 5000, 1, 4500, 0));
    put(&short, 4095, b"\0");
    assert!(
        read_err(&short).to_string().contains("beyond the end"),
        "{}",
        read_err(&short)
    );

    // Slot 1 copied into slot 0.
    put(&p, 0, &forge(1, 1, 4096, 100, 1, 0, 0));
    assert!(read_err(&p).to_string().contains("names slot 1"));
    // A bad header checksum.
    let mut h = forge(1, 0, 4096, 100, 1, 0, crc32c(b""));
    h[33] ^= 1;
    put(&p, 0, &h);
    assert!(read_err(&p).to_string().contains("header checksum"));
    // Writing over hostile headers needs init.
    let e = RecordOptions::new()
        .max_len(100)
        .write(&p, b"v")
        .unwrap_err();
    assert_eq!(e.step(), Step::CheckRecordSize);
    // An empty file and a truncated header.
    let q = d.join("short");
    std::fs::write(&q, b"FSTXREC").unwrap();
    assert!(read_err(&q).to_string().contains("truncated header"));
}

#[test]
fn record_target_kinds() {
    let d = TempDir::new("record-kinds");
    let fifo = d.join("fifo");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    for e in [
        read_err(&fifo),
        RecordOptions::new()
            .max_len(10)
            .write(&fifo, b"x")
            .unwrap_err(),
    ] {
        assert_eq!(
            (e.step(), e.kind()),
            (Step::InspectTarget, ErrorKind::InvalidInput)
        );
        assert!(
            e.to_string().contains("regular file or a block device"),
            "{e}"
        );
    }
    let file = d.join("r");
    RecordOptions::new().max_len(10).write(&file, b"x").unwrap();
    let link = d.join("link");
    std::os::unix::fs::symlink("r", &link).unwrap();
    for e in [
        read_err(&link),
        RecordOptions::new().write(&link, b"y").unwrap_err(),
    ] {
        assert!(e.to_string().contains("only to a block device"), "{e}");
    }
    assert_eq!(fstx::read_record(&file).unwrap().value, b"x");
    let e = read_err(&d.join("missing"));
    assert_eq!(e.kind(), ErrorKind::NotFound);
    std::fs::create_dir(d.join("dir")).unwrap();
    assert_eq!(read_err(&d.join("dir")).step(), Step::InspectTarget);
}

/// A loop device (root only): a symlink to it is followed; a device smaller
/// than two slots is refused. Named `mount_` for the serial group.
#[test]
fn mount_record_on_a_block_device() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root for a loop device");
        return;
    }
    let d = TempDir::new("record-loop");
    let img = d.join("img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(64 * 1024)
        .unwrap();
    let out = std::process::Command::new("losetup")
        .args(["-f", "--show"])
        .arg(&img)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let dev = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let link = d.join("by-partlabel");
    std::os::unix::fs::symlink(&dev, &link).unwrap();
    let result = std::panic::catch_unwind(|| {
        let e = RecordOptions::new()
            .max_len(100)
            .write(&link, b"x")
            .unwrap_err();
        assert!(e.to_string().contains("--init"), "{e}");
        RecordOptions::new()
            .max_len(100)
            .init(true)
            .write(&link, b"a")
            .unwrap();
        RecordOptions::new().write(&link, b"b").unwrap();
        assert_eq!(fstx::read_record(&dev).unwrap().value, b"b");
        assert_eq!(fstx::read_record(&link).unwrap().value, b"b");
        let e = RecordOptions::new()
            .max_len(40_000)
            .init(true)
            .write(&link, b"c")
            .unwrap_err();
        assert!(e.to_string().contains("smaller than two slots"), "{e}");
        assert_eq!(fstx::read_record(&link).unwrap().value, b"b");
        // A header claiming slots larger than the device: a clear error.
        let f = std::fs::OpenOptions::new().write(true).open(&dev).unwrap();
        f.write_all_at(&forge(1, 0, 40960, 40000, 9, 0, 0), 0)
            .unwrap();
        f.write_all_at(&[0u8; 64], 4096).unwrap();
        f.sync_all().unwrap();
        let e = read_err(Path::new(&dev));
        assert!(e.to_string().contains("do not fit"), "{e}");
    });
    let _ = std::process::Command::new("losetup")
        .arg("-d")
        .arg(&dev)
        .status();
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}

/// The envelope as the format describes it (`crates/fstx/src/envelope.rs`).
fn envelope(seq: u64, payload: &[u8]) -> Vec<u8> {
    let mut h = vec![0u8; 40];
    h[0..8].copy_from_slice(b"FSTXENV\0");
    h[8..12].copy_from_slice(&1u32.to_le_bytes());
    h[12..16].copy_from_slice(&crc32c(payload).to_le_bytes());
    h[16..24].copy_from_slice(&seq.to_le_bytes());
    h[24..32].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    let c = crc32c(&h[..36]);
    h[36..40].copy_from_slice(&c.to_le_bytes());
    h.extend_from_slice(payload);
    h
}

#[test]
fn verified_read_picks_the_newest_valid_candidate() {
    let d = TempDir::new("verified-read");
    let p = d.join("cfg");
    let mut o = fstx::Options::new();
    o.verified(true);
    o.write(&p, b"v1").unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), envelope(1, b"v1"));
    let out = fstx::read(&p).unwrap();
    assert_eq!(
        (out.content.as_slice(), out.seq, out.fell_back),
        (&b"v1"[..], Some(1), false)
    );
    // update keeps a backup; the sequence grows.
    let mut u = fstx::UpdateOptions::new();
    u.options(o.clone()).backup("~").generations(2);
    u.update(&p, |old| {
        assert_eq!(old, Some(&b"v1"[..]), "a verified update sees the payload");
        Ok(Some(b"v2".to_vec()))
    })
    .unwrap();
    u.update(&p, |_| Ok(Some(b"v3".to_vec()))).unwrap();
    assert_eq!(std::fs::read(d.join("cfg~")).unwrap(), envelope(2, b"v2"));
    assert_eq!(std::fs::read(d.join("cfg~2")).unwrap(), envelope(1, b"v1"));
    assert_eq!(fstx::read(&p).unwrap().seq, Some(3));
    // A bit flip in FILE's payload: fall back to cfg~, reported.
    let mut bytes = std::fs::read(&p).unwrap();
    bytes[41] ^= 1;
    std::fs::write(&p, &bytes).unwrap();
    let out = fstx::read(&p).unwrap();
    assert_eq!((out.content.as_slice(), out.fell_back), (&b"v2"[..], true));
    assert_eq!(out.path, d.join("cfg~"));
    assert_eq!(out.rejected.len(), 1);
    assert!(
        out.rejected[0].defect.contains("payload checksum"),
        "{:?}",
        out.rejected
    );
    // A bit flip in the magic: not "plain", rejected as no envelope.
    bytes[0] ^= 1;
    std::fs::write(&p, &bytes).unwrap();
    let out = fstx::read(&p).unwrap();
    assert_eq!(out.content, b"v2");
    assert_eq!(out.rejected[0].defect, "no envelope");
    // A verified update over a damaged FILE starts from the newest valid
    // version and gets a sequence number above it.
    u.update(&p, |old| {
        assert_eq!(old, Some(&b"v2"[..]));
        Ok(Some(b"v4".to_vec()))
    })
    .unwrap();
    let out = fstx::read(&p).unwrap();
    assert_eq!((out.content.as_slice(), out.seq), (&b"v4"[..], Some(3)));
    // Nothing valid: every candidate and its defect.
    for name in ["cfg", "cfg~", "cfg~2"] {
        let mut b = std::fs::read(d.join(name)).unwrap();
        let last = b.len() - 1;
        b[last] ^= 0x40;
        std::fs::write(d.join(name), &b).unwrap();
    }
    let e = fstx::read(&p).unwrap_err();
    assert_eq!(
        (e.step(), e.kind()),
        (Step::VerifyContent, ErrorKind::InvalidData)
    );
    let msg = e.to_string();
    for name in ["cfg:", "cfg~:", "cfg~2:"] {
        assert!(msg.contains(name), "{msg}");
    }
}

#[test]
fn verified_read_plain_rules() {
    let d = TempDir::new("verified-plain");
    let p = d.join("f");
    std::fs::write(&p, b"plain").unwrap();
    std::fs::write(d.join("f~"), b"older plain").unwrap();
    let out = fstx::read(&p).unwrap();
    assert_eq!((out.content.as_slice(), out.seq), (&b"plain"[..], None));
    let e = ReadOptions::new()
        .require_verified(true)
        .read(&p)
        .unwrap_err();
    assert!(e.to_string().contains("no envelope"), "{e}");
    // Once a candidate carries an envelope, plain candidates are rejected.
    std::fs::write(d.join("f~"), envelope(7, b"sealed")).unwrap();
    let out = fstx::read(&p).unwrap();
    assert_eq!(
        (out.content.as_slice(), out.fell_back),
        (&b"sealed"[..], true)
    );
    // A tie: FILE wins.
    std::fs::write(&p, envelope(7, b"file")).unwrap();
    assert_eq!(fstx::read(&p).unwrap().content, b"file");
    // Another suffix, exact generations; a huge claimed length is a defect.
    let mut huge = envelope(9, b"");
    huge[24..32].copy_from_slice(&u64::MAX.to_le_bytes());
    let c = crc32c(&huge[..36]);
    huge[36..40].copy_from_slice(&c.to_le_bytes());
    std::fs::write(&p, &huge).unwrap();
    std::fs::write(d.join("f.bak2"), envelope(8, b"gen2")).unwrap();
    let out = ReadOptions::new()
        .backup(".bak")
        .generations(2)
        .read(&p)
        .unwrap();
    assert_eq!(out.content, b"gen2");
    assert!(
        out.rejected[0].defect.contains("claims"),
        "{:?}",
        out.rejected
    );
    // Missing entirely.
    assert_eq!(
        fstx::read(d.join("none")).unwrap_err().kind(),
        ErrorKind::NotFound
    );
}
