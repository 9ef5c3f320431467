//! Quarantine: keeping the evidence of a checksum-valid but malformed
//! journal record instead of deleting it.
//!
//! A record whose checksum matches was written whole by something — a buggy
//! or hostile writer, or storage that corrupted it and fixed up the CRC —
//! so it is not a torn write to clean up silently. Recovery does not apply
//! it (its operations are never read) and does not delete it: the staged
//! files found in the tree (by the same walk as a rollback, never by the
//! record's paths) and then the record itself are moved into
//! `.fstx-txn/quarantine/<name>/`, where recovery, `Snapshot` readers and
//! `fstx commit --delete-missing` never look (everything under
//! `.fstx-txn` is fstx's own). Each staged file keeps its path below the
//! quarantine directory (`<name>/sub/.fstx-stage.….conf`); the record is
//! `<name>/journal`.
//!
//! `<name>` is the record's sequence number; if a complete quarantine (one
//! holding a `journal`) already has that name, `<seq>.1`, `<seq>.2`, ...
//! A quarantine directory without `journal` is an interrupted one and is
//! reused, so a crash at any point leaves the journal in place (the next
//! recovery quarantines again, into the same directory) or the quarantine
//! complete.
//!
//! Order: the quarantine directory is created and its entry flushed; the
//! staged files are moved and every directory they left or entered is
//! flushed; only then is the journal moved, and the quarantine directory
//! and `.fstx-txn/` flushed. A staged file on another filesystem (a mount
//! point inside the root) cannot be moved and is removed, as a rollback
//! would.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::flush::Flusher;
use super::journal::RelPath;
use super::recovery::find_staging;
use super::root::{Control, Tree, CONTROL_DIR, JOURNAL_FILE};
use crate::error::Step;
use crate::storage::{Fd, FileKind, Storage, SyncKind};

/// The directory under `.fstx-txn/` that holds quarantined journals.
pub(crate) const QUARANTINE_DIR: &str = "quarantine";

/// What a quarantine moved (or, in a dry run, would move).
pub(super) struct Moved {
    /// The quarantine directory, relative to the root.
    pub(super) dir: PathBuf,
    /// The staged files moved, by their former paths relative to the root.
    pub(super) staged: Vec<PathBuf>,
}

type StepResult<T> = std::result::Result<T, (Step, io::Error)>;

/// Opens directory `name` in `at` (creating it if missing), never following
/// a symlink. Returns the directory and whether it was created.
fn ensure_dir(st: &dyn Storage, at: &Fd, name: &OsStr) -> io::Result<(Arc<Fd>, bool)> {
    let created = match st.mkdir_at(at, name, 0o700) {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
        Err(e) => return Err(e),
    };
    let fd = st.open_dir(Some(at), Path::new(name), false)?;
    Ok((Arc::new(fd), created))
}

