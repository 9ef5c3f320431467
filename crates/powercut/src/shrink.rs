//! Shrinking a failing crash state to a minimal cause.
//!
//! A crash state is a crash point plus the volatile writes (those since the
//! last flush) that survived. Starting from a failing state, the shrinker
//! 1. moves the crash point as early as it still fails, within the same
//!    flush epoch (the kept writes are those still issued before the new
//!    point, so the state stays one the disk can produce);
//! 2. minimises the set of *lost* volatile writes by delta debugging: losing
//!    only those (keeping every other volatile write) still fails;
//! 3. finds the most recent kept writes whose loss makes the failure go away;
//! 4. when nothing needs to be lost (the state fails with every write issued
//!    before the cut), finds the writes issued *after* the cut that would
//!    have healed it: typically file data that a missing fsync left
//!    unwritten while the metadata naming it was already committed;
//! 5. checks the final state once more: the report uses it only if it fails.
//!
//! Every candidate is checked like any other state (mount, recovery,
//! checker, unmount, fsck), within a budget of checks per violation; here
//! the check is any oracle, so the logic is tested without mounts.

use std::collections::HashMap;
use std::io;

use crate::log::{Log, Record};
use crate::replay::StateSpec;

/// Checks spent on one violation at most.
pub const BUDGET: usize = 150;
/// Kept writes tested one by one for whether they matter (most recent first).
const KEPT_TRIES: usize = 8;

/// The outcome of shrinking one failing state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shrunk {
    /// The minimal failing state (verified), or the original one.
    pub spec: StateSpec,
    /// Volatile writes the minimal state loses.
    pub lost: Vec<u32>,
    /// Kept writes whose loss makes the failure disappear.
    pub kept_matter: Vec<u32>,
    /// When nothing is lost: writes issued after the cut that, had they
    /// landed before it, make the state pass (data still unwritten).
    pub late: Vec<u32>,
    /// Checks made.
    pub checks: usize,
    /// The budget ran out before the search finished.
    pub budget_hit: bool,
    /// The final state passed when checked again (the failure is flaky);
    /// `spec` is then the original state.
    pub flaky: bool,
}

/// Index of the last flush record before `point`.
fn last_flush(log: &Log, point: usize) -> Option<usize> {
    log.records[..point]
        .iter()
        .rposition(|r| matches!(r, Record::Flush))
}

/// The volatile writes at `point`: the writes since the last flush.
pub fn volatile_at(log: &Log, point: usize) -> Vec<u32> {
    let from = last_flush(log, point).map_or(0, |f| f + 1);
    (from..point)
        .filter(|&i| log.records[i].range().is_some())
        .map(|i| i as u32)
        .collect()
}

/// An oracle with a budget and a memory: `Some(fails)` or None when the
/// budget is spent.
struct Oracle<'a> {
    fails: &'a mut dyn FnMut(&StateSpec) -> io::Result<bool>,
    seen: HashMap<StateSpec, bool>,
    checks: usize,
    budget: usize,
    hit: bool,
}

impl Oracle<'_> {
    fn test(&mut self, spec: &StateSpec) -> io::Result<Option<bool>> {
        if let Some(&f) = self.seen.get(spec) {
            return Ok(Some(f));
        }
        if self.checks >= self.budget {
            self.hit = true;
            return Ok(None);
        }
        self.checks += 1;
        let f = (self.fails)(spec)?;
        self.seen.insert(spec.clone(), f);
        Ok(Some(f))
    }
}

/// The state at `point` that keeps every volatile write but `lost`.
fn losing(log: &Log, like: &StateSpec, point: usize, lost: &[u32]) -> StateSpec {
    StateSpec {
        point,
        keep: volatile_at(log, point)
            .into_iter()
            .filter(|w| !lost.contains(w))
            .collect(),
        torn: like.torn,
        lie: like.lie,
    }
}

/// Whether a set of writes suffices (None: the budget is spent).
type Suffices<'a> = dyn Fn(&mut Oracle<'_>, &[u32]) -> io::Result<Option<bool>> + 'a;

