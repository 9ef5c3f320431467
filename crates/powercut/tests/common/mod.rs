//! What the power-cut tests share: the writers in `tests/writers` and the
//! `powercut run` command line that runs one of them.

// Each test file uses part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The directory of the test writers (shell scripts).
pub(crate) fn writers() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/writers")
}

/// `powercut run -q --fs FS` with `setup.sh`, the writer `NAME.sh` as the
/// workload and `check.sh` as the checker; callers add the rest.
pub(crate) fn run_writer(fs: &str, writer: &str) -> Command {
    run_scripts(fs, "setup", writer, "check")
}

/// `powercut run -q --fs FS` with the writers' scripts `SETUP.sh`,
/// `WORKLOAD.sh` and `CHECK.sh`; callers add the rest.
pub(crate) fn run_scripts(fs: &str, setup: &str, workload: &str, check: &str) -> Command {
    let w = writers();
    let mut c = Command::new(env!("CARGO_BIN_EXE_powercut"));
    c.args(["run", "-q", "--fs", fs]);
    for (flag, script) in [
        ("--setup", setup),
        ("--workload", workload),
        ("--check", check),
    ] {
        c.arg(flag).arg(format!("sh {}/{script}.sh", w.display()));
    }
    c
}
