//! Atomic, durable replacement of one file.
//!
//! The protocol (see `docs/design.md` for why each step is there):
//!
//! 1. open the target's parent directory once (or use a [`Dir`]'s handle);
//!    every later path operation is relative to that directory handle
//!    (`openat`, `renameat`, `unlinkat`);
//! 2. resolve the target according to the [`Symlinks`] policy (at most
//!    [`MAX_SYMLINK_HOPS`](crate::MAX_SYMLINK_HOPS) links), refuse
//!    directories, FIFOs and devices; identify the filesystem (once per
//!    directory handle) and refuse those where the guarantee cannot hold;
//! 3. list the old file's extended attributes through the directory handle
//!    (without opening the file);
//! 4. create a temporary file beside the target, exclusively
//!    (`O_CREAT|O_EXCL|O_NOFOLLOW|O_CLOEXEC`), under an unpredictable name
//!    starting with [`TEMP_PREFIX`](crate::TEMP_PREFIX), with a mode no
//!    wider than the final one for anyone, whoever ends up owning it;
//! 5. take an exclusive `flock` on it and `fstat` it: a link count of 0
//!    means [`recover`](crate::recover()) removed it in the window before the
//!    lock (start again); the same `fstat` gives its owner and mode;
//! 6. the caller writes the new content;
//! 7. on commit: carry owner, group, mode and extended attributes over from
//!    the old file (only the calls that change something), `fsync` the
//!    temporary file, `rename` it over the target, flush the directory —
//!    shared with concurrent replaces through the same directory handle
//!    (see [`Dir`]).

use std::ffi::{OsStr, OsString};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::dir::{Dir, DirShared};
use crate::error::{invalid, Error, Result, State, Step};
use crate::metadata::{
    carry_to, create_mode, has_access_acl, unsupported, Carry, Old, XattrSource,
};
use crate::paths::{resolve, Resolved};
use crate::storage::{self, Fd, FileKind, OpenHow, Stat, Storage, SyncKind};
use crate::temp::create_temp;

// Re-exported at their old paths for `txn/`, which still names them there.

/// How durable a committed replace is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// When `commit` returns `Ok`, the new content survives a power cut:
    /// the file is flushed before the rename, the directory after it.
    #[default]
    Durable,
    /// The file is flushed before the rename, the directory is not: after a
    /// power cut the target holds the complete old or the complete new
    /// content, but an acknowledged update may be lost.
    Consistent,
    /// No flushes at all. Atomic for other processes, **not crash-safe**:
    /// after a power cut the file may be empty or hold zeros. For tmpfs and
    /// tests.
    None,
}

/// What to do when the target is a symbolic link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Symlinks {
    /// Replace the file the link resolves to (following at most
    /// [`MAX_SYMLINK_HOPS`](crate::MAX_SYMLINK_HOPS) links); the link stays
    /// a link. A dangling link creates its target.
    #[default]
    Follow,
    /// Replace the link itself with a regular file. The new file gets the
    /// mode of a new file, never the link's own `0o777`.
    ReplaceLink,
    /// Fail with an error.
    Refuse,
}

/// What to do when the target has several hard links.
///
/// A replace gives the target's *name* a new inode: the other names keep
/// pointing at the old content. That is the only way to stay atomic, but it
/// breaks the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HardLinks {
    /// Replace the name; other links keep the old content.
    #[default]
    Allow,
    /// Fail with an error instead of breaking the link.
    Refuse,
}

