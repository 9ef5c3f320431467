//! The journal record: encoding and a decoder that trusts nothing.
//!
//! Every field is defined by its bytes, little-endian, never by a struct
//! layout, so a journal written on one architecture reads on any other.
//!
//! ```text
//! offset  size  field
//!      0     8  magic "FSTXJRNL"
//!      8     2  version (u16) = 1
//!     10     1  kind (u8): 1 = BEGIN (intent, no operations), 2 = COMMIT
//!     11     1  flags (u8) = 0
//!     12     4  reserved (u32) = 0
//!     16     8  sequence number (u64)
//!     24     8  transaction id (u64, random; also names the staged files)
//!     32     4  operation count (u32)
//!     36     4  body length in bytes (u32)
//!     40     …  operations (body)
//! 40+body    4  CRC-32C (Castagnoli) of bytes [0, 40+body)
//! ```
//!
//! The file holds exactly one record: its length must be `44 + body`.
//!
//! # The framing every version keeps
//!
//! Whatever a later format changes, these bytes stay where they are, so
//! that any fstx can tell a damaged record from a valid record of a format
//! it does not know:
//!
//! - bytes `0..8`: the magic `FSTXJRNL`;
//! - bytes `8..10`: the version (`u16`);
//! - bytes `36..40`: the body length (`u32`);
//! - the whole file is `44 + body length` bytes, and its last 4 bytes are the
//!   CRC-32C of every byte before them.
//!
//! The decoder checks the framing first — the file's length against the
//! body length, then the CRC — and trusts no other byte, the version
//! included, until both match. A record that fails them is damaged (torn,
//! or corrupted) and never committed, whatever its version byte says: only
//! a CRC-valid record can be of an unknown version
//! ([`DecodeError::UnsupportedVersion`], which recovery refuses rather
//! than roll back, since it may be a newer fstx's committed journal).
//! A string (`str`) is a `u16` length followed by that many bytes. Operations
//! start with a tag byte:
//!
//! ```text
//! 1 MKDIR   path: str, mode: u32
//! 2 PUT     path: str, stage_dir: str, stage_name: str, length: u64, crc32c: u32,
//!           staged inode: u64, meta: u32 (version 2 only)
//! 3 REMOVE  path: str, inode: u64
//! 4 RENAME  from: str, to: str, inode: u64
//! ```
//!
//! Paths are relative to the transaction root, components separated by `/`;
//! the decoder rejects absolute paths, empty, `.` and `..` components, NUL
//! bytes, components over 255 bytes and paths over 4096 bytes; `stage_dir`
//! may be empty (the root itself); `stage_name` must be one fstx staging
//! name and a single component (no `/`, no NUL). This is the first of two
//! guards: the tree walker (`txn::root`) refuses the same components again
//! where a path becomes names passed to the storage, whatever the decoder
//! said.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::unix::ffi::{OsStrExt, OsStringExt};

/// The journal's magic bytes.
pub const MAGIC: [u8; 8] = *b"FSTXJRNL";
/// The journal format version this build writes. It reads version 1 too
/// (the same record without PUT's staged inode and metadata digest, from
/// fstx before the
/// one-round commit).
pub const VERSION: u16 = 2;
/// The oldest version this build reads.
pub const OLDEST_VERSION: u16 = 1;
/// Size of the fixed header.
pub const HEADER_LEN: usize = 40;
/// Size of the trailing checksum.
pub const CRC_LEN: usize = 4;
/// The largest record accepted (header, body and checksum).
pub const MAX_RECORD_LEN: usize = 64 << 20;
/// The longest path accepted in a record.
pub const MAX_PATH_LEN: usize = 4096;
/// The longest component accepted in a path.
pub const MAX_NAME_LEN: usize = 255;

const KIND_BEGIN: u8 = 1;
const KIND_COMMIT: u8 = 2;
const OP_MKDIR: u8 = 1;
const OP_PUT: u8 = 2;
const OP_REMOVE: u8 = 3;
const OP_RENAME: u8 = 4;

