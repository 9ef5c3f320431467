//! Verified content beyond `write` and `update`: a streaming update
//! (`update_stream`) reads the newest payload that verifies and seals what
//! it writes; a verified transaction seals every file it writes, recovery
//! checks the sealed files, and a crash at every storage call leaves every
//! file reading (through `fstx::read`) its old or its new payload, all
//! files alike. The envelopes expected are built here byte by byte, with
//! the test kit's own CRC-32C.

#![allow(clippy::many_single_char_names)]

mod txnkit;

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::path::Path;

use fstx::{Options, State, Step, Transaction, TxnOutcome, UpdateOptions};
use fstx_testkit::journal::crc32c;
use txnkit::{opts, snapshot, Probe, TempDir};

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

fn verified() -> Options {
    let mut o = Options::new();
    o.verified(true);
    o
}

/// What `fstx::read` returns for `path`: the payload, `None` when nothing
/// exists; panics on any other error.
fn read(path: &Path) -> Option<Vec<u8>> {
    match fstx::read(path) {
        Ok(out) => Some(out.content),
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => panic!("{}: {e}", path.display()),
    }
}

/// Streaming: the function reads the payload (not the envelope), sees
/// which file it came from, and what it writes is sealed above every
/// backup's sequence number.
#[test]
fn verified_update_stream_reads_the_payload_and_seals() {
    let d = TempDir::new("vstream");
    let p = d.join("cfg");
    verified().write(&p, b"v1").unwrap();
    let mut u = UpdateOptions::new();
    u.options(verified()).backup("~").generations(2);
    u.update_stream(&p, |old, new| {
        let old = old.expect("cfg exists");
        assert_eq!(
            (old.len(), old.seq(), old.fell_back(), old.path()),
            (2, Some(1), false, p.as_path())
        );
        let mut got = Vec::new();
        old.read_to_end(&mut got)?;
        assert_eq!(got, b"v1", "the function reads the payload");
        new.write_all(b"v")?;
        new.write_all(b"2")?;
        Ok(true)
    })
    .unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), envelope(2, b"v2"));
    assert_eq!(std::fs::read(d.join("cfg~")).unwrap(), envelope(1, b"v1"));

    // FILE damaged: the function reads cfg~'s payload and is told so; the
    // new version is numbered above the damaged FILE's header too.
    let mut b = std::fs::read(&p).unwrap();
    let last = b.len() - 1;
    b[last] ^= 1;
    std::fs::write(&p, &b).unwrap();
    u.update_stream(&p, |old, new| {
        let old = old.expect("a valid backup");
        assert_eq!(
            (old.fell_back(), old.path()),
            (true, d.join("cfg~").as_path())
        );
        assert_eq!(old.rejected().len(), 1);
        assert!(old.rejected()[0].defect.contains("payload checksum"));
        let mut got = Vec::new();
        old.read_to_end(&mut got)?;
        assert_eq!(got, b"v1");
        new.write_all(b"v3 from v1")?;
        Ok(true)
    })
    .unwrap();
    let out = fstx::read(&p).unwrap();
    assert_eq!(
        (out.content.as_slice(), out.seq),
        (&b"v3 from v1"[..], Some(3))
    );

    // Declining leaves everything as it is.
    let before = std::fs::read(&p).unwrap();
    u.update_stream(&p, |_, new| {
        new.write_all(b"never")?;
        Ok(false)
    })
    .unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), before);

    // Nothing valid: the function is not called, nothing changes.
    for name in ["cfg", "cfg~", "cfg~2"] {
        std::fs::write(d.join(name), b"plain").unwrap();
    }
    std::fs::write(&p, &before[..before.len() - 1]).unwrap();
    let e = u
        .update_stream(&p, |_, _| panic!("called without a valid version"))
        .unwrap_err();
    assert_eq!(
        (e.step(), e.kind()),
        (Step::ReadCurrentContent, ErrorKind::InvalidData),
        "{e}"
    );
    assert!(e.to_string().contains("cfg~: no envelope"), "{e}");
}

