//! Without the kernel stack (here: not root), `fstx-lab powercut` says so in one
//! line and runs the same experiment on the in-process simulator.

use std::process::Command;

#[test]
fn without_root_the_experiment_runs_on_the_simulator() {
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_fstx-lab"))
        .args(["powercut", "--workers", "3", "--seconds", "1"])
        .current_dir(std::env::temp_dir())
        .output()
        .expect("setpriv (util-linux) runs the experiment as nobody");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("cannot run here"), "{stderr}");
    assert!(stderr.contains("in-process simulator"), "{stderr}");
    assert!(stdout.contains("in-process simulator"), "{stdout}");
    // fstx passes; the seed's recipe and the no-flush writer are caught.
    let row = |name: &str| {
        stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no row for {name}: {stdout}"))
            .split_whitespace()
            .nth(3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no violation count for {name}: {stdout}"))
    };
    assert_eq!(row("fstx"), 0, "{stdout}");
    assert!(row("seed-2002") > 0, "{stdout}");
    assert!(row("no-flush") > 0, "{stdout}");
    assert!(row("commit-before-data") > 0, "{stdout}");
}
