//! Options of transactions and snapshots, the phases of a commit, and what a commit reports.

use std::io;
use std::path::Path;
use std::sync::Arc;

use super::flush::Flush;
use super::recovery::{recover_locked, TxnRecovery};
use super::root::{open_control, Tree};
use super::snapshot::Snapshot;
use super::transaction::Transaction;
use super::Bugs as TxnBugs;
use crate::atomic::Durability;
use crate::error::{Error, Result, State, Step};
use crate::storage::{self, LockMode, Storage};

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
    pub(super) on_phase: Option<PhaseHook>,
    pub(super) durability: Durability,
    pub(super) flush: Flush,
    pub(super) allow_weak_fs: bool,
    pub(super) wait: bool,
    pub(super) preserve_metadata: bool,
    pub(super) preserve_xattrs: bool,
    pub(super) verified: bool,
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
            verified: false,
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

    /// Seal every file the transaction writes in a verified envelope, as
    /// [`Options::verified`](crate::Options::verified) does (default
    /// `false`): its sequence number is one more than the highest that the
    /// target and its backups (`NAME~`, `NAME~2`, … while they exist) carry
    /// in a header that verifies, and [`read`](crate::read()) returns its
    /// payload. The journal records the sealed file's length and checksum,
    /// so recovery checks the file as it is on disk.
    pub fn verified(&mut self, yes: bool) -> &mut TxnOptions {
        self.verified = yes;
        self
    }

    /// Calls `f` at each [`Phase`] of a commit, in the committing thread.
    pub fn on_phase(&mut self, f: impl Fn(Phase) + Send + Sync + 'static) -> &mut TxnOptions {
        self.on_phase = Some(PhaseHook(Arc::new(f)));
        self
    }

    pub(super) fn phase(&self, p: Phase) {
        if let Some(h) = &self.on_phase {
            (h.0)(p);
        }
    }

    internals_fn! {
        /// Routes every filesystem call through `storage`.
        fn storage(&mut self, storage: Arc<dyn Storage>) -> &mut TxnOptions {
            self.storage = storage;
            self
        }
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
        self.recover_as("recover", root.as_ref(), true)
    }

    /// Recovery under the writer lock (`sweep`: also sweep the tree for
    /// leftover staging).
    fn recover_as(
        &self,
        op: &'static str,
        root_path: &Path,
        sweep: bool,
    ) -> Result<Option<TxnRecovery>> {
        let st = self.storage.clone();
        let fail = |step, e| Error::new(op, root_path, step, State::NotCommitted, e);
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
        let r = recover_locked(&*st, &mut tree, root_path, &ctl, self, false, sweep);
        let _ = st.unlock(&ctl.lock);
        Ok(r?.report)
    }

    /// Opens a consistent read view of `root`. See [`Snapshot::open`].
    pub fn snapshot(&self, root: impl AsRef<Path>) -> Result<Snapshot> {
        Snapshot::open_with(root.as_ref(), self)
    }

    pub(super) fn durable(&self) -> bool {
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
