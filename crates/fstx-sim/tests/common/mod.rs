//! What the simulator's test files share.

use fstx_sim::{campaign, Config, Kernel, Profile, Report, Workload};

/// Runs `w` with every fault at every call under `profile` and `kernel`,
/// the writers told `reported` (a planted bug) or the truth.
pub(crate) fn faults_on(
    w: &dyn Workload,
    seeds: std::ops::Range<u64>,
    profile: Profile,
    kernel: Kernel,
    reported: Option<Kernel>,
) -> Report {
    let mut total = Report::default();
    for seed in seeds {
        let mut cfg = Config::new(seed);
        cfg.profile = profile;
        cfg.kernel = kernel;
        cfg.reported_kernel = reported;
        cfg.states_per_crash = 16;
        cfg.states_per_recovery_crash = 4;
        total.merge(campaign::with_every_fault(w, &cfg));
        if reported.is_some() && total.violation_count > 0 {
            break;
        }
    }
    println!(
        "{} on {} Linux {} (told {:?}): {}",
        w.name(),
        profile.name(),
        kernel.name(),
        reported.map(Kernel::name),
        total.summary()
    );
    for v in &total.violations {
        println!("{v}");
    }
    total
}
