//! `fstx record write TARGET` and `fstx record read TARGET`: a two-slot
//! record in a regular file or block device, for storage without an atomic
//! rename (vfat, exfat, a raw partition).

use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use crate::Failure;

/// Keep one value in two slots of a file or block device (no rename needed).
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Write standard input as the record's new value: in place, into the
    /// slot not holding the newest value, then flushed.
    Write(WriteArgs),
    /// Print the record's newest valid value to standard output.
    Read(ReadArgs),
}

#[derive(Debug, clap::Args)]
struct WriteArgs {
    /// A regular file (created if missing) or a block device; a symlink is
    /// followed only to a block device.
    target: PathBuf,
    /// The largest value, in bytes: required to create a record, must match
    /// an existing one.
    #[arg(long, value_name = "MAX")]
    size: Option<u64>,
    /// Make a new record on a target that holds none (or one of another size).
    #[arg(long)]
    init: bool,
}

#[derive(Debug, clap::Args)]
struct ReadArgs {
    /// A regular file or a block device (a symlink only to a block device).
    target: PathBuf,
}

/// Runs `fstx record`.
pub fn run(args: &Args) -> Result<ExitCode, Failure> {
    match &args.command {
        Command::Write(a) => {
            let mut value = Vec::new();
            // Never more than one byte past the limit: a larger value fails
            // before anything is written, without reading all of it.
            let limit = a.size.unwrap_or(fstx::RECORD_MAX_VALUE);
            io::stdin()
                .lock()
                .take(limit.saturating_add(1))
                .read_to_end(&mut value)
                .map_err(|e| {
                    Failure::new(format!(
                        "record write {}: read standard input: {e}",
                        a.target.display()
                    ))
                })?;
            let mut opts = fstx::RecordOptions::new();
            opts.init(a.init);
            if let Some(max) = a.size {
                opts.max_len(max);
            }
            opts.write(&a.target, &value)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Read(a) => {
            let v = fstx::read_record(&a.target)?;
            let mut out = io::stdout().lock();
            out.write_all(&v.value)
                .and_then(|()| out.flush())
                .map_err(|e| Failure::new(format!("record read: write standard output: {e}")))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
