//! Crash and fault checks of multi-file transactions.

mod common;
use fstx::txn::Flush;
use fstx_sim::bugs::{FlushBug, FlushBugs};
use fstx_sim::workloads::txn::Txn;
use fstx_sim::{campaign, explore, Config, Kernel, Profile, Report, Workload};

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

/// Transactions with per-file flushes in order (the strategy the planted
/// flush bugs need; `Flush::Auto` is tested on its own below).
fn serial() -> Txn {
    Txn {
        flush: Flush::Serial,
        ..Txn::default()
    }
}

fn bug(bug: FlushBug) -> Txn {
    Txn {
        flush_bugs: FlushBugs::one(bug),
        ..serial()
    }
}

const SYNCFS: Txn = Txn {
    #[cfg(feature = "planted-bugs")]
    bugs: fstx::TxnBugs {
        trust_staged: false,
        replay_retired: false,
        sweep_staging_first: false,
        retire_before_dir_flush: false,
        refuse_lost_data: false,
    },
    flush_bugs: FlushBugs::NONE,
    flush: Flush::SyncFs,
    wide: false,
    verified: false,
};

/// The real default on Linux >= 5.8: one syncfs per flush round.
#[test]
fn transactions_with_syncfs_pass_every_crash_state_and_fault() {
    let r = run(&SYNCFS, 0..6, false);
    assert_eq!(r.violation_count, 0);
    let r = run(&SYNCFS, 0..1, true);
    assert_eq!(r.violation_count, 0);
    assert!(r.faults_injected > 20);
}

#[test]
fn transactions_pass_every_crash_state() {
    let r = run(&serial(), 0..10, false);
    assert_eq!(r.violation_count, 0);
}

#[test]
fn transactions_pass_every_fault() {
    let r = run(&serial(), 0..1, true);
    assert_eq!(r.violation_count, 0);
    assert!(r.faults_injected > 100);
}

#[test]
fn stricter_profile_passes() {
    let mut r = Report::default();
    for seed in 0..6 {
        let mut cfg = Config::new(seed);
        cfg.profile = Profile::Ordered;
        r.merge(explore(&serial(), &cfg));
    }
    assert_eq!(r.violation_count, 0);
}

#[test]
fn planted_commit_before_data_flush_is_caught() {
    // Staged data flushed only once the first staged file is in place: a
    // crash can keep a rename and lose the data it installed.
    let r = run(&bug(FlushBug::CommitBeforeDataFlush), 0..20, false);
    assert!(
        r.caught("verify staged file") || r.caught("not the state after any allowed prefix"),
        "{}",
        r.summary()
    );
}

#[test]
fn planted_commit_before_data_write_is_caught() {
    let r = run(&bug(FlushBug::CommitBeforeDataWrite), 0..20, false);
    assert!(r.caught("verify staged file"), "{}", r.summary());
    let mut w = bug(FlushBug::CommitBeforeDataWrite);
    w.flush = Flush::SyncFs;
    let r = run(&w, 0..20, false);
    assert!(r.caught("verify staged file"), "{}", r.summary());
}

#[test]
fn planted_no_stage_dir_flush_is_caught() {
    // Staged files whose names were not durable: gone after the crash, a
    // rename of the same transaction applied (redo cannot tell a lost entry
    // from a file replaced since, and skips it: half applied).
    let r = run(&bug(FlushBug::NoStageDirFlush), 0..20, false);
    assert!(
        r.caught("not the state after any allowed prefix"),
        "{}",
        r.summary()
    );
}

fn lying(w: &dyn Workload, seeds: std::ops::Range<u64>) -> Report {
    let mut total = Report::default();
    let expect_violations = w.name().contains('+');
    for seed in seeds {
        let mut cfg = Config::new(seed);
        cfg.states_per_crash = 32;
        cfg.states_per_recovery_crash = 4;
        total.merge(campaign::lying_flushes(w, &cfg));
        if expect_violations && total.violation_count > 0 {
            break;
        }
    }
    println!("{} lying flushes: {}", w.name(), total.summary());
    for v in &total.violations {
        println!("{v}");
    }
    total
}

/// Every file flush lying in turn (outside the model: the data it was
/// told is durable can be lost or torn): recovery never installs damaged
/// data; it redoes, rolls back, or refuses with "does not match the journal".
#[test]
fn lying_flushes_never_make_recovery_install_damaged_data() {
    let r = lying(&serial(), 0..3);
    assert_eq!(r.violation_count, 0);
    assert!(r.faults_injected > 20);
}

