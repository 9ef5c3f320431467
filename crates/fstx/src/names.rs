//! Reserved names: the files and directories fstx itself creates beside the
//! user's files. Tools that list, copy or compare a tree (the CLI's
//! `commit --from-dir --delete-missing`, checkers, backups) skip them with
//! [`is_internal_name`].

use std::ffi::OsStr;

/// Whether `name` (one path component) is one of fstx's own names: a
/// temporary file of a replace (`.fstx-tmp.<16 hex>.NAME`), a staged file
/// of a transaction (`.fstx-stage.<16 hex>.NAME`), a lock file
/// (`.fstx-lock.NAME`), or a transaction root's control directory
/// (`.fstx-txn`).
///
/// # Examples
///
/// ```
/// use std::ffi::OsStr;
/// assert!(fstx::is_internal_name(OsStr::new(".fstx-txn")));
/// assert!(fstx::is_internal_name(OsStr::new(".fstx-lock.config.json")));
/// assert!(fstx::is_internal_name(OsStr::new(".fstx-tmp.00000000000000ab.config.json")));
/// assert!(!fstx::is_internal_name(OsStr::new("config.json")));
/// assert!(!fstx::is_internal_name(OsStr::new("config.json~")));
/// ```
pub fn is_internal_name(name: &OsStr) -> bool {
    name == crate::txn::CONTROL_DIR
        || crate::atomic::is_temp_name(crate::atomic::TEMP_PREFIX, name)
        || crate::txn::is_stage_name(name)
        || crate::lock::is_lock_name(name)
}
