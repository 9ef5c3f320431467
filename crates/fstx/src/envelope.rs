//! Verified content: an opt-in envelope around a file's content, and the
//! reader that returns the newest version that verifies among a file and
//! its backups.
//!
//! # Envelope (version 1)
//!
//! A 40-byte header, little-endian, then the payload:
//! magic `FSTXENV\0` (8), format version `u32` (1), CRC-32C of the payload
//! `u32`, sequence number `u64`, payload length `u64`, reserved `u32` (0),
//! CRC-32C of header bytes 0..36 `u32`. The file is exactly header plus
//! payload.
//!
//! The sequence number of a new version is one more than the highest that
//! the file being replaced and its first backup (`FILE~`) carry in a header
//! that verifies, so every write gets a higher number than every version a
//! reader could fall back to (a clock would not do: devices boot without
//! one).
//!
//! The same envelope is written by a verified `update` and `update_stream`
//! (their function reads the newest payload that verifies, FILE's or a
//! backup's: `ReadOptions::open_newest` checks it in bounded memory and
//! keeps its handle open) and, with `TxnOptions::verified`, by every file a
//! transaction stages (sealed in `txn/stage.rs`, `seal_staged`).
//!
//! # Reading
//!
//! [`ReadOptions::read`] looks at FILE and its backups (`FILE~`, `FILE~2`,
//! …), returns the payload of the candidate with the highest sequence number
//! whose envelope verifies (FILE wins a tie), and reports every candidate it
//! rejected and why. A plain file (no envelope) is returned as is only when
//! no candidate carries an envelope (its magic); otherwise a candidate
//! without a valid envelope is rejected ("no envelope"), so a bit flip in
//! the magic never turns a damaged file into plain content.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result, State, Step};
use crate::paths::split;
use crate::storage::{self, Fd, FileKind, OpenHow, Storage};

/// The header's first eight bytes.
pub const ENVELOPE_MAGIC: [u8; 8] = *b"FSTXENV\0";
/// The format version this fstx writes and reads.
pub const ENVELOPE_VERSION: u32 = 1;
/// Bytes of the header.
pub const ENVELOPE_HEADER_LEN: u64 = 40;
/// Backup generations [`ReadOptions`] looks at by default (while they exist).
const DEFAULT_GENERATIONS: usize = 99;

/// A decoded envelope header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnvelopeHeader {
    /// Sequence number: higher is newer.
    pub seq: u64,
    /// Payload length.
    pub len: u64,
    /// CRC-32C of the payload.
    pub crc: u32,
}

impl EnvelopeHeader {
    /// The 40 header bytes.
    pub fn encode(&self) -> [u8; 40] {
        let mut h = [0u8; 40];
        h[0..8].copy_from_slice(&ENVELOPE_MAGIC);
        h[8..12].copy_from_slice(&ENVELOPE_VERSION.to_le_bytes());
        h[12..16].copy_from_slice(&self.crc.to_le_bytes());
        h[16..24].copy_from_slice(&self.seq.to_le_bytes());
        h[24..32].copy_from_slice(&self.len.to_le_bytes());
        let hc = crc32c::crc32c(&h[..36]);
        h[36..40].copy_from_slice(&hc.to_le_bytes());
        h
    }
}

/// Whether `bytes` start with the envelope's magic (a damaged envelope
/// still carries it).
pub fn has_envelope_magic(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[..8] == ENVELOPE_MAGIC
}

/// Decodes an envelope header of a file of `file_len` bytes: magic, header
/// checksum, version, and a payload length that is exactly what the file
/// holds after the header. Never allocates; never panics.
///
/// # Errors
///
/// The defect, in words.
pub fn decode_envelope_header(
    bytes: &[u8],
    file_len: u64,
) -> std::result::Result<EnvelopeHeader, String> {
    if !has_envelope_magic(bytes) {
        return Err("no envelope".into());
    }
    if bytes.len() < ENVELOPE_HEADER_LEN as usize {
        return Err(format!("truncated envelope header ({} bytes)", bytes.len()));
    }
    let b = &bytes[..ENVELOPE_HEADER_LEN as usize];
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[36..40]);
    if crc32c::crc32c(&b[..36]) != u32::from_le_bytes(w) {
        return Err("envelope header checksum mismatch".into());
    }
    w.copy_from_slice(&b[8..12]);
    let version = u32::from_le_bytes(w);
    if version != ENVELOPE_VERSION {
        return Err(format!(
            "envelope format version {version}; this fstx reads version {ENVELOPE_VERSION}"
        ));
    }
    let mut q = [0u8; 8];
    w.copy_from_slice(&b[12..16]);
    let crc = u32::from_le_bytes(w);
    q.copy_from_slice(&b[16..24]);
    let seq = u64::from_le_bytes(q);
    q.copy_from_slice(&b[24..32]);
    let len = u64::from_le_bytes(q);
    let holds = file_len.saturating_sub(ENVELOPE_HEADER_LEN);
    if len != holds {
        return Err(format!(
            "envelope claims {len} payload bytes, the file holds {holds}"
        ));
    }
    Ok(EnvelopeHeader { seq, len, crc })
}

