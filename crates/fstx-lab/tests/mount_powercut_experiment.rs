//! The seed experiment on the real kernel: `fstx-lab powercut` on all five
//! filesystem configurations. fstx must pass every crash state; each unsafe
//! writer must be caught (violations found) on every configuration.

use std::process::Command;

#[test]
fn mount_powercut_experiment_catches_unsafe_writers_on_every_configuration() {
    let json = std::env::temp_dir().join(format!("fstx-powercut-{}.json", std::process::id()));
    // Base images and logs of configurations with violations stay here, so a
    // failure can be replayed (the report prints the command).
    let artifacts = std::env::temp_dir().join(format!("fstx-powercut-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_fstx-lab"))
        .args([
            "powercut",
            "--fs",
            "all",
            "--workers",
            "10",
            "--seconds",
            "1",
        ])
        .args(["--max-states", "80", "--json"])
        .arg(&json)
        .arg("--artifacts")
        .arg(&artifacts)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}");
    assert!(
        out.status.success(),
        "fstx-lab powercut failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let _ = std::fs::remove_file(&json);
    let mut seen = 0;
    for contender in report.as_array().unwrap() {
        let name = contender["contender"].as_str().unwrap();
        for cfg in contender["report"]["configs"].as_array().unwrap() {
            let fs = cfg["config"].as_str().unwrap();
            let checked = cfg["checked"].as_u64().unwrap();
            let violations = cfg["violation_count"].as_u64().unwrap();
            assert!(
                checked >= 40,
                "{name} on {fs}: only {checked} states checked"
            );
            if name == "fstx" {
                assert_eq!(violations, 0, "fstx on {fs}: {}", cfg["violations"]);
            } else {
                assert!(
                    violations > 0,
                    "{name} on {fs}: the unsafe writer was not caught in {checked} states"
                );
            }
            seen += 1;
        }
    }
    assert_eq!(seen, 25, "five writers on five configurations");
    // Kept only for a failure (several hundred MB: the unsafe writers'
    // configurations always have violations).
    let _ = std::fs::remove_dir_all(&artifacts);
}
