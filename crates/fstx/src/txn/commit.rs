//! The commit point and the way back: the commit record, applying it,
//! retiring the journal, and rolling back anything not committed.

use std::ffi::OsStr;
use std::io;
use std::sync::atomic::Ordering;

use super::apply::{apply, flush_dirs, retire};
use super::bug;
use super::journal::{Kind, Op, Record, RelPath};
use super::options::{Committed, Phase};
use super::root::JOURNAL_FILE;
use super::transaction::Transaction;
use crate::error::{invalid, Error, Result, State, Step};
use crate::io::write_all_at;
use crate::storage::{LockMode, OpenHow, SyncKind};

impl Transaction {
    /// Commits: after it returns `Ok`, every staged change is in the tree
    /// and durable; after a crash at any instant, recovery leaves all of
    /// them or none. Three flush rounds: the commit round (the record, the
    /// staged files and their directories together), the flush of the
    /// directories it changed, and the retirement of the journal.
    ///
    /// # Errors
    ///
    /// [`State::NotCommitted`]: nothing changed, staging removed (or, if
    /// that failed too, left for recovery to remove). A failed commit
    /// round is in doubt: the record is first replaced durably by a BEGIN
    /// record, then rolled back.
    /// [`State::CommittedPendingRecovery`]: the commit round completed but
    /// applying failed; the tree may show part of it until recovery (run
    /// by the next transaction, snapshot or `fstx recover`) finishes it.
    pub fn commit(mut self) -> Result<Committed> {
        let r = self.commit_inner();
        self.finished = true;
        r
    }

