//! The VM lane on the CI budget: UBIFS and JFFS2 on raw flash
//! (`powercut_mtd`), F2FS (posix and strict fsync modes) and vfat, in
//! Debian's kernel under QEMU, recorded and replayed by the same powercut
//! inside the guest; and UBIFS under UBI's own power-cut emulation. Named
//! `mount_*`: the serial group. Every VM boot and every recording is paid
//! for: four boots in all, each run's configurations in one boot.
//!
//! - `fstx write` (the device tool): every crash state old or new with
//!   every acknowledged version, on UBIFS, JFFS2 and both F2FS modes, and
//!   under UBI's emulation. On vfat, in the same run: fstx refuses a
//!   durable replace, and told to accept weak semantics it loses data (the
//!   evidence for the refusal).
//! - The held-out broken writer (an in-place overwrite in two flushed
//!   halves): caught on UBIFS, JFFS2 and both F2FS modes. The 2002 recipe
//!   (no fsync of the temp file): caught wherever it is unsafe — everywhere
//!   but JFFS2, which writes file data at write(2) (printed, not
//!   asserted). Both in one workload.
//! - Under UBI's emulation, a writer that never flushes is caught.
//!
//! Knobs: `POWERCUT_TEST_VM_STATES` (per configuration, default 20).
//! Needs root, `qemu-system-x86_64`, `linux-image-amd64`, `busybox-static`
//! (`scripts/setup` installs them).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use powercut::Report;

mod common;

/// Versions each test writer writes (a recording's cost under TCG is
/// mostly these; `WRITER_ITERATIONS` in the writers).
const VERSIONS: &str = "8";

fn states() -> String {
    std::env::var("POWERCUT_TEST_VM_STATES").unwrap_or_else(|_| "20".into())
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
    run_states(writer, fs, env, &states())
}

/// [`run`], checking at most `states` states per configuration.
fn run_states(writer: &str, fs: &str, env: &[(&str, &str)], states: &str) -> Report {
    report_of(common::run_writer(fs, writer), writer, env, states)
}

