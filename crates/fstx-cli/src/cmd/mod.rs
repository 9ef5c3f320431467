//! One module per subcommand; each has `Args` and `run`.

pub mod commit;
pub mod read;
pub mod record;
pub mod recover;
pub mod update;
pub mod write;

use clap::ValueEnum;

/// `--durability` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DurabilityArg {
    /// Survives a power cut once the command succeeded (default).
    Durable,
    /// Old or new after a power cut; the update may be lost.
    Consistent,
    /// No flushes: not crash-safe (tmpfs, tests).
    None,
}

impl From<DurabilityArg> for fstx::Durability {
    fn from(d: DurabilityArg) -> fstx::Durability {
        match d {
            DurabilityArg::Durable => fstx::Durability::Durable,
            DurabilityArg::Consistent => fstx::Durability::Consistent,
            DurabilityArg::None => fstx::Durability::None,
        }
    }
}

/// `--symlinks` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SymlinksArg {
    /// Replace the file the link points to; the link stays (default).
    Follow,
    /// Replace the link itself with a regular file.
    Replace,
    /// Fail if the target is a symlink.
    Refuse,
}

impl From<SymlinksArg> for fstx::Symlinks {
    fn from(s: SymlinksArg) -> fstx::Symlinks {
        match s {
            SymlinksArg::Follow => fstx::Symlinks::Follow,
            SymlinksArg::Replace => fstx::Symlinks::ReplaceLink,
            SymlinksArg::Refuse => fstx::Symlinks::Refuse,
        }
    }
}

/// Parses an octal mode such as `644` or `0o600`.
pub fn parse_mode(s: &str) -> Result<u32, String> {
    let digits = s.trim_start_matches("0o");
    u32::from_str_radix(digits, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("'{s}' is not an octal mode between 0 and 7777"))
}
