//! What `fstx-cli`'s integration tests share: the built `fstx` binary, and
//! running it. (`commit_kill` is shared with `fstx-lab`'s tests too.)
#![allow(dead_code)]

pub(crate) mod commit_kill;

use std::process::Command;

/// The `fstx` binary this test build made.
pub(crate) fn fstx() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fstx"))
}

/// Runs `cmd` to its end: (success, stdout, stderr).
pub(crate) fn run(cmd: &mut Command) -> (bool, String, String) {
    let o = cmd.output().unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}
