//! Switching a replay disk to the next crash state drops only the pages of
//! the kernel's cache that differ from the last state. `--verify-images`
//! reads the whole loop device before every check and compares it with the
//! image rebuilt from the log: on every configuration, every state must show
//! exactly its crash image.

use std::path::Path;
use std::process::Command;

#[test]
fn mount_each_state_shows_exactly_its_crash_image() {
    let w = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/writers");
    let fs = std::env::var("POWERCUT_TEST_FS").unwrap_or_else(|_| "all".into());
    let out = Command::new(env!("CARGO_BIN_EXE_powercut"))
        .args(["run", "-q", "--fs", &fs, "--max-states", "60"])
        .args(["--verify-images", "--no-fsck"])
        .arg("--setup")
        .arg(format!("sh {}/setup.sh", w.display()))
        .arg("--workload")
        .arg(format!("sh {}/correct.sh", w.display()))
        .arg("--check")
        .arg(format!("sh {}/check.sh", w.display()))
        .env("WRITER_ITERATIONS", "20")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "exit {:?}: {stdout}{stderr}",
        out.status.code()
    );
    assert!(stdout.contains("0 violations"), "{stdout}");
}
