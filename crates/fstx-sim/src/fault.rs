//! Fault injection: make the Nth call of a kind fail.

use std::fmt;
use std::io;

use rustix::io::Errno;

/// The kinds of storage calls, one per [`fstx::storage::Storage`] method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[allow(missing_docs)]
pub enum CallKind {
    OpenDir,
    Open,
    ReadAt,
    WriteAt,
    SetLen,
    EndOffset,
    Sync,
    SyncFs,
    Stat,
    StatAt,
    FsType,
    Rename,
    Link,
    Unlink,
    Mkdir,
    ReadLink,
    Chmod,
    Chown,
    ListXattr,
    GetXattr,
    ListXattrAt,
    GetXattrAt,
    SetXattr,
    Lock,
    Unlock,
    ReadDir,
    Random,
}

impl CallKind {
    /// Every kind.
    pub const ALL: [CallKind; 27] = [
        CallKind::OpenDir,
        CallKind::Open,
        CallKind::ReadAt,
        CallKind::WriteAt,
        CallKind::SetLen,
        CallKind::EndOffset,
        CallKind::Sync,
        CallKind::SyncFs,
        CallKind::Stat,
        CallKind::StatAt,
        CallKind::FsType,
        CallKind::Rename,
        CallKind::Link,
        CallKind::Unlink,
        CallKind::Mkdir,
        CallKind::ReadLink,
        CallKind::Chmod,
        CallKind::Chown,
        CallKind::ListXattr,
        CallKind::GetXattr,
        CallKind::ListXattrAt,
        CallKind::GetXattrAt,
        CallKind::SetXattr,
        CallKind::Lock,
        CallKind::Unlock,
        CallKind::ReadDir,
        CallKind::Random,
    ];

    /// The name used in traces and fault specifications.
    pub fn name(self) -> &'static str {
        match self {
            CallKind::OpenDir => "open_dir",
            CallKind::Open => "open",
            CallKind::ReadAt => "read_at",
            CallKind::WriteAt => "write_at",
            CallKind::SetLen => "set_len",
            CallKind::EndOffset => "end_offset",
            CallKind::Sync => "sync",
            CallKind::SyncFs => "sync_fs",
            CallKind::Stat => "stat",
            CallKind::StatAt => "stat_at",
            CallKind::FsType => "fs_type",
            CallKind::Rename => "rename_at",
            CallKind::Link => "link_at",
            CallKind::Unlink => "unlink_at",
            CallKind::Mkdir => "mkdir_at",
            CallKind::ReadLink => "read_link_at",
            CallKind::Chmod => "chmod",
            CallKind::Chown => "chown",
            CallKind::ListXattr => "list_xattr",
            CallKind::GetXattr => "get_xattr",
            CallKind::ListXattrAt => "list_xattr_at",
            CallKind::GetXattrAt => "get_xattr_at",
            CallKind::SetXattr => "set_xattr",
            CallKind::Lock => "lock",
            CallKind::Unlock => "unlock",
            CallKind::ReadDir => "read_dir",
            CallKind::Random => "random",
        }
    }

    /// Parses [`name`](Self::name).
    pub fn parse(s: &str) -> Option<CallKind> {
        CallKind::ALL.into_iter().find(|k| k.name() == s)
    }

    /// The faults worth injecting into calls of this kind.
    pub fn faults(self) -> &'static [FaultError] {
        use FaultError::{Edquot, Eintr, Eio, Enospc, Erofs, ShortWrite};
        match self {
            CallKind::WriteAt => &[Eio, Enospc, Edquot, Erofs, Eintr, ShortWrite],
            CallKind::Sync | CallKind::SyncFs => &[Eio, Enospc],
            CallKind::Open | CallKind::Mkdir | CallKind::Link | CallKind::SetXattr => {
                &[Eio, Enospc, Erofs]
            }
            CallKind::Rename | CallKind::Unlink | CallKind::Chmod | CallKind::Chown => {
                &[Eio, Erofs]
            }
            CallKind::SetLen => &[Eio, Erofs],
            CallKind::Lock => &[Eio, Eintr],
            CallKind::ReadAt | CallKind::ReadDir | CallKind::OpenDir => &[Eio],
            CallKind::Stat
            | CallKind::EndOffset
            | CallKind::StatAt
            | CallKind::FsType
            | CallKind::ReadLink
            | CallKind::ListXattr
            | CallKind::GetXattr
            | CallKind::ListXattrAt
            | CallKind::GetXattrAt
            | CallKind::Unlock
            | CallKind::Random => &[],
        }
    }
}

