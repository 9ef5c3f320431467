//! Creating temporary files: a fresh file under an unpredictable reserved
//! name (see [`crate::names`]), created exclusively and held under an
//! exclusive lock, so that [`recover`](crate::recover()) never removes a
//! live writer's file.

use std::ffi::{OsStr, OsString};
use std::io;

use crate::error::{invalid, Step};
use crate::names::{temp_name, TEMP_PREFIX};
use crate::storage::{Fd, LockMode, OpenHow, Storage};

/// A kind of fresh name: its prefix, and the steps and message a failure
/// reports.
pub(crate) struct Fresh {
    prefix: &'static str,
    generate: Step,
    create: Step,
    exhausted: &'static str,
}

/// A replace's temporary file (`.fstx-tmp.<16 hex>.NAME`).
pub(crate) const TEMP: Fresh = Fresh {
    prefix: TEMP_PREFIX,
    generate: Step::GenerateTemporaryName,
    create: Step::CreateTemporaryFile,
    exhausted: "could not create a temporary file under a fresh name",
};

/// A transaction's staged file (`.fstx-stage.<16 hex>.NAME`).
pub(crate) const STAGED: Fresh = Fresh {
    prefix: crate::txn::STAGE_PREFIX,
    generate: Step::GenerateStagingName,
    create: Step::CreateStagedFile,
    exhausted: "no free staging name",
};

/// How many fresh names are tried before giving up.
const ATTEMPTS: usize = 64;

/// Creates a new file beside `name` under a fresh name of kind `kind`,
/// exclusively (`O_CREAT|O_EXCL|O_NOFOLLOW`), trying another name when one
/// is taken. The one place fstx makes up names.
pub(crate) fn create_fresh(
    st: &dyn Storage,
    dir: &Fd,
    kind: &Fresh,
    name: &OsStr,
    mode: u32,
) -> std::result::Result<(OsString, Fd), (Step, io::Error)> {
    for _ in 0..ATTEMPTS {
        let random = st.random().map_err(|e| (kind.generate, e))?;
        let fresh = temp_name(kind.prefix, random, name);
        match st.open(dir, &fresh, OpenHow::create_new(mode)) {
            Ok(file) => return Ok((fresh, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err((kind.create, e)),
        }
    }
    Err((
        kind.create,
        invalid(io::ErrorKind::AlreadyExists, kind.exhausted),
    ))
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
    for _ in 0..ATTEMPTS {
        let (temp_name, file) = create_fresh(st, dir, &TEMP, name, mode)?;
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
        TEMP.create,
        invalid(io::ErrorKind::AlreadyExists, TEMP.exhausted),
    ))
}
