//! [`SimFs`]: an in-memory filesystem implementing fstx's storage seam.
//!
//! It keeps the live image (what processes see), the persistence state
//! ([`Persist`]: durable image plus pending changes, under the rules of
//! [`crate::model`]), open handles and `flock` locks. Every call is counted
//! and can be traced, can fail by an injected [`Fault`], and can leave a
//! snapshot of the persistence state behind, so that the explorer can crash
//! the run after any call.
//!
//! Errors are those Linux gives for the same misuse (`ENOENT`, `EEXIST`,
//! `ENOTDIR`, `EISDIR`, `EXDEV`, `ENOTEMPTY`, `ELOOP`, `EBADF`, `EINVAL`,
//! `EPERM`, `ENODATA`, ...). Not modelled: permission checks other than
//! `chown`'s (the process may read and write everything), timestamps, sparse
//! files beyond zero fill, FIFOs that block.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use fstx::storage::{Create, DirEntry, Fd, FileKind, LockMode, OpenHow, Stat, Storage, SyncKind};
use rustix::io::Errno;

use crate::fault::{CallKind, Fault, FaultError};
use crate::model::{Change, Kernel, Persist, Profile, Stream};
use crate::rng::Rng;
use crate::tree::{Body, Ino, Inode, Meta, Tree, ROOT};

/// `statfs` magic of ext4, which the simulator reports by default.
pub const EXT4_MAGIC: u64 = 0xEF53;

/// `statfs` magic of btrfs, reported under [`Profile::BtrfsDirRace`].
pub const BTRFS_MAGIC: u64 = fstx::fskind::BTRFS_MAGIC;

/// Symlinks followed in one path resolution before `ELOOP`.
const MAX_HOPS: u32 = 40;

fn err(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e.raw_os_error())
}

#[derive(Debug, Clone)]
struct Handle {
    ino: Ino,
    read: bool,
    write: bool,
    /// For traces.
    path: PathBuf,
}

/// One crash point: the persistence state right after a call.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Calls made so far (the crash happens after call number `call`).
    pub call: u64,
    /// Durable image and pending changes at that instant.
    pub persist: Arc<Persist>,
}

struct Inner {
    live: Tree,
    persist: Persist,
    /// Bumped on every change to `persist`, to share unchanged snapshots.
    persist_version: u64,
    snapshot_version: u64,
    profile: Profile,
    kernel: Kernel,
    reported_kernel: Option<Kernel>,
    handles: BTreeMap<u64, Handle>,
    next_handle: u64,
    locks: HashMap<Ino, Vec<(u64, LockMode)>>,
    rng: Rng,
    calls: u64,
    counts: BTreeMap<CallKind, u64>,
    faults: Vec<Fault>,
    injected: Vec<(u64, Fault)>,
    /// Calls whose injected fault the simulated kernel did not report.
    swallowed: Vec<u64>,
    /// Inodes whose pending changes a failed `syncfs` lost, with the error
    /// the next `fsync` of each reports (Linux's per-file writeback error
    /// state: a later `fsync` sees the failure whoever caused the writeback).
    unreported: BTreeMap<Ino, FaultError>,
    trace: Option<Vec<String>>,
    snapshots: Option<Vec<Snapshot>>,
    uid: u32,
    gid: u32,
    umask: u32,
    magic: u64,
}

/// The simulated filesystem. Cheap to create; one per run.
pub struct SimFs {
    inner: Arc<Mutex<Inner>>,
    on_close: Arc<dyn Fn(u64) + Send + Sync>,
}

impl fmt::Debug for SimFs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SimFs")
    }
}

impl SimFs {
    /// An empty filesystem (just `/`), weakest persistence model, random
    /// numbers from `seed`.
    pub fn new(seed: u64) -> Arc<SimFs> {
        SimFs::from_image(Tree::new(), seed, Profile::Weak)
    }

