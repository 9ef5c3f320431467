//! Concurrent flushes: the number of serial flush rounds per commit does
//! not grow with the number of files.
//!
//! A [`Flusher`] takes handles to flush and flushes them according to the
//! [`Flush`] strategy:
//!
//! - `Threads(n)`: `n` worker threads `fsync` handles as they arrive (staged
//!   files are handed over as soon as they are written, so flushing overlaps
//!   staging and at most a bounded number of descriptors stay open); a
//!   [`barrier`](Flusher::barrier) waits for all of them. Each file is
//!   flushed through the descriptor it was written with, so a writeback
//!   error is reported to us (see CRASH-SAFETY.md, "fsync failure").
//! - `Serial`: each handle is flushed at once, in the caller's thread, in
//!   order. Deterministic: simulators get the same call sequence every run.
//! - `SyncFs`: handles are closed without a flush and a barrier issues one
//!   `syncfs` on the root (reports writeback errors only on Linux ≥ 5.8, and
//!   flushes every other process's dirty data on the filesystem too).

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::durability::is_btrfs;
use crate::storage::{Fd, Storage, SyncKind};

/// How a transaction flushes many files at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Flush {
    /// `SyncFs` where the kernel reports a failed `syncfs`: writeback
    /// errors from Linux 5.8, and on btrfs a failed transaction commit from
    /// Linux 5.17 (the storage seam's `Caps`); `Threads` elsewhere.
    #[default]
    Auto,
    /// This many flusher threads (at least 1); `Serial` where the storage
    /// does not allow concurrent flushes (a deterministic simulator).
    Threads(usize),
    /// One flush after another in the calling thread (deterministic).
    Serial,
    /// One `syncfs` per round (Linux ≥ 5.8 for error reporting).
    SyncFs,
}

/// Default number of flusher threads (flushes wait on the device, not the CPU).
pub const DEFAULT_FLUSH_THREADS: usize = 16;
/// Handles queued for the threads before `submit` blocks (bounds open descriptors).
const QUEUE: usize = 64;

type Job = (Arc<Fd>, SyncKind);

pub(crate) struct Flusher {
    mode: Flush,
    st: Arc<dyn Storage>,
    /// The handle `syncfs` goes through (opened before any staged write).
    fs_handle: Arc<Fd>,
    tx: Option<SyncSender<Job>>,
    workers: Vec<JoinHandle<()>>,
    error: Arc<Mutex<Option<io::Error>>>,
    /// fsync-family calls issued so far.
    pub(crate) calls: Arc<AtomicU64>,
    /// Whether anything was submitted since the last barrier.
    pending: bool,
    /// btrfs: a round of per-file flushes ends with a `syncfs` too, because
    /// a directory `fsync` there can return before its log is on disk
    /// (see [`crate::durability::sync_dir`]).
    commit_btrfs: bool,
}