/// Options for an atomic replace, in the style of [`std::fs::OpenOptions`].
///
/// # Examples
///
/// ```
/// # let dir = tempdir();
/// # let path = dir.join("settings.json");
/// use fstx::{Durability, Options};
/// use std::io::Write;
///
/// let mut file = Options::new().durability(Durability::Durable).mode(0o600).open(&path)?;
/// file.write_all(b"{\"volume\": 7}\n")?;
/// file.commit()?;
/// assert_eq!(std::fs::read(&path)?, b"{\"volume\": 7}\n");
/// # fn tempdir() -> std::path::PathBuf {
/// #     let d = std::env::temp_dir().join(format!("fstx-doc-{}", std::process::id()));
/// #     std::fs::create_dir_all(&d).unwrap(); d }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Options {
    pub(crate) durability: Durability,
    mode: Option<u32>,
    pub(crate) symlinks: Symlinks,
    pub(crate) hard_links: HardLinks,
    preserve_metadata: bool,
    preserve_xattrs: bool,
    keep_privileges: bool,
    pub(crate) allow_weak_fs: bool,
    pub(crate) verified: bool,
    /// An update's backup suffix, for a verified write's sequence number.
    pub(crate) backup_suffix: Option<std::ffi::OsString>,
    pub(crate) storage: Arc<dyn Storage>,
}

impl Default for Options {
    fn default() -> Options {
        Options::new()
    }
}

impl Options {
    /// Default options: `Durable`, follow symlinks, allow hard links, carry
    /// metadata and extended attributes, drop set-id bits and file
    /// capabilities, refuse filesystems where the guarantee cannot hold.
    pub fn new() -> Options {
        Options {
            durability: Durability::Durable,
            mode: None,
            symlinks: Symlinks::Follow,
            hard_links: HardLinks::Allow,
            preserve_metadata: true,
            preserve_xattrs: true,
            keep_privileges: false,
            allow_weak_fs: false,
            verified: false,
            backup_suffix: None,
            storage: storage::os(),
        }
    }

    /// Sets the durability level (default [`Durability::Durable`]).
    pub fn durability(&mut self, durability: Durability) -> &mut Options {
        self.durability = durability;
        self
    }

    /// Gives the new file exactly this mode (permission and, if
    /// [`keep_privileges`](Self::keep_privileges), set-id bits), not subject
    /// to the umask. Without it, an existing target's mode is kept and a new
    /// file gets `0o666 & !umask`.
    pub fn mode(&mut self, mode: u32) -> &mut Options {
        self.mode = Some(mode & 0o7777);
        self
    }

    /// Sets the symlink policy (default [`Symlinks::Follow`]).
    pub fn symlinks(&mut self, policy: Symlinks) -> &mut Options {
        self.symlinks = policy;
        self
    }

    /// Sets the hard-link policy (default [`HardLinks::Allow`]).
    pub fn hard_links(&mut self, policy: HardLinks) -> &mut Options {
        self.hard_links = policy;
        self
    }

    /// Whether to carry an existing target's owner, group, mode and (see
    /// [`preserve_xattrs`](Self::preserve_xattrs)) extended attributes over
    /// to the new file (default `true`). Without it the new file is created
    /// as a new file would be, with nothing carried over.
    pub fn preserve_metadata(&mut self, yes: bool) -> &mut Options {
        self.preserve_metadata = yes;
        self
    }

    /// Whether to carry extended attributes (ACLs, security labels, `user.*`)
    /// over (default `true`). Attributes the filesystem or the process may not
    /// set are skipped.
    pub fn preserve_xattrs(&mut self, yes: bool) -> &mut Options {
        self.preserve_xattrs = yes;
        self
    }

    /// Keep set-user-ID/set-group-ID bits and `security.capability` on the
    /// new content (default `false`: new content does not inherit privileges,
    /// as the kernel also drops them on an ordinary write).
    pub fn keep_privileges(&mut self, yes: bool) -> &mut Options {
        self.keep_privileges = yes;
        self
    }

    /// Accept filesystems where the guarantee cannot hold (vfat, exfat,
    /// network filesystems), getting only what they give. Default `false`:
    /// `Durable` and `Consistent` replaces there fail with
    /// [`io::ErrorKind::Unsupported`].
    pub fn allow_weak_filesystems(&mut self, yes: bool) -> &mut Options {
        self.allow_weak_fs = yes;
        self
    }

