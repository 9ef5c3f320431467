//! What `fstx-lab`'s integration tests share: the built `fstx-lab` binary.

use std::process::Command;

/// The `fstx-lab` binary this test build made.
pub(crate) fn lab() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fstx-lab"))
}
