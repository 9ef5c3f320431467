//! Transaction-like file operations that survive a power cut at any instant.
//!
//! fstx replaces files so that, at every instant, a file holds either its
//! complete old content or its complete new content — for readers in other
//! processes, and after a power cut.
//!
//! # Examples
//!
//! ```
//! # let dir = std::env::temp_dir().join(format!("fstx-lib-doc-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir)?;
//! use std::io::Write;
//!
//! // Like std::fs::write, but atomic and durable.
//! fstx::write(dir.join("state.json"), b"{\"count\": 1}")?;
//!
//! // Streaming, for content of any size, in constant memory.
//! let mut file = fstx::AtomicFile::create(dir.join("big.bin"))?;
//! for chunk in 0..4u8 {
//!     file.write_all(&[chunk; 4096])?;
//! }
//! file.commit()?; // nothing is visible at big.bin before this returns
//!
//! // Many replaces in one directory: open it once. Threads share the
//! // handle, and their durable replaces share directory flushes.
//! let sensors = fstx::Dir::open(&dir)?;
//! sensors.write("temperature", b"21.5\n")?;
//! sensors.write("humidity", b"40\n")?;
//!
//! // After a crash: sweep temporary files left by dead writers.
//! let report = fstx::recover(&dir)?;
//! assert!(report.removed.is_empty());
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Guarantees
//!
//! For [`write()`], [`AtomicFile::commit`] and [`Dir::write`] with the
//! default [`Durability::Durable`], on a supported filesystem (see
//! [`FsClass`](fskind::FsClass)):
//!
//! - **Atomic**: readers see the complete old or the complete new content,
//!   never a mix, never an empty or partial file — also after a power cut.
//! - **Durable**: once `commit` returns `Ok`, the new content survives a
//!   power cut.
//! - **Confined**: every path operation after opening the parent directory is
//!   relative to that directory's handle; swapping a parent for a symlink
//!   mid-operation cannot redirect the write.
//! - **Private until committed**: the temporary file is created exclusively
//!   under an unpredictable name and is never more permissive than the final
//!   file; the new file gets the old one's owner, group, mode and extended
//!   attributes, without set-id bits or file capabilities unless asked.
//! - **No garbage survives recovery**: a writer that dies leaves at most one
//!   temporary file, which [`recover`] removes; a live writer's file is never
//!   removed.
//!
//! # Cost
//!
//! A replace is two flush rounds (the new file, then its directory) and few
//! system calls: a one-shot [`write()`] of an existing file without extended
//! attributes makes 13 (`openat` of the directory, `newfstatat`, `fstatfs`,
//! `llistxattr`, `openat` of the temporary file, `flock`, `fstat`, `pwrite`,
//! `fsync`, `renameat`, `fsync` of the directory, two `close`; plus one
//! `getrandom` per process); through a [`Dir`] handle, 10 (no directory
//! open, no `fstatfs`, no directory close). That is for a file whose mode
//! the new file can get at creation (`0o644` under umask `0o022`); an
//! `fchmod` is added where it cannot (`0o640`: created `0o600` until the
//! owner and group are set), an `fchown` where the owner differs, and a few
//! calls per extended attribute. Concurrent durable replaces
//! through one [`Dir`] share directory flushes (group commit): each waits
//! for a flush that began after its own rename, and one flush covers every
//! rename done before it began.
//!
//! On btrfs the directory flush is `syncfs` (a btrfs transaction commit)
//! rather than `fsync` of the directory, which btrfs can let return before
//! the rename is on disk while another process syncs the same directory
//! (recorded on Linux 6.18; `docs/design.md` §6).
//!
//! Not guaranteed: durability on filesystems that lie about flushes
//! (`nobarrier`, cheap flash), crash atomicity on vfat/exfat or network
//! filesystems (refused by default), and other hard links of a replaced file
//! (they keep the old content).
//!
//! # Locked read-modify-write
//!
//! [`update`] (and [`update_stream`] for large files) reads a file, lets a
//! function compute the new content, and replaces the file atomically and
//! durably, all under an exclusive lock that threads and processes share: no
//! update is ever lost. The lock is a sidecar file `.fstx-lock.NAME`, never
//! deleted, released by the kernel when a holder dies ([`lock`] explains why
//! not the file itself). [`UpdateOptions::backup`] keeps the previous version
//! as `NAME~` (and [`generations`](UpdateOptions::generations) more), as a
//! hard link where possible: complete at every instant, also after a crash.
//! Readers need no lock: every replace is an atomic rename.
//!
//! # After a power cut: verified reads and two-slot records
//!
//! [`Options::verified`] wraps the content in an envelope (checksum and a
//! growing sequence number) — for a write, an [`update`] or
//! [`update_stream`] (whose function reads the newest payload that
//! verifies), and, with [`TxnOptions::verified`], every file a transaction
//! writes; [`read()`] returns the newest version that verifies among a file
//! and its backups and says which candidates it rejected and why. [`RecordOptions`] keeps one bounded value in two slots
//! of a file or block device, written in place into the older slot: no
//! rename, so it holds on vfat, exfat and raw partitions
//! ([`read_record`]). `docs/design.md` §7 states what holds after a cut,
//! also with torn sectors and lying flushes.
//!
//! # Errors
//!
//! Every failure is an [`Error`] naming the operation, the path and the step,
//! converting into [`std::io::Error`] with the same [`std::io::ErrorKind`],
//! and stating the [`State`] the caller is in: not committed (old content
//! intact, nothing left behind); not committed with a temporary file left
//! (cleanup failed too; [`recover`] removes it); or committed with durability
//! unconfirmed (the rename happened, the directory flush failed). A failed
//! flush is never retried into a success.
//!
//! # Features
//!
//! - `internals`: makes the storage seam public (the `storage` module and
//!   the `storage(...)` option of [`Options`], [`TxnOptions`] and
//!   [`RecoverOptions`]) and the journal's wire format (`txn::journal`), for
//!   the simulator crate and the fuzz target. Not part of the stable API.
//! - `planted-bugs`: deliberate recovery bugs for tests. Never in a release
//!   build (`scripts/check-device-binary` checks the `fstx` binary).
#![forbid(unsafe_code)]