/// A plain file becomes verified: the function reads it as is; a large
/// payload streams through (read in pieces, written in pieces).
#[test]
fn verified_update_stream_from_plain_and_large() {
    let d = TempDir::new("vstream-plain");
    let p = d.join("log");
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&p, &big).unwrap();
    let mut u = UpdateOptions::new();
    u.options(verified());
    u.update_stream(&p, |old, new| {
        let old = old.expect("exists");
        assert_eq!((old.len(), old.seq()), (big.len() as u64, None));
        std::io::copy(old, new)?;
        new.write_all(b"tail")?;
        Ok(true)
    })
    .unwrap();
    let mut want = big.clone();
    want.extend_from_slice(b"tail");
    let out = fstx::read(&p).unwrap();
    assert_eq!((out.content.len(), out.seq), (want.len(), Some(1)));
    assert!(out.content == want);
    // Again, now from the envelope: a seek inside the payload is relative
    // to it.
    u.update_stream(&p, |old, new| {
        let old = old.expect("exists");
        assert_eq!(old.len(), want.len() as u64);
        std::io::Seek::seek(old, std::io::SeekFrom::End(-4))?;
        let mut tail = Vec::new();
        old.read_to_end(&mut tail)?;
        assert_eq!(tail, b"tail");
        new.write_all(&tail)?;
        Ok(true)
    })
    .unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), envelope(2, b"tail"));
}

/// Every file a verified transaction writes is sealed, numbered above the
/// target's and its backups' sequence numbers; renamed files keep their
/// bytes; a transaction without the option seals nothing.
#[test]
fn verified_transaction_seals_every_written_file() {
    let d = TempDir::new("vtxn");
    std::fs::write(d.join("plain"), b"plain before").unwrap();
    std::fs::write(d.join("sealed"), envelope(5, b"sealed before")).unwrap();
    std::fs::write(d.join("backed~"), envelope(9, b"only a backup")).unwrap();
    std::fs::write(d.join("moved"), envelope(2, b"moved")).unwrap();
    let mut o = fstx::TxnOptions::new();
    o.verified(true);
    let mut t = o.begin(d.path()).unwrap();
    t.write("plain", b"p1").unwrap();
    t.write("sealed", b"s1").unwrap();
    t.write("backed", b"b1").unwrap();
    let mut f = t.create("new/dir/streamed").unwrap();
    f.write_all(b"str").unwrap();
    f.write_all(b"eamed").unwrap();
    f.finish().unwrap();
    t.rename("moved", "there").unwrap();
    t.commit().unwrap();
    for (name, seq, payload) in [
        ("plain", 1, &b"p1"[..]),
        ("sealed", 6, b"s1"),
        ("backed", 10, b"b1"),
        ("new/dir/streamed", 1, b"streamed"),
        ("there", 2, b"moved"),
    ] {
        assert_eq!(
            std::fs::read(d.join(name)).unwrap(),
            envelope(seq, payload),
            "{name}"
        );
        let out = fstx::read(d.join(name)).unwrap();
        assert_eq!(
            (out.content.as_slice(), out.seq),
            (payload, Some(seq)),
            "{name}"
        );
    }
    // The next verified transaction counts on.
    let mut t = o.begin(d.path()).unwrap();
    t.write("sealed", b"s2").unwrap();
    t.commit().unwrap();
    assert_eq!(std::fs::read(d.join("sealed")).unwrap(), envelope(7, b"s2"));
    // Without the option: plain bytes.
    let mut t = Transaction::begin(d.path()).unwrap();
    t.write("sealed", b"plain again").unwrap();
    t.commit().unwrap();
    assert_eq!(std::fs::read(d.join("sealed")).unwrap(), b"plain again");
}

