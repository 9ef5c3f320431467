//! `fstx recover DIR`: remove stale temporary files left by dead writers.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::Failure;

/// Remove temporary files left by dead writers (and, for a transaction
/// root, finish or roll back an interrupted transaction), and print what was
/// done. Files of live writers are never touched.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The directory to recover.
    dir: PathBuf,
    /// Only print what would be done.
    #[arg(long)]
    dry_run: bool,
}

/// Runs `fstx recover`.
pub fn run(args: &Args) -> Result<ExitCode, Failure> {
    let report = fstx::RecoverOptions::new()
        .dry_run(args.dry_run)
        .recover(&args.dir)?;
    let verb = if args.dry_run {
        "would remove"
    } else {
        "removed"
    };
    for path in &report.removed {
        println!("{verb} stale temporary file {}", path.display());
    }
    for path in &report.in_use {
        println!("left alone (a live writer holds it): {}", path.display());
    }
    for t in &report.transactions {
        if args.dry_run {
            println!("would recover: {t}");
        } else {
            println!("{t}");
        }
        // A checksum-valid but malformed journal is not an ordinary crash:
        // say so where a supervisor looks, and where the evidence is.
        if let fstx::TxnOutcome::Quarantined { dir, reason, .. } = &t.outcome {
            let verb = if args.dry_run {
                "would be quarantined"
            } else {
                "quarantined"
            };
            eprintln!(
                "fstx: warning: {}: {reason}; not applied, {verb} in {}",
                t.root.display(),
                dir.display()
            );
        }
    }
    if report.is_empty() {
        println!("nothing to recover in {}", args.dir.display());
    }
    Ok(ExitCode::SUCCESS)
}
