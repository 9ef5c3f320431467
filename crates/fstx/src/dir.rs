//! A directory opened once for many replaces ([`Dir`]), and what the
//! replaces in one directory share: the directory handle, the filesystem
//! type read once, and the directory flush (group commit,
//! [`DirShared::flush_after_rename`]).

use std::ffi::OsStr;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use crate::atomic::{AtomicFile, Durability, Options};
use crate::error::{invalid, Error, Result, State, Step};
use crate::fskind::FsClass;
use crate::storage::{Fd, Storage};

/// What every replace in one directory shares: the handle (every path
/// operation is relative to it), the filesystem's `statfs` magic once read,
/// and the group commit of directory flushes.
#[derive(Debug)]
pub(crate) struct DirShared {
    /// The directory handle.
    pub(crate) fd: Fd,
    /// The directory, as a path (for messages).
    pub(crate) path: PathBuf,
    /// The filesystem's `statfs` magic, once read. The handle keeps the
    /// filesystem mounted (a lazy unmount detaches it but keeps it alive),
    /// so it cannot change while the handle lives.
    magic: OnceLock<u64>,
    group: Mutex<Group>,
    flushed: Condvar,
}

/// The group commit's state. Flushes are numbered from 1 and run one at a
/// time; a replace whose rename is done needs flush `started + 1` as read
/// right after its rename (the first flush to *start* after the rename), or
/// any later one.
#[derive(Debug, Default)]
struct Group {
    /// Flushes started so far.
    started: u64,
    /// The last flush finished (`started` or `started - 1`).
    finished: u64,
    /// Flush number `started` is running.
    in_flight: bool,
    /// Callers waiting on `flushed` (no wake-up call when there are none).
    waiting: usize,
    /// Replaces between the start of their file flush and the end of their
    /// rename ([`Pending`]): a leader lets these join its flush.
    pending: usize,
    /// The first flush that failed: its number, step and error. Final: no
    /// flush starts after it, and every replace waiting for it or a later
    /// one gets its error.
    failed: Option<(u64, Step, Failure)>,
}

/// A flush error, kept to be reported to every replace it covered.
#[derive(Debug, Clone)]
struct Failure {
    raw: Option<i32>,
    kind: io::ErrorKind,
    message: String,
}

impl Failure {
    fn of(e: &io::Error) -> Failure {
        Failure {
            raw: e.raw_os_error(),
            kind: e.kind(),
            message: e.to_string(),
        }
    }

    fn to_io(&self) -> io::Error {
        match self.raw {
            Some(code) => io::Error::from_raw_os_error(code),
            None => io::Error::new(self.kind, self.message.clone()),
        }
    }
}

