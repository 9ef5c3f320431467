//! Replays one case from the environment, as printed with every violation:
//!
//! ```text
//! FSTX_SIM_WORKLOAD='replace/durable' FSTX_SIM_SEED=7 FSTX_SIM_PROFILE=weak FSTX_SIM_KERNEL=current \
//!     FSTX_SIM_FAULTS='sync#1:eio' cargo test -p fstx-sim --all-features --test replay -- --ignored --nocapture
//! ```
//!
//! Ignored by default (CI counts it as skipped); run with `--ignored`.

use fstx_sim::{explore, workloads, Config, Fault, Kernel, Profile};

#[test]
#[ignore = "replays one case from FSTX_SIM_WORKLOAD and friends (see the file's docs)"]
fn replay() {
    let name = std::env::var("FSTX_SIM_WORKLOAD").expect(
        "set FSTX_SIM_WORKLOAD (and FSTX_SIM_SEED, FSTX_SIM_PROFILE, FSTX_SIM_KERNEL, \
         FSTX_SIM_FAULTS) to replay a case",
    );
    let workload = workloads::by_name(&name).unwrap_or_else(|| panic!("unknown workload {name}"));
    let seed =
        std::env::var("FSTX_SIM_SEED").map_or(0, |s| s.parse().expect("FSTX_SIM_SEED is a number"));
    let mut cfg = Config::new(seed);
    if let Ok(p) = std::env::var("FSTX_SIM_PROFILE") {
        cfg.profile = Profile::parse(&p)
            .expect("FSTX_SIM_PROFILE is weak, ordered, prefix, btrfs or btrfs-dir-race");
    }
    if let Ok(k) = std::env::var("FSTX_SIM_KERNEL") {
        cfg.kernel = Kernel::parse(&k).expect("FSTX_SIM_KERNEL is current, 5.10 or 5.4");
    }
    if let Ok(k) = std::env::var("FSTX_SIM_REPORTED_KERNEL") {
        cfg.reported_kernel =
            Some(Kernel::parse(&k).expect("FSTX_SIM_REPORTED_KERNEL is current, 5.10 or 5.4"));
    }
    if let Ok(f) = std::env::var("FSTX_SIM_FAULTS") {
        cfg.faults = f
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| Fault::parse(s).unwrap_or_else(|| panic!("bad fault {s}")))
            .collect();
    }
    cfg.max_kept = std::env::var("FSTX_SIM_SHOW").map_or(3, |s| s.parse().unwrap_or(3));
    let report = explore(&*workload, &cfg);
    println!("{name} seed {seed}: {}", report.summary());
    for v in &report.violations {
        println!("{v}");
    }
    assert_eq!(
        report.violation_count, 0,
        "violations found (details above)"
    );
}