    /// Wrap the content in a verified envelope (magic, version, length,
    /// CRC-32C, a sequence number one higher than the replaced version's),
    /// which [`read`](crate::read()) checks (default `false`). The bytes
    /// written are the payload; positions and seeks are relative to it.
    pub fn verified(&mut self, yes: bool) -> &mut Options {
        self.verified = yes;
        self
    }

    internals_fn! {
        /// Routes every filesystem call through `storage` (a simulator or fault
        /// injector). Default: the real filesystem.
        fn storage(&mut self, storage: Arc<dyn Storage>) -> &mut Options {
            self.storage = storage;
            self
        }
    }

    /// Starts replacing `path`: creates the temporary file. Nothing is visible
    /// at `path` until [`AtomicFile::commit`].
    pub fn open(&self, path: impl AsRef<Path>) -> Result<AtomicFile> {
        AtomicFile::open_with("write", path.as_ref(), self)
    }

    /// Replaces `path` with `contents` atomically (and durably, by default).
    pub fn write(&self, path: impl AsRef<Path>, contents: impl AsRef<[u8]>) -> Result<()> {
        let path = path.as_ref();
        let mut file = AtomicFile::open_with("write", path, self)?;
        file.write_all_or_cleanup(contents.as_ref())?;
        file.commit()
    }

    /// Opens directory `path` once for many replaces of files in it, with
    /// these options (see [`Dir`]).
    ///
    /// # Errors
    ///
    /// The directory cannot be opened ([`Step::OpenDirectory`]), or its
    /// filesystem cannot keep the promise of a `Durable` or `Consistent`
    /// replace ([`Step::IdentifyFilesystem`], [`io::ErrorKind::Unsupported`]).
    pub fn open_dir(&self, path: impl AsRef<Path>) -> Result<Dir> {
        Dir::open_with(path.as_ref(), self)
    }
}

/// Replaces `path` with `contents`, atomically and durably.
///
/// Mirrors [`std::fs::write`], with [`Options`]' defaults: durable, follow
/// symlinks, carry metadata, refuse filesystems where this cannot hold.
///
/// # Guarantees
///
/// - **Atomic**: readers (in any process, without a lock) see the complete
///   old or the complete new content at every instant, never a mix, never
///   an empty or partial file; after a power cut too.
/// - **Durable**: once it returns `Ok`, the new content survives a power
///   cut (the new file is flushed before the rename, the directory after
///   it; on btrfs with `syncfs`).
/// - **Metadata**: the file keeps its owner, group, mode and extended
///   attributes; no instant is more permissive than the final file; set-id
///   bits and `security.capability` are not inherited.
/// - **No garbage**: a failed call removes its temporary file (or says it
///   could not); a writer killed mid-way leaves at most one, which
///   [`recover`](crate::recover()) removes.
///
/// Not guaranteed: other hard links of `path` keep the old content; storage
/// that lies about flushes can lose acknowledged data (see
/// `docs/design.md`).
///
/// # Errors
///
/// Every error names the operation (`write`), the path and the
/// [`Step`](crate::Step), keeps the kernel's [`io::ErrorKind`], and says the
/// [`State`]: [`State::NotCommitted`] (`path` unchanged, nothing left
/// behind), [`State::NotCommittedTempLeft`] (unchanged, a temporary file
/// left that [`recover`](crate::recover()) removes), or
/// [`State::CommittedNotDurable`] (the new content is in place but the
/// directory flush failed: a power cut may undo it; never retried).
/// `path` being a directory, a FIFO or a device, a symlink loop, or a
/// filesystem where a replace cannot be crash-atomic (vfat, NFS, ...:
/// [`io::ErrorKind::Unsupported`]) fail before anything is written.
///
/// # Examples
///
/// ```
/// # let path = std::env::temp_dir().join(format!("fstx-doc-write-{}", std::process::id()));
/// fstx::write(&path, b"hello\n")?;
/// assert_eq!(std::fs::read(&path)?, b"hello\n");
/// # std::fs::remove_file(&path)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn write(path: impl AsRef<Path>, contents: impl AsRef<[u8]>) -> Result<()> {
    Options::new().write(path, contents)
}

