//! What fstx's tests, simulator and harnesses share, written once:
//!
//! - [`rng`]: the seeded, deterministic random number generator
//!   (`SplitMix64`) every sampler uses, so that every run is reproducible
//!   from its seed;
//! - [`version`]: the self-verifying version codec — file contents that say
//!   which file and which version they are, and show when torn or mixed;
//! - [`dir`]: fresh temporary directories for tests, removed on drop, and
//!   listing helpers;
//! - [`journal`]: transaction journals forged byte by byte (with an
//!   independent CRC-32C), for hostile-journal tests.
//!
//! No dependencies and no `unsafe`. Never linked into the `fstx` device
//! binary: the library `fstx` uses it only in its tests.
#![forbid(unsafe_code)]

pub mod dir;
pub mod journal;
pub mod rng;
pub mod version;

pub use dir::TempDir;
pub use rng::Rng;
