//! Locked read-modify-write with optional atomic backups.
//!
//! The protocol of one update (see `docs/design.md`):
//!
//! 1. take the target's lock (a sidecar lock file, see [`crate::lock`]) and
//!    resolve the target again under it;
//! 2. open the current file (if any) and hand its content to the caller's
//!    function; if the function fails or declines, stop: nothing was written;
//! 3. write the new content to a temporary file beside the target;
//! 4. with backups: rotate older generations (`NAME~` to `NAME~2`, …), then
//!    make the previous version the backup `NAME~` — each step a hard link
//!    made under a temporary name and renamed over the backup name, or, where
//!    links are impossible, a flushed copy renamed the same way — and flush
//!    the directory, so the backup is durable before the target changes;
//! 5. commit the temporary file (flush, rename over the target, flush the
//!    directory), then release the lock.

use std::ffi::{OsStr, OsString};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::atomic::{AtomicFile, Options};
use crate::backup::{BackupKind, BackupMethod};
use crate::envelope::Rejected;
use crate::error::{invalid, Error, Result, State, Step};
use crate::lock::{acquire, FileLock, Wait};
use crate::paths::Resolved;
use crate::storage::{Fd, FileKind, OpenHow, Stat, Storage};

/// What an update did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Updated {
    /// Whether the file was replaced (`false` when the function declined).
    pub replaced: bool,
    /// The backup made of the previous version, if any (none when backups
    /// are off, the file did not exist, or nothing was replaced).
    pub backup: Option<BackupKind>,
}

/// Options for [`update`] and [`update_stream`]: the replace [`Options`],
/// how long to wait for the lock, and backups.
///
/// # Examples
///
/// ```
/// # let dir = std::env::temp_dir().join(format!("fstx-doc-uo-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir)?;
/// use std::time::Duration;
/// use fstx::{BackupKind, UpdateOptions};
///
/// let path = dir.join("config");
/// let mut opts = UpdateOptions::new();
/// opts.backup("~").generations(2).timeout(Duration::from_secs(5));
/// for version in 1..=3 {
///     let done = opts.update(&path, |_old| Ok(Some(format!("v{version}\n").into_bytes())))?;
///     assert!(done.replaced);
/// }
/// assert_eq!(std::fs::read(&path)?, b"v3\n");
/// assert_eq!(std::fs::read(dir.join("config~"))?, b"v2\n");
/// assert_eq!(std::fs::read(dir.join("config~2"))?, b"v1\n");
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct UpdateOptions {
    pub(crate) opts: Options,
    wait: Wait,
    backup: Option<OsString>,
    pub(crate) generations: usize,
    pub(crate) method: BackupMethod,
}

impl Default for UpdateOptions {
    fn default() -> UpdateOptions {
        UpdateOptions::new()
    }
}

impl UpdateOptions {
    /// Default options: default [`Options`], wait for the lock as long as it
    /// takes, no backups.
    pub fn new() -> UpdateOptions {
        UpdateOptions {
            opts: Options::new(),
            wait: Wait::Block,
            backup: None,
            generations: 1,
            method: BackupMethod::LinkOrCopy,
        }
    }

    /// The options of the replace itself (durability, symlink policy, mode,
    /// storage, ...).
    pub fn options(&mut self, opts: Options) -> &mut UpdateOptions {
        self.opts = opts;
        self
    }

    /// How long to wait for the lock (default [`Wait::Block`]).
    pub fn wait(&mut self, wait: Wait) -> &mut UpdateOptions {
        self.wait = wait;
        self
    }

    /// Waits at most `timeout` for the lock, then fails with
    /// [`io::ErrorKind::TimedOut`].
    pub fn timeout(&mut self, timeout: Duration) -> &mut UpdateOptions {
        self.wait = Wait::Timeout(timeout);
        self
    }

    /// Keeps the previous version as `NAME` + `suffix` (the usual suffix is
    /// `"~"`). An empty suffix turns backups off.
    pub fn backup(&mut self, suffix: impl AsRef<OsStr>) -> &mut UpdateOptions {
        let suffix = suffix.as_ref();
        self.backup = (!suffix.is_empty()).then(|| suffix.to_os_string());
        self
    }

    /// Keeps `n` generations of backups: `NAME~` (the newest), `NAME~2`, …
    /// `NAME~n` (the oldest). Implies backups with suffix `"~"` unless a
    /// suffix was set; `0` turns backups off. Default 1.
    pub fn generations(&mut self, n: usize) -> &mut UpdateOptions {
        if n == 0 {
            self.backup = None;
            self.generations = 1;
        } else {
            self.generations = n;
            if self.backup.is_none() {
                self.backup = Some(OsString::from("~"));
            }
        }
        self
    }

