//! The VM lane on the CI budget: F2FS (posix and strict fsync modes) and
//! vfat, in Debian's kernel under QEMU, recorded and replayed by the same
//! powercut inside the guest. Named `mount_*`: the serial group.
//!
//! - `fstx write` (the device tool): every crash state old or new with
//!   every acknowledged version, on both F2FS modes.
//! - The 2002 recipe (no fsync of the temp file) and the held-out broken
//!   writer (an in-place overwrite in two flushed halves): caught on each.
//! - vfat: what the writers do there (the evidence for fstx refusing it):
//!   `fstx write --allow-weak-fs` and the 2002 recipe lose data.
//!
//! Knobs: `POWERCUT_TEST_VM_STATES` (per configuration, default 30).
//! Needs root, `qemu-system-x86_64`, `linux-image-amd64`, `busybox-static`
//! (`scripts/setup` installs them).

use std::path::{Path, PathBuf};
use std::process::Stdio;

use powercut::Report;

mod common;

fn states() -> String {
    std::env::var("POWERCUT_TEST_VM_STATES").unwrap_or_else(|_| "30".into())
}

/// The `fstx` device tool, built beside `powercut` by the workspace build.
fn fstx_bin() -> PathBuf {
    let p = Path::new(env!("CARGO_BIN_EXE_powercut")).with_file_name("fstx");
    assert!(
        p.is_file(),
        "{} is missing: build the workspace (cargo build --workspace)",
        p.display()
    );
    p
}

/// Runs `writer` on `fs` in the VM lane; returns the report.
fn run(writer: &str, fs: &str, env: &[(&str, &str)]) -> Report {
    let (code, report, stderr) = try_run(writer, fs, env);
    report.unwrap_or_else(|| panic!("powercut failed to run ({code}): {stderr}"))
}

/// Runs `writer` on `fs` in the VM lane: exit code, report if it ran, stderr.
fn try_run(writer: &str, fs: &str, env: &[(&str, &str)]) -> (i32, Option<Report>, String) {
    let dir = std::env::temp_dir().join(format!("powercut-vm-{}-{writer}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("report.json");
    let mut c = common::run_writer(fs, writer);
    c.args([
        "--no-explain",
        "--max-states",
        &states(),
        "--timeout",
        "120",
    ])
    .arg("--json")
    .arg(&json)
    .arg("--artifacts")
    .arg(dir.join("artifacts"))
    .env("WRITER_ITERATIONS", "15")
    .env("FSTX", fstx_bin())
    .stderr(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().expect("run powercut");
    let stdout = String::from_utf8_lossy(&out.stdout);
    for line in stdout.lines().take(10) {
        println!("{line}");
    }
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let tail: Vec<&str> = stderr.lines().rev().take(8).collect();
    for line in tail.iter().rev() {
        eprintln!("{line}");
    }
    let code = out.status.code().unwrap_or(-1);
    let report = std::fs::read(&json)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let _ = std::fs::remove_dir_all(&dir);
    (code, report, stderr)
}

fn root() -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    eprintln!("skipped: powercut needs root");
    false
}

fn config<'a>(r: &'a Report, name: &str) -> &'a powercut::ConfigReport {
    r.configs
        .iter()
        .find(|c| c.config == name)
        .unwrap_or_else(|| panic!("no report for {name}"))
}

#[test]
fn mount_vm_lane_fstx_write_survives_f2fs() {
    if !root() {
        return;
    }
    let r = run("fstx-write", "f2fs,f2fs-strict", &[]);
    for name in ["f2fs", "f2fs-strict"] {
        let c = config(&r, name);
        assert!(c.checked >= 10, "{name}: only {} states", c.checked);
        assert_eq!(c.violation_count, 0, "fstx on {name}: {:?}", c.violations);
        assert!(
            c.marks >= 15,
            "{name}: the workload's marks reached the log"
        );
    }
}

#[test]
fn mount_vm_lane_catches_the_2002_recipe_and_the_held_out_writer() {
    if !root() {
        return;
    }
    for writer in ["rename-datanosync", "inplace-halves"] {
        let r = run(writer, "f2fs,f2fs-strict,vfat", &[]);
        for c in &r.configs {
            assert!(
                c.violations.iter().any(|v| v.stage == "check"),
                "{writer} was not caught on {} ({} states checked)",
                c.config,
                c.checked
            );
        }
    }
}

#[test]
fn mount_vm_lane_vfat_loses_fstx_writes_it_would_refuse() {
    if !root() {
        return;
    }
    // fstx refuses vfat for a durable replace ...
    let (code, report, stderr) = try_run("fstx-write", "vfat", &[]);
    assert_eq!(code, 2, "the workload must fail: fstx refuses vfat");
    assert!(report.is_none());
    assert!(
        stderr.contains("workload failed") && stderr.contains("crash-atomic"),
        "{stderr}"
    );
    // ... and this is why: told to accept it, it loses data there.
    let r = run(
        "fstx-write",
        "vfat",
        &[("FSTX_WRITE_FLAGS", "--allow-weak-fs")],
    );
    let c = config(&r, "vfat");
    assert!(
        c.violations.iter().any(|v| v.stage == "check"),
        "fstx --allow-weak-fs on vfat: no lost data in {} states",
        c.checked
    );
}