/// Decodes a whole enveloped file: its header and payload, the payload's
/// checksum verified.
///
/// # Errors
///
/// The defect, in words.
pub fn decode_envelope(bytes: &[u8]) -> std::result::Result<(EnvelopeHeader, &[u8]), String> {
    let h = decode_envelope_header(bytes, bytes.len() as u64)?;
    let payload = &bytes[ENVELOPE_HEADER_LEN as usize..];
    if crc32c::crc32c(payload) != h.crc {
        return Err("payload checksum mismatch".into());
    }
    Ok((h, payload))
}

/// A candidate [`ReadOptions::read`] did not use, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// The candidate's path.
    pub path: PathBuf,
    /// Why it was not used (`"missing"`, `"no envelope"`, `"payload
    /// checksum mismatch"`, an I/O error, ...).
    pub defect: String,
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.defect)
    }
}

/// What [`ReadOptions::read`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadOutcome {
    /// The content (an enveloped file's payload, or a plain file as is).
    pub content: Vec<u8>,
    /// The file it came from: FILE, or a backup when falling back.
    pub path: PathBuf,
    /// Its sequence number (`None` for a plain file).
    pub seq: Option<u64>,
    /// Candidates not used: those newer than the one used (why a fallback
    /// happened) and every other defect found; a missing FILE is listed as
    /// `"missing"`.
    pub rejected: Vec<Rejected>,
    /// Whether the content came from a backup instead of FILE.
    pub fell_back: bool,
}

impl ReadOutcome {
    /// Whether the content carried a verified envelope.
    pub fn verified(&self) -> bool {
        self.seq.is_some()
    }
}

/// Options of a verified read, in the style of [`std::fs::OpenOptions`].
#[derive(Debug, Clone)]
pub struct ReadOptions {
    suffix: OsString,
    generations: Option<usize>,
    require_verified: bool,
    storage: Arc<dyn Storage>,
}

impl Default for ReadOptions {
    fn default() -> ReadOptions {
        ReadOptions::new()
    }
}

/// One candidate, opened and its header read.
enum Candidate {
    Missing,
    Broken(String),
    Plain(Fd, u64),
    Damaged(String),
    Envelope(Fd, EnvelopeHeader),
}

impl ReadOptions {
    /// Defaults: backups named `FILE~`, `FILE~2`, … looked at while they
    /// exist; plain files accepted when no candidate carries an envelope.
    pub fn new() -> ReadOptions {
        ReadOptions {
            suffix: OsString::from("~"),
            generations: None,
            require_verified: false,
            storage: storage::os(),
        }
    }

    /// The backup suffix `update` was given (default `~`).
    pub fn backup(&mut self, suffix: impl AsRef<OsStr>) -> &mut ReadOptions {
        self.suffix = suffix.as_ref().to_os_string();
        self
    }

    /// Look at exactly `n` backup generations (missing ones are skipped);
    /// default: every generation up to the first missing one.
    pub fn generations(&mut self, n: usize) -> &mut ReadOptions {
        self.generations = Some(n);
        self
    }

    /// Refuse plain files: only a verified envelope is accepted.
    pub fn require_verified(&mut self, yes: bool) -> &mut ReadOptions {
        self.require_verified = yes;
        self
    }

    internals_fn! {
        /// Routes every filesystem call through `storage`.
        fn storage(&mut self, storage: Arc<dyn Storage>) -> &mut ReadOptions {
            self.storage = storage;
            self
        }
    }

    /// [`storage`](Self::storage), for the library's own callers.
    pub(crate) fn storage_(&mut self, storage: Arc<dyn Storage>) -> &mut ReadOptions {
        self.storage = storage;
        self
    }