    pub(super) fn commit_inner(&mut self) -> Result<Committed> {
        let st = self.st();
        let root_path = self.root_path.clone();
        let pending = |step, e| {
            Error::new(
                "commit",
                &root_path,
                step,
                State::CommittedPendingRecovery,
                e,
            )
        };
        if let Some(p) = &self.poisoned {
            let e = invalid(
                io::ErrorKind::Other,
                "a staged file could not be removed earlier; the transaction cannot commit",
            );
            let p = p.clone();
            let state = self.discard();
            return Err(Error::new("commit", &p, Step::CheckTransaction, state, e));
        }
        let mut ops = std::mem::take(&mut self.ops);
        // Apply order: directories (parents first), renames, writes, removals.
        ops.sort_by_key(|op| match op {
            Op::Mkdir { .. } => 0,
            Op::Rename { .. } => 1,
            Op::Put { .. } => 2,
            Op::Remove { .. } => 3,
        });
        let record = Record {
            kind: Kind::Commit,
            seq: self.seq,
            txn_id: self.txn_id,
            ops,
        };
        let bytes = match record.encode() {
            Ok(b) => b,
            Err(m) => {
                let e = invalid(io::ErrorKind::InvalidInput, m);
                return Err(self.roll_back(Step::EncodeJournal, e));
            }
        };
        let journal = match self.journal.clone() {
            Some(j) => j,
            None => match self.create_journal() {
                Ok(j) => j,
                Err(e) => {
                    return Err(self.roll_back(Step::CreateJournal, e));
                }
            },
        };
        let durable = self.opts.durable();
        let bugs = self.opts.bugs;
        self.opts.phase(Phase::Staged);
        // Readers are held off from here to retirement.
        if let Err(e) = st.lock(&self.ctl.view, LockMode::Exclusive, true) {
            return Err(self.roll_back(Step::TakeReaderLock, e));
        }
        let written = write_all_at(&*st, &journal, &bytes, 0)
            .and_then(|()| st.set_len(&journal, bytes.len() as u64));
        if let Err(e) = written {
            // In doubt, as for a failed flush below: a write may have landed
            // whole before a later call failed (the `ftruncate`, or the
            // second part of a short write), and the unflushed record may
            // then survive a crash complete and valid. Rolling back by
            // removing the staging first could leave a valid commit record
            // whose staged files are gone, so the record is first replaced
            // durably by a BEGIN record.
            return Err(self.undo_and_roll_back(Step::WriteCommitRecord, e));
        }
        if durable {
            // The commit round: the commit record, the staged files (their
            // flushes already queued), their directory entries, and the
            // journal's own entry, all at once. A crash inside it may keep
            // the record and lose staged data: the record's lengths and
            // checksums let recovery see that and roll back (nothing is
            // applied before this round ends).
            let mut set = vec![(journal.clone(), SyncKind::Data)];
            if !self.ctl_assumed_durable() {
                set.push((self.ctl.dir.clone(), SyncKind::All));
            }
            if self.ctl.needs_root_flush && !self.stage_dirs.contains(&RelPath::root()) {
                set.push((self.tree.root(), SyncKind::All));
            }
            // The staging directories: opened as the flusher takes them.
            let dirs: Vec<RelPath> = self.stage_dirs.iter().cloned().collect();
            let tree = &mut self.tree;
            let mut failed = None;
            let set = set
                .into_iter()
                .chain(dirs.iter().filter_map(|d| match tree.dir(d) {
                    Ok(fd) => Some((fd, SyncKind::All)),
                    Err(e) => {
                        failed.get_or_insert(e);
                        None
                    }
                }));
            let r = self.flusher.round(set);
            if let Some(e) = failed {
                return Err(self.undo_and_roll_back(Step::OpenStagingDirectory, e));
            }
            match r {
                Ok(true) => self.rounds += 1,
                Ok(false) => {}
                Err(e) => {
                    // In doubt: the record may or may not be on disk, and a
                    // second flush proves nothing. Nothing is applied: the
                    // record is replaced durably by a BEGIN record, then
                    // rolled back.
                    return Err(self.undo_and_roll_back(Step::FlushCommitRound, e));
                }
            }
            self.ctl.needs_root_flush = false;
        }
        drop(journal);
        self.journal = None;
        self.opts.phase(Phase::Committed);
        // Apply.
        let touched = apply(&*st, &mut self.tree, &record.ops, &root_path)
            .map_err(|(step, e)| pending(step, e))?;
        if bug!(bugs, retire_before_dir_flush) {
            // PLANTED BUG: the journal is retired before the renames are durable.
            retire(&*st, &self.ctl, false).map_err(|e| pending(Step::RetireJournal, e))?;
        }
        if durable {
            match flush_dirs(&mut self.flusher, &mut self.tree, touched) {
                Ok(true) => self.rounds += 1,
                Ok(false) => {}
                Err(e) => return Err(pending(Step::FlushDirectories, e)),
            }
        }
        self.opts.phase(Phase::Applied);
        // Retire (R3), flushed: once `commit` returns, the journal can never
        // come back. An unflushed retirement would let a crash bring back an
        // applied journal after another writer (an `fstx::write` outside
        // transactions) changed its paths, and inode numbers are reused at
        // once, so redoing a REMOVE or RENAME could then act on a newer file.
        self.staged.clear();
        let flush_retire = durable && !bug!(bugs, replay_retired);
        retire(&*st, &self.ctl, flush_retire).map_err(|e| pending(Step::RetireJournal, e))?;
        if flush_retire {
            self.rounds += 1;
            self.flusher.calls.fetch_add(1, Ordering::Relaxed);
        }
        let _ = st.unlock(&self.ctl.view);
        Ok(self.committed(&record.ops))
    }

    /// What a commit of `ops` reports.
    fn committed(&self, ops: &[Op]) -> Committed {
        let mut c = Committed {
            seq: self.seq,
            written: 0,
            removed: 0,
            renamed: 0,
            dirs_created: 0,
            flush_rounds: self.rounds,
            flush_calls: self.flusher.calls.load(Ordering::Relaxed),
        };
        for op in ops {
            match op {
                Op::Mkdir { .. } => c.dirs_created += 1,
                Op::Put { .. } => c.written += 1,
                Op::Remove { .. } => c.removed += 1,
                Op::Rename { .. } => c.renamed += 1,
            }
        }
        c
    }

