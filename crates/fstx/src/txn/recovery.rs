//! Recovery of a transaction root, and the idempotent apply step shared by
//! commit and redo.
//!
//! Decision table (the writer lock is held throughout):
//!
//! | `journal`                                   | action                                   |
//! |---------------------------------------------|------------------------------------------|
//! | absent, `retired` present                   | nothing                                  |
//! | absent, no `retired` (no transaction ever retired here) | sweep staged files (a lost `.fstx-txn/` can leave them) |
//! | COMMIT, valid, seq > `retired`'s seq        | verify every staged file, redo, flush touched directories, retire |
//! | COMMIT, valid, seq ≤ `retired`'s seq        | stale (already applied): remove it, never replay |
//! | BEGIN                                       | roll back: remove every staged file, flush, then remove the journal ([`RollbackReason::NoCommitRecord`]) |
//! | empty, torn, trailing bytes, CRC mismatch (whatever the version byte says) | roll back ([`RollbackReason::Damaged`]) |
//! | CRC-valid but malformed (wrong magic, unknown kind, a path that escapes the root, absurd count, ...) | quarantine: move the staged files found and the record to `.fstx-txn/quarantine/<seq>/` ([`TxnOutcome::Quarantined`]) |
//! | CRC-valid, unknown version                  | refuse (error naming the version): it may be a newer fstx's committed journal |
//! | COMMIT whose staged data fails verification | refuse (error), change nothing           |
//! | COMMIT with a path the walker refuses (decoder bypassed) | refuse (error), change nothing |
//!
//! Paths of a record have two guards: the decoder rejects a record with an
//! absolute path or an empty, `.` or `..` component, and the tree walker
//! (`root::check_name`, through `Tree::dir`, `split` and `check_ops`)
//! refuses such a component again, before anything is touched, wherever a
//! path becomes names passed to the storage.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::apply::{apply, flush_dirs, remove_journal, retire};
use super::bug;
use super::flush::Flusher;
use super::journal::{self, DecodeError, Kind, Record, RelPath};
use super::options::TxnOptions;
use super::quarantine::quarantine;
use super::root::{
    is_stage_name, open_control, Control, Tree, CONTROL_DIR, JOURNAL_FILE, RETIRED_FILE,
};
use super::verify::{verify, Verdict};
use crate::error::{Error, Result, State, Step};
use crate::io::read_small;
use crate::storage::{Fd, FileKind, LockMode, Storage, SyncKind};

/// How a journal record was damaged (see [`RollbackReason::Damaged`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Damage {
    /// The journal file is empty (a crash just after it was created, or a
    /// record larger than any fstx writes).
    Empty,
    /// Shorter than its header says: torn.
    Torn,
    /// The CRC does not match, or bytes follow the record (whatever its
    /// version byte says).
    BadChecksum,
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Damage::Empty => "empty",
            Damage::Torn => "torn",
            Damage::BadChecksum => "bad checksum",
        })
    }
}

/// Why recovery did not finish an interrupted transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RollbackReason {
    /// The journal holds only the BEGIN record: the commit record was never
    /// written.
    NoCommitRecord,
    /// There was no journal at all (and no transaction had retired in this
    /// control directory), but staged files were found.
    NoJournal,
    /// The journal record is damaged: it never committed.
    Damaged(Damage),
    /// The commit record reached the disk but some of its staged data did
    /// not, and nothing of it had been applied: the crash came inside the
    /// commit round, which flushes the record and the data together. The
    /// transaction had not committed (its `commit` had not returned).
    DataNotDurable,
    /// The journal record's checksum is valid but its content is malformed
    /// (the defect named): a buggy or hostile writer. Never applied;
    /// quarantined ([`TxnOutcome::Quarantined`]).
    Malformed(&'static str),
}

impl fmt::Display for RollbackReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RollbackReason::NoCommitRecord => {
                f.write_str("no commit record (the journal holds only the BEGIN record)")
            }
            RollbackReason::NoJournal => f.write_str("no commit record (no journal)"),
            RollbackReason::DataNotDurable => f.write_str(
                "its data did not reach the disk (the commit record did; nothing was applied)",
            ),
            RollbackReason::Damaged(d) => write!(f, "the journal record is damaged: {d}"),
            RollbackReason::Malformed(why) => write!(f, "the journal record is malformed: {why}"),
        }
    }
}

