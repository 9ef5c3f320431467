//! End-to-end tests of the kill test, `fstx-lab torture`: no violation with
//! `fstx::update`, and its checks find the bugs of unsafe updaters (torn
//! files, lost updates).

use std::path::PathBuf;
use std::process::Command;

fn lab() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fstx-lab"))
}

struct Dir(PathBuf);
impl Dir {
    fn new(tag: &str) -> Dir {
        let p = std::env::temp_dir().join(format!("fstx-lab-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }
    fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn torture(d: &Dir, extra: &[&str]) -> (Option<i32>, String) {
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
    let line = summary
        .lines()
        .find(|l| l.starts_with("torture: updater"))
        .expect("summary line");
    let at = line.find(&format!(" {key} ")).expect(key) + key.len() + 2;
    line[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// The count of one kind of violation, from the summary.
fn kind(summary: &str, key: &str) -> u64 {
    let line = summary
        .lines()
        .find(|l| l.starts_with("torture: violation kinds:"))
        .expect("kinds line");
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
    let d = Dir::new("torture");
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
    let d = Dir::new("torture-in-place");
    let (code, out) = torture(&d, &["--processes", "10", "--seconds", "3", "--unsafe"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(field(&out, "violations") > 0);
    assert!(kind(&out, "torn") > 0, "{out}");
}

#[test]
fn kill_test_finds_lost_updates_of_an_unlocked_updater() {
    let d = Dir::new("torture-no-lock");
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
