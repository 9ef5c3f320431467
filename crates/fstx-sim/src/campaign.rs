//! Campaigns: many explorations — every fault at every call, many seeds, on
//! several threads — with their figures merged.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use crate::explore::{explore, Config, Report, Workload};
use crate::fault::{CallKind, Fault};
use crate::history::History;

/// Runs `workload` once without crashes under `cfg`'s seed, profile and
/// kernel, and counts its calls by kind (they matter: on "btrfs" the
/// protocols call `syncfs` where they flush a directory elsewhere, and the
/// kernel decides how transactions flush).
pub fn count_calls(workload: &dyn Workload, cfg: &Config) -> BTreeMap<CallKind, u64> {
    let fs = cfg.boot();
    let mut history = History::default();
    workload.setup(cfg.seed, &fs, &mut history);
    workload.run(cfg.seed, &fs, &mut history);
    fs.counts()
}

/// Every single fault worth injecting into a run of `workload` under `cfg`:
/// each fault kind of each call kind, at each of its calls.
pub fn all_faults(workload: &dyn Workload, cfg: &Config) -> Vec<Fault> {
    let mut out = Vec::new();
    for (kind, count) in count_calls(workload, cfg) {
        for nth in 1..=count {
            for &error in kind.faults() {
                out.push(Fault { kind, nth, error });
            }
        }
    }
    out
}

/// Explores `workload` with `base` (no faults), then once with each fault of
/// [`all_faults`] armed; merges the reports.
pub fn with_every_fault(workload: &dyn Workload, base: &Config) -> Report {
    let started = Instant::now();
    let mut report = explore(workload, base);
    for fault in all_faults(workload, base) {
        let mut cfg = base.clone();
        cfg.faults = vec![fault];
        report.merge(explore(workload, &cfg));
    }
    report.elapsed = started.elapsed();
    report
}

/// Explores `workload` once with each file flush of a run lying (see
/// [`FaultError::Lie`](crate::fault::FaultError::Lie)): `sync#1:lie`,
/// `sync#2:lie`, ... Directory flushes among them do not lie (those runs
/// repeat the plain exploration's states, which are counted once).
pub fn lying_flushes(workload: &dyn Workload, base: &Config) -> Report {
    let started = Instant::now();
    let syncs = count_calls(workload, base)
        .get(&CallKind::Sync)
        .copied()
        .unwrap_or(0);
    let mut report = Report::default();
    for nth in 1..=syncs {
        let mut cfg = base.clone();
        cfg.faults = vec![Fault {
            kind: CallKind::Sync,
            nth,
            error: crate::fault::FaultError::Lie,
        }];
        report.merge(explore(workload, &cfg));
    }
    report.elapsed = started.elapsed();
    report
}

/// Runs `each(seed)` for every seed in `seeds` on `threads` threads and
/// merges the reports (elapsed is wall time).
pub fn parallel(
    seeds: std::ops::Range<u64>,
    threads: usize,
    each: &(dyn Fn(u64) -> Report + Sync),
) -> Report {
    let started = Instant::now();
    let next = AtomicU64::new(seeds.start);
    let total = Mutex::new(Report::default());
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| {
                let mut mine = Report::default();
                loop {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= seeds.end {
                        break;
                    }
                    mine.merge(each(seed));
                }
                total
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .merge(mine);
            });
        }
    });
    let mut report = total
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    report.elapsed = started.elapsed();
    report
}