/// Which way an interrupted transaction went.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TxnOutcome {
    /// It had committed: recovery applied it to completion.
    Finished {
        /// Operations in the transaction.
        operations: usize,
    },
    /// It had not committed: its staged files were removed; the tree is as
    /// before it.
    RolledBack {
        /// Staged files removed.
        staged_removed: Vec<PathBuf>,
        /// Why it had not committed.
        reason: RollbackReason,
    },
    /// Its journal record was checksum-valid but malformed: it was not
    /// applied, and the record and the staged files found were moved into
    /// `dir` (under `.fstx-txn/quarantine/`) as evidence. The tree is as
    /// before the transaction.
    Quarantined {
        /// The quarantine directory (`ROOT/.fstx-txn/quarantine/<seq>`).
        dir: PathBuf,
        /// The staged files moved there, by their former paths.
        staged: Vec<PathBuf>,
        /// What is wrong with the record ([`RollbackReason::Malformed`]).
        reason: RollbackReason,
    },
    /// A journal already applied and retired (left behind by a crash during
    /// retirement) was removed without being replayed.
    DiscardedStale,
}

/// What recovery did to one transaction root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnRecovery {
    /// The transaction root.
    pub root: PathBuf,
    /// The interrupted transaction's sequence number, when its record was readable.
    pub seq: Option<u64>,
    /// Which way it went (in a dry run: which way it would go).
    pub outcome: TxnOutcome,
    /// Staged files of a later transaction that never committed, removed by
    /// the explicit recovery's sweep after the journal was dealt with (a
    /// power cut can keep staged files and lose the BEGIN record that
    /// marks them; see the module docs).
    pub swept: Vec<PathBuf>,
}

impl fmt::Display for TxnRecovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seq = match self.seq {
            Some(s) => format!("transaction {s}"),
            None => "an uncommitted transaction".to_string(),
        };
        let r = match &self.outcome {
            TxnOutcome::Finished { operations } => write!(
                f,
                "{}: {seq} had committed; finished applying its {operations} operation(s)",
                self.root.display()
            ),
            TxnOutcome::RolledBack {
                staged_removed,
                reason,
            } => write!(
                f,
                "{}: {seq} had not committed ({reason}); rolled back ({} staged file(s) removed)",
                self.root.display(),
                staged_removed.len()
            ),
            TxnOutcome::Quarantined {
                dir,
                staged,
                reason,
            } => write!(
                f,
                "{}: {seq} was not applied ({reason}); quarantined its journal and {} staged \
                 file(s) in {}",
                self.root.display(),
                staged.len(),
                dir.display()
            ),
            TxnOutcome::DiscardedStale => write!(
                f,
                "{}: {seq} was already applied; removed its stale journal",
                self.root.display()
            ),
        };
        r?;
        if !self.swept.is_empty() {
            write!(
                f,
                "; removed {} staged file(s) of a later transaction that never committed",
                self.swept.len()
            )?;
        }
        Ok(())
    }
}

pub(super) struct Last {
    /// The highest sequence number known to be applied.
    pub(crate) last_seq: u64,
    pub(crate) report: Option<TxnRecovery>,
}

fn retired_seq(st: &dyn Storage, ctl: &Control) -> io::Result<u64> {
    Ok(
        match read_small(
            st,
            &ctl.dir,
            OsStr::new(RETIRED_FILE),
            journal::MAX_RECORD_LEN as u64,
        )? {
            Some(b) => Record::decode(&b).map_or(0, |r| r.seq),
            None => 0,
        },
    )
}

