//! Hostile and damaged journals on a real filesystem: checksum-valid
//! records whose paths aim outside the root never touch anything outside
//! it (two guards: the decoder and the tree walker); a damaged record is
//! rolled back and says why; a checksum-valid malformed record is
//! quarantined, evidence kept, also across a crash at every storage call;
//! only a checksum-valid record of an unknown version is refused.
//!
//! The journals are forged byte by byte (`fstx_testkit::journal`, with its
//! own bitwise CRC-32C), as a hostile or buggy writer would.

mod common;
mod txnkit;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use fstx::{Damage, RollbackReason, Snapshot, Transaction, TxnOptions, TxnOutcome};
use fstx_testkit::journal::{self as j, OpBytes};
use txnkit::{opts, snapshot, Probe, TempDir};

const STAGED: &str = ".fstx-stage.00000000000000ab.";

/// A root inside `base`, next to the victims: `base/victim` (a file),
/// `base/.fstx-stage.00000000000000ab.v` (a file named like a staged file,
/// for a staging directory that escapes), and `base/victimdir/`.
struct Scene {
    base: TempDir,
}

impl Scene {
    fn new(tag: &str) -> Scene {
        let base = TempDir::new(tag);
        std::fs::create_dir(base.join("root")).unwrap();
        std::fs::create_dir(base.join("root/sub")).unwrap();
        std::fs::write(base.join("root/a.conf"), b"old a").unwrap();
        std::fs::write(base.join("victim"), b"keep").unwrap();
        std::fs::write(base.join(format!("{STAGED}v")), b"keep").unwrap();
        std::fs::create_dir(base.join("victimdir")).unwrap();
        std::fs::write(base.join("victimdir/f"), b"keep").unwrap();
        // A first transaction, so that `retired` exists (seq 1).
        Transaction::begin(base.join("root"))
            .unwrap()
            .commit()
            .unwrap();
        Scene { base }
    }
    fn root(&self) -> PathBuf {
        self.base.join("root")
    }
    fn ino(&self, rel: &str) -> u64 {
        std::fs::symlink_metadata(self.base.join(rel))
            .unwrap()
            .ino()
    }
    /// Everything outside the root: names and contents.
    fn outside(&self) -> BTreeMap<String, Option<Vec<u8>>> {
        let mut s = snapshot(self.base.path());
        s.retain(|k, _| k != "root" && !k.starts_with("root/"));
        s
    }
    fn journal(&self, bytes: &[u8]) {
        std::fs::write(self.root().join(".fstx-txn/journal"), bytes).unwrap();
    }
    fn reset(&self) {
        let _ = std::fs::remove_file(self.root().join(".fstx-txn/journal"));
        let _ = std::fs::remove_dir_all(self.root().join(".fstx-txn/quarantine"));
    }
}

fn crc(b: &[u8]) -> u32 {
    j::crc32c(b)
}

