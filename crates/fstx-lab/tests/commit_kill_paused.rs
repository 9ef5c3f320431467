//! The paused half of the SIGKILL test of `fstx commit --from-dir
//! --delete-missing` (the random half is `sigkill_during_commit_then_recover`
//! in `crates/fstx-cli/tests/cli_commit.rs`): the phases after staging last
//! milliseconds, so the commit is paused there and killed in the pause.
//!
//! The commit is `fstx-lab __commit --pause PHASE:MS`: the `fstx` binary's
//! own commit code (`fstx_cli::cmd::commit::run_with`) with an `on_phase`
//! hook that sleeps. Recovery after each kill is `fstx::recover`, the
//! library call `fstx recover` makes.
//!
//! Kill moments, in turn: while the commit sleeps at the commit point;
//! while it sleeps before retiring; just after a pause at the commit point
//! ends (applying).

use std::path::Path;

mod common;

#[path = "../../fstx-cli/tests/support/commit_kill.rs"]
mod commit_kill;
use commit_kill::{budget, sigkill_loop, spawn_commit, Phases, Tools};
use common::lab;
use fstx_testkit::TempDir;

#[test]
fn sigkill_during_paused_commit_then_recover() {
    let d = TempDir::new("lab-kill");
    let commit = |root: &Path, stage: &Path, pause: Option<&str>| {
        let mut c = lab();
        c.arg("__commit");
        if let Some(p) = pause {
            c.args(["--pause", p]);
        }
        spawn_commit(c, root, stage)
    };
    let recover = |root: &Path| match fstx::recover(root) {
        Ok(r) => (true, format!("{r:?}")),
        Err(e) => (false, e.to_string()),
    };
    let tools = Tools {
        commit: &commit,
        recover: &recover,
    };
    let done = |p: &Phases| p.commit_record > 0 && p.apply > 0 && p.retire > 0;
    let phases = sigkill_loop(&d, &tools, &[2, 3, 4], budget(), &done);
    assert!(phases.commit_record > 0, "{phases:?}");
    assert!(phases.apply > 0, "{phases:?}");
    assert!(phases.retire > 0, "{phases:?}");
}