impl std::fmt::Debug for Flusher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flusher")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl Flusher {
    /// `magic`: the filesystem's `statfs` magic if the caller already read it.
    pub(crate) fn new(
        mode: Flush,
        st: Arc<dyn Storage>,
        fs_handle: Arc<Fd>,
        magic: Option<u64>,
    ) -> Flusher {
        let caps = st.caps();
        // Unidentified: assume btrfs (one syncfs more per round, never less safe).
        let mut btrfs = None;
        let mut is_btrfs =
            || *btrfs.get_or_insert_with(|| is_btrfs(&*st, &fs_handle, magic).unwrap_or(true));
        let mode = match mode {
            // One syncfs per round: the disk sees a constant number of cache
            // flushes whatever the number of files (measured in design.md).
            // Only where the kernel reports a failed syncfs: on btrfs that
            // is a failed transaction commit, reported from Linux 5.17 on
            // (found by the simulator under Linux 5.10: a BEGIN record's
            // syncfs failed silently and its staging outlived it).
            Flush::Auto
                if caps.syncfs_reports_writeback_errors
                    && (caps.syncfs_reports_fs_errors || !is_btrfs()) =>
            {
                Flush::SyncFs
            }
            Flush::Auto => Flush::Threads(DEFAULT_FLUSH_THREADS),
            m => m,
        };
        let mode = match mode {
            // Same flushes, one after another, where the storage wants one
            // call order (a deterministic simulator).
            Flush::Threads(_) if !caps.concurrent_flushes => Flush::Serial,
            Flush::Threads(n) => Flush::Threads(n.max(1)),
            m => m,
        };
        let commit_btrfs = mode != Flush::SyncFs && is_btrfs();
        Flusher {
            mode,
            commit_btrfs,
            st,
            fs_handle,
            tx: None,
            workers: Vec::new(),
            error: Arc::new(Mutex::new(None)),
            calls: Arc::new(AtomicU64::new(0)),
            pending: false,
        }
    }

    fn record(&self, e: io::Error) {
        let mut slot = self
            .error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if slot.is_none() {
            *slot = Some(e);
        }
    }

    /// Hands over a handle to flush; it is closed once flushed.
    pub(crate) fn submit(&mut self, fd: Arc<Fd>, kind: SyncKind) {
        self.pending = true;
        match self.mode {
            Flush::Serial | Flush::Auto => {
                self.calls.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = self.st.sync(&fd, kind) {
                    self.record(e);
                }
            }
            Flush::SyncFs => drop(fd),
            Flush::Threads(n) => {
                if self.tx.is_none() {
                    let (tx, rx) = sync_channel::<Job>(QUEUE);
                    let rx = Arc::new(Mutex::new(rx));
                    for _ in 0..n {
                        let rx = rx.clone();
                        let st = self.st.clone();
                        let error = self.error.clone();
                        let calls = self.calls.clone();
                        self.workers.push(std::thread::spawn(move || loop {
                            let job = {
                                let rx =
                                    rx.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                                rx.recv()
                            };
                            let Ok((fd, kind)) = job else { return };
                            calls.fetch_add(1, Ordering::Relaxed);
                            if let Err(e) = st.sync(&fd, kind) {
                                let mut slot = error
                                    .lock()
                                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                                if slot.is_none() {
                                    *slot = Some(e);
                                }
                            }
                        }));
                    }
                    self.tx = Some(tx);
                }
                if let Some(tx) = &self.tx {
                    if let Err(std::sync::mpsc::SendError((fd, kind))) = tx.send((fd, kind)) {
                        // Workers gone (cannot happen unless one panicked): flush here.
                        self.calls.fetch_add(1, Ordering::Relaxed);
                        if let Err(e) = self.st.sync(&fd, kind) {
                            self.record(e);
                        }
                    }
                }
            }
        }
    }

    /// Waits until everything submitted is flushed; returns the first error.
    /// Returns whether a flush round actually happened.
    pub(crate) fn barrier(&mut self) -> io::Result<bool> {
        if !self.pending {
            return Ok(false);
        }
        self.pending = false;
        self.tx = None;
        let workers: Vec<_> = self.workers.drain(..).collect();
        for w in workers {
            if w.join().is_err() {
                self.record(io::Error::other("a flusher thread panicked"));
            }
        }
        if self.mode == Flush::SyncFs || self.commit_btrfs {
            self.calls.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = self.st.sync_fs(&self.fs_handle) {
                self.record(e);
            }
        }
        let e = self
            .error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        match e {
            Some(e) => Err(e),
            None => Ok(true),
        }
    }

    /// Flushes all `fds` concurrently and waits: one flush round.
    pub(crate) fn round(
        &mut self,
        fds: impl IntoIterator<Item = (Arc<Fd>, SyncKind)>,
    ) -> io::Result<bool> {
        for (fd, kind) in fds {
            self.submit(fd, kind);
        }
        self.barrier()
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.tx = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}
