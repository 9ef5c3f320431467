//! The big run for CI: at least a million distinct crash states over every
//! workload, with faults, on every core. Ignored by default; CI runs it as
//!
//! ```text
//! timeout 600 cargo test -p fstx-sim --test big -- --ignored --nocapture
//! ```
//!
//! `FSTX_SIM_SCALE` (default 1.0) scales the number of seeds.

use fstx::{PlantedBugs, TxnBugs};
use fstx_sim::campaign::{lying_flushes, parallel, with_every_fault};
use fstx_sim::workloads::replace::{Level, Replace};
use fstx_sim::workloads::txn::Txn;
use fstx_sim::workloads::update::Update;
use fstx_sim::{explore, Config, Profile, Report, Workload};

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
    parallel(0..scaled(seeds), threads(), &|seed| {
        let mut cfg = Config::new(seed);
        cfg.profile = profile;
        explore(w, &cfg)
    })
}

fn faults(w: &dyn Workload, seeds: u64) -> Report {
    parallel(0..scaled(seeds), threads(), &|seed| {
        with_every_fault(w, &Config::new(seed))
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
    let none = PlantedBugs::default();
    let replace = |level| Replace { level, bugs: none };
    let update = |level, copy| Update {
        level,
        copy,
        bugs: none,
    };
    let txn = Txn {
        bugs: TxnBugs::default(),
        syncfs: false,
    };
    let txn_syncfs = Txn {
        syncfs: true,
        ..txn
    };
    let runs: Vec<(String, Report)> = vec![
        (
            "replace/mixed crashes".into(),
            crashes(&replace(Level::Mixed), 4_000, Profile::Weak),
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
            crashes(&update(Level::Mixed, false), 800, Profile::Weak),
        ),
        (
            "update/durable/copy faults".into(),
            faults(&update(Level::Durable, true), 4),
        ),
        (
            "update/durable faults".into(),
            faults(&update(Level::Durable, false), 4),
        ),
        ("txn crashes".into(), crashes(&txn, 600, Profile::Weak)),
        (
            "txn/syncfs crashes".into(),
            crashes(&txn_syncfs, 200, Profile::Weak),
        ),
        ("txn/syncfs faults".into(), faults(&txn_syncfs, 2)),
        ("txn faults".into(), faults(&txn, 8)),
        (
            "txn lying flushes (recovery never installs damaged data)".into(),
            lying(&txn, 12),
        ),
    ];
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
        "fewer than 10^6 distinct crash states"
    );
}
