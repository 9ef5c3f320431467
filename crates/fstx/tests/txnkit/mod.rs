//! Fixtures for the transaction tests: a storage wrapper that counts,
//! records, crashes (every call from the Nth on fails, as if the process
//! died there) and injects single faults; and tree snapshots.
#![allow(dead_code, missing_docs)]

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use fstx::storage::{DirEntry, Fd, LockMode, OpenHow, OsStorage, Stat, Storage, SyncKind};

/// One recorded call: the operation and the names involved.
#[derive(Debug, Clone)]
pub(crate) struct Event {
    pub op: &'static str,
    pub a: String,
    pub b: String,
}

#[derive(Default)]
pub(crate) struct ProbeState {
    pub calls: u64,
    /// Every call numbered >= this fails with EIO (a crash at that call).
    pub crash_at: Option<u64>,
    /// Fail the `n`th call of operation `op` (0-based) with this errno.
    pub fault: Option<(&'static str, u64, i32)>,
    pub op_counts: HashMap<&'static str, u64>,
    /// Mutating calls fail with EROFS.
    pub read_only: bool,
    pub record: bool,
    pub events: Vec<Event>,
    pub names: HashMap<i32, String>,
    pub syncs: u64,
    /// Report this `statfs` magic instead of the real one (tests that count
    /// or order exact flushes report ext4's, so that they run the same
    /// protocol whatever filesystem TMPDIR is on: on btrfs, directory
    /// flushes would be `syncfs` calls).
    pub fs_magic: Option<u64>,
}

#[derive(Default)]
pub(crate) struct Probe {
    pub os: OsStorage,
    pub state: Mutex<ProbeState>,
}

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Probe")
    }
}

fn raw(fd: &Fd) -> i32 {
    fd.as_os().map_or(-1, |f| f.as_raw_fd())
}

impl Probe {
    pub(crate) fn new() -> Arc<Probe> {
        Arc::new(Probe::default())
    }
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut ProbeState) -> R) -> R {
        f(&mut self.state.lock().unwrap())
    }
    pub(crate) fn calls(&self) -> u64 {
        self.with(|s| s.calls)
    }
    pub(crate) fn syncs(&self) -> u64 {
        self.with(|s| s.syncs)
    }
    pub(crate) fn events(&self) -> Vec<Event> {
        self.with(|s| s.events.clone())
    }
    fn name(&self, fd: &Fd) -> String {
        self.with(|s| s.names.get(&raw(fd)).cloned().unwrap_or_default())
    }

    #[allow(clippy::many_single_char_names)]
    fn gate(&self, op: &'static str, mutating: bool, a: String, b: String) -> io::Result<()> {
        let mut s = self.state.lock().unwrap();
        let n = s.calls;
        s.calls += 1;
        let k = s.op_counts.entry(op).or_insert(0);
        let nth = *k;
        *k += 1;
        if s.crash_at.is_some_and(|c| n >= c) {
            return Err(io::Error::from_raw_os_error(5));
        }
        if let Some((fop, fnth, errno)) = s.fault {
            if fop == op && fnth == nth {
                return Err(io::Error::from_raw_os_error(errno));
            }
        }
        if s.read_only && mutating {
            return Err(io::Error::from_raw_os_error(30));
        }
        if op == "sync" || op == "sync_fs" {
            s.syncs += 1;
        }
        if s.record {
            s.events.push(Event { op, a, b });
        }
        Ok(())
    }
}

impl Storage for Probe {
    fn open_dir(&self, at: Option<&Fd>, path: &Path, follow: bool) -> io::Result<Fd> {
        let base = at.map(|a| self.name(a)).unwrap_or_default();
        let full = format!("{base}/{}", path.display());
        self.gate("open_dir", false, full.clone(), String::new())?;
        let fd = self.os.open_dir(at, path, follow)?;
        self.with(|s| s.names.insert(raw(&fd), full));
        Ok(fd)
    }
    fn open(&self, at: &Fd, name: &OsStr, how: OpenHow) -> io::Result<Fd> {
        let full = format!("{}/{}", self.name(at), name.to_string_lossy());
        let mutating = !matches!(how.create, fstx::storage::Create::No) || how.truncate;
        self.gate("open", mutating, full.clone(), String::new())?;
        let fd = self.os.open(at, name, how)?;
        self.with(|s| s.names.insert(raw(&fd), full));
        Ok(fd)
    }
    fn read_at(&self, file: &Fd, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.gate("read_at", false, self.name(file), String::new())?;
        self.os.read_at(file, buf, offset)
    }
    fn write_at(&self, file: &Fd, buf: &[u8], offset: u64) -> io::Result<usize> {
        self.gate("write_at", true, self.name(file), String::new())?;
        self.os.write_at(file, buf, offset)
    }
    fn end_offset(&self, file: &Fd) -> io::Result<u64> {
        self.os.end_offset(file)
    }

