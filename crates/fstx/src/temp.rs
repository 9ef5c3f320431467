//! Creating temporary files: a fresh file under an unpredictable reserved
//! name (see [`crate::names`]), created exclusively and held under an
//! exclusive lock, so that [`recover`](crate::recover()) never removes a
//! live writer's file.

use std::ffi::{OsStr, OsString};
use std::io;

use crate::error::{invalid, Step};
use crate::names::{temp_name, TEMP_PREFIX};
use crate::storage::{Fd, LockMode, OpenHow, Stat, Storage};

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

/// Creates and locks a fresh temporary file beside `name`; returns its
/// name, its handle and its stat as read under the lock.
///
/// The create-then-lock window: `recover` could lock and remove the new file
/// before its writer locks it. So after locking, the writer checks that the
/// inode it holds is still linked (`fstat`'s link count): `recover` removes
/// a name only while holding that inode's lock and after checking that the
/// name refers to it, and a temporary file has no other name, so a link
/// count of 0 means a recovery removed it — the writer then starts again
/// with a new name. Once the check passes the writer holds the lock, so
/// nobody can remove its file. The same `fstat` tells the caller the new
/// file's owner, group and mode (no second `fstat` to carry metadata).
pub(crate) fn create_temp(
    st: &dyn Storage,
    dir: &Fd,
    name: &OsStr,
    mode: u32,
) -> std::result::Result<(OsString, Fd, Stat), (Step, io::Error)> {
    for _ in 0..ATTEMPTS {
        let (temp_name, file) = create_fresh(st, dir, &TEMP, name, mode)?;
        let locked = st
            .lock(&file, LockMode::Exclusive, true)
            .and_then(|_| st.stat(&file));
        match locked {
            Ok(held) if held.nlink > 0 => return Ok((temp_name, file, held)),
            // Removed by a recovery between create and lock: try again.
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
