//! The storage seam: the only door through which fstx touches a filesystem.
//!
//! Every filesystem call the library makes goes through the [`Storage`] trait.
//! [`OsStorage`] is the real implementation (Linux syscalls through rustix);
//! the `fstx-sim` crate implements the same trait in memory, with a weak
//! persistence model, crash-state enumeration and fault injection.
//!
//! The primitives are deliberately small and mirror the `*at` family of
//! system calls: no primitive contains protocol logic (no retries, no
//! fallbacks, no decisions), so that a simulator sees exactly the calls the
//! protocol makes, in order.
//!
//! This module is public so that simulators and fault injectors outside the
//! crate can plug in. Applications normally never use it.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use crate::sys::OsStorage;

/// An open file or directory, as handed out by a [`Storage`].
///
/// For [`OsStorage`] it owns a kernel file descriptor; for a simulated
/// storage it carries an identifier and a hook that tells the simulator when
/// the handle is closed (closing releases `flock` locks, as on Linux).
pub struct Fd(Repr);

enum Repr {
    Os(OwnedFd),
    Virtual {
        id: u64,
        on_close: Arc<dyn Fn(u64) + Send + Sync>,
    },
}

impl Fd {
    /// Wraps a kernel file descriptor.
    pub fn from_os(fd: OwnedFd) -> Fd {
        Fd(Repr::Os(fd))
    }

    /// Creates a simulated handle; `on_close(id)` runs when it is dropped.
    pub fn from_virtual(id: u64, on_close: Arc<dyn Fn(u64) + Send + Sync>) -> Fd {
        Fd(Repr::Virtual { id, on_close })
    }

    /// The kernel file descriptor, if this is a real handle.
    pub fn as_os(&self) -> Option<BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        match &self.0 {
            Repr::Os(fd) => Some(fd.as_fd()),
            Repr::Virtual { .. } => None,
        }
    }

    /// The simulator's identifier, if this is a simulated handle.
    pub fn virtual_id(&self) -> Option<u64> {
        match &self.0 {
            Repr::Os(_) => None,
            Repr::Virtual { id, .. } => Some(*id),
        }
    }
}

impl Drop for Fd {
    fn drop(&mut self) {
        if let Repr::Virtual { id, on_close } = &self.0 {
            on_close(*id);
        }
    }
}

impl fmt::Debug for Fd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Repr::Os(fd) => write!(f, "Fd({fd:?})"),
            Repr::Virtual { id, .. } => write!(f, "Fd(virtual {id})"),
        }
    }
}

/// How [`Storage::open`] opens or creates a file. `O_CLOEXEC` is implied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenHow {
    /// Open for reading.
    pub read: bool,
    /// Open for writing.
    pub write: bool,
    /// Whether and how to create the file.
    pub create: Create,
    /// Truncate an existing file (`O_TRUNC`).
    pub truncate: bool,
    /// Follow a symlink in the last component (without it, `O_NOFOLLOW`).
    pub follow: bool,
    /// Do not block on FIFOs and devices (`O_NONBLOCK`).
    pub nonblock: bool,
}

impl OpenHow {
    /// Read-only, existing file, no symlink following, non-blocking.
    pub const READ_NOFOLLOW: OpenHow = OpenHow {
        read: true,
        write: false,
        create: Create::No,
        truncate: false,
        follow: false,
        nonblock: true,
    };

    /// Read-write, create exclusively with `mode` (`O_EXCL|O_NOFOLLOW`).
    pub fn create_new(mode: u32) -> OpenHow {
        OpenHow {
            read: true,
            write: true,
            create: Create::New(mode),
            truncate: false,
            follow: false,
            nonblock: false,
        }
    }
}

/// File creation behaviour of [`OpenHow`]. Modes are subject to the umask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Create {
    /// The file must exist.
    No,
    /// Create the file if missing (`O_CREAT`).
    IfMissing(u32),
    /// Create the file, failing with `EEXIST` if it exists (`O_CREAT|O_EXCL`).
    New(u32),
}

/// The kind of a directory entry or inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    /// A regular file.
    Regular,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A named pipe.
    Fifo,
    /// A socket.
    Socket,
    /// A character device.
    CharDevice,
    /// A block device.
    BlockDevice,
    /// Anything else, or not reported by the filesystem.
    Unknown,
}

/// What [`Storage::stat`] reports about an inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// The kind of inode.
    pub kind: FileKind,
    /// Permission and set-id bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Number of hard links.
    pub nlink: u64,
    /// Size in bytes.
    pub size: u64,
    /// Device of the filesystem holding the inode.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
}

