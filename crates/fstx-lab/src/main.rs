//! `fstx-lab`: fstx's test harnesses, kept out of the device tool.
//!
//! - `fstx-lab powercut`: the seed experiment — worker processes loop fstx
//!   operations (and, side by side, the unsafe recipes people use) on a real
//!   filesystem whose every block write and cache flush is recorded; every
//!   crash state a power cut could leave is mounted, recovered and checked.
//!   Without root, FUSE or loop devices it runs on the in-process simulator.
//! - `fstx-lab torture`: the kill test — processes loop locked updates and
//!   are killed with `SIGKILL` at random, checked live and at the end.
//!
//! The hidden subcommands are what those harnesses run in their child
//! processes; `__commit` is `fstx commit` (the same code, from the
//! `fstx-cli` library) paused at a phase, for the kill test of transactions.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use fstx_cli::Failure;

mod experiment;
mod paused_commit;
mod powercut;
mod simrun;
mod torture;

/// fstx's test harnesses: the power-cut experiment and the kill test.
#[derive(Debug, Parser)]
#[command(name = "fstx-lab", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Powercut(powercut::Args),
    Torture(torture::Args),
    #[command(name = "__powercut", hide = true)]
    PowercutInner(powercut::InnerArgs),
    #[command(hide = true)]
    TortureWorker(torture::WorkerArgs),
    #[command(name = "__commit", hide = true)]
    PausedCommit(paused_commit::PausedArgs),
}

fn try_main() -> Result<ExitCode, Failure> {
    let cli = Cli::parse();
    match cli.command {
        Command::Powercut(args) => powercut::run(&args),
        Command::Torture(args) => torture::run(&args),
        Command::PowercutInner(args) => powercut::inner(&args),
        Command::TortureWorker(args) => torture::worker(&args),
        Command::PausedCommit(args) => paused_commit::run(&args),
    }
}

fn main() -> ExitCode {
    fstx_cli::exit("fstx-lab", try_main())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_well_formed() {
        <super::Cli as clap::CommandFactory>::command().debug_assert();
    }
}
