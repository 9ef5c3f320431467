//! Multi-file transactions under one root directory: every change or none,
//! whenever the power is cut.
//!
//! A [`Transaction`] stages writes, removals, renames and new directories,
//! then [`commit`](Transaction::commit)s them with a checksummed redo
//! journal. After a crash, recovery (run automatically by the next
//! [`Transaction::begin`] or [`Snapshot::open`], or by [`crate::recover`])
//! redoes a committed transaction to completion or removes the staging of an
//! uncommitted one. [`Snapshot`] gives readers a consistent view between
//! transactions.
//!
//! # The commit protocol
//!
//! The root holds a control directory `.fstx-txn/` with two lock files
//! (`lock` for writers, `view` for readers), the `journal` while a
//! transaction is in flight, and `retired`, the last applied journal.
//!
//! 1. **Begin**: take `lock` exclusively (writers are serialized), recover
//!    whatever a dead writer left, read the last sequence number from
//!    `retired`.
//! 2. **Intent** (before the first staged file, flush round R0): create
//!    `journal` holding a BEGIN record; flush it and `.fstx-txn/`. From now on
//!    a crash leaves a marker telling recovery to look for staging.
//! 3. **Stage**: each new file is written to `.fstx-stage.<random>.<name>`
//!    beside its target (in the nearest existing ancestor when the target's
//!    directory is new), with the target's metadata, and handed to the
//!    flusher threads at once.
//! 4. **R1**: wait for the staged files' flushes; flush every staging
//!    directory (and `.fstx-txn/`) concurrently.
//! 5. **Commit point (R2)**: take `view` exclusively, overwrite `journal`
//!    with the COMMIT record (every operation, each staged file's length and
//!    CRC-32C, the sequence number) and `fdatasync` it.
//! 6. **Apply**: create directories, rename, rename staged files over their
//!    targets, remove; each step idempotent. **R3**: flush every touched
//!    directory once, concurrently.
//! 7. **Retire (R4)**: rename `journal` to `retired` and flush `.fstx-txn/`;
//!    release `view` and `lock`.
//!
//! Five flush rounds whatever the number of files N and directories D
//! (four without new file content); `docs/design.md` §3 has the decision
//! table and the tests behind every claim.

mod apply;
mod commit;
mod flush;
#[cfg(feature = "internals")]
pub mod journal;
#[cfg(not(feature = "internals"))]
#[allow(unreachable_pub, dead_code)] // the fuzz target decodes, through `internals`
pub(crate) mod journal;
mod options;
mod quarantine;
mod recovery;
mod root;
mod snapshot;
mod stage;
mod transaction;

pub use flush::{Flush, DEFAULT_FLUSH_THREADS};
pub use options::{Committed, Phase, PhaseHook, TxnOptions};
pub(crate) use recovery::{recover_root, RootState};
pub use recovery::{Damage, RollbackReason, TxnOutcome, TxnRecovery};
pub(crate) use root::{is_stage_name, CONTROL_DIR, STAGE_PREFIX};
pub use snapshot::Snapshot;
pub use stage::StagedFile;
pub use transaction::Transaction;

pub(crate) use crate::planted::bug;
#[cfg(feature = "planted-bugs")]
pub use crate::planted::TxnBugs;
pub(crate) use crate::planted::TxnBugs as Bugs;
