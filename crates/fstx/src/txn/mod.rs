//! Multi-file transactions under one root directory: every change or none,
//! whenever the power is cut.
//!
//! A [`Transaction`] stages writes, removals, renames and new directories,
//! then [`commit`](Transaction::commit)s them with a checksummed redo
//! journal. After a crash, recovery (run automatically by the next
//! [`Transaction::begin`] or [`Snapshot::open`], or by [`crate::recover`])
//! redoes a committed transaction to completion or removes the staging of an
//! uncommitted one. [`Snapshot`] gives readers a consistent view between
//! transactions.
//!
//! # The commit protocol
//!
//! The root holds a control directory `.fstx-txn/` with two lock files
//! (`lock` for writers, `view` for readers), the `journal` while a
//! transaction is in flight, and `retired`, the last applied journal.
//!
//! 1. **Begin**: take `lock` exclusively (writers are serialized), recover
//!    whatever a dead writer left, read the last sequence number from
//!    `retired`.
//! 2. **Intent** (before the first staged file, flush round R0): create
//!    `journal` holding a BEGIN record; flush it and `.fstx-txn/`. From now on
//!    a crash leaves a marker telling recovery to look for staging.
//! 3. **Stage**: each new file is written to `.fstx-stage.<random>.<name>`
//!    beside its target (in the nearest existing ancestor when the target's
//!    directory is new), with the target's metadata, and handed to the
//!    flusher threads at once.
//! 4. **R1**: wait for the staged files' flushes; flush every staging
//!    directory (and `.fstx-txn/`) concurrently.
//! 5. **Commit point (R2)**: take `view` exclusively, overwrite `journal`
//!    with the COMMIT record (every operation, each staged file's length and
//!    CRC-32C, the sequence number) and `fdatasync` it.
//! 6. **Apply**: create directories, rename, rename staged files over their
//!    targets, remove; each step idempotent. **R3**: flush every touched
//!    directory once, concurrently.
//! 7. **Retire (R4)**: rename `journal` to `retired` and flush `.fstx-txn/`;
//!    release `view` and `lock`.
//!
//! Five flush rounds whatever the number of files N and directories D
//! (four without new file content); `docs/design-txn.md` has the decision
//! table and the tests behind every claim.

mod flush;
pub mod journal;
mod recovery;

use std::collections::{BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::io::{self, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

pub use flush::{Flush, DEFAULT_FLUSH_THREADS};
pub use journal::RelPath;
pub(crate) use recovery::{recover_root, RootState};
pub use recovery::{TxnOutcome, TxnRecovery};

use crate::atomic::Durability;
use crate::error::{invalid, Error, Result, State, Step};
use crate::names::{is_temp_name, temp_name};
use crate::storage::{self, Create, Fd, FileKind, LockMode, OpenHow, Stat, Storage, SyncKind};
use flush::Flusher;
use journal::{Kind, Op, Record};

/// Name of the control directory inside a transaction root.
pub const CONTROL_DIR: &str = ".fstx-txn";
/// Prefix of staged files: `.fstx-stage.<16 hex digits>.<name>`.
pub const STAGE_PREFIX: &str = ".fstx-stage.";
pub(crate) const LOCK_FILE: &str = "lock";
pub(crate) const VIEW_FILE: &str = "view";
pub(crate) const JOURNAL_FILE: &str = "journal";
pub(crate) const RETIRED_FILE: &str = "retired";

/// Whether `name` is a staged file's name.
pub fn is_stage_name(name: &OsStr) -> bool {
    is_temp_name(STAGE_PREFIX, name)
}

/// Deliberate protocol bugs for the transaction protocol, compiled in only
/// with the `planted-bugs` feature, so tests and simulators can show their
/// checks catch them.
#[cfg(feature = "planted-bugs")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TxnBugs {
    /// Write and flush the commit record before the staged files' data is
    /// flushed (the data is flushed only after the commit point). Forces
    /// per-file flushes: one `syncfs` round could not leave the data out.
    pub commit_before_data_flush: bool,
    /// Write the staged files' data only after the commit record is written
    /// and flushed (the data is held in memory until then, then written and
    /// flushed). Unlike `commit_before_data_flush`, no filesystem can hide
    /// this one by carrying the data with the record's flush (ext4
    /// `data=journal` does that).
    pub commit_before_data_write: bool,
    /// Do not flush the staging directories (nor `.fstx-txn/`) before the
    /// commit record.
    pub no_stage_dir_flush: bool,
    /// Redo renames staged files into place without checking their length
    /// and checksum against the record.
    pub trust_staged: bool,
    /// Retire without flushing `.fstx-txn/`; after the first transaction,
    /// assume `.fstx-txn/` durable and skip its flush in R0/R1 (otherwise
    /// that flush makes the previous retirement durable and nothing can be
    /// replayed over a later transaction); let recovery ignore sequence
    /// numbers. A retired journal can then shadow a later transaction's and
    /// be replayed over it.
    pub replay_retired: bool,
    /// Recovery sweeps every staged file before looking at the journal, so
    /// a committed transaction's staging is removed before it is retired.
    pub sweep_staging_first: bool,
}

#[cfg(not(feature = "planted-bugs"))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct TxnBugs;

macro_rules! bug {
    ($bugs:expr, $name:ident) => {{
        #[cfg(feature = "planted-bugs")]
        let on = $bugs.$name;
        #[cfg(not(feature = "planted-bugs"))]
        let on = {
            let _ = &$bugs;
            false
        };
        on
    }};
}
pub(crate) use bug;

/// A point in the commit protocol, reported to an observer set with
/// [`TxnOptions::on_phase`] (progress reporting, tests that stop a writer in
/// a given phase).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Every staged file and directory entry is flushed; the commit record
    /// is about to be written. A crash now rolls back.
    Staged,
    /// The commit record is durable; applying is about to start. A crash
    /// now is finished by recovery.
    Committed,
    /// Applied and flushed; the journal is about to be retired.
    Applied,
}

/// An observer of [`Phase`]s.
#[derive(Clone)]
pub struct PhaseHook(Arc<dyn Fn(Phase) + Send + Sync>);

impl std::fmt::Debug for PhaseHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PhaseHook")
    }
}

/// Options for transactions and snapshots on one root.
#[derive(Debug, Clone)]
pub struct TxnOptions {
    on_phase: Option<PhaseHook>,
    durability: Durability,
    flush: Flush,
    allow_weak_fs: bool,
    wait: bool,
    preserve_metadata: bool,
    preserve_xattrs: bool,
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) bugs: TxnBugs,
}

impl Default for TxnOptions {
    fn default() -> TxnOptions {
        TxnOptions::new()
    }
}

impl TxnOptions {
    /// Defaults: durable, concurrent flushes, wait for the writer lock,
    /// carry owner, group, mode and extended attributes of replaced files.
    #[allow(clippy::default_constructed_unit_structs)] // without `planted-bugs`
    pub fn new() -> TxnOptions {
        TxnOptions {
            on_phase: None,
            durability: Durability::Durable,
            flush: Flush::Auto,
            allow_weak_fs: false,
            wait: true,
            preserve_metadata: true,
            preserve_xattrs: true,
            storage: storage::os(),
            bugs: TxnBugs::default(),
        }
    }

