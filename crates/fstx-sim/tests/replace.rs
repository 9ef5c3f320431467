//! Crash and fault checks of the single-file replace protocol.

mod common;
use fstx_sim::bugs::{FlushBug, FlushBugs};
use fstx_sim::workloads::replace::{Level, Replace};
use fstx_sim::{campaign, explore, Config, Kernel, Profile, Report, Workload};

fn run(w: &dyn Workload, seeds: std::ops::Range<u64>, profile: Profile, faults: bool) -> Report {
    let expect_violations = w.name().contains('+');
    let mut total = Report::default();
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

fn replace(level: Level) -> Replace {
    Replace {
        level,
        bugs: FlushBugs::NONE,
        handle: false,
    }
}

fn through_handles(level: Level) -> Replace {
    Replace {
        handle: true,
        ..replace(level)
    }
}

fn bug(bug: FlushBug) -> Replace {
    Replace {
        level: Level::Durable,
        bugs: FlushBugs::one(bug),
        handle: false,
    }
}

#[test]
fn durable_replace_passes_every_crash_state() {
    let r = run(&replace(Level::Durable), 0..20, Profile::Weak, false);
    assert_eq!(r.violation_count, 0);
    assert!(r.distinct.len() > 500);
}

#[test]
fn consistent_and_unsynced_replaces_keep_their_weaker_promises() {
    for level in [Level::Consistent, Level::None, Level::Mixed] {
        let r = run(&replace(level), 0..10, Profile::Weak, false);
        assert_eq!(r.violation_count, 0);
    }
}

#[test]
fn stricter_profiles_pass() {
    for profile in [Profile::Ordered, Profile::Prefix] {
        let r = run(&replace(Level::Mixed), 0..15, profile, false);
        assert_eq!(r.violation_count, 0);
    }
}

#[test]
fn every_fault_at_every_call_passes() {
    let r = run(&replace(Level::Mixed), 0..3, Profile::Weak, true);
    assert_eq!(r.violation_count, 0);
    assert!(r.faults_injected > 100);
}

/// The same replaces through `fstx::Dir` handles kept open across
/// replaces (the handle's cached filesystem type, its group-commit flush,
/// a failed flush final for the handle): every crash state, every fault.
#[test]
fn replaces_through_directory_handles_pass_every_crash_state() {
    let r = run(
        &through_handles(Level::Durable),
        0..20,
        Profile::Weak,
        false,
    );
    assert_eq!(r.violation_count, 0);
    assert!(r.distinct.len() > 500);
    let r = run(
        &through_handles(Level::Mixed),
        0..10,
        Profile::BtrfsDirRace,
        false,
    );
    assert_eq!(r.violation_count, 0);
}

#[test]
fn replaces_through_directory_handles_pass_every_fault_at_every_call() {
    let r = run(&through_handles(Level::Mixed), 0..3, Profile::Weak, true);
    assert_eq!(r.violation_count, 0);
    assert!(r.faults_injected > 100);
}

#[test]
fn planted_no_dir_sync_through_a_handle_is_caught() {
    let w = Replace {
        handle: true,
        ..bug(FlushBug::NoDirSync)
    };
    let r = run(&w, 0..10, Profile::Weak, false);
    assert!(r.caught("but only these are allowed"), "{}", r.summary());
}

#[test]
fn planted_no_file_sync_is_caught() {
    let r = run(&bug(FlushBug::NoFileSync), 0..10, Profile::Weak, false);
    // The data never reached the disk: an empty file after an acknowledged replace.
    assert!(r.caught("holds 0 bytes"), "{}", r.summary());
}

#[test]
fn planted_no_file_sync_is_not_caught_by_ordered_profile() {
    // ext4 data=ordered writes data before the metadata that names it: the
    // bug is invisible there, which is why the weak model is the default.
    let r = run(&bug(FlushBug::NoFileSync), 0..10, Profile::Ordered, false);
    assert_eq!(r.violation_count, 0);
}

#[test]
fn planted_no_dir_sync_is_caught() {
    let r = run(&bug(FlushBug::NoDirSync), 0..10, Profile::Weak, false);
    // The rename was lost: an older complete version after the acknowledgement.
    assert!(r.caught("but only these are allowed"), "{}", r.summary());
    assert!(!r.caught("holds 0 bytes"), "the data itself was flushed");
}

#[test]
fn planted_retry_fsync_is_caught() {
    let r = run(&bug(FlushBug::RetryFsync), 0..2, Profile::Weak, true);
    // The failed flush was retried into a success.
    assert!(r.caught("but the operation returned Ok"), "{}", r.summary());
}

/// btrfs's directory-flush race (see `Profile::BtrfsDirRace`): a directory
/// fsync that persists nothing. fstx flushes directories on btrfs with
/// `syncfs`, which commits the btrfs transaction, so durable replaces hold.
#[test]
fn durable_replace_survives_btrfs_dir_race() {
    let r = run(&replace(Level::Mixed), 0..15, Profile::BtrfsDirRace, false);
    assert_eq!(r.violation_count, 0);
    assert!(r.distinct.len() > 300);
}

#[test]
fn planted_no_btrfs_commit_is_caught() {
    let r = run(
        &bug(FlushBug::NoBtrfsCommit),
        0..10,
        Profile::BtrfsDirRace,
        false,
    );
    // The rename was lost: an older complete version after the acknowledgement.
    assert!(r.caught("but only these are allowed"), "{}", r.summary());
}

/// On "btrfs" the directory flush is a `syncfs`: every fault there (and at
/// every other call) is reported with its errno and the right state.
#[test]
fn every_fault_at_every_call_passes_on_btrfs() {
    let r = run(&replace(Level::Mixed), 0..2, Profile::BtrfsDirRace, true);
    assert_eq!(r.violation_count, 0);
    assert!(r.faults_injected > 50);
}

/// The weak-filesystem check's `fstatfs` also decides how the directory is
/// flushed: a durable replace identifies the filesystem once, on btrfs too.
#[test]
fn durable_replace_identifies_the_filesystem_once() {
    for profile in [Profile::Weak, Profile::BtrfsDirRace] {
        let fs = fstx_sim::SimFs::new(1);
        fs.set_profile(profile);
        fs.mkdir_p("/d").unwrap();
        fstx::Options::new()
            .storage(fs.clone())
            .write("/d/f", b"new")
            .unwrap();
        let counts = fs.counts();
        assert_eq!(
            counts.get(&fstx_sim::CallKind::FsType),
            Some(&1),
            "{profile:?}"
        );
        let syncfs = counts
            .get(&fstx_sim::CallKind::SyncFs)
            .copied()
            .unwrap_or(0);
        assert_eq!(
            syncfs,
            u64::from(profile == Profile::BtrfsDirRace),
            "{profile:?}"
        );
    }
}

/// Before Linux 5.17 a failed btrfs transaction commit makes `syncfs`
/// return success, so there the directory flush is an `fsync` (whose
/// error is reported) and then the `syncfs`. Every fault at every call,
/// on "btrfs" under each kernel: nothing acknowledged is lost.
#[test]
fn durable_replace_passes_every_fault_on_btrfs_under_every_kernel() {
    for kernel in Kernel::ALL {
        let r = common::faults_on(&replace(Level::Durable), 0..2, Profile::Btrfs, kernel, None);
        assert_eq!(r.violation_count, 0, "Linux {}", kernel.name());
        assert!(r.faults_injected > 30, "Linux {}", kernel.name());
    }
}

/// The pre-5.17 btrfs path is what keeps it: a writer told it runs on a
/// current kernel (so it flushes the directory with `syncfs` alone) loses
/// an acknowledged replace on Linux 5.10 when that `syncfs`'s commit fails.
#[test]
fn planted_btrfs_flush_for_the_wrong_kernel_is_caught() {
    let r = common::faults_on(
        &replace(Level::Durable),
        0..10,
        Profile::Btrfs,
        Kernel::Linux5_10,
        Some(Kernel::Current),
    );
    assert!(
        r.violations
            .iter()
            .all(|v| v.message.contains("but only these are allowed")
                && v.faults
                    .iter()
                    .any(|f| f.kind == fstx_sim::CallKind::SyncFs)),
        "expected lost acknowledged replaces after a failed syncfs"
    );
}

/// On each kernel, the directory flush on btrfs is one `syncfs`, preceded
/// by a directory `fsync` before Linux 5.17.
#[test]
fn btrfs_directory_flush_follows_the_kernel() {
    for (kernel, fsyncs) in [
        (Kernel::Current, 1),
        (Kernel::Linux5_10, 2),
        (Kernel::Linux5_4, 2),
    ] {
        let fs = fstx_sim::SimFs::new(1);
        fs.set_profile(Profile::Btrfs);
        fs.set_kernel(kernel);
        fs.mkdir_p("/d").unwrap();
        fstx::Options::new()
            .storage(fs.clone())
            .write("/d/f", b"new")
            .unwrap();
        let counts = fs.counts();
        let get = |k| counts.get(&k).copied().unwrap_or(0);
        assert_eq!(get(fstx_sim::CallKind::SyncFs), 1, "{kernel:?}");
        // The temporary file's fsync, and the directory's before 5.17.
        assert_eq!(get(fstx_sim::CallKind::Sync), fsyncs, "{kernel:?}");
    }
}

/// Metadata is checked in every crash state where content is: a replace
/// that gives the new file its mode and xattrs only after the rename (not
/// flushed with the data) leaves the new content with the temporary
/// file's mode after a power cut.
#[test]
fn planted_meta_after_rename_is_caught() {
    let r = run(&bug(FlushBug::MetaAfterRename), 0..10, Profile::Weak, false);
    assert!(r.caught("but its metadata is"), "{}", r.summary());
}