/// Declares a method public with the `internals` feature and crate-visible
/// without it.
macro_rules! internals_fn {
    ($(#[$m:meta])* fn $($rest:tt)*) => {
        #[cfg(feature = "internals")]
        $(#[$m])* pub fn $($rest)*
        #[cfg(not(feature = "internals"))]
        #[allow(dead_code)]
        $(#[$m])* pub(crate) fn $($rest)*
    };
}

mod atomic;
mod backup;
mod dir;
mod durability;
#[cfg_attr(not(feature = "internals"), allow(unreachable_pub, dead_code))]
mod envelope;
mod error;
pub mod fskind;
mod io;
pub mod lock;
mod metadata;
mod names;
mod paths;
mod planted;
#[cfg_attr(not(feature = "internals"), allow(unreachable_pub, dead_code))]
// the decoders: public with `internals` (`fstx::formats`)
mod record;
mod recover;
#[cfg(feature = "internals")]
pub mod storage;
#[cfg(not(feature = "internals"))]
#[allow(unreachable_pub, dead_code)] // used by simulators, through `internals`
pub(crate) mod storage;
#[cfg_attr(not(feature = "internals"), allow(unreachable_pub))]
// `OsStorage`: public with `internals`
mod sys;
mod temp;
pub mod txn;
mod update;

pub use atomic::{write, AtomicFile, Durability, HardLinks, Options, Symlinks};
pub use backup::{BackupKind, BackupMethod};
pub use dir::Dir;
pub use envelope::{read, ReadOptions, ReadOutcome, Rejected};
pub use error::{Error, Result, State, Step};
pub use lock::{FileLock, Wait};
pub use names::{internal_name, internal_target, is_internal_name, InternalName};
pub use paths::MAX_SYMLINK_HOPS;
pub use record::{
    read_record, RecordOptions, RecordValue, RecordWritten, SlotState, RECORD_MAX_VALUE,
};
pub use recover::{recover, RecoverOptions, Recovery};
/// The on-disk formats' decoders, for the fuzz target.
#[cfg(feature = "internals")]
pub mod formats {
    pub use crate::envelope::{
        decode_envelope, decode_envelope_header, has_envelope_magic, EnvelopeHeader,
        ENVELOPE_HEADER_LEN, ENVELOPE_MAGIC, ENVELOPE_VERSION,
    };
    pub use crate::record::{
        decode_slot_header, slot_size_for, SlotHeader, RECORD_HEADER_LEN, RECORD_MAGIC,
        RECORD_MAX_VALUE, RECORD_PAGE, RECORD_VERSION,
    };
}
#[cfg(feature = "planted-bugs")]
pub use planted::RecordBugs;
#[cfg(feature = "planted-bugs")]
pub use txn::TxnBugs;
pub use txn::{
    Committed, Damage, Phase, RollbackReason, Snapshot, StagedFile, Transaction, TxnOptions,
    TxnOutcome, TxnRecovery,
};
pub use update::{update, update_stream, OldFile, UpdateOptions, Updated};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