    /// [`Durability::Durable`] (default; `Consistent` is treated the same:
    /// a transaction needs every flush to stay atomic) or
    /// [`Durability::None`] (no flushes: atomic for other processes only,
    /// not crash-safe; for tmpfs and tests).
    pub fn durability(&mut self, d: Durability) -> &mut TxnOptions {
        self.durability = d;
        self
    }

    /// How many files are flushed at once (default [`Flush::Auto`]).
    pub fn flush(&mut self, f: Flush) -> &mut TxnOptions {
        self.flush = f;
        self
    }

    /// Accept filesystems where rename is not crash-atomic (default `false`).
    pub fn allow_weak_filesystems(&mut self, yes: bool) -> &mut TxnOptions {
        self.allow_weak_fs = yes;
        self
    }

    /// Wait for the writer lock (default) or fail at once with
    /// [`io::ErrorKind::WouldBlock`] when another transaction holds it.
    pub fn wait(&mut self, yes: bool) -> &mut TxnOptions {
        self.wait = yes;
        self
    }

    /// Carry an existing target's owner, group and mode to its new content
    /// (default `true`).
    pub fn preserve_metadata(&mut self, yes: bool) -> &mut TxnOptions {
        self.preserve_metadata = yes;
        self
    }

    /// Carry extended attributes (default `true`).
    pub fn preserve_xattrs(&mut self, yes: bool) -> &mut TxnOptions {
        self.preserve_xattrs = yes;
        self
    }

    /// Calls `f` at each [`Phase`] of a commit, in the committing thread.
    pub fn on_phase(&mut self, f: impl Fn(Phase) + Send + Sync + 'static) -> &mut TxnOptions {
        self.on_phase = Some(PhaseHook(Arc::new(f)));
        self
    }

    fn phase(&self, p: Phase) {
        if let Some(h) = &self.on_phase {
            (h.0)(p);
        }
    }

    /// Routes every filesystem call through `storage`.
    pub fn storage(&mut self, storage: Arc<dyn Storage>) -> &mut TxnOptions {
        self.storage = storage;
        self
    }

    /// Plants deliberate protocol bugs (tests only).
    #[cfg(feature = "planted-bugs")]
    pub fn planted_bugs(&mut self, bugs: TxnBugs) -> &mut TxnOptions {
        self.bugs = bugs;
        self
    }

    /// Begins a transaction on `root`. See [`Transaction::begin`].
    pub fn begin(&self, root: impl AsRef<Path>) -> Result<Transaction> {
        Transaction::begin_with(root.as_ref(), self)
    }

    /// Recovers `root` if a transaction was interrupted there (waiting for a
    /// live transaction to finish), with these options' storage and
    /// durability. Returns what it did; `None` if there was nothing to do.
    pub fn recover(&self, root: impl AsRef<Path>) -> Result<Option<TxnRecovery>> {
        let root_path = root.as_ref();
        let st = self.storage.clone();
        let fail = |step, e| Error::new("recover", root_path, step, State::NotCommitted, e);
        let root = Arc::new(
            st.open_dir(None, root_path, true)
                .map_err(|e| fail(Step::OpenRootDirectory, e))?,
        );
        let ctl = match open_control(&*st, &root, false) {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(fail(Step::OpenControlDirectory, e)),
        };
        st.lock(&ctl.lock, LockMode::Exclusive, true)
            .map_err(|e| fail(Step::TakeWriterLock, e))?;
        let mut tree = Tree::new(st.clone(), root);
        let r = recovery::recover_locked(&*st, &mut tree, root_path, &ctl, self, false);
        let _ = st.unlock(&ctl.lock);
        Ok(r?.report)
    }

    /// Opens a consistent read view of `root`. See [`Snapshot::open`].
    pub fn snapshot(&self, root: impl AsRef<Path>) -> Result<Snapshot> {
        Snapshot::open_with(root.as_ref(), self)
    }

    fn durable(&self) -> bool {
        self.durability != Durability::None
    }
}

/// What a committed transaction did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Committed {
    /// The transaction's sequence number.
    pub seq: u64,
    /// Files written.
    pub written: usize,
    /// Files removed.
    pub removed: usize,
    /// Files renamed.
    pub renamed: usize,
    /// Directories created.
    pub dirs_created: usize,
    /// Serial flush rounds (each a set of concurrent flushes) from begin to
    /// the end of commit.
    pub flush_rounds: u32,
    /// fsync-family calls issued from begin to the end of commit.
    pub flush_calls: u64,
}

/// Directory handles by relative path, opened without following symlinks.
pub(crate) struct Tree {
    st: Arc<dyn Storage>,
    dirs: HashMap<RelPath, Arc<Fd>>,
}

impl Tree {
    pub(crate) fn new(st: Arc<dyn Storage>, root: Arc<Fd>) -> Tree {
        let mut dirs = HashMap::new();
        dirs.insert(RelPath::root(), root);
        Tree { st, dirs }
    }

    pub(crate) fn root(&self) -> Arc<Fd> {
        self.dirs[&RelPath::root()].clone()
    }

    /// Opens directory `p` one component at a time, never following a
    /// symlink: everything reached is inside the root.
    pub(crate) fn dir(&mut self, p: &RelPath) -> io::Result<Arc<Fd>> {
        if let Some(d) = self.dirs.get(p) {
            return Ok(d.clone());
        }
        let Some((parent, name)) = p.split_last() else {
            return Ok(self.root());
        };
        let parent = self.dir(&parent)?;
        let fd = match self.st.open_dir(Some(&parent), Path::new(name), false) {
            Ok(fd) => Arc::new(fd),
            Err(e) if is_not_dir(&e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!(
                    "{p} is a symlink or not a directory (transactions never follow symlinks): {e}"
                ),
                ))
            }
            Err(e) => return Err(e),
        };
        self.dirs.insert(p.clone(), fd.clone());
        Ok(fd)
    }
}

fn is_not_dir(e: &io::Error) -> bool {
    e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error())
        || e.raw_os_error() == Some(rustix::io::Errno::NOTDIR.raw_os_error())
}

/// The parent and final name of a path from [`rel_path`] (never the root).
pub(crate) fn split(rel: &RelPath) -> (RelPath, OsString) {
    rel.split_last()
        .map(|(p, n)| (p, n.to_os_string()))
        .unwrap_or_default()
}

/// Parses a caller's path into a confined relative path.
fn rel_path(path: &Path) -> io::Result<RelPath> {
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => parts.push(n.to_os_string()),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(invalid(
                    io::ErrorKind::InvalidInput,
                    "'..' is not allowed in a transaction path",
                ))
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(invalid(
                    io::ErrorKind::InvalidInput,
                    "transaction paths are relative to the root; absolute paths are not allowed",
                ))
            }
        }
    }
    if parts.is_empty() {
        return Err(invalid(
            io::ErrorKind::InvalidInput,
            "empty path (the root itself cannot be changed)",
        ));
    }
    if parts[0] == CONTROL_DIR {
        return Err(invalid(
            io::ErrorKind::InvalidInput,
            "paths under .fstx-txn are reserved for the journal",
        ));
    }
    if parts.iter().any(|p| is_stage_name(p)) {
        return Err(invalid(
            io::ErrorKind::InvalidInput,
            "names starting with .fstx-stage. are reserved for staged files",
        ));
    }
    RelPath::from_components(parts).map_err(|m| invalid(io::ErrorKind::InvalidInput, m))
}