/// What was found at the target name when the replace started.
#[derive(Debug)]
struct Existing {
    stat: Stat,
    /// Its extended attribute names (empty when not carried).
    xattrs: Vec<OsString>,
    /// The old file, open, when its attributes could not be listed through
    /// the directory handle (no `/proc`).
    file: Option<Fd>,
}

/// A file being replaced atomically. Write the new content, then
/// [`commit`](Self::commit). Dropping it without committing discards the new
/// content and leaves the target untouched; [`discard`](Self::discard) does
/// the same and reports cleanup errors.
///
/// `AtomicFile` does no buffering of its own: wrap it in a
/// [`std::io::BufWriter`] for many small writes. Memory use does not depend
/// on the size of the content.
#[derive(Debug)]
pub struct AtomicFile {
    op: &'static str,
    /// The path as the caller gave it (for messages).
    path: PathBuf,
    /// The directory the replace happens in, after resolving symlinks.
    dir: Arc<DirShared>,
    name: OsString,
    temp_name: OsString,
    temp: Option<Fd>,
    /// The temporary file's stat right after it was created and locked.
    temp_stat: Stat,
    existing: Option<Existing>,
    pos: u64,
    opts: Options,
}

impl AtomicFile {
    /// Starts replacing `path` with default [`Options`].
    pub fn create(path: impl AsRef<Path>) -> Result<AtomicFile> {
        Options::new().open(path)
    }

    pub(crate) fn open_with(op: &'static str, path: &Path, opts: &Options) -> Result<AtomicFile> {
        let target = resolve(op, path, opts)?;
        AtomicFile::open_resolved(op, path, target, opts)
    }

    /// Starts replacing a target already found by [`resolve`].
    pub(crate) fn open_resolved(
        op: &'static str,
        path: &Path,
        target: Resolved,
        opts: &Options,
    ) -> Result<AtomicFile> {
        let st = &*opts.storage;
        let fail = |step, e| Error::new(op, path, step, State::NotCommitted, e);
        let Resolved {
            dir,
            name,
            existing: existing_stat,
        } = target;

        let existing = match existing_stat {
            Some(stat) if opts.preserve_metadata => {
                if opts.preserve_xattrs {
                    old_xattrs(st, &dir.fd, &name, stat).map_err(|(step, e)| fail(step, e))?
                } else {
                    Some(Existing {
                        stat,
                        xattrs: Vec::new(),
                        file: None,
                    })
                }
            }
            _ => None,
        };

        // A temporary file never more permissive than the final file (see
        // `create_mode`); a new file: `0o666` less the umask, which is then
        // the final mode; an explicit mode for a new file (which stays ours).
        let create_mode = match (&existing, opts.mode) {
            (Some(old), mode) => {
                create_mode(mode.unwrap_or(old.stat.mode), has_access_acl(&old.xattrs))
            }
            (None, Some(mode)) => mode & 0o777,
            (None, None) => 0o666,
        };
        let (temp_name, temp, temp_stat) =
            create_temp(st, &dir.fd, &name, create_mode).map_err(|(step, e)| fail(step, e))?;

        Ok(AtomicFile {
            op,
            path: path.to_path_buf(),
            dir,
            name,
            temp_name,
            temp: Some(temp),
            temp_stat,
            existing,
            pos: 0,
            opts: opts.clone(),
        })
    }

    /// Writes all of `buf`; on failure removes the temporary file and says
    /// which state that leaves.
    pub(crate) fn write_all_or_cleanup(&mut self, buf: &[u8]) -> Result<()> {
        if let Err(e) = self.write_all(buf) {
            let state = self.cleanup();
            return Err(self.error(Step::WriteTemporaryFile, state, e));
        }
        Ok(())
    }

