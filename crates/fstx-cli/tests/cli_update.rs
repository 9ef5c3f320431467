//! End-to-end tests of `fstx update`, running the real binary in real
//! processes (lost updates across processes, dead lock holders). The kill
//! test (`fstx-lab torture`) is tested in `crates/fstx-lab/tests/torture.rs`.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod support;

use fstx_testkit::TempDir;
use support::fstx;

/// `fstx update FILE [flags] -- sh -c SCRIPT`.
fn update(file: &Path, flags: &[&str], script: &str) -> Output {
    fstx()
        .arg("update")
        .arg(file)
        .args(flags)
        .args(["--", "sh", "-c", script])
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

const INCREMENT: &str = "read x; echo $((x+1))";

#[test]
fn counter_from_many_shells_never_loses_a_count() {
    let d = TempDir::new("counter");
    let n = d.join("n");
    let shells = 8;
    let each = 25;
    let script = format!(
        "for i in $(seq {each}); do \"$0\" update \"$1\" -- sh -c '{INCREMENT}' || exit 1; done"
    );
    let children: Vec<_> = (0..shells)
        .map(|_| {
            Command::new("sh")
                .arg("-c")
                .arg(&script)
                .arg(env!("CARGO_BIN_EXE_fstx"))
                .arg(&n)
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    assert_eq!(
        std::fs::read_to_string(&n).unwrap(),
        format!("{}\n", shells * each)
    );
    assert_eq!(d.names(), vec![".fstx-lock.n", "n"]);
}

#[test]
fn failing_command_leaves_the_file_and_passes_its_status() {
    let d = TempDir::new("fail");
    let f = d.join("f");
    std::fs::write(&f, "keep\n").unwrap();
    let out = update(&f, &["--backup"], "cat >/dev/null; echo garbage; exit 3");
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("file unchanged"));
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "keep\n");
    let out = update(&f, &[], "kill -9 $$");
    assert_eq!(out.status.code(), Some(128 + 9));
    let out = fstx()
        .args(["update"])
        .arg(&f)
        .args(["--", "/nonexistent/command"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(127));
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "keep\n");
    assert_eq!(d.names(), vec![".fstx-lock.f", "f"]);
}

#[test]
fn missing_file_reads_as_empty_and_output_becomes_content() {
    let d = TempDir::new("missing");
    let f = d.join("new");
    let out = update(&f, &[], "wc -c; echo made");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "0\nmade\n");
}

#[test]
fn backups_and_generations() {
    let d = TempDir::new("backup");
    let f = d.join("cfg");
    for v in 1..=4 {
        let out = update(
            &f,
            &["--backup=.old", "--generations", "2"],
            &format!("echo v{v}"),
        );
        assert!(out.status.success(), "{out:?}");
    }
    let read = |n: &str| std::fs::read_to_string(d.join(n)).unwrap();
    assert_eq!(
        (read("cfg"), read("cfg.old"), read("cfg.old2")),
        ("v4\n".into(), "v3\n".into(), "v2\n".into())
    );
    let out = update(&f, &["--backup"], "echo v5");
    assert!(out.status.success());
    assert_eq!(read("cfg~"), "v4\n");
}

/// Starts `fstx update FILE -- sleep` in the background and waits until it
/// holds the lock. Returns the fstx process and the pid of its `sleep`.
fn hold_lock(d: &TempDir, f: &Path) -> (std::process::Child, u32) {
    let pidfile = d.join("holder.pid");
    let mut holder = fstx()
        .arg("update")
        .arg(f)
        .args(["--", "sh", "-c"])
        .arg(format!("echo $$ > {}; exec sleep 30", pidfile.display()))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if let Some(pid) = std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            return (holder, pid);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = holder.kill();
    let _ = holder.wait();
    panic!("the lock holder never started");
}

#[test]
fn lock_timeout_and_dead_holder_releases() {
    let d = TempDir::new("timeout");
    let f = d.join("f");
    std::fs::write(&f, "1\n").unwrap();
    let (mut holder, sleep_pid) = hold_lock(&d, &f);

    // Held: --timeout 0 fails at once, --timeout 0.3 after 0.3 s, with 75.
    let out = update(&f, &["--timeout", "0"], INCREMENT);
    assert_eq!(out.status.code(), Some(75), "{out:?}");
    let start = Instant::now();
    let out = update(&f, &["--timeout", "0.3"], INCREMENT);
    assert_eq!(out.status.code(), Some(75), "{out:?}");
    assert!(start.elapsed() >= Duration::from_millis(300));
    assert!(String::from_utf8_lossy(&out.stderr).contains("timed out"));

    // The holder dies by SIGKILL (its `sleep` child lives on, without the
    // lock: the lock file handle is close-on-exec): the lock is free at once.
    holder.kill().unwrap();
    holder.wait().unwrap();
    let start = Instant::now();
    let out = update(&f, &["--timeout", "5"], INCREMENT);
    assert!(out.status.success(), "{out:?}");
    assert!(start.elapsed() < Duration::from_secs(3));
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "2\n");
    let _ = Command::new("kill").arg(sleep_pid.to_string()).status();
}

/// `fstx read FILE`: (exit code, stdout, stderr).
fn read(file: &Path) -> (i32, String, String) {
    let o = fstx().arg("read").arg(file).output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// `--verified`: CMD reads the payload (not the envelope), the result is
/// sealed; with FILE damaged, CMD reads FILE~'s payload and stderr says so
/// in one line; with --generations the backups rotate as usual.
#[test]
fn verified_update_reads_the_payload_and_falls_back_to_the_backup() {
    let d = TempDir::new("verified");
    let f = d.join("n");
    let flags = ["--verified", "--generations", "2"];
    for _ in 0..3 {
        let out = update(&f, &flags, "read x; echo $((x+1))");
        assert!(out.status.success(), "{out:?}");
        assert!(out.stderr.is_empty(), "{out:?}");
    }
    assert_eq!(read(&f), (0, "3\n".into(), String::new()));
    assert!(std::fs::read(&f).unwrap().starts_with(b"FSTXENV\0"));
    assert_eq!(read(&d.join("n~")).1, "2\n");
    // Damage FILE's payload: CMD starts from n~ (2), reported once.
    let mut b = std::fs::read(&f).unwrap();
    let last = b.len() - 2;
    b[last] ^= 1;
    std::fs::write(&f, &b).unwrap();
    let out = update(&f, &flags, "read x; echo $((x+10))");
    assert!(out.status.success(), "{out:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("fstx: update ")
            && err.contains(&format!("fell back to {}~", f.display()))
            && err.contains("payload checksum mismatch"),
        "{err}"
    );
    assert_eq!(read(&f), (0, "12\n".into(), String::new()));
    // The backup is the replaced FILE (damaged), the good one rotated on.
    assert_eq!(read(&d.join("n~2")).1, "2\n");
    // Nothing valid: exit 1, CMD never runs, nothing changes.
    for name in ["n", "n~", "n~2"] {
        let mut b = std::fs::read(d.join(name)).unwrap();
        let last = b.len() - 1;
        b[last] ^= 0x40;
        std::fs::write(d.join(name), &b).unwrap();
    }
    let before = std::fs::read(&f).unwrap();
    let marker = d.join("ran");
    let out = update(
        &f,
        &flags,
        &format!("touch {}; echo never", marker.display()),
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("no valid version"), "{err}");
    assert!(!marker.exists());
    assert_eq!(std::fs::read(&f).unwrap(), before);
}