/// The control directory and its locks, opened (and created) under a root.
pub(crate) struct Control {
    pub(crate) dir: Arc<Fd>,
    pub(crate) lock: Fd,
    pub(crate) view: Fd,
    /// Whether the control directory's own entry in the root is not known
    /// to be durable. Always `true` when opened: a `begin` that created
    /// `.fstx-txn/` may have failed before flushing the root, so no later
    /// transaction can tell whether the entry is durable. The first flush
    /// round that makes a journal durable (R0, or R1 without R0) also
    /// flushes the root, concurrently, and clears it.
    pub(crate) needs_root_flush: bool,
    /// The filesystem's `statfs` magic, if `begin` already read it (so that
    /// flushing this directory does not read it again).
    pub(crate) fs_magic: Option<u64>,
}

pub(crate) fn open_control(st: &dyn Storage, root: &Fd, create: bool) -> io::Result<Control> {
    let dir = match st.open_dir(Some(root), Path::new(CONTROL_DIR), false) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
            match st.mkdir_at(root, OsStr::new(CONTROL_DIR), 0o755) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
            st.open_dir(Some(root), Path::new(CONTROL_DIR), false)?
        }
        Err(e) => return Err(e),
    };
    let how = OpenHow {
        read: true,
        write: false,
        create: if create {
            Create::IfMissing(0o644)
        } else {
            Create::No
        },
        truncate: false,
        follow: false,
        nonblock: true,
    };
    let lock = st.open(&dir, OsStr::new(LOCK_FILE), how)?;
    let view = st.open(&dir, OsStr::new(VIEW_FILE), how)?;
    Ok(Control {
        dir: Arc::new(dir),
        lock,
        view,
        needs_root_flush: true,
        fs_magic: None,
    })
}

/// Reads a whole small file through the storage (at most `limit` bytes;
/// longer files are reported as `None`).
pub(crate) fn read_small(
    st: &dyn Storage,
    dir: &Fd,
    name: &str,
    limit: u64,
) -> io::Result<Option<Vec<u8>>> {
    let f = match st.open(dir, OsStr::new(name), OpenHow::READ_NOFOLLOW) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let size = st.stat(&f)?.size;
    if size > limit {
        return Ok(Some(Vec::new()));
    }
    let mut buf = vec![0u8; size as usize];
    let mut off = 0;
    while off < buf.len() {
        let n = st.read_at(&f, &mut buf[off..], off as u64)?;
        if n == 0 {
            buf.truncate(off);
            break;
        }
        off += n;
    }
    Ok(Some(buf))
}

/// A staged file (for cleanup).
#[derive(Debug, Clone)]
struct Staged {
    dir: RelPath,
    name: OsString,
}

/// How a path is used by the transaction (each path at most once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Use {
    File,
    Dir,
}

/// A multi-file transaction. See the [module documentation](self).
///
/// Every path names a file relative to the root; each path may be used by at
/// most one operation of a transaction (as a target, a source or a new
/// directory). Nothing is visible in the tree before
/// [`commit`](Self::commit). Dropping the transaction discards everything
/// staged, best effort; [`abort`](Self::abort) does the same and reports
/// errors.
pub struct Transaction {
    opts: TxnOptions,
    root_path: PathBuf,
    tree: Tree,
    ctl: Control,
    seq: u64,
    txn_id: u64,
    journal: Option<Arc<Fd>>,
    flusher: Flusher,
    rounds: u32,
    uses: HashMap<RelPath, Use>,
    new_dirs: BTreeSet<RelPath>,
    stage_dirs: BTreeSet<RelPath>,
    staged: Vec<Staged>,
    ops: Vec<Op>,
    /// Set when a staged file could not be removed: commit refuses.
    poisoned: Option<PathBuf>,
    /// Staged files whose flush (and, for `commit_before_data_write`,
    /// whose data: empty otherwise) a planted bug delays past the commit point.
    deferred: Vec<(Arc<Fd>, Vec<u8>)>,
    finished: bool,
}

impl std::fmt::Debug for Transaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transaction")
            .field("root", &self.root_path)
            .field("seq", &self.seq)
            .field("ops", &self.ops)
            .finish_non_exhaustive()
    }
}

impl Transaction {
    /// Begins a transaction on `root` with default options: takes the
    /// root's exclusive writer lock (waiting for another transaction to
    /// finish) and first recovers whatever an interrupted transaction left.
    pub fn begin(root: impl AsRef<Path>) -> Result<Transaction> {
        TxnOptions::new().begin(root)
    }

    fn begin_with(root_path: &Path, opts: &TxnOptions) -> Result<Transaction> {
        let st = opts.storage.clone();
        let fail = |step, e| Error::new("begin", root_path, step, State::NotCommitted, e);
        let root = Arc::new(
            st.open_dir(None, root_path, true)
                .map_err(|e| fail(Step::OpenRootDirectory, e))?,
        );
        let fs_magic = if opts.durable() && !opts.allow_weak_fs {
            let magic = crate::fskind::refuse_weak(
                &*st,
                &root,
                "this filesystem cannot make a transaction crash-atomic (vfat/exfat/ntfs or network)",
            )
            .map_err(|(step, e)| fail(step, e))?;
            Some(magic)
        } else {
            None
        };
        let mut ctl =
            open_control(&*st, &root, true).map_err(|e| fail(Step::OpenControlDirectory, e))?;
        ctl.fs_magic = fs_magic;
        match st.lock(&ctl.lock, LockMode::Exclusive, opts.wait) {
            Ok(true) => {}
            Ok(false) => {
                return Err(fail(
                    Step::TakeWriterLock,
                    invalid(
                        io::ErrorKind::WouldBlock,
                        "another transaction holds the root",
                    ),
                ))
            }
            Err(e) => return Err(fail(Step::TakeWriterLock, e)),
        }
        let mut tree = Tree::new(st.clone(), root.clone());
        let last = recovery::recover_locked(&*st, &mut tree, root_path, &ctl, opts, false)?;
        let seq = last.last_seq + 1;
        let txn_id = st
            .random()
            .map_err(|e| fail(Step::GenerateTransactionId, e))?;
        // PLANTED BUG (commit_before_data_flush) needs per-file flushes: a
        // syncfs round would flush the deferred staged data with everything else.
        let flush = match opts.flush {
            Flush::Auto | Flush::SyncFs if bug!(opts.bugs, commit_before_data_flush) => {
                Flush::Threads(DEFAULT_FLUSH_THREADS)
            }
            f => f,
        };
        let flusher = Flusher::new(flush, st.clone(), root, ctl.fs_magic);
        Ok(Transaction {
            opts: opts.clone(),
            root_path: root_path.to_path_buf(),
            tree,
            ctl,
            seq,
            txn_id,
            journal: None,
            flusher,
            rounds: 0,
            uses: HashMap::new(),
            new_dirs: BTreeSet::new(),
            stage_dirs: BTreeSet::new(),
            staged: Vec::new(),
            ops: Vec::new(),
            poisoned: None,
            deferred: Vec::new(),
            finished: false,
        })
    }