    /// How backups are made (default [`BackupMethod::LinkOrCopy`]).
    pub fn backup_method(&mut self, method: BackupMethod) -> &mut UpdateOptions {
        self.method = method;
        self
    }

    /// Updates `path` under its lock. See [`update`].
    pub fn update<F>(&self, path: impl AsRef<Path>, f: F) -> Result<Updated>
    where
        F: FnOnce(Option<&[u8]>) -> io::Result<Option<Vec<u8>>>,
    {
        let path = path.as_ref();
        let (lock, target) = acquire("update", path, &self.opts, self.wait)?;
        let mut old = self.open_old(path, &target)?;
        let old_bytes = match old.as_mut() {
            // Verified: the newest version that verifies, FILE or a backup.
            _ if self.opts.verified => self.read_verified(path)?,
            Some(file) => Some(
                crate::io::read_to_end(&*file.storage, &file.fd, file.len)
                    .map_err(|e| fail(path, Step::ReadCurrentContent, e))?,
            ),
            None => None,
        };
        let new = f(old_bytes.as_deref()).map_err(|e| {
            Error::new("update", path, Step::UpdateFunction, State::NotCommitted, e)
        })?;
        drop(old_bytes);
        let Some(new) = new else {
            return Ok(Updated {
                replaced: false,
                backup: None,
            });
        };
        let mut file = AtomicFile::open_resolved("update", path, target, &self.replace_options())?;
        if let Err(e) = file.write_all(&new) {
            let state = file.cleanup();
            return Err(Error::new(
                "update",
                path,
                Step::WriteTemporaryFile,
                state,
                e,
            ));
        }
        self.finish(path, file, old.as_ref(), lock)
    }

    /// Updates `path` under its lock, streaming. See [`update_stream`].
    pub fn update_stream<F>(&self, path: impl AsRef<Path>, f: F) -> Result<Updated>
    where
        F: FnOnce(Option<&mut OldFile>, &mut AtomicFile) -> io::Result<bool>,
    {
        let path = path.as_ref();
        let (lock, target) = acquire("update", path, &self.opts, self.wait)?;
        let mut old = self.open_old(path, &target)?;
        // Verified: the function reads the newest version that verifies
        // (FILE or a backup); the backup is still made of FILE itself.
        let mut source = if self.opts.verified {
            self.open_verified(path)?
        } else {
            None
        };
        let mut file = AtomicFile::open_resolved("update", path, target, &self.replace_options())?;
        let given = if self.opts.verified {
            source.as_mut()
        } else {
            old.as_mut()
        };
        let commit = match f(given, &mut file) {
            Ok(commit) => commit,
            Err(e) => {
                let state = file.cleanup();
                return Err(Error::new("update", path, Step::UpdateFunction, state, e));
            }
        };
        drop(source);
        if !commit {
            file.discard()?;
            return Ok(Updated {
                replaced: false,
                backup: None,
            });
        }
        self.finish(path, file, old.as_ref(), lock)
    }

    /// The replace's options, knowing the backup suffix (a verified
    /// write's sequence number is above every backup's).
    fn replace_options(&self) -> Options {
        let mut opts = self.opts.clone();
        opts.backup_suffix.clone_from(&self.backup);
        opts
    }

    /// The candidates a verified update reads: the target and its backups
    /// (this update's suffix and generations, or `~` while they exist).
    fn read_options(&self) -> crate::envelope::ReadOptions {
        let mut r = crate::envelope::ReadOptions::new();
        r.storage_(self.opts.storage.clone());
        if let Some(suffix) = &self.backup {
            r.backup(suffix).generations(self.generations);
        }
        r
    }

