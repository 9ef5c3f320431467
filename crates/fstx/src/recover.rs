//! Recovery after a crash: removing temporary files whose writer is gone.
//!
//! Every temporary file fstx creates is named `.fstx-tmp.<16 hex>.<name>`
//! and is held under an exclusive `flock` by its writer for as long as the
//! writer lives; the kernel drops the lock when the writer dies. Recovery
//! removes a temporary file only while holding its lock, after checking that
//! the name still refers to the locked inode, so a live writer's file is
//! never removed (see [`create_temp`](crate::temp::create_temp) for the
//! writer's side).
//!
//! A temporary name may also be a second hard link to a live file: an
//! update making a backup links the target to a temporary name, then renames
//! it to `NAME~`. Removing such a name loses nothing (the inode keeps its
//! other name) and the update makes the link again. Lock files
//! (`.fstx-lock.*`) are never removed.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result, State, Step};
use crate::names::{is_lock_name, is_temp_name, TEMP_PREFIX};
use crate::storage::{self, FileKind, LockMode, OpenHow, Storage};

/// What [`recover`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Temporary files of dead writers that were removed (or, in a dry run,
    /// would be removed).
    pub removed: Vec<PathBuf>,
    /// Temporary files left alone because a live writer holds them (and a
    /// transaction root's `.fstx-txn` while a live transaction holds it).
    pub in_use: Vec<PathBuf>,
    /// For a transaction root: the interrupted transaction recovery finished
    /// or rolled back (or, in a dry run, would).
    pub transactions: Vec<crate::txn::TxnRecovery>,
}

impl Recovery {
    /// Whether recovery found nothing to do.
    pub fn is_empty(&self) -> bool {
        self.removed.is_empty() && self.in_use.is_empty() && self.transactions.is_empty()
    }
}

/// Options for [`recover`].
#[derive(Debug, Clone)]
pub struct RecoverOptions {
    dry_run: bool,
    storage: Arc<dyn Storage>,
}

impl Default for RecoverOptions {
    fn default() -> RecoverOptions {
        RecoverOptions::new()
    }
}

impl RecoverOptions {
    /// Default options: remove what is stale, on the real filesystem.
    pub fn new() -> RecoverOptions {
        RecoverOptions {
            dry_run: false,
            storage: storage::os(),
        }
    }

    /// Only report what would be removed.
    pub fn dry_run(&mut self, yes: bool) -> &mut RecoverOptions {
        self.dry_run = yes;
        self
    }

    internals_fn! {
        /// Routes every filesystem call through `storage`.
        fn storage(&mut self, storage: Arc<dyn Storage>) -> &mut RecoverOptions {
            self.storage = storage;
            self
        }
    }

    /// Recovers the directory `dir`. See [`recover`].
    pub fn recover(&self, dir: impl AsRef<Path>) -> Result<Recovery> {
        let path = dir.as_ref();
        let st = &*self.storage;
        let fail = |step, e| Error::new("recover", path, step, State::NotCommitted, e);
        let dir = st
            .open_dir(None, path, true)
            .map_err(|e| fail(Step::OpenDirectory, e))?;
        let mut report = Recovery::default();
        let entries = st
            .read_dir(&dir)
            .map_err(|e| fail(Step::ListDirectory, e))?;
        let mut names: Vec<OsString> = entries
            .into_iter()
            .filter(|e| matches!(e.kind, FileKind::Regular | FileKind::Unknown))
            .map(|e| e.name)
            // Lock files (`.fstx-lock.*`) are never removed: someone may wait on one.
            .filter(|n| is_temp_name(TEMP_PREFIX, n) && !is_lock_name(n))
            .collect();
        names.sort();
        for name in names {
            let file = match st.open(&dir, &name, OpenHow::READ_NOFOLLOW) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(fail(Step::OpenTemporaryFile, e)),
            };
            let held = st
                .stat(&file)
                .map_err(|e| fail(Step::InspectTemporaryFile, e))?;
            if held.kind != FileKind::Regular {
                continue;
            }
            if !st
                .lock(&file, LockMode::Exclusive, false)
                .map_err(|e| fail(Step::LockTemporaryFile, e))?
            {
                report.in_use.push(path.join(&name));
                continue;
            }
            // Still the same file under that name, and ours to remove now.
            match st.stat_at(&dir, &name, false) {
                Ok(named) if named.same_inode(&held) => {}
                _ => continue,
            }
            if !self.dry_run {
                match st.unlink_at(&dir, &name, false) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(fail(Step::RemoveTemporaryFile, e)),
                }
            }
            drop(file);
            report.removed.push(path.join(&name));
        }
        if !self.dry_run && !report.removed.is_empty() {
            crate::durability::sync_dir(st, &dir, None).map_err(|(step, e)| fail(step, e))?;
        }
        // A transaction root: finish or roll back an interrupted transaction.
        let root = st
            .open_dir(Some(&dir), Path::new("."), false)
            .map_err(|e| fail(Step::OpenDirectory, e))?;
        match crate::txn::recover_root(&self.storage, Arc::new(root), path, self.dry_run)? {
            crate::txn::RootState::NotARoot | crate::txn::RootState::Done(None) => {}
            crate::txn::RootState::Busy => report.in_use.push(path.join(crate::txn::CONTROL_DIR)),
            crate::txn::RootState::Done(Some(t)) => report.transactions.push(t),
        }
        Ok(report)
    }
}

/// Removes the temporary files of dead writers from directory `dir`, and
/// reports what it removed and which live writers' files it left alone.
///
/// Safe to run at any time, also while writers are active: a file whose
/// writer is alive is never touched.
///
/// # Examples
///
/// ```
/// # let dir = std::env::temp_dir();
/// let report = fstx::recover(&dir)?;
/// for path in &report.removed {
///     println!("removed stale {}", path.display());
/// }
/// # Ok::<(), fstx::Error>(())
/// ```
pub fn recover(dir: impl AsRef<Path>) -> Result<Recovery> {
    RecoverOptions::new().recover(dir)
}
