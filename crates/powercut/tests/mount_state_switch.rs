//! Switching a replay disk to the next crash state drops only the pages of
//! the kernel's cache that differ from the last state. `--verify-images`
//! reads the whole loop device before every check and compares it with the
//! image rebuilt from the log: on every configuration, every state must show
//! exactly its crash image.

mod common;

#[test]
fn mount_each_state_shows_exactly_its_crash_image() {
    let fs = std::env::var("POWERCUT_TEST_FS").unwrap_or_else(|_| "all".into());
    let out = common::run_writer(&fs, "correct")
        .args(["--max-states", "30", "--verify-images", "--no-fsck"])
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