    /// The newest verified version among the target and its backups
    /// (`None` if none exists), for a verified update's function.
    fn read_verified(&self, path: &Path) -> Result<Option<Vec<u8>>> {
        match self.read_options().read(path) {
            Ok(out) => Ok(Some(out.content)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(fail(path, Step::ReadCurrentContent, e.into_io_error())),
        }
    }

    /// The newest verified version among the target and its backups, its
    /// payload checked in bounded memory and handed over as an [`OldFile`]
    /// positioned at the payload (`None` if no candidate exists).
    fn open_verified(&self, path: &Path) -> Result<Option<OldFile>> {
        let chosen = match self.read_options().open_newest(path) {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(fail(path, Step::ReadCurrentContent, e.into_io_error())),
        };
        let st = &self.opts.storage;
        let stat = st
            .stat(&chosen.fd)
            .map_err(|e| fail(path, Step::InspectCurrentFile, e))?;
        Ok(Some(OldFile {
            storage: st.clone(),
            fd: chosen.fd,
            stat,
            offset: chosen.value.offset,
            len: chosen.value.len,
            pos: 0,
            origin: Origin {
                path: chosen.path,
                seq: chosen.seq,
                rejected: chosen.rejected,
                fell_back: chosen.fell_back,
            },
        }))
    }

    /// Opens the current version of the target, if there is one.
    fn open_old(&self, path: &Path, target: &Resolved) -> Result<Option<OldFile>> {
        if target.existing.is_none() {
            return Ok(None);
        }
        let st = &self.opts.storage;
        let fd = match st.open(&target.dir.fd, &target.name, OpenHow::READ_NOFOLLOW) {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(fail(path, Step::OpenCurrentFile, e)),
        };
        let stat = st
            .stat(&fd)
            .map_err(|e| fail(path, Step::InspectCurrentFile, e))?;
        if stat.kind != FileKind::Regular {
            return Err(fail(
                path,
                Step::InspectCurrentFile,
                invalid(
                    io::ErrorKind::InvalidInput,
                    "the target is not a regular file",
                ),
            ));
        }
        Ok(Some(OldFile {
            storage: st.clone(),
            fd,
            stat,
            offset: 0,
            len: stat.size,
            pos: 0,
            origin: Origin {
                path: path.to_path_buf(),
                seq: None,
                rejected: Vec::new(),
                fell_back: false,
            },
        }))
    }

    /// Makes the backup (if asked and there is a previous version), commits,
    /// and releases the lock.
    fn finish(
        &self,
        path: &Path,
        mut file: AtomicFile,
        old: Option<&OldFile>,
        lock: FileLock,
    ) -> Result<Updated> {
        let backup = match (&self.backup, old) {
            (Some(suffix), Some(old)) => match self.make_backup(&file, old, suffix) {
                Ok(kind) => Some(kind),
                Err((step, e)) => {
                    let state = file.cleanup();
                    return Err(Error::new("update", path, step, state, e));
                }
            },
            _ => None,
        };
        file.commit()?;
        drop(lock);
        Ok(Updated {
            replaced: true,
            backup,
        })
    }
}

fn fail(path: &Path, step: Step, e: io::Error) -> Error {
    Error::new("update", path, step, State::NotCommitted, e)
}

/// The current version of a file being updated, for [`update_stream`]:
/// readable and seekable, independent of anything written to the new file.
///
/// In a verified update ([`Options::verified`]) it is the payload of the
/// newest version that verifies, FILE's or a backup's (its checksum already
/// checked); [`path`](Self::path), [`seq`](Self::seq),
/// [`fell_back`](Self::fell_back) and [`rejected`](Self::rejected) say
/// which, and why.
#[derive(Debug)]
pub struct OldFile {
    storage: Arc<dyn Storage>,
    pub(crate) fd: Fd,
    pub(crate) stat: Stat,
    /// Where the content starts in the file (after an envelope's header).
    offset: u64,
    len: u64,
    pos: u64,
    origin: Origin,
}

/// Which file an [`OldFile`] is, and why.
#[derive(Debug)]
struct Origin {
    path: PathBuf,
    seq: Option<u64>,
    rejected: Vec<Rejected>,
    fell_back: bool,
}

impl OldFile {
    /// The size of the current version, in bytes (in a verified update, of
    /// its payload).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the current version is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The file this content comes from: the target, or in a verified
    /// update a backup when the target is damaged or missing.
    pub fn path(&self) -> &Path {
        &self.origin.path
    }

    /// The sequence number of its envelope (`None` unless verified).
    pub fn seq(&self) -> Option<u64> {
        self.origin.seq
    }

    /// Whether a verified update fell back to a backup.
    pub fn fell_back(&self) -> bool {
        self.origin.fell_back
    }

