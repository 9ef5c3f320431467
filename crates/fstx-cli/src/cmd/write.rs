//! `fstx write FILE`: replace FILE with standard input, atomically and durably.

use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use sha2::{Digest, Sha256};

use super::{parse_mode, DurabilityArg, SymlinksArg};
use crate::Failure;

/// Replace FILE with standard input, atomically and durably.
///
/// Reads standard input to its end, in constant memory, into a temporary
/// file beside FILE, then renames it over FILE. On any failure FILE is
/// unchanged and no temporary file is left.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The file to replace (created if missing).
    file: PathBuf,
    /// Permission bits for the new file, in octal (default: keep the old
    /// file's, or 666 less the umask for a new file).
    #[arg(long, value_parser = parse_mode)]
    mode: Option<u32>,
    /// What to do when FILE is a symlink.
    #[arg(long, value_enum, default_value = "follow")]
    symlinks: SymlinksArg,
    /// How durable the replace is.
    #[arg(long, value_enum, default_value = "durable")]
    durability: DurabilityArg,
    /// Refuse to commit unless the input is exactly N bytes (guards against
    /// a producer that died early and just closed the pipe).
    #[arg(long, value_name = "N")]
    expect_size: Option<u64>,
    /// Refuse to commit unless the input's SHA-256 is HEX.
    #[arg(long, value_name = "HEX")]
    sha256: Option<String>,
    /// Fail instead of breaking a hard link (other names would keep the old content).
    #[arg(long)]
    refuse_hard_links: bool,
    /// Do not carry extended attributes (ACLs, labels) over from the old file.
    #[arg(long)]
    no_xattrs: bool,
    /// Keep set-user-ID/set-group-ID bits and file capabilities.
    #[arg(long)]
    keep_privileges: bool,
    /// Accept filesystems where a replace cannot be crash-atomic (vfat, NFS, ...).
    #[arg(long)]
    allow_weak_fs: bool,
    /// Wrap the content in a verified envelope (checksum and sequence
    /// number) that `fstx read` checks.
    #[arg(long)]
    verified: bool,
}

/// Runs `fstx write`.
pub fn run(args: &Args) -> Result<ExitCode, Failure> {
    let expected_hash = match &args.sha256 {
        Some(hex) => Some(parse_sha256(hex)?),
        None => None,
    };
    let mut opts = fstx::Options::new();
    opts.durability(args.durability.into())
        .symlinks(args.symlinks.into())
        .preserve_xattrs(!args.no_xattrs)
        .keep_privileges(args.keep_privileges)
        .allow_weak_filesystems(args.allow_weak_fs)
        .verified(args.verified);
    if let Some(mode) = args.mode {
        opts.mode(mode);
    }
    if args.refuse_hard_links {
        opts.hard_links(fstx::HardLinks::Refuse);
    }
    let mut file = opts.open(&args.file)?;
    let mut hasher = expected_hash.map(|_| Sha256::new());
    let mut size: u64 = 0;
    let mut buf = vec![0u8; 256 * 1024];
    let mut stdin = io::stdin().lock();
    let copied: io::Result<()> = (|| loop {
        let n = match stdin.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if let Some(h) = hasher.as_mut() {
            h.update(&buf[..n]);
        }
        size += n as u64;
        file.write_all(&buf[..n])?;
    })();
    let refuse = |file: fstx::AtomicFile, why: String| -> Failure {
        let discarded = file.discard();
        let mut msg = format!(
            "write {}: {why}; not committed, file unchanged",
            args.file.display()
        );
        if let Err(e) = discarded {
            msg = format!("{msg}; {e}");
        }
        Failure::new(msg)
    };
    if let Err(e) = copied {
        return Err(refuse(file, format!("copy standard input: {e}")));
    }
    if let Some(expected) = args.expect_size {
        if size != expected {
            return Err(refuse(
                file,
                format!("input is {size} bytes, --expect-size says {expected}"),
            ));
        }
    }
    if let (Some(h), Some(expected)) = (hasher, expected_hash) {
        let got: [u8; 32] = h.finalize().into();
        if got != expected {
            return Err(refuse(
                file,
                format!(
                    "input SHA-256 is {}, --sha256 says {}",
                    hex(&got),
                    hex(&expected)
                ),
            ));
        }
    }
    file.commit()?;
    Ok(ExitCode::SUCCESS)
}

fn parse_sha256(s: &str) -> Result<[u8; 32], Failure> {
    let bad = || Failure::new(format!("--sha256: '{s}' is not 64 hexadecimal digits"));
    if s.len() != 64 || !s.is_ascii() {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