fn lock(m: &Mutex<Group>) -> MutexGuard<'_, Group> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl DirShared {
    /// Wraps a directory handle, nothing read yet.
    pub(crate) fn new(fd: Fd, path: PathBuf) -> Arc<DirShared> {
        Arc::new(DirShared {
            fd,
            path,
            magic: OnceLock::new(),
            group: Mutex::new(Group::default()),
            flushed: Condvar::new(),
        })
    }

    /// The filesystem's `statfs` magic, if already read.
    pub(crate) fn known_magic(&self) -> Option<u64> {
        self.magic.get().copied()
    }

    /// The filesystem's `statfs` magic, read once (`fstatfs`).
    fn magic(&self, st: &dyn Storage) -> io::Result<u64> {
        if let Some(m) = self.magic.get() {
            return Ok(*m);
        }
        let m = st.fs_type(&self.fd)?;
        Ok(*self.magic.get_or_init(|| m))
    }

    /// Refuses filesystems where a `Durable` or `Consistent` replace cannot
    /// hold (see [`FsClass::can_promise`]), unless the options accept them;
    /// reads the filesystem type at most once per handle.
    pub(crate) fn check_fs(&self, st: &dyn Storage, opts: &Options) -> io::Result<()> {
        if opts.durability == Durability::None || opts.allow_weak_fs {
            return Ok(());
        }
        if FsClass::from_magic(self.magic(st)?).can_promise() {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "this filesystem cannot make a replace crash-atomic (vfat/exfat/ntfs or network); \
                 allow weak filesystems explicitly to accept weaker semantics",
            ))
        }
    }

    /// The failure of an earlier directory flush through this handle, if
    /// any: final, so later replaces are refused.
    pub(crate) fn failed_flush(&self) -> Option<(Step, io::Error)> {
        lock(&self.group)
            .failed
            .as_ref()
            .map(|(_, step, f)| (*step, f.to_io()))
    }

    /// Makes every rename done in this directory before the call durable:
    /// returns `Ok` only after a directory flush (see
    /// [`sync_dir`](crate::durability::sync_dir)) that *started after* the
    /// call began has succeeded. Call it right after the rename.
    ///
    /// Group commit: flushes run one at a time. A caller finding none
    /// running starts one (it is the leader) and reports its result; a
    /// caller finding one running waits for it to end, then for the next
    /// one, which it or another waiter starts and which covers every rename
    /// done before it started. An error is final: it is reported to every
    /// caller that flush covered and to every later caller, and no flush
    /// starts after it (a retried flush could "succeed" with the renames
    /// lost).
    ///
    /// A leader does not start its flush while other replaces are
    /// [`Pending`] (their file flush started, their rename not done yet), up
    /// to [`GATHER_MAX`]: their renames are imminent, would need a flush of
    /// their own right after this one, and so join this one instead.
    /// `pending` is the caller's own (it is over: the rename is done).
    pub(crate) fn flush_after_rename(
        &self,
        st: &dyn Storage,
        pending: Option<Pending>,
    ) -> std::result::Result<(), (Step, io::Error)> {
        let mut g = lock(&self.group);
        if let Some(mut p) = pending {
            p.live = false;
            g.pending -= 1;
            if g.waiting > 0 {
                self.flushed.notify_all();
            }
        }
        // The first flush to start from now on covers our rename.
        let need = g.started + 1;
        loop {
            if g.finished >= need {
                // Flush `need` ran; a failure of a later one does not concern us.
                return match &g.failed {
                    Some((n, step, f)) if *n == need => Err((*step, f.to_io())),
                    _ => Ok(()),
                };
            }
            if let Some((_, step, f)) = &g.failed {
                // Our flush will never run.
                return Err((*step, f.to_io()));
            }
            if !g.in_flight {
                g.in_flight = true;
                // Let the imminent renames join (they wait: `in_flight`).
                let mut deadline = None;
                while g.pending > 0 {
                    let now = Instant::now();
                    let until = *deadline.get_or_insert(now + GATHER_MAX);
                    if now >= until {
                        break;
                    }
                    g.waiting += 1;
                    g = self
                        .flushed
                        .wait_timeout(g, until - now)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                    g.waiting -= 1;
                }
                g.started += 1;
                let n = g.started;
                debug_assert_eq!(n, need);
                drop(g);
                let mut leader = Leader {
                    dir: self,
                    n,
                    done: false,
                };
                let result = self.sync(st);
                leader.finish(result.as_ref().err());
                return result;
            }
            g.waiting += 1;
            g = self.flushed.wait(g).unwrap_or_else(PoisonError::into_inner);
            g.waiting -= 1;
        }
    }

    /// Marks a replace as pending: its file flush is about to start and its
    /// rename will follow (see [`flush_after_rename`](Self::flush_after_rename)).
    pub(crate) fn pending(self: &Arc<DirShared>) -> Pending {
        lock(&self.group).pending += 1;
        Pending {
            dir: self.clone(),
            live: true,
        }
    }

    /// One directory flush: `fsync`, or on btrfs `syncfs` (see
    /// [`sync_dir`](crate::durability::sync_dir)).
    fn sync(&self, st: &dyn Storage) -> std::result::Result<(), (Step, io::Error)> {
        let magic = self.magic(st).map_err(|e| (Step::IdentifyFilesystem, e))?;
        crate::durability::sync_dir(st, &self.fd, Some(magic))
    }
}

/// How long a leader waits at most for pending replaces to rename (a
/// bound for a file flush that hangs; normally the wait ends when the last
/// pending rename is done).
const GATHER_MAX: Duration = Duration::from_millis(50);

/// A replace between the start of its file flush and the end of its rename;
/// dropped without reaching [`DirShared::flush_after_rename`] (a failed
/// flush or rename, a durability without directory flush), it just leaves.
#[derive(Debug)]
pub(crate) struct Pending {
    dir: Arc<DirShared>,
    live: bool,
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.live {
            let mut g = lock(&self.dir.group);
            g.pending -= 1;
            if g.waiting > 0 {
                self.dir.flushed.notify_all();
            }
        }
    }
}

/// The leader of flush `n`: records its end, also when the flush panics
/// (then as a failure, so that waiters do not wait forever).
struct Leader<'a> {
    dir: &'a DirShared,
    n: u64,
    done: bool,
}

impl Leader<'_> {
    fn finish(&mut self, error: Option<&(Step, io::Error)>) {
        self.done = true;
        let mut g = lock(&self.dir.group);
        g.in_flight = false;
        g.finished = self.n;
        if let Some((step, e)) = error {
            g.failed = Some((self.n, *step, Failure::of(e)));
        }
        let waiting = g.waiting > 0;
        drop(g);
        if waiting {
            self.dir.flushed.notify_all();
        }
    }
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        if !self.done {
            let e = io::Error::other("the directory flush panicked");
            self.finish(Some(&(Step::FsyncDirectory, e)));
        }
    }
}