fn retired_exists(st: &dyn Storage, ctl: &Control) -> io::Result<bool> {
    match st.stat_at(&ctl.dir, OsStr::new(RETIRED_FILE), false) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// The sequence number of a committed, unretired journal, if there is one
/// (a reader must not read the tree then).
pub(crate) fn pending_commit(st: &dyn Storage, ctl: &Control) -> io::Result<Option<u64>> {
    let Some(b) = read_small(
        st,
        &ctl.dir,
        OsStr::new(JOURNAL_FILE),
        journal::MAX_RECORD_LEN as u64,
    )?
    else {
        return Ok(None);
    };
    match Record::decode(&b) {
        Ok(r) if r.kind == Kind::Commit && r.seq > retired_seq(st, ctl)? => Ok(Some(r.seq)),
        // A newer format: treat as pending (never read past it).
        Err(DecodeError::UnsupportedVersion(_)) => Ok(Some(0)),
        _ => Ok(None),
    }
}

/// Recovers the root whose writer lock the caller holds.
pub(crate) fn recover_locked(
    st: &dyn Storage,
    tree: &mut Tree,
    root_path: &Path,
    ctl: &Control,
    opts: &TxnOptions,
    dry_run: bool,
    sweep: bool,
) -> Result<Last> {
    let fail = |step, state, e| Error::new("recover", root_path, step, state, e);
    let nc = State::NotCommitted;
    let retired =
        retired_seq(st, ctl).map_err(|e| fail(Step::ReadRetiredJournal, nc.clone(), e))?;
    let bugs = opts.bugs;
    if bug!(bugs, sweep_staging_first) && !dry_run {
        // PLANTED BUG: staging treated as garbage before the journal is read.
        let found =
            find_staging(st, tree).map_err(|e| fail(Step::FindStagedFiles, nc.clone(), e))?;
        for (dir, name) in found {
            if let Ok(d) = tree.dir(&dir) {
                let _ = st.unlink_at(&d, &name, false);
            }
        }
    }
    let durable = opts.durable();
    let mut flusher = Flusher::new(opts.flush, opts.storage.clone(), tree.root(), ctl.fs_magic);
    let report = |seq, outcome| TxnRecovery {
        root: root_path.to_path_buf(),
        seq,
        outcome,
        swept: Vec::new(),
    };
    let Some(bytes) = read_small(
        st,
        &ctl.dir,
        OsStr::new(JOURNAL_FILE),
        journal::MAX_RECORD_LEN as u64,
    )
    .map_err(|e| fail(Step::ReadJournal, nc.clone(), e))?
    else {
        // No journal, and no transaction has ever retired here: `.fstx-txn/`
        // may be new because an earlier one was lost (or removed) with a
        // transaction's staging still in the tree. No committed transaction
        // can be pending without its journal, so any staging is garbage:
        // sweep it. Once a transaction has retired, `retired` stays, and
        // begin no longer walks the tree; the explicit recovery (`sweep`)
        // always does: a power cut may have kept a transaction's staged
        // files and lost its BEGIN record, which is not flushed.
        let mut report_sweep = None;
        if sweep
            || !retired_exists(st, ctl)
                .map_err(|e| fail(Step::ReadRetiredJournal, nc.clone(), e))?
        {
            let removed = rollback(st, tree, ctl, &mut flusher, durable, dry_run)
                .map_err(|(step, e)| fail(step, nc.clone(), e))?;
            if !removed.is_empty() {
                report_sweep = Some(report(
                    None,
                    TxnOutcome::RolledBack {
                        staged_removed: removed.iter().map(|p| root_path.join(p)).collect(),
                        reason: RollbackReason::NoJournal,
                    },
                ));
            }
        }
        return Ok(Last {
            last_seq: retired,
            report: report_sweep,
        });
    };
    match Record::decode(&bytes) {
        Ok(rec)
            if rec.kind == Kind::Commit && (rec.seq > retired || bug!(bugs, replay_retired)) =>
        {
            let pending = State::CommittedPendingRecovery;
            let verdict = if bug!(bugs, trust_staged) {
                Verdict::Complete
            } else {
                verify(st, tree, &rec.ops).map_err(|(step, e)| fail(step, pending.clone(), e))?
            };
            if let Verdict::Lost { path, applied } = verdict {
                if applied || bug!(bugs, refuse_lost_data) {
                    // Part of it is in the tree and the rest is lost:
                    // storage lost data it had flushed. Change nothing.
                    return Err(fail(
                        Step::VerifyStagedFile,
                        pending,
                        io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!(
                                "the staged content for {path} does not match the journal \
                                 (length or checksum), the target does not hold it either, and \
                                 part of the transaction is already applied: refusing to apply \
                                 or roll back the transaction (storage lost flushed data?)"
                            ),
                        ),
                    ));
                }
                // The crash came inside the commit round: the record reached
                // the disk, some of the data did not, nothing was applied.
                let removed = rollback(st, tree, ctl, &mut flusher, durable, dry_run)
                    .map_err(|(step, e)| fail(step, nc.clone(), e))?;
                return Ok(Last {
                    last_seq: retired,
                    report: Some(report(
                        Some(rec.seq),
                        TxnOutcome::RolledBack {
                            staged_removed: removed.iter().map(|p| root_path.join(p)).collect(),
                            reason: RollbackReason::DataNotDurable,
                        },
                    )),
                });
            }
            let mut swept = Vec::new();
            if !dry_run {
                // Readers are held off while the tree changes.
                st.lock(&ctl.view, LockMode::Exclusive, true)
                    .map_err(|e| fail(Step::TakeReaderLock, nc.clone(), e))?;
                let touched = apply(st, tree, &rec.ops, root_path)
                    .map_err(|(s, e)| fail(s, pending.clone(), e))?;
                if durable {
                    flush_dirs(&mut flusher, tree, touched)
                        .map_err(|e| fail(Step::FlushDirectories, pending.clone(), e))?;
                }
                // Staging left now belongs to a later, uncommitted
                // transaction: remove it before the journal goes.
                if sweep {
                    swept = remove_staging(st, tree, &mut flusher, durable, false)
                        .map_err(|(s, e)| fail(s, pending.clone(), e))?;
                }
                retire(st, ctl, durable && !bug!(bugs, replay_retired))
                    .map_err(|e| fail(Step::RetireJournal, pending.clone(), e))?;
                let _ = st.unlock(&ctl.view);
            }
            let mut r = report(
                Some(rec.seq),
                TxnOutcome::Finished {
                    operations: rec.ops.len(),
                },
            );
            r.swept = swept.iter().map(|p| root_path.join(p)).collect();
            Ok(Last {
                last_seq: rec.seq,
                report: Some(r),
            })
        }
        Ok(rec) if rec.kind == Kind::Commit => {
            let mut swept = Vec::new();
            if sweep {
                swept = remove_staging(st, tree, &mut flusher, durable, dry_run)
                    .map_err(|(s, e)| fail(s, nc.clone(), e))?;
            }
            if !dry_run {
                remove_journal(st, ctl, durable)
                    .map_err(|e| fail(Step::RemoveStaleJournal, nc.clone(), e))?;
            }
            let mut r = report(Some(rec.seq), TxnOutcome::DiscardedStale);
            r.swept = swept.iter().map(|p| root_path.join(p)).collect();
            Ok(Last {
                last_seq: retired,
                report: Some(r),
            })
        }
        Err(DecodeError::UnsupportedVersion(v)) => Err(fail(
            Step::ReadJournal,
            State::CommittedPendingRecovery,
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the journal holds a checksum-valid record of format version {v}, which \
                     this fstx does not know (it reads versions {} to {}); refusing to redo or \
                     roll it back (use the fstx that wrote it)",
                    journal::OLDEST_VERSION,
                    journal::VERSION
                ),
            ),
        )),
        Err(DecodeError::Malformed(why)) => {
            let seq = journal::framed_seq(&bytes);
            let moved = quarantine(st, tree, ctl, &mut flusher, durable, dry_run, seq)
                .map_err(|(step, e)| fail(step, nc.clone(), e))?;
            Ok(Last {
                last_seq: retired,
                report: Some(report(
                    seq,
                    TxnOutcome::Quarantined {
                        dir: root_path.join(moved.dir),
                        staged: moved.staged.iter().map(|p| root_path.join(p)).collect(),
                        reason: RollbackReason::Malformed(why),
                    },
                )),
            })
        }
        other => {
            let (seq, reason) = match other {
                Ok(r) => (Some(r.seq), RollbackReason::NoCommitRecord),
                Err(DecodeError::Truncated) if bytes.is_empty() => {
                    (None, RollbackReason::Damaged(Damage::Empty))
                }
                Err(DecodeError::Truncated) => (None, RollbackReason::Damaged(Damage::Torn)),
                Err(_) => (None, RollbackReason::Damaged(Damage::BadChecksum)),
            };
            let removed = rollback(st, tree, ctl, &mut flusher, durable, dry_run)
                .map_err(|(step, e)| fail(step, nc.clone(), e))?;
            Ok(Last {
                last_seq: retired,
                report: Some(report(
                    seq,
                    TxnOutcome::RolledBack {
                        staged_removed: removed.iter().map(|p| root_path.join(p)).collect(),
                        reason,
                    },
                )),
            })
        }
    }
}