    /// A filesystem whose live and durable state is `image` (as after a
    /// reboot: no handles, no locks, nothing pending).
    pub fn from_image(image: Tree, seed: u64, profile: Profile) -> Arc<SimFs> {
        let inner = Arc::new(Mutex::new(Inner {
            live: image.clone(),
            persist: Persist::new(image),
            persist_version: 0,
            snapshot_version: u64::MAX,
            profile,
            kernel: Kernel::Current,
            reported_kernel: None,
            handles: BTreeMap::new(),
            next_handle: 3,
            locks: HashMap::new(),
            rng: Rng::new(seed),
            calls: 0,
            counts: BTreeMap::new(),
            faults: Vec::new(),
            injected: Vec::new(),
            swallowed: Vec::new(),
            unreported: BTreeMap::new(),
            trace: None,
            snapshots: None,
            uid: 1000,
            gid: 1000,
            umask: 0o022,
            magic: if profile.is_btrfs() {
                BTRFS_MAGIC
            } else {
                EXT4_MAGIC
            },
        }));
        let weak: Weak<Mutex<Inner>> = Arc::downgrade(&inner);
        let on_close: Arc<dyn Fn(u64) + Send + Sync> = Arc::new(move |id| {
            if let Some(inner) = weak.upgrade() {
                let mut g = inner.lock().unwrap_or_else(PoisonError::into_inner);
                g.handles.remove(&id);
                for holders in g.locks.values_mut() {
                    holders.retain(|(h, _)| *h != id);
                }
            }
        });
        Arc::new(SimFs { inner, on_close })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets the persistence profile. [`Profile::Btrfs`] and
    /// [`Profile::BtrfsDirRace`] also make `fs_type` report btrfs; leaving
    /// them goes back to ext4's magic.
    pub fn set_profile(&self, profile: Profile) {
        let mut g = self.lock();
        if profile.is_btrfs() {
            g.magic = BTRFS_MAGIC;
        } else if g.profile.is_btrfs() && g.magic == BTRFS_MAGIC {
            g.magic = EXT4_MAGIC;
        }
        g.profile = profile;
    }

    /// Sets the kernel the simulator behaves as (default
    /// [`Kernel::Current`]): what [`caps`](fstx::storage::Storage::caps)
    /// reports, and whether a failed `syncfs` returns its error.
    pub fn set_kernel(&self, kernel: Kernel) {
        self.lock().kernel = kernel;
    }

    /// The kernel the simulator behaves as.
    pub fn kernel(&self) -> Kernel {
        self.lock().kernel
    }

    /// A planted bug for the kernel-dependent choices: with `Some(k)`,
    /// [`caps`](fstx::storage::Storage::caps) answers `k`'s capabilities
    /// while the filesystem goes on behaving as [`kernel`](Self::kernel),
    /// so the protocol takes the branch meant for another kernel (`None`,
    /// the default: the truth).
    pub fn report_kernel(&self, reported: Option<Kernel>) {
        self.lock().reported_kernel = reported;
    }

    /// The persistence profile.
    pub fn profile(&self) -> Profile {
        self.lock().profile
    }

    /// Sets the process's user and group (default 1000:1000; 0 is root).
    pub fn set_ids(&self, uid: u32, gid: u32) {
        let mut g = self.lock();
        g.uid = uid;
        g.gid = gid;
    }

    /// The metadata of a file created now with mode `0o666` (fstx's new
    /// files): the umask applied, the process's owner and group, no xattrs.
    pub fn new_file_meta(&self) -> crate::tree::Meta {
        let g = self.lock();
        crate::tree::Meta {
            mode: 0o666 & !g.umask,
            uid: g.uid,
            gid: g.gid,
            xattrs: std::collections::BTreeMap::new(),
        }
    }

    /// Sets the `statfs` magic reported by `fs_type` (default ext4).
    pub fn set_fs_magic(&self, magic: u64) {
        self.lock().magic = magic;
    }

    /// Starts or stops recording the persistence state after every call.
    pub fn record_snapshots(&self, on: bool) {
        let mut g = self.lock();
        g.snapshots = on.then(Vec::new);
        g.snapshot_version = u64::MAX;
        if on {
            g.snapshot();
        }
    }

    /// Takes the recorded snapshots (the first is the state before any call).
    pub fn take_snapshots(&self) -> Vec<Snapshot> {
        self.lock().snapshots.take().unwrap_or_default()
    }

    /// Starts or stops tracing calls.
    pub fn record_trace(&self, on: bool) {
        self.lock().trace = on.then(Vec::new);
    }

    /// The trace so far (one line per call).
    pub fn trace(&self) -> Vec<String> {
        self.lock().trace.clone().unwrap_or_default()
    }

    /// Number of storage calls made so far.
    pub fn calls(&self) -> u64 {
        self.lock().calls
    }

    /// Calls made so far, by kind.
    pub fn counts(&self) -> BTreeMap<CallKind, u64> {
        self.lock().counts.clone()
    }

    /// Arms a fault.
    pub fn inject(&self, fault: Fault) {
        self.lock().faults.push(fault);
    }

    /// Faults that fired, with the call number each fired at.
    pub fn injected(&self) -> Vec<(u64, Fault)> {
        self.lock().injected.clone()
    }

    /// The calls among [`injected`](Self::injected) whose failure the
    /// simulated kernel did not report (a failed `syncfs` before Linux
    /// 5.8, or a failed btrfs commit in `syncfs` before 5.17): they
    /// returned success, and a caller cannot know.
    pub fn swallowed(&self) -> Vec<u64> {
        self.lock().swallowed.clone()
    }

    /// A copy of the live image.
    pub fn live(&self) -> Tree {
        self.lock().live.clone()
    }

    /// Runs `f` on the live image without copying it.
    pub fn with_live<T>(&self, f: impl FnOnce(&Tree) -> T) -> T {
        f(&self.lock().live)
    }

    /// The live image's hash (see [`Tree::image_hash`]).
    pub fn live_hash(&self) -> u64 {
        self.lock().live.image_hash()
    }

    /// A copy of the persistence state.
    pub fn persist(&self) -> Persist {
        self.lock().persist.clone()
    }

    // ----- Setup helpers: change live and durable state at once, no calls counted.

    fn setup<T>(&self, f: impl FnOnce(&mut Inner) -> io::Result<T>) -> io::Result<T> {
        let mut g = self.lock();
        assert_eq!(
            g.persist.pending_len(),
            0,
            "setup helpers need a fully durable state"
        );
        let out = f(&mut g)?;
        g.persist = Persist::new(g.live.clone());
        g.persist_version += 1;
        Ok(out)
    }

    /// Creates a directory and its missing parents (durably).
    pub fn mkdir_p(&self, path: impl AsRef<Path>) -> io::Result<()> {
        let path = path.as_ref().to_path_buf();
        self.setup(|g| {
            let mut cur = ROOT;
            for comp in path.components() {
                let Component::Normal(name) = comp else {
                    continue;
                };
                cur = match g.live.lookup(cur, name) {
                    Some(ino) => ino,
                    None => g.new_inode(cur, name, Body::Dir(BTreeMap::new()), 0o755, false),
                };
            }
            Ok(())
        })
    }

    /// Creates or overwrites a file with `data` and `mode` (durably).
    pub fn put_file(&self, path: impl AsRef<Path>, data: &[u8], mode: u32) -> io::Result<()> {
        let (dir, name) = split(path.as_ref())?;
        self.setup(|g| {
            let d = g.resolve(ROOT, &dir, true)?;
            match g.live.lookup(d, &name) {
                Some(ino) => {
                    let inode = g.live.get_mut(ino);
                    inode.body = Body::File(data.to_vec());
                    inode.meta.mode = mode;
                }
                None => {
                    g.new_inode(d, &name, Body::File(data.to_vec()), mode, false);
                }
            }
            Ok(())
        })
    }

    /// Creates a symlink at `path` pointing at `target` (durably).
    pub fn symlink(&self, target: impl AsRef<Path>, path: impl AsRef<Path>) -> io::Result<()> {
        let (dir, name) = split(path.as_ref())?;
        let target = target.as_ref().to_path_buf();
        self.setup(|g| {
            let d = g.resolve(ROOT, &dir, true)?;
            if g.live.lookup(d, &name).is_some() {
                return Err(err(Errno::EXIST));
            }
            g.new_inode(d, &name, Body::Symlink(target), 0o777, false);
            Ok(())
        })
    }

    /// Creates a FIFO at `path` (durably).
    pub fn mkfifo(&self, path: impl AsRef<Path>) -> io::Result<()> {
        let (dir, name) = split(path.as_ref())?;
        self.setup(|g| {
            let d = g.resolve(ROOT, &dir, true)?;
            g.new_inode(d, &name, Body::Special(FileKind::Fifo), 0o644, false);
            Ok(())
        })
    }

    /// Adds a hard link `new` to the file at `existing` (durably).
    pub fn hard_link(&self, existing: impl AsRef<Path>, new: impl AsRef<Path>) -> io::Result<()> {
        let existing = existing.as_ref().to_path_buf();
        let (dir, name) = split(new.as_ref())?;
        self.setup(|g| {
            let ino = g.resolve(ROOT, &existing, false)?;
            let d = g.resolve(ROOT, &dir, true)?;
            g.live
                .get_mut(d)
                .entries_mut()
                .ok_or_else(|| err(Errno::NOTDIR))?
                .insert(name, ino);
            Ok(())
        })
    }

    /// Makes the directory at `path` (created if missing) the root of a
    /// separate filesystem: renames and links across it fail with `EXDEV`.
    pub fn mount(&self, path: impl AsRef<Path>) -> io::Result<()> {
        self.mkdir_p(path.as_ref())?;
        let path = path.as_ref().to_path_buf();
        self.setup(|g| {
            let ino = g.resolve(ROOT, &path, true)?;
            let dev = g.live.inodes.values().map(|i| i.dev).max().unwrap_or(1) + 1;
            g.live.get_mut(ino).dev = dev;
            Ok(())
        })
    }

    /// Sets an extended attribute on the inode at `path` (durably).
    pub fn put_xattr(&self, path: impl AsRef<Path>, name: &str, value: &[u8]) -> io::Result<()> {
        let path = path.as_ref().to_path_buf();
        self.setup(|g| {
            let ino = g.resolve(ROOT, &path, false)?;
            g.live
                .get_mut(ino)
                .meta
                .xattrs
                .insert(name.into(), value.to_vec());
            Ok(())
        })
    }

    // ----- The call wrapper.

    /// Runs one storage call: counts it, applies an armed fault, traces it
    /// and snapshots the persistence state after it.
    fn call<T: fmt::Debug>(
        &self,
        kind: CallKind,
        describe: impl FnOnce(&Inner) -> String,
        f: impl FnOnce(&mut Inner, Option<FaultError>) -> io::Result<T>,
    ) -> io::Result<T> {
        let mut g = self.lock();
        g.calls += 1;
        let call = g.calls;
        let nth = {
            let c = g.counts.entry(kind).or_insert(0);
            *c += 1;
            *c
        };
        let fault = g
            .faults
            .iter()
            .position(|f| f.kind == kind && f.nth == nth)
            .map(|i| g.faults.remove(i));
        if let Some(fault) = fault {
            g.injected.push((call, fault));
        }
        let desc = g.trace.is_some().then(|| describe(&g));
        let error = fault.map(|f| f.error);
        let result = match error {
            // Faults with side effects are applied by the call itself.
            Some(FaultError::ShortWrite) => f(&mut g, error),
            Some(e) if matches!(kind, CallKind::Sync | CallKind::SyncFs) => f(&mut g, Some(e)),
            // A lie outside a flush does nothing.
            Some(FaultError::Lie) | None => f(&mut g, None),
            Some(e) => Err(e.to_io().expect("an errno")),
        };
        if let Some(desc) = desc {
            let res = match &result {
                Ok(v) => format!("{v:?}"),
                Err(e) => format!("Err({e})"),
            };
            let injected = fault
                .map(|f| format!("  [injected {f}]"))
                .unwrap_or_default();
            if let Some(t) = g.trace.as_mut() {
                t.push(format!("#{call} {kind}{desc} -> {res}{injected}"));
            }
        }
        g.snapshot();
        result
    }

    fn fd(&self, id: u64) -> Fd {
        Fd::from_virtual(id, self.on_close.clone())
    }
}

impl Inner {
    fn snapshot(&mut self) {
        if self.snapshots.is_none() {
            return;
        }
        let call = self.calls;
        let version = self.persist_version;
        let snaps = self.snapshots.as_mut().expect("checked");
        let persist = match snaps.last() {
            Some(last) if self.snapshot_version == version => last.persist.clone(),
            _ => Arc::new(self.persist.clone()),
        };
        snaps.push(Snapshot { call, persist });
        self.snapshot_version = version;
    }