/// A directory opened once, for many replaces of files in it.
///
/// [`write`](Self::write) and [`create`](Self::create) replace a file in
/// this directory exactly as [`fstx::write`](crate::write()) and
/// [`AtomicFile::create`] do, with the same guarantees, but the directory
/// is opened and its filesystem identified once, when the handle is opened.
/// A `Dir` is `Send + Sync`: share it (`&Dir` or `Arc<Dir>`) between
/// threads, and concurrent durable replaces share directory flushes (group
/// commit): a replace whose rename is done waits for one directory flush
/// that started after its rename, and one flush covers every rename done
/// before it started.
///
/// # Guarantees
///
/// Those of [`fstx::write`](crate::write()), for each replace: atomic,
/// durable once it returns `Ok` (with [`Durability::Durable`], the
/// directory flush it waited for *started after* its rename completed),
/// metadata carried, temporary files locked against
/// [`recover`](crate::recover()) and removed on failure. A symlink followed
/// into another directory is replaced there, with that directory's own
/// handle and flush.
///
/// # Errors
///
/// As [`fstx::write`](crate::write()), with `write` as the operation and
/// the directory joined with the name as the path. `name` must be one file
/// name (no `/`, not `.` or `..`): anything else fails with
/// [`io::ErrorKind::InvalidInput`] before anything is touched. A directory
/// flush error is final for the handle: every replace that flush covered
/// gets it ([`State::CommittedNotDurable`], the kernel's errno; the flush
/// is never retried), and every later replace through the handle fails with
/// it before touching anything ([`State::NotCommitted`]); open the
/// directory again to go on.
///
/// # Examples
///
/// ```
/// # let path = std::env::temp_dir().join(format!("fstx-doc-dir-{}", std::process::id()));
/// # std::fs::create_dir_all(&path)?;
/// let dir = fstx::Dir::open(&path)?;
/// std::thread::scope(|s| {
///     for i in 0..4 {
///         let dir = &dir;
///         s.spawn(move || dir.write(format!("sensor-{i}.json"), b"{}\n"));
///     }
/// });
/// dir.write("config.json", b"{\"volume\": 7}\n")?;
/// assert_eq!(std::fs::read(path.join("config.json"))?, b"{\"volume\": 7}\n");
/// # std::fs::remove_dir_all(&path)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Dir {
    shared: Arc<DirShared>,
    opts: Options,
}

impl Dir {
    /// Opens a directory for replaces with default [`Options`] (durable,
    /// follow symlinks, carry metadata, refuse weak filesystems).
    pub fn open(path: impl AsRef<Path>) -> Result<Dir> {
        Options::new().open_dir(path)
    }

    pub(crate) fn open_with(path: &Path, opts: &Options) -> Result<Dir> {
        let st = &*opts.storage;
        let fail = |step, e| Error::new("open_dir", path, step, State::NotCommitted, e);
        let fd = st
            .open_dir(None, path, true)
            .map_err(|e| fail(Step::OpenDirectory, e))?;
        let shared = DirShared::new(fd, path.to_path_buf());
        shared
            .check_fs(st, opts)
            .map_err(|e| fail(Step::IdentifyFilesystem, e))?;
        Ok(Dir {
            shared,
            opts: opts.clone(),
        })
    }

    /// The directory's path, as given.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    internals_fn! {
        /// How many replaces are waiting for a directory flush (for tests
        /// that build exact interleavings).
        fn flush_waiters(&self) -> usize {
            lock(&self.shared.group).waiting
        }
    }

    /// Replaces file `name` in this directory with `contents` (see
    /// [`fstx::write`](crate::write())).
    pub fn write(&self, name: impl AsRef<Path>, contents: impl AsRef<[u8]>) -> Result<()> {
        let name = name.as_ref();
        let mut file = self.create_op("write", name)?;
        file.write_all_or_cleanup(contents.as_ref())?;
        file.commit()
    }

    /// Starts replacing file `name` in this directory (see
    /// [`AtomicFile::create`]); the new content is visible at
    /// [`AtomicFile::commit`].
    pub fn create(&self, name: impl AsRef<Path>) -> Result<AtomicFile> {
        self.create_op("write", name.as_ref())
    }

    fn create_op(&self, op: &'static str, name: &Path) -> Result<AtomicFile> {
        let path = self.shared.path.join(name);
        let name = one_name(name)
            .map_err(|e| Error::new(op, &path, Step::ParsePath, State::NotCommitted, e))?;
        // A failed directory flush is final for the handle (its errno, its step).
        if let Some((step, e)) = self.shared.failed_flush() {
            return Err(Error::new(op, &path, step, State::NotCommitted, e));
        }
        let target = crate::paths::resolve_in(op, &path, &self.opts, self.shared.clone(), name)?;
        AtomicFile::open_resolved(op, &path, target, &self.opts)
    }
}

/// `name` as one file name in a directory.
fn one_name(name: &Path) -> io::Result<&OsStr> {
    let mut parts = name.components();
    match (parts.next(), parts.next()) {
        (Some(Component::Normal(n)), None)
            if !std::os::unix::ffi::OsStrExt::as_bytes(name.as_os_str()).contains(&b'/') =>
        {
            Ok(n)
        }
        _ => Err(invalid(
            io::ErrorKind::InvalidInput,
            "a replace through a directory handle takes one file name, not a path",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::one_name;
    use std::path::Path;

    #[test]
    fn only_single_names() {
        assert_eq!(one_name(Path::new("a.json")).unwrap(), "a.json");
        for bad in ["", ".", "..", "a/b", "/a", "a/", "./a"] {
            assert!(one_name(Path::new(bad)).is_err(), "{bad}");
        }
    }
}