/// Removes every staged file under the root, flushes the directories they
/// were in, and only then removes the journal (the marker outlives the
/// staging). Returns the staged files' paths.
fn rollback(
    st: &dyn Storage,
    tree: &mut Tree,
    ctl: &Control,
    flusher: &mut Flusher,
    durable: bool,
    dry_run: bool,
) -> std::result::Result<Vec<PathBuf>, (Step, io::Error)> {
    let paths = remove_staging(st, tree, flusher, durable, dry_run)?;
    if !dry_run {
        remove_journal(st, ctl, durable).map_err(|e| (Step::RemoveJournal, e))?;
    }
    Ok(paths)
}

/// Removes every staged file under the root and flushes the directories
/// they were in. Returns the staged files' paths (in a dry run: only lists).
fn remove_staging(
    st: &dyn Storage,
    tree: &mut Tree,
    flusher: &mut Flusher,
    durable: bool,
    dry_run: bool,
) -> std::result::Result<Vec<PathBuf>, (Step, io::Error)> {
    let found = find_staging(st, tree).map_err(|e| (Step::FindStagedFiles, e))?;
    let paths: Vec<PathBuf> = found
        .iter()
        .map(|(d, n)| PathBuf::from(d.to_string()).join(n))
        .collect();
    if dry_run || found.is_empty() {
        return Ok(paths);
    }
    let mut dirs = BTreeMap::new();
    for (dir, name) in &found {
        let d = tree.dir(dir).map_err(|e| (Step::OpenDirectory, e))?;
        match st.unlink_at(&d, name, false) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err((Step::RemoveStagedFile, e)),
        }
        dirs.insert(dir.clone(), d);
    }
    if durable {
        flusher
            .round(dirs.into_values().map(|d| (d, SyncKind::All)))
            .map_err(|e| (Step::FlushDirectories, e))?;
    }
    Ok(paths)
}