/// A validated path relative to the transaction root: one or more
/// components (zero only where a record allows the root itself).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct RelPath(Vec<OsString>);

impl RelPath {
    /// The root itself.
    pub fn root() -> RelPath {
        RelPath(Vec::new())
    }

    /// Builds a path from components, validating each.
    pub fn from_components(parts: Vec<OsString>) -> Result<RelPath, &'static str> {
        for p in &parts {
            check_component(p.as_bytes())?;
        }
        let p = RelPath(parts);
        if p.encoded_len() > MAX_PATH_LEN {
            return Err("path too long");
        }
        Ok(p)
    }

    /// The components.
    pub fn components(&self) -> &[OsString] {
        &self.0
    }

    /// Whether this is the root itself.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The parent directory and the final name (`None` for the root).
    pub fn split_last(&self) -> Option<(RelPath, &OsStr)> {
        let (last, rest) = self.0.split_last()?;
        Some((RelPath(rest.to_vec()), last.as_os_str()))
    }

    /// This path with `name` appended.
    #[must_use]
    pub fn join(&self, name: &OsStr) -> RelPath {
        let mut v = self.0.clone();
        v.push(name.to_os_string());
        RelPath(v)
    }

    /// Whether `self` is a proper ancestor of `other`.
    pub fn is_ancestor_of(&self, other: &RelPath) -> bool {
        self.0.len() < other.0.len() && other.0.starts_with(&self.0)
    }

    fn encoded_len(&self) -> usize {
        self.0.iter().map(|c| c.len()).sum::<usize>() + self.0.len().saturating_sub(1)
    }

    fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        for (i, c) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(b'/');
            }
            out.extend_from_slice(c.as_bytes());
        }
        out
    }

    fn from_bytes(b: &[u8], allow_root: bool) -> Result<RelPath, &'static str> {
        if b.is_empty() {
            return if allow_root {
                Ok(RelPath::root())
            } else {
                Err("empty path")
            };
        }
        if b.len() > MAX_PATH_LEN {
            return Err("path too long");
        }
        if b[0] == b'/' {
            return Err(ESCAPES_ABSOLUTE);
        }
        let mut parts = Vec::new();
        for c in b.split(|&x| x == b'/') {
            check_component(c)?;
            parts.push(OsString::from_vec(c.to_vec()));
        }
        Ok(RelPath(parts))
    }
}

/// The defect of an absolute path (its first component is empty).
const ESCAPES_ABSOLUTE: &str = "path escapes the root (absolute path)";

/// Checks one path component: the decoder's guard.
fn check_component(c: &[u8]) -> Result<(), &'static str> {
    if c.is_empty() {
        return Err("empty path component ('//' or a trailing '/')");
    }
    if c == b".." {
        return Err("path escapes the root ('..' component)");
    }
    if c == b"." {
        return Err("'.' component in path");
    }
    if c.len() > MAX_NAME_LEN {
        return Err("path component longer than 255 bytes");
    }
    if c.contains(&0) || c.contains(&b'/') {
        return Err("NUL or '/' in path component");
    }
    Ok(())
}

impl fmt::Debug for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.to_bytes()))
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str(".")
        } else {
            f.write_str(&String::from_utf8_lossy(&self.to_bytes()))
        }
    }
}

/// What a version 2 PUT records of its staged file besides its content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StagedMeta {
    /// Its inode number.
    pub ino: u64,
    /// CRC-32C of its permission bits, owner, group and extended attributes.
    pub digest: u32,
}

