//! [`OsStorage`]: the storage seam implemented with Linux system calls
//! through rustix. Each method is one system call (two for `read_dir`); no
//! protocol logic lives here.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, FlockOperation, Mode, OFlags, RenameFlags, CWD};

use crate::storage::{
    Caps, Create, DirEntry, Fd, FileKind, LockMode, OpenHow, Stat, Storage, SyncKind,
};

/// The real filesystem, through Linux system calls.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsStorage {
    _private: (),
}

impl OsStorage {
    /// Creates the real storage.
    pub fn new() -> OsStorage {
        OsStorage { _private: () }
    }
}

fn os(fd: &Fd) -> io::Result<std::os::fd::BorrowedFd<'_>> {
    fd.as_os().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "a simulated handle was passed to the real storage",
        )
    })
}

fn mode(bits: u32) -> Mode {
    Mode::from_raw_mode(bits & 0o7777)
}

fn kind(t: rfs::FileType) -> FileKind {
    match t {
        rfs::FileType::RegularFile => FileKind::Regular,
        rfs::FileType::Directory => FileKind::Dir,
        rfs::FileType::Symlink => FileKind::Symlink,
        rfs::FileType::Fifo => FileKind::Fifo,
        rfs::FileType::Socket => FileKind::Socket,
        rfs::FileType::CharacterDevice => FileKind::CharDevice,
        rfs::FileType::BlockDevice => FileKind::BlockDevice,
        rfs::FileType::Unknown => FileKind::Unknown,
    }
}

fn stat(st: &rfs::Stat) -> Stat {
    Stat {
        kind: kind(rfs::FileType::from_raw_mode(st.st_mode)),
        mode: st.st_mode & 0o7777,
        uid: st.st_uid,
        gid: st.st_gid,
        // `u32` on aarch64, `u64` on x86_64.
        #[allow(clippy::useless_conversion)]
        nlink: u64::from(st.st_nlink),
        size: u64::try_from(st.st_size).unwrap_or(0),
        dev: st.st_dev,
        ino: st.st_ino,
    }
}

impl Storage for OsStorage {
    fn open_dir(&self, at: Option<&Fd>, path: &Path, follow: bool) -> io::Result<Fd> {
        let mut flags = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC;
        if !follow {
            flags |= OFlags::NOFOLLOW;
        }
        let fd = match at {
            Some(at) => rfs::openat(os(at)?, path, flags, Mode::empty()),
            None => rfs::openat(CWD, path, flags, Mode::empty()),
        }?;
        Ok(Fd::from_os(fd))
    }

    fn open(&self, at: &Fd, name: &OsStr, how: OpenHow) -> io::Result<Fd> {
        let mut flags = OFlags::CLOEXEC;
        flags |= match (how.read, how.write) {
            (true, true) => OFlags::RDWR,
            (false, true) => OFlags::WRONLY,
            _ => OFlags::RDONLY,
        };
        let mut m = Mode::empty();
        match how.create {
            Create::No => {}
            Create::IfMissing(bits) => {
                flags |= OFlags::CREATE;
                m = mode(bits);
            }
            Create::New(bits) => {
                flags |= OFlags::CREATE | OFlags::EXCL;
                m = mode(bits);
            }
        }
        if how.truncate {
            flags |= OFlags::TRUNC;
        }
        if !how.follow {
            flags |= OFlags::NOFOLLOW;
        }
        if how.nonblock {
            flags |= OFlags::NONBLOCK;
        }
        Ok(Fd::from_os(rfs::openat(os(at)?, name, flags, m)?))
    }

    fn read_at(&self, file: &Fd, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        Ok(rustix::io::pread(os(file)?, buf, offset)?)
    }

    fn write_at(&self, file: &Fd, buf: &[u8], offset: u64) -> io::Result<usize> {
        Ok(rustix::io::pwrite(os(file)?, buf, offset)?)
    }

    fn end_offset(&self, file: &Fd) -> io::Result<u64> {
        Ok(rfs::seek(os(file)?, rfs::SeekFrom::End(0))?)
    }

    fn set_len(&self, file: &Fd, len: u64) -> io::Result<()> {
        Ok(rfs::ftruncate(os(file)?, len)?)
    }

    fn sync(&self, file: &Fd, kind: SyncKind) -> io::Result<()> {
        match kind {
            SyncKind::Data => Ok(rfs::fdatasync(os(file)?)?),
            SyncKind::All => Ok(rfs::fsync(os(file)?)?),
        }
    }

    fn sync_fs(&self, file: &Fd) -> io::Result<()> {
        Ok(rfs::syncfs(os(file)?)?)
    }

    fn stat(&self, file: &Fd) -> io::Result<Stat> {
        Ok(stat(&rfs::fstat(os(file)?)?))
    }

    fn stat_at(&self, at: &Fd, name: &OsStr, follow: bool) -> io::Result<Stat> {
        let flags = if follow {
            AtFlags::empty()
        } else {
            AtFlags::SYMLINK_NOFOLLOW
        };
        Ok(stat(&rfs::statat(os(at)?, name, flags)?))
    }

