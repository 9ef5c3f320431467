//! Reserved names: the files and directories fstx itself creates beside the
//! user's files — temporary files (`.fstx-tmp.*`), lock files
//! (`.fstx-lock.*`) — and how to recognise them. Tools that list, copy or
//! compare a tree (the CLI's `commit --from-dir --delete-missing`, checkers,
//! backups) skip them with [`is_internal_name`].

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

/// Prefix of fstx's temporary file names: `.fstx-tmp.<16 hex digits>.<name>`.
pub(crate) const TEMP_PREFIX: &str = ".fstx-tmp.";

/// Prefix of lock file names: `.fstx-lock.<name>`.
pub(crate) const LOCK_PREFIX: &str = ".fstx-lock.";

/// The longest file name Linux filesystems accept.
pub(crate) const NAME_MAX: usize = 255;

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
    internal_name(name).is_some()
}

/// Which of fstx's own names `name` is (see [`is_internal_name`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum InternalName {
    /// A replace's temporary file, `.fstx-tmp.<16 hex>.NAME` (also the copy
    /// of a backup being made).
    Temp,
    /// A transaction's staged file, `.fstx-stage.<16 hex>.NAME`.
    Staged,
    /// A lock file, `.fstx-lock.NAME`: never removed.
    Lock,
    /// A transaction root's control directory, `.fstx-txn`.
    Control,
}

/// Which of fstx's own names `name` (one path component) is, if any.
///
/// # Examples
///
/// ```
/// use std::ffi::OsStr;
/// use fstx::{internal_name, InternalName};
/// assert_eq!(internal_name(OsStr::new(".fstx-txn")), Some(InternalName::Control));
/// assert_eq!(
///     internal_name(OsStr::new(".fstx-stage.00000000000000ab.a")),
///     Some(InternalName::Staged)
/// );
/// assert_eq!(internal_name(OsStr::new("a")), None);
/// ```
pub fn internal_name(name: &OsStr) -> Option<InternalName> {
    if name == crate::txn::CONTROL_DIR {
        Some(InternalName::Control)
    } else if is_temp_name(TEMP_PREFIX, name) {
        Some(InternalName::Temp)
    } else if crate::txn::is_stage_name(name) {
        Some(InternalName::Staged)
    } else if is_lock_name(name) {
        Some(InternalName::Lock)
    } else {
        None
    }
}

/// The name a temporary or staged name was made for (`NAME` in
/// `.fstx-tmp.<16 hex>.NAME`, shortened if the name was long), or `None`
/// for any other name.
pub fn internal_target(name: &OsStr) -> Option<&OsStr> {
    let prefix = match internal_name(name)? {
        InternalName::Temp => TEMP_PREFIX,
        InternalName::Staged => crate::txn::STAGE_PREFIX,
        InternalName::Lock | InternalName::Control => return None,
    };
    Some(OsStr::from_bytes(&name.as_bytes()[prefix.len() + 17..]))
}

/// The temporary name for `name`: `.fstx-tmp.<16 hex>.<name, shortened to fit>`.
pub(crate) fn temp_name(prefix: &str, random: u64, name: &OsStr) -> OsString {
    let mut out = format!("{prefix}{random:016x}.").into_bytes();
    let room = NAME_MAX - out.len();
    let name = name.as_bytes();
    out.extend_from_slice(&name[..name.len().min(room)]);
    OsString::from_vec(out)
}

/// Whether `name` is one of fstx's temporary names with `prefix`.
pub(crate) fn is_temp_name(prefix: &str, name: &OsStr) -> bool {
    let b = name.as_bytes();
    b.len() > prefix.len() + 17
        && b.starts_with(prefix.as_bytes())
        && b[prefix.len()..prefix.len() + 16]
            .iter()
            .all(u8::is_ascii_hexdigit)
        && b[prefix.len() + 16] == b'.'
}

/// The lock file name for target `name`.
pub(crate) fn lock_name(name: &OsStr) -> OsString {
    let mut out = LOCK_PREFIX.as_bytes().to_vec();
    let name = name.as_bytes();
    if out.len() + name.len() <= NAME_MAX {
        out.extend_from_slice(name);
    } else {
        let room = NAME_MAX - out.len() - 9;
        out.extend_from_slice(&name[..room]);
        out.extend_from_slice(format!(".{:08x}", crc32c::crc32c(name)).as_bytes());
    }
    OsString::from_vec(out)
}

/// Whether `name` is a lock file name.
pub(crate) fn is_lock_name(name: &OsStr) -> bool {
    name.as_bytes().starts_with(LOCK_PREFIX.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_fit_and_are_recognised() {
        let long = OsString::from("x".repeat(255));
        let t = temp_name(TEMP_PREFIX, 0xabc, &long);
        assert_eq!(t.len(), NAME_MAX);
        assert!(is_temp_name(TEMP_PREFIX, &t));
        assert!(is_temp_name(
            TEMP_PREFIX,
            &temp_name(TEMP_PREFIX, 1, OsStr::new("a"))
        ));
        assert!(!is_temp_name(TEMP_PREFIX, OsStr::new(".fstx-tmp.zz")));
        assert!(!is_temp_name(TEMP_PREFIX, OsStr::new("config.json")));
        assert!(!is_temp_name(
            TEMP_PREFIX,
            OsStr::new(".fstx-tmp.000000000000000g.a")
        ));
    }

    #[test]
    fn lock_names_fit() {
        assert_eq!(lock_name(OsStr::new("a.json")), ".fstx-lock.a.json");
        let long = OsString::from("x".repeat(255));
        let n = lock_name(&long);
        assert_eq!(n.len(), NAME_MAX);
        assert!(is_lock_name(&n));
        let other = OsString::from(format!("{}y", "x".repeat(254)));
        assert_ne!(lock_name(&other), n);
        assert!(!is_temp_name(TEMP_PREFIX, &n));
    }
}