impl Stat {
    /// Whether two stats describe the same inode.
    pub fn same_inode(&self, other: &Stat) -> bool {
        self.dev == other.dev && self.ino == other.ino
    }
}

/// A directory entry from [`Storage::read_dir`] (`.` and `..` excluded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// The entry's name.
    pub name: OsString,
    /// The entry's kind, as reported by the directory (may be `Unknown`).
    pub kind: FileKind,
}

/// Which flush [`Storage::sync`] performs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncKind {
    /// `fdatasync`: data and the metadata needed to read it back.
    Data,
    /// `fsync`: data and all metadata.
    All,
}

/// An advisory lock mode (`flock` semantics: the lock belongs to the open
/// file description and is released when the last handle to it is closed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Shared (`LOCK_SH`).
    Shared,
    /// Exclusive (`LOCK_EX`).
    Exclusive,
}

/// What the kernel behind a [`Storage`] does, as far as the protocols'
/// choices depend on it. [`OsStorage`] answers from the running kernel; a
/// simulator answers from the kernel it simulates, so that it runs exactly
/// the protocol production runs, under every variant.
///
/// The filesystem type is not here: it is per handle ([`Storage::fs_type`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Caps {
    /// `syncfs` returns writeback errors of the filesystem (Linux >= 5.8;
    /// before, it could return success after losing data). Transactions
    /// flush with one `syncfs` per round only where this holds.
    pub syncfs_reports_writeback_errors: bool,
    /// `syncfs` also returns the filesystem's own sync error, such as a
    /// failed btrfs transaction commit (Linux >= 5.17, where
    /// `sync_filesystem` started returning `->sync_fs`'s result). Where it
    /// does not, a btrfs directory flush is an `fsync` (whose errors are
    /// reported) followed by the `syncfs`.
    pub syncfs_reports_fs_errors: bool,
    /// Flushes may be issued from worker threads, concurrently. A
    /// deterministic simulator says no: the same flushes are then issued
    /// one after another from the calling thread, in submission order.
    pub concurrent_flushes: bool,
}

impl Caps {
    /// The capabilities of Linux `major.minor` with concurrent flushes.
    pub fn linux(major: u32, minor: u32) -> Caps {
        Caps {
            syncfs_reports_writeback_errors: (major, minor) >= (5, 8),
            syncfs_reports_fs_errors: (major, minor) >= (5, 17),
            concurrent_flushes: true,
        }
    }

    /// The same, with [`concurrent_flushes`](Self::concurrent_flushes) set to `yes`.
    #[must_use]
    pub fn concurrent_flushes(mut self, yes: bool) -> Caps {
        self.concurrent_flushes = yes;
        self
    }
}

