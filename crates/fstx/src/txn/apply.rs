//! Applying a commit record, shared by the commit and by redo after a
//! crash: each step idempotent (it checks whether it is already done), then
//! retiring the journal so it can never be applied again.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::io;
use std::path::Path;

use super::flush::Flusher;
use super::journal::{Op, RelPath};
use super::root::{check_confined, check_name, split, Control, Tree, JOURNAL_FILE, RETIRED_FILE};
use crate::error::{invalid, Step};
use crate::storage::{FileKind, Storage, SyncKind};

pub(super) fn remove_journal(st: &dyn Storage, ctl: &Control, durable: bool) -> io::Result<()> {
    match st.unlink_at(&ctl.dir, OsStr::new(JOURNAL_FILE), false) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    }
    if durable {
        crate::durability::sync_dir_io(st, &ctl.dir, ctl.fs_magic)?;
    }
    Ok(())
}

/// Retires the journal: renames it to `retired` and (if `flush`) flushes
/// the control directory, so it can never be replayed.
pub(crate) fn retire(st: &dyn Storage, ctl: &Control, flush: bool) -> io::Result<()> {
    let j = OsStr::new(JOURNAL_FILE);
    match st.rename_at(&ctl.dir, j, &ctl.dir, OsStr::new(RETIRED_FILE), false) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if flush {
        crate::durability::sync_dir_io(st, &ctl.dir, ctl.fs_magic)?;
    }
    Ok(())
}

/// The walker's guard over a whole record, before anything is touched:
/// every path, staging directory and staged name is made of single names
/// inside the root ([`check_name`]), whatever the decoder accepted.
pub(super) fn check_ops(ops: &[Op]) -> io::Result<()> {
    for op in ops {
        match op {
            Op::Mkdir { path, .. } | Op::Remove { path, .. } => check_confined(path)?,
            Op::Rename { from, to, .. } => {
                check_confined(from)?;
                check_confined(to)?;
            }
            Op::Put {
                path,
                stage_dir,
                stage_name,
                ..
            } => {
                check_confined(path)?;
                check_confined(stage_dir)?;
                check_name(stage_name)?;
            }
        }
    }
    Ok(())
}