    fn fs_type(&self, file: &Fd) -> io::Result<u64> {
        #[allow(clippy::useless_conversion, clippy::cast_sign_loss)]
        Ok(rfs::fstatfs(os(file)?)?.f_type as u64)
    }

    fn rename_at(
        &self,
        from_dir: &Fd,
        from: &OsStr,
        to_dir: &Fd,
        to: &OsStr,
        noreplace: bool,
    ) -> io::Result<()> {
        if noreplace {
            Ok(rfs::renameat_with(
                os(from_dir)?,
                from,
                os(to_dir)?,
                to,
                RenameFlags::NOREPLACE,
            )?)
        } else {
            Ok(rfs::renameat(os(from_dir)?, from, os(to_dir)?, to)?)
        }
    }

    fn link_at(&self, from_dir: &Fd, from: &OsStr, to_dir: &Fd, to: &OsStr) -> io::Result<()> {
        Ok(rfs::linkat(
            os(from_dir)?,
            from,
            os(to_dir)?,
            to,
            AtFlags::empty(),
        )?)
    }

    fn unlink_at(&self, at: &Fd, name: &OsStr, dir: bool) -> io::Result<()> {
        let flags = if dir {
            AtFlags::REMOVEDIR
        } else {
            AtFlags::empty()
        };
        Ok(rfs::unlinkat(os(at)?, name, flags)?)
    }

    fn mkdir_at(&self, at: &Fd, name: &OsStr, bits: u32) -> io::Result<()> {
        Ok(rfs::mkdirat(os(at)?, name, mode(bits))?)
    }

    fn read_link_at(&self, at: &Fd, name: &OsStr) -> io::Result<PathBuf> {
        let target = rfs::readlinkat(os(at)?, name, Vec::new())?;
        Ok(PathBuf::from(OsString::from_vec(target.into_bytes())))
    }

    fn chmod(&self, file: &Fd, bits: u32) -> io::Result<()> {
        Ok(rfs::fchmod(os(file)?, mode(bits))?)
    }

    fn chown(&self, file: &Fd, uid: Option<u32>, gid: Option<u32>) -> io::Result<()> {
        // -1 means "leave unchanged" to the kernel; `None` says that here.
        let uid = uid
            .filter(|&u| u != u32::MAX)
            .map(rustix::process::Uid::from_raw);
        let gid = gid
            .filter(|&g| g != u32::MAX)
            .map(rustix::process::Gid::from_raw);
        Ok(rfs::fchown(os(file)?, uid, gid)?)
    }

