//! The update lock: a sidecar lock file beside the target, locked with `flock`.
//!
//! # The lock object
//!
//! A lock on the target's own inode would be lost by the very replace it
//! protects: the rename gives the name a new inode, and a process that
//! opened the name before the rename would lock the old, unlinked inode
//! while another locks the new one. So fstx locks a **sidecar file** beside
//! the target (after resolving symlinks by the [`Symlinks`](crate::Symlinks)
//! policy):
//!
//! ```text
//! dir/settings.json             the target, replaced atomically by renames
//! dir/.fstx-lock.settings.json  the lock file: empty, never replaced, never deleted
//! ```
//!
//! - The lock file is created on first use (mode `0o644` less the umask),
//!   stays empty, and is **never deleted** by fstx — not by `update`, not by
//!   [`recover`](crate::recover()) — so everyone who may wait on it waits on
//!   the same inode. It is not flushed: its content and even its existence
//!   after a power cut do not matter, since locks do not survive a reboot.
//! - The lock is an exclusive `flock` on a handle of its own for every
//!   acquisition. `flock` locks belong to the open file description, so two
//!   threads of one process exclude each other just as two processes do.
//! - **A holder that dies releases the lock**: the kernel closes its handles
//!   and drops the `flock`, whether the process exited, panicked, or was
//!   killed with `SIGKILL`. No stale-lock detection, no lock timeouts to
//!   guess, no PID files. Handles are opened `O_CLOEXEC`, so a child that
//!   `exec`s does not inherit the lock.
//! - If someone deletes or replaces the lock file by hand while it is held,
//!   a new locker could lock a different inode. After locking, fstx checks
//!   that the name still refers to the inode it locked, and starts again if
//!   not, so two holders can never coexist through a replaced lock file.
//! - After locking, the target is resolved again; if a symlink on the way
//!   changed while waiting, the lock is released and taken for the new target.
//!
//! Names: `.fstx-lock.` followed by the target's name; a name too long for
//! that is cut and suffixed with a CRC-32C of the full name (two targets
//! sharing a lock would only be serialized together, never less).
//!
//! The lock is advisory: it serializes `fstx::update`, [`FileLock`] holders
//! and `fstx update` commands. A writer that ignores it (a plain
//! [`write`](crate::write()), an editor) is not serialized; its replace is
//! still atomic, but it can be lost by a concurrent update. Readers never
//! need the lock: every replace is an atomic rename, so a reader that opens
//! the target sees one complete version.
//!
//! Network filesystems are refused by default anyway; over NFS, `flock` is
//! emulated with byte-range locks and a client that loses its lease loses
//! the lock.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::atomic::Options;
use crate::error::{invalid, Error, Result, State, Step};
use crate::names::lock_name;
use crate::paths::{resolve, Resolved};
use crate::storage::{Create, Fd, LockMode, OpenHow};

// Public here too (`fstx::lock::LOCK_PREFIX`), as it always was.

/// How long to wait for a lock held by someone else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Wait {
    /// Block until the lock is free (default).
    #[default]
    Block,
    /// Do not wait: fail with [`io::ErrorKind::WouldBlock`] if it is held.
    Try,
    /// Wait at most this long, then fail with [`io::ErrorKind::TimedOut`].
    ///
    /// `flock` has no timeout of its own: fstx polls with a non-blocking
    /// lock, backing off from 1 ms to 25 ms between attempts. There is no
    /// fairness among waiters.
    Timeout(Duration),
}

/// An exclusive lock on a file's sidecar lock file: the lock
/// [`update`](crate::update()) takes. Released on drop, or by
/// [`unlock`](Self::unlock), or by the kernel when the process dies.
///
/// Hold one to make several operations on a file exclusive with respect to
/// concurrent updates (for example, to read a file and a derived file
/// consistently). Do not call [`update`](crate::update()) on the same file
/// while holding its `FileLock`: the update would wait for the lock forever.
///
/// See the [module documentation](crate::lock) for the design.
///
/// # Examples
///
/// ```
/// # let dir = std::env::temp_dir().join(format!("fstx-doc-lock-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir)?;
/// use std::time::Duration;
/// let path = dir.join("counter");
///
/// let lock = fstx::FileLock::lock(&path)?;
/// // Held: a try-lock, in this or any other process, fails now.
/// assert!(fstx::FileLock::try_lock(&path)?.is_none());
/// let err = fstx::FileLock::lock_timeout(&path, Duration::from_millis(20)).unwrap_err();
/// assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
/// lock.unlock()?;
///
/// assert!(fstx::FileLock::try_lock(&path)?.is_some());
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct FileLock {
    file: Fd,
    lock_path: PathBuf,
    opts: Options,
}

impl FileLock {
    /// Locks `path`, waiting as long as it takes.
    pub fn lock(path: impl AsRef<Path>) -> Result<FileLock> {
        FileLock::with_options(path, &Options::new(), Wait::Block)
    }

