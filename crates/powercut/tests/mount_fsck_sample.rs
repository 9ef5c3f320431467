//! The fsck sample must not hide what only fsck can see. A planted
//! inconsistency the kernel never notices (a link count set behind its back
//! with debugfs, in every crash state) is caught by the default sample,
//! and by every image with `--fsck-sample 1`; the report says how many
//! images fsck ran on. An image the kernel complained about (an inode
//! checksum broken the same way, read by the checker) is always fsck'ed.

use std::path::Path;
use std::process::Command;

use powercut::Report;

fn run(sample: &str, tag: &str, plant: &str) -> Report {
    let w = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/writers");
    let dir = std::env::temp_dir().join(format!("powercut-fsck-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("report.json");
    let out = Command::new(env!("CARGO_BIN_EXE_powercut"))
        .args(["run", "-q", "--fs", "ext4", "--max-states", "60"])
        .args(["--fsck-sample", sample])
        .arg("--setup")
        .arg(format!(
            "M=$PWD; cd / && exec sh {}/setup-fsck-only.sh \"$M\"",
            w.display()
        ))
        .arg("--workload")
        .arg(format!("sh {}/correct.sh", w.display()))
        .arg("--check")
        // Reads the planted file (ignoring the error a bad checksum gives),
        // then the usual check, which never looks at it.
        .arg(format!(
            "cat victim >/dev/null 2>&1; sh {}/check.sh",
            w.display()
        ))
        .arg("--json")
        .arg(&json)
        .arg("--artifacts")
        .arg(dir.join("artifacts"))
        .env("WRITER_ITERATIONS", "20")
        .env("PLANT", plant)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "powercut failed to run: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Report = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    report
}

#[test]
fn mount_fsck_sample_still_catches_what_only_fsck_sees() {
    let all = run("1", "all", "links");
    let c = &all.configs[0];
    assert_eq!(c.fsck_runs, c.checked, "--fsck-sample 1 checks every image");
    assert_eq!(
        c.violation_count,
        c.checked,
        "every state carries the planted inconsistency: {:?}",
        c.violations.first()
    );
    assert!(c.violations.iter().all(|v| v.stage == "fsck"));
    assert!(
        c.violations[0]
            .message
            .contains("ref count is 5, should be 1"),
        "{}",
        c.violations[0].message
    );

    let sampled = run("10", "sampled", "links");
    let c = &sampled.configs[0];
    assert!(c.checked >= 40, "only {} states", c.checked);
    assert!(
        c.fsck_runs < c.checked / 2,
        "the sample ran fsck on {} of {} images",
        c.fsck_runs,
        c.checked
    );
    assert!(
        c.violation_count > 0 && c.violation_count == c.fsck_runs,
        "every fsck'ed image must fail, and some image must be fsck'ed: {} violations, {} fsck runs",
        c.violation_count,
        c.fsck_runs
    );
    assert!(c.violations.iter().all(|v| v.stage == "fsck"));
}

#[test]
fn mount_fsck_sample_checks_every_image_the_kernel_warned_about() {
    let r = run("10", "warned", "checksum");
    let c = &r.configs[0];
    assert!(c.checked >= 40, "only {} states", c.checked);
    assert_eq!(
        c.kernel_warnings, c.checked,
        "the kernel logs the bad checksum in every state"
    );
    assert_eq!(
        c.fsck_runs, c.checked,
        "every warned-about image is fsck'ed"
    );
    assert_eq!(c.violation_count, c.checked);
    assert!(c.violations.iter().all(|v| v.stage == "fsck"));
}