/// Walks the tree (never following symlinks, skipping the control directory
/// and nested transaction roots) and lists staged files.
pub(super) fn find_staging(
    st: &dyn Storage,
    tree: &mut Tree,
) -> io::Result<Vec<(RelPath, std::ffi::OsString)>> {
    let mut out = Vec::new();
    let mut queue = vec![RelPath::root()];
    while let Some(dir) = queue.pop() {
        let fd = match tree.dir(&dir) {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let mut entries = st.read_dir(&fd)?;
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        for e in entries {
            if dir.is_root() && e.name == CONTROL_DIR {
                continue;
            }
            let kind = match e.kind {
                FileKind::Unknown => match st.stat_at(&fd, &e.name, false) {
                    Ok(s) => s.kind,
                    Err(_) => continue,
                },
                k => k,
            };
            match kind {
                FileKind::Regular if is_stage_name(&e.name) => out.push((dir.clone(), e.name)),
                FileKind::Dir => {
                    let Ok(child) = RelPath::from_components(
                        dir.components()
                            .iter()
                            .cloned()
                            .chain([e.name.clone()])
                            .collect(),
                    ) else {
                        continue;
                    };
                    let sub = tree.dir(&child)?;
                    // A nested transaction root keeps its own staging.
                    if st.stat_at(&sub, OsStr::new(CONTROL_DIR), false).is_ok() {
                        continue;
                    }
                    queue.push(child);
                }
                _ => {}
            }
        }
    }
    Ok(out)
}

/// What recovering one directory as a transaction root found.
pub(crate) enum RootState {
    /// Not a transaction root.
    NotARoot,
    /// A live transaction holds the writer lock.
    Busy,
    /// Recovered (with what it did, if anything).
    Done(Option<TxnRecovery>),
}

/// Recovery entry point for [`crate::recover`]: if `root` is a transaction
/// root and no transaction is live, recovers it.
pub(crate) fn recover_root(
    st: &Arc<dyn Storage>,
    root: Arc<Fd>,
    root_path: &Path,
    dry_run: bool,
) -> Result<RootState> {
    let fail = |step, e| Error::new("recover", root_path, step, State::NotCommitted, e);
    match st.stat_at(&root, OsStr::new(CONTROL_DIR), false) {
        Ok(s) if s.kind == FileKind::Dir => {}
        Ok(_) => return Ok(RootState::NotARoot),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(RootState::NotARoot),
        Err(e) => return Err(fail(Step::InspectControlDirectory, e)),
    }
    let ctl = match open_control(&**st, &root, !dry_run) {
        Ok(c) => c,
        Err(e) if dry_run && e.kind() == io::ErrorKind::NotFound => return Ok(RootState::NotARoot),
        Err(e) => return Err(fail(Step::OpenControlDirectory, e)),
    };
    if !st
        .lock(&ctl.lock, LockMode::Exclusive, false)
        .map_err(|e| fail(Step::TakeWriterLock, e))?
    {
        return Ok(RootState::Busy);
    }
    let mut opts = TxnOptions::new();
    opts.storage(st.clone());
    let mut tree = Tree::new(st.clone(), root);
    let r = recover_locked(&**st, &mut tree, root_path, &ctl, &opts, dry_run, true);
    let _ = st.unlock(&ctl.lock);
    Ok(RootState::Done(r?.report))
}