/// A 1-minimal subset of `set` for which `suffices` holds (it holds for
/// `set`), by delta debugging; stops early, with a sufficient set, when the
/// budget runs out.
fn ddmin(o: &mut Oracle<'_>, mut set: Vec<u32>, suffices: &Suffices<'_>) -> io::Result<Vec<u32>> {
    if set.is_empty() || suffices(o, &[])? == Some(true) {
        return Ok(Vec::new());
    }
    let mut n = 2usize;
    'dd: while set.len() >= 2 {
        let size = set.len().div_ceil(n);
        let chunks: Vec<Vec<u32>> = set.chunks(size).map(<[u32]>::to_vec).collect();
        for c in &chunks {
            match suffices(o, c)? {
                Some(true) => {
                    set.clone_from(c);
                    n = 2;
                    continue 'dd;
                }
                Some(false) => {}
                None => break 'dd,
            }
        }
        if chunks.len() > 2 {
            for c in &chunks {
                let rest: Vec<u32> = set.iter().copied().filter(|w| !c.contains(w)).collect();
                match suffices(o, &rest)? {
                    Some(true) => {
                        set = rest;
                        n = (n - 1).max(2);
                        continue 'dd;
                    }
                    Some(false) => {}
                    None => break 'dd,
                }
            }
        }
        if n >= set.len() {
            break;
        }
        n = (2 * n).min(set.len());
    }
    Ok(set)
}

/// Writes after the cut that, had they reached the disk before it, make the
/// failing `spec` pass: the data a missing flush left unwritten. Searches
/// forward for the first later in-order state that passes, then minimises
/// the writes up to it that heal `spec` when added to it.
fn late_writes(o: &mut Oracle<'_>, log: &Log, spec: &StateSpec) -> io::Result<Vec<u32>> {
    let end = log.records.len();
    let prefix = |q: usize| StateSpec {
        point: q,
        keep: volatile_at(log, q),
        torn: None,
        lie: None,
    };
    let (mut bad, mut good, mut step) = (spec.point, None, 1);
    while bad < end {
        let q = (bad + step).min(end);
        match o.test(&prefix(q))? {
            Some(false) => {
                good = Some(q);
                break;
            }
            Some(true) => bad = q,
            None => return Ok(Vec::new()),
        }
        step *= 2;
    }
    let Some(mut good) = good else {
        return Ok(Vec::new());
    };
    while bad + 1 < good {
        let mid = bad + (good - bad) / 2;
        match o.test(&prefix(mid))? {
            Some(false) => good = mid,
            Some(true) => bad = mid,
            None => break,
        }
    }
    // A write whose sectors a later candidate all overwrites changes
    // nothing when added: leave it out without checking.
    let mut later: Vec<u32> = Vec::new();
    let mut covered: Vec<(u64, u64)> = Vec::new();
    for i in (spec.point..good).rev() {
        let Some((off, len)) = log.records[i].range() else {
            continue;
        };
        if !covered.iter().any(|&(o, l)| o <= off && off + len <= o + l) {
            later.push(i as u32);
        }
        covered.push((off, len));
    }
    later.reverse();
    // The state with `add` landed too (its marks stay those before the cut).
    let heals = |o: &mut Oracle<'_>, add: &[u32]| -> io::Result<Option<bool>> {
        let mut keep = spec.keep.clone();
        keep.extend_from_slice(add);
        keep.sort_unstable();
        let s = StateSpec {
            keep,
            ..spec.clone()
        };
        Ok(o.test(&s)?.map(|fails| !fails))
    };
    if later.is_empty() || heals(o, &later)? != Some(true) {
        return Ok(Vec::new());
    }
    // The shortest healing prefix first (cheap), then delta debugging in it.
    let (mut lo, mut hi) = (0, later.len());
    while lo + 1 < hi {
        let mid = lo + (hi - lo) / 2;
        match heals(o, &later[..mid])? {
            Some(true) => hi = mid,
            Some(false) => lo = mid,
            None => break,
        }
    }
    ddmin(o, later[..hi].to_vec(), &heals)
}

