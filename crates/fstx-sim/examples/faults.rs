//! Lists which single faults lead to violations for a workload and seeds:
//! `cargo run -p fstx-sim --example faults -- update/durable 0 3`.
mod common;

use fstx_sim::{campaign, explore, Config};

fn main() {
    let (w, seeds) = common::workload_and_seeds();
    for seed in seeds {
        for fault in campaign::all_faults(&*w, &Config::new(seed)) {
            let mut cfg = Config::new(seed);
            cfg.faults = vec![fault];
            cfg.max_kept = 1;
            let r = explore(&*w, &cfg);
            if r.violation_count > 0 {
                println!(
                    "seed {seed} {fault}: {} violations: {}",
                    r.violation_count, r.violations[0].message
                );
            }
        }
    }
}