    /// Locks `path` if nobody holds its lock; `Ok(None)` if somebody does.
    pub fn try_lock(path: impl AsRef<Path>) -> Result<Option<FileLock>> {
        match FileLock::with_options(path, &Options::new(), Wait::Try) {
            Ok(lock) => Ok(Some(lock)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Locks `path`, waiting at most `timeout`; fails with
    /// [`io::ErrorKind::TimedOut`] after that.
    pub fn lock_timeout(path: impl AsRef<Path>, timeout: Duration) -> Result<FileLock> {
        FileLock::with_options(path, &Options::new(), Wait::Timeout(timeout))
    }

    /// Locks `path` with the storage and symlink policy of `opts`, waiting
    /// as `wait` says.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::WouldBlock`] ([`Wait::Try`]) or
    /// [`io::ErrorKind::TimedOut`] ([`Wait::Timeout`]) when the lock is held;
    /// the errors of resolving the target (see [`Options::open`]); errors
    /// creating or locking the lock file (for example `PermissionDenied` in
    /// a directory where the lock file does not exist and cannot be created).
    /// The state is always [`State::NotCommitted`].
    pub fn with_options(path: impl AsRef<Path>, opts: &Options, wait: Wait) -> Result<FileLock> {
        let path = path.as_ref();
        acquire("lock", path, opts, wait).map(|(lock, _)| lock)
    }

    /// The path of the lock file.
    pub fn lock_path(&self) -> &Path {
        &self.lock_path
    }

    /// Releases the lock, reporting errors (dropping releases it silently).
    pub fn unlock(self) -> Result<()> {
        self.opts.storage.unlock(&self.file).map_err(|e| {
            Error::new(
                "unlock",
                &self.lock_path,
                Step::Unlock,
                State::NotCommitted,
                e,
            )
        })
    }
}

/// Locks the target of `path` and resolves it again under the lock.
///
/// Returns the lock and the target as it is while the lock is held.
pub(crate) fn acquire(
    op: &'static str,
    path: &Path,
    opts: &Options,
    wait: Wait,
) -> Result<(FileLock, Resolved)> {
    const ROUNDS: usize = 64;
    let st = &*opts.storage;
    let fail = |step, e| Error::new(op, path, step, State::NotCommitted, e);
    let deadline = match wait {
        Wait::Timeout(t) => Some(Instant::now() + t),
        _ => None,
    };
    // Each round: resolve, lock the sidecar, then check that the lock file
    // is still the one we locked and the target still resolves there.
    for _ in 0..ROUNDS {
        let target = resolve(op, path, opts)?;
        let name = lock_name(&target.name);
        let how = OpenHow {
            read: true,
            write: false,
            create: Create::IfMissing(0o644),
            truncate: false,
            follow: false,
            nonblock: true,
        };
        let file = st
            .open(&target.dir.fd, &name, how)
            .map_err(|e| fail(Step::OpenLockFile, e))?;
        let locked = match (wait, deadline) {
            (Wait::Block, _) => st
                .lock(&file, LockMode::Exclusive, true)
                .map_err(|e| fail(Step::Lock, e))?,
            (Wait::Try, _) => st
                .lock(&file, LockMode::Exclusive, false)
                .map_err(|e| fail(Step::Lock, e))?,
            (Wait::Timeout(_), Some(deadline)) => {
                poll(opts, &file, deadline).map_err(|e| fail(Step::Lock, e))?
            }
            (Wait::Timeout(_), None) => unreachable!("a timeout has a deadline"),
        };
        if !locked {
            let e = match wait {
                Wait::Try => invalid(
                    io::ErrorKind::WouldBlock,
                    "the file is locked by another update",
                ),
                _ => invalid(
                    io::ErrorKind::TimedOut,
                    "timed out waiting for the lock held by another update",
                ),
            };
            return Err(fail(Step::Lock, e));
        }
        // The name must still refer to the inode we locked (nobody deleted
        // or replaced the lock file by hand).
        let held = st.stat(&file).map_err(|e| fail(Step::InspectLockFile, e))?;
        match st.stat_at(&target.dir.fd, &name, false) {
            Ok(named) if named.same_inode(&held) => {}
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(fail(Step::InspectLockFile, e)),
        }
        // The target must still resolve to the same directory and name (a
        // symlink on the way may have changed while we waited).
        let now = resolve(op, path, opts)?;
        let same_dir = match (st.stat(&target.dir.fd), st.stat(&now.dir.fd)) {
            (Ok(a), Ok(b)) => a.same_inode(&b),
            (Err(e), _) | (_, Err(e)) => return Err(fail(Step::InspectParentDirectory, e)),
        };
        if !same_dir || now.name != target.name {
            continue;
        }
        let lock = FileLock {
            file,
            lock_path: now.dir.path.join(&name),
            opts: opts.clone(),
        };
        return Ok((lock, now));
    }
    Err(fail(
        Step::Lock,
        invalid(
            io::ErrorKind::Other,
            "the lock file or the target's symlinks kept changing while locking",
        ),
    ))
}

/// Tries to lock `file` until `deadline`, backing off between attempts.
fn poll(opts: &Options, file: &Fd, deadline: Instant) -> io::Result<bool> {
    let mut pause = Duration::from_millis(1);
    loop {
        if opts.storage.lock(file, LockMode::Exclusive, false)? {
            return Ok(true);
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(false);
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(25));
    }
}