/// Checksum-valid COMMIT records (seq 2, above `retired`'s 1) whose paths
/// aim outside the root, each paired with what it needs in the tree.
fn escapes(s: &Scene) -> Vec<(&'static str, Vec<OpBytes>)> {
    let victim = s.ino("victim");
    let abs = s.base.join("victim");
    let abs = abs.to_str().unwrap().as_bytes().to_vec();
    let stage = format!("{STAGED}x");
    vec![
        ("remove ../victim", vec![j::remove(b"../victim", victim)]),
        (
            "remove sub/../../victim",
            vec![j::remove(b"sub/../../victim", victim)],
        ),
        ("remove an absolute path", vec![j::remove(&abs, victim)]),
        (
            "rename ../victim into the root",
            vec![j::rename(b"../victim", b"stolen", victim)],
        ),
        (
            "rename a file over ../victim",
            vec![j::rename(b"a.conf", b"../victim", s.ino("root/a.conf"))],
        ),
        (
            "put over ../victim",
            vec![j::put(
                b"../victim",
                b"",
                stage.as_bytes(),
                5,
                crc(b"evil!"),
            )],
        ),
        (
            "put from a staging directory outside the root",
            vec![j::put(
                b"got",
                b"..",
                format!("{STAGED}v").as_bytes(),
                4,
                crc(b"keep"),
            )],
        ),
        (
            "put from stage_dir sub/../..",
            vec![j::put(
                b"got",
                b"sub/../..",
                format!("{STAGED}v").as_bytes(),
                4,
                crc(b"keep"),
            )],
        ),
        (
            "put from a staged name that walks out",
            vec![j::put(
                b"got",
                b"",
                format!("{STAGED}/../../victim").as_bytes(),
                4,
                crc(b"keep"),
            )],
        ),
        ("mkdir ../newdir", vec![j::mkdir(b"../newdir", 0o755)]),
        (
            "remove ../victimdir/f",
            vec![
                j::mkdir(b"fine", 0o755),
                j::remove(b"../victimdir/f", s.ino("victimdir/f")),
            ],
        ),
    ]
}

/// What each case needs in the root: a staged file for the PUT over
/// `../victim`, and a directory named like a staged file's prefix for the
/// staged name that walks out.
fn prepare(s: &Scene) {
    std::fs::write(s.root().join(format!("{STAGED}x")), b"evil!").unwrap();
    let _ = std::fs::create_dir(s.root().join(STAGED.trim_end_matches('/')));
}

/// Runs every escaping journal through `recover` and checks nothing outside
/// the root changed. Returns the outcomes (or errors) for the caller.
fn run_escapes(
    tag: &str,
    recover: impl Fn(&Path) -> Result<Option<TxnOutcome>, String>,
) -> Vec<(&'static str, Result<Option<TxnOutcome>, String>)> {
    let mut out = Vec::new();
    let cases = escapes(&Scene::new(tag)).len();
    // A fresh scene per case: one case that got through must not hide
    // another (inodes, `retired`'s sequence number).
    for i in 0..cases {
        let s = Scene::new(tag);
        let before = s.outside();
        let (what, ops) = escapes(&s).swap_remove(i);
        prepare(&s);
        s.journal(&j::record(1, j::COMMIT, 2, &ops));
        let r = recover(&s.root());
        assert_eq!(
            s.outside(),
            before,
            "{what}: something outside the root changed ({r:?})"
        );
        out.push((what, r));
    }
    out
}

fn lib_recover(root: &Path) -> Result<Option<TxnOutcome>, String> {
    fstx::recover(root)
        .map(|r| r.transactions.into_iter().next().map(|t| t.outcome))
        .map_err(|e| e.to_string())
}

fn txn_recover(root: &Path) -> Result<Option<TxnOutcome>, String> {
    TxnOptions::new()
        .recover(root)
        .map(|r| r.map(|t| t.outcome))
        .map_err(|e| e.to_string())
}

/// The property both guards give, each alone: nothing outside the root
/// changes, through `fstx::recover` and `TxnOptions::recover`.
#[test]
fn journal_paths_never_reach_outside_the_root() {
    run_escapes("escape-lib", lib_recover);
    run_escapes("escape-txn", txn_recover);
    // And through a `begin` (which recovers first) and a reader.
    let s = Scene::new("escape-begin");
    let before = s.outside();
    for (seq, (what, ops)) in (2..).zip(escapes(&s)) {
        s.reset();
        prepare(&s);
        // Above `retired`'s sequence number, whatever the last case did.
        s.journal(&j::record(1, j::COMMIT, seq * 10, &ops));
        let _ = Snapshot::open(s.root());
        let _ = Transaction::begin(s.root()).map(Transaction::commit);
        assert_eq!(s.outside(), before, "{what}");
    }
}

