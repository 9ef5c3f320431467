//! End-to-end tests of `fstx commit` and `fstx recover` on transaction
//! roots, with the real binary: the CLI operations, and the SIGKILL test
//! (a commit of a few hundred files killed at random moments, recovered,
//! checked all-old or all-new, kills counted per phase; the kills in a
//! paused phase are in `crates/fstx-lab/tests/commit_kill_paused.rs`).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;

mod support;
use fstx_testkit::TempDir;
use support::commit_kill::{budget, sigkill_loop, spawn_commit, tree, Phases, Tools};
use support::{fstx, run};

#[test]
fn commit_operations_and_errors() {
    let d = TempDir::new("ops");
    let root = d.join("root");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("a"), "a").unwrap();
    std::fs::write(root.join("old"), "old").unwrap();
    std::fs::write(d.join("src"), "from a file").unwrap();
    let (ok, out, err) = run(fstx()
        .arg("commit")
        .arg(&root)
        .args(["--put", &format!("n/b={}", d.join("src").display())])
        .args(["--rename", "a=moved/a", "--delete", "old", "--mkdir", "e/f"]));
    assert!(ok, "{err}");
    assert!(out.contains("committed transaction 1"), "{out}");
    assert_eq!(
        std::fs::read_to_string(root.join("n/b")).unwrap(),
        "from a file"
    );
    assert_eq!(std::fs::read_to_string(root.join("moved/a")).unwrap(), "a");
    assert!(!root.join("old").exists() && !root.join("a").exists());
    assert!(root.join("e/f").is_dir());
    // Standard input.
    let mut c = fstx()
        .arg("commit")
        .arg(&root)
        .args(["--put", "stdin=-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::io::Write::write_all(c.stdin.as_mut().unwrap(), b"piped").unwrap();
    drop(c.stdin.take());
    assert!(c.wait().unwrap().success());
    assert_eq!(
        std::fs::read_to_string(root.join("stdin")).unwrap(),
        "piped"
    );
    // Errors leave everything as it was: one bad operation fails them all.
    let before = tree(&root);
    for bad in [
        vec!["--put", "/abs=src"],
        vec!["--put", "../up=src"],
        vec!["--delete", "missing"],
        vec!["--put", "x=/nonexistent/file"],
        vec!["--put", "ok=-", "--put", "ok2=-"],
        vec!["--rename", "nonsense"],
    ] {
        let (ok, _, err) = run(fstx()
            .arg("commit")
            .arg(&root)
            .args(["--put", &format!("fine={}", d.join("src").display())])
            .args(&bad)
            .stdin(Stdio::null()));
        assert!(!ok, "{bad:?}");
        assert!(err.starts_with("fstx: "), "{err}");
        assert_eq!(tree(&root), before, "{bad:?} changed the tree");
    }
}

/// `--verified`: every file written is sealed (`fstx read` returns the
/// payload, numbered one above the file's previous sequence number);
/// renamed files keep their bytes.
#[test]
fn commit_verified_seals_every_written_file() {
    let d = TempDir::new("verified");
    let root = d.join("root");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(d.join("src"), "payload").unwrap();
    std::fs::write(root.join("plain"), "plain").unwrap();
    let put = |dest: &str| format!("{dest}={}", d.join("src").display());
    for _ in 0..2 {
        let (ok, _, err) = run(fstx().arg("commit").arg(&root).arg("--verified").args([
            "--put",
            &put("a"),
            "--put",
            &put("sub/b"),
        ]));
        assert!(ok, "{err}");
    }
    let (ok, _, err) = run(fstx()
        .arg("commit")
        .arg(&root)
        .arg("--verified")
        .args(["--rename", "plain=moved"]));
    assert!(ok, "{err}");
    for f in ["a", "sub/b"] {
        let bytes = std::fs::read(root.join(f)).unwrap();
        assert!(bytes.starts_with(b"FSTXENV\0"), "{f}");
        assert_eq!(&bytes[16..24], &2u64.to_le_bytes(), "{f}: sequence 2");
        let (ok, out, err) = run(fstx().arg("read").arg(root.join(f)));
        assert!(ok && err.is_empty(), "{err}");
        assert_eq!(out, "payload");
    }
    assert_eq!(
        std::fs::read_to_string(root.join("moved")).unwrap(),
        "plain"
    );
}

#[test]
fn from_dir_installs_a_set_atomically() {
    let d = TempDir::new("fromdir");
    let root = d.join("root");
    let stage = d.join("stage");
    std::fs::create_dir_all(root.join("conf.d")).unwrap();
    std::fs::create_dir_all(stage.join("conf.d")).unwrap();
    std::fs::write(root.join("main.conf"), "old main").unwrap();
    std::fs::write(root.join("conf.d/stale.conf"), "stale").unwrap();
    std::fs::write(stage.join("main.conf"), "new main").unwrap();
    std::fs::write(stage.join("conf.d/new.conf"), "new").unwrap();
    let (ok, _, err) = run(fstx()
        .arg("commit")
        .arg(&root)
        .arg("--from-dir")
        .arg(&stage));
    assert!(ok, "{err}");
    assert!(root.join("conf.d/stale.conf").exists());
    let (ok, _, err) = run(fstx()
        .arg("commit")
        .arg(&root)
        .arg("--from-dir")
        .arg(&stage)
        .arg("--delete-missing"));
    assert!(ok, "{err}");
    let want: BTreeMap<String, String> = [("conf.d/new.conf", "new"), ("main.conf", "new main")]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(tree(&root), want);
}

/// fstx's own files (lock, temporary, staged files, `.fstx-txn`) are never
/// copied from the stage nor removed from the root by `--delete-missing`.
#[test]
fn from_dir_never_copies_or_deletes_fstx_own_files() {
    let d = TempDir::new("internal");
    let root = d.join("root");
    let stage = d.join("stage");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::create_dir_all(&stage).unwrap();
    std::fs::write(root.join("main.conf"), "old").unwrap();
    std::fs::write(root.join(".fstx-lock.main.conf"), "").unwrap();
    std::fs::write(root.join("sub/.fstx-lock.x"), "").unwrap();
    std::fs::write(stage.join("main.conf"), "new").unwrap();
    std::fs::write(stage.join(".fstx-lock.other"), "").unwrap();
    std::fs::write(stage.join(".fstx-tmp.0123456789abcdef.y"), "half").unwrap();
    let (ok, _, err) = run(fstx()
        .arg("commit")
        .arg(&root)
        .arg("--from-dir")
        .arg(&stage)
        .arg("--delete-missing"));
    assert!(ok, "{err}");
    assert_eq!(
        std::fs::read_to_string(root.join("main.conf")).unwrap(),
        "new"
    );
    assert!(root.join(".fstx-lock.main.conf").exists());
    assert!(root.join("sub/.fstx-lock.x").exists());
    assert!(!root.join(".fstx-lock.other").exists());
    assert!(!root.join(".fstx-tmp.0123456789abcdef.y").exists());
}

/// `fstx commit --from-dir --delete-missing` of 300 files, `SIGKILL`ed many
/// times at random moments; after each kill `fstx recover`, then the tree
/// must be entirely the old version or entirely the new one, with nothing
/// staged and no journal. The phase each kill landed in is read from the
/// disk before recovery.
///
/// Kill moments, in turn: uniformly random over a whole commit; random in
/// its last fifth. The phases after staging last milliseconds, so the kills
/// in them (a commit paused at a phase) are `fstx-lab`'s half of this test
/// (`crates/fstx-lab/tests/commit_kill_paused.rs`): the `fstx` binary has
/// no test hook.
#[test]
fn sigkill_during_commit_then_recover() {
    let d = TempDir::new("kill");
    let commit = |root: &Path, stage: &Path, pause: Option<&str>| {
        assert!(pause.is_none(), "the fstx binary does not pause");
        let mut c = fstx();
        c.arg("commit");
        spawn_commit(c, root, stage)
    };
    let recover = |root: &Path| {
        let (ok, out, err) = run(fstx().arg("recover").arg(root));
        (ok, format!("{out}{err}"))
    };
    let tools = Tools {
        commit: &commit,
        recover: &recover,
    };
    let phases = sigkill_loop(&d, &tools, &[0, 1], budget(), &|p: &Phases| p.staging > 0);
    assert!(phases.staging > 0, "{phases:?}");
}

/// A transaction may create more directories than the process may hold
/// open: applying it (and flushing what it touched) keeps the open
/// directory handles bounded. Before, it held one handle per directory and
/// failed at about 1,000 with `ulimit -n 1024`, committed but unapplied,
/// and recovery failed the same way.
#[test]
fn commit_of_more_directories_than_open_files_allowed() {
    const DIRS: usize = 600;
    let d = TempDir::new("manydirs");
    let root = d.join("root");
    let stage = d.join("stage");
    std::fs::create_dir_all(&root).unwrap();
    for i in 0..DIRS {
        let dir = stage.join(format!("d{i:04}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("f"), i.to_string()).unwrap();
    }
    let (ok, _, err) = run(std::process::Command::new("sh")
        .arg("-c")
        .arg("ulimit -n 256 && exec \"$0\" commit \"$1\" --from-dir \"$2\" --quiet")
        .arg(env!("CARGO_BIN_EXE_fstx"))
        .arg(&root)
        .arg(&stage));
    assert!(ok, "{err}");
    for i in 0..DIRS {
        let got = std::fs::read_to_string(root.join(format!("d{i:04}/f"))).unwrap();
        assert_eq!(got, i.to_string());
    }
    assert!(!root.join(".fstx-txn/journal").exists());
}
