//! The flush policy: how a directory is flushed so that the names changed
//! in it are durable — `fsync` of the directory, or on btrfs `syncfs`
//! ([`sync_dir`]; `docs/design.md` §6).

use crate::error::Step;

/// `statfs` magic of btrfs, whose directory `fsync` cannot be trusted alone:
/// fstx makes names durable there with `syncfs` (`docs/design.md` §6).
pub const BTRFS_MAGIC: u64 = 0x9123_683E;

/// Whether `dir` is on btrfs: `known` is the `statfs` magic if the caller
/// already read it (see [`refuse_weak`](crate::fskind::refuse_weak)), else
/// it is read now.
pub(crate) fn is_btrfs(
    st: &dyn crate::storage::Storage,
    dir: &crate::storage::Fd,
    known: Option<u64>,
) -> std::io::Result<bool> {
    Ok(known.map_or_else(|| st.fs_type(dir), Ok)? == BTRFS_MAGIC)
}

/// Flushes a directory so that the names changed in it are durable. On
/// failure, the step that failed and the error as the kernel reported it.
/// `magic`: the filesystem's `statfs` magic if already known (no `fstatfs`
/// then).
///
/// `fsync` of the directory; on btrfs `syncfs`
/// instead. Recorded on btrfs under Linux 6.18: `fsync` of a directory can
/// return at once, with the log that holds our rename not yet on disk, when
/// another process logged the same directory in the first log transaction
/// of a new btrfs transaction and its log sync is still waiting (the root's
/// `last_log_commit` starts at 0, the ID of that uncommitted first log
/// transaction, so the directory counts as already logged). `syncfs`
/// commits the btrfs transaction, or waits for the commit in progress, so
/// every name changed before it is on disk when it returns; it also costs
/// fewer cache flushes than `fsync` followed by `syncfs` (measured in
/// `docs/design.md` §6). Before Linux 5.17, `syncfs` did not return the
/// error of a failed commit (`sync_filesystem` ignored `->sync_fs`), so there
/// the directory is also flushed with `fsync` first, whose errors are
/// reported. If the filesystem cannot be identified, the flush fails.
pub(crate) fn sync_dir(
    st: &dyn crate::storage::Storage,
    dir: &crate::storage::Fd,
    magic: Option<u64>,
) -> Result<(), (Step, std::io::Error)> {
    if is_btrfs(st, dir, magic).map_err(|e| (Step::IdentifyFilesystem, e))? {
        if !st.caps().syncfs_reports_fs_errors {
            st.sync(dir, crate::storage::SyncKind::All)
                .map_err(|e| (Step::FsyncDirectory, e))?;
        }
        return st.sync_fs(dir).map_err(|e| (Step::Syncfs, e));
    }
    st.sync(dir, crate::storage::SyncKind::All)
        .map_err(|e| (Step::FsyncDirectory, e))
}

/// [`sync_dir`] for callers that report an `io::Error` only.
pub(crate) fn sync_dir_io(
    st: &dyn crate::storage::Storage,
    dir: &crate::storage::Fd,
    magic: Option<u64>,
) -> std::io::Result<()> {
    sync_dir(st, dir, magic).map_err(|(_, e)| e)
}