/// Shrinks the failing state `start` (see the module docs). `fails` checks
/// one state; at most `budget` states are checked, the final re-check
/// included.
pub fn shrink(
    log: &Log,
    start: &StateSpec,
    budget: usize,
    fails: &mut dyn FnMut(&StateSpec) -> io::Result<bool>,
) -> io::Result<Shrunk> {
    let mut o = Oracle {
        fails,
        seen: HashMap::new(),
        checks: 0,
        budget: budget.saturating_sub(1), // one is kept for the re-check
        hit: false,
    };
    o.seen.insert(start.clone(), true);
    let torn_rec = start.torn.map(|t| t.0);

    // 1. The earliest failing point of the epoch (bisection: failing is
    //    usually monotone within an epoch; every answer kept was checked).
    let epoch_start = last_flush(log, start.point).map_or(0, |f| f + 1);
    let mut lo = epoch_start.max(torn_rec.map_or(0, |t| t as usize + 1));
    let mut hi = start.point;
    let at = |p: usize| StateSpec {
        point: p,
        keep: start
            .keep
            .iter()
            .copied()
            .filter(|&k| (k as usize) < p)
            .collect(),
        torn: start.torn,
        lie: start.lie,
    };
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match o.test(&at(mid))? {
            Some(true) => hi = mid,
            Some(false) => lo = mid + 1,
            None => break,
        }
    }
    let point = hi;
    let kept = at(point).keep;

    // 2. ddmin over the lost writes (the torn write always stays kept).
    let lost: Vec<u32> = volatile_at(log, point)
        .into_iter()
        .filter(|w| !kept.contains(w))
        .collect();
    let test_lost = |o: &mut Oracle<'_>, l: &[u32]| -> io::Result<Option<bool>> {
        o.test(&losing(log, start, point, l))
    };
    let lost = ddmin(&mut o, lost, &test_lost)?;
    let spec = losing(log, start, point, &lost);

    // 3. The most recent kept writes whose loss makes it pass.
    let mut kept_matter = Vec::new();
    for &k in spec
        .keep
        .iter()
        .rev()
        .filter(|&&k| Some(k) != torn_rec)
        .take(KEPT_TRIES)
    {
        let mut l = lost.clone();
        l.push(k);
        match test_lost(&mut o, &l)? {
            Some(false) => kept_matter.push(k),
            Some(true) => {}
            None => break,
        }
    }
    kept_matter.sort_unstable();

    // 4. Nothing lost: which later writes were still missing at the cut.
    // (Not for a torn or corrupted write: that is the cause.)
    let late = if lost.is_empty() && start.torn.is_none() && start.lie.is_none() {
        late_writes(&mut o, log, &spec)?
    } else {
        Vec::new()
    };

    // 5. Check the final state again, outside the memory and the budget.
    let again = spec == *start || (o.fails)(&spec)?;
    let checks = o.checks + usize::from(spec != *start);
    Ok(if again {
        Shrunk {
            spec,
            lost,
            kept_matter,
            late,
            checks,
            budget_hit: o.hit,
            flaky: false,
        }
    } else {
        Shrunk {
            lost: volatile_at(log, start.point)
                .into_iter()
                .filter(|w| !start.keep.contains(w))
                .collect(),
            spec: start.clone(),
            kept_matter: Vec::new(),
            late: Vec::new(),
            checks,
            budget_hit: o.hit,
            flaky: true,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::explain::sentence;

    /// A log of `n` writes after one flush: records 0 (write), 1 (flush),
    /// then writes 2..2+n.
    fn log_with(n: usize) -> Log {
        let mut log = Log::default();
        log.push_write(0, &[0u8; 512]);
        log.records.push(Record::Flush);
        for i in 0..n {
            log.push_write(512 * (i as u64 + 1), &[1u8; 512]);
        }
        log
    }

    fn spec(point: usize, keep: &[u32]) -> StateSpec {
        StateSpec::kept(point, keep)
    }

    #[test]
    fn finds_the_one_lost_write_and_the_kept_one_that_matters() {
        // Fails when record 5 is lost while record 9 is kept ("data lost,
        // commit kept"), and only once record 9 was issued.
        let log = log_with(12);
        let mut calls = 0;
        let mut fails = |s: &StateSpec| -> io::Result<bool> {
            calls += 1;
            Ok(s.point > 9 && !s.keep.contains(&5) && s.keep.contains(&9))
        };
        let start = spec(14, &[2, 3, 9, 12]);
        let r = shrink(&log, &start, BUDGET, &mut fails).unwrap();
        assert_eq!(r.spec.point, 10, "the earliest failing point");
        assert_eq!(r.lost, vec![5]);
        assert_eq!(r.kept_matter, vec![9]);
        assert_eq!(r.spec.keep, vec![2, 3, 4, 6, 7, 8, 9]);
        assert!(!r.budget_hit && !r.flaky);
        assert!(calls <= 40, "{calls} checks");
    }

    #[test]
    fn finds_the_data_written_after_the_cut() {
        // Record 4 commits a rename, record 10 writes the file's data: a
        // state with 4 and without 10 fails (nothing before the cut is lost).
        let log = log_with(12);
        let mut fails = |s: &StateSpec| -> io::Result<bool> {
            Ok(s.keep.contains(&4) && !s.keep.contains(&10))
        };
        let r = shrink(&log, &spec(8, &[2, 3, 4, 5]), BUDGET, &mut fails).unwrap();
        assert_eq!(r.spec, spec(5, &[2, 3, 4]));
        assert!(r.lost.is_empty());
        assert_eq!(r.kept_matter, vec![4]);
        assert_eq!(r.late, vec![10]);
        let t = sentence(
            &spec(8, &[2, 3, 4, 5]),
            &r,
            &["4 KiB data block 7 of \"/f\" (inode 12)".to_string()],
            &["4 KiB journal commit block of transaction 3".to_string()],
        );
        assert!(
            t.starts_with(
                "lost (not yet written at the cut): 4 KiB data block 7 of \"/f\" (inode 12) \
                 written later at record 10; kept (losing it too makes the failure disappear): \
                 4 KiB journal commit block of transaction 3 written at record 4. Cut at record 5"
            ),
            "{t}"
        );
    }

    #[test]
    fn finds_a_pair_of_lost_writes() {
        // Fails only when both 4 and 7 are lost.
        let log = log_with(10);
        let mut fails = |s: &StateSpec| -> io::Result<bool> {
            Ok(!s.keep.contains(&4) && !s.keep.contains(&7) && s.point > 7)
        };
        let r = shrink(&log, &spec(12, &[]), BUDGET, &mut fails).unwrap();
        assert_eq!(r.spec.point, 8);
        assert_eq!(r.lost, vec![4, 7]);
        assert!(r.kept_matter.is_empty());
    }

    #[test]
    fn nothing_lost_when_keeping_everything_fails() {
        let log = log_with(4);
        let mut fails =
            |s: &StateSpec| -> io::Result<bool> { Ok(s.point >= 4 && s.keep.contains(&3)) };
        let r = shrink(&log, &spec(6, &[3]), BUDGET, &mut fails).unwrap();
        assert_eq!(r.spec, spec(4, &[2, 3]));
        assert!(r.lost.is_empty());
        // Losing record 3 makes the state pass: it matters.
        assert_eq!(r.kept_matter, vec![3]);
    }

    #[test]
    fn stops_at_the_budget_with_a_failing_state() {
        let log = log_with(40);
        let mut fails = |s: &StateSpec| -> io::Result<bool> {
            Ok((2..s.point as u32).filter(|w| !s.keep.contains(w)).count() >= 30)
        };
        let r = shrink(&log, &spec(42, &[]), 5, &mut fails).unwrap();
        assert!(r.budget_hit);
        assert!(r.checks <= 5);
        assert!(fails(&r.spec).unwrap());
        let text = sentence(&spec(42, &[]), &r, &[], &[]);
        assert!(text.contains("budget of 150 checks ran out"), "{text}");
    }

    #[test]
    fn a_flaky_result_falls_back_to_the_original() {
        let log = log_with(4);
        let mut n = 0;
        // Fails the first time it sees the smaller state, passes after.
        let mut fails = |s: &StateSpec| -> io::Result<bool> {
            if s.point == 6 {
                return Ok(true);
            }
            n += 1;
            Ok(n == 1 && s.point == 4)
        };
        let start = spec(6, &[2]);
        let r = shrink(&log, &start, BUDGET, &mut fails).unwrap();
        assert!(r.flaky);
        assert_eq!(r.spec, start);
        assert_eq!(r.lost, vec![3, 4, 5]);
    }
}
