//! Explaining a violation: shrink its crash state to a minimal cause
//! ([`crate::shrink`]), then name the writes that make the difference in
//! files and inodes ([`crate::blockmap`]), in one sentence.
//!
//! The writes are named on the recovered image (mounted once, so the journal
//! or log is replayed) of the minimal state with every volatile write kept
//! and the late writes landed: there the lost blocks still have their owners.
//! Everything runs on one replay stack per configuration, after the states
//! were checked.

use std::fmt::Write as _;
use std::io;
use std::sync::Arc;
use std::time::Instant;

use crate::blockmap::{self, Range};
use crate::log::{Log, Record};
use crate::replay::StateSpec;
use crate::run::{check_one, Config, Slot, Verdict, Violation};
use crate::shrink::{shrink, volatile_at, Shrunk, BUDGET};
use crate::stack::{flush_buffers, FsConfig};

/// Violations explained per configuration unless told otherwise.
pub const DEFAULT_EXPLAIN: usize = 5;

/// The disk range of record `rec` and its bytes.
fn range_of(log: &Log, rec: u32) -> Option<Range<'_>> {
    match log.records[rec as usize] {
        Record::Write { off, len, data } => Some(Range {
            off,
            len,
            bytes: Some(&log.data[data as usize..(data + len) as usize]),
        }),
        Record::Zero { off, len } => Some(Range {
            off,
            len,
            bytes: None,
        }),
        _ => None,
    }
}

/// Names the writes `recs` on the recovered image of the shrunk state with
/// every volatile write kept and the late writes landed too, served by
/// `slot`. A block nothing owns there (data written before the metadata
/// that allocates it) is named again on the image at the end of the log.
fn name_writes(
    cfg: &Config,
    fs: FsConfig,
    slot: &mut Slot,
    log: &Log,
    shrunk: &Shrunk,
    recs: &[u32],
) -> Vec<String> {
    let point = shrunk.spec.point;
    let mut keep = volatile_at(log, point);
    keep.extend(&shrunk.late);
    keep.sort_unstable();
    let full = StateSpec {
        point,
        keep,
        torn: None,
        lie: None,
    };
    let mut names = describe_on(cfg, fs, slot, log, &full, recs);
    let unowned = |n: &String| {
        [
            "free in the recovered image",
            "owned by no inode",
            "no file refers to it",
        ]
        .iter()
        .any(|m| n.contains(m))
    };
    let again: Vec<usize> = (0..names.len()).filter(|&i| unowned(&names[i])).collect();
    if !again.is_empty() {
        let end = log.records.len();
        let last = StateSpec {
            point: end,
            keep: volatile_at(log, end),
            torn: None,
            lie: None,
        };
        let recs_again: Vec<u32> = again.iter().map(|&i| recs[i]).collect();
        let later = describe_on(cfg, fs, slot, log, &last, &recs_again);
        for (&i, l) in again.iter().zip(later) {
            if !unowned(&l) {
                names[i] = format!("{} (at the end of the recording: {l})", names[i]);
            }
        }
    }
    names
}

/// Describes `recs` on the image of `spec`, mounted and unmounted first so
/// the journal is replayed (a state that does not mount is named as it is).
fn describe_on(
    cfg: &Config,
    fs: FsConfig,
    slot: &mut Slot,
    log: &Log,
    spec: &StateSpec,
    recs: &[u32],
) -> Vec<String> {
    let prepared = slot.switch_to(log, spec);
    if prepared.is_ok()
        && fs.has_fs()
        && slot
            .stack
            .mount(fs.fstype(), fs.replay_options(), cfg.timeout)
            .is_ok()
    {
        if slot.stack.unmount(cfg.timeout).is_err() {
            // Still mounted: the next check must not trust the cache.
            slot.last = None;
        }
        let _ = flush_buffers(&slot.stack.dev);
    }
    let ranges: Vec<Range<'_>> = recs.iter().filter_map(|&r| range_of(log, r)).collect();
    blockmap::describe(fs, &slot.stack.dev, &ranges)
}

