//! `fstx commit ROOT ...`: one multi-file transaction.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::DurabilityArg;
use crate::Failure;

/// Change several files under ROOT in one transaction: after a power cut at
/// any instant (and `fstx recover ROOT`, which the next transaction also
/// runs), either every change is there or none.
///
/// Paths are relative to ROOT; absolute paths, `..` and symlinks are
/// refused. Each path may appear once.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The transaction root.
    root: PathBuf,
    /// Write file DEST (relative to ROOT) with the content of SRC (a file,
    /// or `-` for standard input, once).
    #[arg(long, value_name = "DEST=SRC")]
    put: Vec<String>,
    /// Remove file DEST.
    #[arg(long, value_name = "DEST")]
    delete: Vec<PathBuf>,
    /// Rename file FROM to TO.
    #[arg(long, value_name = "FROM=TO")]
    rename: Vec<String>,
    /// Create directory DIR (and its parents).
    #[arg(long, value_name = "DIR")]
    mkdir: Vec<PathBuf>,
    /// Write every file under STAGE to the same relative path under ROOT.
    #[arg(long, value_name = "STAGE")]
    from_dir: Option<PathBuf>,
    /// With --from-dir: remove files under ROOT that are absent from STAGE.
    #[arg(long, requires = "from_dir")]
    delete_missing: bool,
    /// How durable the transaction is.
    #[arg(long, value_enum, default_value = "durable")]
    durability: DurabilityArg,
    /// How staged files are flushed: syncfs (one syncfs per round; the
    /// default where the kernel reports its errors, Linux 5.8 and later),
    /// threads (one fsync per file, run concurrently; the default on older
    /// kernels), or serial.
    #[arg(long, value_enum, default_value = "auto")]
    flush: FlushArg,
    /// Seal every file written in a verified envelope (checksum and
    /// sequence number) that `fstx read` checks.
    #[arg(long)]
    verified: bool,
    /// Fail at once if another transaction holds ROOT, instead of waiting.
    #[arg(long)]
    no_wait: bool,
    /// Accept filesystems where rename is not crash-atomic.
    #[arg(long)]
    allow_weak_fs: bool,
    /// Print nothing on success.
    #[arg(long, short)]
    quiet: bool,
}

/// `--flush` values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum FlushArg {
    Auto,
    Threads,
    Syncfs,
    Serial,
}

fn split_pair<'a>(flag: &str, s: &'a str) -> Result<(&'a str, &'a str), Failure> {
    s.split_once('=')
        .filter(|(a, b)| !a.is_empty() && !b.is_empty())
        .ok_or_else(|| Failure::new(format!("{flag} expects A=B, got '{s}'")))
}

/// Copies `src` into a staged file.
fn copy_in(src: &mut dyn Read, dst: &mut dyn Write) -> io::Result<()> {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        dst.write_all(&buf[..n])?;
    }
}

