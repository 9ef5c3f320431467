//! The work of the `fstx` command-line tool's subcommands, as a library.
//!
//! The `fstx` binary (`src/main.rs`) parses the command line and calls
//! these; `fstx-lab` reuses them (for example, [`cmd::commit::run_with`]
//! runs `fstx commit` with a phase hook for the kill test) instead of
//! copying them. Each subcommand has `Args` (its clap arguments) and `run`.

pub mod cmd;

/// A CLI failure: an error message, and the exit code to leave with.
#[derive(Debug)]
pub struct Failure {
    message: String,
    code: u8,
}

impl Failure {
    /// A failure with exit code 1.
    pub fn new(message: impl std::fmt::Display) -> Failure {
        Failure {
            message: message.to_string(),
            code: 1,
        }
    }

    /// The one-line error message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The exit code to leave with.
    pub fn code(&self) -> u8 {
        self.code
    }
}

/// A binary's exit: its code on success; on failure, one line
/// `PROGRAM: MESSAGE` on standard error and the failure's code. The `main`
/// of `fstx` and of `fstx-lab`.
pub fn exit(
    program: &str,
    result: Result<std::process::ExitCode, Failure>,
) -> std::process::ExitCode {
    match result {
        Ok(code) => code,
        Err(failure) => {
            eprintln!("{program}: {}", failure.message());
            std::process::ExitCode::from(failure.code())
        }
    }
}

impl<E: std::error::Error> From<E> for Failure {
    fn from(e: E) -> Failure {
        Failure::new(e)
    }
}
