//! Staging: what a transaction will change, checked and written beside
//! its targets before the commit point.

use std::ffi::OsString;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::journal::{Op, RelPath, StagedMeta};
use super::options::TxnOptions;
use super::root::{rel_path, split};
use super::transaction::{Staged, Transaction, Use};
use crate::error::{invalid, Result, Step};
use crate::io::write_all_at;
use crate::storage::{Fd, FileKind, OpenHow, Stat, Storage, SyncKind};

impl Transaction {
    /// Makes sure directory `dir` exists or is planned (creating the plan
    /// for missing ancestors); returns the nearest existing ancestor (where
    /// staged files go) and whether `dir` itself exists.
    pub(super) fn plan_dir(&mut self, dir: &RelPath, create: bool) -> io::Result<(RelPath, bool)> {
        let mut existing = RelPath::root();
        let mut missing_from = None;
        let prefixes = (1..=dir.components().len())
            .map(|i| RelPath::from_components(dir.components()[..i].to_vec()))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|m| invalid(io::ErrorKind::InvalidInput, m))?;
        if prefixes
            .iter()
            .any(|p| self.uses.get(p) == Some(&Use::File))
        {
            return Err(invalid(
                io::ErrorKind::InvalidInput,
                "a directory on this path is a file this transaction also changes",
            ));
        }
        for (i, prefix) in prefixes.into_iter().enumerate() {
            let i = i + 1;
            if self.new_dirs.contains(&prefix) {
                missing_from = Some(i);
                break;
            }
            match self.tree.dir(&prefix) {
                Ok(_) => existing = prefix,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    missing_from = Some(i);
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        let Some(from) = missing_from else {
            return Ok((existing, true));
        };
        if !create {
            return Err(invalid(
                io::ErrorKind::NotFound,
                "the directory does not exist",
            ));
        }
        for i in from..=dir.components().len() {
            let prefix = RelPath::from_components(dir.components()[..i].to_vec())
                .map_err(|m| invalid(io::ErrorKind::InvalidInput, m))?;
            if !self.new_dirs.contains(&prefix) {
                self.new_dirs.insert(prefix.clone());
                self.uses.insert(prefix.clone(), Use::Dir);
                self.ops.push(Op::Mkdir {
                    path: prefix,
                    mode: 0o777,
                });
            }
        }
        Ok((existing, false))
    }

    pub(super) fn claim(&self, p: &RelPath) -> io::Result<()> {
        if self.uses.contains_key(p) {
            return Err(invalid(
                io::ErrorKind::InvalidInput,
                "this path is already used by another operation of the transaction",
            ));
        }
        if self.new_dirs.iter().any(|d| p.is_ancestor_of(d)) {
            return Err(invalid(
                io::ErrorKind::InvalidInput,
                "this path is a directory the transaction creates",
            ));
        }
        Ok(())
    }

    /// Writes the BEGIN record before the first staged file. It tells a
    /// later `begin` that a writer died with staging in the tree; it is
    /// flushed (with `.fstx-txn/` and the root, round R0) only for a root's
    /// first transaction, when `.fstx-txn/` itself may be new. After that a
    /// power cut may lose the BEGIN record and keep staged files: the
    /// explicit recovery (`recover`, what a device runs at boot) sweeps
    /// those (see the module docs).
    pub(super) fn ensure_intent(&mut self) -> io::Result<()> {
        if self.journal.is_some() {
            return Ok(());
        }
        let st = self.st();
        let rec = self.begin_record()?;
        let f = self.create_journal()?;
        write_all_at(&*st, &f, &rec, 0)?;
        if self.opts.durable() && self.seq == 1 {
            let mut set = vec![
                (f.clone(), SyncKind::All),
                (self.ctl.dir.clone(), SyncKind::All),
            ];
            if self.ctl.needs_root_flush {
                set.push((self.tree.root(), SyncKind::All));
            }
            if self.flusher.round(set)? {
                self.rounds += 1;
            }
            self.ctl.needs_root_flush = false;
        }
        Ok(())
    }

    /// Stages `contents` to become file `path` at commit.
    pub fn write(&mut self, path: impl AsRef<Path>, contents: impl AsRef<[u8]>) -> Result<()> {
        let path = path.as_ref();
        let mut f = self.create(path)?;
        if let Err(e) = f.write_all(contents.as_ref()) {
            drop(f);
            return Err(self.err("stage", path, Step::WriteStagedFile, e));
        }
        f.finish()
    }

    /// Starts staging file `path`, streaming: write its content into the
    /// returned [`StagedFile`], then [`finish`](StagedFile::finish) it.
    pub fn create(&mut self, path: impl AsRef<Path>) -> Result<StagedFile<'_>> {
        let path = path.as_ref();
        let fail = |t: &Transaction, step, e| t.err("stage", path, step, e);
        let rel = rel_path(path).map_err(|e| fail(self, Step::ParsePath, e))?;
        self.claim(&rel)
            .map_err(|e| fail(self, Step::CheckPath, e))?;
        let (parent, name) = split(&rel).map_err(|e| fail(self, Step::ParsePath, e))?;
        let name = name.as_os_str();
        let name = name.to_os_string();
        let (stage_dir, exists) = self
            .plan_dir(&parent, true)
            .map_err(|e| fail(self, Step::OpenParentDirectory, e))?;
        let st = self.st();
        let sdir = self
            .tree
            .dir(&stage_dir)
            .map_err(|e| fail(self, Step::OpenDirectory, e))?;
        let mut old: Option<(Stat, Option<Fd>)> = None;
        if exists {
            match st.stat_at(&sdir, &name, false) {
                Ok(s) if s.kind == FileKind::Regular => {
                    // As the single-file replace: a target we may not read
                    // keeps what stat says (no xattrs); any other error fails
                    // the staging rather than silently dropping metadata
                    // (found by the simulator: EIO here used to be ignored).
                    let file = if self.opts.preserve_metadata || self.opts.preserve_xattrs {
                        match st.open(&sdir, &name, OpenHow::READ_NOFOLLOW) {
                            Ok(f) => Some(f),
                            Err(e)
                                if e.kind() == io::ErrorKind::PermissionDenied
                                    || e.kind() == io::ErrorKind::NotFound =>
                            {
                                None
                            }
                            Err(e) => return Err(fail(self, Step::OpenTarget, e)),
                        }
                    } else {
                        None
                    };
                    old = Some((s, file));
                }
                Ok(s) => {
                    let what = match s.kind {
                        FileKind::Dir => "the target is a directory",
                        FileKind::Symlink => {
                            "the target is a symlink (transactions never follow symlinks)"
                        }
                        _ => "the target is not a regular file",
                    };
                    return Err(fail(
                        self,
                        Step::InspectTarget,
                        invalid(io::ErrorKind::InvalidInput, what),
                    ));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(fail(self, Step::InspectTarget, e)),
            }
        }
        // Verified: the envelope's sequence number, above the target's and
        // its backups' (symlinks are not followed; a new directory holds
        // nothing yet).
        let seal = match (self.opts.verified, exists) {
            (false, _) => None,
            (true, false) => Some(1),
            (true, true) => Some(
                crate::envelope::next_seq(&*st, &sdir, &name, None, false)
                    .map_err(|e| fail(self, Step::ReadSequenceNumber, e))?,
            ),
        };
        self.ensure_intent()
            .map_err(|e| fail(self, Step::WriteJournalIntent, e))?;
        let create_mode = match &old {
            Some((s, _)) if self.opts.preserve_metadata => s.mode & 0o600,
            _ => 0o666,
        };
        let (stage_name, fd) =
            crate::temp::create_fresh(&*st, &sdir, &crate::temp::STAGED, &name, create_mode)
                .map_err(|(step, e)| fail(self, step, e))?;
        self.uses.insert(rel.clone(), Use::File);
        self.stage_dirs.insert(stage_dir.clone());
        self.staged.push(Staged {
            dir: stage_dir.clone(),
            name: stage_name.clone(),
        });
        Ok(StagedFile {
            txn: self,
            path: path.to_path_buf(),
            rel,
            stage_dir,
            stage_name,
            fd: Some(fd),
            old,
            seal,
            pos: 0,
            crc: 0,
            done: false,
        })
    }

    /// Stages the removal of file (or symlink) `path`, which must exist.
    pub fn remove(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let rel = rel_path(path).map_err(|e| self.err("remove", path, Step::ParsePath, e))?;
        self.claim(&rel)
            .map_err(|e| self.err("remove", path, Step::CheckPath, e))?;
        let (parent, name) =
            split(&rel).map_err(|e| self.err("remove", path, Step::ParsePath, e))?;
        let name = name.as_os_str();
        let (_, exists) = self
            .plan_dir(&parent, false)
            .map_err(|e| self.err("remove", path, Step::OpenParentDirectory, e))?;
        debug_assert!(exists);
        let dir = self
            .tree
            .dir(&parent)
            .map_err(|e| self.err("remove", path, Step::OpenParentDirectory, e))?;
        let s = self
            .st()
            .stat_at(&dir, name, false)
            .map_err(|e| self.err("remove", path, Step::InspectFile, e))?;
        if s.kind == FileKind::Dir {
            return Err(self.err(
                "remove",
                path,
                Step::InspectFile,
                invalid(
                    io::ErrorKind::IsADirectory,
                    "transactions remove files, not directories",
                ),
            ));
        }
        self.uses.insert(rel.clone(), Use::File);
        self.ops.push(Op::Remove {
            path: rel,
            ino: s.ino,
        });
        Ok(())
    }

    /// Stages renaming file (or symlink) `from` to `to` (replacing `to` if it
    /// exists; creating `to`'s missing parent directories).
    pub fn rename(&mut self, from: impl AsRef<Path>, to: impl AsRef<Path>) -> Result<()> {
        let (from, to) = (from.as_ref(), to.as_ref());
        let rf = rel_path(from).map_err(|e| self.err("rename", from, Step::ParsePath, e))?;
        let rt = rel_path(to).map_err(|e| self.err("rename", to, Step::ParsePath, e))?;
        if rf == rt {
            return Err(self.err(
                "rename",
                from,
                Step::CheckPath,
                invalid(io::ErrorKind::InvalidInput, "rename to the same path"),
            ));
        }
        self.claim(&rf)
            .map_err(|e| self.err("rename", from, Step::CheckPath, e))?;
        self.claim(&rt)
            .map_err(|e| self.err("rename", to, Step::CheckPath, e))?;
        let (fparent, fname) =
            split(&rf).map_err(|e| self.err("rename", from, Step::ParsePath, e))?;
        let fname = fname.as_os_str();
        self.plan_dir(&fparent, false)
            .map_err(|e| self.err("rename", from, Step::OpenParentDirectory, e))?;
        let dir = self
            .tree
            .dir(&fparent)
            .map_err(|e| self.err("rename", from, Step::OpenParentDirectory, e))?;
        let s = self
            .st()
            .stat_at(&dir, fname, false)
            .map_err(|e| self.err("rename", from, Step::InspectSource, e))?;
        if s.kind == FileKind::Dir {
            return Err(self.err(
                "rename",
                from,
                Step::InspectSource,
                invalid(
                    io::ErrorKind::IsADirectory,
                    "transactions rename files, not directories",
                ),
            ));
        }
        let (tparent, tname) =
            split(&rt).map_err(|e| self.err("rename", to, Step::ParsePath, e))?;
        let tname = tname.as_os_str();
        let (_, texists) = self
            .plan_dir(&tparent, true)
            .map_err(|e| self.err("rename", to, Step::OpenParentDirectory, e))?;
        if texists {
            let tdir = self
                .tree
                .dir(&tparent)
                .map_err(|e| self.err("rename", to, Step::OpenParentDirectory, e))?;
            match self.st().stat_at(&tdir, tname, false) {
                Ok(t) if t.kind == FileKind::Dir => {
                    return Err(self.err(
                        "rename",
                        to,
                        Step::InspectDestination,
                        invalid(
                            io::ErrorKind::IsADirectory,
                            "the destination is a directory",
                        ),
                    ))
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(self.err("rename", to, Step::InspectDestination, e)),
            }
        }
        self.uses.insert(rf.clone(), Use::File);
        self.uses.insert(rt.clone(), Use::File);
        self.ops.push(Op::Rename {
            from: rf,
            to: rt,
            ino: s.ino,
        });
        Ok(())
    }

    /// Stages creating directory `path` and its missing parents (like
    /// `mkdir -p`: an existing directory is fine).
    pub fn mkdir(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let rel = rel_path(path).map_err(|e| self.err("mkdir", path, Step::ParsePath, e))?;
        if self.uses.get(&rel) == Some(&Use::File) {
            return Err(self.err(
                "mkdir",
                path,
                Step::CheckPath,
                invalid(
                    io::ErrorKind::InvalidInput,
                    "this path is a file the transaction changes",
                ),
            ));
        }
        self.plan_dir(&rel, true)
            .map_err(|e| self.err("mkdir", path, Step::OpenDirectory, e))?;
        Ok(())
    }
}

/// A file being staged by a [`Transaction`]: write its content, then
/// [`finish`](Self::finish). Dropping it unfinished removes the staged file
/// (the transaction stays usable).
pub struct StagedFile<'t> {
    txn: &'t mut Transaction,
    path: PathBuf,
    rel: RelPath,
    stage_dir: RelPath,
    stage_name: OsString,
    fd: Option<Fd>,
    old: Option<(Stat, Option<Fd>)>,
    /// Verified: the envelope's sequence number (the payload is written
    /// after the header's place, the header at `finish`).
    seal: Option<u64>,
    /// Payload bytes written so far, and their CRC-32C.
    pos: u64,
    crc: u32,
    done: bool,
}

impl std::fmt::Debug for StagedFile<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StagedFile")
            .field("path", &self.path)
            .field("len", &self.pos)
            .finish_non_exhaustive()
    }
}