/// One operation of a committed transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Create directory `path` (idempotent: an existing directory is fine).
    Mkdir {
        /// The new directory.
        path: RelPath,
        /// Its permission bits (subject to the umask).
        mode: u32,
    },
    /// Rename staged file `stage_dir/stage_name` over `path`; the staged file
    /// must hold exactly `len` bytes with CRC-32C `crc`.
    Put {
        /// The target.
        path: RelPath,
        /// The directory holding the staged file.
        stage_dir: RelPath,
        /// The staged file's name.
        stage_name: OsString,
        /// The staged file's length.
        len: u64,
        /// The staged file's CRC-32C.
        crc: u32,
        /// The staged file's inode and metadata digest. The digest is a
        /// CRC-32C of its mode,
        /// owner and extended attributes as fstx set them. The commit record
        /// is flushed in the same round as the staged files, so recovery
        /// checks their metadata as it checks their data. The inode tells
        /// an applied PUT (the target is the staged inode) from one whose
        /// staged entry was lost or whose target was replaced since. `None` in a version 1 record (not
        /// checked); the encoder requires it.
        meta: Option<StagedMeta>,
    },
    /// Remove `path` if it is still inode `ino`.
    Remove {
        /// The file to remove.
        path: RelPath,
        /// Its inode number when the transaction staged the removal.
        ino: u64,
    },
    /// Rename `from` to `to` if `from` is still inode `ino`.
    Rename {
        /// The source.
        from: RelPath,
        /// The destination (replaced if it exists).
        to: RelPath,
        /// The source's inode number when the transaction staged the rename.
        ino: u64,
    },
}

/// A decoded journal record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// BEGIN (staging under way, not committed) or COMMIT.
    pub kind: Kind,
    /// The transaction's sequence number.
    pub seq: u64,
    /// The transaction's random identifier.
    pub txn_id: u64,
    /// The operations (empty for BEGIN).
    pub ops: Vec<Op>,
}

/// The kind of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Staging is under way: not committed.
    Begin,
    /// The commit record: the transaction is committed.
    Commit,
}

/// Why a journal was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than its framing says (a header, the body its length field
    /// gives, and the checksum): empty or torn.
    Truncated,
    /// A CRC-valid record of a version this build does not know. Never
    /// rolled back or replayed: it may be a committed journal of a newer
    /// fstx. (A record whose CRC does not match is [`BadChecksum`](DecodeError::BadChecksum),
    /// whatever its version byte says.)
    UnsupportedVersion(u16),
    /// The checksum does not match, or bytes follow the record: torn or
    /// corrupted.
    BadChecksum,
    /// Checksum fine but the content is malformed (wrong magic, unknown
    /// kind, a path that escapes the root, ...: a hostile or buggy writer).
    Malformed(&'static str),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated => f.write_str("journal is empty or truncated"),
            DecodeError::UnsupportedVersion(v) => {
                write!(
                    f,
                    "journal format version {v} is not supported by this fstx"
                )
            }
            DecodeError::BadChecksum => f.write_str("journal checksum mismatch (torn or corrupt)"),
            DecodeError::Malformed(why) => write!(f, "journal is malformed: {why}"),
        }
    }
}