/// Regular files under `dir`, relative, sorted; symlinks and special files
/// are refused (a config set is plain files). fstx's own files (temporary,
/// staged and lock files, `.fstx-txn`) are not part of the set: never copied.
fn files_under(base: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> Result<(), Failure> {
    let dir = base.join(rel);
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .map_err(|e| Failure::new(format!("{}: {e}", dir.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| Failure::new(format!("{}: {e}", dir.display())))?;
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for e in entries {
        if fstx::is_internal_name(&e.file_name()) {
            continue;
        }
        let ft = e
            .file_type()
            .map_err(|err| Failure::new(format!("{}: {err}", e.path().display())))?;
        let r = rel.join(e.file_name());
        if ft.is_dir() {
            files_under(base, &r, out)?;
        } else if ft.is_file() {
            out.push(r);
        } else {
            return Err(Failure::new(format!(
                "{}: not a regular file or directory",
                e.path().display()
            )));
        }
    }
    Ok(())
}

/// Runs `fstx commit`.
pub fn run(args: &Args) -> Result<ExitCode, Failure> {
    run_with(args, fstx::TxnOptions::new())
}

/// Runs `fstx commit` with `opts` as the starting point: the flags set
/// durability, waiting, weak filesystems, sealing and flushing on top of it; anything
/// else in `opts` (such as an [`on_phase`](fstx::TxnOptions::on_phase) hook,
/// which `fstx-lab` uses to pause a commit for the kill test) is kept. The
/// `fstx` binary passes fresh options.
pub fn run_with(args: &Args, mut opts: fstx::TxnOptions) -> Result<ExitCode, Failure> {
    opts.durability(args.durability.into())
        .wait(!args.no_wait)
        .allow_weak_filesystems(args.allow_weak_fs)
        .verified(args.verified)
        .flush(match args.flush {
            FlushArg::Auto => fstx::txn::Flush::Auto,
            FlushArg::Threads => fstx::txn::Flush::Threads(fstx::txn::DEFAULT_FLUSH_THREADS),
            FlushArg::Syncfs => fstx::txn::Flush::SyncFs,
            FlushArg::Serial => fstx::txn::Flush::Serial,
        });
    if args.put.iter().filter(|p| p.ends_with("=-")).count() > 1 {
        return Err(Failure::new("only one --put may read standard input (-)"));
    }
    let mut txn = opts.begin(&args.root)?;
    for p in &args.put {
        let (dest, src) = split_pair("--put", p)?;
        let mut f = txn.create(dest)?;
        let r = if src == "-" {
            copy_in(&mut io::stdin().lock(), &mut f)
        } else {
            std::fs::File::open(src).and_then(|mut s| copy_in(&mut s, &mut f))
        };
        if let Err(e) = r {
            return Err(Failure::new(format!(
                "reading {src} for {dest}: {e} (nothing committed)"
            )));
        }
        f.finish()?;
    }
    if let Some(stage) = &args.from_dir {
        let mut files = Vec::new();
        files_under(stage, Path::new(""), &mut files)?;
        for rel in &files {
            let mut f = txn.create(rel)?;
            let src = stage.join(rel);
            if let Err(e) = std::fs::File::open(&src).and_then(|mut s| copy_in(&mut s, &mut f)) {
                return Err(Failure::new(format!(
                    "reading {}: {e} (nothing committed)",
                    src.display()
                )));
            }
            f.finish()?;
        }
        if args.delete_missing {
            // The writer lock is held: the tree cannot change under us.
            let present = {
                let mut out = Vec::new();
                let snap = ReadDir::new(&args.root);
                snap.walk(Path::new(""), &mut out)?;
                out
            };
            let keep: std::collections::BTreeSet<_> = files.iter().collect();
            for rel in present.iter().filter(|p| !keep.contains(p)) {
                txn.remove(rel)?;
            }
        }
    }
    for p in &args.delete {
        txn.remove(p)?;
    }
    for p in &args.rename {
        let (from, to) = split_pair("--rename", p)?;
        txn.rename(from, to)?;
    }
    for d in &args.mkdir {
        txn.mkdir(d)?;
    }
    let c = txn.commit()?;
    if !args.quiet {
        println!(
            "committed transaction {} in {}: {} written, {} removed, {} renamed, {} directories created ({} flush rounds, {} flushes)",
            c.seq,
            args.root.display(),
            c.written,
            c.removed,
            c.renamed,
            c.dirs_created,
            c.flush_rounds,
            c.flush_calls
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A plain directory walk of ROOT for --delete-missing (the writer lock is
/// held, so no transaction changes the tree meanwhile). Symlinks are not
/// followed and are not regular files: they are left alone, and so are
/// fstx's own files ([`fstx::is_internal_name`]).
struct ReadDir<'a> {
    root: &'a Path,
}

impl<'a> ReadDir<'a> {
    fn new(root: &'a Path) -> ReadDir<'a> {
        ReadDir { root }
    }

    fn walk(&self, rel: &Path, out: &mut Vec<PathBuf>) -> Result<(), Failure> {
        let dir = self.root.join(rel);
        for e in
            std::fs::read_dir(&dir).map_err(|e| Failure::new(format!("{}: {e}", dir.display())))?
        {
            let e = e.map_err(|e| Failure::new(format!("{}: {e}", dir.display())))?;
            let name = e.file_name();
            // fstx's own files (temporary, staged and lock files,
            // `.fstx-txn`) are never removed as "missing".
            if fstx::is_internal_name(&name) {
                continue;
            }
            let ft = e.file_type().map_err(|e| Failure::new(e.to_string()))?;
            let r = rel.join(&name);
            if ft.is_dir() {
                self.walk(&r, out)?;
            } else if ft.is_file() {
                out.push(r);
            }
        }
        Ok(())
    }
}
