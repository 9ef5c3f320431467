//! The deferred tail of a commit ([`TxnOptions::defer_directory_flush`]):
//! a commit that returns after its commit round and its renames leaves the
//! flush of the directories it changed and the retirement of its journal to
//! the next call on the same root in this process (`begin`, a snapshot that
//! finds the journal, `recover`, [`TxnOptions::sync`]).
//!
//! Nothing here is needed for crash safety: the journal stays a valid
//! COMMIT record until the tail retires it, and any recovery (in this
//! process or another) redoes it, verifying every file. The registry only
//! lets this process finish cheaply — flush and retire, without re-reading
//! the data — what it knows it applied.
//!
//! [`TxnOptions::defer_directory_flush`]: super::TxnOptions::defer_directory_flush
//! [`TxnOptions::sync`]: super::TxnOptions::sync

use std::io;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use super::journal::RelPath;
use crate::storage::{Fd, Storage};

/// A commit whose tail is pending.
pub(super) struct Deferred {
    /// The storage it went through (a root is identified within one).
    storage: Weak<dyn Storage>,
    dev: u64,
    ino: u64,
    /// Its sequence number: the tail acts only while the journal holds it.
    pub(super) seq: u64,
    /// The directories its apply changed.
    pub(super) touched: Vec<RelPath>,
}

static PENDING: Mutex<Vec<Deferred>> = Mutex::new(Vec::new());

fn same(d: &Deferred, storage: &Arc<dyn Storage>) -> bool {
    std::ptr::eq(
        Weak::as_ptr(&d.storage).cast::<()>(),
        Arc::as_ptr(storage).cast::<()>(),
    ) && d.storage.strong_count() > 0
}

/// Records the pending tail of the commit `seq` on `root`.
pub(super) fn register(
    storage: &Arc<dyn Storage>,
    root: &Fd,
    seq: u64,
    touched: Vec<RelPath>,
) -> io::Result<()> {
    let s = storage.stat(root)?;
    let mut pending = PENDING.lock().unwrap_or_else(PoisonError::into_inner);
    // Forget tails of storages that are gone, and an older one of this root.
    pending.retain(|d| {
        d.storage.strong_count() > 0 && !(same(d, storage) && (d.dev, d.ino) == (s.dev, s.ino))
    });
    pending.push(Deferred {
        storage: Arc::downgrade(storage),
        dev: s.dev,
        ino: s.ino,
        seq,
        touched,
    });
    Ok(())
}

/// Takes the pending tail of `root`, if this process left one.
pub(super) fn take(storage: &Arc<dyn Storage>, root: &Fd) -> io::Result<Option<Deferred>> {
    if PENDING
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .all(|d| !same(d, storage))
    {
        return Ok(None);
    }
    let s = storage.stat(root)?;
    let mut pending = PENDING.lock().unwrap_or_else(PoisonError::into_inner);
    let at = pending
        .iter()
        .position(|d| same(d, storage) && (d.dev, d.ino) == (s.dev, s.ino));
    Ok(at.map(|i| pending.swap_remove(i)))
}