fn exists(st: &dyn Storage, at: &Fd, name: &OsStr) -> io::Result<Option<FileKind>> {
    match st.stat_at(at, name, false) {
        Ok(s) => Ok(Some(s.kind)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The quarantine directory's name: the first of `<seq>`, `<seq>.1`, ...
/// that is free or an interrupted quarantine (no `journal` in it).
fn choose_name(st: &dyn Storage, qdir: Option<&Fd>, seq: Option<u64>) -> io::Result<OsString> {
    let base = seq.map_or_else(|| "unknown".to_string(), |s| s.to_string());
    for k in 0u64.. {
        let name = if k == 0 {
            OsString::from(&base)
        } else {
            OsString::from(format!("{base}.{k}"))
        };
        let Some(q) = qdir else { return Ok(name) };
        match exists(st, q, &name)? {
            None => return Ok(name),
            Some(FileKind::Dir) => {
                let d = st.open_dir(Some(q), Path::new(&name), false)?;
                if exists(st, &d, OsStr::new(JOURNAL_FILE))?.is_none() {
                    return Ok(name);
                }
            }
            Some(_) => {}
        }
    }
    unreachable!("u64 names run out")
}

/// Moves the staged files found under the root, then the journal, into
/// `.fstx-txn/quarantine/<name>/` (module docs). In a dry run, only
/// reports what it would move.
pub(super) fn quarantine(
    st: &dyn Storage,
    tree: &mut Tree,
    ctl: &Control,
    flusher: &mut Flusher,
    durable: bool,
    dry_run: bool,
    seq: Option<u64>,
) -> StepResult<Moved> {
    let found = find_staging(st, tree).map_err(|e| (Step::FindStagedFiles, e))?;
    let rel = |d: &RelPath, n: &OsStr| PathBuf::from(d.to_string()).join(n);
    let mkq = |e| (Step::CreateQuarantineDirectory, e);
    if dry_run {
        let q = match st.open_dir(Some(&ctl.dir), Path::new(QUARANTINE_DIR), false) {
            Ok(q) => Some(q),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(mkq(e)),
        };
        let name = choose_name(st, q.as_ref(), seq).map_err(mkq)?;
        return Ok(Moved {
            dir: Path::new(CONTROL_DIR).join(QUARANTINE_DIR).join(name),
            staged: found.iter().map(|(d, n)| rel(d, n)).collect(),
        });
    }
    // 1. The quarantine directory, its entry durable before anything moves in.
    let (qdir, q_created) = ensure_dir(st, &ctl.dir, OsStr::new(QUARANTINE_DIR)).map_err(mkq)?;
    let name = choose_name(st, Some(&qdir), seq).map_err(mkq)?;
    let (target, t_created) = ensure_dir(st, &qdir, &name).map_err(mkq)?;
    if durable {
        let mut first = Vec::new();
        if q_created {
            first.push((ctl.dir.clone(), SyncKind::All));
        }
        if t_created {
            first.push((qdir.clone(), SyncKind::All));
        }
        flusher
            .round(first)
            .map_err(|e| (Step::FlushDirectories, e))?;
    }
    // 2. The staged files, each below the path of the directory it was in.
    let mut mirror: BTreeMap<RelPath, Arc<Fd>> = BTreeMap::new();
    mirror.insert(RelPath::root(), target.clone());
    let mut to_flush: BTreeMap<(u8, RelPath), Arc<Fd>> = BTreeMap::new();
    let mut moved = Vec::new();
    for (dir, file) in &found {
        let src = tree.dir(dir).map_err(|e| (Step::OpenDirectory, e))?;
        let mut at = RelPath::root();
        for c in dir.components() {
            let next = at.join(c);
            if !mirror.contains_key(&next) {
                let parent = mirror[&at].clone();
                let (d, created) = ensure_dir(st, &parent, c).map_err(mkq)?;
                if created {
                    to_flush.insert((1, at.clone()), parent);
                }
                mirror.insert(next.clone(), d);
            }
            at = next;
        }
        let dst = mirror[dir].clone();
        match st.rename_at(&src, file, &dst, file, false) {
            Ok(()) => {
                moved.push(rel(dir, file));
                to_flush.insert((1, dir.clone()), dst);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::XDEV.raw_os_error()) => {
                // Another filesystem: cannot be kept; removed as a rollback would.
                match st.unlink_at(&src, file, false) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err((Step::RemoveStagedFile, e)),
                }
            }
            Err(e) => return Err((Step::QuarantineStagedFile, e)),
        }
        to_flush.insert((0, dir.clone()), src);
    }
    if durable && !to_flush.is_empty() {
        flusher
            .round(to_flush.into_values().map(|d| (d, SyncKind::All)))
            .map_err(|e| (Step::FlushDirectories, e))?;
    }
    // 3. The record itself, last: until it moves, recovery quarantines again.
    let j = OsStr::new(JOURNAL_FILE);
    match st.rename_at(&ctl.dir, j, &target, j, false) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err((Step::QuarantineJournal, e)),
    }
    if durable {
        flusher
            .round([(target, SyncKind::All), (ctl.dir.clone(), SyncKind::All)])
            .map_err(|e| (Step::FlushDirectories, e))?;
    }
    Ok(Moved {
        dir: Path::new(CONTROL_DIR).join(QUARANTINE_DIR).join(name),
        staged: moved,
    })
}