    /// The candidates a verified update did not use, and why (see
    /// [`ReadOutcome::rejected`](crate::ReadOutcome::rejected)).
    pub fn rejected(&self) -> &[Rejected] {
        &self.origin.rejected
    }
}

impl Read for OldFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // A payload ends where its envelope says (it is the file's end too,
        // as the header was checked against the size); a plain file is read
        // to its end.
        let want = if self.offset > 0 {
            let left = self.len.saturating_sub(self.pos);
            usize::try_from(left).map_or(buf.len(), |n| n.min(buf.len()))
        } else {
            buf.len()
        };
        if want == 0 {
            return Ok(0);
        }
        let n = self
            .storage
            .read_at(&self.fd, &mut buf[..want], self.offset + self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for OldFile {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let new = match pos {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
        };
        self.pos = new.ok_or_else(|| {
            invalid(
                io::ErrorKind::InvalidInput,
                "seek to a negative or overflowing position",
            )
        })?;
        Ok(self.pos)
    }
}

/// Read-modify-write of one file under an exclusive cross-process lock.
///
/// Takes `path`'s lock (waiting as long as it takes), reads the current
/// content (`None` if the file does not exist), and calls `f` with it. If
/// `f` returns `Ok(Some(new))`, replaces the file with `new` atomically and
/// durably, then releases the lock; `Ok(None)` leaves the file as it is.
///
/// # Guarantees
///
/// - **No lost updates**: updates of one file by threads of one process and
///   by separate processes are serialized; each `f` sees the content the
///   previous update committed.
/// - **Atomic and durable**: as [`write`](crate::write()): the file holds the
///   complete old or the complete new content at every instant, for readers
///   (who need no lock) and after a power cut; once `update` returns `Ok`,
///   the new content survives a power cut.
/// - **Dies cleanly**: a process killed while holding the lock releases it
///   (the kernel drops its `flock`); the file is complete old or new; a
///   temporary file it leaves is removed by [`recover`](crate::recover()).
/// - **Backups** (with [`UpdateOptions::backup`]): at every instant, also
///   after a crash, each backup name holds a complete earlier version; once
///   the target holds the new content, `NAME~` holds the version it replaced.
///
/// The lock is advisory: writers that do not take it (a plain
/// [`write`](crate::write()), other programs) are not serialized.
///
/// # Errors
///
/// If `f` fails, the file is untouched and the error is returned with step
/// [`Step::UpdateFunction`]; [`Error::into_io_error`] gives back `f`'s error.
/// Other errors are those of [`AtomicFile::commit`], with the same
/// [`State`]s; failures before the commit leave the target untouched.
///
/// # Examples
///
/// The counter from many processes: never loses a count.
///
/// ```
/// # let dir = std::env::temp_dir().join(format!("fstx-doc-update-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir)?;
/// let path = dir.join("count");
/// let threads: Vec<_> = (0..4)
///     .map(|_| {
///         let path = path.clone();
///         std::thread::spawn(move || {
///             for _ in 0..25 {
///                 fstx::update(&path, |old| {
///                     let n: u64 = match old {
///                         Some(bytes) => String::from_utf8_lossy(bytes).trim().parse().unwrap(),
///                         None => 0,
///                     };
///                     Ok(Some(format!("{}\n", n + 1).into_bytes()))
///                 })
///                 .unwrap();
///             }
///         })
///     })
///     .collect();
/// for t in threads {
///     t.join().unwrap();
/// }
/// assert_eq!(std::fs::read_to_string(&path)?, "100\n");
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn update<F>(path: impl AsRef<Path>, f: F) -> Result<Updated>
where
    F: FnOnce(Option<&[u8]>) -> io::Result<Option<Vec<u8>>>,
{
    UpdateOptions::new().update(path, f)
}

/// Streaming read-modify-write, for content of any size in constant memory.
///
/// Like [`update`], but `f` gets the current version as an [`OldFile`]
/// (`None` if the file does not exist) and writes the new content into the
/// [`AtomicFile`] itself; it returns `Ok(true)` to commit what it wrote or
/// `Ok(false)` to leave the file as it is. Same guarantees and errors as
/// [`update`].
///
/// With [`Options::verified`] (in [`UpdateOptions::options`]), `f` reads
/// the payload of the newest version that verifies among the target and its
/// backups, as [`read`](crate::read()) chooses it (its checksum is checked
/// first, in bounded memory, and [`OldFile::fell_back`] says whether it is
/// a backup's); the backup is still made of the target itself. What `f`
/// writes is the payload: the header is written last, at offset 0 of the
/// temporary file, after the payload was read back to checksum it, before
/// the file is flushed. Memory stays bounded on both sides.
///
/// # Examples
///
/// Appending a line to a log without ever exposing a partial file:
///
/// ```
/// # let dir = std::env::temp_dir().join(format!("fstx-doc-stream-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir)?;
/// use std::io::{copy, Write};
/// let path = dir.join("journal.txt");
/// for line in ["first\n", "second\n"] {
///     fstx::update_stream(&path, |old, new| {
///         if let Some(old) = old {
///             copy(old, new)?;
///         }
///         new.write_all(line.as_bytes())?;
///         Ok(true)
///     })?;
/// }
/// assert_eq!(std::fs::read_to_string(&path)?, "first\nsecond\n");
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn update_stream<F>(path: impl AsRef<Path>, f: F) -> Result<Updated>
where
    F: FnOnce(Option<&mut OldFile>, &mut AtomicFile) -> io::Result<bool>,
{
    UpdateOptions::new().update_stream(path, f)
}
