//! Explores a workload over a range of seeds on every core and prints the
//! figures (how the distinct and protocol-distinct counts grow with seeds):
//! `cargo run -p fstx-sim --example figures -- update/mixed 0 800`
//! (`FSTX_SIM_STATES=256` samples more crash states per crash point).
mod common;

use fstx_sim::campaign::parallel;
use fstx_sim::{explore, Config};

fn main() {
    let (w, seeds) = common::workload_and_seeds();
    let threads = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
    // FSTX_SIM_STATES: crash states sampled per crash point (default 64).
    let states: Option<usize> = std::env::var("FSTX_SIM_STATES")
        .ok()
        .map(|s| s.parse().expect("a number"));
    let r = parallel(seeds, threads, &|seed| {
        let mut cfg = Config::new(seed);
        if let Some(n) = states {
            cfg.states_per_crash = n;
        }
        explore(&*w, &cfg)
    });
    println!("{}: {}", w.name(), r.summary());
}