/// "what at record R" for each write, the writes with the same name merged
/// ("at records 8, 12"), those naming a file first; at most `MAX` names.
fn list(names: &[String], recs: &[u32], verb: &str) -> String {
    const MAX: usize = 6;
    let mut merged: Vec<(&str, Vec<u32>)> = Vec::new();
    for (n, &r) in names.iter().zip(recs) {
        match merged.iter_mut().find(|(m, _)| *m == n.as_str()) {
            Some((_, rs)) => rs.push(r),
            None => merged.push((n, vec![r])),
        }
    }
    // A stable sort: writes that name a file (a quoted path) come first.
    merged.sort_by_key(|(n, _)| !n.contains('"'));
    let more = merged.len().saturating_sub(MAX);
    let mut parts: Vec<String> = merged
        .iter()
        .take(MAX)
        .map(|(n, rs)| {
            let rs: Vec<String> = rs.iter().map(u32::to_string).collect();
            let s = if rs.len() > 1 { "s" } else { "" };
            format!("{n} {verb} at record{s} {}", rs.join(", "))
        })
        .collect();
    if more > 0 {
        parts.push(format!("and {more} more writes"));
    }
    parts.join("; ")
}

/// The sentence for a shrunk state, given the names of its lost and
/// mattering kept writes (then of the torn and the corrupted write, if any).
pub fn sentence(original: &StateSpec, s: &Shrunk, lost: &[String], kept: &[String]) -> String {
    let mut t = String::new();
    let (kept, mut faults) = kept.split_at(s.kept_matter.len().min(kept.len()));
    if let (Some((r, _)), Some(name)) = (s.spec.torn, faults.first()) {
        let _ = write!(
            t,
            "torn: {name} written at record {r} (only some of its sectors reached the disk); "
        );
        faults = &faults[1..];
    }
    if let (Some((r, _)), Some(name)) = (s.spec.lie, faults.first()) {
        let _ = write!(
            t,
            "corrupted after it was flushed (lying flash): {name} written at record {r}; "
        );
    }
    if !s.late.is_empty() {
        t.push_str("lost (not yet written at the cut): ");
        t.push_str(&list(
            &lost[lost.len().min(s.lost.len())..],
            &s.late,
            "written later",
        ));
    } else if s.lost.is_empty() {
        t.push_str(
            "lost: nothing since the last flush (the state fails with every write issued before the cut)",
        );
    } else {
        t.push_str("lost: ");
        t.push_str(&list(lost, &s.lost, "written"));
    }
    if !s.kept_matter.is_empty() {
        t.push_str("; kept (losing it too makes the failure disappear): ");
        t.push_str(&list(kept, &s.kept_matter, "written"));
    }
    let _ = write!(
        t,
        ". Cut at record {} (minimal state {}",
        s.spec.point, s.spec
    );
    if s.spec != *original {
        let _ = write!(t, ", shrunk from {original}");
    }
    let plural = if s.checks == 1 { "" } else { "s" };
    let _ = write!(t, " in {} check{plural}", s.checks);
    if s.budget_hit {
        let _ = write!(
            t,
            "; the budget of {BUDGET} checks ran out, so it may not be minimal"
        );
    }
    if s.flaky {
        t.push_str("; the shrunk state passed when checked again, so this is the original state");
    }
    t.push_str(").");
    t
}