/// Applies `ops` idempotently (each step checks whether it is already
/// done) and returns the directories to flush, each once.
pub(crate) fn apply(
    st: &dyn Storage,
    tree: &mut Tree,
    ops: &[Op],
    _root: &Path,
) -> std::result::Result<Vec<RelPath>, (Step, io::Error)> {
    check_ops(ops).map_err(|e| (Step::CheckPath, e))?;
    // Paths, not handles: a transaction may touch more directories than a
    // process may hold open.
    let mut touched: BTreeSet<RelPath> = BTreeSet::new();
    let not_found = |e: &io::Error| e.kind() == io::ErrorKind::NotFound;
    for op in ops {
        match op {
            Op::Mkdir { path, mode } => {
                let (parent, name) = split(path).map_err(|e| (Step::CheckPath, e))?;
                let name = name.as_os_str();
                let pd = tree
                    .dir(&parent)
                    .map_err(|e| (Step::OpenParentDirectory, e))?;
                match st.mkdir_at(&pd, name, *mode) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err((Step::CreateDirectory, e)),
                }
                // Open it: an existing name must be a directory, not a symlink.
                tree.dir(path).map_err(|e| (Step::OpenNewDirectory, e))?;
                touched.insert(parent);
                touched.insert(path.clone());
            }
            Op::Rename { from, to, ino } => {
                let (fparent, fname) = split(from).map_err(|e| (Step::CheckPath, e))?;
                let fname = fname.as_os_str();
                let (tparent, tname) = split(to).map_err(|e| (Step::CheckPath, e))?;
                let tname = tname.as_os_str();
                let fd = match tree.dir(&fparent) {
                    Ok(d) => d,
                    Err(e) if not_found(&e) => continue,
                    Err(e) => return Err((Step::OpenSourceDirectory, e)),
                };
                touched.insert(fparent.clone());
                let td = tree
                    .dir(&tparent)
                    .map_err(|e| (Step::OpenDestinationDirectory, e))?;
                touched.insert(tparent.clone());
                let s = match st.stat_at(&fd, fname, false) {
                    Ok(s) if s.ino == *ino && s.kind != FileKind::Dir => s,
                    Ok(_) => continue,
                    Err(e) if not_found(&e) => continue,
                    Err(e) => return Err((Step::InspectSource, e)),
                };
                match st.stat_at(&td, tname, false) {
                    // Two names of one inode: rename(2) would do nothing.
                    Ok(t) if t.same_inode(&s) => st
                        .unlink_at(&fd, fname, false)
                        .map_err(|e| (Step::RemoveHardLinkedSource, e))?,
                    _ => st
                        .rename_at(&fd, fname, &td, tname, false)
                        .map_err(|e| (Step::Rename, e))?,
                }
            }
            Op::Put {
                path,
                stage_dir,
                stage_name,
                ..
            } => {
                let (parent, name) = split(path).map_err(|e| (Step::CheckPath, e))?;
                let name = name.as_os_str();
                check_name(stage_name).map_err(|e| (Step::CheckPath, e))?;
                let sd = tree
                    .dir(stage_dir)
                    .map_err(|e| (Step::OpenStagingDirectory, e))?;
                let td = tree
                    .dir(&parent)
                    .map_err(|e| (Step::OpenTargetDirectory, e))?;
                touched.insert(stage_dir.clone());
                touched.insert(parent.clone());
                let s = match st.stat_at(&sd, stage_name, false) {
                    Ok(s) => s,
                    Err(e) if not_found(&e) => continue,
                    Err(e) => return Err((Step::InspectStagedFile, e)),
                };
                match st.stat_at(&td, name, false) {
                    Ok(t) if t.same_inode(&s) => st
                        .unlink_at(&sd, stage_name, false)
                        .map_err(|e| (Step::RemoveHardLinkedStagedFile, e))?,
                    Ok(t) if t.kind == FileKind::Dir => {
                        return Err((
                            Step::RenameStagedFileOverTarget,
                            invalid(io::ErrorKind::IsADirectory, "the target became a directory"),
                        ))
                    }
                    _ => st
                        .rename_at(&sd, stage_name, &td, name, false)
                        .map_err(|e| (Step::RenameStagedFileOverTarget, e))?,
                }
            }
            Op::Remove { path, ino } => {
                let (parent, name) = split(path).map_err(|e| (Step::CheckPath, e))?;
                let name = name.as_os_str();
                let pd = match tree.dir(&parent) {
                    Ok(d) => d,
                    Err(e) if not_found(&e) => continue,
                    Err(e) => return Err((Step::OpenDirectory, e)),
                };
                touched.insert(parent.clone());
                match st.stat_at(&pd, name, false) {
                    Ok(s) if s.ino == *ino && s.kind != FileKind::Dir => {
                        match st.unlink_at(&pd, name, false) {
                            Ok(()) => {}
                            Err(e) if not_found(&e) => {}
                            Err(e) => return Err((Step::RemoveFile, e)),
                        }
                    }
                    Ok(_) => {}
                    Err(e) if not_found(&e) => {}
                    Err(e) => return Err((Step::InspectFile, e)),
                }
            }
        }
    }
    Ok(touched.into_iter().collect())
}

/// Flushes directories `dirs` in one round, opening each only when the
/// flusher takes it, so that the handles open at once stay bounded (the
/// flusher's queue, the tree's cache) whatever the number of directories.
pub(super) fn flush_dirs(
    flusher: &mut Flusher,
    tree: &mut Tree,
    dirs: impl IntoIterator<Item = RelPath>,
) -> io::Result<bool> {
    let mut failed = None;
    let fds = dirs.into_iter().filter_map(|d| match tree.dir(&d) {
        Ok(fd) => Some((fd, SyncKind::All)),
        Err(e) => {
            failed.get_or_insert(e);
            None
        }
    });
    let flushed = flusher.round(fds);
    match failed {
        Some(e) => Err(e),
        None => flushed,
    }
}
