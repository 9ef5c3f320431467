//! Backups of the previous version for [`update`](crate::update()): the
//! backup names (`NAME~`, `NAME~2`, …), rotating generations, and placing
//! the previous version under the newest name — as a hard link made under a
//! temporary name and renamed over the backup name ([`link_over`]), or,
//! where links are impossible, as a flushed copy renamed the same way.

use std::ffi::{OsStr, OsString};
use std::io;

use crate::atomic::{AtomicFile, Durability};
use crate::error::{invalid, Step};
use crate::io::CopyError;
use crate::names::{temp_name, TEMP_PREFIX};
use crate::storage::{Fd, Stat, Storage, SyncKind};
use crate::temp::create_temp;
use crate::update::{OldFile, UpdateOptions};

/// How a backup is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackupMethod {
    /// A hard link to the previous version's inode (no data written), or a
    /// copy where the filesystem or the kernel refuses the link (default).
    #[default]
    LinkOrCopy,
    /// Always a copy (for files also modified in place by other programs,
    /// which would modify a hard-linked backup too).
    Copy,
}

/// How a backup was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackupKind {
    /// A hard link to the previous version: no data was written.
    HardLink,
    /// A copy: the link was impossible (or [`BackupMethod::Copy`] was asked).
    Copy,
}

impl UpdateOptions {
    /// Makes `old` the newest backup, rotating older generations, and flushes
    /// the directory so the backup is durable before the target changes.
    pub(crate) fn make_backup(
        &self,
        file: &AtomicFile,
        old: &OldFile,
        suffix: &OsStr,
    ) -> std::result::Result<BackupKind, (Step, io::Error)> {
        let kind = self.place_backup(file, old, suffix)?;
        if self.opts.durability != Durability::None {
            crate::durability::sync_dir(&*self.opts.storage, file.dir(), file.fs_magic()).map_err(
                |(step, e)| {
                    if step == Step::FsyncDirectory {
                        (Step::FsyncDirectoryAfterBackup, e)
                    } else {
                        (step, e)
                    }
                },
            )?;
        }
        Ok(kind)
    }

    /// Rotates the generations and places `old` under the newest backup
    /// name (nothing flushed yet).
    fn place_backup(
        &self,
        file: &AtomicFile,
        old: &OldFile,
        suffix: &OsStr,
    ) -> std::result::Result<BackupKind, (Step, io::Error)> {
        let st = &*self.opts.storage;
        let dir = file.dir();
        let name = file.name();
        let names: Vec<OsString> = (1..=self.generations)
            .map(|k| backup_name(name, suffix, k))
            .collect();
        // Already backed up (an earlier update was interrupted after its
        // backup and before its replace): rotating now would duplicate it.
        // The directory is flushed all the same: that earlier update may have
        // died (or failed) before its flush, so the backup may not be durable.
        match st.stat_at(dir, &names[0], false) {
            Ok(b) if b.same_inode(&old.stat) => return Ok(BackupKind::HardLink),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err((Step::InspectBackup, e)),
        }
        // Oldest first: NAME~(n-1) -> NAME~n, ..., NAME~ -> NAME~2, each by a
        // hard link under a temporary name renamed over the older name, so
        // that no backup name is ever missing or incomplete. A crash between
        // two steps loses at most one old generation (or shows one twice).
        for k in (1..names.len()).rev() {
            let src = match st.stat_at(dir, &names[k - 1], false) {
                Ok(src) => src,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err((Step::InspectBackup, e)),
            };
            match st.stat_at(dir, &names[k], false) {
                Ok(dst) if dst.same_inode(&src) => continue,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err((Step::InspectBackup, e)),
            }
            match link_over(st, dir, &names[k - 1], &src, &names[k]) {
                Ok(()) => {}
                Err(e) if link_impossible(&e) => st
                    .rename_at(dir, &names[k - 1], dir, &names[k], false)
                    .map_err(|e| (Step::RotateBackups, e))?,
                Err(e) => return Err((Step::RotateBackups, e)),
            }
        }
        let kind = match self.method {
            BackupMethod::LinkOrCopy => match link_over(st, dir, name, &old.stat, &names[0]) {
                Ok(()) => BackupKind::HardLink,
                Err(e) if link_impossible(&e) => {
                    self.copy_backup(dir, old, &names[0])?;
                    BackupKind::Copy
                }
                Err(e) => return Err((Step::LinkBackup, e)),
            },
            BackupMethod::Copy => {
                self.copy_backup(dir, old, &names[0])?;
                BackupKind::Copy
            }
        };
        Ok(kind)
    }

