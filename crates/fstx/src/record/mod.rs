//! Two-slot records: one value of bounded size kept in two slots of a single
//! regular file or block device, for storage where a rename is not atomic
//! (vfat, exfat) or where there is no filesystem at all (a raw partition).
//!
//! # Layout
//!
//! ```text
//! offset 0          slot 0: header (64 bytes) | value | unused to the slot's end
//! offset S          slot 1: header (64 bytes) | value | unused
//! S = round_up(64 + max, 4096)   (each slot in its own 4 KiB pages)
//! ```
//!
//! Header, little-endian: magic `FSTXREC\0` (8), format version `u16` (1),
//! slot index `u16`, reserved `u32` (0), slot size `u64`, largest value
//! `u64`, sequence number `u64`, value length `u64`, CRC-32C of the value
//! `u32`, reserved 8 bytes (0), CRC-32C of bytes 0..60 `u32`.
//!
//! # Protocol
//!
//! A write goes in place into the slot that does **not** hold the newest
//! valid value, with the next sequence number, in one `pwrite`, then flushes
//! (`fdatasync` of a file, `fsync` of a block device). The other slot is
//! never written, so a cut at any instant — also one that tears the slot
//! being written at any sector — leaves the other slot's value intact: the
//! value read afterwards is the new one or the previous one. A read picks
//! the valid slot with the highest sequence number.
//!
//! A flush that lies (reports success and loses the write) can cost the
//! newest value, never both: the write that follows goes into the other
//! slot, and a device that loses flushed data loses at most what was
//! written since the last flush it honoured (`docs/design.md`, "after
//! power-on").

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;

use crate::error::{invalid, Error, Result, State, Step};
use crate::paths::split;
use crate::storage::{self, Create, Fd, FileKind, OpenHow, Storage, SyncKind};

mod format;

pub use format::{
    decode_slot_header, slot_size_for, SlotHeader, RECORD_HEADER_LEN, RECORD_MAX_VALUE, RECORD_PAGE,
};
#[cfg(feature = "internals")]
pub use format::{RECORD_MAGIC, RECORD_VERSION};

/// Extra looks a reader takes when no slot is valid (see [`RecordOptions::read`]).
const READ_RETRIES: usize = 2;

/// What became of one slot when a record was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotState {
    /// 0 or 1.
    pub slot: u16,
    /// Byte offset of the slot.
    pub offset: u64,
    /// The slot's sequence number if it holds a valid value, else why not.
    pub result: std::result::Result<u64, String>,
}

/// A value read from a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordValue {
    /// The value.
    pub value: Vec<u8>,
    /// Its sequence number.
    pub seq: u64,
    /// The slot it came from.
    pub slot: u16,
    /// The record's largest value (`--size`).
    pub max_len: u64,
    /// Both slots as found (the other slot's defect, if it had one).
    pub slots: Vec<SlotState>,
}

/// What a successful [`RecordOptions::write`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordWritten {
    /// The slot written.
    pub slot: u16,
    /// The sequence number written.
    pub seq: u64,
    /// Whether the record was created (a new file, or `init`).
    pub created: bool,
}

/// Reads and writes two-slot records: one value of bounded size in two slots
/// of a regular file or block device, written in place into the slot not
/// holding the newest valid value, then flushed; a read picks the newest
/// valid slot (`docs/design.md` §7.2).
///
/// # Examples
///
/// ```
/// # let path = std::env::temp_dir().join(format!("fstx-doc-record-{}", std::process::id()));
/// # let _ = std::fs::remove_file(&path);
/// use fstx::RecordOptions;
///
/// RecordOptions::new().max_len(100).write(&path, b"boot=a")?;
/// RecordOptions::new().write(&path, b"boot=b")?;
/// assert_eq!(fstx::read_record(&path)?.value, b"boot=b");
/// # std::fs::remove_file(&path)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct RecordOptions {
    max_len: Option<u64>,
    init: bool,
    storage: Arc<dyn Storage>,
    bugs: crate::planted::RecordBugs,
}

impl Default for RecordOptions {
    fn default() -> RecordOptions {
        RecordOptions::new()
    }
}

/// An open record target.
struct Target {
    fd: Fd,
    dir: Fd,
    kind: FileKind,
    /// Bytes in the file or on the device.
    len: u64,
    created: bool,
}

