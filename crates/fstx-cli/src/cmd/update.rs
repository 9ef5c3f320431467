//! `fstx update FILE -- CMD [ARGS...]`: locked read-modify-write through a
//! command.

use std::ffi::OsString;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, ExitCode, ExitStatus, Stdio};
use std::time::Duration;

use super::DurabilityArg;
use crate::Failure;

/// Exit code when the lock could not be had within `--timeout` (`EX_TEMPFAIL`).
pub const EXIT_LOCK_TIMEOUT: u8 = 75;

/// Update FILE through a command, under FILE's lock.
///
/// Takes FILE's exclusive lock (shared by every `fstx update` and the
/// library's `fstx::update`, across processes), runs CMD with FILE's current
/// content on its standard input (empty if FILE does not exist), and if CMD
/// exits 0, replaces FILE with CMD's standard output, atomically and durably,
/// before releasing the lock. If CMD fails, FILE is unchanged and fstx exits
/// with CMD's status (128+N if CMD was killed by signal N). A process killed
/// while holding the lock releases it.
///
/// A counter incremented from many shells at once never loses a count:
/// `fstx update n -- sh -c 'read x; echo $((x+1))'`.
///
/// With --verified, CMD reads the payload of the newest version that
/// verifies among FILE and its backups (as `fstx read` chooses it; falling
/// back to a backup is reported in one line on standard error), and its
/// output is sealed in an envelope numbered above every backup's.
///
/// Exit status: CMD's when it fails; 75 when `--timeout` expired; 127 when
/// CMD cannot be started; 1 on other errors; 0 on success.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The file to update (created if missing and CMD succeeds).
    file: PathBuf,
    /// Keep the previous version as FILE + SUFFIX (default suffix `~`), as a
    /// hard link where possible, else a copy.
    #[arg(
        long,
        value_name = "SUFFIX",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "~"
    )]
    backup: Option<OsString>,
    /// Keep N generations of backups: FILE~ (newest), FILE~2, ... FILE~N.
    /// Implies --backup.
    #[arg(long, value_name = "N")]
    generations: Option<usize>,
    /// Always copy the backup instead of hard-linking it.
    #[arg(long)]
    backup_copy: bool,
    /// Wait at most SECS seconds for the lock (default: wait forever; 0: do
    /// not wait).
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    timeout: Option<Duration>,
    /// How durable the replace is.
    #[arg(long, value_enum, default_value = "durable")]
    durability: DurabilityArg,
    /// Accept filesystems where a replace cannot be crash-atomic (vfat, NFS, ...).
    #[arg(long)]
    allow_weak_fs: bool,
    /// Verified content: CMD reads the newest version of FILE (or of its
    /// backups) whose envelope verifies, and its output is sealed in an
    /// envelope that `fstx read` checks.
    #[arg(long)]
    verified: bool,
    /// The command computing the new content from the old, and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<OsString>,
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    s.parse::<f64>()
        .ok()
        .filter(|x| x.is_finite() && *x >= 0.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("'{s}' is not a number of seconds"))
}

/// Runs `fstx update`.
///
/// # Panics
///
/// Never: CMD's standard output is always piped.
pub fn run(args: &Args) -> Result<ExitCode, Failure> {
    let mut replace = fstx::Options::new();
    replace
        .durability(args.durability.into())
        .allow_weak_filesystems(args.allow_weak_fs)
        .verified(args.verified);
    let mut opts = fstx::UpdateOptions::new();
    opts.options(replace);
    if let Some(suffix) = &args.backup {
        opts.backup(suffix);
    }
    if let Some(n) = args.generations {
        opts.generations(n);
    }
    if args.backup_copy {
        opts.backup_method(fstx::BackupMethod::Copy);
    }
    match args.timeout {
        Some(t) if t.is_zero() => opts.wait(fstx::Wait::Try),
        Some(t) => opts.timeout(t),
        None => opts.wait(fstx::Wait::Block),
    };

    let mut failed: Option<ExitStatus> = None;
    let mut not_started = false;
    let result = opts.update_stream(&args.file, |old, new| {
        if let Some(old) = old.as_deref().filter(|o| o.fell_back()) {
            report_fallback(&args.file, old);
        }
        let mut child = Command::new(&args.command[0])
            .args(&args.command[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .inspect_err(|_| not_started = true)?;
        let stdin = child.stdin.take();
        let mut stdout = child.stdout.take().expect("stdout is piped");
        let copied = std::thread::scope(|s| {
            s.spawn(move || {
                let Some(mut stdin) = stdin else { return };
                if let Some(old) = old {
                    // CMD need not read all of its input.
                    let _ = io::copy(old, &mut stdin);
                }
            });
            io::copy(&mut stdout, new)
        });
        let status = child.wait()?;
        copied?;
        if status.success() {
            Ok(true)
        } else {
            failed = Some(status);
            Ok(false)
        }
    });
    match result {
        Ok(done) => {
            if let Some(status) = failed {
                eprintln!(
                    "fstx: update {}: command failed ({status}); file unchanged",
                    args.file.display()
                );
                return Ok(ExitCode::from(exit_code(status)));
            }
            if done.backup == Some(fstx::BackupKind::Copy) && !args.backup_copy {
                eprintln!(
                    "fstx: note: hard links are impossible here; the backup of {} is a copy",
                    args.file.display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            let code = if not_started {
                127
            } else if matches!(
                e.kind(),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
            ) && e.step() == fstx::Step::Lock
            {
                EXIT_LOCK_TIMEOUT
            } else {
                1
            };
            Err(Failure {
                message: e.to_string(),
                code,
            })
        }
    }
}

/// One line on standard error: a verified update reads a backup.
fn report_fallback(file: &std::path::Path, old: &fstx::OldFile) {
    let why = old
        .rejected()
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    eprintln!(
        "fstx: update {}: fell back to {}{}: {why}",
        file.display(),
        old.path().display(),
        old.seq()
            .map(|s| format!(" (sequence {s})"))
            .unwrap_or_default()
    );
}

/// The exit code that reports `status` as a shell would.
fn exit_code(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code).unwrap_or(1),
        (None, Some(signal)) => u8::try_from(128 + signal).unwrap_or(255),
        (None, None) => 1,
    }
}