    /// The sequence number this transaction will commit under.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root_path
    }

    fn err(&self, op: &'static str, path: &Path, step: Step, e: io::Error) -> Error {
        Error::new(op, &self.root_path.join(path), step, State::NotCommitted, e)
    }

    fn st(&self) -> Arc<dyn Storage> {
        self.opts.storage.clone()
    }

    /// Makes sure directory `dir` exists or is planned (creating the plan
    /// for missing ancestors); returns the nearest existing ancestor (where
    /// staged files go) and whether `dir` itself exists.
    fn plan_dir(&mut self, dir: &RelPath, create: bool) -> io::Result<(RelPath, bool)> {
        let mut existing = RelPath::root();
        let mut missing_from = None;
        let prefixes = (1..=dir.components().len())
            .map(|i| RelPath::from_components(dir.components()[..i].to_vec()))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|m| invalid(io::ErrorKind::InvalidInput, m))?;
        if prefixes
            .iter()
            .any(|p| self.uses.get(p) == Some(&Use::File))
        {
            return Err(invalid(
                io::ErrorKind::InvalidInput,
                "a directory on this path is a file this transaction also changes",
            ));
        }
        for (i, prefix) in prefixes.into_iter().enumerate() {
            let i = i + 1;
            if self.new_dirs.contains(&prefix) {
                missing_from = Some(i);
                break;
            }
            match self.tree.dir(&prefix) {
                Ok(_) => existing = prefix,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    missing_from = Some(i);
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        let Some(from) = missing_from else {
            return Ok((existing, true));
        };
        if !create {
            return Err(invalid(
                io::ErrorKind::NotFound,
                "the directory does not exist",
            ));
        }
        for i in from..=dir.components().len() {
            let prefix = RelPath::from_components(dir.components()[..i].to_vec())
                .map_err(|m| invalid(io::ErrorKind::InvalidInput, m))?;
            if !self.new_dirs.contains(&prefix) {
                self.new_dirs.insert(prefix.clone());
                self.uses.insert(prefix.clone(), Use::Dir);
                self.ops.push(Op::Mkdir {
                    path: prefix,
                    mode: 0o777,
                });
            }
        }
        Ok((existing, false))
    }

    fn claim(&self, p: &RelPath) -> io::Result<()> {
        if self.uses.contains_key(p) {
            return Err(invalid(
                io::ErrorKind::InvalidInput,
                "this path is already used by another operation of the transaction",
            ));
        }
        if self.new_dirs.iter().any(|d| p.is_ancestor_of(d)) {
            return Err(invalid(
                io::ErrorKind::InvalidInput,
                "this path is a directory the transaction creates",
            ));
        }
        Ok(())
    }

    /// PLANTED BUG (`replay_retired`): after the first transaction on a
    /// root, the control directory is assumed durable and not flushed.
    fn ctl_assumed_durable(&self) -> bool {
        bug!(self.opts.bugs, replay_retired) && self.seq > 1
    }

    /// Writes the BEGIN record before the first staged file (flush round R0).
    fn ensure_intent(&mut self) -> io::Result<()> {
        if self.journal.is_some() {
            return Ok(());
        }
        let st = self.st();
        let rec = Record {
            kind: Kind::Begin,
            seq: self.seq,
            txn_id: self.txn_id,
            ops: Vec::new(),
        }
        .encode()
        .map_err(|m| invalid(io::ErrorKind::InvalidData, m))?;
        let f = self.create_journal()?;
        write_all_at(&*st, &f, &rec, 0)?;
        if self.opts.durable() {
            let mut set = vec![(f.clone(), SyncKind::All)];
            if !self.ctl_assumed_durable() {
                set.push((self.ctl.dir.clone(), SyncKind::All));
                if self.ctl.needs_root_flush {
                    set.push((self.tree.root(), SyncKind::All));
                }
            }
            if self.flusher.round(set)? {
                self.rounds += 1;
            }
            self.ctl.needs_root_flush = false;
        }
        Ok(())
    }

    fn create_journal(&mut self) -> io::Result<Arc<Fd>> {
        let st = self.st();
        let f = Arc::new(st.open(
            &self.ctl.dir,
            OsStr::new(JOURNAL_FILE),
            OpenHow::create_new(0o644),
        )?);
        self.journal = Some(f.clone());
        Ok(f)
    }

    /// Stages `contents` to become file `path` at commit.
    pub fn write(&mut self, path: impl AsRef<Path>, contents: impl AsRef<[u8]>) -> Result<()> {
        let path = path.as_ref();
        let mut f = self.create(path)?;
        if let Err(e) = f.write_all(contents.as_ref()) {
            drop(f);
            return Err(self.err("stage", path, Step::WriteStagedFile, e));
        }
        f.finish()
    }

    /// Starts staging file `path`, streaming: write its content into the
    /// returned [`StagedFile`], then [`finish`](StagedFile::finish) it.
    pub fn create(&mut self, path: impl AsRef<Path>) -> Result<StagedFile<'_>> {
        let path = path.as_ref();
        let fail = |t: &Transaction, step, e| t.err("stage", path, step, e);
        let rel = rel_path(path).map_err(|e| fail(self, Step::ParsePath, e))?;
        self.claim(&rel)
            .map_err(|e| fail(self, Step::CheckPath, e))?;
        let (parent, name) = split(&rel);
        let name = name.as_os_str();
        let name = name.to_os_string();
        let (stage_dir, exists) = self
            .plan_dir(&parent, true)
            .map_err(|e| fail(self, Step::OpenParentDirectory, e))?;
        let st = self.st();
        let sdir = self
            .tree
            .dir(&stage_dir)
            .map_err(|e| fail(self, Step::OpenDirectory, e))?;
        let mut old: Option<(Stat, Option<Fd>)> = None;
        if exists {
            match st.stat_at(&sdir, &name, false) {
                Ok(s) if s.kind == FileKind::Regular => {
                    // As the single-file replace: a target we may not read
                    // keeps what stat says (no xattrs); any other error fails
                    // the staging rather than silently dropping metadata
                    // (found by the simulator: EIO here used to be ignored).
                    let file = if self.opts.preserve_metadata || self.opts.preserve_xattrs {
                        match st.open(&sdir, &name, OpenHow::READ_NOFOLLOW) {
                            Ok(f) => Some(f),
                            Err(e)
                                if e.kind() == io::ErrorKind::PermissionDenied
                                    || e.kind() == io::ErrorKind::NotFound =>
                            {
                                None
                            }
                            Err(e) => return Err(fail(self, Step::OpenTarget, e)),
                        }
                    } else {
                        None
                    };
                    old = Some((s, file));
                }
                Ok(s) => {
                    let what = match s.kind {
                        FileKind::Dir => "the target is a directory",
                        FileKind::Symlink => {
                            "the target is a symlink (transactions never follow symlinks)"
                        }
                        _ => "the target is not a regular file",
                    };
                    return Err(fail(
                        self,
                        Step::InspectTarget,
                        invalid(io::ErrorKind::InvalidInput, what),
                    ));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(fail(self, Step::InspectTarget, e)),
            }
        }
        self.ensure_intent()
            .map_err(|e| fail(self, Step::WriteJournalIntent, e))?;
        let create_mode = match &old {
            Some((s, _)) if self.opts.preserve_metadata => s.mode & 0o600,
            _ => 0o666,
        };
        let mut created = None;
        for _ in 0..64 {
            let r = st
                .random()
                .map_err(|e| fail(self, Step::GenerateStagingName, e))?;
            let sname = temp_name(STAGE_PREFIX, r, &name);
            match st.open(&sdir, &sname, OpenHow::create_new(create_mode)) {
                Ok(fd) => {
                    created = Some((sname, fd));
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(fail(self, Step::CreateStagedFile, e)),
            }
        }
        let Some((stage_name, fd)) = created else {
            return Err(fail(
                self,
                Step::CreateStagedFile,
                invalid(io::ErrorKind::AlreadyExists, "no free staging name"),
            ));
        };
        self.uses.insert(rel.clone(), Use::File);
        self.stage_dirs.insert(stage_dir.clone());
        self.staged.push(Staged {
            dir: stage_dir.clone(),
            name: stage_name.clone(),
        });
        Ok(StagedFile {
            txn: self,
            path: path.to_path_buf(),
            rel,
            stage_dir,
            stage_name,
            fd: Some(fd),
            old,
            pos: 0,
            crc: 0,
            held: Vec::new(),
            done: false,
        })
    }

    /// Stages the removal of file (or symlink) `path`, which must exist.
    pub fn remove(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let rel = rel_path(path).map_err(|e| self.err("remove", path, Step::ParsePath, e))?;
        self.claim(&rel)
            .map_err(|e| self.err("remove", path, Step::CheckPath, e))?;
        let (parent, name) = split(&rel);
        let name = name.as_os_str();
        let (_, exists) = self
            .plan_dir(&parent, false)
            .map_err(|e| self.err("remove", path, Step::OpenParentDirectory, e))?;
        debug_assert!(exists);
        let dir = self
            .tree
            .dir(&parent)
            .map_err(|e| self.err("remove", path, Step::OpenParentDirectory, e))?;
        let s = self
            .st()
            .stat_at(&dir, name, false)
            .map_err(|e| self.err("remove", path, Step::InspectFile, e))?;
        if s.kind == FileKind::Dir {
            return Err(self.err(
                "remove",
                path,
                Step::InspectFile,
                invalid(
                    io::ErrorKind::IsADirectory,
                    "transactions remove files, not directories",
                ),
            ));
        }
        self.uses.insert(rel.clone(), Use::File);
        self.ops.push(Op::Remove {
            path: rel,
            ino: s.ino,
        });
        Ok(())
    }

    /// Stages renaming file (or symlink) `from` to `to` (replacing `to` if it
    /// exists; creating `to`'s missing parent directories).
    pub fn rename(&mut self, from: impl AsRef<Path>, to: impl AsRef<Path>) -> Result<()> {
        let (from, to) = (from.as_ref(), to.as_ref());
        let rf = rel_path(from).map_err(|e| self.err("rename", from, Step::ParsePath, e))?;
        let rt = rel_path(to).map_err(|e| self.err("rename", to, Step::ParsePath, e))?;
        if rf == rt {
            return Err(self.err(
                "rename",
                from,
                Step::CheckPath,
                invalid(io::ErrorKind::InvalidInput, "rename to the same path"),
            ));
        }
        self.claim(&rf)
            .map_err(|e| self.err("rename", from, Step::CheckPath, e))?;
        self.claim(&rt)
            .map_err(|e| self.err("rename", to, Step::CheckPath, e))?;
        let (fparent, fname) = split(&rf);
        let fname = fname.as_os_str();
        self.plan_dir(&fparent, false)
            .map_err(|e| self.err("rename", from, Step::OpenParentDirectory, e))?;
        let dir = self
            .tree
            .dir(&fparent)
            .map_err(|e| self.err("rename", from, Step::OpenParentDirectory, e))?;
        let s = self
            .st()
            .stat_at(&dir, fname, false)
            .map_err(|e| self.err("rename", from, Step::InspectSource, e))?;
        if s.kind == FileKind::Dir {
            return Err(self.err(
                "rename",
                from,
                Step::InspectSource,
                invalid(
                    io::ErrorKind::IsADirectory,
                    "transactions rename files, not directories",
                ),
            ));
        }
        let (tparent, tname) = split(&rt);
        let tname = tname.as_os_str();
        let (_, texists) = self
            .plan_dir(&tparent, true)
            .map_err(|e| self.err("rename", to, Step::OpenParentDirectory, e))?;
        if texists {
            let tdir = self
                .tree
                .dir(&tparent)
                .map_err(|e| self.err("rename", to, Step::OpenParentDirectory, e))?;
            match self.st().stat_at(&tdir, tname, false) {
                Ok(t) if t.kind == FileKind::Dir => {
                    return Err(self.err(
                        "rename",
                        to,
                        Step::InspectDestination,
                        invalid(
                            io::ErrorKind::IsADirectory,
                            "the destination is a directory",
                        ),
                    ))
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(self.err("rename", to, Step::InspectDestination, e)),
            }
        }
        self.uses.insert(rf.clone(), Use::File);
        self.uses.insert(rt.clone(), Use::File);
        self.ops.push(Op::Rename {
            from: rf,
            to: rt,
            ino: s.ino,
        });
        Ok(())
    }

    /// Stages creating directory `path` and its missing parents (like
    /// `mkdir -p`: an existing directory is fine).
    pub fn mkdir(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let rel = rel_path(path).map_err(|e| self.err("mkdir", path, Step::ParsePath, e))?;
        if self.uses.get(&rel) == Some(&Use::File) {
            return Err(self.err(
                "mkdir",
                path,
                Step::CheckPath,
                invalid(
                    io::ErrorKind::InvalidInput,
                    "this path is a file the transaction changes",
                ),
            ));
        }
        self.plan_dir(&rel, true)
            .map_err(|e| self.err("mkdir", path, Step::OpenDirectory, e))?;
        Ok(())
    }

    /// Commits: after it returns `Ok`, every staged change is in the tree
    /// and durable; after a crash at any instant, recovery leaves all of
    /// them or none.
    ///
    /// # Errors
    ///
    /// [`State::NotCommitted`]: nothing changed, staging removed (or, if
    /// that failed too, left for recovery to remove).
    /// [`State::CommittedPendingRecovery`]: the commit record is durable but
    /// applying it failed; the tree may show part of it until recovery (run
    /// by the next transaction, snapshot or `fstx recover`) finishes it.
    pub fn commit(mut self) -> Result<Committed> {
        let r = self.commit_inner();
        self.finished = true;
        r
    }

    fn commit_inner(&mut self) -> Result<Committed> {
        let st = self.st();
        let root_path = self.root_path.clone();
        let not = |step, e| Error::new("commit", &root_path, step, State::NotCommitted, e);
        let pending = |step, e| {
            Error::new(
                "commit",
                &root_path,
                step,
                State::CommittedPendingRecovery,
                e,
            )
        };
        if let Some(p) = &self.poisoned {
            let e = invalid(
                io::ErrorKind::Other,
                "a staged file could not be removed earlier; the transaction cannot commit",
            );
            let p = p.clone();
            let state = self.discard();
            return Err(Error::new("commit", &p, Step::CheckTransaction, state, e));
        }
        let mut ops = std::mem::take(&mut self.ops);
        // Apply order: directories (parents first), renames, writes, removals.
        ops.sort_by_key(|op| match op {
            Op::Mkdir { .. } => 0,
            Op::Rename { .. } => 1,
            Op::Put { .. } => 2,
            Op::Remove { .. } => 3,
        });
        let record = Record {
            kind: Kind::Commit,
            seq: self.seq,
            txn_id: self.txn_id,
            ops,
        };
        let bytes = match record.encode() {
            Ok(b) => b,
            Err(m) => {
                self.ops = record.ops;
                let state = self.discard();
                return Err(Error::new(
                    "commit",
                    &root_path,
                    Step::EncodeJournal,
                    state,
                    invalid(io::ErrorKind::InvalidInput, m),
                ));
            }
        };
        // R1: staged data and directory entries, and the journal's own entry.
        let journal = match self.journal.clone() {
            Some(j) => j,
            None => match self.create_journal() {
                Ok(j) => j,
                Err(e) => {
                    self.ops = record.ops;
                    let state = self.discard();
                    return Err(Error::new(
                        "commit",
                        &root_path,
                        Step::CreateJournal,
                        state,
                        e,
                    ));
                }
            },
        };
        let durable = self.opts.durable();
        let bugs = self.opts.bugs;
        if durable {
            let mut set = Vec::new();
            if !bug!(bugs, no_stage_dir_flush) {
                if !self.ctl_assumed_durable() {
                    set.push((self.ctl.dir.clone(), SyncKind::All));
                }
                if self.ctl.needs_root_flush && !self.stage_dirs.contains(&RelPath::root()) {
                    set.push((self.tree.root(), SyncKind::All));
                }
                for d in &self.stage_dirs {
                    match self.tree.dir(d) {
                        Ok(fd) => set.push((fd, SyncKind::All)),
                        Err(e) => {
                            self.ops = record.ops;
                            let state = self.discard();
                            return Err(Error::new(
                                "commit",
                                &root_path,
                                Step::OpenStagingDirectory,
                                state,
                                e,
                            ));
                        }
                    }
                }
            }
            let r = self.flusher.round(set);
            match r {
                Ok(true) => self.rounds += 1,
                Ok(false) => {}
                Err(e) => {
                    self.ops = record.ops;
                    let state = self.discard();
                    return Err(Error::new(
                        "commit",
                        &root_path,
                        Step::FlushStagedFiles,
                        state,
                        e,
                    ));
                }
            }
        }
        self.opts.phase(Phase::Staged);
        // The commit point. Readers are held off from here to retirement.
        if let Err(e) = st.lock(&self.ctl.view, LockMode::Exclusive, true) {
            self.ops = record.ops;
            let state = self.discard();
            return Err(Error::new(
                "commit",
                &root_path,
                Step::TakeReaderLock,
                state,
                e,
            ));
        }
        let written = write_all_at(&*st, &journal, &bytes, 0)
            .and_then(|()| st.set_len(&journal, bytes.len() as u64));
        if let Err(e) = written {
            // In doubt, as for a failed flush below: a write may have landed
            // whole before a later call failed (the `ftruncate`, or the
            // second part of a short write), and the unflushed record may
            // then survive a crash complete and valid. Rolling back by
            // removing the staging first could leave a valid commit record
            // whose staged files are gone, so the record is first replaced
            // durably by a BEGIN record.
            self.ops = record.ops;
            let state = self.undo_commit_record();
            return Err(not(Step::WriteCommitRecord, e).with_state(state));
        }
        if durable {
            self.flusher.calls.fetch_add(1, Ordering::Relaxed);
            self.rounds += 1;
            if let Err(e) = st.sync(&journal, SyncKind::Data) {
                // In doubt: the record may or may not be on disk, and a second
                // flush proves nothing. Nothing is applied: the record is
                // replaced durably by a BEGIN record, then rolled back.
                self.ops = record.ops;
                let state = self.undo_commit_record();
                return Err(Error::new(
                    "commit",
                    &root_path,
                    Step::FsyncCommitRecord,
                    state,
                    e,
                ));
            }
        }
        if !self.deferred.is_empty() {
            // PLANTED BUG (commit_before_data_flush / _write): data written
            // or flushed only after the commit point.
            let late: Vec<_> = self
                .deferred
                .drain(..)
                .map(|(f, data)| {
                    let _ = write_all_at(&*st, &f, &data, 0);
                    (f, SyncKind::All)
                })
                .collect();
            let _ = self.flusher.round(late);
        }
        drop(journal);
        self.journal = None;
        self.opts.phase(Phase::Committed);
        // Apply.
        let touched = recovery::apply(&*st, &mut self.tree, &record.ops, &root_path)
            .map_err(|(step, e)| pending(step, e))?;
        if durable {
            let set: Vec<_> = touched.into_iter().map(|d| (d, SyncKind::All)).collect();
            match self.flusher.round(set) {
                Ok(true) => self.rounds += 1,
                Ok(false) => {}
                Err(e) => return Err(pending(Step::FlushDirectories, e)),
            }
        }
        self.opts.phase(Phase::Applied);
        // Retire.
        self.staged.clear();
        recovery::retire(&*st, &self.ctl, durable && !bug!(bugs, replay_retired))
            .map_err(|e| pending(Step::RetireJournal, e))?;
        if durable && !bug!(bugs, replay_retired) {
            self.rounds += 1;
            self.flusher.calls.fetch_add(1, Ordering::Relaxed);
        }
        let _ = st.unlock(&self.ctl.view);
        let mut c = Committed {
            seq: self.seq,
            written: 0,
            removed: 0,
            renamed: 0,
            dirs_created: 0,
            flush_rounds: self.rounds,
            flush_calls: self.flusher.calls.load(Ordering::Relaxed),
        };
        for op in &record.ops {
            match op {
                Op::Mkdir { .. } => c.dirs_created += 1,
                Op::Put { .. } => c.written += 1,
                Op::Remove { .. } => c.removed += 1,
                Op::Rename { .. } => c.renamed += 1,
            }
        }
        Ok(c)
    }

    /// Discards everything staged, leaving the tree untouched, and reports
    /// errors (drop does the same silently).
    pub fn abort(mut self) -> Result<()> {
        self.finished = true;
        match self.discard() {
            State::NotCommitted => Ok(()),
            state => Err(Error::new(
                "abort",
                &self.root_path,
                Step::RemoveStagedFiles,
                state,
                io::Error::other("some staged files could not be removed; recovery removes them"),
            )),
        }
    }

    /// After a failed flush of the commit record: replaces the journal with
    /// a BEGIN record through a fresh file (flushed, renamed, directory
    /// flushed), so the commit record can never be found again, then rolls
    /// back. If that fails too, the outcome is left to recovery.
    fn undo_commit_record(&mut self) -> State {
        let st = self.st();
        let undo = OsStr::new("journal.undo");
        let r = (|| -> io::Result<()> {
            let rec = Record {
                kind: Kind::Begin,
                seq: self.seq,
                txn_id: self.txn_id,
                ops: Vec::new(),
            }
            .encode()
            .map_err(|m| invalid(io::ErrorKind::InvalidData, m))?;
            match st.unlink_at(&self.ctl.dir, undo, false) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            let f = st.open(&self.ctl.dir, undo, OpenHow::create_new(0o644))?;
            write_all_at(&*st, &f, &rec, 0)?;
            st.sync(&f, SyncKind::All)?;
            st.rename_at(
                &self.ctl.dir,
                undo,
                &self.ctl.dir,
                OsStr::new(JOURNAL_FILE),
                false,
            )?;
            crate::fskind::sync_dir_io(&*st, &self.ctl.dir, self.ctl.fs_magic)
        })();
        self.journal = None;
        if r.is_ok() {
            self.discard()
        } else {
            let _ = st.unlock(&self.ctl.view);
            self.staged.clear();
            State::CommittedPendingRecovery
        }
    }

    /// Removes the staged files (flushing their directories), then the
    /// journal: the intent marker outlives the staging it points at.
    fn discard(&mut self) -> State {
        let st = self.st();
        let _ = self.flusher.barrier();
        let mut left = None;
        for s in std::mem::take(&mut self.staged) {
            let r = self
                .tree
                .dir(&s.dir)
                .and_then(|d| st.unlink_at(&d, &s.name, false));
            match r {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(_) => left = Some(self.root_path.join(s.dir.to_string()).join(&s.name)),
            }
        }
        if let Some(temp) = left {
            // Keep the journal: it tells recovery to look for the leftovers.
            let _ = st.unlock(&self.ctl.view);
            return State::NotCommittedTempLeft { temp };
        }
        if self.journal.take().is_some() || self.opts.durable() {
            if self.opts.durable() {
                let dirs: Vec<_> = self
                    .stage_dirs
                    .iter()
                    .filter_map(|d| self.tree.dir(d).ok())
                    .map(|d| (d, SyncKind::All))
                    .collect();
                let _ = self.flusher.round(dirs);
            }
            // A journal that cannot be removed is harmless: recovery rolls a
            // BEGIN record back (there is no staging left).
            if st
                .unlink_at(&self.ctl.dir, OsStr::new(JOURNAL_FILE), false)
                .is_ok()
                && self.opts.durable()
            {
                let _ = crate::fskind::sync_dir_io(&*st, &self.ctl.dir, self.ctl.fs_magic);
            }
        }
        let _ = st.unlock(&self.ctl.view);
        State::NotCommitted
    }
}

impl Drop for Transaction {
    fn drop(&mut self) {
        if !self.finished {
            self.discard();
        }
    }
}

trait WithState {
    fn with_state(self, state: State) -> Self;
}

impl WithState for Error {
    fn with_state(self, state: State) -> Error {
        let (op, path, step) = (self.operation(), self.path().to_path_buf(), self.step());
        Error::new(op, &path, step, state, self.into_io_error())
    }
}

pub(crate) fn write_all_at(
    st: &dyn Storage,
    f: &Fd,
    mut buf: &[u8],
    mut off: u64,
) -> io::Result<()> {
    while !buf.is_empty() {
        match st.write_at(f, buf, off) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
            Ok(n) => {
                buf = &buf[n..];
                off += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A file being staged by a [`Transaction`]: write its content, then
/// [`finish`](Self::finish). Dropping it unfinished removes the staged file
/// (the transaction stays usable).
pub struct StagedFile<'t> {
    txn: &'t mut Transaction,
    path: PathBuf,
    rel: RelPath,
    stage_dir: RelPath,
    stage_name: OsString,
    fd: Option<Fd>,
    old: Option<(Stat, Option<Fd>)>,
    pos: u64,
    crc: u32,
    /// Data a planted bug (`commit_before_data_write`) holds back until
    /// after the commit record.
    held: Vec<u8>,
    done: bool,
}

impl std::fmt::Debug for StagedFile<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StagedFile")
            .field("path", &self.path)
            .field("len", &self.pos)
            .finish_non_exhaustive()
    }
}

impl StagedFile<'_> {
    /// Completes the staged file: carries the old file's metadata, hands it
    /// to the flusher, and records the write in the transaction.
    pub fn finish(mut self) -> Result<()> {
        let st = self.txn.st();
        let Some(fd) = self.fd.take() else {
            return Err(self.txn.err(
                "stage",
                &self.path,
                Step::FinishStagedFile,
                invalid(io::ErrorKind::Other, "already finished"),
            ));
        };
        if let Err(e) = carry_metadata(&*st, &fd, self.old.as_ref(), &self.txn.opts) {
            self.fd = Some(fd);
            return Err(self.txn.err("stage", &self.path, Step::CarryMetadata, e));
        }
        self.done = true;
        if bug!(self.txn.opts.bugs, commit_before_data_write) {
            // PLANTED BUG: the data is written only after the commit record.
            let held = std::mem::take(&mut self.held);
            self.txn.deferred.push((Arc::new(fd), held));
        } else if self.txn.opts.durable() && bug!(self.txn.opts.bugs, commit_before_data_flush) {
            // PLANTED BUG: the flush is issued only after the commit record.
            self.txn.deferred.push((Arc::new(fd), Vec::new()));
        } else if self.txn.opts.durable() {
            self.txn.flusher.submit(Arc::new(fd), SyncKind::All);
        }
        self.txn.ops.push(Op::Put {
            path: self.rel.clone(),
            stage_dir: self.stage_dir.clone(),
            stage_name: self.stage_name.clone(),
            len: self.pos,
            crc: self.crc,
        });
        Ok(())
    }
}

impl Write for StagedFile<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Some(fd) = self.fd.as_ref() else {
            return Err(invalid(
                io::ErrorKind::Other,
                "staged file already finished",
            ));
        };
        let n = if bug!(self.txn.opts.bugs, commit_before_data_write) {
            // PLANTED BUG: held back until after the commit record.
            self.held.extend_from_slice(buf);
            buf.len()
        } else {
            self.txn.opts.storage.write_at(fd, buf, self.pos)?
        };
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        self.pos += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for StagedFile<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        drop(self.fd.take());
        let st = self.txn.st();
        let r = self
            .txn
            .tree
            .dir(&self.stage_dir)
            .and_then(|d| st.unlink_at(&d, &self.stage_name, false));
        self.txn.uses.remove(&self.rel);
        let idx = self
            .txn
            .staged
            .iter()
            .position(|s| s.name == self.stage_name && s.dir == self.stage_dir);
        match r {
            Ok(()) => {
                if let Some(i) = idx {
                    self.txn.staged.remove(i);
                }
            }
            Err(_) => self.txn.poisoned = Some(self.path.clone()),
        }
    }
}