impl Record {
    /// Encodes the record. Fails only when it would exceed the limits.
    pub fn encode(&self) -> Result<Vec<u8>, &'static str> {
        let mut body = Vec::new();
        for op in &self.ops {
            match op {
                Op::Mkdir { path, mode } => {
                    body.push(OP_MKDIR);
                    put_str(&mut body, &path.to_bytes());
                    body.extend_from_slice(&mode.to_le_bytes());
                }
                Op::Put {
                    path,
                    stage_dir,
                    stage_name,
                    len,
                    crc,
                    meta,
                } => {
                    let meta = meta.ok_or("a PUT operation without its staged inode and digest")?;
                    body.push(OP_PUT);
                    put_str(&mut body, &path.to_bytes());
                    put_str(&mut body, &stage_dir.to_bytes());
                    put_str(&mut body, stage_name.as_bytes());
                    body.extend_from_slice(&len.to_le_bytes());
                    body.extend_from_slice(&crc.to_le_bytes());
                    body.extend_from_slice(&meta.ino.to_le_bytes());
                    body.extend_from_slice(&meta.digest.to_le_bytes());
                }
                Op::Remove { path, ino } => {
                    body.push(OP_REMOVE);
                    put_str(&mut body, &path.to_bytes());
                    body.extend_from_slice(&ino.to_le_bytes());
                }
                Op::Rename { from, to, ino } => {
                    body.push(OP_RENAME);
                    put_str(&mut body, &from.to_bytes());
                    put_str(&mut body, &to.to_bytes());
                    body.extend_from_slice(&ino.to_le_bytes());
                }
            }
            if body.len() > MAX_RECORD_LEN - HEADER_LEN - CRC_LEN {
                return Err("transaction too large for one journal record (64 MiB)");
            }
        }
        let count = u32::try_from(self.ops.len()).map_err(|_| "too many operations")?;
        let mut out = Vec::with_capacity(HEADER_LEN + body.len() + CRC_LEN);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.push(match self.kind {
            Kind::Begin => KIND_BEGIN,
            Kind::Commit => KIND_COMMIT,
        });
        out.push(0);
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.extend_from_slice(&self.txn_id.to_le_bytes());
        out.extend_from_slice(&count.to_le_bytes());
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&body);
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        Ok(out)
    }

    /// Decodes a whole journal file. Never panics, never allocates more
    /// than a small multiple of the input's length.
    ///
    /// The framing (length, then CRC) is checked before any other field is
    /// read: see the module docs.
    pub fn decode(b: &[u8]) -> Result<Record, DecodeError> {
        let total = framed_len(b)?;
        if b[..8] != MAGIC {
            return Err(DecodeError::Malformed("wrong magic number"));
        }
        let version = u16::from_le_bytes([b[8], b[9]]);
        if !(OLDEST_VERSION..=VERSION).contains(&version) {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        if total > MAX_RECORD_LEN {
            return Err(DecodeError::Malformed("record longer than the limit"));
        }
        let mut r = Reader { b, pos: 10 };
        let kind = r.u8().ok_or(DecodeError::Truncated)?;
        let flags = r.u8().ok_or(DecodeError::Truncated)?;
        let reserved = r.u32().ok_or(DecodeError::Truncated)?;
        let seq = r.u64().ok_or(DecodeError::Truncated)?;
        let txn_id = r.u64().ok_or(DecodeError::Truncated)?;
        let count = r.u32().ok_or(DecodeError::Truncated)?;
        if flags != 0 || reserved != 0 {
            return Err(DecodeError::Malformed("unknown flags"));
        }
        let kind = match kind {
            KIND_BEGIN => Kind::Begin,
            KIND_COMMIT => Kind::Commit,
            _ => return Err(DecodeError::Malformed("unknown record kind")),
        };
        let body = &b[HEADER_LEN..total - CRC_LEN];
        if kind == Kind::Begin && (count != 0 || !body.is_empty()) {
            return Err(DecodeError::Malformed("BEGIN record with operations"));
        }
        // Each operation takes at least 11 bytes: a hostile count cannot make
        // us allocate more than the body justifies.
        if count as usize > body.len() / 11 + 1 {
            return Err(DecodeError::Malformed("operation count exceeds the body"));
        }
        let mut r = Reader { b: body, pos: 0 };
        let mut ops = Vec::with_capacity(count as usize);
        let m = DecodeError::Malformed;
        for _ in 0..count {
            let tag = r.u8().ok_or(m("operation truncated"))?;
            let op = match tag {
                OP_MKDIR => {
                    let path = r.path(false)?;
                    let mode = r.u32().ok_or(m("operation truncated"))?;
                    if mode > 0o7777 {
                        return Err(m("directory mode out of range"));
                    }
                    Op::Mkdir { path, mode }
                }
                OP_PUT => {
                    let path = r.path(false)?;
                    let stage_dir = r.path(true)?;
                    let stage_name = r.str().ok_or(m("operation truncated"))?;
                    if !super::is_stage_name(OsStr::from_bytes(stage_name)) {
                        return Err(m("staged file name is not a staging name"));
                    }
                    check_component(stage_name).map_err(|_| {
                        m("staged file name is not a single name (path escapes the root)")
                    })?;
                    let stage_name = OsString::from_vec(stage_name.to_vec());
                    let len = r.u64().ok_or(m("operation truncated"))?;
                    let crc = r.u32().ok_or(m("operation truncated"))?;
                    let meta = if version >= 2 {
                        let ino = r.u64().ok_or(m("operation truncated"))?;
                        let digest = r.u32().ok_or(m("operation truncated"))?;
                        Some(StagedMeta { ino, digest })
                    } else {
                        None
                    };
                    Op::Put {
                        path,
                        stage_dir,
                        stage_name,
                        len,
                        crc,
                        meta,
                    }
                }
                OP_REMOVE => {
                    let path = r.path(false)?;
                    let ino = r.u64().ok_or(m("operation truncated"))?;
                    Op::Remove { path, ino }
                }
                OP_RENAME => {
                    let from = r.path(false)?;
                    let to = r.path(false)?;
                    let ino = r.u64().ok_or(m("operation truncated"))?;
                    Op::Rename { from, to, ino }
                }
                _ => return Err(m("unknown operation tag")),
            };
            ops.push(op);
        }
        if r.pos != body.len() {
            return Err(m("bytes after the last operation"));
        }
        Ok(Record {
            kind,
            seq,
            txn_id,
            ops,
        })
    }
}

