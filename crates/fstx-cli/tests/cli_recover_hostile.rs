//! `fstx recover` on hostile and damaged journals (forged byte by byte with
//! `fstx_testkit::journal`): nothing outside the root changes; a
//! checksum-valid malformed journal is quarantined, exit 0, one warning line
//! on stderr naming the quarantine directory; `fstx commit --delete-missing`
//! leaves the quarantine alone; a damaged journal is rolled back and says
//! why; only a checksum-valid unknown version is refused.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

mod support;
use fstx_testkit::journal as j;
use fstx_testkit::TempDir;
use support::{fstx, run};

const STAGED: &str = ".fstx-stage.00000000000000ab.";

fn scene(tag: &str) -> TempDir {
    let d = TempDir::new(tag);
    std::fs::create_dir_all(d.join("root/sub")).unwrap();
    std::fs::write(d.join("root/a.conf"), b"old a").unwrap();
    std::fs::write(d.join("victim"), b"keep").unwrap();
    let (ok, _, err) = run(fstx().arg("commit").arg(d.join("root")).arg("--mkdir=d"));
    assert!(ok, "{err}");
    d
}

fn write_journal(root: &Path, rec: &[u8]) {
    std::fs::write(root.join(".fstx-txn/journal"), rec).unwrap();
}

#[test]
fn recover_never_touches_outside_the_root_and_quarantines() {
    let d = scene("cli-escape");
    let root = d.join("root");
    let victim = std::fs::metadata(d.join("victim")).unwrap().ino();
    std::fs::write(root.join(format!("sub/{STAGED}c")), b"staged").unwrap();
    for (seq, path) in [
        (2, &b"../victim"[..]),
        (3, b"sub/../../victim"),
        (4, d.join("victim").to_str().unwrap().as_bytes()),
    ] {
        let rec = j::record(1, j::COMMIT, seq, &[j::remove(path, victim)]);
        write_journal(&root, &rec);
        let (ok, out, err) = run(fstx().arg("recover").arg(&root));
        assert!(ok, "{out}{err}");
        assert_eq!(std::fs::read(d.join("victim")).unwrap(), b"keep");
        let q = root.join(format!(".fstx-txn/quarantine/{seq}"));
        assert_eq!(std::fs::read(q.join("journal")).unwrap(), rec);
        assert!(
            out.contains("the journal record is malformed: path escapes the root"),
            "{out}"
        );
        let warnings: Vec<&str> = err.lines().collect();
        assert_eq!(warnings.len(), 1, "{err}");
        assert!(
            warnings[0].contains("warning") && warnings[0].contains(q.to_str().unwrap()),
            "{err}"
        );
    }
    // The first one took the staged file along, below its old path.
    assert_eq!(
        std::fs::read(root.join(format!(".fstx-txn/quarantine/2/sub/{STAGED}c"))).unwrap(),
        b"staged"
    );
    assert!(!root.join(format!("sub/{STAGED}c")).exists());
    // --delete-missing never removes the quarantine; recovery ignores it.
    let stage = d.join("stage");
    std::fs::create_dir(&stage).unwrap();
    std::fs::write(stage.join("only.conf"), b"only").unwrap();
    let (ok, _, err) = run(fstx()
        .arg("commit")
        .arg(&root)
        .arg("--from-dir")
        .arg(&stage)
        .arg("--delete-missing"));
    assert!(ok, "{err}");
    assert!(!root.join("a.conf").exists());
    assert!(root.join(".fstx-txn/quarantine/2/journal").exists());
    assert!(root
        .join(format!(".fstx-txn/quarantine/2/sub/{STAGED}c"))
        .exists());
    let (ok, out, err) = run(fstx().arg("recover").arg(&root));
    assert!(ok && err.is_empty(), "{out}{err}");
    assert!(out.contains("nothing to recover"), "{out}");
}

#[test]
fn recover_says_why_it_rolled_back_or_refused() {
    let d = scene("cli-why");
    let root = d.join("root");
    // A flipped version byte, CRC not updated: damaged, rolled back, exit 0.
    let mut rec = j::record(1, j::COMMIT, 2, &[j::mkdir(b"new", 0o755)]);
    rec[8] = 3;
    write_journal(&root, &rec);
    let (ok, out, err) = run(fstx().arg("recover").arg(&root));
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("had not committed (the journal record is damaged: bad checksum)"),
        "{out}"
    );
    assert!(err.is_empty(), "{err}");
    assert!(!root.join("new").exists());
    // The same with a valid CRC: a newer fstx's journal, refused, exit 1.
    j::reseal(&mut rec);
    write_journal(&root, &rec);
    let (ok, out, err) = run(fstx().arg("recover").arg(&root));
    assert!(!ok, "{out}");
    assert!(err.contains("format version 3"), "{err}");
    assert_eq!(std::fs::read(root.join(".fstx-txn/journal")).unwrap(), rec);
}
