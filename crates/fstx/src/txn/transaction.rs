//! The transaction handle: beginning one (writer lock, recovery, sequence
//! number) and the state it carries until commit or abort.

use std::collections::{BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::bug;
use super::flush::Flusher;
use super::journal::{Op, RelPath};
use super::options::TxnOptions;
use super::recovery::recover_locked;
use super::root::{open_control, Control, Tree, JOURNAL_FILE};
use crate::error::{invalid, Error, Result, State, Step};
use crate::storage::{Fd, LockMode, OpenHow, Storage};

/// A staged file (for cleanup).
#[derive(Debug, Clone)]
pub(super) struct Staged {
    pub(super) dir: RelPath,
    pub(super) name: OsString,
}

/// How a path is used by the transaction (each path at most once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Use {
    File,
    Dir,
}

/// A multi-file transaction under one root: writes, removals, renames and
/// new directories that change all together or not at all. See the
/// [module documentation](crate::txn) for the protocol.
///
/// Every path names a file relative to the root; each path may be used by at
/// most one operation of a transaction (as a target, a source or a new
/// directory). Nothing is visible in the tree before
/// [`commit`](Self::commit). Dropping the transaction discards everything
/// staged, best effort; [`abort`](Self::abort) does the same and reports
/// errors.
///
/// # Guarantees
///
/// - **All or nothing**: after a power cut at any instant and recovery (run
///   by the next [`begin`](Self::begin), [`Snapshot::open`](crate::Snapshot::open)
///   or [`recover`](crate::recover())), the tree holds every change of a
///   transaction or none of them.
/// - **Durable**: once [`commit`](Self::commit) returns `Ok`, every change
///   survives a power cut.
/// - **Serialized**: one transaction at a time per root (a cross-process
///   writer lock); [`Snapshot`](crate::Snapshot) readers never see one half
///   applied.
/// - **Confined**: paths never leave the root (`..`, absolute paths and
///   fstx's own names are refused; symlinks are never followed).
/// - **Metadata**: a replaced file keeps its owner, group, mode and extended
///   attributes, as with [`write`](crate::write()).
///
/// # Errors
///
/// Every error names the operation (`begin`, `stage`, `remove`, `rename`,
/// `mkdir`, `commit`), the path and the [`Step`](crate::Step), and says the
/// [`State`](crate::State). Before the commit point: `NotCommitted` (the
/// tree untouched, staging removed) or `NotCommittedTempLeft`. After it:
/// `CommittedPendingRecovery` (the commit record is durable, applying
/// failed; recovery finishes it, readers see the old tree until then). A
/// failed flush is never retried. `begin` refuses filesystems where rename
/// is not crash-atomic ([`io::ErrorKind::Unsupported`]) and, with
/// [`TxnOptions::wait`]`(false)`, a root another transaction holds
/// ([`io::ErrorKind::WouldBlock`]).
pub struct Transaction {
    pub(super) opts: TxnOptions,
    pub(super) root_path: PathBuf,
    pub(super) tree: Tree,
    pub(super) ctl: Control,
    pub(super) seq: u64,
    pub(super) txn_id: u64,
    pub(super) journal: Option<Arc<Fd>>,
    pub(super) flusher: Flusher,
    pub(super) rounds: u32,
    pub(super) uses: HashMap<RelPath, Use>,
    pub(super) new_dirs: BTreeSet<RelPath>,
    pub(super) stage_dirs: BTreeSet<RelPath>,
    pub(super) staged: Vec<Staged>,
    pub(super) ops: Vec<Op>,
    /// Set when a staged file could not be removed: commit refuses.
    pub(super) poisoned: Option<PathBuf>,
    pub(super) finished: bool,
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

    pub(super) fn begin_with(root_path: &Path, opts: &TxnOptions) -> Result<Transaction> {
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
        let last = recover_locked(&*st, &mut tree, root_path, &ctl, opts, false, false)?;
        let seq = last.last_seq + 1;
        let txn_id = st
            .random()
            .map_err(|e| fail(Step::GenerateTransactionId, e))?;
        let flusher = Flusher::new(opts.flush, st.clone(), root, ctl.fs_magic);
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

    pub(super) fn err(&self, op: &'static str, path: &Path, step: Step, e: io::Error) -> Error {
        Error::new(op, &self.root_path.join(path), step, State::NotCommitted, e)
    }

    pub(super) fn st(&self) -> Arc<dyn Storage> {
        self.opts.storage.clone()
    }

    /// PLANTED BUG (`replay_retired`): after the first transaction on a
    /// root, the control directory is assumed durable and not flushed.
    pub(super) fn ctl_assumed_durable(&self) -> bool {
        bug!(self.opts.bugs, replay_retired) && self.seq > 1
    }

    pub(super) fn create_journal(&mut self) -> io::Result<Arc<Fd>> {
        let st = self.st();
        let f = Arc::new(st.open(
            &self.ctl.dir,
            OsStr::new(JOURNAL_FILE),
            OpenHow::create_new(0o644),
        )?);
        self.journal = Some(f.clone());
        Ok(f)
    }

    /// This transaction's BEGIN record (the intent marker), encoded.
    pub(super) fn begin_record(&self) -> io::Result<Vec<u8>> {
        super::journal::Record {
            kind: super::journal::Kind::Begin,
            seq: self.seq,
            txn_id: self.txn_id,
            ops: Vec::new(),
        }
        .encode()
        .map_err(|m| crate::error::invalid(io::ErrorKind::InvalidData, m))
    }
}
