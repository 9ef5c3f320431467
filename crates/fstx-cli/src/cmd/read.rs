//! `fstx read FILE`: print the newest version of FILE that verifies, looking
//! at FILE and its backups.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use crate::Failure;

/// Print the newest verified version of FILE (or of its backups) to
/// standard output.
///
/// Looks at FILE, FILE~, FILE~2, ... and prints the payload of the one with
/// the highest sequence number whose envelope verifies (FILE wins a tie).
/// Falling back to a backup is reported on standard error. A plain file (no
/// envelope) is printed as is only when no candidate carries an envelope.
/// Nothing valid: exit 1, naming every candidate and its defect.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The file to read.
    file: PathBuf,
    /// Refuse plain files (without a verified envelope).
    #[arg(long)]
    require_verified: bool,
    /// The backup suffix `fstx update` was given.
    #[arg(long, value_name = "SUFFIX", default_value = "~")]
    backup: String,
    /// Look at exactly N backup generations (default: while they exist).
    #[arg(long, value_name = "N")]
    generations: Option<usize>,
}

/// Runs `fstx read`.
pub fn run(args: &Args) -> Result<ExitCode, Failure> {
    let mut opts = fstx::ReadOptions::new();
    opts.require_verified(args.require_verified)
        .backup(&args.backup);
    if let Some(n) = args.generations {
        opts.generations(n);
    }
    let out = opts.read(&args.file)?;
    if out.fell_back {
        let why = out
            .rejected
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        eprintln!(
            "fstx: read {}: fell back to {}{}: {why}",
            args.file.display(),
            out.path.display(),
            out.seq
                .map(|s| format!(" (sequence {s})"))
                .unwrap_or_default()
        );
    }
    let mut stdout = io::stdout().lock();
    stdout
        .write_all(&out.content)
        .and_then(|()| stdout.flush())
        .map_err(|e| Failure::new(format!("read: write standard output: {e}")))?;
    Ok(ExitCode::SUCCESS)
}
