//! Planted bugs: deliberate protocol errors, compiled in only with the
//! `planted-bugs` feature (tests and the power-cut experiment use them to
//! show that their checks fail). Every planted-bug branch asks [`on`],
//! which carries the marker string [`MARKER`]: `scripts/check-device-binary`
//! looks for it to prove that a release `fstx` binary holds no planted bug.

/// The string every build with planted bugs contains.
pub(crate) const MARKER: &str = "fstx-planted-bug";

/// Whether planted bug `flag` is on; keeps [`MARKER`] in the binary.
#[inline(never)]
pub(crate) fn on(flag: bool) -> bool {
    std::hint::black_box(MARKER);
    flag
}