    /// The path this file will replace, as given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory handle the replace happens in.
    pub(crate) fn dir(&self) -> &Fd {
        &self.dir.fd
    }

    /// The filesystem's `statfs` magic, if already read.
    pub(crate) fn fs_magic(&self) -> Option<u64> {
        self.dir.known_magic()
    }

    /// The target's final name in [`dir`](Self::dir).
    pub(crate) fn name(&self) -> &OsStr {
        &self.name
    }

    /// The path of the temporary file holding the new content.
    pub fn temp_path(&self) -> PathBuf {
        self.dir.path.join(&self.temp_name)
    }

    fn temp(&self) -> &Fd {
        self.temp
            .as_ref()
            .expect("temporary file is open until commit or discard")
    }

    fn error(&self, step: Step, state: State, e: io::Error) -> Error {
        Error::new(self.op, &self.path, step, state, e)
    }

    /// Removes the temporary file; says which state that leaves.
    pub(crate) fn cleanup(&mut self) -> State {
        let Some(temp) = self.temp.take() else {
            return State::NotCommitted;
        };
        let result = self
            .opts
            .storage
            .unlink_at(&self.dir.fd, &self.temp_name, false);
        drop(temp);
        match result {
            Ok(()) => State::NotCommitted,
            Err(_) => State::NotCommittedTempLeft {
                temp: self.temp_path(),
            },
        }
    }

    /// Bytes before the payload: the envelope's header when verified.
    fn base(&self) -> u64 {
        if self.opts.verified {
            crate::envelope::ENVELOPE_HEADER_LEN
        } else {
            0
        }
    }

    /// Writes the verified envelope's header (see [`crate::envelope`]).
    fn seal(&self) -> std::result::Result<(), (Step, io::Error)> {
        let st = &*self.opts.storage;
        let seq = crate::envelope::next_seq(
            st,
            &self.dir.fd,
            &self.name,
            self.opts.backup_suffix.as_deref(),
            true,
        )
        .map_err(|e| (Step::ReadSequenceNumber, e))?;
        crate::envelope::seal(st, self.temp(), seq).map_err(|e| (Step::WriteTemporaryFile, e))
    }

    /// Gives the new file the old file's metadata (see [`carry_to`]).
    fn carry_metadata(&self) -> io::Result<()> {
        carry_to(
            &*self.opts.storage,
            self.temp(),
            Some(&self.temp_stat),
            self.existing.as_ref().map(|old| Old {
                stat: &old.stat,
                xattrs: &old.xattrs,
                source: match &old.file {
                    Some(file) => XattrSource::File(file),
                    None => XattrSource::At(&self.dir.fd, &self.name),
                },
            }),
            &Carry {
                mode: self.opts.mode,
                keep_privileges: self.opts.keep_privileges,
                xattrs: self.opts.preserve_xattrs,
            },
        )
    }