    fn list_xattr(&self, file: &Fd) -> io::Result<Vec<OsString>> {
        let fd = os(file)?;
        loop {
            let size = rfs::flistxattr_query(fd)?;
            if size == 0 {
                return Ok(Vec::new());
            }
            let mut buf = vec![0u8; size];
            match rfs::flistxattr(fd, &mut buf[..]) {
                Ok(n) => {
                    buf.truncate(n);
                    return Ok(buf
                        .split(|&b| b == 0)
                        .filter(|s| !s.is_empty())
                        .map(|s| OsStr::from_bytes(s).to_os_string())
                        .collect());
                }
                // The list grew between the two calls: ask again.
                Err(rustix::io::Errno::RANGE) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn get_xattr(&self, file: &Fd, name: &OsStr) -> io::Result<Vec<u8>> {
        let fd = os(file)?;
        loop {
            let size = rfs::fgetxattr_query(fd, name)?;
            let mut buf = vec![0u8; size];
            match rfs::fgetxattr(fd, name, &mut buf[..]) {
                Ok(n) => {
                    buf.truncate(n);
                    return Ok(buf);
                }
                Err(rustix::io::Errno::RANGE) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn set_xattr(&self, file: &Fd, name: &OsStr, value: &[u8]) -> io::Result<()> {
        Ok(rfs::fsetxattr(
            os(file)?,
            name,
            value,
            rfs::XattrFlags::empty(),
        )?)
    }

    fn list_xattr_at(&self, at: &Fd, name: &OsStr) -> io::Result<Vec<OsString>> {
        let path = proc_path(at, name)?;
        loop {
            let size = rfs::llistxattr_query(&path)?;
            if size == 0 {
                return Ok(Vec::new());
            }
            let mut buf = vec![0u8; size];
            match rfs::llistxattr(&path, &mut buf[..]) {
                Ok(n) => {
                    buf.truncate(n);
                    return Ok(buf
                        .split(|&b| b == 0)
                        .filter(|s| !s.is_empty())
                        .map(|s| OsStr::from_bytes(s).to_os_string())
                        .collect());
                }
                Err(rustix::io::Errno::RANGE) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn get_xattr_at(&self, at: &Fd, name: &OsStr, attr: &OsStr) -> io::Result<Vec<u8>> {
        let path = proc_path(at, name)?;
        loop {
            let size = rfs::lgetxattr_query(&path, attr)?;
            let mut buf = vec![0u8; size];
            match rfs::lgetxattr(&path, attr, &mut buf[..]) {
                Ok(n) => {
                    buf.truncate(n);
                    return Ok(buf);
                }
                Err(rustix::io::Errno::RANGE) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn lock(&self, file: &Fd, mode: LockMode, wait: bool) -> io::Result<bool> {
        let op = match (mode, wait) {
            (LockMode::Shared, true) => FlockOperation::LockShared,
            (LockMode::Exclusive, true) => FlockOperation::LockExclusive,
            (LockMode::Shared, false) => FlockOperation::NonBlockingLockShared,
            (LockMode::Exclusive, false) => FlockOperation::NonBlockingLockExclusive,
        };
        match rfs::flock(os(file)?, op) {
            Ok(()) => Ok(true),
            Err(rustix::io::Errno::WOULDBLOCK) if !wait => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    fn unlock(&self, file: &Fd) -> io::Result<()> {
        Ok(rfs::flock(os(file)?, FlockOperation::Unlock)?)
    }

    fn read_dir(&self, dir: &Fd) -> io::Result<Vec<DirEntry>> {
        let mut out = Vec::new();
        let mut d = rfs::Dir::read_from(os(dir)?)?;
        while let Some(entry) = d.read() {
            let entry = entry?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            out.push(DirEntry {
                name: OsStr::from_bytes(name).to_os_string(),
                kind: kind(entry.file_type()),
            });
        }
        Ok(out)
    }

    fn caps(&self) -> Caps {
        let (major, minor) = kernel_release();
        Caps::linux(major, minor)
    }

    fn random(&self) -> io::Result<u64> {
        // One `getrandom` per process: a secret key, then a keyed hash
        // (SipHash-2-4) of a counter. Names stay unpredictable to anyone who
        // does not know the key; a collision (a forked child continuing the
        // same sequence) is an `EEXIST` the caller retries.
        static KEY: std::sync::OnceLock<(u64, u64)> = std::sync::OnceLock::new();
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let (k0, k1) = if let Some(key) = KEY.get() {
            *key
        } else {
            let mut buf = [0u8; 16];
            let mut filled = 0;
            while filled < buf.len() {
                filled += rustix::rand::getrandom(
                    &mut buf[filled..],
                    rustix::rand::GetRandomFlags::empty(),
                )?;
            }
            let (a, b) = buf.split_at(8);
            let key = (
                u64::from_le_bytes(a.try_into().expect("8 bytes")),
                u64::from_le_bytes(b.try_into().expect("8 bytes")),
            );
            *KEY.get_or_init(|| key)
        };
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        #[allow(deprecated)] // std's SipHasher: the keyed hash std already ships
        let mut h = std::hash::SipHasher::new_with_keys(k0, k1);
        std::hash::Hasher::write_u64(&mut h, n);
        Ok(std::hash::Hasher::finish(&h))
    }
}

/// `/proc/self/fd/<at>/<name>`: a path to `name` relative to the directory
/// handle `at` (the magic link resolves to the very directory the handle
/// holds, even if it was renamed or replaced meanwhile).
fn proc_path(at: &Fd, name: &OsStr) -> io::Result<PathBuf> {
    use std::os::fd::AsRawFd;
    let mut path = PathBuf::from(format!("/proc/self/fd/{}", os(at)?.as_raw_fd()));
    path.push(name);
    Ok(path)
}

/// The running kernel's `(major, minor)`, read once.
fn kernel_release() -> (u32, u32) {
    static RELEASE: std::sync::OnceLock<(u32, u32)> = std::sync::OnceLock::new();
    *RELEASE.get_or_init(|| {
        let uname = rustix::system::uname();
        major_minor(&uname.release().to_string_lossy())
    })
}

/// `(major, minor)` of a kernel release string such as `6.18.44-fc-v657`
/// (0 for a part that cannot be read).
fn major_minor(release: &str) -> (u32, u32) {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::major_minor;
    use crate::storage::Caps;

    #[test]
    fn kernel_releases_compare_by_major_and_minor() {
        assert_eq!(major_minor("6.18.44-fc-v657"), (6, 18));
        assert_eq!(major_minor("5.16.20-1-lts"), (5, 16));
        assert!(major_minor("5.16.20-1-lts") < (5, 17));
        assert!(major_minor("5.17.0") >= (5, 17));
        assert!(major_minor("5.10.0-23-amd64") < (5, 17));
        assert!(major_minor("5.10.0-23-amd64") >= (5, 8));
        assert_eq!(major_minor("garbage"), (0, 0));
    }

    #[test]
    fn capabilities_switch_at_5_8_and_5_17() {
        let (a, b) = major_minor("5.7.19");
        assert!(!Caps::linux(a, b).syncfs_reports_writeback_errors);
        let c = Caps::linux(5, 8);
        assert!(c.syncfs_reports_writeback_errors && !c.syncfs_reports_fs_errors);
        let c = Caps::linux(5, 16);
        assert!(c.syncfs_reports_writeback_errors && !c.syncfs_reports_fs_errors);
        let c = Caps::linux(5, 17);
        assert!(c.syncfs_reports_writeback_errors && c.syncfs_reports_fs_errors);
        assert!(Caps::linux(6, 1).concurrent_flushes);
        assert!(
            !Caps::linux(6, 1)
                .concurrent_flushes(false)
                .concurrent_flushes
        );
    }
}