    fn record(&mut self, stream: Stream, change: Change, requires: Vec<u64>) -> u64 {
        self.persist_version += 1;
        self.persist.record(stream, change, requires)
    }

    fn handle(&self, fd: &Fd) -> io::Result<&Handle> {
        fd.virtual_id()
            .and_then(|id| self.handles.get(&id))
            .ok_or_else(|| err(Errno::BADF))
    }

    fn hpath(&self, fd: &Fd) -> String {
        self.handle(fd)
            .map_or_else(|_| "<bad fd>".into(), |h| h.path.display().to_string())
    }

    fn dir_of(&self, fd: &Fd) -> io::Result<(Ino, PathBuf)> {
        let h = self.handle(fd)?;
        match self.live.inodes.get(&h.ino) {
            Some(i) if i.entries().is_some() => Ok((h.ino, h.path.clone())),
            _ => Err(err(Errno::NOTDIR)),
        }
    }

    fn parent_of(&self, dir: Ino) -> Ino {
        if dir == ROOT {
            return ROOT;
        }
        self.live
            .inodes
            .iter()
            .find(|(_, i)| i.entries().is_some_and(|e| e.values().any(|&c| c == dir)))
            .map_or(ROOT, |(ino, _)| *ino)
    }

    /// Resolves `path` from directory `start` like the kernel's path walk.
    fn resolve(&self, start: Ino, path: &Path, follow_last: bool) -> io::Result<Ino> {
        let mut hops = 0;
        self.resolve_hops(start, path, follow_last, &mut hops)
    }

