//! Carrying metadata from an old file to its replacement: owner, group,
//! mode and extended attributes ([`carry_metadata`]), for the single-file
//! replace and transactions.

use std::ffi::OsString;
use std::io;

use crate::storage::{Fd, Stat, Storage};

/// What [`carry_metadata`] carries over.
pub(crate) struct Carry {
    /// An explicit mode instead of the old file's.
    pub(crate) mode: Option<u32>,
    /// Keep set-id bits and `security.capability`.
    pub(crate) keep_privileges: bool,
    /// Copy extended attributes.
    pub(crate) xattrs: bool,
}

/// Gives `new` the old file's owner, group, mode and extended attributes,
/// in that order (chown clears set-id bits; setting an ACL sets the group
/// permission bits). `old` is the old file's stat and, when the process
/// could open it, its handle (for the xattrs). Without an old file, only an
/// explicit mode is applied. The transactions' entry point: it reads the
/// new file's stat and the old file's xattr names itself.
pub(crate) fn carry_metadata(
    st: &dyn Storage,
    new: &Fd,
    old: Option<(&Stat, Option<&Fd>)>,
    carry: &Carry,
) -> io::Result<()> {
    let old = match old {
        Some((stat, file)) => {
            let names = match (file, carry.xattrs) {
                (Some(file), true) => match st.list_xattr(file) {
                    Ok(names) => names,
                    Err(e) if unsupported(&e) => Vec::new(),
                    Err(e) => return Err(e),
                },
                _ => Vec::new(),
            };
            Some((stat, names, file))
        }
        None => None,
    };
    let now = match &old {
        Some(_) => Some(st.stat(new)?),
        None => None,
    };
    carry_to(
        st,
        new,
        now.as_ref(),
        old.as_ref().map(|(stat, names, file)| Old {
            stat,
            xattrs: names,
            source: file.map_or(XattrSource::Nowhere, XattrSource::File),
        }),
        carry,
    )
}

/// Where the old file's extended attributes are read from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum XattrSource<'a> {
    /// Its open handle (`fgetxattr`).
    File(&'a Fd),
    /// Its name in a directory (`lgetxattr` through the directory handle).
    At(&'a Fd, &'a std::ffi::OsStr),
    /// Not readable: carry none.
    Nowhere,
}

/// The old file, as [`carry_to`] needs it.
pub(crate) struct Old<'a> {
    /// Its owner, group and mode.
    pub(crate) stat: &'a Stat,
    /// Its extended attribute names (empty when they are not carried).
    pub(crate) xattrs: &'a [OsString],
    /// Where their values are read.
    pub(crate) source: XattrSource<'a>,
}

/// Whether a list of xattr names holds an access ACL.
pub(crate) fn has_access_acl(names: &[OsString]) -> bool {
    names.iter().any(|n| n == "system.posix_acl_access")
}

/// The mode to create a replacement for a file of final mode `mode` with,
/// before its owner and group are carried over: never wider than the final
/// file for anyone, whoever the new file's group turns out to be. Owner
/// bits as final (the creator owns it, and keeps it unless it can give it
/// away: root, whose access does not depend on them); group and other bits
/// only those that both group and other have in the final mode (so neither
/// the creator's group nor the final group's members get more than they
/// will); with an access ACL, owner bits only (group bits are the ACL's
/// mask, and named entries may grant less than "other"). Set-id bits are
/// never set at creation.
pub(crate) fn create_mode(mode: u32, has_acl: bool) -> u32 {
    if has_acl {
        return mode & 0o700;
    }
    let common = (mode >> 3) & mode & 0o7;
    (mode & 0o700) | (common << 3) | common
}

/// Gives `new` (whose stat, when there is an old file, is `now`) the old
/// file's owner, group, mode and extended attributes, in that order (chown
/// clears set-id bits; setting an ACL sets the group permission bits).
/// Calls are made only where something changes: no `fchown` when the owner
/// and group already match, no `fchmod` when the mode already is the final
/// one. Without an old file, only an explicit mode is applied. Shared by the
/// single-file replace and transactions.
pub(crate) fn carry_to(
    st: &dyn Storage,
    new: &Fd,
    now: Option<&Stat>,
    old: Option<Old<'_>>,
    carry: &Carry,
) -> io::Result<()> {
    let privileged_bits = if carry.keep_privileges {
        0o7777
    } else {
        0o1777
    };
    let (Some(old), Some(now)) = (old, now) else {
        if let Some(mode) = carry.mode {
            let mode = mode & privileged_bits;
            if now.is_none_or(|now| now.mode != mode) {
                st.chmod(new, mode)?;
            }
        }
        return Ok(());
    };
    if (now.uid, now.gid) != (old.stat.uid, old.stat.gid) {
        match st.chown(new, Some(old.stat.uid), Some(old.stat.gid)) {
            Ok(()) => {}
            // Not allowed to give the file away: keep at least the group
            // if we belong to it; otherwise the file stays ours.
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                match st.chown(new, None, Some(old.stat.gid)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {}
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        }
    }
    let xattrs = if carry.xattrs { old.xattrs } else { &[] };
    let has_acl = has_access_acl(xattrs);
    let mode = carry.mode.unwrap_or(old.stat.mode) & privileged_bits;
    // With an access ACL, the group bits are the ACL mask: keep them off
    // until the ACL itself is in place, so no instant is wider than the old file.
    // (`now.mode` has no set-id bits, and chown only clears those.)
    let first = if has_acl { mode & !0o070 } else { mode };
    if now.mode != first {
        st.chmod(new, first)?;
    }
    let mut acl_set = false;
    for name in xattrs {
        if !carry.keep_privileges && name == "security.capability" {
            continue;
        }
        let value = match old.source {
            XattrSource::File(file) => st.get_xattr(file, name),
            XattrSource::At(dir, file) => st.get_xattr_at(dir, file, name),
            XattrSource::Nowhere => break,
        };
        let value = match value {
            Ok(v) => v,
            Err(e) if unsupported(&e) || e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        match st.set_xattr(new, name, &value) {
            Ok(()) => acl_set |= name == "system.posix_acl_access",
            Err(e) if unsupported(&e) => {}
            Err(e) => return Err(e),
        }
    }
    if has_acl && !acl_set {
        st.chmod(new, mode)?;
    }
    Ok(())
}

/// Whether an xattr error means "not here / not allowed", which is skipped.
pub(crate) fn unsupported(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Unsupported
        || e.kind() == io::ErrorKind::PermissionDenied
        || e.raw_os_error() == Some(rustix::io::Errno::NOTSUP.raw_os_error())
        || e.raw_os_error() == Some(rustix::io::Errno::PERM.raw_os_error())
}