    /// Copies `old` to a locked temporary file, flushes it, and renames it
    /// to `backup`.
    fn copy_backup(
        &self,
        dir: &Fd,
        old: &OldFile,
        backup: &OsStr,
    ) -> std::result::Result<(), (Step, io::Error)> {
        let st = &*self.opts.storage;
        let (temp, fd, _) = create_temp(st, dir, backup, 0o600)?;
        let result = (|| {
            crate::io::copy(st, &old.fd, &fd).map_err(|e| match e {
                CopyError::Read(e) => (Step::ReadPreviousVersion, e),
                CopyError::Write(e) => (Step::WriteBackupCopy, e),
            })?;
            // The previous version's permission bits, never set-id bits.
            st.chmod(&fd, old.stat.mode & 0o777)
                .map_err(|e| (Step::SetBackupMode, e))?;
            if self.opts.durability != Durability::None {
                st.sync(&fd, SyncKind::All)
                    .map_err(|e| (Step::FsyncBackupCopy, e))?;
            }
            st.rename_at(dir, &temp, dir, backup, false)
                .map_err(|e| (Step::RenameBackupCopy, e))
        })();
        if result.is_err() {
            let _ = st.unlink_at(dir, &temp, false);
        }
        drop(fd);
        result
    }
}

/// Makes `to` a hard link to `from` (which must still be the inode
/// `expected`): links `from` to a temporary name, then renames that over
/// `to`, so `to` always names a complete file.
///
/// A concurrent [`recover`](crate::recover()) may remove the temporary link
/// before the rename (it is a second name of an unlocked inode, so removing
/// it loses nothing); the rename then fails with `NotFound` and the link is
/// made again.
fn link_over(
    st: &dyn Storage,
    dir: &Fd,
    from: &OsStr,
    expected: &Stat,
    to: &OsStr,
) -> io::Result<()> {
    const ATTEMPTS: usize = 64;
    for _ in 0..ATTEMPTS {
        let temp = temp_name(TEMP_PREFIX, st.random()?, to);
        match st.link_at(dir, from, dir, &temp) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
        match st.stat_at(dir, &temp, false) {
            Ok(linked) if linked.same_inode(expected) => {}
            Ok(_) => {
                let _ = st.unlink_at(dir, &temp, false);
                return Err(invalid(
                    io::ErrorKind::Other,
                    "the file changed under the lock (a writer that does not take the lock?)",
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                let _ = st.unlink_at(dir, &temp, false);
                return Err(e);
            }
        }
        match st.rename_at(dir, &temp, dir, to, false) {
            Ok(()) => {
                // rename(2) between two links of one inode does nothing and
                // succeeds: then the temporary name is still there.
                if st.stat_at(dir, &temp, false).is_ok() {
                    let _ = st.unlink_at(dir, &temp, false);
                }
                return Ok(());
            }
            // Swept by a concurrent recovery: link again.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                let _ = st.unlink_at(dir, &temp, false);
                return Err(e);
            }
        }
    }
    Err(invalid(
        io::ErrorKind::Other,
        "the temporary backup link kept disappearing",
    ))
}

/// Whether a `link` failure means "links are impossible here", so a copy
/// is the fallback: the filesystem has no hard links (`EPERM` on vfat,
/// `EOPNOTSUPP`, `ENOSYS`), the kernel refuses (`EPERM` under
/// `fs.protected_hardlinks` for a file we do not own), or the inode has too
/// many links (`EMLINK`).
fn link_impossible(e: &io::Error) -> bool {
    use rustix::io::Errno;
    [
        Errno::PERM,
        Errno::MLINK,
        Errno::NOTSUP,
        Errno::OPNOTSUPP,
        Errno::NOSYS,
        Errno::XDEV,
    ]
    .iter()
    .any(|errno| e.raw_os_error() == Some(errno.raw_os_error()))
}

/// The name of backup generation `k` (1-based) of `name`.
pub(crate) fn backup_name(name: &OsStr, suffix: &OsStr, k: usize) -> OsString {
    let mut out = name.to_os_string();
    out.push(suffix);
    if k > 1 {
        out.push(k.to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_names() {
        let n = OsStr::new("a.json");
        assert_eq!(backup_name(n, OsStr::new("~"), 1), "a.json~");
        assert_eq!(backup_name(n, OsStr::new("~"), 3), "a.json~3");
        assert_eq!(backup_name(n, OsStr::new(".bak"), 2), "a.json.bak2");
    }

    #[test]
    fn link_failures_that_fall_back_to_a_copy() {
        let e = io::Error::from_raw_os_error(rustix::io::Errno::PERM.raw_os_error());
        assert!(link_impossible(&e));
        let e = io::Error::from_raw_os_error(rustix::io::Errno::NOSPC.raw_os_error());
        assert!(!link_impossible(&e));
    }
}