/// Caught only with a lying flush: inside the model every staged file is
/// durable before the commit record, so redo never meets a damaged one.
/// Transactions whose recovery has one of the library's planted bugs.
#[cfg(feature = "planted-bugs")]
fn recovery_bug(f: impl FnOnce(&mut fstx::TxnBugs)) -> Txn {
    let mut bugs = fstx::TxnBugs::default();
    f(&mut bugs);
    Txn { bugs, ..serial() }
}

#[cfg(feature = "planted-bugs")]
#[test]
fn planted_trust_staged_is_caught() {
    let r = lying(&recovery_bug(|b| b.trust_staged = true), 0..4);
    assert!(r.violation_count > 0);
    assert!(r
        .violations
        .iter()
        .any(|v| v.message.contains("which no operation wrote")));
}

/// The planted variant: retirement not flushed, later transactions do not
/// flush `.fstx-txn/` either (so nothing else makes the retirement
/// durable), and recovery ignores sequence numbers.
#[cfg(feature = "planted-bugs")]
#[test]
fn planted_replay_retired_is_caught() {
    let r = run(&recovery_bug(|b| b.replay_retired = true), 0..20, false);
    assert!(r.violation_count > 0);
    assert!(r
        .violations
        .iter()
        .any(|v| v.message.contains("replayed the journal")));
}

#[cfg(feature = "planted-bugs")]
#[test]
fn planted_sweep_staging_first_is_caught() {
    // The committed transaction's staging is gone before redo: half applied.
    let r = run(
        &recovery_bug(|b| b.sweep_staging_first = true),
        0..20,
        false,
    );
    assert!(
        r.caught("not the state after any allowed prefix"),
        "{}",
        r.summary()
    );
}

/// Commit retires the journal before the touched directories are flushed:
/// the retirement can reach the disk before the renames, and a committed
/// transaction is lost (or half applied) with nothing left to redo it.
#[cfg(feature = "planted-bugs")]
#[test]
fn planted_retire_before_dir_flush_is_caught() {
    let r = run(
        &recovery_bug(|b| b.retire_before_dir_flush = true),
        0..20,
        false,
    );
    assert!(
        r.caught("not the state after any allowed prefix") || r.caught("leftover after recovery"),
        "{}",
        r.summary()
    );
}

/// Recovery refuses a commit record whose data did not reach the disk
/// although nothing of it was applied (what recovery did before the
/// one-round commit): a crash inside the commit round, an ordinary
/// outcome now, would lock the root.
#[cfg(feature = "planted-bugs")]
#[test]
fn planted_refuse_lost_data_is_caught() {
    let r = run(&recovery_bug(|b| b.refuse_lost_data = true), 0..20, false);
    assert!(r.caught("recovery failed"), "{}", r.summary());
    assert!(r.caught("verify staged file"), "{}", r.summary());
}

/// btrfs's directory-flush race (see `Profile::BtrfsDirRace`), with
/// per-file flushes and with syncfs rounds.
#[test]
fn transactions_survive_btrfs_dir_race() {
    for w in [serial(), SYNCFS, Txn::default()] {
        let r = run_on(&w, 0..8, Profile::BtrfsDirRace, false);
        assert_eq!(r.violation_count, 0);
        assert!(r.distinct.len() > 300);
    }
}

#[test]
fn transactions_pass_every_fault_on_btrfs() {
    let r = run_on(&serial(), 0..1, Profile::BtrfsDirRace, true);
    assert_eq!(r.violation_count, 0);
    assert!(r.faults_injected > 50);
}

/// The weak-filesystem check at `begin` also decides how directories are
/// flushed: a transaction identifies the filesystem once, on btrfs too.
#[test]
fn transaction_identifies_the_filesystem_once() {
    for profile in [Profile::Weak, Profile::BtrfsDirRace] {
        let fs = fstx_sim::SimFs::new(1);
        fs.set_profile(profile);
        fs.mkdir_p("/r").unwrap();
        let mut opts = fstx::TxnOptions::new();
        opts.storage(fs.clone());
        let mut txn = opts.begin("/r").unwrap();
        txn.write("a", b"new").unwrap();
        txn.commit().unwrap();
        let counts = fs.counts();
        assert_eq!(
            counts.get(&fstx_sim::CallKind::FsType),
            Some(&1),
            "{profile:?}"
        );
    }
}