/// A verified transaction that committed but could not be applied is
/// finished by recovery (the journal's length and checksum are those of
/// the sealed staged file), and a sealed staged file damaged meanwhile is
/// not installed (nothing was applied: the transaction is rolled back).
#[test]
fn verified_transaction_redo_checks_the_sealed_files() {
    for damage in [false, true] {
        let d = TempDir::new("vtxn-redo");
        std::fs::write(d.join("a"), envelope(3, b"old a")).unwrap();
        let probe = Probe::new();
        let mut o = opts(&probe);
        o.verified(true);
        let mut t = o.begin(d.path()).unwrap();
        t.write("a", b"new a").unwrap();
        t.write("b", b"new b").unwrap();
        let base = probe.with(|s| s.op_counts.get("rename_at").copied().unwrap_or(0));
        probe.with(|s| s.fault = Some(("rename_at", base, 5)));
        let e = t.commit().unwrap_err();
        assert_eq!(*e.state(), State::CommittedPendingRecovery, "{e}");
        let staged = fstx_testkit::dir::starting_with(d.path(), ".fstx-stage.");
        assert_eq!(staged.len(), 2, "{staged:?}");
        if damage {
            let mut b = std::fs::read(&staged[0]).unwrap();
            let last = b.len() - 1;
            b[last] ^= 1;
            std::fs::write(&staged[0], &b).unwrap();
            // Nothing applied yet: rolled back, as for lost data.
            let rep = fstx::recover(d.path()).unwrap();
            assert!(
                matches!(
                    rep.transactions[0].outcome,
                    TxnOutcome::RolledBack {
                        reason: fstx::RollbackReason::DataNotDurable,
                        ..
                    }
                ),
                "{rep:?}"
            );
            assert_eq!(read(&d.join("a")).unwrap(), b"old a");
            assert_eq!(read(&d.join("b")), None);
            continue;
        }
        let rep = fstx::recover(d.path()).unwrap();
        assert!(
            matches!(rep.transactions[0].outcome, TxnOutcome::Finished { .. }),
            "{rep:?}"
        );
        assert_eq!(std::fs::read(d.join("a")).unwrap(), envelope(4, b"new a"));
        assert_eq!(std::fs::read(d.join("b")).unwrap(), envelope(1, b"new b"));
    }
}

/// The files of [`crash_at_every_storage_call_reads_old_or_new`]: before.
fn setup_old(root: &Path) {
    std::fs::write(root.join("a.conf"), envelope(3, b"old a")).unwrap();
    std::fs::write(root.join("b.conf"), b"old b").unwrap();
    std::fs::write(root.join("gone.conf"), envelope(1, b"to be removed")).unwrap();
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::write(root.join("sub/c.conf"), b"old c, plain").unwrap();
    std::fs::write(root.join("sub/c.conf~"), envelope(4, b"older c, sealed")).unwrap();
}

fn workload(t: &mut Transaction) -> fstx::Result<()> {
    t.write("a.conf", b"new a, longer than before")?;
    t.write("sub/c.conf", b"new c")?;
    t.write("new/deep/d.conf", b"brand new d")?;
    t.remove("gone.conf")?;
    t.rename("b.conf", "sub/b.renamed")?;
    Ok(())
}

const READ: [&str; 6] = [
    "a.conf",
    "b.conf",
    "gone.conf",
    "sub/c.conf",
    "sub/b.renamed",
    "new/deep/d.conf",
];

/// What `fstx::read` returns for every file of the workload.
fn reads(root: &Path) -> BTreeMap<&'static str, Option<Vec<u8>>> {
    READ.iter().map(|p| (*p, read(&root.join(p)))).collect()
}

fn view(entries: [Option<&[u8]>; 6]) -> BTreeMap<&'static str, Option<Vec<u8>>> {
    READ.iter()
        .zip(entries)
        .map(|(p, c)| (*p, c.map(<[u8]>::to_vec)))
        .collect()
}

