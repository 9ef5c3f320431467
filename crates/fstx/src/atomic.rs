//! Atomic, durable replacement of one file.
//!
//! The protocol (see `docs/design.md` for why each step is there):
//!
//! 1. open the target's parent directory once; every later path operation is
//!    relative to that directory handle (`openat`, `renameat`, `unlinkat`);
//! 2. resolve the target according to the [`Symlinks`] policy (at most
//!    [`MAX_SYMLINK_HOPS`] links), refuse directories, FIFOs and devices;
//! 3. create a temporary file beside the target, exclusively
//!    (`O_CREAT|O_EXCL|O_NOFOLLOW|O_CLOEXEC`), under an unpredictable name
//!    starting with [`TEMP_PREFIX`], with a mode no wider than the final one;
//! 4. take an exclusive `flock` on it and check that the name still refers
//!    to the locked inode (closes the race with [`recover`](crate::recover()));
//! 5. the caller writes the new content;
//! 6. on commit: carry owner, group, mode and extended attributes over from
//!    the old file, `fsync` the temporary file, `rename` it over the target,
//!    `fsync` the directory.

use std::ffi::{OsStr, OsString};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{invalid, Error, Result, State, Step};
use crate::storage::{self, Fd, FileKind, LockMode, OpenHow, Stat, Storage, SyncKind};

/// Prefix of fstx's temporary file names: `.fstx-tmp.<16 hex digits>.<name>`.
pub const TEMP_PREFIX: &str = ".fstx-tmp.";

/// At most this many symlinks are followed when resolving a target.
pub const MAX_SYMLINK_HOPS: usize = 40;

/// The longest file name Linux filesystems accept.
const NAME_MAX: usize = 255;

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
    /// [`MAX_SYMLINK_HOPS`] links); the link stays a link. A dangling link
    /// creates its target.
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

/// Deliberate protocol bugs, compiled in only with the `planted-bugs`
/// feature, so that tests can show their checks fail.
#[cfg(feature = "planted-bugs")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PlantedBugs {
    /// Skip the flush of the temporary file before the rename.
    pub no_file_sync: bool,
    /// Skip the flush of the directory after the rename.
    pub no_dir_sync: bool,
    /// Retry a failed file flush and carry on if the retry succeeds.
    pub retry_fsync: bool,
    /// `update` with backups: skip the directory flush between making the
    /// backup and replacing the target, so a power cut can keep the replace
    /// and lose the backup (the previous version is then gone).
    pub backup_no_dir_sync: bool,
    /// `update` with copied backups: skip the flush of the copy before it is
    /// renamed to the backup name (a power cut can leave a torn backup).
    pub backup_copy_no_sync: bool,
    /// On btrfs, make the rename durable with `fsync` of the directory, as on
    /// other filesystems, instead of the `syncfs` that commits the btrfs
    /// transaction (see `docs/design.md` §6).
    pub no_btrfs_commit: bool,
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
    symlinks: Symlinks,
    hard_links: HardLinks,
    preserve_metadata: bool,
    preserve_xattrs: bool,
    keep_privileges: bool,
    allow_weak_fs: bool,
    pub(crate) storage: Arc<dyn Storage>,
    #[cfg(feature = "planted-bugs")]
    pub(crate) bugs: PlantedBugs,
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
            storage: storage::os(),
            #[cfg(feature = "planted-bugs")]
            bugs: PlantedBugs::default(),
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

    /// Routes every filesystem call through `storage` (a simulator or fault
    /// injector). Default: the real filesystem.
    pub fn storage(&mut self, storage: Arc<dyn Storage>) -> &mut Options {
        self.storage = storage;
        self
    }

    /// Plants deliberate protocol bugs (tests only).
    #[cfg(feature = "planted-bugs")]
    pub fn planted_bugs(&mut self, bugs: PlantedBugs) -> &mut Options {
        self.bugs = bugs;
        self
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
        if let Err(e) = file.write_all(contents.as_ref()) {
            let state = file.cleanup();
            return Err(Error::new(
                "write",
                path,
                Step::WriteTemporaryFile,
                state,
                e,
            ));
        }
        file.commit()
    }
}