    fn resolve_hops(
        &self,
        start: Ino,
        path: &Path,
        follow_last: bool,
        hops: &mut u32,
    ) -> io::Result<Ino> {
        if path.as_os_str().is_empty() {
            return Err(err(Errno::NOENT));
        }
        let comps: Vec<Component> = path.components().collect();
        let mut cur = start;
        for (i, comp) in comps.iter().enumerate() {
            let last = i + 1 == comps.len();
            if self.live.get(cur).entries().is_none() {
                return Err(err(Errno::NOTDIR));
            }
            match comp {
                Component::RootDir => cur = ROOT,
                Component::CurDir | Component::Prefix(_) => {}
                Component::ParentDir => cur = self.parent_of(cur),
                Component::Normal(name) => {
                    if name.len() > 255 {
                        return Err(err(Errno::NAMETOOLONG));
                    }
                    let next = self
                        .live
                        .lookup(cur, name)
                        .ok_or_else(|| err(Errno::NOENT))?;
                    if let Body::Symlink(target) = &self.live.get(next).body {
                        if !last || follow_last {
                            *hops += 1;
                            if *hops > MAX_HOPS {
                                return Err(err(Errno::LOOP));
                            }
                            cur = self.resolve_hops(cur, &target.clone(), true, hops)?;
                            continue;
                        }
                    }
                    cur = next;
                }
            }
        }
        Ok(cur)
    }

    /// Resolves a `*at` name: the directory it is in and its last component.
    fn parent_and_name(&self, at: &Fd, name: &OsStr) -> io::Result<(Ino, OsString)> {
        let (dir, _) = self.dir_of(at)?;
        if name.is_empty() {
            return Err(err(Errno::NOENT));
        }
        let path = Path::new(name);
        if !name.as_bytes().contains(&b'/') {
            if name.len() > 255 {
                return Err(err(Errno::NAMETOOLONG));
            }
            return Ok((dir, name.to_os_string()));
        }
        let (parent, last) = split(path)?;
        let d = self.resolve(dir, &parent, true)?;
        if self.live.get(d).entries().is_none() {
            return Err(err(Errno::NOTDIR));
        }
        Ok((d, last))
    }

    fn new_inode(
        &mut self,
        dir: Ino,
        name: &OsStr,
        body: Body,
        mode: u32,
        durable_later: bool,
    ) -> Ino {
        let inode = Inode {
            meta: Meta {
                mode,
                uid: self.uid,
                gid: self.gid,
                xattrs: BTreeMap::new(),
            },
            body,
            dev: self.live.get(dir).dev,
        };
        let ino = self.live.add(inode.clone());
        self.live
            .get_mut(dir)
            .entries_mut()
            .expect("a directory")
            .insert(name.to_os_string(), ino);
        if durable_later {
            let empty = Inode {
                body: match inode.body {
                    Body::File(_) => Body::File(Vec::new()),
                    Body::Dir(_) => Body::Dir(BTreeMap::new()),
                    other => other,
                },
                ..inode
            };
            self.persist.create_inode(ino, empty);
            self.record(
                Stream::Entry(dir, name.to_os_string()),
                Change::Link(Some(ino)),
                Vec::new(),
            );
        }
        ino
    }

    fn open_handle(&mut self, ino: Ino, read: bool, write: bool, path: PathBuf) -> u64 {
        let id = self.next_handle;
        self.next_handle += 1;
        self.handles.insert(
            id,
            Handle {
                ino,
                read,
                write,
                path,
            },
        );
        id
    }

    fn stat_of(&self, ino: Ino) -> Stat {
        let inode = self.live.get(ino);
        let nlink = self.live.link_counts().get(&ino).copied().unwrap_or(0);
        Stat {
            kind: inode.kind(),
            mode: inode.meta.mode,
            uid: inode.meta.uid,
            gid: inode.meta.gid,
            nlink,
            size: match &inode.body {
                Body::File(d) => d.len() as u64,
                Body::Symlink(t) => t.as_os_str().len() as u64,
                Body::Dir(_) => 4096,
                Body::Special(_) => 0,
            },
            dev: inode.dev,
            ino,
        }
    }

    fn set_meta(&mut self, ino: Ino, meta: Meta) {
        self.live.get_mut(ino).meta = meta.clone();
        self.record(Stream::Inode(ino), Change::Meta(meta), Vec::new());
    }