/// What the two slots hold.
struct Found {
    /// The newest valid slot: header and value.
    newest: Option<(SlotHeader, Vec<u8>)>,
    /// The geometry in use (from any slot whose header decodes).
    geometry: Option<SlotHeader>,
    /// The highest sequence number any decodable header holds.
    max_seq: u64,
    slots: Vec<SlotState>,
}

impl RecordOptions {
    /// Defaults: no size given, no `init`, the real filesystem.
    pub fn new() -> RecordOptions {
        RecordOptions {
            max_len: None,
            init: false,
            storage: storage::os(),
            #[allow(clippy::default_constructed_unit_structs)] // without `planted-bugs`
            bugs: crate::planted::RecordBugs::default(),
        }
    }

    /// Test-only: deliberate protocol bugs (see `crates/fstx/src/planted.rs`).
    #[cfg(feature = "planted-bugs")]
    pub fn planted_bugs(&mut self, bugs: crate::planted::RecordBugs) -> &mut RecordOptions {
        self.bugs = bugs;
        self
    }

    /// The largest value (bytes): required to create a record, and must
    /// match an existing record's.
    pub fn max_len(&mut self, max: u64) -> &mut RecordOptions {
        self.max_len = Some(max);
        self
    }

    /// Allow writing to an existing file or device that does not hold a
    /// record (or holds one of another size): it becomes a new record.
    pub fn init(&mut self, yes: bool) -> &mut RecordOptions {
        self.init = yes;
        self
    }

    internals_fn! {
        /// Routes every filesystem call through `storage`.
        fn storage(&mut self, storage: Arc<dyn Storage>) -> &mut RecordOptions {
            self.storage = storage;
            self
        }
    }

