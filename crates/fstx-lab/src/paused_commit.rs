//! `fstx-lab __commit --pause PHASE:MS ROOT ...` (hidden): `fstx commit`
//! that sleeps MS milliseconds when the commit reaches PHASE (`staged`,
//! `committed` or `applied`), so the kill test can `SIGKILL` it there. The
//! phases after staging last milliseconds; without a pause, a random kill
//! hardly ever lands in them.
//!
//! The commit is the `fstx` binary's own code
//! ([`fstx_cli::cmd::commit::run_with`]) with an
//! [`on_phase`](fstx::TxnOptions::on_phase) hook; the flags after
//! `--pause` are `fstx commit`'s. The device tool has no such hook.

use std::process::ExitCode;
use std::time::Duration;

use fstx_cli::Failure;

/// `fstx commit`, paused at a phase (for the kill test).
#[derive(Debug, clap::Args)]
pub(crate) struct PausedArgs {
    /// Sleep MS milliseconds when the commit reaches PHASE (staged,
    /// committed, applied); with FLAG, first create file FLAG (so that a
    /// test knows the pause began).
    #[arg(long, value_name = "PHASE:MS[:FLAG]", value_parser = parse_pause)]
    pause: Option<Pause>,
    #[command(flatten)]
    commit: fstx_cli::cmd::commit::Args,
}

/// A parsed `--pause`.
#[derive(Debug, Clone)]
pub(crate) struct Pause {
    phase: fstx::Phase,
    ms: u64,
    flag: Option<std::path::PathBuf>,
}

fn parse_pause(v: &str) -> Result<Pause, String> {
    let bad =
        || format!("expected PHASE:MS[:FLAG] (PHASE staged, committed or applied), got '{v}'");
    let mut parts = v.splitn(3, ':');
    let phase = match parts.next().ok_or_else(bad)? {
        "staged" => fstx::Phase::Staged,
        "committed" => fstx::Phase::Committed,
        "applied" => fstx::Phase::Applied,
        _ => return Err(bad()),
    };
    let ms = parts.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
    let flag = parts.next().map(std::path::PathBuf::from);
    Ok(Pause { phase, ms, flag })
}

/// Runs `fstx commit` with the pause.
pub(crate) fn run(args: &PausedArgs) -> Result<ExitCode, Failure> {
    let mut opts = fstx::TxnOptions::new();
    if let Some(Pause { phase, ms, flag }) = args.pause.clone() {
        opts.on_phase(move |at: fstx::Phase| {
            if at == phase {
                if let Some(flag) = &flag {
                    let _ = std::fs::write(flag, b"");
                }
                std::thread::sleep(Duration::from_millis(ms));
            }
        });
    }
    fstx_cli::cmd::commit::run_with(&args.commit, opts)
}