    /// Reads the newest version of `path` that verifies among it and its
    /// backups: the highest sequence number whose envelope verifies (FILE
    /// wins a tie); a plain file only when no candidate carries an envelope
    /// (`docs/design.md` §7.1). Needs no lock: every candidate is read
    /// through one open handle, and every name fstx writes is replaced by a
    /// rename.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::NotFound`] when no candidate exists;
    /// [`io::ErrorKind::InvalidData`] when none is valid (the message names
    /// every candidate and its defect); opening the directory.
    pub fn read(&self, path: impl AsRef<Path>) -> Result<ReadOutcome> {
        let chosen = self.choose(path.as_ref(), |st, fd, found| match found {
            Found::Envelope(h) => read_payload(st, fd, h),
            Found::Plain(size) => crate::io::read_to_end(st, fd, size).map(Ok),
        })?;
        Ok(ReadOutcome {
            content: chosen.value,
            path: chosen.path,
            seq: chosen.seq,
            rejected: chosen.rejected,
            fell_back: chosen.fell_back,
        })
    }

    /// The same choice as [`read`](Self::read), streaming: the chosen
    /// candidate's payload is verified in bounded memory and its handle
    /// returned, to be read again (an update's function reads it).
    pub(crate) fn open_newest(&self, path: &Path) -> Result<Chosen<Payload>> {
        self.choose(path, |st, fd, found| match found {
            Found::Envelope(h) => Ok(crc_of_range(st, fd, ENVELOPE_HEADER_LEN, h.len)?.and_then(
                |crc| {
                    (crc == h.crc)
                        .then_some(Payload {
                            offset: ENVELOPE_HEADER_LEN,
                            len: h.len,
                        })
                        .ok_or_else(|| "payload checksum mismatch".to_string())
                },
            )),
            Found::Plain(size) => Ok(Ok(Payload {
                offset: 0,
                len: size,
            })),
        })
    }

    /// Opens every candidate, and returns the newest whose `load` succeeds
    /// (see [`read`](Self::read) for the rules), with its open handle.
    fn choose<T>(
        &self,
        path: &Path,
        mut load: impl FnMut(&dyn Storage, &Fd, Found<'_>) -> io::Result<std::result::Result<T, String>>,
    ) -> Result<Chosen<T>> {
        let st = &*self.storage;
        let fail = |step, e| Error::new("read", path, step, State::NotCommitted, e);
        let (dir_path, name) = split(path).map_err(|e| fail(Step::ParsePath, e))?;
        let dir = st
            .open_dir(None, &dir_path, true)
            .map_err(|e| fail(Step::OpenParentDirectory, e))?;
        let mut cands: Vec<(PathBuf, Candidate)> = Vec::new();
        let generations = self.generations.unwrap_or(DEFAULT_GENERATIONS);
        for k in 0..=generations {
            let cname = if k == 0 {
                name.clone()
            } else {
                crate::backup::backup_name(&name, &self.suffix, k)
            };
            let c = candidate(st, &dir, &cname);
            if k > 0 && self.generations.is_none() && matches!(c, Candidate::Missing) {
                break;
            }
            cands.push((path.with_file_name(&cname), c));
        }
        let any_envelope = cands
            .iter()
            .any(|(_, c)| matches!(c, Candidate::Envelope(..) | Candidate::Damaged(_)));
        let mut rejected: Vec<Rejected> = Vec::new();
        let reject = |rejected: &mut Vec<Rejected>, p: &Path, d: String| {
            rejected.push(Rejected {
                path: p.to_path_buf(),
                defect: d,
            });
        };
        // Newest first; FILE (index 0) wins a tie.
        let mut order: Vec<usize> = (0..cands.len()).collect();
        order.sort_by_key(|&i| match &cands[i].1 {
            Candidate::Envelope(_, h) => (std::cmp::Reverse(h.seq), i),
            _ => (std::cmp::Reverse(0), usize::MAX),
        });
        let mut found: Option<(usize, T, Option<u64>)> = None;
        if any_envelope || self.require_verified {
            for &i in &order {
                let (p, c) = &cands[i];
                match c {
                    Candidate::Envelope(fd, h) => {
                        if found.is_some() {
                            continue;
                        }
                        match load(st, fd, Found::Envelope(h)) {
                            Ok(Ok(value)) => found = Some((i, value, Some(h.seq))),
                            Ok(Err(d)) => reject(&mut rejected, p, d),
                            Err(e) => reject(&mut rejected, p, e.to_string()),
                        }
                    }
                    Candidate::Missing if i == 0 => reject(&mut rejected, p, "missing".into()),
                    Candidate::Missing => {}
                    Candidate::Plain(..) => reject(&mut rejected, p, "no envelope".into()),
                    Candidate::Broken(d) | Candidate::Damaged(d) => {
                        reject(&mut rejected, p, d.clone());
                    }
                }
            }
        } else {
            for (i, (p, c)) in cands.iter().enumerate() {
                match c {
                    Candidate::Plain(fd, size) if found.is_none() => {
                        match load(st, fd, Found::Plain(*size)) {
                            Ok(Ok(value)) => found = Some((i, value, None)),
                            Ok(Err(d)) => reject(&mut rejected, p, d),
                            Err(e) => reject(&mut rejected, p, e.to_string()),
                        }
                    }
                    Candidate::Missing if i == 0 => reject(&mut rejected, p, "missing".into()),
                    Candidate::Broken(d) => reject(&mut rejected, p, d.clone()),
                    _ => {}
                }
            }
        }
        if let Some((i, value, seq)) = found {
            let (path, c) = cands.swap_remove(i);
            let (Candidate::Envelope(fd, _) | Candidate::Plain(fd, _)) = c else {
                unreachable!("only an envelope or a plain file is chosen");
            };
            return Ok(Chosen {
                fd,
                value,
                path,
                seq,
                rejected,
                fell_back: i != 0,
            });
        }
        let all_missing = cands.iter().all(|(_, c)| matches!(c, Candidate::Missing));
        let kind = if all_missing {
            io::ErrorKind::NotFound
        } else {
            io::ErrorKind::InvalidData
        };
        let list = rejected
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        Err(fail(
            Step::VerifyContent,
            io::Error::new(kind, format!("no valid version: {list}")),
        ))
    }
}

/// What a candidate chosen by [`ReadOptions::choose`] holds.
#[derive(Debug, Clone, Copy)]
enum Found<'a> {
    /// An envelope whose header verifies (the payload is not checked yet).
    Envelope(&'a EnvelopeHeader),
    /// A plain file of this size.
    Plain(u64),
}

/// Where the content of a chosen candidate lies in its file.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Payload {
    /// Its first byte's offset (the header's length, or 0 for a plain file).
    pub(crate) offset: u64,
    /// Its length.
    pub(crate) len: u64,
}

