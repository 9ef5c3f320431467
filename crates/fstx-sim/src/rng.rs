//! The seeded generator every sampler of the simulator uses: the workspace's
//! one, [`fstx_testkit::rng`] (`SplitMix64`), re-exported here.

pub use fstx_testkit::rng::{mix, Rng};