/// Crash (every later storage call fails, as when the process dies) at
/// every storage call of a verified transaction; recover; every file reads
/// back through `fstx::read` its old payload or its new one, all files
/// alike, the new ones whenever commit had returned Ok; the bytes on disk
/// are exactly the old tree or the sealed new one.
#[test]
fn crash_at_every_storage_call_reads_old_or_new() {
    let old_view = view([
        Some(b"old a"),
        Some(b"old b"),
        Some(b"to be removed"),
        // FILE is plain, its backup sealed: the backup is the version.
        Some(b"older c, sealed"),
        None,
        None,
    ]);
    let new_view = view([
        Some(b"new a, longer than before"),
        None,
        None,
        Some(b"new c"),
        Some(b"old b"),
        Some(b"brand new d"),
    ]);
    let count = TempDir::new("vcount");
    setup_old(count.path());
    let probe = Probe::new();
    let mut o = opts(&probe);
    o.verified(true);
    let mut t = o.begin(count.path()).unwrap();
    workload(&mut t).unwrap();
    t.commit().unwrap();
    let total = probe.calls();
    let new_raw = snapshot(count.path());
    assert_eq!(reads(count.path()), new_view);
    assert_eq!(
        new_raw["sub/c.conf"].as_deref(),
        Some(&envelope(5, b"new c")[..]),
        "sealed above the backup's sequence number"
    );
    let (mut old_seen, mut new_seen) = (0, 0);
    for n in 0..=total {
        let d = TempDir::new("vcrash");
        setup_old(d.path());
        let old_raw = snapshot(d.path());
        let probe = Probe::new();
        probe.with(|s| s.crash_at = Some(n));
        let mut o = opts(&probe);
        o.verified(true);
        let ok = o
            .begin(d.path())
            .and_then(|mut t| {
                workload(&mut t)?;
                t.commit()
            })
            .is_ok();
        fstx::recover(d.path()).unwrap();
        let got = reads(d.path());
        let raw = snapshot(d.path());
        if got == new_view {
            assert_eq!(raw, new_raw, "crash at call {n}: new reads, other bytes");
            new_seen += 1;
        } else {
            assert!(
                !ok,
                "crash at call {n}: commit returned Ok but reads {got:?}"
            );
            assert_eq!(got, old_view, "crash at call {n}: neither old nor new");
            assert_eq!(raw, old_raw, "crash at call {n}: old reads, other bytes");
            old_seen += 1;
        }
    }
    println!("{} crash points: {old_seen} old, {new_seen} new", total + 1);
    assert!(old_seen > 0 && new_seen > 0);
}

const MEMORY_CHILD_ENV: &str = "FSTX_VERIFIED_MEMORY_CHILD_DIR";

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status")
}

/// The child: a verified `update_stream` of a 64 MiB payload (checked, read
/// by the function, written, read back to seal); prints the peak RSS growth.
fn memory_child(dir: &Path) {
    const SIZE: usize = 64 << 20;
    let p = dir.join("big");
    let mut o = verified();
    o.durability(fstx::Durability::None);
    let chunk = vec![0x5a_u8; 256 * 1024];
    let mut f = o.open(&p).unwrap();
    for _ in 0..SIZE / chunk.len() {
        f.write_all(&chunk).unwrap();
    }
    f.commit().unwrap();
    let mut u = UpdateOptions::new();
    u.options(o);
    let copy = |u: &UpdateOptions, path: &Path| {
        u.update_stream(path, |old, new| {
            std::io::copy(old.expect("exists"), new)?;
            Ok(true)
        })
        .unwrap();
    };
    // Warm up every code path once, so first-use allocations do not count.
    let small = dir.join("small");
    std::fs::write(&small, envelope(1, b"warm")).unwrap();
    copy(&u, &small);
    let before = peak_rss_kib();
    copy(&u, &p);
    let after = peak_rss_kib();
    assert_eq!(std::fs::metadata(&p).unwrap().len(), SIZE as u64 + 40);
    assert_eq!(fstx::read(&p).unwrap().seq, Some(2));
    println!("peak-rss-growth-kib={}", after - before);
}

/// A verified `update_stream` stays in bounded memory: the peak RSS grows
/// by less than 2 MiB while a 64 MiB payload is checked, streamed through
/// the function and sealed (measured in a child process, this test binary
/// re-executed, so the harness's allocations do not count).
#[test]
fn verified_update_stream_keeps_memory_flat() {
    if let Ok(dir) = std::env::var(MEMORY_CHILD_ENV) {
        memory_child(Path::new(&dir));
        return;
    }
    let d = TempDir::new("vmemory");
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "verified_update_stream_keeps_memory_flat",
            "--nocapture",
        ])
        .env(MEMORY_CHILD_ENV, d.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let growth: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("peak-rss-growth-kib="))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no measurement in child output: {stdout}"));
    eprintln!("peak RSS growth in a verified update_stream of 64 MiB: {growth} KiB");
    assert!(growth < 2048, "peak RSS grew by {growth} KiB");
}