/// Replaces `path` with `contents`, atomically and durably.
///
/// Mirrors [`std::fs::write`]: when it returns `Ok`, `path` holds exactly
/// `contents` and will after a power cut; when it fails, `path` is unchanged
/// (or, as the error's [`State`] says, already replaced but not confirmed
/// durable). Readers see the complete old or the complete new content, never
/// a mix.
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
    /// The old file, open for reading its extended attributes (`None` when
    /// the process may not open it).
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
    /// The directory the replace happens in, after resolving symlinks (for messages).
    dir_path: PathBuf,
    dir: Fd,
    name: OsString,
    temp_name: OsString,
    temp: Option<Fd>,
    existing: Option<Existing>,
    /// The filesystem's `statfs` magic, if already read (see [`Resolved`]).
    fs_magic: Option<u64>,
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
            dir_path,
            dir,
            name,
            existing: existing_stat,
            fs_magic,
        } = target;

        let existing = match existing_stat {
            Some(stat) if opts.preserve_metadata => {
                // Open the old file to read its metadata from the inode itself.
                match st.open(&dir, &name, OpenHow::READ_NOFOLLOW) {
                    Ok(file) => {
                        let stat = st.stat(&file).map_err(|e| fail(Step::InspectTarget, e))?;
                        if stat.kind != FileKind::Regular {
                            return Err(fail(
                                Step::InspectTarget,
                                invalid(
                                    io::ErrorKind::InvalidInput,
                                    "the target changed into something that is not a regular file",
                                ),
                            ));
                        }
                        Some(Existing {
                            stat,
                            file: Some(file),
                        })
                    }
                    // Not readable by us: carry what stat says, skip xattrs.
                    Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                        Some(Existing { stat, file: None })
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                    Err(e) => return Err(fail(Step::OpenTarget, e)),
                }
            }
            _ => None,
        };

        // A temporary file never more permissive than the final file: for an
        // existing target, only owner bits the old file had, until the owner
        // and group are set; for an explicit mode, likewise; for a new file,
        // `0o666` less the umask, which is then the final mode.
        let create_mode = match (&existing, opts.mode) {
            (Some(old), _) => old.stat.mode & 0o600,
            (_, Some(mode)) => mode & 0o600,
            _ => 0o666,
        };
        let (temp_name, temp) =
            create_temp(st, &dir, &name, create_mode).map_err(|(step, e)| fail(step, e))?;

        Ok(AtomicFile {
            op,
            path: path.to_path_buf(),
            dir_path,
            dir,
            name,
            temp_name,
            temp: Some(temp),
            existing,
            fs_magic,
            pos: 0,
            opts: opts.clone(),
        })
    }

    /// The path this file will replace, as given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory handle the replace happens in.
    pub(crate) fn dir(&self) -> &Fd {
        &self.dir
    }

    /// The filesystem's `statfs` magic, if already read.
    pub(crate) fn fs_magic(&self) -> Option<u64> {
        self.fs_magic
    }

    /// The target's final name in [`dir`](Self::dir).
    pub(crate) fn name(&self) -> &OsStr {
        &self.name
    }

    /// The path of the temporary file holding the new content.
    pub fn temp_path(&self) -> PathBuf {
        self.dir_path.join(&self.temp_name)
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
            .unlink_at(&self.dir, &self.temp_name, false);
        drop(temp);
        match result {
            Ok(()) => State::NotCommitted,
            Err(_) => State::NotCommittedTempLeft {
                temp: self.temp_path(),
            },
        }
    }

    /// Gives the new file the old file's metadata (see [`carry_metadata`]).
    fn carry_metadata(&self) -> io::Result<()> {
        carry_metadata(
            &*self.opts.storage,
            self.temp(),
            self.existing
                .as_ref()
                .map(|old| (&old.stat, old.file.as_ref())),
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
        if let Err(e) = self.carry_metadata() {
            let state = self.cleanup();
            return Err(self.error(Step::CarryMetadataToNewFile, state, e));
        }
        if self.opts.durability != Durability::None && !self.bug_no_file_sync() {
            if let Err(e) = self.sync_temp(&*st) {
                let state = self.cleanup();
                return Err(self.error(Step::FsyncTemporaryFile, state, e));
            }
        }
        if let Err(e) = st.rename_at(&self.dir, &self.temp_name, &self.dir, &self.name, false) {
            let state = self.cleanup();
            return Err(self.error(Step::RenameTemporaryFileOverTarget, state, e));
        }
        // The temporary name is gone; the new file is the target now.
        let temp = self.temp.take();
        if self.opts.durability == Durability::Durable && !self.bug_no_dir_sync() {
            if let Err((step, e)) =
                crate::fskind::sync_dir(&*st, &self.dir, self.fs_magic, !self.bug_no_btrfs_commit())
            {
                return Err(self.error(step, State::CommittedNotDurable, e));
            }
        }
        drop(temp);
        Ok(())
    }

    fn sync_temp(&self, st: &dyn Storage) -> io::Result<()> {
        let result = st.sync(self.temp(), SyncKind::All);
        #[cfg(feature = "planted-bugs")]
        if result.is_err() && self.opts.bugs.retry_fsync {
            // PLANTED BUG: the retry "succeeds" on Linux after the pages were
            // marked clean, with the data lost.
            return st.sync(self.temp(), SyncKind::All);
        }
        result
    }

    #[cfg(feature = "planted-bugs")]
    fn bug_no_file_sync(&self) -> bool {
        self.opts.bugs.no_file_sync
    }
    #[cfg(not(feature = "planted-bugs"))]
    #[allow(clippy::unused_self)]
    fn bug_no_file_sync(&self) -> bool {
        false
    }
    #[cfg(feature = "planted-bugs")]
    fn bug_no_btrfs_commit(&self) -> bool {
        self.opts.bugs.no_btrfs_commit
    }
    #[cfg(not(feature = "planted-bugs"))]
    #[allow(clippy::unused_self)]
    fn bug_no_btrfs_commit(&self) -> bool {
        false
    }
    #[cfg(feature = "planted-bugs")]
    fn bug_no_dir_sync(&self) -> bool {
        self.opts.bugs.no_dir_sync
    }
    #[cfg(not(feature = "planted-bugs"))]
    #[allow(clippy::unused_self)]
    fn bug_no_dir_sync(&self) -> bool {
        false
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
            .unlink_at(&self.dir, &self.temp_name, false);
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
        let n = self.opts.storage.write_at(self.temp(), buf, self.pos)?;
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

/// Where a replace of `path` happens, after resolving symlinks by the policy.
#[derive(Debug)]
pub(crate) struct Resolved {
    /// The directory, as a path (for messages).
    pub(crate) dir_path: PathBuf,
    /// The directory handle every later operation is relative to.
    pub(crate) dir: Fd,
    /// The final name in `dir`.
    pub(crate) name: OsString,
    /// The regular file found there, if any.
    pub(crate) existing: Option<Stat>,
    /// The filesystem's `statfs` magic, if the weak-filesystem check read it.
    pub(crate) fs_magic: Option<u64>,
}

/// Resolves `path` by the options' symlink policy and checks that it may be
/// replaced (a regular file or nothing; hard-link policy; filesystem class).
pub(crate) fn resolve(op: &'static str, path: &Path, opts: &Options) -> Result<Resolved> {
    let st = &*opts.storage;
    let fail = |step, e| Error::new(op, path, step, State::NotCommitted, e);
    let (mut dir_path, mut name) = split(path).map_err(|e| fail(Step::ParsePath, e))?;
    let mut dir = st
        .open_dir(None, &dir_path, true)
        .map_err(|e| fail(Step::OpenParentDirectory, e))?;

    // Resolve the target by the symlink policy, relative to directory handles.
    let mut hops = 0;
    let existing_stat = loop {
        let stat = match st.stat_at(&dir, &name, false) {
            Ok(stat) => stat,
            Err(e) if e.kind() == io::ErrorKind::NotFound => break None,
            Err(e) => return Err(fail(Step::InspectTarget, e)),
        };
        match stat.kind {
            FileKind::Regular => break Some(stat),
            FileKind::Dir => {
                return Err(fail(
                    Step::InspectTarget,
                    invalid(io::ErrorKind::IsADirectory, "the target is a directory"),
                ))
            }
            FileKind::Symlink => match opts.symlinks {
                Symlinks::Refuse => {
                    return Err(fail(
                        Step::InspectTarget,
                        invalid(
                            io::ErrorKind::InvalidInput,
                            "the target is a symlink and the symlink policy refuses it",
                        ),
                    ))
                }
                Symlinks::ReplaceLink => break None,
                Symlinks::Follow => {
                    hops += 1;
                    if hops > MAX_SYMLINK_HOPS {
                        return Err(fail(
                            Step::ResolveSymlink,
                            io::Error::from_raw_os_error(rustix::io::Errno::LOOP.raw_os_error()),
                        ));
                    }
                    let link = st
                        .read_link_at(&dir, &name)
                        .map_err(|e| fail(Step::ReadSymlink, e))?;
                    let (link_dir, link_name) =
                        split(&link).map_err(|e| fail(Step::ResolveSymlink, e))?;
                    dir = if link.is_absolute() {
                        dir_path = link_dir;
                        st.open_dir(None, &dir_path, true)
                    } else {
                        dir_path = dir_path.join(&link_dir);
                        st.open_dir(Some(&dir), &link_dir, true)
                    }
                    .map_err(|e| fail(Step::OpenSymlinkTargetDirectory, e))?;
                    name = link_name;
                }
            },
            _ => {
                return Err(fail(
                    Step::InspectTarget,
                    invalid(
                        io::ErrorKind::InvalidInput,
                        "the target is not a regular file (FIFO, socket or device)",
                    ),
                ))
            }
        }
    };

    if let Some(stat) = &existing_stat {
        if stat.nlink > 1 && opts.hard_links == HardLinks::Refuse {
            return Err(fail(
                Step::InspectTarget,
                invalid(
                    io::ErrorKind::InvalidInput,
                    "the target has several hard links and the hard-link policy refuses to break them",
                ),
            ));
        }
    }

    let fs_magic = if opts.durability != Durability::None && !opts.allow_weak_fs {
        let magic = crate::fskind::refuse_weak(
            st,
            &dir,
            "this filesystem cannot make a replace crash-atomic (vfat/exfat/ntfs or network); \
             allow weak filesystems explicitly to accept weaker semantics",
        )
        .map_err(|(step, e)| fail(step, e))?;
        Some(magic)
    } else {
        None
    };
    Ok(Resolved {
        dir_path,
        dir,
        name,
        existing: existing_stat,
        fs_magic,
    })
}

/// What [`carry_metadata`] carries over.
pub(crate) struct Carry {
    /// An explicit mode instead of the old file's.
    pub(crate) mode: Option<u32>,
    /// Keep set-id bits and `security.capability`.
    pub(crate) keep_privileges: bool,
    /// Copy extended attributes.
    pub(crate) xattrs: bool,
}

/// Gives `new` the old file's owner, group, mode and extended attributes,
/// in that order (chown clears set-id bits; setting an ACL sets the group
/// permission bits). `old` is the old file's stat and, when the process
/// could open it, its handle (for the xattrs). Without an old file, only an
/// explicit mode is applied. Shared by the single-file replace and
/// transactions.
pub(crate) fn carry_metadata(
    st: &dyn Storage,
    new: &Fd,
    old: Option<(&Stat, Option<&Fd>)>,
    carry: &Carry,
) -> io::Result<()> {
    let privileged_bits = if carry.keep_privileges {
        0o7777
    } else {
        0o1777
    };
    let Some((old, old_file)) = old else {
        if let Some(mode) = carry.mode {
            st.chmod(new, mode & privileged_bits)?;
        }
        return Ok(());
    };
    let now = st.stat(new)?;
    if (now.uid, now.gid) != (old.uid, old.gid) {
        match st.chown(new, Some(old.uid), Some(old.gid)) {
            Ok(()) => {}
            // Not allowed to give the file away: keep at least the group
            // if we belong to it; otherwise the file stays ours.
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                match st.chown(new, None, Some(old.gid)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {}
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        }
    }
    let xattrs = match (old_file, carry.xattrs) {
        (Some(file), true) => match st.list_xattr(file) {
            Ok(names) => names,
            Err(e) if unsupported(&e) => Vec::new(),
            Err(e) => return Err(e),
        },
        _ => Vec::new(),
    };
    let has_acl = xattrs.iter().any(|n| n == "system.posix_acl_access");
    let mode = carry.mode.unwrap_or(old.mode) & privileged_bits;
    // With an access ACL, the group bits are the ACL mask: keep them off
    // until the ACL itself is in place, so no instant is wider than the old file.
    st.chmod(new, if has_acl { mode & !0o070 } else { mode })?;
    let mut acl_set = false;
    if let Some(file) = old_file {
        for name in &xattrs {
            if !carry.keep_privileges && name == "security.capability" {
                continue;
            }
            let value = match st.get_xattr(file, name) {
                Ok(v) => v,
                Err(e) if unsupported(&e) || e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            match st.set_xattr(new, name, &value) {
                Ok(()) => acl_set |= name == "system.posix_acl_access",
                Err(e) if unsupported(&e) => {}
                Err(e) => return Err(e),
            }
        }
    }
    if has_acl && !acl_set {
        st.chmod(new, mode)?;
    }
    Ok(())
}

/// Whether an xattr error means "not here / not allowed", which is skipped.
fn unsupported(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Unsupported
        || e.kind() == io::ErrorKind::PermissionDenied
        || e.raw_os_error() == Some(rustix::io::Errno::NOTSUP.raw_os_error())
        || e.raw_os_error() == Some(rustix::io::Errno::PERM.raw_os_error())
}

/// Splits a path into (directory, final name). The directory of a bare name
/// is `.`.
pub(crate) fn split(path: &Path) -> io::Result<(PathBuf, OsString)> {
    let bytes = path.as_os_str().as_bytes();
    if bytes.ends_with(b"/") {
        return Err(invalid(
            io::ErrorKind::InvalidInput,
            "the path ends with '/', so it names a directory, not a file",
        ));
    }
    let name = match path.file_name() {
        Some(name)
            if path
                .components()
                .next_back()
                .is_some_and(|c| c.as_os_str() == name) =>
        {
            name
        }
        _ => {
            return Err(invalid(
                io::ErrorKind::InvalidInput,
                "the path does not end in a file name",
            ))
        }
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((dir, name.to_os_string()))
}

/// The temporary name for `name`: `.fstx-tmp.<16 hex>.<name, shortened to fit>`.
pub(crate) fn temp_name(prefix: &str, random: u64, name: &OsStr) -> OsString {
    let mut out = format!("{prefix}{random:016x}.").into_bytes();
    let room = NAME_MAX - out.len();
    let name = name.as_bytes();
    out.extend_from_slice(&name[..name.len().min(room)]);
    OsString::from_vec(out)
}

/// Whether `name` is one of fstx's temporary names with `prefix`.
pub(crate) fn is_temp_name(prefix: &str, name: &OsStr) -> bool {
    let b = name.as_bytes();
    b.len() > prefix.len() + 17
        && b.starts_with(prefix.as_bytes())
        && b[prefix.len()..prefix.len() + 16]
            .iter()
            .all(u8::is_ascii_hexdigit)
        && b[prefix.len() + 16] == b'.'
}

/// Creates and locks a fresh temporary file beside `name`.
///
/// The create-then-lock window: `recover` could lock and remove the new file
/// before its writer locks it. So after locking, the writer checks that the
/// name still refers to the inode it holds; if not, it starts again with a
/// new name. `recover` removes a name only while holding that inode's lock
/// and after the same check, so once the writer's check passes, nobody can
/// remove its file.
pub(crate) fn create_temp(
    st: &dyn Storage,
    dir: &Fd,
    name: &OsStr,
    mode: u32,
) -> std::result::Result<(OsString, Fd), (Step, io::Error)> {
    create_prefixed(st, dir, TEMP_PREFIX, name, mode)
}

pub(crate) fn create_prefixed(
    st: &dyn Storage,
    dir: &Fd,
    prefix: &str,
    name: &OsStr,
    mode: u32,
) -> std::result::Result<(OsString, Fd), (Step, io::Error)> {
    const ATTEMPTS: usize = 64;
    for _ in 0..ATTEMPTS {
        let random = st.random().map_err(|e| (Step::GenerateTemporaryName, e))?;
        let temp_name = temp_name(prefix, random, name);
        let file = match st.open(dir, &temp_name, OpenHow::create_new(mode)) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err((Step::CreateTemporaryFile, e)),
        };
        let locked = st
            .lock(&file, LockMode::Exclusive, true)
            .and_then(|_| Ok((st.stat(&file)?, st.stat_at(dir, &temp_name, false))));
        match locked {
            Ok((held, Ok(named))) if held.same_inode(&named) => return Ok((temp_name, file)),
            // Removed (or replaced) by a recovery between create and lock: try again.
            Ok(_) => {}
            Err(e) => {
                let _ = st.unlink_at(dir, &temp_name, false);
                return Err((Step::LockTemporaryFile, e));
            }
        }
    }
    Err((
        Step::CreateTemporaryFile,
        invalid(
            io::ErrorKind::AlreadyExists,
            "could not create a temporary file under a fresh name",
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_paths() {
        assert_eq!(
            split(Path::new("a")).unwrap(),
            (PathBuf::from("."), "a".into())
        );
        assert_eq!(
            split(Path::new("/x/y/z")).unwrap(),
            (PathBuf::from("/x/y"), "z".into())
        );
        assert!(split(Path::new("/")).is_err());
        assert!(split(Path::new("a/..")).is_err());
        assert!(split(Path::new("a/")).is_err());
        assert!(split(Path::new("")).is_err());
    }

    #[test]
    fn temp_names_fit_and_are_recognised() {
        let long = OsString::from("x".repeat(255));
        let t = temp_name(TEMP_PREFIX, 0xabc, &long);
        assert_eq!(t.len(), NAME_MAX);
        assert!(is_temp_name(TEMP_PREFIX, &t));
        assert!(is_temp_name(
            TEMP_PREFIX,
            &temp_name(TEMP_PREFIX, 1, OsStr::new("a"))
        ));
        assert!(!is_temp_name(TEMP_PREFIX, OsStr::new(".fstx-tmp.zz")));
        assert!(!is_temp_name(TEMP_PREFIX, OsStr::new("config.json")));
        assert!(!is_temp_name(
            TEMP_PREFIX,
            OsStr::new(".fstx-tmp.000000000000000g.a")
        ));
    }
}
