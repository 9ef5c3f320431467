//! When boot-time recovery refuses to redo a committed transaction (here:
//! one file applied, the other's staged data damaged after the commit
//! point), the experiment's
//! recovery step says the state the caller is really in: committed but NOT
//! fully applied, the root blocked until it is resolved -- not "recovery will
//! finish applying it", which is what the library's error state says.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::lab;
use fstx_testkit::TempDir;

#[test]
fn a_refused_redo_is_reported_as_committed_not_applied_and_blocking() {
    let d = TempDir::new("lab-refused");
    let troot = d.join("t0");
    std::fs::create_dir_all(&troot).unwrap();
    std::fs::write(troot.join("a"), "old").unwrap();
    std::fs::write(troot.join("b"), "old").unwrap();
    let src = d.join("src");
    std::fs::write(&src, "new content").unwrap();
    // A commit stopped at its commit point: journal durable, nothing applied.
    let mut child = lab()
        .arg("__commit")
        .args(["--pause", "committed:20000"])
        .arg(&troot)
        .args(["--put", &format!("a={}", src.display())])
        .args(["--put", &format!("b={}", src.display()), "--quiet"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let journal = troot.join(".fstx-txn/journal");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::metadata(&journal).is_ok_and(|m| m.len() > 44) {
        assert!(
            Instant::now() < deadline,
            "the commit never reached its commit point"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the commit ended early"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // Apply `a` by hand and damage `b`'s staged data: part of the
    // transaction is in place, the rest cannot be, so recovery must refuse
    // (with nothing applied it would roll back: a crash inside the commit
    // round looks the same).
    let staged = fstx_testkit::dir::starting_with(&troot, ".fstx-stage.");
    assert_eq!(staged.len(), 2, "{staged:?}");
    for s in &staged {
        if s.to_string_lossy().ends_with(".a") {
            std::fs::rename(s, troot.join("a")).unwrap();
        } else {
            std::fs::write(s, "damaged!!!!").unwrap();
        }
    }

    let out = lab()
        .args([
            "__powercut",
            "recover",
            "--contender",
            "fstx",
            "--workers",
            "1",
        ])
        .current_dir(d.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "recovery accepted damaged data: {stderr}"
    );
    assert!(stderr.contains("recovery refused"), "{stderr}");
    assert!(
        stderr.contains("committed but NOT fully applied"),
        "{stderr}"
    );
    assert!(stderr.contains("stays blocked"), "{stderr}");
    assert!(!stderr.contains("will finish applying"), "{stderr}");
    // And it is so: recovery changed nothing, the journal is pending.
    assert_eq!(
        std::fs::read_to_string(troot.join("a")).unwrap(),
        "new content"
    );
    assert_eq!(std::fs::read_to_string(troot.join("b")).unwrap(), "old");
    assert!(journal.exists());
}
