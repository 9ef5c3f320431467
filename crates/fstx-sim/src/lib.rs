//! In-process crash and fault simulator for fstx.
//!
//! - [`SimFs`] implements fstx's [storage seam](fstx::storage::Storage) in
//!   memory, with Linux's errors, hard links, symlinks, modes, xattrs and
//!   `flock` locks, and keeps the live state apart from what is durable.
//! - [`model`] states the persistence rules (weakest by default, stricter
//!   profiles as options) and builds the crash states they allow.
//! - [`explore()`] runs a [`Workload`], crashes it after every storage call,
//!   recovers every crash state (crashing the recovery too) and checks it.
//! - [`fault`] makes the Nth call of a kind fail (`EIO`, `ENOSPC`, `EDQUOT`,
//!   `EROFS`, `EINTR`, short write); a failed file flush loses the data.
//! - [`campaign`] combines both: every fault at every call, every crash.
//!
//! Everything is deterministic from a seed; a violation prints the seed, the
//! call trace, the crash state and a command that replays it.
#![forbid(unsafe_code)]

pub mod bugs;
pub mod campaign;
pub mod explore;
pub mod fault;
pub mod fs;
pub mod history;
pub mod model;
pub mod protocol;
pub mod rng;
pub mod tree;
pub mod workloads;

pub use explore::{explore, Config, Report, Violation, Workload};
pub use fault::{CallKind, Fault, FaultError};
pub use fs::SimFs;
pub use model::{Kernel, Profile};
