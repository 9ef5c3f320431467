//! The workloads: fstx's protocols driven on the simulator, with what they
//! promise recorded for the checks.

pub mod record;
pub mod replace;
pub mod txn;
pub mod update;
pub mod verified;

use crate::explore::Workload;
use crate::rng::Rng;

/// The workload with this [`name`](Workload::name), for replay.
pub fn by_name(name: &str) -> Option<Box<dyn Workload>> {
    if let Some(w) = replace::parse(name) {
        return Some(Box::new(w));
    }
    if let Some(w) = update::parse(name) {
        return Some(Box::new(w));
    }
    if let Some(w) = verified::parse(name) {
        return Some(Box::new(w));
    }
    if let Some(w) = record::parse(name) {
        return Some(Box::new(w));
    }
    if let Some(w) = txn::parse(name) {
        return Some(Box::new(w));
    }
    None
}

/// Random content starting with `tag:` (so that every version is unique),
/// mostly short, sometimes a few kilobytes; never contains a zero byte.
pub(crate) fn content(r: &mut Rng, tag: &str) -> Vec<u8> {
    let len = match r.below(10) {
        0..=4 => 1 + r.below(16),
        5..=8 => 17 + r.below(300),
        _ => 1000 + r.below(4000),
    };
    let mut c = format!("{tag}:").into_bytes();
    c.extend(r.bytes(len));
    c
}

/// How an fstx call ended, as the checks need it.
pub(crate) type CallResult = Result<(), (fstx::State, std::io::Error)>;

/// Maps a call's result to what it promised.
pub(crate) fn outcome_of(
    result: &CallResult,
    durability: fstx::Durability,
) -> crate::history::Outcome {
    use crate::history::Outcome;
    use fstx::State;
    match result {
        Ok(()) => match durability {
            fstx::Durability::Durable => Outcome::Durable,
            fstx::Durability::Consistent => Outcome::Consistent,
            fstx::Durability::None => Outcome::NoPromise,
        },
        Err((State::NotCommitted | State::NotCommittedTempLeft { .. }, _)) => Outcome::NotCommitted,
        Err((State::CommittedNotDurable, _)) => Outcome::CommittedNotDurable,
        Err((State::CommittedPendingRecovery, _)) => Outcome::CommittedPendingRecovery,
    }
}

/// Checks, right after operation `op` returned, that the live tree is as
/// its result says, that no temporary file is left unless the error said so,
/// and that every fault injected during it reached the caller as itself.
pub(crate) fn live_checks(
    fs: &crate::SimFs,
    history: &mut crate::history::History,
    op: usize,
    result: &CallResult,
    before: &dyn Fn(&std::path::Path) -> Option<Vec<u8>>,
    temp_left: &mut bool,
) {
    use crate::history::Outcome;
    let label = history.ops[op].label.clone();
    let outcome = history.ops[op].outcome.clone();
    let (start, end) = (history.ops[op].start, history.ops[op].end);
    if let Err((fstx::State::NotCommittedTempLeft { .. }, _)) = result {
        *temp_left = true;
    }
    let live = fs.live();
    for (path, content) in history.ops[op].writes.clone() {
        let now = live.read(&path);
        let old = before(&path);
        let expect = match outcome {
            Outcome::NotCommitted => old.as_deref(),
            // Readers see the old tree until recovery finishes it.
            Outcome::CommittedPendingRecovery => continue,
            _ => content.as_deref(),
        };
        if now != expect {
            history.live_violations.push(format!(
                "{label} returned {outcome:?} ({:?}), but the live file {} holds {}",
                result.as_ref().err().map(|e| e.1.to_string()),
                path.display(),
                now.map_or_else(|| "nothing".into(), crate::tree::describe)
            ));
        }
    }
    // A transaction that committed but could not be applied keeps its
    // staging until recovery (the next transaction's `begin`) finishes it.
    let pending = matches!(result, Err((fstx::State::CommittedPendingRecovery, _)));
    if !*temp_left && !pending {
        for (p, _) in live.walk() {
            if p.file_name().is_some_and(|n| {
                matches!(
                    fstx::internal_name(n),
                    Some(fstx::InternalName::Temp | fstx::InternalName::Staged)
                )
            }) {
                history.live_violations.push(format!(
                    "{label} returned {outcome:?} but left {}",
                    p.display()
                ));
            }
        }
    }
    let swallowed = fs.swallowed();
    for (call, fault) in fs.injected() {
        // A failure the kernel hides cannot be reported (what it may cost
        // is checked in the crash states).
        if call <= start || call > end || swallowed.contains(&call) {
            continue;
        }
        let Some(errno) = fault.error.errno() else {
            continue;
        };
        if fault.error == crate::fault::FaultError::Eintr {
            continue;
        }
        match result {
            Ok(()) => history.live_violations.push(format!(
                "{label}: injected {fault} at call {call}, but the operation returned Ok"
            )),
            Err((_, e)) if e.raw_os_error() != Some(errno.raw_os_error()) => {
                history.live_violations.push(format!(
                    "{label}: injected {fault} at call {call}, but the error was {e}"
                ));
            }
            Err(_) => {}
        }
    }
}