    fn set_len(&self, file: &Fd, len: u64) -> io::Result<()> {
        self.gate("set_len", true, self.name(file), String::new())?;
        self.os.set_len(file, len)
    }
    fn sync(&self, file: &Fd, kind: SyncKind) -> io::Result<()> {
        self.gate("sync", false, self.name(file), String::new())?;
        self.os.sync(file, kind)
    }
    fn sync_fs(&self, file: &Fd) -> io::Result<()> {
        self.gate("sync_fs", false, self.name(file), String::new())?;
        self.os.sync_fs(file)
    }
    fn stat(&self, file: &Fd) -> io::Result<Stat> {
        self.gate("stat", false, self.name(file), String::new())?;
        self.os.stat(file)
    }
    fn stat_at(&self, at: &Fd, name: &OsStr, follow: bool) -> io::Result<Stat> {
        self.gate("stat_at", false, String::new(), String::new())?;
        self.os.stat_at(at, name, follow)
    }
    fn fs_type(&self, file: &Fd) -> io::Result<u64> {
        self.gate("fs_type", false, String::new(), String::new())?;
        match self.with(|s| s.fs_magic) {
            Some(magic) => Ok(magic),
            None => self.os.fs_type(file),
        }
    }
    fn rename_at(&self, a: &Fd, b: &OsStr, c: &Fd, d: &OsStr, nr: bool) -> io::Result<()> {
        let from = format!("{}/{}", self.name(a), b.to_string_lossy());
        let to = format!("{}/{}", self.name(c), d.to_string_lossy());
        self.gate("rename_at", true, from, to)?;
        self.os.rename_at(a, b, c, d, nr)
    }
    fn link_at(&self, a: &Fd, b: &OsStr, c: &Fd, d: &OsStr) -> io::Result<()> {
        self.gate("link_at", true, String::new(), String::new())?;
        self.os.link_at(a, b, c, d)
    }
    fn unlink_at(&self, at: &Fd, name: &OsStr, dir: bool) -> io::Result<()> {
        let full = format!("{}/{}", self.name(at), name.to_string_lossy());
        self.gate("unlink_at", true, full, String::new())?;
        self.os.unlink_at(at, name, dir)
    }
    fn mkdir_at(&self, at: &Fd, name: &OsStr, mode: u32) -> io::Result<()> {
        let full = format!("{}/{}", self.name(at), name.to_string_lossy());
        self.gate("mkdir_at", true, full, String::new())?;
        self.os.mkdir_at(at, name, mode)
    }
    fn read_link_at(&self, at: &Fd, name: &OsStr) -> io::Result<PathBuf> {
        self.gate("read_link_at", false, String::new(), String::new())?;
        self.os.read_link_at(at, name)
    }
    fn chmod(&self, file: &Fd, mode: u32) -> io::Result<()> {
        self.gate("chmod", true, self.name(file), String::new())?;
        self.os.chmod(file, mode)
    }
    fn chown(&self, file: &Fd, uid: Option<u32>, gid: Option<u32>) -> io::Result<()> {
        self.gate("chown", true, self.name(file), String::new())?;
        self.os.chown(file, uid, gid)
    }
    fn list_xattr(&self, file: &Fd) -> io::Result<Vec<std::ffi::OsString>> {
        self.gate("list_xattr", false, String::new(), String::new())?;
        self.os.list_xattr(file)
    }
    fn get_xattr(&self, file: &Fd, name: &OsStr) -> io::Result<Vec<u8>> {
        self.gate("get_xattr", false, String::new(), String::new())?;
        self.os.get_xattr(file, name)
    }
    fn list_xattr_at(&self, at: &Fd, name: &OsStr) -> io::Result<Vec<std::ffi::OsString>> {
        self.gate("list_xattr_at", false, String::new(), String::new())?;
        self.os.list_xattr_at(at, name)
    }
    fn get_xattr_at(&self, at: &Fd, name: &OsStr, attr: &OsStr) -> io::Result<Vec<u8>> {
        self.gate("get_xattr_at", false, String::new(), String::new())?;
        self.os.get_xattr_at(at, name, attr)
    }
    fn set_xattr(&self, file: &Fd, name: &OsStr, value: &[u8]) -> io::Result<()> {
        self.gate("set_xattr", true, String::new(), String::new())?;
        self.os.set_xattr(file, name, value)
    }
    fn lock(&self, file: &Fd, mode: LockMode, wait: bool) -> io::Result<bool> {
        self.gate("lock", false, String::new(), String::new())?;
        self.os.lock(file, mode, wait)
    }
    fn unlock(&self, file: &Fd) -> io::Result<()> {
        self.gate("unlock", false, String::new(), String::new())?;
        self.os.unlock(file)
    }
    fn read_dir(&self, dir: &Fd) -> io::Result<Vec<DirEntry>> {
        self.gate("read_dir", false, String::new(), String::new())?;
        self.os.read_dir(dir)
    }
    fn caps(&self) -> fstx::storage::Caps {
        self.os.caps()
    }

    fn random(&self) -> io::Result<u64> {
        self.gate("random", false, String::new(), String::new())?;
        self.os.random()
    }
}

pub(crate) use fstx_testkit::TempDir;

/// The tree under `root` as path → content (directories as `None`),
/// excluding `.fstx-txn`. Staged and temporary names are included, so a
/// comparison with a model also proves none is left.
pub(crate) fn snapshot(root: &Path) -> BTreeMap<String, Option<Vec<u8>>> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, Option<Vec<u8>>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
            if rel == ".fstx-txn" {
                continue;
            }
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                out.insert(rel, None);
                walk(base, &p, out);
            } else if ft.is_symlink() {
                out.insert(rel, Some(b"<symlink>".to_vec()));
            } else {
                out.insert(rel, Some(std::fs::read(&p).unwrap()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

pub(crate) fn opts(st: &Arc<Probe>) -> fstx::TxnOptions {
    let mut o = fstx::TxnOptions::new();
    o.storage(st.clone()).flush(fstx::txn::Flush::Serial);
    o
}
