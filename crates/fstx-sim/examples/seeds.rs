//! Explores a workload over a range of seeds and prints the first violation:
//! `cargo run -p fstx-sim --example seeds -- update/mixed 0 300`.
use fstx_sim::{explore, workloads, Config};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let w = workloads::by_name(&args[1]).expect("workload");
    let from: u64 = args[2].parse().expect("seed");
    let to: u64 = args[3].parse().expect("seed");
    for seed in from..to {
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
