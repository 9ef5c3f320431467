//! `fstx`: crash-safe file writes, updates and transactions for shell scripts.
//!
//! The device tool: `write`, `read`, `record`, `update`, `commit`, `recover`,
//! nothing else (the
//! test harnesses live in `fstx-lab`). A thin shell over the `fstx` library:
//! each subcommand parses its arguments, calls the library, and prints what
//! happened. `main` prints one clean error line and exits non-zero on
//! failure.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use fstx_cli::{cmd, Failure};

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
    Read(cmd::read::Args),
    Record(cmd::record::Args),
}

fn try_main() -> Result<ExitCode, Failure> {
    let cli = Cli::parse();
    match cli.command {
        Command::Write(args) => cmd::write::run(&args),
        Command::Recover(args) => cmd::recover::run(&args),
        Command::Commit(args) => cmd::commit::run(&args),
        Command::Update(args) => cmd::update::run(&args),
        Command::Read(args) => cmd::read::run(&args),
        Command::Record(args) => cmd::record::run(&args),
    }
}

fn main() -> ExitCode {
    fstx_cli::exit("fstx", try_main())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_well_formed() {
        <super::Cli as clap::CommandFactory>::command().debug_assert();
    }
}
