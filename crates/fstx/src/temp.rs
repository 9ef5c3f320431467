//! Creating temporary files: a fresh file under an unpredictable reserved
//! name (see [`crate::names`]), created exclusively and held under an
//! exclusive lock, so that [`recover`](crate::recover()) never removes a
//! live writer's file.

use std::ffi::{OsStr, OsString};
use std::io;

use crate::error::{invalid, Step};
use crate::names::{temp_name, TEMP_PREFIX};
use crate::storage::{Fd, LockMode, OpenHow, Storage};

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

/// [`create_temp`] with another name prefix (transactions' staged files).
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