/// The candidate [`ReadOptions::choose`] chose, its handle still open.
#[derive(Debug)]
pub(crate) struct Chosen<T> {
    pub(crate) fd: Fd,
    pub(crate) value: T,
    pub(crate) path: PathBuf,
    pub(crate) seq: Option<u64>,
    pub(crate) rejected: Vec<Rejected>,
    pub(crate) fell_back: bool,
}

/// Reads the newest verified (or, if nothing carries an envelope, plain)
/// version of `path` among it and its backups, with default
/// [`ReadOptions`].
///
/// # Errors
///
/// See [`ReadOptions::read`].
pub fn read(path: impl AsRef<Path>) -> Result<ReadOutcome> {
    ReadOptions::new().read(path)
}

/// Opens candidate `name` in `dir` (following a symlink) and reads its header.
fn candidate(st: &dyn Storage, dir: &Fd, name: &OsStr) -> Candidate {
    let how = OpenHow {
        follow: true,
        ..OpenHow::READ_NOFOLLOW
    };
    let fd = match st.open(dir, name, how) {
        Ok(fd) => fd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Candidate::Missing,
        Err(e) => return Candidate::Broken(format!("open: {e}")),
    };
    let stat = match st.stat(&fd) {
        Ok(s) => s,
        Err(e) => return Candidate::Broken(format!("stat: {e}")),
    };
    if stat.kind != FileKind::Regular {
        return Candidate::Broken("not a regular file".into());
    }
    let mut hb = [0u8; ENVELOPE_HEADER_LEN as usize];
    let n = match read_full(st, &fd, &mut hb, 0) {
        Ok(n) => n,
        Err(e) => return Candidate::Broken(format!("read: {e}")),
    };
    if !has_envelope_magic(&hb[..n]) {
        return Candidate::Plain(fd, stat.size);
    }
    match decode_envelope_header(&hb[..n], stat.size) {
        Ok(h) => Candidate::Envelope(fd, h),
        Err(d) => Candidate::Damaged(d),
    }
}