    fn is_ancestor(&self, anc: Ino, mut of: Ino) -> bool {
        loop {
            if of == anc {
                return true;
            }
            if of == ROOT {
                return false;
            }
            of = self.parent_of(of);
        }
    }
}

/// Splits a path into its parent directory and last component.
fn split(path: &Path) -> io::Result<(PathBuf, OsString)> {
    let name = path.file_name().ok_or_else(|| err(Errno::INVAL))?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((parent, name.to_os_string()))
}

fn show(name: &OsStr) -> String {
    format!("{:?}", name.to_string_lossy())
}

impl Storage for SimFs {
    fn open_dir(&self, at: Option<&Fd>, path: &Path, follow: bool) -> io::Result<Fd> {
        let id = self.call(
            CallKind::OpenDir,
            |g| {
                format!(
                    "({}, {}, follow={follow})",
                    at.map_or("cwd".into(), |a| g.hpath(a)),
                    path.display()
                )
            },
            |g, _| {
                let (start, base) = match at {
                    Some(at) if path.is_relative() => g.dir_of(at)?,
                    _ => (ROOT, PathBuf::from("/")),
                };
                let ino = g.resolve(start, path, follow)?;
                match g.live.get(ino).kind() {
                    FileKind::Dir => Ok(g.open_handle(ino, true, false, base.join(path))),
                    _ => Err(err(Errno::NOTDIR)),
                }
            },
        )?;
        Ok(self.fd(id))
    }

    fn open(&self, at: &Fd, name: &OsStr, how: OpenHow) -> io::Result<Fd> {
        let id = self.call(
            CallKind::Open,
            |g| format!("({}, {}, {how:?})", g.hpath(at), show(name)),
            |g, _| {
                let (dir, last) = g.parent_and_name(at, name)?;
                let base = g.handle(at)?.path.clone();
                let existing = g.live.lookup(dir, &last);
                let ino = match (existing, how.create) {
                    (Some(_), Create::New(_)) => return Err(err(Errno::EXIST)),
                    (Some(ino), _) => {
                        let ino = match &g.live.get(ino).body {
                            Body::Symlink(_) if !how.follow => return Err(err(Errno::LOOP)),
                            Body::Symlink(_) => g.resolve(dir, Path::new(&last), true)?,
                            _ => ino,
                        };
                        match g.live.get(ino).kind() {
                            FileKind::Dir if how.write || how.truncate => {
                                return Err(err(Errno::ISDIR))
                            }
                            FileKind::Fifo if !how.nonblock => {
                                // Would block forever waiting for a writer.
                                return Err(err(Errno::DEADLK));
                            }
                            _ => {}
                        }
                        if how.truncate
                            && how.write
                            && g.live.get(ino).data().is_some_and(|d| !d.is_empty())
                        {
                            g.live.get_mut(ino).data_mut().expect("a file").clear();
                            g.record(Stream::Inode(ino), Change::SetLen(0), Vec::new());
                        }
                        ino
                    }
                    (None, Create::No) => return Err(err(Errno::NOENT)),
                    (None, Create::IfMissing(mode) | Create::New(mode)) => {
                        let mode = mode & 0o7777 & !g.umask;
                        g.new_inode(dir, &last, Body::File(Vec::new()), mode, true)
                    }
                };
                Ok(g.open_handle(ino, how.read || !how.write, how.write, base.join(name)))
            },
        )?;
        Ok(self.fd(id))
    }

    fn read_at(&self, file: &Fd, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let len = buf.len();
        self.call(
            CallKind::ReadAt,
            |g| format!("({}, {len} bytes at {offset})", g.hpath(file)),
            |g, _| {
                let h = g.handle(file)?;
                if !h.read {
                    return Err(err(Errno::BADF));
                }
                let inode = g.live.get(h.ino);
                let data = match &inode.body {
                    Body::File(d) => d,
                    Body::Dir(_) => return Err(err(Errno::ISDIR)),
                    _ => return Err(err(Errno::INVAL)),
                };
                let start = (offset as usize).min(data.len());
                let n = (data.len() - start).min(buf.len());
                buf[..n].copy_from_slice(&data[start..start + n]);
                Ok(n)
            },
        )
    }

    fn write_at(&self, file: &Fd, buf: &[u8], offset: u64) -> io::Result<usize> {
        self.call(
            CallKind::WriteAt,
            |g| format!("({}, {} bytes at {offset})", g.hpath(file), buf.len()),
            |g, fault| {
                let h = g.handle(file)?;
                if !h.write {
                    return Err(err(Errno::BADF));
                }
                let ino = h.ino;
                let n = match fault {
                    Some(FaultError::ShortWrite) => (buf.len() / 2).max(1).min(buf.len()),
                    _ => buf.len(),
                };
                let data = g
                    .live
                    .get_mut(ino)
                    .data_mut()
                    .ok_or_else(|| err(Errno::ISDIR))?;
                if n == 0 {
                    return Ok(0);
                }
                let off = offset as usize;
                if data.len() < off + n {
                    data.resize(off + n, 0);
                }
                data[off..off + n].copy_from_slice(&buf[..n]);
                g.record(
                    Stream::Inode(ino),
                    Change::Write {
                        offset,
                        bytes: buf[..n].to_vec(),
                    },
                    Vec::new(),
                );
                Ok(n)
            },
        )
    }

    fn end_offset(&self, file: &Fd) -> io::Result<u64> {
        self.call(
            CallKind::EndOffset,
            |g| format!("({})", g.hpath(file)),
            |g, _| {
                let h = g.handle(file)?;
                match &g.live.get(h.ino).body {
                    Body::File(d) => Ok(d.len() as u64),
                    Body::Dir(_) => Err(err(Errno::ISDIR)),
                    _ => Err(err(Errno::SPIPE)),
                }
            },
        )
    }