    /// The one way back before the commit point: removes the staging (see
    /// [`discard`](Self::discard)) and reports the failed step with the
    /// state that leaves.
    fn roll_back(&mut self, step: Step, e: io::Error) -> Error {
        let state = self.discard();
        Error::new("commit", &self.root_path, step, state, e)
    }

    /// The way back when the commit record may have reached the disk: it is
    /// first replaced durably (see [`undo_commit_record`](Self::undo_commit_record)).
    fn undo_and_roll_back(&mut self, step: Step, e: io::Error) -> Error {
        let state = self.undo_commit_record();
        Error::new("commit", &self.root_path, step, state, e)
    }

    /// Discards everything staged, leaving the tree untouched, and reports
    /// errors (drop does the same silently).
    pub fn abort(mut self) -> Result<()> {
        self.finished = true;
        match self.discard() {
            State::NotCommitted => Ok(()),
            state => Err(Error::new(
                "abort",
                &self.root_path,
                Step::RemoveStagedFiles,
                state,
                io::Error::other("some staged files could not be removed; recovery removes them"),
            )),
        }
    }

    /// After a failed flush of the commit record: replaces the journal with
    /// a BEGIN record through a fresh file (flushed, renamed, directory
    /// flushed), so the commit record can never be found again, then rolls
    /// back. If that fails too, the outcome is left to recovery.
    pub(super) fn undo_commit_record(&mut self) -> State {
        let st = self.st();
        let undo = OsStr::new("journal.undo");
        let r = (|| -> io::Result<()> {
            let rec = self.begin_record()?;
            match st.unlink_at(&self.ctl.dir, undo, false) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            let f = st.open(&self.ctl.dir, undo, OpenHow::create_new(0o644))?;
            write_all_at(&*st, &f, &rec, 0)?;
            st.sync(&f, SyncKind::All)?;
            st.rename_at(
                &self.ctl.dir,
                undo,
                &self.ctl.dir,
                OsStr::new(JOURNAL_FILE),
                false,
            )?;
            crate::durability::sync_dir_io(&*st, &self.ctl.dir, self.ctl.fs_magic)
        })();
        self.journal = None;
        if r.is_ok() {
            self.discard()
        } else {
            let _ = st.unlock(&self.ctl.view);
            self.staged.clear();
            State::CommittedPendingRecovery
        }
    }

    /// Removes the staged files (flushing their directories), then the
    /// journal: the intent marker outlives the staging it points at.
    pub(super) fn discard(&mut self) -> State {
        let st = self.st();
        let _ = self.flusher.barrier();
        let mut left = None;
        for s in std::mem::take(&mut self.staged) {
            let r = self
                .tree
                .dir(&s.dir)
                .and_then(|d| st.unlink_at(&d, &s.name, false));
            match r {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(_) => left = Some(self.root_path.join(s.dir.to_string()).join(&s.name)),
            }
        }
        if let Some(temp) = left {
            // Keep the journal: it tells recovery to look for the leftovers.
            let _ = st.unlock(&self.ctl.view);
            return State::NotCommittedTempLeft { temp };
        }
        if self.journal.take().is_some() || self.opts.durable() {
            if self.opts.durable() {
                let dirs: Vec<_> = self
                    .stage_dirs
                    .iter()
                    .filter_map(|d| self.tree.dir(d).ok())
                    .map(|d| (d, SyncKind::All))
                    .collect();
                let _ = self.flusher.round(dirs);
            }
            // A journal that cannot be removed is harmless: recovery rolls a
            // BEGIN record back (there is no staging left).
            if st
                .unlink_at(&self.ctl.dir, OsStr::new(JOURNAL_FILE), false)
                .is_ok()
                && self.opts.durable()
            {
                let _ = crate::durability::sync_dir_io(&*st, &self.ctl.dir, self.ctl.fs_magic);
            }
        }
        let _ = st.unlock(&self.ctl.view);
        State::NotCommitted
    }
}

impl Drop for Transaction {
    fn drop(&mut self) {
        if !self.finished {
            self.discard();
        }
    }
}