/// Gives a staged file the old file's owner, group, mode (without set-id
/// bits) and extended attributes (without `security.capability`), or the
/// default mode of a new file. Same rules as the single-file replace.
/// Carries the old file's owner, group, mode and xattrs over, as the
/// single-file replace does (set-id bits and file capabilities dropped).
fn carry_metadata(
    st: &dyn Storage,
    f: &Fd,
    old: Option<&(Stat, Option<Fd>)>,
    opts: &TxnOptions,
) -> io::Result<()> {
    if !opts.preserve_metadata {
        return Ok(());
    }
    crate::atomic::carry_metadata(
        st,
        f,
        old.map(|(stat, fd)| (stat, fd.as_ref())),
        &crate::atomic::Carry {
            mode: None,
            keep_privileges: false,
            xattrs: opts.preserve_xattrs,
        },
    )
}

/// A consistent read view of a transaction root: while it lives, no
/// transaction is applied (it holds the root's reader lock shared), so every
/// read sees the tree between two transactions, never halfway through one.
///
/// Opening it finishes an interrupted transaction first (or fails with a
/// clear error naming it when the filesystem is read-only). A transaction
/// being staged does not block readers; one being applied does, briefly.
pub struct Snapshot {
    st: Arc<dyn Storage>,
    root_path: PathBuf,
    tree: std::sync::Mutex<Tree>,
    _view: Option<Fd>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("root", &self.root_path)
            .finish_non_exhaustive()
    }
}