impl StagedFile<'_> {
    /// Completes the staged file: carries the old file's metadata, hands it
    /// to the flusher, and records the write in the transaction.
    pub fn finish(mut self) -> Result<()> {
        let st = self.txn.st();
        let Some(fd) = self.fd.take() else {
            return Err(self.txn.err(
                "stage",
                &self.path,
                Step::FinishStagedFile,
                invalid(io::ErrorKind::Other, "already finished"),
            ));
        };
        if let Err(e) = carry_metadata(&*st, &fd, self.old.as_ref(), &self.txn.opts) {
            self.fd = Some(fd);
            return Err(self.txn.err("stage", &self.path, Step::CarryMetadata, e));
        }
        // The file as the journal records it: with the envelope, its header
        // and the payload.
        let (len, crc) = match self.seal {
            None => (self.pos, self.crc),
            Some(seq) => match seal_staged(&*st, &fd, seq, self.pos, self.crc) {
                Ok(file) => file,
                Err(e) => {
                    self.fd = Some(fd);
                    return Err(self.txn.err("stage", &self.path, Step::WriteStagedFile, e));
                }
            },
        };
        let meta = match meta_digest(&*st, &fd) {
            Ok(m) => m,
            Err(e) => {
                self.fd = Some(fd);
                return Err(self.txn.err("stage", &self.path, Step::CarryMetadata, e));
            }
        };
        self.done = true;
        if self.txn.opts.durable() {
            self.txn.flusher.submit(Arc::new(fd), SyncKind::All);
        }
        self.txn.ops.push(Op::Put {
            path: self.rel.clone(),
            stage_dir: self.stage_dir.clone(),
            stage_name: self.stage_name.clone(),
            len,
            crc,
            meta: Some(meta),
        });
        Ok(())
    }
}