    fn set_len(&self, file: &Fd, len: u64) -> io::Result<()> {
        self.call(
            CallKind::SetLen,
            |g| format!("({}, {len})", g.hpath(file)),
            |g, _| {
                let h = g.handle(file)?;
                if !h.write {
                    return Err(err(Errno::INVAL));
                }
                let ino = h.ino;
                let data = g
                    .live
                    .get_mut(ino)
                    .data_mut()
                    .ok_or_else(|| err(Errno::INVAL))?;
                data.resize(len as usize, 0);
                g.record(Stream::Inode(ino), Change::SetLen(len), Vec::new());
                Ok(())
            },
        )
    }

    fn sync(&self, file: &Fd, kind: SyncKind) -> io::Result<()> {
        self.call(
            CallKind::Sync,
            |g| format!("({}, {kind:?})", g.hpath(file)),
            |g, fault| {
                let ino = g.handle(file)?.ino;
                let is_dir = g.live.get(ino).entries().is_some();
                if fault == Some(FaultError::Lie) && !is_dir {
                    // Success, but the pending data stays pending.
                    return Ok(());
                }
                // A failed `syncfs` lost this file's changes: the file's
                // next flush reports it.
                let earlier = (!is_dir).then(|| g.unreported.remove(&ino)).flatten();
                if let Some(fault) = fault.filter(|f| *f != FaultError::Lie).or(earlier) {
                    if !is_dir {
                        g.persist.flush_failed(&Stream::Inode(ino));
                        g.persist_version += 1;
                    }
                    return Err(fault.to_io().expect("an errno"));
                }
                let profile = g.profile;
                if is_dir && profile == Profile::BtrfsDirRace {
                    // The race: success, and the directory's log is not on disk.
                    return Ok(());
                }
                g.persist.flush(profile, &|s: &Stream| match s {
                    Stream::Inode(i) => *i == ino,
                    Stream::Entry(d, _) => is_dir && *d == ino,
                });
                g.persist_version += 1;
                Ok(())
            },
        )
    }

    fn sync_fs(&self, file: &Fd) -> io::Result<()> {
        self.call(
            CallKind::SyncFs,
            |g| format!("({})", g.hpath(file)),
            |g, fault| {
                g.handle(file)?;
                match fault {
                    // A lie: success, nothing made durable.
                    Some(FaultError::Lie) => return Ok(()),
                    Some(fault) => {
                        for ino in g.persist.flush_all_failed() {
                            g.unreported.insert(ino, fault);
                        }
                        g.persist_version += 1;
                        // Kernels before 5.8 (any filesystem) and before
                        // 5.17 (a failed btrfs commit) return success.
                        let btrfs = g.magic == BTRFS_MAGIC;
                        if !g.kernel.syncfs_reports_failure(btrfs) {
                            let call = g.calls;
                            g.swallowed.push(call);
                            return Ok(());
                        }
                        return Err(fault.to_io().expect("an errno"));
                    }
                    None => {}
                }
                g.persist.flush_all();
                g.persist_version += 1;
                Ok(())
            },
        )
    }

    fn stat(&self, file: &Fd) -> io::Result<Stat> {
        self.call(
            CallKind::Stat,
            |g| format!("({})", g.hpath(file)),
            |g, _| {
                let ino = g.handle(file)?.ino;
                Ok(g.stat_of(ino))
            },
        )
    }

    fn stat_at(&self, at: &Fd, name: &OsStr, follow: bool) -> io::Result<Stat> {
        self.call(
            CallKind::StatAt,
            |g| format!("({}, {}, follow={follow})", g.hpath(at), show(name)),
            |g, _| {
                let (dir, _) = g.dir_of(at)?;
                let ino = g.resolve(dir, Path::new(name), follow)?;
                Ok(g.stat_of(ino))
            },
        )
    }

    fn fs_type(&self, file: &Fd) -> io::Result<u64> {
        self.call(
            CallKind::FsType,
            |g| format!("({})", g.hpath(file)),
            |g, _| {
                g.handle(file)?;
                Ok(g.magic)
            },
        )
    }

    fn rename_at(
        &self,
        from_dir: &Fd,
        from: &OsStr,
        to_dir: &Fd,
        to: &OsStr,
        noreplace: bool,
    ) -> io::Result<()> {
        self.call(
            CallKind::Rename,
            |g| {
                format!(
                    "({}, {}, {}, {}, noreplace={noreplace})",
                    g.hpath(from_dir),
                    show(from),
                    g.hpath(to_dir),
                    show(to)
                )
            },
            |g, _| {
                let (fd, fname) = g.parent_and_name(from_dir, from)?;
                let (td, tname) = g.parent_and_name(to_dir, to)?;
                if [&fname, &tname].iter().any(|n| *n == "." || *n == "..") {
                    return Err(err(Errno::BUSY));
                }
                let src = g.live.lookup(fd, &fname).ok_or_else(|| err(Errno::NOENT))?;
                if g.live.get(src).dev != g.live.get(td).dev {
                    return Err(err(Errno::XDEV));
                }
                let dst = g.live.lookup(td, &tname);
                if noreplace && dst.is_some() {
                    return Err(err(Errno::EXIST));
                }
                let src_is_dir = g.live.get(src).entries().is_some();
                if let Some(dst) = dst {
                    if dst == src {
                        // Two names of one inode: rename does nothing and succeeds.
                        return Ok(());
                    }
                    match (src_is_dir, g.live.get(dst).entries()) {
                        (true, Some(e)) if !e.is_empty() => return Err(err(Errno::NOTEMPTY)),
                        (true, None) => return Err(err(Errno::NOTDIR)),
                        (false, Some(_)) => return Err(err(Errno::ISDIR)),
                        _ => {}
                    }
                }
                if src_is_dir && g.is_ancestor(src, td) {
                    return Err(err(Errno::INVAL));
                }
                g.live
                    .get_mut(fd)
                    .entries_mut()
                    .expect("dir")
                    .remove(&fname);
                g.live
                    .get_mut(td)
                    .entries_mut()
                    .expect("dir")
                    .insert(tname.clone(), src);
                let first = g.record(
                    Stream::Entry(td, tname),
                    Change::Link(Some(src)),
                    Vec::new(),
                );
                // The removal needs the new name, reachable (model rule 4).
                let mut requires = vec![first];
                let mut dir = td;
                while dir != ROOT {
                    if let Some(id) = g.persist.pending_link_of(dir) {
                        requires.push(id);
                    }
                    dir = g.parent_of(dir);
                }
                g.record(Stream::Entry(fd, fname), Change::Link(None), requires);
                Ok(())
            },
        )
    }