/// Reads up to `buf.len()` bytes at `off` (fewer only at the end).
fn read_full(st: &dyn Storage, fd: &Fd, buf: &mut [u8], mut off: u64) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match st.read_at(fd, &mut buf[got..], off) {
            Ok(0) => break,
            Ok(n) => {
                got += n;
                off += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Reads and verifies the payload the header `h` announces (its length was
/// checked against the file's size: this allocates what the file holds).
fn read_payload(
    st: &dyn Storage,
    fd: &Fd,
    h: &EnvelopeHeader,
) -> io::Result<std::result::Result<Vec<u8>, String>> {
    let mut payload = vec![0u8; h.len as usize];
    let n = read_full(st, fd, &mut payload, ENVELOPE_HEADER_LEN)?;
    if n < payload.len() {
        return Ok(Err(format!("payload truncated ({n} of {} bytes)", h.len)));
    }
    if crc32c::crc32c(&payload) != h.crc {
        return Ok(Err("payload checksum mismatch".into()));
    }
    Ok(Ok(payload))
}

/// The sequence number for a new version of `name` in `dir`: one more
/// than the highest that it and its backups carry in a header that
/// verifies — `name~`, `name~2`, … while they exist, and the same with
/// `suffix` (an update's own backup suffix) — so that no version a reader
/// could fall back to outranks the new one. `follow`: whether symlinks are
/// followed (a transaction never follows one: a symlink counts as a name
/// without a sequence number).
pub(crate) fn next_seq(
    st: &dyn Storage,
    dir: &Fd,
    name: &OsStr,
    suffix: Option<&OsStr>,
    follow: bool,
) -> io::Result<u64> {
    let mut max = header_seq(st, dir, name, follow)?.unwrap_or(0);
    let mut suffixes = vec![OsStr::new("~")];
    suffixes.extend(suffix.filter(|s| *s != OsStr::new("~")));
    for sfx in suffixes {
        for k in 1..=DEFAULT_GENERATIONS {
            match header_seq(st, dir, &crate::backup::backup_name(name, sfx, k), follow)? {
                None => break,
                Some(seq) => max = max.max(seq),
            }
        }
    }
    Ok(max.saturating_add(1))
}

/// The sequence number in `name`'s envelope header, 0 if it has none that
/// verifies; `None` if `name` does not exist.
fn header_seq(st: &dyn Storage, dir: &Fd, name: &OsStr, follow: bool) -> io::Result<Option<u64>> {
    if !follow {
        // A symlink (or anything but a regular file) is not opened.
        match st.stat_at(dir, name, false) {
            Ok(s) if s.kind != FileKind::Regular => return Ok(Some(0)),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        }
    }
    let how = OpenHow {
        follow,
        ..OpenHow::READ_NOFOLLOW
    };
    let fd = match st.open(dir, name, how) {
        Ok(fd) => fd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let stat = st.stat(&fd)?;
    if stat.kind != FileKind::Regular {
        return Ok(Some(0));
    }
    let mut hb = [0u8; ENVELOPE_HEADER_LEN as usize];
    let n = read_full(st, &fd, &mut hb, 0)?;
    Ok(Some(
        decode_envelope_header(&hb[..n], stat.size).map_or(0, |h| h.seq),
    ))
}

/// Seals a temporary file holding `ENVELOPE_HEADER_LEN` reserved bytes and
/// then the payload: reads the payload back to checksum it, and writes the
/// header with sequence number `seq` at offset 0.
pub(crate) fn seal(st: &dyn Storage, temp: &Fd, seq: u64) -> io::Result<()> {
    let size = st.stat(temp)?.size;
    let len = size.saturating_sub(ENVELOPE_HEADER_LEN);
    let crc = crc_of_range(st, temp, ENVELOPE_HEADER_LEN, len)?.map_err(|_| {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the temporary file shrank while sealing it",
        )
    })?;
    let header = EnvelopeHeader { seq, len, crc }.encode();
    crate::io::write_all_at(st, temp, &header, 0)
}

/// The CRC-32C of `len` bytes of `fd` from `off`, read in 64 KiB pieces;
/// the defect in words if the file ends before.
fn crc_of_range(
    st: &dyn Storage,
    fd: &Fd,
    mut off: u64,
    len: u64,
) -> io::Result<std::result::Result<u32, String>> {
    let end = off.saturating_add(len);
    let mut crc = 0u32;
    let mut buf = vec![0u8; usize::try_from(len).map_or(64 * 1024, |n| n.min(64 * 1024))];
    while off < end {
        let want = usize::try_from(end - off).map_or(buf.len(), |n| n.min(buf.len()));
        let n = read_full(st, fd, &mut buf[..want], off)?;
        if n == 0 {
            let got = len - (end - off);
            return Ok(Err(format!("payload truncated ({got} of {len} bytes)")));
        }
        crc = crc32c::crc32c_append(crc, &buf[..n]);
        off += n as u64;
    }
    Ok(Ok(crc))
}
