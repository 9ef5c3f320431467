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
    /// committed, applied).
    #[arg(long, value_name = "PHASE:MS", value_parser = parse_pause)]
    pause: Option<(fstx::Phase, u64)>,
    #[command(flatten)]
    commit: fstx_cli::cmd::commit::Args,
}

fn parse_pause(v: &str) -> Result<(fstx::Phase, u64), String> {
    let bad = || format!("expected PHASE:MS (PHASE staged, committed or applied), got '{v}'");
    let (p, ms) = v.split_once(':').ok_or_else(bad)?;
    let phase = match p {
        "staged" => fstx::Phase::Staged,
        "committed" => fstx::Phase::Committed,
        "applied" => fstx::Phase::Applied,
        _ => return Err(bad()),
    };
    Ok((phase, ms.parse().map_err(|_| bad())?))
}

/// Runs `fstx commit` with the pause.
pub(crate) fn run(args: &PausedArgs) -> Result<ExitCode, Failure> {
    let mut opts = fstx::TxnOptions::new();
    if let Some((phase, ms)) = args.pause {
        opts.on_phase(move |at: fstx::Phase| {
            if at == phase {
                std::thread::sleep(Duration::from_millis(ms));
            }
        });
    }
    fstx_cli::cmd::commit::run_with(&args.commit, opts)
}