    /// Reads the newest valid value of the record at `path`.
    ///
    /// # Errors
    ///
    /// `path` missing, not a regular file or block device (a symlink is
    /// followed only to a block device), or no slot holding a valid value
    /// ([`io::ErrorKind::InvalidData`], naming each slot's defect).
    pub fn read(&self, path: impl AsRef<Path>) -> Result<RecordValue> {
        let path = path.as_ref();
        let st = &*self.storage;
        let t = self.open_target("record read", path, false)?;
        // A reader that races writers can find the slot being written
        // invalid and, if a second write started meanwhile, the other one
        // too: a few more looks before calling the record damaged.
        let mut found = scan(st, &t).map_err(|e| fail("record read", path, Step::ReadRecord, e))?;
        for _ in 0..READ_RETRIES {
            if found.newest.is_some() {
                break;
            }
            found = scan(st, &t).map_err(|e| fail("record read", path, Step::ReadRecord, e))?;
        }
        match found.newest {
            Some((h, value)) => Ok(RecordValue {
                value,
                seq: h.seq,
                slot: h.slot,
                max_len: h.max_len,
                slots: found.slots,
            }),
            None => Err(fail(
                "record read",
                path,
                Step::VerifyRecord,
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("no valid value: {}", describe_slots(&found.slots)),
                ),
            )),
        }
    }

    /// Writes `value` into the record at `path`: in place, into the slot not
    /// holding the newest valid value, then flushed. Creates the file (with
    /// [`max_len`](Self::max_len)) if it does not exist.
    ///
    /// # Errors
    ///
    /// Before anything is written ([`State::NotCommitted`]): a value longer
    /// than the record's largest, no size for a new record, a size that does
    /// not match the record, a target that holds no record (without
    /// [`init`](Self::init)), a device smaller than two slots, a target that
    /// is not a regular file or block device. A failed write also leaves the
    /// previous value as the newest valid one ([`State::NotCommitted`]); a
    /// failed flush after a complete write is [`State::CommittedNotDurable`].
    pub fn write(&self, path: impl AsRef<Path>, value: &[u8]) -> Result<RecordWritten> {
        let path = path.as_ref();
        let op = "record write";
        let st = &*self.storage;
        let refuse = |step, kind, msg: String| fail(op, path, step, io::Error::new(kind, msg));
        if let Some(max) = self.max_len {
            if max > RECORD_MAX_VALUE {
                return Err(refuse(
                    Step::CheckRecordSize,
                    io::ErrorKind::InvalidInput,
                    format!("a largest value of {max} bytes exceeds the limit {RECORD_MAX_VALUE}"),
                ));
            }
        }
        let t = self.open_target(op, path, true)?;
        let found = if t.created {
            None
        } else {
            Some(scan(st, &t).map_err(|e| fail(op, path, Step::ReadRecord, e))?)
        };
        // The geometry to write with, the slot, the sequence number.
        let existing = found.as_ref().and_then(|f| f.geometry);
        let max = match (existing, self.max_len) {
            (Some(g), None) => g.max_len,
            (Some(g), Some(m)) if g.max_len == m => m,
            (Some(g), Some(m)) if !self.init => {
                return Err(refuse(
                    Step::CheckRecordSize,
                    io::ErrorKind::InvalidInput,
                    format!(
                        "the record holds values of at most {} bytes, not {m} (--init makes a new record)",
                        g.max_len
                    ),
                ))
            }
            (_, Some(m)) => m,
            (None, None) => {
                return Err(refuse(
                    Step::CheckRecordSize,
                    io::ErrorKind::InvalidInput,
                    "a new record needs its largest value size (--size)".into(),
                ))
            }
        };
        let fresh = existing.is_none_or(|g| g.max_len != max);
        if fresh && found.is_some() && !self.init {
            let why = found
                .as_ref()
                .map(|f| describe_slots(&f.slots))
                .unwrap_or_default();
            return Err(refuse(
                Step::CheckRecordSize,
                io::ErrorKind::InvalidData,
                format!("the target holds no record ({why}); --init overwrites it"),
            ));
        }
        if value.len() as u64 > max {
            return Err(refuse(
                Step::CheckRecordSize,
                io::ErrorKind::InvalidInput,
                format!(
                    "a value of {} bytes is larger than the record's largest {max}",
                    value.len()
                ),
            ));
        }
        let slot_size = slot_size_for(max);
        if t.kind == FileKind::BlockDevice && slot_size * 2 > t.len {
            return Err(refuse(
                Step::CheckRecordSize,
                io::ErrorKind::InvalidInput,
                format!(
                    "the device ({} bytes) is smaller than two slots of {slot_size} bytes",
                    t.len
                ),
            ));
        }
        let (slot, seq) = match found.as_ref() {
            Some(f) if !fresh => match &f.newest {
                Some((h, _)) if crate::planted::bug!(self.bugs, write_newest_slot) => {
                    (h.slot, f.max_seq.max(h.seq) + 1)
                }
                Some((h, _)) => (1 - h.slot, f.max_seq.max(h.seq) + 1),
                None => (0, f.max_seq + 1),
            },
            Some(f) => (0, f.max_seq + 1),
            None => (0, 1),
        };
        let header = SlotHeader {
            slot,
            slot_size,
            max_len: max,
            seq,
            len: value.len() as u64,
            crc: crc32c::crc32c(value),
        };
        let mut buf = Vec::with_capacity(RECORD_HEADER_LEN as usize + value.len());
        buf.extend_from_slice(&header.encode());
        buf.extend_from_slice(value);
        if t.kind == FileKind::Regular && t.len < slot_size * 2 {
            // A new record file: both slots' pages allocated at once, so
            // later writes never change the file's size or allocation.
            st.set_len(&t.fd, slot_size * 2)
                .map_err(|e| fail(op, path, Step::WriteRecordSlot, e))?;
        }
        crate::io::write_all_at(st, &t.fd, &buf, u64::from(slot) * slot_size)
            .map_err(|e| fail(op, path, Step::WriteRecordSlot, e))?;
        let kind = if t.kind == FileKind::BlockDevice || t.created {
            SyncKind::All
        } else {
            SyncKind::Data
        };
        // A failed flush: the new value may or may not be on the disk
        // (Linux may have dropped it, and a later flush will not bring it
        // back), while the page cache shows it. Left so, the next write
        // would take the other slot — the one holding the last durable
        // value. So the new slot is invalidated in the cache (its header
        // zeroed; a new file emptied, to be created again with its
        // directory flushed), best effort, and the error says "committed,
        // durability unconfirmed".
        let undo = |e: io::Error, step: Step| {
            let _ = if t.created {
                st.set_len(&t.fd, 0)
            } else {
                crate::io::write_all_at(
                    st,
                    &t.fd,
                    &[0u8; RECORD_HEADER_LEN as usize],
                    u64::from(slot) * slot_size,
                )
            };
            Error::new(op, path, step, State::CommittedNotDurable, e)
        };
        st.sync(&t.fd, kind)
            .map_err(|e| undo(e, Step::FlushRecord))?;
        if t.created {
            crate::durability::sync_dir(st, &t.dir, None).map_err(|(step, e)| undo(e, step))?;
        }
        Ok(RecordWritten {
            slot,
            seq,
            created: fresh,
        })
    }

    /// Opens the target: a regular file or a block device (through a
    /// symlink only to a block device). With `create`, a missing file is
    /// created.
    fn open_target(&self, op: &'static str, path: &Path, create: bool) -> Result<Target> {
        let st = &*self.storage;
        let f = |step, e| fail(op, path, step, e);
        let (dir_path, name) = split(path).map_err(|e| f(Step::ParsePath, e))?;
        let dir = st
            .open_dir(None, &dir_path, true)
            .map_err(|e| f(Step::OpenParentDirectory, e))?;
        let lstat = match st.stat_at(&dir, &name, false) {
            Ok(s) => Some(s),
            Err(e) if create && e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(f(Step::InspectTarget, e)),
        };
        let how = |follow| OpenHow {
            read: true,
            write: create,
            create: Create::No,
            truncate: false,
            follow,
            nonblock: true,
        };
        let (fd, created) = match lstat.map(|s| s.kind) {
            None => {
                let fd = st
                    .open(&dir, &name, OpenHow::create_new(0o666))
                    .map_err(|e| f(Step::CreateRecord, e))?;
                (fd, true)
            }
            Some(FileKind::Regular | FileKind::BlockDevice) => (
                st.open(&dir, &name, how(false))
                    .map_err(|e| f(Step::OpenTarget, e))?,
                false,
            ),
            Some(FileKind::Symlink) => {
                let target = st
                    .stat_at(&dir, &name, true)
                    .map_err(|e| f(Step::ResolveSymlink, e))?;
                if target.kind != FileKind::BlockDevice {
                    return Err(f(
                        Step::InspectTarget,
                        invalid(
                            io::ErrorKind::InvalidInput,
                            "a symlink is followed only to a block device",
                        ),
                    ));
                }
                (
                    st.open(&dir, &name, how(true))
                        .map_err(|e| f(Step::OpenTarget, e))?,
                    false,
                )
            }
            Some(_) => return Err(f(Step::InspectTarget, not_a_record_target())),
        };
        // What was opened, from the handle itself (the name may have changed).
        let stat = st.stat(&fd).map_err(|e| f(Step::InspectTarget, e))?;
        let len = match stat.kind {
            FileKind::Regular => stat.size,
            FileKind::BlockDevice => st.end_offset(&fd).map_err(|e| f(Step::InspectTarget, e))?,
            _ => return Err(f(Step::InspectTarget, not_a_record_target())),
        };
        // An empty file holds nothing to lose and may be what a failed
        // creating write left, its name not yet flushed into the directory:
        // it is written as a new record (its directory flushed too).
        let created = created || (stat.kind == FileKind::Regular && len == 0);
        Ok(Target {
            fd,
            dir,
            kind: stat.kind,
            len,
            created,
        })
    }
}

