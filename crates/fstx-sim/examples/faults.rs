//! Lists which single faults lead to violations for a workload and seeds:
//! `cargo run -p fstx-sim --example faults -- update/durable 0 3`.
use fstx_sim::{campaign, explore, workloads, Config};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let w = workloads::by_name(&args[1]).expect("workload");
    let from: u64 = args[2].parse().expect("seed");
    let to: u64 = args[3].parse().expect("seed");
    for seed in from..to {
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