    fn link_at(&self, from_dir: &Fd, from: &OsStr, to_dir: &Fd, to: &OsStr) -> io::Result<()> {
        self.call(
            CallKind::Link,
            |g| {
                format!(
                    "({}, {}, {}, {})",
                    g.hpath(from_dir),
                    show(from),
                    g.hpath(to_dir),
                    show(to)
                )
            },
            |g, _| {
                let (fd, fname) = g.parent_and_name(from_dir, from)?;
                let (td, tname) = g.parent_and_name(to_dir, to)?;
                let src = g.live.lookup(fd, &fname).ok_or_else(|| err(Errno::NOENT))?;
                if g.live.lookup(td, &tname).is_some() {
                    return Err(err(Errno::EXIST));
                }
                if g.live.get(src).entries().is_some() {
                    return Err(err(Errno::PERM));
                }
                if g.live.get(src).dev != g.live.get(td).dev {
                    return Err(err(Errno::XDEV));
                }
                g.live
                    .get_mut(td)
                    .entries_mut()
                    .expect("dir")
                    .insert(tname.clone(), src);
                g.record(
                    Stream::Entry(td, tname),
                    Change::Link(Some(src)),
                    Vec::new(),
                );
                Ok(())
            },
        )
    }

    fn unlink_at(&self, at: &Fd, name: &OsStr, dir: bool) -> io::Result<()> {
        self.call(
            CallKind::Unlink,
            |g| format!("({}, {}, dir={dir})", g.hpath(at), show(name)),
            |g, _| {
                let (d, last) = g.parent_and_name(at, name)?;
                if last == "." {
                    return Err(err(Errno::INVAL));
                }
                if last == ".." {
                    return Err(err(if dir { Errno::NOTEMPTY } else { Errno::ISDIR }));
                }
                let ino = g.live.lookup(d, &last).ok_or_else(|| err(Errno::NOENT))?;
                match (dir, g.live.get(ino).entries()) {
                    (false, Some(_)) => return Err(err(Errno::ISDIR)),
                    (true, None) => return Err(err(Errno::NOTDIR)),
                    (true, Some(e)) if !e.is_empty() => return Err(err(Errno::NOTEMPTY)),
                    _ => {}
                }
                g.live.get_mut(d).entries_mut().expect("dir").remove(&last);
                g.record(Stream::Entry(d, last), Change::Link(None), Vec::new());
                Ok(())
            },
        )
    }

    fn mkdir_at(&self, at: &Fd, name: &OsStr, mode: u32) -> io::Result<()> {
        self.call(
            CallKind::Mkdir,
            |g| format!("({}, {}, {mode:o})", g.hpath(at), show(name)),
            |g, _| {
                let (d, last) = g.parent_and_name(at, name)?;
                if g.live.lookup(d, &last).is_some() || last == "." || last == ".." {
                    return Err(err(Errno::EXIST));
                }
                let mode = mode & 0o7777 & !g.umask;
                g.new_inode(d, &last, Body::Dir(BTreeMap::new()), mode, true);
                Ok(())
            },
        )
    }

    fn read_link_at(&self, at: &Fd, name: &OsStr) -> io::Result<PathBuf> {
        self.call(
            CallKind::ReadLink,
            |g| format!("({}, {})", g.hpath(at), show(name)),
            |g, _| {
                let (d, last) = g.parent_and_name(at, name)?;
                let ino = g.live.lookup(d, &last).ok_or_else(|| err(Errno::NOENT))?;
                match &g.live.get(ino).body {
                    Body::Symlink(t) => Ok(t.clone()),
                    _ => Err(err(Errno::INVAL)),
                }
            },
        )
    }

    fn chmod(&self, file: &Fd, mode: u32) -> io::Result<()> {
        self.call(
            CallKind::Chmod,
            |g| format!("({}, {mode:o})", g.hpath(file)),
            |g, _| {
                let ino = g.handle(file)?.ino;
                let mut meta = g.live.get(ino).meta.clone();
                if g.uid != 0 && g.uid != meta.uid {
                    return Err(err(Errno::PERM));
                }
                meta.mode = mode & 0o7777;
                g.set_meta(ino, meta);
                Ok(())
            },
        )
    }