impl Write for StagedFile<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Some(fd) = self.fd.as_ref() else {
            return Err(invalid(
                io::ErrorKind::Other,
                "staged file already finished",
            ));
        };
        let base = if self.seal.is_some() {
            crate::envelope::ENVELOPE_HEADER_LEN
        } else {
            0
        };
        let n = self.txn.opts.storage.write_at(fd, buf, base + self.pos)?;
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        self.pos += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for StagedFile<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        drop(self.fd.take());
        let st = self.txn.st();
        let r = self
            .txn
            .tree
            .dir(&self.stage_dir)
            .and_then(|d| st.unlink_at(&d, &self.stage_name, false));
        self.txn.uses.remove(&self.rel);
        let idx = self
            .txn
            .staged
            .iter()
            .position(|s| s.name == self.stage_name && s.dir == self.stage_dir);
        match r {
            Ok(()) => {
                if let Some(i) = idx {
                    self.txn.staged.remove(i);
                }
            }
            Err(_) => self.txn.poisoned = Some(self.path.clone()),
        }
    }
}

/// Writes the envelope's header (sequence `seq`, a payload of `len` bytes
/// whose CRC-32C is `crc`) at offset 0 of a staged file whose payload was
/// written after it; returns the whole file's length and CRC-32C, for the
/// journal. The payload's checksum was computed as it was written: nothing
/// is read back.
fn seal_staged(st: &dyn Storage, fd: &Fd, seq: u64, len: u64, crc: u32) -> io::Result<(u64, u32)> {
    use crate::envelope::{EnvelopeHeader, ENVELOPE_HEADER_LEN};
    let payload_len = usize::try_from(len)
        .map_err(|_| invalid(io::ErrorKind::FileTooLarge, "staged file too large"))?;
    let header = EnvelopeHeader { seq, len, crc }.encode();
    write_all_at(st, fd, &header, 0)?;
    let file_crc = crc32c::crc32c_combine(crc32c::crc32c(&header), crc, payload_len);
    Ok((ENVELOPE_HEADER_LEN + len, file_crc))
}