/// The storage seam. See the [module documentation](self).
///
/// Names passed as `&OsStr` are single path components relative to the
/// directory handle; `open_dir` alone accepts a multi-component path.
/// Errors are `io::Error`s carrying the same OS error codes Linux returns
/// for the same misuse.
pub trait Storage: Send + Sync + fmt::Debug {
    /// Opens a directory (`O_DIRECTORY|O_RDONLY|O_CLOEXEC`), relative to
    /// `at` or to the current directory. With `follow == false`, a symlink in
    /// the last component fails with `ELOOP` or `ENOTDIR`.
    fn open_dir(&self, at: Option<&Fd>, path: &Path, follow: bool) -> io::Result<Fd>;
    /// Opens or creates a file in directory `at` (`openat`).
    fn open(&self, at: &Fd, name: &OsStr, how: OpenHow) -> io::Result<Fd>;
    /// Reads at an offset (`pread`).
    fn read_at(&self, file: &Fd, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Writes at an offset (`pwrite`); may write less than `buf.len()`.
    fn write_at(&self, file: &Fd, buf: &[u8], offset: u64) -> io::Result<usize>;
    /// The offset of the end of a file or block device (`lseek(fd, 0,
    /// SEEK_END)`): a block device's size, which `fstat` does not report.
    fn end_offset(&self, file: &Fd) -> io::Result<u64>;
    /// Sets the file's length (`ftruncate`).
    fn set_len(&self, file: &Fd, len: u64) -> io::Result<()>;
    /// Flushes a file or directory to stable storage (`fsync`/`fdatasync`).
    fn sync(&self, file: &Fd, kind: SyncKind) -> io::Result<()>;
    /// Flushes the whole filesystem holding `file` (`syncfs`).
    fn sync_fs(&self, file: &Fd) -> io::Result<()>;
    /// Describes an open handle (`fstat`).
    fn stat(&self, file: &Fd) -> io::Result<Stat>;
    /// Describes a name in a directory (`fstatat`, optionally `AT_SYMLINK_NOFOLLOW`).
    fn stat_at(&self, at: &Fd, name: &OsStr, follow: bool) -> io::Result<Stat>;
    /// The filesystem type magic of the filesystem holding `file` (`fstatfs`'s `f_type`).
    fn fs_type(&self, file: &Fd) -> io::Result<u64>;
    /// Renames `from` to `to` (`renameat`; with `noreplace`, `RENAME_NOREPLACE`).
    fn rename_at(
        &self,
        from_dir: &Fd,
        from: &OsStr,
        to_dir: &Fd,
        to: &OsStr,
        noreplace: bool,
    ) -> io::Result<()>;
    /// Creates a hard link (`linkat`, not following symlinks).
    fn link_at(&self, from_dir: &Fd, from: &OsStr, to_dir: &Fd, to: &OsStr) -> io::Result<()>;
    /// Removes a name (`unlinkat`; with `dir`, `AT_REMOVEDIR`).
    fn unlink_at(&self, at: &Fd, name: &OsStr, dir: bool) -> io::Result<()>;
    /// Creates a directory (`mkdirat`).
    fn mkdir_at(&self, at: &Fd, name: &OsStr, mode: u32) -> io::Result<()>;
    /// Reads a symlink (`readlinkat`).
    fn read_link_at(&self, at: &Fd, name: &OsStr) -> io::Result<PathBuf>;
    /// Sets permission bits (`fchmod`).
    fn chmod(&self, file: &Fd, mode: u32) -> io::Result<()>;
    /// Sets owner and/or group (`fchown`).
    fn chown(&self, file: &Fd, uid: Option<u32>, gid: Option<u32>) -> io::Result<()>;
    /// Lists extended attribute names (`flistxattr`).
    fn list_xattr(&self, file: &Fd) -> io::Result<Vec<OsString>>;
    /// Reads an extended attribute (`fgetxattr`).
    fn get_xattr(&self, file: &Fd, name: &OsStr) -> io::Result<Vec<u8>>;
    /// Sets an extended attribute (`fsetxattr`).
    fn set_xattr(&self, file: &Fd, name: &OsStr, value: &[u8]) -> io::Result<()>;
    /// Lists the extended attribute names of `name` in directory `at`
    /// without opening it and without following a symlink in the last
    /// component (`llistxattr` on `/proc/self/fd/<at>/<name>`, what Linux
    /// 6.13's `listxattrat(at, name, AT_SYMLINK_NOFOLLOW)` does). Fails with
    /// `ENOENT` when the name is missing or `/proc` is not mounted.
    fn list_xattr_at(&self, at: &Fd, name: &OsStr) -> io::Result<Vec<OsString>>;
    /// Reads extended attribute `attr` of `name` in directory `at`, the same
    /// way (`lgetxattr` on `/proc/self/fd/<at>/<name>`).
    fn get_xattr_at(&self, at: &Fd, name: &OsStr, attr: &OsStr) -> io::Result<Vec<u8>>;
    /// Takes an advisory lock (`flock`). With `wait == false`, returns
    /// `Ok(false)` instead of blocking when the lock is held elsewhere.
    fn lock(&self, file: &Fd, mode: LockMode, wait: bool) -> io::Result<bool>;
    /// Releases an advisory lock (`flock(LOCK_UN)`).
    fn unlock(&self, file: &Fd) -> io::Result<()>;
    /// Lists a directory.
    fn read_dir(&self, dir: &Fd) -> io::Result<Vec<DirEntry>>;
    /// Random bits for unpredictable temporary names (deterministic in
    /// simulators). [`OsStorage`] reads the kernel's randomness once per
    /// process and derives every later value from it with a keyed hash.
    fn random(&self) -> io::Result<u64>;
    /// What the kernel behind this storage does (see [`Caps`]); cheap to
    /// call, constant for the storage's life.
    fn caps(&self) -> Caps;
}

/// Writes all of `buf` at `offset` through `st`, retrying short writes and
/// `EINTR` (the loop fstx itself uses; for wrappers and simulators).
pub fn write_all_at(st: &dyn Storage, file: &Fd, buf: &[u8], offset: u64) -> io::Result<()> {
    crate::io::write_all_at(st, file, buf, offset)
}

/// The storage used when none is given: the real filesystem.
pub fn os() -> Arc<dyn Storage> {
    static OS: std::sync::OnceLock<Arc<dyn Storage>> = std::sync::OnceLock::new();
    OS.get_or_init(|| Arc::new(OsStorage::new())).clone()
}