fn not_a_record_target() -> io::Error {
    invalid(
        io::ErrorKind::InvalidInput,
        "a record lives in a regular file or a block device (not a directory, FIFO, socket or character device)",
    )
}

fn fail(op: &'static str, path: &Path, step: Step, e: io::Error) -> Error {
    Error::new(op, path, step, State::NotCommitted, e)
}

/// Reads the record at `path` with default options.
///
/// # Errors
///
/// See [`RecordOptions::read`].
pub fn read_record(path: impl AsRef<Path>) -> Result<RecordValue> {
    RecordOptions::new().read(path)
}

/// Both slots in words, for error messages.
fn describe_slots(slots: &[SlotState]) -> String {
    if slots.is_empty() {
        return "empty".into();
    }
    slots
        .iter()
        .map(|s| match &s.result {
            Ok(seq) => format!("slot {} at {}: valid, sequence {seq}", s.slot, s.offset),
            Err(d) => format!("slot {} at {}: {d}", s.slot, s.offset),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Reads exactly `buf.len()` bytes at `off` (fewer only at the end).
fn read_exact_at(st: &dyn Storage, fd: &Fd, buf: &mut [u8], mut off: u64) -> io::Result<usize> {
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

/// A slot as read: its header (if it decodes) and whether its value checks.
struct SlotRead {
    header: std::result::Result<SlotHeader, String>,
    value: std::result::Result<Vec<u8>, String>,
}

/// Reads and checks one slot at `offset`: its header, then its value.
fn read_slot(st: &dyn Storage, t: &Target, slot: u16, offset: u64) -> io::Result<SlotRead> {
    let mut hb = [0u8; RECORD_HEADER_LEN as usize];
    let n = read_exact_at(st, &t.fd, &mut hb, offset)?;
    let h = match decode_slot_header(
        &hb[..n],
        slot,
        offset,
        t.len,
        t.kind == FileKind::BlockDevice,
    ) {
        Ok(h) => h,
        Err(d) => {
            return Ok(SlotRead {
                header: Err(d.clone()),
                value: Err(d),
            })
        }
    };
    // `len` is at most `max_len`, itself bounded, and both slots lie within
    // the target: this allocates no more than the target holds.
    let mut value = vec![0u8; h.len as usize];
    let n = read_exact_at(st, &t.fd, &mut value, offset + RECORD_HEADER_LEN)?;
    let value = if n < value.len() {
        Err(format!("value truncated ({n} of {} bytes)", h.len))
    } else if crc32c::crc32c(&value) != h.crc {
        Err("value checksum mismatch".into())
    } else {
        Ok(value)
    };
    Ok(SlotRead {
        header: Ok(h),
        value,
    })
}

impl Found {
    fn consider(&mut self, slot: u16, offset: u64, r: SlotRead) {
        if let Ok(h) = &r.header {
            self.max_seq = self.max_seq.max(h.seq);
            if slot == 0 || self.geometry.is_none() {
                self.geometry = Some(*h);
            }
        }
        match (r.header, r.value) {
            (Ok(h), Ok(v)) => {
                self.slots.push(SlotState {
                    slot,
                    offset,
                    result: Ok(h.seq),
                });
                if self.newest.as_ref().is_none_or(|(n, _)| h.seq > n.seq) {
                    self.newest = Some((h, v));
                }
            }
            (_, Err(d)) | (Err(d), _) => self.slots.push(SlotState {
                slot,
                offset,
                result: Err(d),
            }),
        }
    }
}

/// Reads both slots. Slot 0's header gives the geometry; when slot 0's
/// header does not decode, or no slot holds a valid value there, slot 1 is
/// searched at every 4 KiB page up to half the target (at most
/// [`RECORD_MAX_VALUE`]): a torn slot 0 must not hide it, nor a record being
/// re-initialised with another size hide the previous one.
fn scan(st: &dyn Storage, t: &Target) -> io::Result<Found> {
    let mut found = Found {
        newest: None,
        geometry: None,
        max_seq: 0,
        slots: Vec::new(),
    };
    let s0 = read_slot(st, t, 0, 0)?;
    let g0 = s0.header.clone().ok();
    found.consider(0, 0, s0);
    if let Some(g) = g0 {
        let s1 = read_slot(st, t, 1, g.slot_size)?;
        found.consider(1, g.slot_size, s1);
    }
    if g0.is_none() || found.newest.is_none() {
        let limit = if t.kind == FileKind::BlockDevice {
            t.len / 2
        } else {
            t.len.saturating_sub(RECORD_HEADER_LEN)
        }
        .min(slot_size_for(RECORD_MAX_VALUE));
        let mut hb = [0u8; RECORD_HEADER_LEN as usize];
        let mut off = RECORD_PAGE;
        while off <= limit {
            if Some(off) != g0.map(|g| g.slot_size) {
                let n = read_exact_at(st, &t.fd, &mut hb, off)?;
                if decode_slot_header(&hb[..n], 1, off, t.len, t.kind == FileKind::BlockDevice)
                    .is_ok()
                {
                    let s1 = read_slot(st, t, 1, off)?;
                    found.consider(1, off, s1);
                }
            }
            off += RECORD_PAGE;
        }
    }
    if found.slots.len() < 2 {
        // Slot 1 not located: say so.
        found.slots.push(SlotState {
            slot: 1,
            offset: 0,
            result: Err("not found (no slot 1 header at any 4 KiB page)".into()),
        });
    }
    Ok(found)
}

impl fmt::Display for SlotState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&describe_slots(std::slice::from_ref(self)))
    }
}
