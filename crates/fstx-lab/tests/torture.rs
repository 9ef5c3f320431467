//! End-to-end tests of the kill test, `fstx-lab torture`: no violation with
//! `fstx::update`, and its checks find the bugs of unsafe updaters (torn
//! files, lost updates).

mod common;

use common::lab;
use fstx_testkit::TempDir;

fn torture(d: &TempDir, extra: &[&str]) -> (Option<i32>, String) {
    let out = lab()
        .arg("torture")
        .arg("--dir")
        .arg(d.join("run"))
        .args(extra)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    (out.status.code(), stdout)
}

/// The number after `key` in the summary line.
fn field(summary: &str, key: &str) -> u64 {
    number_after(summary, "torture: updater", key)
}

/// The count of one kind of violation, from the summary.
fn kind(summary: &str, key: &str) -> u64 {
    number_after(summary, "torture: violation kinds:", key)
}

/// The number after `key` in the line of `summary` that starts with `line`.
fn number_after(summary: &str, line: &str, key: &str) -> u64 {
    let line = summary
        .lines()
        .find(|l| l.starts_with(line))
        .unwrap_or_else(|| panic!("no line {line:?}"));
    let at = line.find(&format!(" {key} ")).expect(key) + key.len() + 2;
    line[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn kill_test_finds_no_violation_with_fstx_update() {
    let d = TempDir::new("torture");
    let (code, out) = torture(&d, &["--processes", "10", "--seconds", "5"]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(field(&out, "violations"), 0);
    assert!(field(&out, "kills") >= 50, "{out}");
    assert!(field(&out, "updates") >= 100, "{out}");
    assert!(field(&out, "checks") >= 10, "{out}");
    assert!(field(&out, "shared counter") >= 50, "{out}");
}

#[test]
fn kill_test_finds_torn_files_of_an_in_place_updater() {
    let d = TempDir::new("torture-in-place");
    let (code, out) = torture(&d, &["--processes", "10", "--seconds", "3", "--unsafe"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(field(&out, "violations") > 0);
    assert!(kind(&out, "torn") > 0, "{out}");
}

#[test]
fn kill_test_finds_lost_updates_of_an_unlocked_updater() {
    let d = TempDir::new("torture-no-lock");
    let (code, out) = torture(
        &d,
        &["--processes", "10", "--seconds", "3", "--unsafe=no-lock"],
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(field(&out, "violations") > 0);
    assert!(kind(&out, "lost") > 0, "{out}");
    // Atomic replaces never tear, even without the lock.
    assert_eq!(kind(&out, "torn"), 0, "{out}");
}