    /// Makes the new content visible at the target path, atomically, and
    /// (with [`Durability::Durable`]) durable.
    ///
    /// # Errors
    ///
    /// The error's [`State`] says where things stand:
    /// [`State::NotCommitted`] (target untouched, temporary file removed),
    /// [`State::NotCommittedTempLeft`] (cleanup failed too), or
    /// [`State::CommittedNotDurable`] (the rename happened, the directory
    /// flush failed). A failed flush is never retried.
    pub fn commit(mut self) -> Result<()> {
        let st = self.opts.storage.clone();
        if self.opts.verified {
            if let Err((step, e)) = self.seal() {
                let state = self.cleanup();
                return Err(self.error(step, state, e));
            }
        }
        if let Err(e) = self.carry_metadata() {
            let state = self.cleanup();
            return Err(self.error(Step::CarryMetadataToNewFile, state, e));
        }
        // From here until its rename, a durable replace is pending: a
        // concurrent replace about to flush the directory lets it join.
        let pending = (self.opts.durability == Durability::Durable).then(|| self.dir.pending());
        if self.opts.durability != Durability::None {
            if let Err(e) = st.sync(self.temp(), SyncKind::All) {
                let state = self.cleanup();
                return Err(self.error(Step::FsyncTemporaryFile, state, e));
            }
        }
        let dir = &self.dir.fd;
        if let Err(e) = st.rename_at(dir, &self.temp_name, dir, &self.name, false) {
            let state = self.cleanup();
            return Err(self.error(Step::RenameTemporaryFileOverTarget, state, e));
        }
        // The temporary name is gone; the new file is the target now.
        let temp = self.temp.take();
        if self.opts.durability == Durability::Durable {
            // Shared with concurrent replaces in this directory (group commit).
            if let Err((step, e)) = self.dir.flush_after_rename(&*st, pending) {
                return Err(self.error(step, State::CommittedNotDurable, e));
            }
        }
        drop(temp);
        Ok(())
    }

    /// Discards the new content, leaving the target untouched, and reports
    /// whether the temporary file could be removed.
    pub fn discard(mut self) -> Result<()> {
        let Some(temp) = self.temp.take() else {
            return Ok(());
        };
        let result = self
            .opts
            .storage
            .unlink_at(&self.dir.fd, &self.temp_name, false);
        drop(temp);
        result.map_err(|e| {
            let state = State::NotCommittedTempLeft {
                temp: self.temp_path(),
            };
            self.error(Step::RemoveTemporaryFile, state, e)
        })
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        // Not committed: best effort; `discard` reports errors, `recover` sweeps.
        self.cleanup();
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let at = self.pos + self.base();
        let n = self.opts.storage.write_at(self.temp(), buf, at)?;
        self.pos += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for AtomicFile {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let new = match pos {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            SeekFrom::End(d) => self
                .opts
                .storage
                .stat(self.temp())?
                .size
                .saturating_sub(self.base())
                .checked_add_signed(d),
        };
        let new = new.ok_or_else(|| {
            invalid(
                io::ErrorKind::InvalidInput,
                "seek to a negative or overflowing position",
            )
        })?;
        self.pos = new;
        Ok(new)
    }
}

/// The old file's extended attribute names, listed through the directory
/// handle without opening the file (`list_xattr_at`). Where that fails
/// with `ENOENT` (no `/proc`, or the file went away), the file is opened
/// and listed through its handle, kept for reading the values; if it is
/// gone, there is no old file. Attributes the filesystem or the process
/// may not list are skipped.
fn old_xattrs(
    st: &dyn Storage,
    dir: &Fd,
    name: &OsStr,
    stat: Stat,
) -> std::result::Result<Option<Existing>, (Step, io::Error)> {
    let existing = |xattrs, file| Ok(Some(Existing { stat, xattrs, file }));
    match st.list_xattr_at(dir, name) {
        Ok(xattrs) => return existing(xattrs, None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) if unsupported(&e) => return existing(Vec::new(), None),
        Err(e) => return Err((Step::InspectTarget, e)),
    }
    let file = match st.open(dir, name, OpenHow::READ_NOFOLLOW) {
        Ok(file) => file,
        // Not readable by us: carry what stat says, skip xattrs.
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => return existing(Vec::new(), None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err((Step::OpenTarget, e)),
    };
    let now = st.stat(&file).map_err(|e| (Step::InspectTarget, e))?;
    if now.kind != FileKind::Regular {
        return Err((
            Step::InspectTarget,
            invalid(
                io::ErrorKind::InvalidInput,
                "the target changed into something that is not a regular file",
            ),
        ));
    }
    match st.list_xattr(&file) {
        Ok(xattrs) => existing(xattrs, Some(file)),
        Err(e) if unsupported(&e) => existing(Vec::new(), None),
        Err(e) => Err((Step::InspectTarget, e)),
    }
}
