//! Raw I/O on top of the storage seam: the read and write loops (whole
//! buffers at an offset, whole files, copies) that every protocol needs,
//! written once.

use std::ffi::OsStr;
use std::io;

use crate::storage::{Fd, OpenHow, Storage};

/// The buffer size of [`copy`] and the growth step of [`read_to_end`].
const CHUNK: usize = 64 * 1024;

/// Writes all of `buf` at offset `off`, retrying interrupted writes; a write
/// of 0 bytes fails with [`io::ErrorKind::WriteZero`].
pub(crate) fn write_all_at(
    st: &dyn Storage,
    f: &Fd,
    mut buf: &[u8],
    mut off: u64,
) -> io::Result<()> {
    while !buf.is_empty() {
        match st.write_at(f, buf, off) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
            Ok(n) => {
                buf = &buf[n..];
                off += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads `f` from offset 0 to its end (a read of 0 bytes), retrying
/// interrupted reads. `size_hint`: the expected size (from `stat`), which
/// only sizes the buffer.
pub(crate) fn read_to_end(st: &dyn Storage, f: &Fd, size_hint: u64) -> io::Result<Vec<u8>> {
    // One byte more than expected, so that a file of the expected size needs
    // no second allocation for the read that finds its end.
    let first = usize::try_from(size_hint).map_or(CHUNK, |n| n.saturating_add(1));
    let mut buf = vec![0u8; first];
    let mut len = 0;
    loop {
        if len == buf.len() {
            buf.resize(len + len.max(CHUNK), 0);
        }
        match st.read_at(f, &mut buf[len..], len as u64) {
            Ok(0) => {
                buf.truncate(len);
                return Ok(buf);
            }
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Reads the whole small file `name` in `dir`: `Ok(None)` if it does not
/// exist; `Ok(Some(empty))` if it is longer than `limit` bytes (not read);
/// else its content (up to the size `stat` reported, shorter if a read
/// comes back empty first).
pub(crate) fn read_small(
    st: &dyn Storage,
    dir: &Fd,
    name: &OsStr,
    limit: u64,
) -> io::Result<Option<Vec<u8>>> {
    let f = match st.open(dir, name, OpenHow::READ_NOFOLLOW) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let size = st.stat(&f)?.size;
    if size > limit {
        return Ok(Some(Vec::new()));
    }
    let mut buf = vec![0u8; size as usize];
    let mut off = 0;
    while off < buf.len() {
        let n = st.read_at(&f, &mut buf[off..], off as u64)?;
        if n == 0 {
            buf.truncate(off);
            break;
        }
        off += n;
    }
    Ok(Some(buf))
}

/// Which side of a [`copy`] failed.
#[derive(Debug)]
pub(crate) enum CopyError {
    /// Reading the source.
    Read(io::Error),
    /// Writing the destination.
    Write(io::Error),
}

/// Copies all of `from` (from offset 0 to its end) to the same offsets in
/// `to`, retrying interrupted reads and writes; returns the bytes copied.
pub(crate) fn copy(st: &dyn Storage, from: &Fd, to: &Fd) -> Result<u64, CopyError> {
    let mut buf = vec![0u8; CHUNK];
    let mut offset = 0u64;
    loop {
        let n = match st.read_at(from, &mut buf, offset) {
            Ok(0) => return Ok(offset),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        write_all_at(st, to, &buf[..n], offset).map_err(CopyError::Write)?;
        offset += n as u64;
    }
}
