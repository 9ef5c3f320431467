//! Planted bugs: deliberate protocol errors, compiled in only with the
//! `planted-bugs` feature, so that tests show their checks fail. Only the
//! bugs that change the protocol's order or its decisions live here (in
//! transaction commit and recovery, and the two-slot record's choice of
//! slot); the bugs that leave out, delay or retry a flush are a
//! storage wrapper in the simulator crate (`fstx_sim::bugs`) and need no
//! branch in the library.
//!
//! Every planted-bug branch asks [`on`] (through [`bug!`]), which carries the
//! marker string [`MARKER`]: `scripts/check-device-binary` looks for it to
//! prove that a release `fstx` binary holds no planted bug.

/// Deliberate protocol bugs of transactions. See the [module docs](self).
#[cfg(feature = "planted-bugs")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TxnBugs {
    /// Redo renames staged files into place without checking their length
    /// and checksum against the record.
    pub trust_staged: bool,
    /// Retire without flushing `.fstx-txn/`; after the first transaction,
    /// assume `.fstx-txn/` durable and skip its flush in R0/R1 (otherwise
    /// that flush makes the previous retirement durable and nothing can be
    /// replayed over a later transaction); let recovery ignore sequence
    /// numbers. A retired journal can then shadow a later transaction's and
    /// be replayed over it.
    pub replay_retired: bool,
    /// Recovery sweeps every staged file before looking at the journal, so
    /// a committed transaction's staging is removed before it is retired.
    pub sweep_staging_first: bool,
    /// Commit retires the journal before the touched directories are
    /// flushed: the retirement may reach the disk before the renames.
    pub retire_before_dir_flush: bool,
    /// Recovery refuses a commit record whose staged data did not reach the
    /// disk even when none of it was applied (the ordinary outcome of a
    /// crash inside the commit round), instead of rolling it back.
    pub refuse_lost_data: bool,
}

/// Without the feature: no bug can be set.
#[cfg(not(feature = "planted-bugs"))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct TxnBugs;

/// Deliberate protocol bugs of two-slot records.
#[cfg(feature = "planted-bugs")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RecordBugs {
    /// Write into the slot that holds the newest valid value (in place over
    /// it), instead of the other one.
    pub write_newest_slot: bool,
}

/// Without the feature: no bug can be set.
#[cfg(not(feature = "planted-bugs"))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct RecordBugs;

/// The string every build with planted bugs contains.
#[cfg(feature = "planted-bugs")]
pub(crate) const MARKER: &str = "fstx-planted-bug";

/// Whether planted bug `flag` is on; keeps [`MARKER`] in the binary.
#[cfg(feature = "planted-bugs")]
#[inline(never)]
pub(crate) fn on(flag: bool) -> bool {
    std::hint::black_box(MARKER);
    flag
}

/// `bug!(bugs, name)`: whether planted bug `name` of `bugs` is on (always
/// `false` without the `planted-bugs` feature).
macro_rules! bug {
    ($bugs:expr, $name:ident) => {{
        #[cfg(feature = "planted-bugs")]
        let on = crate::planted::on($bugs.$name);
        #[cfg(not(feature = "planted-bugs"))]
        let on = {
            let _ = &$bugs;
            false
        };
        on
    }};
}
pub(crate) use bug;