/// Production's own flush choice (`Flush::Auto`: one `syncfs` per round
/// where the kernel reports its errors, per-file flushes before Linux 5.8)
/// under every simulated kernel, on ext4 and on btrfs: every crash state
/// and every fault at every call pass.
#[test]
fn auto_flush_passes_on_every_kernel() {
    for kernel in Kernel::ALL {
        for profile in [Profile::Weak, Profile::Btrfs] {
            let r = common::faults_on(&Txn::default(), 0..1, profile, kernel, None);
            assert_eq!(r.violation_count, 0, "{profile:?} {kernel:?}");
            assert!(r.faults_injected > 50, "{profile:?} {kernel:?}");
        }
    }
}

/// `Flush::Auto` decides by the kernel: told it runs on a current kernel,
/// a transaction on Linux 5.4 flushes its staged files with one `syncfs`,
/// whose failure that kernel does not report, and commits data it lost.
#[test]
fn planted_auto_flush_for_the_wrong_kernel_is_caught() {
    let r = common::faults_on(
        &Txn::default(),
        0..10,
        Profile::Weak,
        Kernel::Linux5_4,
        Some(Kernel::Current),
    );
    // Committed with its staged data lost: recovery refuses, or a staged
    // file outlives its transaction.
    assert!(
        r.caught("verify staged file") || r.caught("leftover after recovery"),
        "{}",
        r.summary()
    );
    assert!(
        r.violations.iter().all(|v| v
            .faults
            .iter()
            .any(|f| f.kind == fstx_sim::CallKind::SyncFs)),
        "expected violations after a failed syncfs only"
    );
}

/// What `Flush::Auto` issues per kernel: `syncfs` rounds from Linux 5.8,
/// per-file flushes before.
#[test]
fn auto_flush_follows_the_kernel() {
    for (kernel, syncfs) in [
        (Kernel::Current, true),
        (Kernel::Linux5_10, true),
        (Kernel::Linux5_4, false),
    ] {
        let fs = fstx_sim::SimFs::new(1);
        fs.set_kernel(kernel);
        fs.mkdir_p("/r").unwrap();
        let mut opts = fstx::TxnOptions::new();
        opts.storage(fs.clone());
        let mut txn = opts.begin("/r").unwrap();
        for name in ["a", "b", "c"] {
            txn.write(name, b"new").unwrap();
        }
        txn.commit().unwrap();
        let counts = fs.counts();
        let get = |k| counts.get(&k).copied().unwrap_or(0);
        assert_eq!(get(fstx_sim::CallKind::SyncFs) > 0, syncfs, "{kernel:?}");
        // Per-file rounds flush each of the three staged files.
        assert_eq!(get(fstx_sim::CallKind::Sync) >= 3, !syncfs, "{kernel:?}");
    }
}

/// Wider transactions (twelve paths, up to six operations each, the big
/// run's main budget): every crash state passes.
#[test]
fn wide_transactions_pass_every_crash_state() {
    let w = Txn {
        wide: true,
        ..serial()
    };
    let r = run(&w, 0..10, false);
    assert_eq!(r.violation_count, 0);
    assert!(r.protocol_distinct.len() > 1_000, "{}", r.summary());
}

/// Verified transactions (every written file sealed): every crash state
/// and every fault passes, with the checks comparing exact envelopes and
/// every tracked file reading back through `fstx::read` as the payload it
/// holds (see the workload's docs).
#[test]
fn verified_transactions_pass_every_crash_state_and_fault() {
    for flush in [Flush::Serial, Flush::SyncFs] {
        let w = Txn {
            flush,
            verified: true,
            ..serial()
        };
        assert_eq!(
            w.name(),
            fstx_sim::workloads::by_name(&w.name()).unwrap().name()
        );
        let r = run(&w, 0..16, false);
        assert_eq!(r.violation_count, 0);
        assert!(r.protocol_distinct.len() > 500, "{}", r.summary());
    }
    let w = Txn {
        verified: true,
        ..serial()
    };
    let r = run(&w, 0..1, true);
    assert_eq!(r.violation_count, 0);
    assert!(r.faults_injected > 20);
}
