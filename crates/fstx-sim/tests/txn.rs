//! Crash and fault checks of multi-file transactions.

use fstx::TxnBugs;
use fstx_sim::workloads::txn::Txn;
use fstx_sim::{campaign, explore, Config, Profile, Report, Workload};

fn run(w: &dyn Workload, seeds: std::ops::Range<u64>, faults: bool) -> Report {
    let mut total = Report::default();
    for seed in seeds {
        let cfg = Config::new(seed);
        total.merge(if faults {
            campaign::with_every_fault(w, &cfg)
        } else {
            explore(w, &cfg)
        });
    }
    println!("{}: {}", w.name(), total.summary());
    for v in &total.violations {
        println!("{v}");
    }
    total
}

fn bug(f: impl FnOnce(&mut TxnBugs)) -> Txn {
    let mut bugs = TxnBugs::default();
    f(&mut bugs);
    Txn { bugs }
}

#[test]
fn transactions_pass_every_crash_state() {
    let r = run(&Txn::default(), 0..20, false);
    assert_eq!(r.violation_count, 0);
}

/// Finds a bug in fstx transactions (see `known_bug_control_dir_entry_not_flushed`).
#[test]
#[ignore = "finds a bug in fstx txn: a control directory created by a failed begin is never flushed into the root"]
fn transactions_pass_every_fault() {
    let r = run(&Txn::default(), 0..1, true);
    assert_eq!(r.violation_count, 0);
    assert!(r.faults_injected > 100);
}

#[test]
fn stricter_profile_passes() {
    let mut r = Report::default();
    for seed in 0..10 {
        let mut cfg = Config::new(seed);
        cfg.profile = Profile::Ordered;
        r.merge(explore(&Txn::default(), &cfg));
    }
    assert_eq!(r.violation_count, 0);
}

#[test]
fn planted_commit_before_data_flush_is_caught() {
    assert!(run(&bug(|b| b.commit_before_data_flush = true), 0..20, false).violation_count > 0);
}

#[test]
fn planted_no_stage_dir_flush_is_caught() {
    assert!(run(&bug(|b| b.no_stage_dir_flush = true), 0..20, false).violation_count > 0);
}

/// Not caught: with every staged file flushed before the commit record, the
/// weak model never produces a staged file that fails its checksum; only
/// media corruption (outside the model) or another bug would.
#[test]
#[ignore = "not caught by the simulator: needs corruption of flushed data, outside the model"]
fn planted_trust_staged_is_caught() {
    assert!(run(&bug(|b| b.trust_staged = true), 0..20, false).violation_count > 0);
}

/// Not caught yet: the transaction mixes never leave a stale `journal` name
/// durable beside a later transaction's applied changes.
#[test]
#[ignore = "not caught by the current transaction workload"]
fn planted_replay_retired_is_caught() {
    assert!(run(&bug(|b| b.replay_retired = true), 0..20, false).violation_count > 0);
}

#[test]
fn planted_sweep_staging_first_is_caught() {
    assert!(run(&bug(|b| b.sweep_staging_first = true), 0..20, false).violation_count > 0);
}

/// A bug in fstx transactions found by the simulator: the first `begin`
/// creates `.fstx-txn/` (mkdir) and then fails (EIO opening it). The next
/// `begin` finds the directory, writes and flushes its journal and
/// `.fstx-txn/`, and stages a file in the root — but never flushes the root,
/// so the control directory's own entry is not durable. A power cut can keep
/// the staged file's entry and lose `.fstx-txn`: recovery then finds no
/// control directory and leaves the staged file behind for ever.
///
/// When fstx fixes it this test fails: then delete it and un-ignore
/// `transactions_pass_every_fault`.
#[test]
fn known_bug_control_dir_entry_not_flushed() {
    let mut cfg = Config::new(0);
    cfg.faults = vec![fstx_sim::Fault::parse("open_dir#3:eio").expect("fault")];
    let r = explore(&Txn::default(), &cfg);
    assert!(r.violation_count > 0, "fixed? see the doc comment");
}
