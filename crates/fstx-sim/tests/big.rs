//! The big run for CI: at least a million distinct crash states over every
//! workload, with faults, under every simulated kernel variant, on every core. Ignored by default; CI runs it as
//!
//! ```text
//! timeout 600 cargo test -p fstx-sim --test big -- --ignored --nocapture
//! ```
//!
//! `FSTX_SIM_SCALE` (default 1.0) scales the number of seeds.

use fstx::txn::Flush;
use fstx_sim::bugs::FlushBugs;
use fstx_sim::campaign::{lying_flushes, parallel, with_every_fault};
use fstx_sim::workloads::replace::{Level, Replace};
use fstx_sim::workloads::txn::Txn;
use fstx_sim::workloads::update::Update;
use fstx_sim::{explore, Config, Kernel, Profile, Report, Workload};

fn scaled(n: u64) -> u64 {
    let scale: f64 = std::env::var("FSTX_SIM_SCALE").map_or(1.0, |s| s.parse().expect("a number"));
    #[allow(clippy::cast_sign_loss, clippy::cast_precision_loss)]
    let n = (n as f64 * scale).ceil() as u64;
    n.max(1)
}

fn threads() -> usize {
    std::thread::available_parallelism().map_or(2, std::num::NonZero::get)
}

fn crashes(w: &dyn Workload, seeds: u64, profile: Profile) -> Report {
    crashes_on(w, seeds, profile, Kernel::Current)
}

fn crashes_on(w: &dyn Workload, seeds: u64, profile: Profile, kernel: Kernel) -> Report {
    parallel(0..scaled(seeds), threads(), &|seed| {
        let mut cfg = Config::new(seed);
        cfg.profile = profile;
        cfg.kernel = kernel;
        explore(w, &cfg)
    })
}

fn faults(w: &dyn Workload, seeds: u64) -> Report {
    faults_on(w, seeds, Profile::Weak, Kernel::Current)
}

fn faults_on(w: &dyn Workload, seeds: u64, profile: Profile, kernel: Kernel) -> Report {
    parallel(0..scaled(seeds), threads(), &|seed| {
        let mut cfg = Config::new(seed);
        cfg.profile = profile;
        cfg.kernel = kernel;
        with_every_fault(w, &cfg)
    })
}

fn lying(w: &dyn Workload, seeds: u64) -> Report {
    parallel(0..scaled(seeds), threads(), &|seed| {
        lying_flushes(w, &Config::new(seed))
    })
}

#[test]
#[ignore = "the big run: minutes; CI calls it explicitly"]
fn big_run() {
    let none = FlushBugs::NONE;
    let replace = |level| Replace {
        level,
        bugs: none,
        handle: false,
    };
    let update = |level, copy| Update {
        level,
        copy,
        bugs: none,
    };
    let txn = Txn {
        flush: Flush::Serial,
        ..Txn::default()
    };
    let txn_syncfs = Txn {
        flush: Flush::SyncFs,
        ..txn
    };
    let txn_wide = Txn { wide: true, ..txn };
    // Production's own choice, decided by the simulated kernel.
    let txn_auto = Txn {
        flush: Flush::Auto,
        ..txn
    };
    let runs: Vec<(String, Report)> = vec![
        (
            "replace/mixed crashes".into(),
            crashes(&replace(Level::Mixed), 1_500, Profile::Weak),
        ),
        (
            "replace/durable crashes".into(),
            crashes(&replace(Level::Durable), 1_000, Profile::Weak),
        ),
        (
            "replace/mixed ordered".into(),
            crashes(&replace(Level::Mixed), 200, Profile::Ordered),
        ),
        (
            "replace/mixed faults".into(),
            faults(&replace(Level::Mixed), 10),
        ),
        (
            "update/mixed crashes".into(),
            crashes(&update(Level::Mixed, false), 1_200, Profile::Weak),
        ),
        (
            "update/durable/copy faults".into(),
            faults(&update(Level::Durable, true), 4),
        ),
        (
            "update/durable faults".into(),
            faults(&update(Level::Durable, false), 4),
        ),
        (
            "txn/serial crashes".into(),
            crashes(&txn, 2_000, Profile::Weak),
        ),
        (
            "txn/syncfs crashes".into(),
            crashes(&txn_syncfs, 1_000, Profile::Weak),
        ),
        ("txn/syncfs faults".into(), faults(&txn_syncfs, 2)),
        // Wider transactions (twelve paths, up to six operations each): the
        // most new situations per second, so most of the budget goes here.
        (
            "txn/serial/wide crashes".into(),
            crashes(&txn_wide, 2_000, Profile::Weak),
        ),
        ("txn/serial/wide faults".into(), faults(&txn_wide, 1)),
        ("txn/serial faults".into(), faults(&txn, 8)),
        (
            "txn lying flushes (recovery never installs damaged data)".into(),
            lying(&txn, 12),
        ),
    ];
    // Every kernel variant (what syncfs reports) on ext4 and on btrfs: the
    // production protocol's kernel-dependent branches (Flush::Auto, the
    // btrfs directory flush before Linux 5.17), crashed and faulted.
    let mut runs = runs;
    for kernel in Kernel::ALL {
        for profile in [Profile::Weak, Profile::Btrfs] {
            let on = format!("{} on Linux {}", profile.name(), kernel.name());
            runs.push((
                format!("txn (auto flush) crashes, {on}"),
                crashes_on(&txn_auto, 300, profile, kernel),
            ));
            runs.push((
                format!("txn (auto flush) faults, {on}"),
                faults_on(&txn_auto, 1, profile, kernel),
            ));
            runs.push((
                format!("replace/durable faults, {on}"),
                faults_on(&replace(Level::Durable), 2, profile, kernel),
            ));
            runs.push((
                format!("update/durable faults, {on}"),
                faults_on(&update(Level::Durable, false), 1, profile, kernel),
            ));
        }
    }
    let mut total = Report::default();
    for (name, r) in runs {
        println!("{name}: {}", r.summary());
        for v in &r.violations {
            println!("{v}");
        }
        total.merge(r);
    }
    println!("TOTAL: {}", total.summary());
    assert_eq!(total.violation_count, 0);
    assert!(
        total.distinct.len() >= 1_000_000,
        "fewer than 10^6 distinct crash images"
    );
    // The situations recovery tells apart (see fstx_sim::protocol): at
    // least a million, not just a million images.
    assert!(
        total.protocol_distinct.len() >= 1_000_000,
        "fewer than 10^6 protocol-distinct crash states"
    );
}
