//! Consistent readers of a transaction root.

use std::ffi::{OsStr, OsString};
use std::io::{self};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::journal::RelPath;
use super::options::TxnOptions;
use super::recovery::{pending_commit, recover_locked};
use super::root::{open_control, rel_path, split, Tree, CONTROL_DIR};
use crate::error::{Error, Result, State, Step};
use crate::storage::{Fd, LockMode, OpenHow, Storage};

/// A consistent read view of a transaction root: while it lives, no
/// transaction is applied (it holds the root's reader lock shared), so every
/// read sees the tree between two transactions, never halfway through one.
///
/// Opening it finishes an interrupted transaction first (or fails with a
/// clear error naming it when the filesystem is read-only). A transaction
/// being staged does not block readers; one being applied does, briefly.
///
/// # Guarantees
///
/// - **Consistent**: every read through one snapshot sees the same tree,
///   the state between two transactions (writers wait to apply until it is
///   dropped; staging goes on meanwhile).
/// - **Confined**: paths stay inside the root and never follow symlinks;
///   [`list`](Self::list) hides fstx's own names.
///
/// # Errors
///
/// Errors name the operation (`snapshot`, `read`), the path and the
/// [`Step`](crate::Step); reads change nothing ([`State::NotCommitted`]).
/// Opening fails with [`State::CommittedPendingRecovery`] when a committed
/// transaction is not applied yet and cannot be (a read-only filesystem).
///
/// # Examples
///
/// ```
/// # let root = std::env::temp_dir().join(format!("fstx-doc-snap-{}", std::process::id()));
/// # std::fs::create_dir_all(&root)?;
/// let mut txn = fstx::Transaction::begin(&root)?;
/// txn.write("a.conf", b"a=1\n")?;
/// txn.write("b.conf", b"b=1\n")?;
/// txn.commit()?;
///
/// let view = fstx::Snapshot::open(&root)?;
/// assert_eq!(view.read("a.conf")?, b"a=1\n");
/// assert_eq!(view.list("")?, ["a.conf", "b.conf"]);
/// # drop(view);
/// # std::fs::remove_dir_all(&root)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
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

    pub(super) fn open_with(root_path: &Path, opts: &TxnOptions) -> Result<Snapshot> {
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
                    let pending =
                        pending_commit(&*st, &ctl).map_err(|e| fail(Step::ReadJournal, e))?;
                    let Some(seq) = pending else { break };
                    // A committed transaction whose writer died: finish it
                    // (under the writer lock), then look again.
                    st.unlock(&ctl.view)
                        .map_err(|e| fail(Step::ReleaseReaderLock, e))?;
                    st.lock(&ctl.lock, LockMode::Exclusive, true)
                        .map_err(|e| fail(Step::TakeWriterLock, e))?;
                    let r = recover_locked(&*st, &mut tree, root_path, &ctl, opts, false, false);
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

    /// The error of a read (`read` or `list`) of `path` that failed at `step`.
    fn error(&self, path: &Path, step: Step, e: io::Error) -> Error {
        Error::new(
            "read",
            &self.root_path.join(path),
            step,
            State::NotCommitted,
            e,
        )
    }

    /// Opens directory `rel` of the root, through the cached tree.
    fn dir(&self, rel: &RelPath) -> io::Result<Arc<Fd>> {
        self.tree
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .dir(rel)
    }

    /// Reads file `path` (relative to the root, never following symlinks).
    pub fn read(&self, path: impl AsRef<Path>) -> Result<Vec<u8>> {
        let path = path.as_ref();
        let fail = |step, e| self.error(path, step, e);
        let rel = rel_path(path).map_err(|e| fail(Step::ParsePath, e))?;
        let (parent, name) = split(&rel).map_err(|e| fail(Step::ParsePath, e))?;
        let name = name.as_os_str();
        let dir = self
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

    /// Lists directory `path` (`""` or `"."` for the root), sorted, without
    /// fstx's own names ([`is_internal_name`](crate::is_internal_name): control,
    /// staging, temporary and lock files).
    pub fn list(&self, path: impl AsRef<Path>) -> Result<Vec<OsString>> {
        let path = path.as_ref();
        let fail = |step, e| self.error(path, step, e);
        let rel = if path.as_os_str().is_empty() || path == Path::new(".") {
            RelPath::root()
        } else {
            rel_path(path).map_err(|e| fail(Step::ParsePath, e))?
        };
        let dir = self.dir(&rel).map_err(|e| fail(Step::OpenDirectory, e))?;
        let mut names: Vec<OsString> = self
            .st
            .read_dir(&dir)
            .map_err(|e| fail(Step::ListDirectory, e))?
            .into_iter()
            .map(|e| e.name)
            .filter(|n| !crate::names::is_internal_name(n))
            .collect();
        names.sort();
        Ok(names)
    }
}