/// Gives a staged file the old file's owner, group, mode (without set-id
/// bits) and extended attributes (without `security.capability`), or the
/// default mode of a new file. Same rules as the single-file replace.
/// Carries the old file's owner, group, mode and xattrs over, as the
/// single-file replace does (set-id bits and file capabilities dropped).
pub(super) fn carry_metadata(
    st: &dyn Storage,
    f: &Fd,
    old: Option<&(Stat, Option<Fd>)>,
    opts: &TxnOptions,
) -> io::Result<()> {
    if !opts.preserve_metadata {
        return Ok(());
    }
    crate::metadata::carry_metadata(
        st,
        f,
        old.map(|(stat, fd)| (stat, fd.as_ref())),
        &crate::metadata::Carry {
            mode: None,
            keep_privileges: false,
            xattrs: opts.preserve_xattrs,
        },
    )
}

/// The metadata digest a PUT operation records: CRC-32C of the file's
/// permission bits, owner, group and extended attributes (sorted by name,
/// each name and value length-prefixed; without `security.ima` and
/// `security.evm`, which the kernel maintains). The commit round flushes the
/// commit record together with the staged files, so a crash inside it can
/// keep a staged file's data and lose its `chmod`, `chown` or `setxattr`;
/// recovery compares this digest as it compares the data's checksum.
/// Returned with the file's inode number.
pub(super) fn meta_digest(st: &dyn Storage, f: &Fd) -> io::Result<StagedMeta> {
    let s = st.stat(f)?;
    let mut b = Vec::with_capacity(64);
    b.extend_from_slice(&(s.mode & 0o7777).to_le_bytes());
    b.extend_from_slice(&s.uid.to_le_bytes());
    b.extend_from_slice(&s.gid.to_le_bytes());
    let mut names = match st.list_xattr(f) {
        Ok(n) => n,
        Err(e) if crate::metadata::unsupported(&e) => Vec::new(),
        Err(e) => return Err(e),
    };
    names.sort();
    for name in names {
        // Written by the kernel (IMA/EVM appraisal, possibly on close), not
        // by fstx: they may change without a crash.
        let raw = name.as_encoded_bytes();
        if raw.starts_with(b"security.ima") || raw.starts_with(b"security.evm") {
            continue;
        }
        let value = match st.get_xattr(f, &name) {
            Ok(v) => v,
            Err(e) if crate::metadata::unsupported(&e) || e.kind() == io::ErrorKind::NotFound => {
                continue
            }
            Err(e) => return Err(e),
        };
        let name = name.as_encoded_bytes();
        b.extend_from_slice(&(name.len() as u32).to_le_bytes());
        b.extend_from_slice(name);
        b.extend_from_slice(&(value.len() as u32).to_le_bytes());
        b.extend_from_slice(&value);
    }
    Ok(StagedMeta {
        ino: s.ino,
        digest: crc32c::crc32c(&b),
    })
}