impl Snapshot {
    /// Opens a read view of `root` with default options.
    pub fn open(root: impl AsRef<Path>) -> Result<Snapshot> {
        TxnOptions::new().snapshot(root)
    }

    fn open_with(root_path: &Path, opts: &TxnOptions) -> Result<Snapshot> {
        let st = opts.storage.clone();
        let fail = |step, e| Error::new("snapshot", root_path, step, State::NotCommitted, e);
        let root = Arc::new(
            st.open_dir(None, root_path, true)
                .map_err(|e| fail(Step::OpenRootDirectory, e))?,
        );
        let ctl = match open_control(&*st, &root, false) {
            Ok(c) => Some(c),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // No transaction ever ran here, or the control files are
                // missing: create them if we can; on a read-only mount no
                // transaction can be in flight without a control directory.
                match open_control(&*st, &root, true) {
                    Ok(c) => Some(c),
                    Err(_) => match st.stat_at(&root, OsStr::new(CONTROL_DIR), false) {
                        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                        _ => return Err(fail(Step::OpenControlDirectory, e)),
                    },
                }
            }
            Err(e) => return Err(fail(Step::OpenControlDirectory, e)),
        };
        let mut tree = Tree::new(st.clone(), root);
        let view = match ctl {
            None => None,
            Some(ctl) => {
                loop {
                    st.lock(&ctl.view, LockMode::Shared, true)
                        .map_err(|e| fail(Step::TakeReaderLock, e))?;
                    let pending = recovery::pending_commit(&*st, &ctl)
                        .map_err(|e| fail(Step::ReadJournal, e))?;
                    let Some(seq) = pending else { break };
                    // A committed transaction whose writer died: finish it
                    // (under the writer lock), then look again.
                    st.unlock(&ctl.view)
                        .map_err(|e| fail(Step::ReleaseReaderLock, e))?;
                    st.lock(&ctl.lock, LockMode::Exclusive, true)
                        .map_err(|e| fail(Step::TakeWriterLock, e))?;
                    let r = recovery::recover_locked(&*st, &mut tree, root_path, &ctl, opts, false);
                    let _ = st.unlock(&ctl.lock);
                    if let Err(e) = r {
                        let ro = e.kind() == io::ErrorKind::ReadOnlyFilesystem
                            || e.io_error().raw_os_error()
                                == Some(rustix::io::Errno::ROFS.raw_os_error());
                        if ro {
                            return Err(Error::new(
                                "snapshot",
                                root_path,
                                Step::RecoverPendingTransaction,
                                State::CommittedPendingRecovery,
                                io::Error::new(
                                    io::ErrorKind::ReadOnlyFilesystem,
                                    format!(
                                        "transaction {seq} in {} is committed but not applied, and the \
                                         filesystem is read-only so it cannot be finished; remount \
                                         read-write and run `fstx recover`",
                                        root_path.display()
                                    ),
                                ),
                            ));
                        }
                        return Err(e);
                    }
                }
                Some(ctl.view)
            }
        };
        let _ = &mut tree;
        Ok(Snapshot {
            st,
            root_path: root_path.to_path_buf(),
            tree: std::sync::Mutex::new(tree),
            _view: view,
        })
    }

    /// Reads file `path` (relative to the root, never following symlinks).
    pub fn read(&self, path: impl AsRef<Path>) -> Result<Vec<u8>> {
        let path = path.as_ref();
        let fail = |step, e| {
            Error::new(
                "read",
                &self.root_path.join(path),
                step,
                State::NotCommitted,
                e,
            )
        };
        let rel = rel_path(path).map_err(|e| fail(Step::ParsePath, e))?;
        let (parent, name) = split(&rel);
        let name = name.as_os_str();
        let dir = self
            .tree
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .dir(&parent)
            .map_err(|e| fail(Step::OpenDirectory, e))?;
        let f = self
            .st
            .open(&dir, name, OpenHow::READ_NOFOLLOW)
            .map_err(|e| fail(Step::OpenFile, e))?;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = self
                .st
                .read_at(&f, &mut buf, out.len() as u64)
                .map_err(|e| fail(Step::ReadFile, e))?;
            if n == 0 {
                return Ok(out);
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    /// Lists directory `path` (`""` or `"."` for the root), without fstx's
    /// own control, staging and temporary names, sorted.
    pub fn list(&self, path: impl AsRef<Path>) -> Result<Vec<OsString>> {
        let path = path.as_ref();
        let fail = |step, e| {
            Error::new(
                "read",
                &self.root_path.join(path),
                step,
                State::NotCommitted,
                e,
            )
        };
        let rel = if path.as_os_str().is_empty() || path == Path::new(".") {
            RelPath::root()
        } else {
            rel_path(path).map_err(|e| fail(Step::ParsePath, e))?
        };
        let dir = self
            .tree
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .dir(&rel)
            .map_err(|e| fail(Step::OpenDirectory, e))?;
        let mut names: Vec<OsString> = self
            .st
            .read_dir(&dir)
            .map_err(|e| fail(Step::ListDirectory, e))?
            .into_iter()
            .map(|e| e.name)
            .filter(|n| {
                !(is_stage_name(n)
                    || is_temp_name(crate::atomic::TEMP_PREFIX, n)
                    || (rel.is_root() && n == CONTROL_DIR))
            })
            .collect();
        names.sort();
        Ok(names)
    }
}