    fn chown(&self, file: &Fd, uid: Option<u32>, gid: Option<u32>) -> io::Result<()> {
        self.call(
            CallKind::Chown,
            |g| format!("({}, {uid:?}, {gid:?})", g.hpath(file)),
            |g, _| {
                let ino = g.handle(file)?.ino;
                let mut meta = g.live.get(ino).meta.clone();
                let new_uid = uid.unwrap_or(meta.uid);
                let new_gid = gid.unwrap_or(meta.gid);
                if g.uid != 0
                    && (new_uid != meta.uid
                        || meta.uid != g.uid
                        || (new_gid != meta.gid && new_gid != g.gid))
                {
                    return Err(err(Errno::PERM));
                }
                if (new_uid, new_gid) != (meta.uid, meta.gid) && g.live.get(ino).data().is_some() {
                    meta.mode &= !0o6000;
                }
                meta.uid = new_uid;
                meta.gid = new_gid;
                g.set_meta(ino, meta);
                Ok(())
            },
        )
    }

    fn list_xattr(&self, file: &Fd) -> io::Result<Vec<OsString>> {
        self.call(
            CallKind::ListXattr,
            |g| format!("({})", g.hpath(file)),
            |g, _| {
                let ino = g.handle(file)?.ino;
                Ok(g.live.get(ino).meta.xattrs.keys().cloned().collect())
            },
        )
    }

    fn get_xattr(&self, file: &Fd, name: &OsStr) -> io::Result<Vec<u8>> {
        self.call(
            CallKind::GetXattr,
            |g| format!("({}, {})", g.hpath(file), show(name)),
            |g, _| {
                let ino = g.handle(file)?.ino;
                g.live
                    .get(ino)
                    .meta
                    .xattrs
                    .get(name)
                    .cloned()
                    .ok_or_else(|| err(Errno::NODATA))
            },
        )
    }

    fn list_xattr_at(&self, at: &Fd, name: &OsStr) -> io::Result<Vec<OsString>> {
        self.call(
            CallKind::ListXattrAt,
            |g| format!("({}, {})", g.hpath(at), show(name)),
            |g, _| {
                let (dir, _) = g.dir_of(at)?;
                let ino = g.resolve(dir, Path::new(name), false)?;
                Ok(g.live.get(ino).meta.xattrs.keys().cloned().collect())
            },
        )
    }

    fn get_xattr_at(&self, at: &Fd, name: &OsStr, attr: &OsStr) -> io::Result<Vec<u8>> {
        self.call(
            CallKind::GetXattrAt,
            |g| format!("({}, {}, {})", g.hpath(at), show(name), show(attr)),
            |g, _| {
                let (dir, _) = g.dir_of(at)?;
                let ino = g.resolve(dir, Path::new(name), false)?;
                g.live
                    .get(ino)
                    .meta
                    .xattrs
                    .get(attr)
                    .cloned()
                    .ok_or_else(|| err(Errno::NODATA))
            },
        )
    }

    fn set_xattr(&self, file: &Fd, name: &OsStr, value: &[u8]) -> io::Result<()> {
        self.call(
            CallKind::SetXattr,
            |g| format!("({}, {}, {} bytes)", g.hpath(file), show(name), value.len()),
            |g, _| {
                let ino = g.handle(file)?.ino;
                let n = name.as_bytes();
                if n.starts_with(b"trusted.") || n.starts_with(b"security.capability") {
                    if g.uid != 0 {
                        return Err(err(Errno::PERM));
                    }
                } else if !(n.starts_with(b"user.")
                    || n.starts_with(b"security.")
                    || n.starts_with(b"system."))
                {
                    return Err(err(Errno::NOTSUP));
                }
                let mut meta = g.live.get(ino).meta.clone();
                meta.xattrs.insert(name.to_os_string(), value.to_vec());
                g.set_meta(ino, meta);
                Ok(())
            },
        )
    }

    fn lock(&self, file: &Fd, mode: LockMode, wait: bool) -> io::Result<bool> {
        self.call(
            CallKind::Lock,
            |g| format!("({}, {mode:?}, wait={wait})", g.hpath(file)),
            |g, _| {
                let id = file.virtual_id().ok_or_else(|| err(Errno::BADF))?;
                let ino = g.handle(file)?.ino;
                let holders = g.locks.entry(ino).or_default();
                let conflict = holders.iter().any(|&(h, m)| {
                    h != id && (m == LockMode::Exclusive || mode == LockMode::Exclusive)
                });
                if conflict {
                    // One process, one thread: waiting would never end.
                    return if wait {
                        Err(err(Errno::DEADLK))
                    } else {
                        Ok(false)
                    };
                }
                holders.retain(|&(h, _)| h != id);
                holders.push((id, mode));
                Ok(true)
            },
        )
    }

    fn unlock(&self, file: &Fd) -> io::Result<()> {
        self.call(
            CallKind::Unlock,
            |g| format!("({})", g.hpath(file)),
            |g, _| {
                let id = file.virtual_id().ok_or_else(|| err(Errno::BADF))?;
                let ino = g.handle(file)?.ino;
                if let Some(holders) = g.locks.get_mut(&ino) {
                    holders.retain(|&(h, _)| h != id);
                }
                Ok(())
            },
        )
    }

    fn read_dir(&self, dir: &Fd) -> io::Result<Vec<DirEntry>> {
        self.call(
            CallKind::ReadDir,
            |g| format!("({})", g.hpath(dir)),
            |g, _| {
                let (d, _) = g.dir_of(dir)?;
                let entries = g.live.get(d).entries().expect("dir");
                Ok(entries
                    .iter()
                    .map(|(name, ino)| DirEntry {
                        name: name.clone(),
                        kind: g.live.get(*ino).kind(),
                    })
                    .collect())
            },
        )
    }

    fn caps(&self) -> fstx::storage::Caps {
        let g = self.lock();
        g.reported_kernel.unwrap_or(g.kernel).caps()
    }

    fn random(&self) -> io::Result<u64> {
        self.call(
            CallKind::Random,
            |_| String::new(),
            |g, _| Ok(g.rng.next_u64()),
        )
    }
}
