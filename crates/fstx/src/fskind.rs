//! Knowing the filesystem: where the replace protocol's guarantee holds.
//!
//! The protocol relies on `rename(2)` over an existing name being atomic
//! across a crash, and on `fsync` of a file and of a directory reaching
//! stable storage. The table below classifies filesystems by `statfs`'s
//! `f_type`; `docs/design.md` repeats it with reasons.

use crate::error::Step;

// btrfs's magic lives with the flush policy that treats btrfs specially;
// public here, where it always was.
pub use crate::durability::BTRFS_MAGIC;
// Re-exported at its old path for `txn/`, which still names it there.

/// How far a filesystem supports the replace protocol's guarantees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsClass {
    /// Journaled or copy-on-write local filesystems with crash-atomic rename
    /// and working file and directory flushes (ext4, xfs, btrfs, f2fs, ...).
    /// ext4, xfs, btrfs, UBIFS, JFFS2 and F2FS (both fsync modes) are
    /// power-cut tested (docs/design.md §5, §6, §8); the rest by design.
    Supported,
    /// Memory-backed (tmpfs, ramfs): atomic, and nothing survives a power
    /// cut anyway, so nothing more is promised.
    Volatile,
    /// A replacing rename is not crash-atomic (vfat, exfat, ntfs): a power
    /// cut can leave neither name, or a directory needing repair (on vfat,
    /// power-cut runs of a full temp + fsync + rename + fsync(dir) lose data
    /// in most states: docs/design.md §8).
    NotCrashAtomic,
    /// Network filesystems (NFS, SMB, 9p, Ceph, AFS): client caches and
    /// retried requests make rename and flush unreliable as seen by others.
    Network,
    /// Not in the table (including FUSE, which could be anything): used as is.
    Unknown,
}

impl FsClass {
    /// Classifies a `statfs` `f_type` magic number.
    pub fn from_magic(magic: u64) -> FsClass {
        match magic {
            0xEF53 // ext2/3/4
            | 0x5846_5342 // xfs
            | BTRFS_MAGIC
            | 0xF2F5_2010 // f2fs
            | 0x2405_1905 // ubifs
            | 0x72B6 // jffs2
            | 0x2FC1_2FC1 // zfs
            | 0x794C_7630 // overlayfs (rules of the upper filesystem)
            | 0x3153_464A // jfs
            | 0x5265_4973 // reiserfs
            | 0xCAFE_4A11 // bcachefs
            | 0xCA45_1A4E // bcachefs (newer magic)
            | 0x6E69_6C66 // nilfs
            => FsClass::Supported,
            0x0102_1994 // tmpfs
            | 0x8584_58F6 // ramfs
            => FsClass::Volatile,
            0x4D44 // msdos / vfat
            | 0x2011_BAB0 // exfat
            | 0x5346_544E // ntfs (ntfs-3g reports via fuse; this is the old driver)
            | 0x7366_746E // ntfs3
            | 0x4244 // hfs
            | 0x482B // hfs+
            => FsClass::NotCrashAtomic,
            0x6969 // nfs
            | 0x517B // smb
            | 0xFF53_4D42 // cifs
            | 0xFE53_4D42 // smb2
            | 0x0102_1997 // 9p
            | 0x00C3_6400 // ceph
            | 0x5346_414F // afs
            | 0x6B41_4653 // kafs
            | 0x7375_7245 // coda
            | 0x0BD0_0BD0 // lustre
            => FsClass::Network,
            _ => FsClass::Unknown,
        }
    }

    /// Whether `Durable`/`Consistent` replaces can be trusted here.
    pub fn can_promise(self) -> bool {
        !matches!(self, FsClass::NotCrashAtomic | FsClass::Network)
    }
}

/// Fails with [`std::io::ErrorKind::Unsupported`] when the filesystem holding
/// `dir` cannot keep the promise (see [`FsClass::can_promise`]). `why` is
/// the message, naming the operation. Shared by the replace and transactions.
/// Returns the `statfs` magic it read, so that
/// [`sync_dir`](crate::durability::sync_dir) need not read it again.
pub(crate) fn refuse_weak(
    st: &dyn crate::storage::Storage,
    dir: &crate::storage::Fd,
    why: &'static str,
) -> Result<u64, (Step, std::io::Error)> {
    let magic = st.fs_type(dir).map_err(|e| (Step::IdentifyFilesystem, e))?;
    if FsClass::from_magic(magic).can_promise() {
        Ok(magic)
    } else {
        Err((
            Step::IdentifyFilesystem,
            std::io::Error::new(std::io::ErrorKind::Unsupported, why),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::FsClass;

    #[test]
    fn table() {
        assert_eq!(FsClass::from_magic(0xEF53), FsClass::Supported);
        assert_eq!(FsClass::from_magic(0x4D44), FsClass::NotCrashAtomic);
        assert_eq!(FsClass::from_magic(0x6969), FsClass::Network);
        assert_eq!(FsClass::from_magic(0x0102_1994), FsClass::Volatile);
        assert_eq!(FsClass::from_magic(0x6573_5546), FsClass::Unknown);
        assert!(!FsClass::Network.can_promise());
        assert!(FsClass::Unknown.can_promise());
    }
}
