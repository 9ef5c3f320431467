//! Shared fixtures for fstx's integration tests.
#![allow(dead_code, missing_docs)]

use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

pub(crate) use fstx_testkit::TempDir;

use fstx::storage::{DirEntry, Fd, LockMode, OpenHow, OsStorage, Stat, Storage, SyncKind};

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

/// A tmpfs mounted on a fresh directory (the tests run as root), unmounted on drop.
pub(crate) struct Tmpfs(pub TempDir);

impl Tmpfs {
    pub(crate) fn new(tag: &str, options: &str) -> Tmpfs {
        let dir = TempDir::new(tag);
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "fstx-test"])
            .arg(dir.path())
            .status()
            .expect("run mount")
            .success();
        assert!(ok, "mounting a tmpfs needs root");
        Tmpfs(dir)
    }
    pub(crate) fn path(&self) -> &Path {
        self.0.path()
    }
    pub(crate) fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.0.join(p)
    }
}

/// Names of fstx temporary files in `dir`.
pub(crate) fn temps(dir: &Path) -> Vec<OsString> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| fstx::internal_name(std::ffi::OsStr::new(n)) == Some(fstx::InternalName::Temp))
        .collect()
}

/// What a [`Hooked`] storage does differently from the real one.
#[derive(Default)]
pub(crate) struct Hooks {
    /// Fail the Nth (1-based) `sync` call with this errno.
    pub fail_sync: Option<(usize, i32)>,
    /// Fail every `unlink_at` with this errno.
    pub fail_unlink: Option<i32>,
    /// Report this `statfs` magic.
    pub fs_magic: Option<u64>,
    /// Fail every `fs_type` call with this errno.
    pub fail_fs_type: Option<i32>,
    /// Runs before the first `lock` call (e.g. a concurrent recovery).
    pub before_first_lock: Option<Box<dyn FnOnce() + Send>>,
}

/// The real storage, with hooks for fault injection and interleavings.
#[derive(Default)]
pub(crate) struct Hooked {
    pub inner: OsStorage,
    pub hooks: Mutex<Hooks>,
    pub syncs: AtomicUsize,
    pub creates: AtomicUsize,
    pub locks: AtomicUsize,
}

impl std::fmt::Debug for Hooked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hooked")
    }
}

impl Hooked {
    pub(crate) fn new(hooks: Hooks) -> Arc<Hooked> {
        Arc::new(Hooked {
            hooks: Mutex::new(hooks),
            ..Hooked::default()
        })
    }
}

impl Storage for Hooked {
    fn open_dir(&self, at: Option<&Fd>, path: &Path, follow: bool) -> io::Result<Fd> {
        self.inner.open_dir(at, path, follow)
    }
    fn open(&self, at: &Fd, name: &OsStr, how: OpenHow) -> io::Result<Fd> {
        if matches!(how.create, fstx::storage::Create::New(_)) {
            self.creates.fetch_add(1, Ordering::SeqCst);
        }
        self.inner.open(at, name, how)
    }
    fn read_at(&self, file: &Fd, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.inner.read_at(file, buf, offset)
    }
    fn write_at(&self, file: &Fd, buf: &[u8], offset: u64) -> io::Result<usize> {
        self.inner.write_at(file, buf, offset)
    }
    fn end_offset(&self, file: &Fd) -> io::Result<u64> {
        self.inner.end_offset(file)
    }
    fn set_len(&self, file: &Fd, len: u64) -> io::Result<()> {
        self.inner.set_len(file, len)
    }
    fn sync(&self, file: &Fd, kind: SyncKind) -> io::Result<()> {
        let n = self.syncs.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some((nth, errno)) = self.hooks.lock().unwrap().fail_sync {
            if n == nth {
                return Err(io::Error::from_raw_os_error(errno));
            }
        }
        self.inner.sync(file, kind)
    }
    fn sync_fs(&self, file: &Fd) -> io::Result<()> {
        self.inner.sync_fs(file)
    }
    fn stat(&self, file: &Fd) -> io::Result<Stat> {
        self.inner.stat(file)
    }
    fn stat_at(&self, at: &Fd, name: &OsStr, follow: bool) -> io::Result<Stat> {
        self.inner.stat_at(at, name, follow)
    }
    fn fs_type(&self, file: &Fd) -> io::Result<u64> {
        let hooks = self.hooks.lock().unwrap();
        if let Some(errno) = hooks.fail_fs_type {
            return Err(io::Error::from_raw_os_error(errno));
        }
        match hooks.fs_magic {
            Some(m) => Ok(m),
            None => self.inner.fs_type(file),
        }
    }
    fn rename_at(&self, a: &Fd, b: &OsStr, c: &Fd, d: &OsStr, nr: bool) -> io::Result<()> {
        self.inner.rename_at(a, b, c, d, nr)
    }
    fn link_at(&self, a: &Fd, b: &OsStr, c: &Fd, d: &OsStr) -> io::Result<()> {
        self.inner.link_at(a, b, c, d)
    }
    fn unlink_at(&self, at: &Fd, name: &OsStr, dir: bool) -> io::Result<()> {
        if let Some(errno) = self.hooks.lock().unwrap().fail_unlink {
            return Err(io::Error::from_raw_os_error(errno));
        }
        self.inner.unlink_at(at, name, dir)
    }
    fn mkdir_at(&self, at: &Fd, name: &OsStr, mode: u32) -> io::Result<()> {
        self.inner.mkdir_at(at, name, mode)
    }
    fn read_link_at(&self, at: &Fd, name: &OsStr) -> io::Result<PathBuf> {
        self.inner.read_link_at(at, name)
    }
    fn chmod(&self, file: &Fd, mode: u32) -> io::Result<()> {
        self.inner.chmod(file, mode)
    }
    fn chown(&self, file: &Fd, uid: Option<u32>, gid: Option<u32>) -> io::Result<()> {
        self.inner.chown(file, uid, gid)
    }
    fn list_xattr(&self, file: &Fd) -> io::Result<Vec<OsString>> {
        self.inner.list_xattr(file)
    }
    fn get_xattr(&self, file: &Fd, name: &OsStr) -> io::Result<Vec<u8>> {
        self.inner.get_xattr(file, name)
    }
    fn list_xattr_at(&self, at: &Fd, name: &OsStr) -> io::Result<Vec<OsString>> {
        self.inner.list_xattr_at(at, name)
    }
    fn get_xattr_at(&self, at: &Fd, name: &OsStr, attr: &OsStr) -> io::Result<Vec<u8>> {
        self.inner.get_xattr_at(at, name, attr)
    }
    fn set_xattr(&self, file: &Fd, name: &OsStr, value: &[u8]) -> io::Result<()> {
        self.inner.set_xattr(file, name, value)
    }
    fn lock(&self, file: &Fd, mode: LockMode, wait: bool) -> io::Result<bool> {
        if self.locks.fetch_add(1, Ordering::SeqCst) == 0 {
            let hook = self.hooks.lock().unwrap().before_first_lock.take();
            if let Some(hook) = hook {
                hook();
            }
        }
        self.inner.lock(file, mode, wait)
    }
    fn unlock(&self, file: &Fd) -> io::Result<()> {
        self.inner.unlock(file)
    }
    fn read_dir(&self, dir: &Fd) -> io::Result<Vec<DirEntry>> {
        self.inner.read_dir(dir)
    }
    fn caps(&self) -> fstx::storage::Caps {
        self.inner.caps()
    }

    fn random(&self) -> io::Result<u64> {
        self.inner.random()
    }
}
