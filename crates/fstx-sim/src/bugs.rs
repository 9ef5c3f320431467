//! Planted flush bugs as a storage wrapper.
//!
//! Each [`FlushBug`] is a mistake of the kind people make with the classic
//! recipe: a flush left out, a flush issued too late, a failed flush retried
//! into a success. They need no branch in fstx's protocols: [`Buggy`] wraps
//! any [`Storage`] (the simulator, or the real filesystem for the power-cut
//! experiment) and omits, defers or retries the calls the protocol makes, so
//! the same tests that check fstx show that their checks catch the bug.
//!
//! `Buggy` hands out handles of its own and maps each to the wrapped
//! storage's handle, remembering the name it was opened under; that is how
//! it tells a temporary file, a staged file, the journal and a directory
//! apart. What it recognises is fstx's naming ([`fstx::internal_name`]).

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use fstx::storage::{Caps, Create, DirEntry, Fd, LockMode, OpenHow, Stat, Storage, SyncKind};
use fstx::InternalName;

/// One planted flush bug. See the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlushBug {
    /// Skip the flush of every temporary file (the 2002 recipe: rename
    /// without `fsync` of the new file).
    NoFileSync,
    /// Skip the directory flush right after a temporary file is renamed
    /// into it (on btrfs the `syncfs` that stands for it too).
    NoDirSync,
    /// Retry a failed file flush once and report the retry's result (on
    /// Linux the retry "succeeds" after the pages were marked clean, with
    /// the data lost).
    RetryFsync,
    /// Skip the directory flush right after a backup is made (a hard link,
    /// or a rename to the backup name), so a power cut can keep the replace
    /// and lose the backup.
    BackupNoDirSync,
    /// Skip the flush of a backup's copy before it is renamed to the backup
    /// name (a power cut can leave a torn backup).
    BackupCopyNoSync,
    /// On btrfs, make names durable with `fsync` of the directory instead
    /// of the `syncfs` that commits the btrfs transaction: every `syncfs`
    /// becomes an `fsync` of the handle it was given.
    NoBtrfsCommit,
    /// Skip the directory flushes of a transaction between its first staged
    /// file and its first rename into place: the commit round's flushes of
    /// the staging directories and `.fstx-txn/` (per-file flush modes; a
    /// `syncfs` round flushes them anyway).
    NoStageDirFlush,
    /// Flush staged files only after the commit round, once the first one
    /// was renamed into place (per-file flush modes; a `syncfs` round would
    /// carry the data with it). The commit round flushes the commit record
    /// and the data together, in any order; applying before the data is
    /// durable is the bug.
    CommitBeforeDataFlush,
    /// Write staged files' data only after the commit round, once the
    /// first one was renamed into place (then write and flush it): no flush
    /// mode hides this one.
    CommitBeforeDataWrite,
    /// Give a temporary file its mode, owner and xattrs only after it was
    /// renamed over the target (after its flush), so a power cut can leave
    /// the new content with the temporary file's metadata.
    MetaAfterRename,
}

impl FlushBug {
    /// Every flush bug.
    pub const ALL: [FlushBug; 10] = [
        FlushBug::NoFileSync,
        FlushBug::NoDirSync,
        FlushBug::RetryFsync,
        FlushBug::BackupNoDirSync,
        FlushBug::BackupCopyNoSync,
        FlushBug::NoBtrfsCommit,
        FlushBug::NoStageDirFlush,
        FlushBug::CommitBeforeDataFlush,
        FlushBug::CommitBeforeDataWrite,
        FlushBug::MetaAfterRename,
    ];