/// With both guards in place, each escaping record is refused by the
/// decoder and quarantined, with the defect named.
#[test]
fn escaping_records_are_quarantined_as_malformed() {
    for (what, r) in run_escapes("escape-q", lib_recover) {
        match r {
            Ok(Some(TxnOutcome::Quarantined {
                reason: RollbackReason::Malformed(why),
                ..
            })) => assert!(why.contains("escapes the root"), "{what}: {why}"),
            other => panic!("{what}: {other:?}"),
        }
    }
}

/// A checksum-valid malformed record: the staged files found and the
/// record go to `.fstx-txn/quarantine/<seq>/`, the tree is all-old, the
/// report says why; recovery, readers and the next transaction ignore the
/// quarantine.
#[test]
fn malformed_record_is_quarantined_with_its_staging() {
    let s = Scene::new("quarantine");
    let root = s.root();
    let old = snapshot(&root);
    std::fs::write(root.join(format!("{STAGED}a.conf")), b"staged a").unwrap();
    std::fs::write(root.join(format!("sub/{STAGED}c.conf")), b"staged c").unwrap();
    let rec = j::record(1, j::COMMIT, 7, &[j::remove(b"../victim", 1)]);
    s.journal(&rec);
    let r = fstx::recover(&root).unwrap();
    let t = &r.transactions[0];
    let q = root.join(".fstx-txn/quarantine/7");
    match &t.outcome {
        TxnOutcome::Quarantined {
            dir,
            staged,
            reason,
        } => {
            assert_eq!(dir, &q);
            assert_eq!(staged.len(), 2, "{staged:?}");
            assert_eq!(
                reason,
                &RollbackReason::Malformed("path escapes the root ('..' component)")
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(t.seq, Some(7));
    let shown = t.to_string();
    assert!(
        shown.contains("the journal record is malformed: path escapes the root"),
        "{shown}"
    );
    assert!(shown.contains(".fstx-txn/quarantine/7"), "{shown}");
    // The evidence, byte for byte; the tree all-old; no journal.
    assert_eq!(std::fs::read(q.join("journal")).unwrap(), rec);
    assert_eq!(
        std::fs::read(q.join(format!("{STAGED}a.conf"))).unwrap(),
        b"staged a"
    );
    assert_eq!(
        std::fs::read(q.join(format!("sub/{STAGED}c.conf"))).unwrap(),
        b"staged c"
    );
    assert_eq!(snapshot(&root), old);
    assert!(!root.join(".fstx-txn/journal").exists());
    // Recovery again: nothing to do (the quarantine is not a journal, and
    // its staged names are not staging).
    let again = fstx::recover(&root).unwrap();
    assert!(again.transactions.is_empty(), "{again:?}");
    // A reader does not see it; a transaction runs and leaves it alone.
    let snap = Snapshot::open(&root).unwrap();
    let names = snap.list("").unwrap();
    assert!(!names.iter().any(|n| n == ".fstx-txn"), "{names:?}");
    drop(snap);
    let mut t = Transaction::begin(&root).unwrap();
    t.write("a.conf", b"new a").unwrap();
    t.commit().unwrap();
    assert_eq!(std::fs::read(q.join("journal")).unwrap(), rec);
    assert!(q.join(format!("sub/{STAGED}c.conf")).exists());
    // The same sequence number again: a fresh directory, the first kept.
    std::fs::write(root.join(format!("{STAGED}z")), b"staged z").unwrap();
    let rec2 = j::record(1, j::COMMIT, 7, &[j::mkdir(b"/abs", 0o755)]);
    s.journal(&rec2);
    let r = fstx::recover(&root).unwrap();
    assert!(
        matches!(&r.transactions[0].outcome, TxnOutcome::Quarantined { dir, .. }
            if dir == &root.join(".fstx-txn/quarantine/7.1")),
        "{r:?}"
    );
    assert_eq!(std::fs::read(q.join("journal")).unwrap(), rec);
    assert_eq!(
        std::fs::read(root.join(".fstx-txn/quarantine/7.1/journal")).unwrap(),
        rec2
    );
    // A dry run reports the quarantine it would make, and makes none.
    let rec3 = j::record(1, j::COMMIT, 9, &[j::remove(b"a/./b", 1)]);
    s.journal(&rec3);
    let r = fstx::RecoverOptions::new()
        .dry_run(true)
        .recover(&root)
        .unwrap();
    assert!(
        matches!(&r.transactions[0].outcome, TxnOutcome::Quarantined { dir, .. }
            if dir == &root.join(".fstx-txn/quarantine/9")),
        "{r:?}"
    );
    assert!(!root.join(".fstx-txn/quarantine/9").exists());
    assert_eq!(std::fs::read(root.join(".fstx-txn/journal")).unwrap(), rec3);
}

/// Every other kind of checksum-valid malformed record is quarantined too
/// (huge count, unknown kind, wrong magic, BEGIN with operations).
#[test]
fn every_malformed_record_is_quarantined() {
    let s = Scene::new("malformed");
    let mut huge = j::record(1, j::COMMIT, 3, &[j::mkdir(b"d", 0o755)]);
    huge[32..36].copy_from_slice(&u32::MAX.to_le_bytes());
    j::reseal(&mut huge);
    let mut magic = j::record(1, j::COMMIT, 3, &[j::mkdir(b"d", 0o755)]);
    magic[0] = b'X';
    j::reseal(&mut magic);
    let cases = [
        ("huge count", huge, "operation count exceeds the body"),
        (
            "unknown kind",
            j::record(1, 9, 3, &[j::mkdir(b"d", 0o755)]),
            "unknown record kind",
        ),
        ("wrong magic", magic, "wrong magic number"),
        (
            "begin with operations",
            j::record(1, j::BEGIN, 3, &[j::mkdir(b"d", 0o755)]),
            "BEGIN record with operations",
        ),
    ];
    for (what, rec, why) in cases {
        s.reset();
        std::fs::write(s.root().join(format!("{STAGED}s")), b"x").unwrap();
        s.journal(&rec);
        let r = fstx::recover(s.root()).unwrap();
        match &r.transactions[0].outcome {
            TxnOutcome::Quarantined { reason, staged, .. } => {
                assert_eq!(reason, &RollbackReason::Malformed(why), "{what}");
                assert_eq!(staged.len(), 1, "{what}");
            }
            other => panic!("{what}: {other:?}"),
        }
        assert!(!s.root().join(format!("{STAGED}s")).exists(), "{what}");
        assert!(!s.root().join("d").exists(), "{what}");
    }
}

/// A rollback says why: BEGIN only, empty, torn, bad checksum, no journal.
#[test]
fn rollback_says_why() {
    let s = Scene::new("why");
    let root = s.root();
    let valid = j::record(1, j::COMMIT, 2, &[j::mkdir(b"d", 0o755)]);
    let mut bad_crc = valid.clone();
    bad_crc[20] ^= 1;
    let cases: Vec<(&str, Vec<u8>, RollbackReason, &str)> = vec![
        (
            "begin",
            j::record(1, j::BEGIN, 2, &[]),
            RollbackReason::NoCommitRecord,
            "no commit record",
        ),
        (
            "empty",
            Vec::new(),
            RollbackReason::Damaged(Damage::Empty),
            "the journal record is damaged: empty",
        ),
        (
            "torn",
            valid[..valid.len() - 3].to_vec(),
            RollbackReason::Damaged(Damage::Torn),
            "the journal record is damaged: torn",
        ),
        (
            "bad checksum",
            bad_crc,
            RollbackReason::Damaged(Damage::BadChecksum),
            "the journal record is damaged: bad checksum",
        ),
    ];
    for (what, bytes, reason, text) in cases {
        std::fs::write(root.join(format!("{STAGED}s")), b"x").unwrap();
        s.journal(&bytes);
        let r = fstx::recover(&root).unwrap();
        let t = &r.transactions[0];
        assert_eq!(
            t.outcome,
            TxnOutcome::RolledBack {
                staged_removed: vec![root.join(format!("{STAGED}s"))],
                reason
            },
            "{what}"
        );
        assert!(t.to_string().contains(text), "{what}: {t}");
        assert!(!root.join(".fstx-txn/journal").exists(), "{what}");
        assert!(!root.join(".fstx-txn/quarantine").exists(), "{what}");
    }
    // No journal and no `retired`: the sweep says so.
    std::fs::remove_dir_all(root.join(".fstx-txn")).unwrap();
    std::fs::create_dir(root.join(".fstx-txn")).unwrap();
    std::fs::write(root.join(format!("sub/{STAGED}s")), b"x").unwrap();
    let r = fstx::recover(&root).unwrap();
    assert!(
        matches!(
            &r.transactions[0].outcome,
            TxnOutcome::RolledBack {
                reason: RollbackReason::NoJournal,
                ..
            }
        ),
        "{r:?}"
    );
}

/// A flipped version byte with a wrong CRC is a damaged record: rolled
/// back (never "committed, pending"), and it does not block readers.
#[test]
fn flipped_version_with_a_wrong_crc_rolls_back() {
    let s = Scene::new("flipped");
    let root = s.root();
    let old = snapshot(&root);
    let mut rec = j::record(
        1,
        j::COMMIT,
        2,
        &[j::remove(b"a.conf", s.ino("root/a.conf"))],
    );
    rec[8] = 2; // the version byte; the CRC no longer matches
    std::fs::write(root.join(format!("{STAGED}s")), b"x").unwrap();
    s.journal(&rec);
    // A reader is not blocked and sees the old tree.
    let snap = Snapshot::open(&root).unwrap();
    assert_eq!(snap.read("a.conf").unwrap(), b"old a");
    drop(snap);
    let r = fstx::recover(&root).unwrap();
    assert_eq!(
        r.transactions[0].outcome,
        TxnOutcome::RolledBack {
            staged_removed: vec![root.join(format!("{STAGED}s"))],
            reason: RollbackReason::Damaged(Damage::BadChecksum),
        }
    );
    assert_eq!(snapshot(&root), old);
    assert!(!root.join(".fstx-txn/journal").exists());
}

/// Only a CRC-valid record of an unknown version is refused, with a message
/// naming the version; nothing is touched, and readers are held off.
#[test]
fn crc_valid_unknown_version_is_refused() {
    let s = Scene::new("version");
    let root = s.root();
    let rec = j::record(
        3,
        j::COMMIT,
        2,
        &[j::remove(b"a.conf", s.ino("root/a.conf"))],
    );
    std::fs::write(root.join(format!("{STAGED}s")), b"x").unwrap();
    s.journal(&rec);
    let before = snapshot(&root);
    let e = fstx::recover(&root).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("checksum-valid record of format version 3"),
        "{msg}"
    );
    assert_eq!(e.state(), &fstx::State::CommittedPendingRecovery);
    assert_eq!(snapshot(&root), before);
    assert_eq!(std::fs::read(root.join(".fstx-txn/journal")).unwrap(), rec);
    assert!(Snapshot::open(&root).is_err());
}

/// A crash at every storage call during quarantine leaves the journal (and
/// the next recovery quarantines again, into the same directory) or the
/// quarantine complete: never the evidence lost, never staging left.
#[test]
fn crash_during_quarantine_at_every_call() {
    let mut n = 0;
    loop {
        let s = Scene::new("q-crash");
        let root = s.root();
        let old = snapshot(&root);
        std::fs::write(root.join(format!("{STAGED}a.conf")), b"staged a").unwrap();
        std::fs::create_dir(root.join("sub/deeper")).unwrap();
        std::fs::write(root.join(format!("sub/deeper/{STAGED}c")), b"staged c").unwrap();
        let rec = j::record(1, j::COMMIT, 5, &[j::remove(b"x/../../victim", 1)]);
        s.journal(&rec);
        let probe = Probe::new();
        probe.with(|p| p.crash_at = Some(n));
        let crashed = opts(&probe).recover(&root);
        let done = crashed.is_ok();
        // The next recovery, on healthy storage, completes the quarantine.
        let r = TxnOptions::new().recover(&root).unwrap();
        if !done {
            assert!(
                r.is_none()
                    || matches!(r.as_ref().unwrap().outcome, TxnOutcome::Quarantined { .. }),
                "crash at {n}: {r:?}"
            );
        }
        let q = root.join(".fstx-txn/quarantine/5");
        assert!(!root.join(".fstx-txn/journal").exists(), "crash at {n}");
        assert_eq!(
            std::fs::read(q.join("journal")).unwrap(),
            rec,
            "crash at {n}"
        );
        assert_eq!(
            std::fs::read(q.join(format!("{STAGED}a.conf"))).unwrap(),
            b"staged a",
            "crash at {n}"
        );
        assert_eq!(
            std::fs::read(q.join(format!("sub/deeper/{STAGED}c"))).unwrap(),
            b"staged c",
            "crash at {n}"
        );
        let mut now = snapshot(&root);
        now.remove("sub/deeper");
        assert_eq!(now, old, "crash at {n}");
        let qs: Vec<_> = std::fs::read_dir(root.join(".fstx-txn/quarantine"))
            .unwrap()
            .collect();
        assert_eq!(qs.len(), 1, "crash at {n}");
        if done {
            assert!(n > 10, "the quarantine took only {n} calls");
            break;
        }
        n += 1;
    }
}

/// The order of a quarantine: every staged file moved and the directories
/// it left and entered flushed before the journal moves; the journal's move
/// flushed.
#[test]
fn quarantine_flushes_before_the_journal_moves() {
    let s = Scene::new("q-order");
    let root = s.root();
    std::fs::write(root.join(format!("sub/{STAGED}c")), b"staged c").unwrap();
    s.journal(&j::record(1, j::COMMIT, 5, &[j::remove(b"../victim", 1)]));
    let probe = Probe::new();
    // ext4's magic: directories are flushed with fsync (on btrfs with
    // syncfs), so the test runs, not skips, when TMPDIR is btrfs.
    probe.with(|p| {
        p.record = true;
        p.fs_magic = Some(0xEF53);
    });
    let r = opts(&probe).recover(&root).unwrap().unwrap();
    assert!(matches!(r.outcome, TxnOutcome::Quarantined { .. }), "{r:?}");
    let ev = probe.events();
    let pos = |f: &dyn Fn(&txnkit::Event) -> bool| ev.iter().position(f);
    let staged_move = pos(&|e| e.op == "rename_at" && e.a.ends_with(&format!("sub/{STAGED}c")))
        .expect("staged file moved");
    let journal_move =
        pos(&|e| e.op == "rename_at" && e.a.ends_with(".fstx-txn/journal")).expect("journal moved");
    assert!(staged_move < journal_move);
    let synced_between = |want: &dyn Fn(&str) -> bool| {
        ev[staged_move..journal_move]
            .iter()
            .any(|e| e.op == "sync" && want(&e.a))
    };
    assert!(
        synced_between(&|a| a.ends_with("/root/sub")),
        "the staged file's old directory is flushed before the journal moves: {ev:#?}"
    );
    assert!(
        synced_between(&|a| a.ends_with(".fstx-txn/quarantine/5/sub")),
        "its new directory is flushed before the journal moves: {ev:#?}"
    );
    let after = &ev[journal_move..];
    assert!(
        after
            .iter()
            .any(|e| e.op == "sync" && e.a.ends_with(".fstx-txn/quarantine/5"))
            && after
                .iter()
                .any(|e| e.op == "sync" && e.a.ends_with("root/.fstx-txn")),
        "the journal's move is flushed: {ev:#?}"
    );
}
