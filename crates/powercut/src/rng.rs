//! The seeded generator (`SplitMix64`) of the sampling: the workspace's one,
//! [`fstx_testkit::rng`], re-exported here.

pub use fstx_testkit::rng::Rng;
