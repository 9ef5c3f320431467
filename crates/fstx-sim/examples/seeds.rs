//! Explores a workload over a range of seeds and prints the first violation:
//! `cargo run -p fstx-sim --example seeds -- update/mixed 0 300`.
mod common;

use fstx_sim::{explore, Config};

fn main() {
    let (w, seeds) = common::workload_and_seeds();
    for seed in seeds {
        let mut cfg = Config::new(seed);
        cfg.max_kept = 1;
        let r = explore(&*w, &cfg);
        if r.violation_count > 0 {
            println!("seed {seed}: {}\n{}", r.summary(), r.violations[0]);
            return;
        }
    }
    println!("no violations");
}
