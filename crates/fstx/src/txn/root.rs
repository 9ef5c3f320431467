//! The confined root: reserved names, the control directory and its locks,
//! path rules, and directory handles opened without following symlinks.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io::{self};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};
use std::sync::Arc;

use super::journal::RelPath;
use crate::error::invalid;
use crate::names::is_temp_name;
use crate::storage::{Create, Fd, OpenHow, Storage};

/// Name of the control directory inside a transaction root.
pub(crate) const CONTROL_DIR: &str = ".fstx-txn";
/// Prefix of staged files: `.fstx-stage.<16 hex digits>.<name>`.
pub(crate) const STAGE_PREFIX: &str = ".fstx-stage.";
pub(crate) const LOCK_FILE: &str = "lock";
pub(crate) const VIEW_FILE: &str = "view";
pub(crate) const JOURNAL_FILE: &str = "journal";
pub(crate) const RETIRED_FILE: &str = "retired";

/// Whether `name` is a staged file's name.
pub(crate) fn is_stage_name(name: &OsStr) -> bool {
    is_temp_name(STAGE_PREFIX, name)
}

/// How many directory handles a [`Tree`] keeps open at most.
const MAX_CACHED_DIRS: usize = 64;

/// Directory handles by relative path, opened without following symlinks.
pub(crate) struct Tree {
    pub(super) st: Arc<dyn Storage>,
    pub(super) dirs: HashMap<RelPath, Arc<Fd>>,
}

impl Tree {
    pub(crate) fn new(st: Arc<dyn Storage>, root: Arc<Fd>) -> Tree {
        let mut dirs = HashMap::new();
        dirs.insert(RelPath::root(), root);
        Tree { st, dirs }
    }

    pub(crate) fn root(&self) -> Arc<Fd> {
        self.dirs[&RelPath::root()].clone()
    }

    /// Opens directory `p` one component at a time, never following a
    /// symlink: everything reached is inside the root.
    pub(crate) fn dir(&mut self, p: &RelPath) -> io::Result<Arc<Fd>> {
        if let Some(d) = self.dirs.get(p) {
            return Ok(d.clone());
        }
        let Some((parent, name)) = p.split_last() else {
            return Ok(self.root());
        };
        check_name(name)?;
        let parent = self.dir(&parent)?;
        let fd = match self.st.open_dir(Some(&parent), Path::new(name), false) {
            Ok(fd) => Arc::new(fd),
            Err(e) if is_not_dir(&e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!(
                    "{p} is a symlink or not a directory (transactions never follow symlinks): {e}"
                ),
                ))
            }
            Err(e) => return Err(e),
        };
        // A bounded cache: a transaction may reach more directories than a
        // process may hold open (handles still in use elsewhere stay open).
        if self.dirs.len() >= MAX_CACHED_DIRS {
            self.dirs.retain(|k, _| k.is_root());
        }
        self.dirs.insert(p.clone(), fd.clone());
        Ok(fd)
    }
}

pub(super) fn is_not_dir(e: &io::Error) -> bool {
    e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error())
        || e.raw_os_error() == Some(rustix::io::Errno::NOTDIR.raw_os_error())
}

/// The walker's guard, the second after the journal decoder's: `name` is
/// about to be passed to the storage as one entry of a directory inside the
/// root, so it must be exactly one name — not empty, `.` or `..`, without
/// `/` or NUL. Whatever produced it (a decoded journal, a caller's path),
/// anything else is refused with an error before anything is touched.
pub(crate) fn check_name(name: &OsStr) -> io::Result<()> {
    let b = name.as_bytes();
    if b.is_empty() || b == b"." || b == b".." || b.contains(&b'/') || b.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "refusing the path component {:?}: not a single name inside the transaction \
                 root (it would escape the root)",
                String::from_utf8_lossy(b)
            ),
        ));
    }
    Ok(())
}

/// Checks every component of `p` with [`check_name`].
pub(crate) fn check_confined(p: &RelPath) -> io::Result<()> {
    p.components().iter().try_for_each(|c| check_name(c))
}

/// The parent and final name of a path (never the root), the name checked
/// with [`check_name`].
pub(crate) fn split(rel: &RelPath) -> io::Result<(RelPath, OsString)> {
    let (p, n) = rel
        .split_last()
        .ok_or_else(|| invalid(io::ErrorKind::InvalidInput, "the root itself has no name"))?;
    check_name(n)?;
    Ok((p, n.to_os_string()))
}

/// Parses a caller's path into a confined relative path.
pub(super) fn rel_path(path: &Path) -> io::Result<RelPath> {
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => parts.push(n.to_os_string()),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(invalid(
                    io::ErrorKind::InvalidInput,
                    "'..' is not allowed in a transaction path",
                ))
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(invalid(
                    io::ErrorKind::InvalidInput,
                    "transaction paths are relative to the root; absolute paths are not allowed",
                ))
            }
        }
    }
    if parts.is_empty() {
        return Err(invalid(
            io::ErrorKind::InvalidInput,
            "empty path (the root itself cannot be changed)",
        ));
    }
    if parts[0] == CONTROL_DIR {
        return Err(invalid(
            io::ErrorKind::InvalidInput,
            "paths under .fstx-txn are reserved for the journal",
        ));
    }
    if parts.iter().any(|p| is_stage_name(p)) {
        return Err(invalid(
            io::ErrorKind::InvalidInput,
            "names starting with .fstx-stage. are reserved for staged files",
        ));
    }
    RelPath::from_components(parts).map_err(|m| invalid(io::ErrorKind::InvalidInput, m))
}

/// The control directory and its locks, opened (and created) under a root.
pub(crate) struct Control {
    pub(crate) dir: Arc<Fd>,
    pub(crate) lock: Fd,
    pub(crate) view: Fd,
    /// Whether the control directory's own entry in the root is not known
    /// to be durable. Always `true` when opened: a `begin` that created
    /// `.fstx-txn/` may have failed before flushing the root, so no later
    /// transaction can tell whether the entry is durable. The first flush
    /// round that makes a journal durable (R0, or R1 without R0) also
    /// flushes the root, concurrently, and clears it.
    pub(crate) needs_root_flush: bool,
    /// The filesystem's `statfs` magic, if `begin` already read it (so that
    /// flushing this directory does not read it again).
    pub(crate) fs_magic: Option<u64>,
}

pub(crate) fn open_control(st: &dyn Storage, root: &Fd, create: bool) -> io::Result<Control> {
    let dir = match st.open_dir(Some(root), Path::new(CONTROL_DIR), false) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
            match st.mkdir_at(root, OsStr::new(CONTROL_DIR), 0o755) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
            st.open_dir(Some(root), Path::new(CONTROL_DIR), false)?
        }
        Err(e) => return Err(e),
    };
    let how = OpenHow {
        read: true,
        write: false,
        create: if create {
            Create::IfMissing(0o644)
        } else {
            Create::No
        },
        truncate: false,
        follow: false,
        nonblock: true,
    };
    let lock = st.open(&dir, OsStr::new(LOCK_FILE), how)?;
    let view = st.open(&dir, OsStr::new(VIEW_FILE), how)?;
    Ok(Control {
        dir: Arc::new(dir),
        lock,
        view,
        needs_root_flush: true,
        fs_magic: None,
    })
}
