//! Memory stays flat for any file size: streaming 1 GiB through an
//! `AtomicFile` must grow the peak RSS of the writing process by less than
//! 1 MiB. Measured in a child process (this test binary re-executed), so
//! the test harness's own allocations do not count.

mod common;

use std::io::Write;
use std::process::Command;

const CHILD_ENV: &str = "FSTX_MEMORY_CHILD_TARGET";

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status")
}

/// The child: stream 1 GiB into the target and print the peak RSS growth.
fn child(target: &str) {
    let chunk = vec![0x5a_u8; 256 * 1024];
    // Warm up every code path once, so first-use allocations are not counted.
    fstx::write(target, &chunk).unwrap();
    let before = peak_rss_kib();
    let mut file = fstx::AtomicFile::create(target).unwrap();
    for _ in 0..(1 << 30) / chunk.len() {
        file.write_all(&chunk).unwrap();
    }
    file.commit().unwrap();
    let after = peak_rss_kib();
    assert_eq!(std::fs::metadata(target).unwrap().len(), 1 << 30);
    println!("peak-rss-growth-kib={}", after - before);
}

#[test]
fn mount_streaming_one_gib_keeps_memory_flat() {
    if let Ok(target) = std::env::var(CHILD_ENV) {
        child(&target);
        return;
    }
    let fs = common::Tmpfs::new("memory", "size=1100m");
    let target = fs.join("big.bin");
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "mount_streaming_one_gib_keeps_memory_flat",
            "--nocapture",
        ])
        .env(CHILD_ENV, &target)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let growth: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("peak-rss-growth-kib="))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no measurement in child output: {stdout}"));
    eprintln!("peak RSS growth while streaming 1 GiB: {growth} KiB");
    assert!(growth < 1024, "peak RSS grew by {growth} KiB");
}