    /// The name used in workload names (`replace/durable+no_file_sync`).
    pub fn name(self) -> &'static str {
        match self {
            FlushBug::NoFileSync => "no_file_sync",
            FlushBug::NoDirSync => "no_dir_sync",
            FlushBug::RetryFsync => "retry_fsync",
            FlushBug::BackupNoDirSync => "backup_no_dir_sync",
            FlushBug::BackupCopyNoSync => "backup_copy_no_sync",
            FlushBug::NoBtrfsCommit => "no_btrfs_commit",
            FlushBug::NoStageDirFlush => "no_stage_dir_flush",
            FlushBug::CommitBeforeDataFlush => "commit_before_data_flush",
            FlushBug::CommitBeforeDataWrite => "commit_before_data_write",
            FlushBug::MetaAfterRename => "meta_after_rename",
        }
    }

    /// Parses [`name`](Self::name).
    pub fn parse(s: &str) -> Option<FlushBug> {
        FlushBug::ALL.into_iter().find(|b| b.name() == s)
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// A set of [`FlushBug`]s (empty by default: no bug).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FlushBugs(u16);

impl FlushBugs {
    /// No bug.
    pub const NONE: FlushBugs = FlushBugs(0);

    /// The set holding `bug` only.
    pub fn one(bug: FlushBug) -> FlushBugs {
        FlushBugs(bug.bit())
    }

    /// This set with `bug` added.
    #[must_use]
    pub fn with(self, bug: FlushBug) -> FlushBugs {
        FlushBugs(self.0 | bug.bit())
    }

    /// Whether `bug` is in the set.
    pub fn has(self, bug: FlushBug) -> bool {
        self.0 & bug.bit() != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The bugs in the set, in [`FlushBug::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = FlushBug> {
        FlushBug::ALL.into_iter().filter(move |b| self.has(*b))
    }

    /// `storage`, wrapped so that it plants these bugs; `storage` itself
    /// when the set is empty.
    pub fn wrap(self, storage: Arc<dyn Storage>) -> Arc<dyn Storage> {
        if self.is_empty() {
            storage
        } else {
            Buggy::new(storage, self)
        }
    }
}

/// What a handle was opened as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// `control`: a transaction root's `.fstx-txn`.
    Dir {
        control: bool,
    },
    /// A temporary file; `backup`: one made for a backup name.
    Temp {
        backup: bool,
    },
    Staged,
    Journal,
    Other,
}

struct Handle {
    inner: Arc<Fd>,
    role: Role,
    /// Closed by the caller while a deferred flush or write still needs it.
    closed: bool,
}

/// The last name-changing call, for the directory-flush bugs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LastChange {
    None,
    /// A temporary file renamed into the directory with this handle id.
    TempRenamedInto(u64),
    /// A backup made (link, or rename to a backup name) in this directory.
    BackupMade(u64),
}

#[derive(Default)]
struct Transaction {
    /// A staged file was created since the journal was (re)created.
    staging: bool,
    /// A staged file was renamed into place (the transaction is applying).
    applying: bool,
    /// Staged files whose flush is held back ([`FlushBug::CommitBeforeDataFlush`]).
    held_syncs: Vec<u64>,
    /// Staged data held back ([`FlushBug::CommitBeforeDataWrite`]): handle, offset, bytes.
    held_writes: Vec<(u64, u64, Vec<u8>)>,
}

/// A metadata change held back ([`FlushBug::MetaAfterRename`]).
enum MetaChange {
    Chmod(u32),
    Chown(Option<u32>, Option<u32>),
    SetXattr(OsString, Vec<u8>),
}

struct State {
    next: u64,
    /// Held metadata changes of temporary files, by handle.
    held_meta: Vec<(u64, MetaChange)>,
    handles: HashMap<u64, Handle>,
    last: LastChange,
    txn: Transaction,
}

/// A storage that plants [`FlushBug`]s into the calls made through it.
pub struct Buggy {
    inner: Arc<dyn Storage>,
    bugs: FlushBugs,
    state: Arc<Mutex<State>>,
    on_close: Arc<dyn Fn(u64) + Send + Sync>,
}

impl fmt::Debug for Buggy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Buggy")
            .field("bugs", &self.bugs)
            .finish_non_exhaustive()
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

fn stale() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "a handle unknown to the bug wrapper",
    )
}

/// Whether a backup name: the default suffix `~` (and its generations `~2`...).
fn is_backup_name(name: &OsStr) -> bool {
    name.to_string_lossy().contains('~')
}

impl Buggy {
    /// Wraps `inner`, planting `bugs`.
    pub fn new(inner: Arc<dyn Storage>, bugs: FlushBugs) -> Arc<Buggy> {
        let state = Arc::new(Mutex::new(State {
            next: 1,
            held_meta: Vec::new(),
            handles: HashMap::new(),
            last: LastChange::None,
            txn: Transaction::default(),
        }));
        let weak: Weak<Mutex<State>> = Arc::downgrade(&state);
        let on_close: Arc<dyn Fn(u64) + Send + Sync> = Arc::new(move |id| {
            if let Some(state) = weak.upgrade() {
                let mut g = lock(&state);
                let held = g.txn.held_syncs.contains(&id)
                    || g.held_meta.iter().any(|(h, _)| *h == id)
                    || g.txn.held_writes.iter().any(|(h, _, _)| *h == id);
                if held {
                    if let Some(h) = g.handles.get_mut(&id) {
                        h.closed = true;
                    }
                } else {
                    g.handles.remove(&id);
                }
            }
        });
        Arc::new(Buggy {
            inner,
            bugs,
            state,
            on_close,
        })
    }

    fn has(&self, bug: FlushBug) -> bool {
        self.bugs.has(bug)
    }

    fn handle(&self, fd: &Fd) -> io::Result<(Arc<Fd>, Role, u64)> {
        let id = fd.virtual_id().ok_or_else(stale)?;
        let g = lock(&self.state);
        let h = g.handles.get(&id).ok_or_else(stale)?;
        Ok((h.inner.clone(), h.role, id))
    }

    fn inner_of(&self, fd: &Fd) -> io::Result<Arc<Fd>> {
        self.handle(fd).map(|(inner, _, _)| inner)
    }

    fn register(&self, inner: Fd, role: Role) -> Fd {
        let mut g = lock(&self.state);
        let id = g.next;
        g.next += 1;
        if role == Role::Journal {
            g.txn = Transaction::default();
        }
        if role == Role::Staged {
            g.txn.staging = true;
        }
        g.handles.insert(
            id,
            Handle {
                inner: Arc::new(inner),
                role,
                closed: false,
            },
        );
        Fd::from_virtual(id, self.on_close.clone())
    }

    /// After the first staged file was renamed into place: the deferred
    /// data and flushes.
    fn release_held(&self) {
        let (writes, syncs, handles) = {
            let mut g = lock(&self.state);
            let writes = std::mem::take(&mut g.txn.held_writes);
            let mut syncs = std::mem::take(&mut g.txn.held_syncs);
            syncs.extend(writes.iter().map(|(h, _, _)| *h));
            syncs.sort_unstable();
            syncs.dedup();
            let handles: HashMap<u64, Arc<Fd>> = syncs
                .iter()
                .filter_map(|id| g.handles.get(id).map(|h| (*id, h.inner.clone())))
                .collect();
            (writes, syncs, handles)
        };
        for (id, offset, bytes) in writes {
            if let Some(fd) = handles.get(&id) {
                let _ = fstx::storage::write_all_at(&*self.inner, fd, &bytes, offset);
            }
        }
        for id in &syncs {
            if let Some(fd) = handles.get(id) {
                let _ = self.inner.sync(fd, SyncKind::All);
            }
        }
        let mut g = lock(&self.state);
        for id in syncs {
            if g.handles.get(&id).is_some_and(|h| h.closed) {
                g.handles.remove(&id);
            }
        }
    }

    /// Holds back a metadata change of a temporary file
    /// ([`FlushBug::MetaAfterRename`]); whether it was held.
    fn hold_meta(&self, file: &Fd, change: MetaChange) -> io::Result<bool> {
        let (_, role, id) = self.handle(file)?;
        if !self.has(FlushBug::MetaAfterRename) || !matches!(role, Role::Temp { .. }) {
            return Ok(false);
        }
        lock(&self.state).held_meta.push((id, change));
        Ok(true)
    }

    /// After a temporary file was renamed: its held metadata changes.
    fn release_meta(&self) {
        let held: Vec<(Arc<Fd>, MetaChange)> = {
            let mut g = lock(&self.state);
            let held = std::mem::take(&mut g.held_meta);
            let ids: Vec<u64> = held.iter().map(|(id, _)| *id).collect();
            let out = held
                .into_iter()
                .filter_map(|(id, c)| g.handles.get(&id).map(|h| (h.inner.clone(), c)))
                .collect();
            for id in ids {
                if g.handles.get(&id).is_some_and(|h| h.closed) {
                    g.handles.remove(&id);
                }
            }
            out
        };
        for (fd, change) in held {
            let _ = match change {
                MetaChange::Chmod(mode) => self.inner.chmod(&fd, mode),
                MetaChange::Chown(uid, gid) => self.inner.chown(&fd, uid, gid),
                MetaChange::SetXattr(name, value) => self.inner.set_xattr(&fd, &name, &value),
            };
        }
    }

    /// Whether a directory flush of `dir` is to be left out.
    fn skip_dir_flush(&self, dir: u64) -> bool {
        let mut g = lock(&self.state);
        let last = std::mem::replace(&mut g.last, LastChange::None);
        (self.has(FlushBug::NoDirSync) && last == LastChange::TempRenamedInto(dir))
            || (self.has(FlushBug::BackupNoDirSync) && last == LastChange::BackupMade(dir))
            || (self.has(FlushBug::NoStageDirFlush) && g.txn.staging && !g.txn.applying)
    }
}

impl Storage for Buggy {
    fn open_dir(&self, at: Option<&Fd>, path: &Path, follow: bool) -> io::Result<Fd> {
        let at = at.map(|a| self.inner_of(a)).transpose()?;
        let fd = self.inner.open_dir(at.as_deref(), path, follow)?;
        let control = path.file_name().and_then(fstx::internal_name) == Some(InternalName::Control);
        Ok(self.register(fd, Role::Dir { control }))
    }

    fn open(&self, at: &Fd, name: &OsStr, how: OpenHow) -> io::Result<Fd> {
        let (dir, dir_role, _) = self.handle(at)?;
        let fd = self.inner.open(&dir, name, how)?;
        let role = match fstx::internal_name(name) {
            Some(InternalName::Temp) => Role::Temp {
                backup: fstx::internal_target(name).is_some_and(is_backup_name),
            },
            Some(InternalName::Staged) => Role::Staged,
            // A new journal in the control directory: a transaction begins.
            _ if name == "journal"
                && dir_role == (Role::Dir { control: true })
                && matches!(how.create, Create::New(_)) =>
            {
                Role::Journal
            }
            _ => Role::Other,
        };
        Ok(self.register(fd, role))
    }

    fn read_at(&self, file: &Fd, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.inner.read_at(&*self.inner_of(file)?, buf, offset)
    }

    fn write_at(&self, file: &Fd, buf: &[u8], offset: u64) -> io::Result<usize> {
        let (inner, role, id) = self.handle(file)?;
        {
            let mut g = lock(&self.state);
            if role == Role::Staged && self.has(FlushBug::CommitBeforeDataWrite) {
                // PLANTED: held back until the commit record is flushed.
                g.txn.held_writes.push((id, offset, buf.to_vec()));
                return Ok(buf.len());
            }
        }
        self.inner.write_at(&inner, buf, offset)
    }

    fn end_offset(&self, file: &Fd) -> io::Result<u64> {
        self.inner.end_offset(&*self.inner_of(file)?)
    }

    fn set_len(&self, file: &Fd, len: u64) -> io::Result<()> {
        self.inner.set_len(&*self.inner_of(file)?, len)
    }

    fn sync(&self, file: &Fd, kind: SyncKind) -> io::Result<()> {
        let (inner, role, id) = self.handle(file)?;
        match role {
            Role::Temp { .. } if self.has(FlushBug::NoFileSync) => return Ok(()),
            Role::Temp { backup: true } if self.has(FlushBug::BackupCopyNoSync) => return Ok(()),
            Role::Dir { .. } if self.skip_dir_flush(id) => return Ok(()),
            Role::Staged if self.has(FlushBug::CommitBeforeDataFlush) => {
                lock(&self.state).txn.held_syncs.push(id);
                return Ok(());
            }
            Role::Staged if self.has(FlushBug::CommitBeforeDataWrite) => {
                // Its data is not written yet: flushed when it is.
                return Ok(());
            }
            _ => {}
        }
        let result = self.inner.sync(&inner, kind);
        match result {
            Err(_) if !matches!(role, Role::Dir { .. }) && self.has(FlushBug::RetryFsync) => {
                // PLANTED: the retry reports success on Linux, data lost.
                self.inner.sync(&inner, kind)
            }
            r => r,
        }
    }

    fn sync_fs(&self, file: &Fd) -> io::Result<()> {
        let (inner, role, id) = self.handle(file)?;
        if matches!(role, Role::Dir { .. }) && self.skip_dir_flush(id) {
            return Ok(());
        }
        if self.has(FlushBug::NoBtrfsCommit) {
            return self.inner.sync(&inner, SyncKind::All);
        }
        self.inner.sync_fs(&inner)
    }

    fn stat(&self, file: &Fd) -> io::Result<Stat> {
        self.inner.stat(&*self.inner_of(file)?)
    }

    fn stat_at(&self, at: &Fd, name: &OsStr, follow: bool) -> io::Result<Stat> {
        self.inner.stat_at(&*self.inner_of(at)?, name, follow)
    }

    fn fs_type(&self, file: &Fd) -> io::Result<u64> {
        self.inner.fs_type(&*self.inner_of(file)?)
    }

    fn rename_at(
        &self,
        from_dir: &Fd,
        from: &OsStr,
        to_dir: &Fd,
        to: &OsStr,
        noreplace: bool,
    ) -> io::Result<()> {
        let (fd, _, _) = self.handle(from_dir)?;
        let (td, _, to_id) = self.handle(to_dir)?;
        self.inner.rename_at(&fd, from, &td, to, noreplace)?;
        if fstx::internal_name(from) == Some(InternalName::Temp) {
            self.release_meta();
        }
        if fstx::internal_name(from) == Some(InternalName::Staged) {
            // The first staged file is in place: the held data follows.
            lock(&self.state).txn.applying = true;
            self.release_held();
        }
        let mut g = lock(&self.state);
        g.last = if is_backup_name(to) {
            LastChange::BackupMade(to_id)
        } else if fstx::internal_name(from) == Some(InternalName::Temp) {
            LastChange::TempRenamedInto(to_id)
        } else {
            LastChange::None
        };
        Ok(())
    }

    fn link_at(&self, from_dir: &Fd, from: &OsStr, to_dir: &Fd, to: &OsStr) -> io::Result<()> {
        let (fd, _, _) = self.handle(from_dir)?;
        let (td, _, to_id) = self.handle(to_dir)?;
        self.inner.link_at(&fd, from, &td, to)?;
        lock(&self.state).last = LastChange::BackupMade(to_id);
        Ok(())
    }

    fn unlink_at(&self, at: &Fd, name: &OsStr, dir: bool) -> io::Result<()> {
        self.inner.unlink_at(&*self.inner_of(at)?, name, dir)
    }

    fn mkdir_at(&self, at: &Fd, name: &OsStr, mode: u32) -> io::Result<()> {
        self.inner.mkdir_at(&*self.inner_of(at)?, name, mode)
    }

    fn read_link_at(&self, at: &Fd, name: &OsStr) -> io::Result<PathBuf> {
        self.inner.read_link_at(&*self.inner_of(at)?, name)
    }

    fn chmod(&self, file: &Fd, mode: u32) -> io::Result<()> {
        if self.hold_meta(file, MetaChange::Chmod(mode))? {
            return Ok(());
        }
        self.inner.chmod(&*self.inner_of(file)?, mode)
    }

    fn chown(&self, file: &Fd, uid: Option<u32>, gid: Option<u32>) -> io::Result<()> {
        if self.hold_meta(file, MetaChange::Chown(uid, gid))? {
            return Ok(());
        }
        self.inner.chown(&*self.inner_of(file)?, uid, gid)
    }

    fn list_xattr(&self, file: &Fd) -> io::Result<Vec<OsString>> {
        self.inner.list_xattr(&*self.inner_of(file)?)
    }

    fn get_xattr(&self, file: &Fd, name: &OsStr) -> io::Result<Vec<u8>> {
        self.inner.get_xattr(&*self.inner_of(file)?, name)
    }

    fn list_xattr_at(&self, at: &Fd, name: &OsStr) -> io::Result<Vec<OsString>> {
        self.inner.list_xattr_at(&*self.inner_of(at)?, name)
    }

    fn get_xattr_at(&self, at: &Fd, name: &OsStr, attr: &OsStr) -> io::Result<Vec<u8>> {
        self.inner.get_xattr_at(&*self.inner_of(at)?, name, attr)
    }

    fn set_xattr(&self, file: &Fd, name: &OsStr, value: &[u8]) -> io::Result<()> {
        let change = MetaChange::SetXattr(name.to_os_string(), value.to_vec());
        if self.hold_meta(file, change)? {
            return Ok(());
        }
        self.inner.set_xattr(&*self.inner_of(file)?, name, value)
    }

    fn lock(&self, file: &Fd, mode: LockMode, wait: bool) -> io::Result<bool> {
        self.inner.lock(&*self.inner_of(file)?, mode, wait)
    }

    fn unlock(&self, file: &Fd) -> io::Result<()> {
        self.inner.unlock(&*self.inner_of(file)?)
    }

    fn read_dir(&self, dir: &Fd) -> io::Result<Vec<DirEntry>> {
        self.inner.read_dir(&*self.inner_of(dir)?)
    }

    fn random(&self) -> io::Result<u64> {
        self.inner.random()
    }

    fn caps(&self) -> Caps {
        self.inner.caps()
    }
}
