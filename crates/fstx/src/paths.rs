//! Path resolution for a replace: splitting a path into directory and
//! name, and walking symlinks by the [`Symlinks`] policy to the directory
//! handle and name a replace works in ([`Resolved`]).

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::atomic::{HardLinks, Options, Symlinks};
use crate::dir::DirShared;
use crate::error::{invalid, Error, Result, State, Step};
use crate::storage::{FileKind, Stat};

/// At most this many symlinks are followed when resolving a target.
pub const MAX_SYMLINK_HOPS: usize = 40;

/// Where a replace of `path` happens, after resolving symlinks by the policy.
#[derive(Debug)]
pub(crate) struct Resolved {
    /// The directory every later operation is relative to (its handle, its
    /// path for messages, its filesystem type once read, its flushes).
    pub(crate) dir: Arc<DirShared>,
    /// The final name in `dir`.
    pub(crate) name: OsString,
    /// The regular file found there, if any.
    pub(crate) existing: Option<Stat>,
}

/// Resolves `path` by the options' symlink policy and checks that it may be
/// replaced (a regular file or nothing; hard-link policy; filesystem class).
pub(crate) fn resolve(op: &'static str, path: &Path, opts: &Options) -> Result<Resolved> {
    let st = &*opts.storage;
    let fail = |step, e| Error::new(op, path, step, State::NotCommitted, e);
    let (dir_path, name) = split(path).map_err(|e| fail(Step::ParsePath, e))?;
    let dir = st
        .open_dir(None, &dir_path, true)
        .map_err(|e| fail(Step::OpenParentDirectory, e))?;
    resolve_in(op, path, opts, DirShared::new(dir, dir_path), &name)
}

/// Resolves `name` in directory `start` as [`resolve`] does (`path` is for
/// messages). The result's directory is `start` itself unless a symlink
/// led elsewhere; the filesystem check reads the type only if `start` has
/// not read it yet.
pub(crate) fn resolve_in(
    op: &'static str,
    path: &Path,
    opts: &Options,
    start: Arc<DirShared>,
    name: &OsStr,
) -> Result<Resolved> {
    let st = &*opts.storage;
    let fail = |step, e| Error::new(op, path, step, State::NotCommitted, e);
    let mut dir = start;
    let mut name = name.to_os_string();

    // Resolve the target by the symlink policy, relative to directory handles.
    let mut hops = 0;
    let existing_stat = loop {
        let stat = match st.stat_at(&dir.fd, &name, false) {
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
                        .read_link_at(&dir.fd, &name)
                        .map_err(|e| fail(Step::ReadSymlink, e))?;
                    let (link_dir, link_name) =
                        split(&link).map_err(|e| fail(Step::ResolveSymlink, e))?;
                    let (fd, dir_path) = if link.is_absolute() {
                        (st.open_dir(None, &link_dir, true), link_dir)
                    } else {
                        (
                            st.open_dir(Some(&dir.fd), &link_dir, true),
                            dir.path.join(&link_dir),
                        )
                    };
                    let fd = fd.map_err(|e| fail(Step::OpenSymlinkTargetDirectory, e))?;
                    dir = DirShared::new(fd, dir_path);
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

    dir.check_fs(st, opts)
        .map_err(|e| fail(Step::IdentifyFilesystem, e))?;
    Ok(Resolved {
        dir,
        name,
        existing: existing_stat,
    })
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
}
