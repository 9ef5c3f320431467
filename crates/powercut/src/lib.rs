//! # powercut: a power-loss simulator for real ext4, xfs, btrfs and the device's filesystems
//!
//! powercut runs any program (the *workload*) on a real Linux filesystem whose
//! disk is a RAM image served through FUSE and attached as a loop device. The
//! FUSE daemon records every block WRITE, discard/zeroing, cache FLUSH and
//! every line the workload writes to `$POWERCUT_CTL` (a *mark*, e.g.
//! `ack 42`), in completion order. Replaying a prefix of that log, with the
//! writes after the last flush each kept or lost (and optionally torn),
//! gives exactly the disk a power cut at that point can leave.
//!
//! Each distinct crash image is served through another FUSE disk, mounted
//! (journal replay), handed to the program's recovery command and to a
//! checker (which gets the marks written before the cut in
//! `$POWERCUT_MARKS`), then unmounted and `fsck`ed. A non-zero exit anywhere
//! is a violation.
//!
//! ## How it works
//! 1. FUSE disk ([`disk::Recorder`]) → `losetup` → `mkfs` → `mount` →
//!    setup command → `syncfs` → snapshot (the replay base) → record the
//!    workload (with background noise, short commit intervals, delayed and
//!    reordered write completion) → record the unmount → teardown.
//! 2. [`replay::enumerate`] chooses the crash states and deduplicates them by
//!    an incremental hash of the image they produce.
//! 3. [`run`] checks them on one replay stack per core; switching state is
//!    free (a sector map over the shared base image, plus a scratch layer
//!    for what recovery writes).
//!
//! 4. [`explain`] shrinks the first violations of each configuration to a
//!    minimal cause ([`shrink`]: the earliest failing crash point, a minimal
//!    set of lost writes, the kept writes that matter, or the writes after
//!    the cut that would have healed it) and names those writes in files,
//!    inodes, journal and metadata with the filesystem's own tools
//!    ([`blockmap`]), in [`Violation::explanation`].
//!
//! `powercut stats` records a workload without checking crash states and
//! prints, for each stretch between two of its marks, the writes, bytes and
//! cache flushes that reached the disk ([`log::Log::segments`]): the
//! physical cost of an operation (the benchmark in `bench/` uses it).
//!
//! `powercut run --html FILE` writes the report as one self-contained HTML
//! page ([`html`]): per configuration an SVG timeline of the recording
//! ([`timeline::Timeline`], carried in [`ConfigReport::timeline`]) with the
//! checked crash states and every violation on it, the coverage, and each
//! violation's details.
//!
//! ## The device's filesystems: the VM lane
//! `--fs ubifs|jffs2|f2fs|f2fs-strict|vfat|exfat` (`all-flash`) and
//! `ubifs-emulated` run in Debian's kernel under QEMU ([`vm`]): the same
//! recorder, replay and checkers for the block-device filesystems; for
//! UBIFS and JFFS2 on raw flash, `powercut_mtd`, a RAM-backed MTD driver of
//! this crate (`mtd/`) that logs every page program and block erase
//! ([`flash`]); and UBI's own power-cut emulation on nandsim as a second
//! UBIFS oracle ([`flash_emu`]).
//!
//! ## Notes and limitations
//! - Needs root, `/dev/fuse`, loop devices, and the mkfs/fsck tools.
//! - Another process calling `sync` on the machine also flushes the
//!   recorded disk: it can hide a bug in one run, never cause a false alarm.
//! - The noise switch writes `.powercut-noise` in the filesystem root;
//!   checkers should ignore it.
//! - A crash image's volatile writes are sampled when there are many of them;
//!   the report's coverage section says how many states were chosen.

pub mod blockmap;
mod blockmap_ext4;
mod blockmap_xfs_btrfs;
pub mod disk;
pub mod explain;
pub mod flash;
pub mod flash_emu;
pub mod fsconfig;
pub mod html;
pub mod kmsg;
pub mod log;
pub mod record;
pub mod replay;
pub mod replay_disk;
pub mod rng;
pub mod run;
pub mod shrink;
pub mod stack;
mod sys;
pub mod timeline;
pub mod vm;

pub use replay::{Enumeration, StateSpec};
pub use run::{run, Config, ConfigReport, Report, Violation};
pub use stack::FsConfig;