/// Runs `powercut` (`c`, a run of the writers' scripts named `name`) in
/// the VM lane; returns the report.
fn report_of(mut c: Command, name: &str, env: &[(&str, &str)], states: &str) -> Report {
    let dir = std::env::temp_dir().join(format!("powercut-vm-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("report.json");
    c.args(["--no-explain", "--max-states", states, "--timeout", "120"])
        .arg("--json")
        .arg(&json)
        .arg("--artifacts")
        .arg(dir.join("artifacts"))
        .env("WRITER_ITERATIONS", VERSIONS)
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
    report.unwrap_or_else(|| panic!("powercut failed to run ({code}): {stderr}"))
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

/// `fstx write` on the four supported configurations and on vfat, in one
/// VM boot: 0 violations on UBIFS, JFFS2 and both F2FS modes; on vfat the
/// writer first checks that fstx refuses a durable replace (the workload
/// fails if it does not), then, told to accept weak semantics, fstx loses
/// data there: the evidence for the refusal.
#[test]
fn mount_vm_lane_fstx_write_survives_ubifs_jffs2_f2fs_and_is_right_to_refuse_vfat() {
    if !root() {
        return;
    }
    let r = run("fstx-write", "ubifs,jffs2,f2fs,f2fs-strict,vfat", &[]);
    for name in ["ubifs", "jffs2", "f2fs", "f2fs-strict"] {
        let c = config(&r, name);
        assert!(c.checked >= 10, "{name}: only {} states", c.checked);
        assert_eq!(c.violation_count, 0, "fstx on {name}: {:?}", c.violations);
        assert!(
            c.marks >= VERSIONS.parse().unwrap(),
            "{name}: the workload's marks reached the log"
        );
    }
    let c = config(&r, "vfat");
    assert!(
        c.violations.iter().any(|v| v.stage == "check"),
        "fstx --allow-weak-fs on vfat: no lost data in {} states",
        c.checked
    );
}

/// The held-out writer (an in-place overwrite in two flushed halves) and
/// the 2002 recipe, side by side in one workload (`pair.sh`: one directory
/// each, one recording and one VM boot for both); each violation names
/// its writer.
#[test]
fn mount_vm_lane_catches_the_2002_recipe_and_the_held_out_writer() {
    if !root() {
        return;
    }
    // vfat's evidence is the fstx test's and the seed experiment's.
    let all = "ubifs,jffs2,f2fs,f2fs-strict";
    let pair = common::run_scripts(all, "setup-pair", "pair", "check-pair");
    let r = report_of(pair, "pair", &[], &states());
    for name in all.split(',') {
        let c = config(&r, name);
        let caught = |writer: &str| {
            c.violations
                .iter()
                .filter(|v| v.stage == "check" && v.message.contains(writer))
                .count()
        };
        assert!(
            caught("inplace-halves:") > 0,
            "the two-halves overwrite was not caught on {} ({} states checked): {:?}",
            c.config,
            c.checked,
            c.violations
        );
        let lost = caught("rename-datanosync:");
        println!(
            "the 2002 recipe on {}: {lost} of {} states lost data",
            c.config, c.checked
        );
        if c.config != "jffs2" {
            assert!(
                lost > 0,
                "the 2002 recipe was not caught on {} ({} states checked)",
                c.config,
                c.checked
            );
        }
    }
}

/// UBI's own power-cut emulation on nandsim, the second oracle: `fstx
/// write` survives every cut UBI makes (at least one run must be cut), and
/// a writer that never flushes does not (cut at UBI's first three header
/// writes of a 60-version run: measured, the second leaves an empty file).
#[test]
fn mount_vm_lane_ubi_emulation_agrees() {
    if !root() {
        return;
    }
    // 15 versions: UBI cuts only at header writes, and 15 fstx writes make
    // about 2–4 of them (design §8).
    let r = run_states(
        "fstx-write",
        "ubifs-emulated",
        &[("WRITER_ITERATIONS", "15")],
        "4",
    );
    let c = config(&r, "ubifs-emulated");
    assert!(c.checked >= 4, "{} runs", c.checked);
    assert!(
        c.coverage.distinct_states >= 1,
        "no run was cut: {:?}",
        c.coverage
    );
    assert_eq!(
        c.violation_count, 0,
        "fstx under UBI's emulation: {:?}",
        c.violations
    );
    let env = [("POWERCUT_UBI_CUTS", "1,2,3"), ("WRITER_ITERATIONS", "60")];
    let r = run_states("rename-nosync", "ubifs-emulated", &env, "3");
    let c = config(&r, "ubifs-emulated");
    assert!(
        c.violations.iter().any(|v| v.stage == "check"),
        "a writer that never flushes escaped UBI's emulation: {:?}",
        c.violations
    );
}

/// Without QEMU, or without Debian's kernel, the lane fails at once with
/// one line naming what to install (and starts nothing).
#[test]
fn vm_lane_without_qemu_or_kernel_fails_in_one_line() {
    // The kernel is looked for after QEMU and busybox: that case needs them.
    let lane_tools = std::path::Path::new("/bin/busybox").is_file()
        && std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .any(|d| d.join("qemu-system-x86_64").is_file());
    for (var, value, expect) in [
        ("PATH", "/nonexistent", "qemu-system-x86"),
        (
            "POWERCUT_KERNEL",
            "/nonexistent/vmlinuz",
            "linux-image-amd64",
        ),
    ] {
        if var == "POWERCUT_KERNEL" && !lane_tools {
            eprintln!("skipped the kernel case: no QEMU or busybox here");
            continue;
        }
        let out = common::run_writer("f2fs", "correct")
            .args(["--max-states", "1"])
            .env(var, value)
            .output()
            .expect("run powercut");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{var}={value}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(expect), "{var}={value}: {stderr}");
    }
}

/// More raw-flash checkers than `powercut_mtd` has instances: one line,
/// before any VM starts (no QEMU on `PATH`, so a boot would fail
/// differently).
#[test]
fn vm_lane_refuses_too_many_raw_flash_checkers_before_booting() {
    let out = common::run_writer("ubifs", "correct")
        .args(["--max-states", "1", "--jobs", "16"])
        .env("PATH", "/nonexistent")
        .output()
        .expect("run powercut");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains("ubifs: --jobs 16: raw flash runs at most 15 checkers"),
        "{stderr}"
    );
}
