//! Crash, fault and lying-flush checks of two-slot records, and the planted
//! bug (writing into the slot that holds the newest value) shown caught.

use fstx_sim::bugs::{FlushBug, FlushBugs};
use fstx_sim::workloads::record::Record;
use fstx_sim::workloads::verified::Verified;
use fstx_sim::{campaign, explore, Config, Profile, Report, Workload};

fn run(w: &dyn Workload, seeds: std::ops::Range<u64>, profile: Profile, how: &str) -> Report {
    let mut total = Report::default();
    let expect_violations = w.name().contains('+');
    for seed in seeds {
        let mut cfg = Config::new(seed);
        cfg.profile = profile;
        total.merge(match how {
            "faults" => {
                cfg.states_per_crash = 16;
                cfg.states_per_recovery_crash = 4;
                campaign::with_every_fault(w, &cfg)
            }
            "lies" => campaign::lying_flushes(w, &cfg),
            _ => explore(w, &cfg),
        });
        if expect_violations && total.violation_count > 0 {
            break;
        }
    }
    println!("{} {how} {}: {}", w.name(), profile.name(), total.summary());
    for v in &total.violations {
        println!("{v}");
    }
    total
}

#[test]
fn records_pass_every_crash_state() {
    for profile in [Profile::Weak, Profile::TornSectors] {
        let r = run(&Record::default(), 0..200, profile, "crash");
        assert_eq!(r.violation_count, 0);
        assert!(r.states_checked > 100, "{}", r.summary());
    }
}

#[test]
fn records_pass_every_fault() {
    let r = run(&Record::default(), 0..40, Profile::Weak, "faults");
    assert_eq!(r.violation_count, 0);
}

#[test]
fn records_survive_lying_flushes() {
    for profile in [Profile::Weak, Profile::TornSectors] {
        let r = run(&Record::default(), 0..100, profile, "lies");
        assert_eq!(r.violation_count, 0);
    }
}

#[cfg(feature = "planted-bugs")]
#[test]
fn planted_write_newest_slot_is_caught() {
    let bug = Record {
        write_newest_slot: true,
    };
    let r = run(&bug, 0..24, Profile::Weak, "crash");
    assert!(r.caught("the record"), "{}", r.summary());
}

#[test]
fn verified_files_pass_every_crash_state() {
    let r = run(&Verified::default(), 0..60, Profile::Weak, "crash");
    assert_eq!(r.violation_count, 0);
    assert!(r.states_checked > 100, "{}", r.summary());
}

#[test]
fn verified_files_pass_every_fault() {
    let r = run(&Verified::default(), 0..6, Profile::Weak, "faults");
    assert_eq!(r.violation_count, 0);
}

#[test]
fn verified_files_survive_lying_flushes() {
    for profile in [Profile::Weak, Profile::TornSectors] {
        let r = run(&Verified::default(), 0..30, profile, "lies");
        assert_eq!(r.violation_count, 0);
    }
}

/// The verified read's check can fail: without the file flush, an
/// acknowledged write can leave a torn file, and the read then falls back
/// to an older version or fails.
#[test]
fn planted_no_file_sync_is_caught_by_the_verified_read() {
    let bug = Verified {
        bugs: FlushBugs::one(FlushBug::NoFileSync),
    };
    let r = run(&bug, 0..60, Profile::Weak, "crash");
    assert!(r.caught("the verified read"), "{}", r.summary());
}
