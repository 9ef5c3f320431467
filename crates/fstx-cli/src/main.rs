//! `fstx`: crash-safe file writes, updates and transactions for shell scripts.
//!
//! A thin shell over the `fstx` library: each subcommand parses its
//! arguments, calls the library, and prints what happened. `main` prints one
//! clean error line and exits non-zero on failure.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;
#[cfg(feature = "powercut")]
mod experiment;
#[cfg(feature = "powercut")]
mod simrun;

/// Crash-safe file operations: every update leaves either the complete old
/// or the complete new data, whenever the power is cut.
#[derive(Debug, Parser)]
#[command(name = "fstx", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Write(cmd::write::Args),
    Recover(cmd::recover::Args),
    Commit(cmd::commit::Args),
    Update(cmd::update::Args),
    Torture(cmd::torture::Args),
    #[command(hide = true)]
    TortureWorker(cmd::torture::WorkerArgs),
    #[cfg(feature = "powercut")]
    Powercut(cmd::powercut::Args),
    #[cfg(feature = "powercut")]
    #[command(name = "__powercut", hide = true)]
    PowercutInner(cmd::powercut::InnerArgs),
}

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
}

impl<E: std::error::Error> From<E> for Failure {
    fn from(e: E) -> Failure {
        Failure::new(e)
    }
}

fn try_main() -> Result<ExitCode, Failure> {
    let cli = Cli::parse();
    match cli.command {
        Command::Write(args) => cmd::write::run(&args),
        Command::Recover(args) => cmd::recover::run(&args),
        Command::Commit(args) => cmd::commit::run(&args),
        Command::Update(args) => cmd::update::run(&args),
        Command::Torture(args) => cmd::torture::run(&args),
        Command::TortureWorker(args) => cmd::torture::worker(&args),
        #[cfg(feature = "powercut")]
        Command::Powercut(args) => cmd::powercut::run(&args),
        #[cfg(feature = "powercut")]
        Command::PowercutInner(args) => cmd::powercut::inner(&args),
    }
}

fn main() -> ExitCode {
    match try_main() {
        Ok(code) => code,
        Err(failure) => {
            eprintln!("fstx: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}
