//! Crash and fault checks of locked read-modify-write with backups.

use fstx_sim::bugs::{FlushBug, FlushBugs};
use fstx_sim::workloads::replace::Level;
use fstx_sim::workloads::update::Update;
use fstx_sim::{campaign, explore, Config, Profile, Report, Workload};

fn run(w: &dyn Workload, seeds: std::ops::Range<u64>, faults: bool) -> Report {
    run_on(w, seeds, Profile::Weak, faults)
}

fn run_on(w: &dyn Workload, seeds: std::ops::Range<u64>, profile: Profile, faults: bool) -> Report {
    let mut total = Report::default();
    let expect_violations = w.name().contains('+');
    for seed in seeds {
        let mut cfg = Config::new(seed);
        cfg.profile = profile;
        total.merge(if faults {
            // Every fault at every call, with fewer sampled states per crash
            // point (the big run samples more).
            cfg.states_per_crash = 16;
            cfg.states_per_recovery_crash = 4;
            campaign::with_every_fault(w, &cfg)
        } else {
            explore(w, &cfg)
        });
        // A planted bug is shown caught as soon as one seed catches it.
        if expect_violations && total.violation_count > 0 {
            break;
        }
    }
    println!("{}: {}", w.name(), total.summary());
    for v in &total.violations {
        println!("{v}");
    }
    total
}

fn update(level: Level, copy: bool) -> Update {
    Update {
        level,
        copy,
        bugs: FlushBugs::NONE,
    }
}

#[test]
fn updates_with_backups_pass_every_crash_state() {
    for (level, copy) in [
        (Level::Durable, false),
        (Level::Durable, true),
        (Level::Mixed, false),
    ] {
        let r = run(&update(level, copy), 0..8, false);
        assert_eq!(r.violation_count, 0);
    }
}

#[test]
fn copied_backups_pass_every_fault() {
    let r = run(&update(Level::Durable, true), 0..1, true);
    assert_eq!(r.violation_count, 0);
    assert!(r.faults_injected > 100);
}

/// Found the "already backed up" shortcut skipping the directory flush
/// (fixed in fstx commit e793bc4).
#[test]
fn linked_backups_pass_every_fault() {
    let r = run(&update(Level::Durable, false), 0..2, true);
    assert_eq!(r.violation_count, 0);
    assert!(r.faults_injected > 100);
}

#[test]
fn stricter_profile_passes() {
    let w = update(Level::Mixed, false);
    let mut r = Report::default();
    for seed in 0..8 {
        let mut cfg = Config::new(seed);
        cfg.profile = Profile::Ordered;
        r.merge(explore(&w, &cfg));
    }
    assert_eq!(r.violation_count, 0);
}

fn bug(copy: bool, bug: FlushBug) -> Update {
    Update {
        level: Level::Durable,
        copy,
        bugs: FlushBugs::one(bug),
    }
}

#[test]
fn planted_backup_no_dir_sync_is_caught() {
    let r = run(&bug(false, FlushBug::BackupNoDirSync), 0..20, false);
    // The replace survived, the backup of what it replaced did not.
    assert!(
        r.caught("instead of the version it replaced"),
        "{}",
        r.summary()
    );
}

#[test]
fn planted_backup_copy_no_sync_is_caught() {
    let r = run(&bug(true, FlushBug::BackupCopyNoSync), 0..20, false);
    // The backup (`NAME~`) holds no complete version.
    assert!(r.caught("~: holds"), "{}", r.summary());
}

#[test]
fn planted_replace_bugs_are_caught_through_update() {
    for (w, kind) in [
        (bug(false, FlushBug::NoFileSync), "holds 0 bytes"),
        (
            bug(false, FlushBug::NoDirSync),
            "but only these are allowed",
        ),
    ] {
        let r = run(&w, 0..10, false);
        assert!(r.caught(kind), "{}: {}", w.name(), r.summary());
    }
    let r = run(&bug(false, FlushBug::RetryFsync), 0..1, true);
    assert!(r.caught("but the operation returned Ok"), "{}", r.summary());
}

/// btrfs's directory-flush race (see `Profile::BtrfsDirRace`).
#[test]
fn updates_with_backups_survive_btrfs_dir_race() {
    for copy in [false, true] {
        let r = run_on(
            &update(Level::Durable, copy),
            0..8,
            Profile::BtrfsDirRace,
            false,
        );
        assert_eq!(r.violation_count, 0);
        assert!(r.distinct.len() > 500);
    }
}

#[test]
fn updates_with_backups_pass_every_fault_on_btrfs() {
    let r = run_on(
        &update(Level::Durable, false),
        0..1,
        Profile::BtrfsDirRace,
        true,
    );
    assert_eq!(r.violation_count, 0);
    assert!(r.faults_injected > 50);
}