impl fmt::Display for CallKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error an injected fault produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultError {
    /// `EIO`. On a file flush: the pending data is lost ("clean but lost").
    Eio,
    /// `ENOSPC`. On a file flush: as `EIO`.
    Enospc,
    /// `EDQUOT`.
    Edquot,
    /// `EROFS` (the filesystem went read-only).
    Erofs,
    /// `EINTR` (nothing happened).
    Eintr,
    /// A write that writes only the first half of the buffer (at least one byte).
    ShortWrite,
    /// A **lying flush** (file `sync` only; elsewhere it does nothing): the
    /// call returns success, but the file's pending data is *not* made
    /// durable, so a crash may still lose it, tear it or show zeros, as
    /// flash that acknowledges a flush it did not perform (or corrupts
    /// flushed data) would. Outside the persistence model: no protocol can
    /// keep its promises under it; see [`crate::explore`] for what is still
    /// checked. Not among [`CallKind::faults`]; [`crate::campaign::lying_flushes`]
    /// injects it.
    Lie,
}

impl FaultError {
    /// Every fault.
    pub const ALL: [FaultError; 7] = [
        FaultError::Eio,
        FaultError::Enospc,
        FaultError::Edquot,
        FaultError::Erofs,
        FaultError::Eintr,
        FaultError::ShortWrite,
        FaultError::Lie,
    ];

    /// The name used in fault specifications.
    pub fn name(self) -> &'static str {
        match self {
            FaultError::Eio => "eio",
            FaultError::Enospc => "enospc",
            FaultError::Edquot => "edquot",
            FaultError::Erofs => "erofs",
            FaultError::Eintr => "eintr",
            FaultError::ShortWrite => "short",
            FaultError::Lie => "lie",
        }
    }

    /// The errno, or `None` for a short write and a lying flush.
    pub fn errno(self) -> Option<Errno> {
        match self {
            FaultError::Eio => Some(Errno::IO),
            FaultError::Enospc => Some(Errno::NOSPC),
            FaultError::Edquot => Some(Errno::DQUOT),
            FaultError::Erofs => Some(Errno::ROFS),
            FaultError::Eintr => Some(Errno::INTR),
            FaultError::ShortWrite | FaultError::Lie => None,
        }
    }

    /// The `io::Error` this fault returns.
    pub fn to_io(self) -> Option<io::Error> {
        self.errno()
            .map(|e| io::Error::from_raw_os_error(e.raw_os_error()))
    }
}

/// Make the `nth` (from 1) call of `kind` fail with `error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fault {
    /// Which calls.
    pub kind: CallKind,
    /// Which one of them, counting from 1.
    pub nth: u64,
    /// How it fails.
    pub error: FaultError,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}:{}", self.kind, self.nth, self.error.name())
    }
}

impl Fault {
    /// Parses the [`Display`](fmt::Display) form, `sync#2:eio`.
    pub fn parse(s: &str) -> Option<Fault> {
        let (kind, rest) = s.split_once('#')?;
        let (nth, error) = rest.split_once(':')?;
        Some(Fault {
            kind: CallKind::parse(kind)?,
            nth: nth.parse().ok()?,
            error: FaultError::ALL.into_iter().find(|e| e.name() == error)?,
        })
    }
}