/// Explains `violations` of one configuration (the first `limit` of them)
/// on one replay stack. Never fails: a violation that cannot be explained
/// says why in its explanation.
pub fn explain_violations(
    cfg: &Config,
    fs: FsConfig,
    base: &Arc<Vec<u8>>,
    log: &Arc<Log>,
    violations: &mut [Violation],
    limit: usize,
) {
    if limit == 0 || violations.is_empty() {
        return;
    }
    if cfg.progress {
        let n = violations.len().min(limit);
        eprintln!("[{fs:<14}] explaining {n} violations (at most {BUDGET} checks each)");
    }
    let mut slot = match Slot::new(base, log) {
        Ok(slot) => slot,
        Err(e) => {
            for v in violations.iter_mut().take(limit) {
                v.explanation = Some(format!("not explained: no replay stack: {e}"));
            }
            return;
        }
    };
    let mut broken: Option<String> = None;
    for v in violations.iter_mut().take(limit) {
        // A failed check can leave the stack in any state (mounted, its
        // cache unknown): no later violation is explained on it.
        if let Some(why) = &broken {
            v.explanation = Some(format!("not explained: an earlier one failed ({why})"));
            continue;
        }
        let t = Instant::now();
        let text = match explain_one(cfg, fs, &mut slot, log, v) {
            Ok(text) => text,
            Err(e) => {
                broken = Some(e.to_string());
                format!("not explained: {e}")
            }
        };
        if std::env::var_os("POWERCUT_TIMING").is_some() {
            eprintln!(
                "[{fs:<14}] explained {} in {:.2}s",
                v.state,
                t.elapsed().as_secs_f64()
            );
        }
        v.explanation = Some(text);
    }
    let _ = slot.stack.teardown();
    // The checks made here are not the run's: keep them out of its timing.
    for ns in &crate::run::STAGE_NS {
        ns.store(0, std::sync::atomic::Ordering::Relaxed);
    }
}

fn explain_one(
    cfg: &Config,
    fs: FsConfig,
    slot: &mut Slot,
    log: &Log,
    v: &mut Violation,
) -> io::Result<String> {
    let original: StateSpec = v.state.parse().map_err(crate::stack::err)?;
    // Every candidate is fsck'ed: a sampled fsck would make "still fails"
    // depend on the sample.
    let every = Config {
        fsck_sample: 1,
        ..cfg.clone()
    };
    let shrunk = {
        let mut fails = |spec: &StateSpec| -> io::Result<bool> {
            Ok(matches!(
                check_one(&every, fs, slot, log, (spec, 0))?.0,
                Verdict::Fail { .. }
            ))
        };
        shrink(log, &original, BUDGET, &mut fails)?
    };
    let mut recs = shrunk.lost.clone();
    recs.extend(&shrunk.late);
    recs.extend(&shrunk.kept_matter);
    recs.extend(shrunk.spec.torn.map(|t| t.0));
    recs.extend(shrunk.spec.lie.map(|l| l.0));
    let names = name_writes(cfg, fs, slot, log, &shrunk, &recs);
    let n_lost = shrunk.lost.len() + shrunk.late.len();
    let (lost, kept) = names.split_at(n_lost.min(names.len()));
    if shrunk.spec != original {
        if let Some(r) = &v.replay {
            let minimal = r.replace(
                &format!("--state {original} "),
                &format!("--state {} ", shrunk.spec),
            );
            v.minimal_replay = Some(minimal);
        }
    }
    Ok(sentence(&original, &shrunk, lost, kept))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(point: usize, keep: &[u32]) -> StateSpec {
        StateSpec::kept(point, keep)
    }

    #[test]
    fn the_sentence_names_lost_and_kept_writes() {
        let s = Shrunk {
            spec: spec(64, &[63]),
            lost: vec![61],
            kept_matter: vec![63],
            late: vec![],
            checks: 12,
            budget_hit: false,
            flaky: false,
        };
        let t = sentence(
            &spec(70, &[63, 65]),
            &s,
            &["4 KiB data block 9 of \"/w4.dat\" (inode 14)".to_string()],
            &["4 KiB journal commit block of transaction 7".to_string()],
        );
        assert_eq!(
            t,
            "lost: 4 KiB data block 9 of \"/w4.dat\" (inode 14) written at record 61; \
             kept (losing it too makes the failure disappear): 4 KiB journal commit block \
             of transaction 7 written at record 63. Cut at record 64 (minimal state p64:k63, \
             shrunk from p70:k63,65 in 12 checks)."
        );
    }
}