/// Checks the framing every version keeps (module docs): the file is
/// `44 + body length` bytes and its last 4 bytes are the CRC-32C of the
/// rest. Returns the record's length. Reads no field but the body length.
fn framed_len(b: &[u8]) -> Result<usize, DecodeError> {
    if b.len() < HEADER_LEN + CRC_LEN {
        return Err(DecodeError::Truncated);
    }
    let body_len = u32::from_le_bytes([b[36], b[37], b[38], b[39]]) as usize;
    let Some(total) = (HEADER_LEN + CRC_LEN).checked_add(body_len) else {
        return Err(DecodeError::Truncated);
    };
    if b.len() < total {
        return Err(DecodeError::Truncated);
    }
    if b.len() > total {
        // Trailing bytes: the checksum is not where the header says.
        return Err(DecodeError::BadChecksum);
    }
    let stored = u32::from_le_bytes([b[total - 4], b[total - 3], b[total - 2], b[total - 1]]);
    if crc32c::crc32c(&b[..total - CRC_LEN]) != stored {
        return Err(DecodeError::BadChecksum);
    }
    Ok(total)
}

/// The sequence number (bytes `16..24`) of a record whose framing and CRC
/// are valid, whatever else is wrong with it (to name a quarantine
/// directory); `None` for a damaged record or one of a version this build
/// does not read.
pub fn framed_seq(b: &[u8]) -> Option<u64> {
    framed_len(b).ok()?;
    let version = u16::from_le_bytes([b[8], b[9]]);
    if !(OLDEST_VERSION..=VERSION).contains(&version) {
        return None;
    }
    Some(u64::from_le_bytes(b[16..24].try_into().ok()?))
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    // Lengths are validated (≤ 4096) before a record is built.
    out.extend_from_slice(&(s.len() as u16).to_le_bytes());
    out.extend_from_slice(s);
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.b.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn str(&mut self) -> Option<&'a [u8]> {
        let n = u16::from_le_bytes(self.take(2)?.try_into().ok()?) as usize;
        self.take(n)
    }
    fn path(&mut self, allow_root: bool) -> Result<RelPath, DecodeError> {
        let s = self
            .str()
            .ok_or(DecodeError::Malformed("operation truncated"))?;
        RelPath::from_bytes(s, allow_root).map_err(DecodeError::Malformed)
    }
}

#[cfg(test)]
mod tests;
