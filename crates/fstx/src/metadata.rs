//! Carrying metadata from an old file to its replacement: owner, group,
//! mode and extended attributes ([`carry_metadata`]), for the single-file
//! replace and transactions.

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
/// explicit mode is applied. Shared by the single-file replace and
/// transactions.
pub(crate) fn carry_metadata(
    st: &dyn Storage,
    new: &Fd,
    old: Option<(&Stat, Option<&Fd>)>,
    carry: &Carry,
) -> io::Result<()> {
    let privileged_bits = if carry.keep_privileges {
        0o7777
    } else {
        0o1777
    };
    let Some((old, old_file)) = old else {
        if let Some(mode) = carry.mode {
            st.chmod(new, mode & privileged_bits)?;
        }
        return Ok(());
    };
    let now = st.stat(new)?;
    if (now.uid, now.gid) != (old.uid, old.gid) {
        match st.chown(new, Some(old.uid), Some(old.gid)) {
            Ok(()) => {}
            // Not allowed to give the file away: keep at least the group
            // if we belong to it; otherwise the file stays ours.
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                match st.chown(new, None, Some(old.gid)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {}
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        }
    }
    let xattrs = match (old_file, carry.xattrs) {
        (Some(file), true) => match st.list_xattr(file) {
            Ok(names) => names,
            Err(e) if unsupported(&e) => Vec::new(),
            Err(e) => return Err(e),
        },
        _ => Vec::new(),
    };
    let has_acl = xattrs.iter().any(|n| n == "system.posix_acl_access");
    let mode = carry.mode.unwrap_or(old.mode) & privileged_bits;
    // With an access ACL, the group bits are the ACL mask: keep them off
    // until the ACL itself is in place, so no instant is wider than the old file.
    st.chmod(new, if has_acl { mode & !0o070 } else { mode })?;
    let mut acl_set = false;
    if let Some(file) = old_file {
        for name in &xattrs {
            if !carry.keep_privileges && name == "security.capability" {
                continue;
            }
            let value = match st.get_xattr(file, name) {
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
