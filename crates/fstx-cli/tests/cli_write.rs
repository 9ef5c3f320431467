//! End-to-end tests of `fstx write` and `fstx recover`, running the real
//! binary in real processes.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

mod support;

use fstx_testkit::TempDir;
use support::fstx;

fn temps(dir: &Path) -> Vec<PathBuf> {
    fstx_testkit::dir::starting_with(dir, ".fstx-tmp.")
}

/// Runs `fstx write` with `input` on stdin; returns (success, stderr).
fn write(args: &[&str], input: &[u8]) -> (bool, String) {
    let mut child = fstx()
        .arg("write")
        .args(args)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // fstx may fail (and exit) before reading its input.
    let _ = child.stdin.take().unwrap().write_all(input);
    let out = child.wait_with_output().unwrap();
    (out.status.success(), String::from_utf8(out.stderr).unwrap())
}

#[test]
fn write_replaces_from_stdin() {
    let d = TempDir::new("write");
    let f = d.join("conf");
    let f = f.to_str().unwrap();
    assert_eq!(write(&[f], b"one\n"), (true, String::new()));
    assert_eq!(std::fs::read(f).unwrap(), b"one\n");
    assert!(write(&[f, "--mode", "600"], b"").0);
    assert_eq!(std::fs::read(f).unwrap(), b"");
    assert_eq!(
        std::fs::metadata(f).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[test]
fn expect_size_and_sha256_refuse_truncated_input() {
    let d = TempDir::new("guards");
    let f = d.join("fw.bin");
    let fs = f.to_str().unwrap();
    std::fs::write(&f, b"old").unwrap();
    let (ok, err) = write(&[fs, "--expect-size", "10"], b"short");
    assert!(!ok);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("5 bytes") && err.contains(fs), "{err}");
    // sha256("hello\n")
    let good = "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03";
    let (ok, err) = write(&[fs, "--sha256", good], b"hellO\n");
    assert!(!ok);
    assert!(err.contains("SHA-256"), "{err}");
    let (ok, err) = write(&[fs, "--sha256", "xyz"], b"hello\n");
    assert!(!ok);
    assert!(err.contains("--sha256"), "{err}");
    assert_eq!(std::fs::read(&f).unwrap(), b"old");
    assert!(temps(&d.0).is_empty());
    assert!(write(&[fs, "--sha256", good, "--expect-size", "6"], b"hello\n").0);
    assert_eq!(std::fs::read(&f).unwrap(), b"hello\n");
}

#[test]
fn errors_are_one_clean_line_and_leave_nothing() {
    let d = TempDir::new("errors");
    std::fs::create_dir(d.join("dir")).unwrap();
    for (target, needle) in [
        (d.join("dir"), "directory"),
        (d.join("missing/f"), "open parent directory"),
        (d.join("n".repeat(300)), "too long"),
    ] {
        let (ok, err) = write(&[target.to_str().unwrap()], b"x");
        assert!(!ok);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("fstx: write "), "{err}");
        assert!(err.contains(needle), "{err}");
        assert!(err.contains("not committed"), "{err}");
    }
    assert!(temps(&d.0).is_empty());
    let out = fstx().args(["write"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "usage errors exit 2");
}

fn wait_for_temp(dir: &Path, n: usize) -> Vec<PathBuf> {
    let start = Instant::now();
    loop {
        let t = temps(dir);
        if t.len() >= n {
            return t;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no temp file appeared"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn recover_removes_a_killed_writers_temp_but_not_a_live_one() {
    let d = TempDir::new("killed");
    std::fs::write(d.join("a"), b"old a").unwrap();
    // A writer killed with SIGKILL mid-stream.
    let mut dead = fstx()
        .args(["write", d.join("a").to_str().unwrap()])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    dead.stdin.as_mut().unwrap().write_all(b"partial").unwrap();
    let dead_temp = wait_for_temp(&d.0, 1);
    dead.kill().unwrap();
    dead.wait().unwrap();
    // A live writer, still waiting for input.
    let mut live = fstx()
        .args(["write", d.join("b").to_str().unwrap()])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let all = wait_for_temp(&d.0, 2);
    let live_temp: Vec<_> = all.iter().filter(|t| !dead_temp.contains(t)).collect();
    assert_eq!(live_temp.len(), 1);
    // The file appears before its writer locks it (a recovery in that window
    // removes it and the writer starts over under a new name): wait until the
    // live writer holds its lock.
    let start = Instant::now();
    while !fstx::RecoverOptions::new()
        .dry_run(true)
        .recover(&d.0)
        .unwrap()
        .in_use
        .contains(live_temp[0])
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the live writer never locked"
        );
        std::thread::sleep(Duration::from_millis(5));
    }

    let out = fstx()
        .args(["recover", d.0.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains(&format!(
            "removed stale temporary file {}",
            dead_temp[0].display()
        )),
        "{stdout}"
    );
    assert!(stdout.contains("live writer"), "{stdout}");
    assert!(!dead_temp[0].exists());
    assert!(live_temp[0].exists());
    assert_eq!(std::fs::read(d.join("a")).unwrap(), b"old a");

    live.stdin.take().unwrap().write_all(b"b done").unwrap();
    assert!(live.wait().unwrap().success());
    assert_eq!(std::fs::read(d.join("b")).unwrap(), b"b done");
    assert!(temps(&d.0).is_empty());
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// `fstx write` streams: the peak RSS after 1 GiB of input is within 1 MiB
/// of the peak after the first 4 MiB.
#[test]
fn write_streams_in_constant_memory() {
    let d = TempDir::new("stream");
    let mut child = fstx()
        .args([
            "write",
            "--durability",
            "none",
            d.join("big").to_str().unwrap(),
        ])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut stdin = child.stdin.take().unwrap();
    let chunk = vec![1u8; 1 << 20];
    for _ in 0..4 {
        stdin.write_all(&chunk).unwrap();
    }
    let early = peak_rss_kib(pid);
    for _ in 4..1024 {
        stdin.write_all(&chunk).unwrap();
    }
    let late = peak_rss_kib(pid);
    drop(stdin);
    assert!(child.wait().unwrap().success());
    assert_eq!(std::fs::metadata(d.join("big")).unwrap().len(), 1 << 30);
    eprintln!("fstx write peak RSS: {early} KiB after 4 MiB, {late} KiB after 1 GiB");
    assert!(late - early < 1024, "peak RSS grew by {} KiB", late - early);
}
