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
//! 2. **Intent** (before the first staged file): create `journal` holding a
//!    BEGIN record, not flushed: a later `begin` in the same boot finds it
//!    when a writer died with staging in the tree. Only a root's first
//!    transaction flushes it, with `.fstx-txn/` and the root (round R0),
//!    since `.fstx-txn/` itself may be new.
//! 3. **Stage**: each new file is written to `.fstx-stage.<random>.<name>`
//!    beside its target (in the nearest existing ancestor when the target's
//!    directory is new), with the target's metadata, and handed to the
//!    flusher threads at once.
//! 4. **Commit round (R1, the commit point)**: take `view` exclusively,
//!    overwrite `journal` with the COMMIT record (every operation, each
//!    staged file's length, CRC-32C and metadata digest, the sequence
//!    number), then flush, all at once: the staged files, the journal,
//!    every staging directory and `.fstx-txn/`. A crash inside the round
//!    may keep the record and lose some staged data or metadata; recovery
//!    sees that by the checksums and rolls the transaction back, since
//!    nothing is applied before the round ends.
//! 5. **Apply**: create directories, rename, rename staged files over their
//!    targets, remove; each step idempotent. **R2**: flush every touched
//!    directory once, concurrently.
//! 6. **Retire (R3)**: rename `journal` to `retired` and flush
//!    `.fstx-txn/`; release `view` and `lock`.
//!
//! Three flush rounds whatever the number of files N and directories D
//! (four on a root's first transaction), one of them before the commit
//! point; with `Flush::SyncFs`, two `syncfs` calls and the retirement's
//! directory flush. `docs/design.md` §3 has the decision table and the
//! tests behind every claim.
//!
//! Recovery: `begin` and [`Snapshot`] recover the journal they find. The
//! explicit recovery ([`TxnOptions::recover`], [`crate::recover`], what a
//! device runs at boot) also sweeps the whole tree for staged files: a
//! power cut can keep a later transaction's staged files and lose its
//! unflushed BEGIN record.

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
mod verify;

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
