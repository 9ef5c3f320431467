//! Verifying a commit record before redo: is every write still possible,
//! and is any of it applied already (see [`verify`]).

use std::io;

use super::apply::check_ops;
use super::journal::{Op, RelPath};
use super::root::{split, Tree};
use crate::error::Step;
use crate::storage::{Fd, FileKind, OpenHow, Storage};

fn crc_of(st: &dyn Storage, f: &Fd, len: u64) -> io::Result<Option<u32>> {
    let s = st.stat(f)?;
    if s.kind != FileKind::Regular || s.size != len {
        return Ok(None);
    }
    let mut crc = 0u32;
    let mut off = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = st.read_at(f, &mut buf, off)?;
        if n == 0 {
            break;
        }
        crc = crc32c::crc32c_append(crc, &buf[..n]);
        off += n as u64;
    }
    Ok((off == len).then_some(crc))
}

/// What [`verify`] found.
pub(super) enum Verdict {
    /// Every write can be completed (or was applied).
    Complete,
    /// The write to `path` cannot: its staged file is damaged or missing
    /// and its target does not hold it. `applied`: some operation of the
    /// record is already in the tree.
    Lost { path: String, applied: bool },
}

/// The inode at `p` under the root, if any.
fn ino_at(
    st: &dyn Storage,
    tree: &mut Tree,
    p: &RelPath,
) -> std::result::Result<Option<u64>, (Step, io::Error)> {
    let (parent, name) = split(p).map_err(|e| (Step::CheckPath, e))?;
    match tree.dir(&parent) {
        Ok(d) => match st.stat_at(&d, &name, false) {
            Ok(s) => Ok(Some(s.ino)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err((Step::InspectTarget, e)),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err((Step::OpenTargetDirectory, e)),
    }
}

/// Checks, before anything is applied, that every write can be completed.
///
/// A PUT whose staged file is still there must hold the recorded length,
/// CRC-32C, inode and metadata digest. A PUT whose staged file is gone (in
/// a version 2 record) was applied if its target is the staged inode.
/// Otherwise its staged entry was lost by a crash inside the commit round
/// (then nothing of the record is applied, and it is rolled back, which
/// leaves the target alone), or it was applied and replaced since by another
/// writer (a journal can come back after it was applied when its
/// retirement's flush failed; a later `fstx write` to the
/// same path can outlive it; then other operations show the record applied,
/// and redo skips it). Inode numbers are reused, so the old target's inode
/// cannot tell the two apart; the rest of the record can. Version 1 records
/// compare the target's content instead.
pub(super) fn verify(
    st: &dyn Storage,
    tree: &mut Tree,
    ops: &[Op],
) -> std::result::Result<Verdict, (Step, io::Error)> {
    check_ops(ops).map_err(|e| (Step::CheckPath, e))?;
    let mut damaged = None;
    let mut missing = None;
    let mut applied = false;
    for op in ops {
        match op {
            Op::Put {
                path,
                stage_dir,
                stage_name,
                len,
                crc,
                meta,
            } => {
                let staged = match tree.dir(stage_dir) {
                    Ok(d) => match st.open(&d, stage_name, OpenHow::READ_NOFOLLOW) {
                        Ok(f) => Some(f),
                        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                        Err(e) => return Err((Step::OpenStagedFile, e)),
                    },
                    Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                    Err(e) => return Err((Step::OpenStagingDirectory, e)),
                };
                if let Some(f) = staged {
                    let ok = crc_of(st, &f, *len).map_err(|e| (Step::ReadStagedFile, e))?
                        == Some(*crc)
                        && match meta {
                            Some(m) => {
                                let now = super::stage::meta_digest(st, &f)
                                    .map_err(|e| (Step::ReadStagedFile, e))?;
                                (now.ino, now.digest) == (m.ino, m.digest)
                            }
                            None => true,
                        };
                    if !ok {
                        damaged.get_or_insert_with(|| path.to_string());
                    }
                    continue;
                }
                if let Some(m) = meta {
                    if ino_at(st, tree, path)? == Some(m.ino) {
                        applied = true;
                    } else {
                        // Its staged entry was lost inside the commit
                        // round (then nothing is applied), or it was
                        // applied and replaced since by another writer.
                        missing.get_or_insert_with(|| path.to_string());
                    }
                } else {
                    let (parent, name) = split(path).map_err(|e| (Step::CheckPath, e))?;
                    let in_place = match tree.dir(&parent) {
                        Ok(d) => match st.open(&d, &name, OpenHow::READ_NOFOLLOW) {
                            Ok(f) => {
                                crc_of(st, &f, *len).map_err(|e| (Step::ReadTarget, e))?
                                    == Some(*crc)
                            }
                            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
                            Err(e) => return Err((Step::OpenTarget, e)),
                        },
                        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
                        Err(e) => return Err((Step::OpenTargetDirectory, e)),
                    };
                    if in_place {
                        applied = true;
                    } else {
                        damaged.get_or_insert_with(|| path.to_string());
                    }
                }
            }
            // Applied: the source is gone and its inode is at the target.
            Op::Rename { from, to, ino } => {
                if ino_at(st, tree, from)? != Some(*ino) && ino_at(st, tree, to)? == Some(*ino) {
                    applied = true;
                }
            }
            // A directory the record creates did not exist when it was
            // staged: if it exists now, applying had begun.
            Op::Mkdir { path, .. } => match tree.dir(path) {
                Ok(_) => applied = true,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err((Step::OpenDirectory, e)),
            },
            Op::Remove { .. } => {}
        }
    }
    Ok(match (damaged, missing) {
        (Some(path), _) => Verdict::Lost { path, applied },
        // Nothing applied: the crash came inside the commit round.
        (None, Some(path)) if !applied => Verdict::Lost {
            path,
            applied: false,
        },
        // Part applied: the commit round had completed, so every staged
        // entry was durable; a missing one was applied and replaced since.
        _ => Verdict::Complete,
    })
}
