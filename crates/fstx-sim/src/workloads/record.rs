//! Workload: a sequence of two-slot record writes (`fstx::RecordOptions`)
//! to one record file `/r/rec`, which exists before the workload (one or
//! both slots valid) or is created by the first write; values of random
//! length up to the record's largest (4 KiB and multi-page slots).
//!
//! The record file is not a tracked path (its bytes are slots, not a
//! version): the value is tracked under the pseudo path `/value-of/r/rec`,
//! so that crash images of the record file count as distinct states by
//! their bytes.
//!
//! Checks, reading the recovered image through `fstx::RecordOptions::read`
//! on a simulator booted from it: the value is the last acknowledged one or
//! one written after it (a write in flight, or one that failed after
//! writing); a record that existed, or whose creating write was
//! acknowledged, always reads. After a lying flush: the read still
//! succeeds, with a value some write wrote or the initial one ("a lying
//! flush can cost the newest value, never both").

use std::path::{Path, PathBuf};
use std::sync::Arc;

use fstx::formats::{slot_size_for, SlotHeader};
use fstx::storage::Storage;
use fstx::RecordOptions;

use crate::explore::Workload;
use crate::fs::SimFs;
use crate::history::{History, Outcome};
use crate::model::Profile;
use crate::rng::Rng;
use crate::tree::{describe, Tree};

/// The record file.
const TARGET: &str = "/r/rec";
/// Where the value is tracked (never a file).
const VALUE: &str = "/value-of/r/rec";

/// The record workload. See the [module docs](self).
#[derive(Debug, Clone, Copy, Default)]
pub struct Record {
    /// Planted bug: write into the slot holding the newest value.
    pub write_newest_slot: bool,
}

struct Plan {
    max: u64,
    /// Slots before the workload: (slot, seq, value).
    initial: Vec<(u16, u64, Vec<u8>)>,
    values: Vec<Vec<u8>>,
}

/// A value of at most `max` bytes: half the time any length up to `max`
/// (several sectors, for torn-sector states), else short.
fn value(r: &mut Rng, tag: &str, max: u64) -> Vec<u8> {
    let max = usize::try_from(max).unwrap_or(usize::MAX);
    let mut v = crate::workloads::content(r, tag);
    if r.one_in(2) {
        let len = r.below(max + 1);
        v.resize(len.max(v.len().min(max)), b'.');
        let extra = r.bytes(len.saturating_sub(v.len()));
        v.extend(extra);
    }
    v.truncate(max);
    v
}

impl Record {
    fn plan(seed: u64) -> Plan {
        let mut r = Rng::new(seed);
        let max = match r.below(3) {
            0 => 40,
            1 => 4000,
            _ => 6000,
        };
        let mut initial = Vec::new();
        match r.below(3) {
            0 => {}
            1 => initial.push((0, 1, value(&mut r, "init", max))),
            _ => {
                let newest = r.below(2) as u16;
                initial.push((1 - newest, 4, value(&mut r, "older", max)));
                initial.push((newest, 5, value(&mut r, "init", max)));
            }
        }
        let n = 2 + r.below(3);
        let values = (0..n)
            .map(|i| value(&mut r, &format!("v{i}"), max))
            .collect();
        Plan {
            max,
            initial,
            values,
        }
    }

    /// The record's bytes with the given slots.
    fn image(max: u64, slots: &[(u16, u64, Vec<u8>)]) -> Vec<u8> {
        let size = slot_size_for(max);
        let mut out = vec![0u8; usize::try_from(size * 2).expect("small")];
        for (slot, seq, v) in slots {
            let h = SlotHeader {
                slot: *slot,
                slot_size: size,
                max_len: max,
                seq: *seq,
                len: v.len() as u64,
                crc: crc32c::crc32c(v),
            };
            let at = usize::try_from(u64::from(*slot) * size).expect("small");
            out[at..at + 64].copy_from_slice(&h.encode());
            out[at + 64..at + 64 + v.len()].copy_from_slice(v);
        }
        out
    }

    fn options(self, storage: Arc<dyn Storage>) -> RecordOptions {
        let mut o = RecordOptions::new();
        o.storage(storage);
        #[cfg(feature = "planted-bugs")]
        o.planted_bugs(fstx::RecordBugs {
            write_newest_slot: self.write_newest_slot,
        });
        #[cfg(not(feature = "planted-bugs"))]
        let _ = self.write_newest_slot; // only the planted-bug build writes wrongly
        o
    }

    /// The value a reader gets from `tree` (booted as a simulator).
    fn read(self, tree: &Tree) -> Result<Vec<u8>, String> {
        let fs = SimFs::from_image(tree.clone(), 0, Profile::Weak);
        self.options(fs)
            .read(TARGET)
            .map(|v| v.value)
            .map_err(|e| e.to_string())
    }
}

/// Parses a workload name made by [`Record::name`](Workload::name).
pub fn parse(name: &str) -> Option<Record> {
    match name {
        "record" => Some(Record::default()),
        "record+write_newest_slot" => Some(Record {
            write_newest_slot: true,
        }),
        _ => None,
    }
}

impl Workload for Record {
    fn name(&self) -> String {
        if self.write_newest_slot {
            "record+write_newest_slot".into()
        } else {
            "record".into()
        }
    }

    fn setup(&self, seed: u64, fs: &SimFs, history: &mut History) {
        let plan = Record::plan(seed);
        fs.mkdir_p("/r").expect("setup");
        let initial = plan
            .initial
            .iter()
            .max_by_key(|(_, seq, _)| *seq)
            .map(|(_, _, v)| v.clone());
        if !plan.initial.is_empty() {
            fs.put_file(TARGET, &Record::image(plan.max, &plan.initial), 0o644)
                .expect("setup");
        }
        history.track(VALUE, initial);
        history.dirs = vec![PathBuf::from("/r")];
    }

    fn run(&self, seed: u64, fs: &Arc<SimFs>, history: &mut History) {
        let plan = Record::plan(seed);
        let mut opts = self.options(fs.clone());
        opts.max_len(plan.max);
        for (i, v) in plan.values.iter().enumerate() {
            let label = format!("record#{i} ({} bytes)", v.len());
            let op = history.begin(
                label.clone(),
                vec![(PathBuf::from(VALUE), Some(v.clone()))],
                fs.calls(),
            );
            let before = history.current(Path::new(VALUE)).map(<[u8]>::to_vec);
            let result = opts.write(TARGET, v);
            let outcome = match &result {
                Ok(_) => Outcome::Durable,
                Err(e) if e.state().is_committed() => Outcome::CommittedNotDurable,
                Err(_) => Outcome::NotCommitted,
            };
            history.end(op, outcome.clone(), fs.calls());
            // The live record reads as the result says.
            let live = self.read(&fs.live());
            // Committed but unconfirmed: the new value was invalidated in
            // the cache (see `RecordOptions::write`), so the old one, or
            // nothing for a record this write created.
            let expect = match outcome {
                Outcome::NotCommitted | Outcome::CommittedNotDurable => before,
                _ => Some(v.clone()),
            };
            if live.as_ref().ok() != expect.as_ref() {
                history.live_violations.push(format!(
                    "{label} returned {outcome:?} ({:?}), but the live record reads {}",
                    result.err().map(|e| e.to_string()),
                    match &live {
                        Ok(v) => describe(v),
                        Err(e) => e.clone(),
                    }
                ));
            }
        }
    }

    fn recover(&self, _fs: &Arc<SimFs>, _history: &History) -> Result<(), String> {
        // A record needs no recovery: the reader picks the newest valid slot.
        Ok(())
    }

    fn check(&self, tree: &Tree, history: &History, k: u64) -> Vec<String> {
        let allowed = history.allowed_per_file(k);
        let allowed = &allowed[Path::new(VALUE)];
        let exists = tree.read(Path::new(TARGET)).is_some();
        let got = self.read(tree);
        let ok = match &got {
            Ok(v) => allowed
                .versions
                .iter()
                .any(|(_, a)| a.as_deref() == Some(v)),
            // Nothing readable is allowed only while no value was ever
            // acknowledged or held (the creating write in flight).
            Err(_) => allowed.versions.iter().any(|(_, a)| a.is_none()),
        };
        if ok {
            return Vec::new();
        }
        let names: Vec<String> = allowed.versions.iter().map(|(l, _)| l.clone()).collect();
        vec![format!(
            "the record {} ({}) after a crash after call {k}; allowed: {}",
            match &got {
                Ok(v) => format!("reads {}", describe(v)),
                Err(e) => format!("does not read: {e}"),
            },
            if exists {
                "file present"
            } else {
                "file absent"
            },
            names.join(", ")
        )]
    }

    fn check_after_lie(
        &self,
        before: &Tree,
        _after: &Tree,
        history: &History,
        _recovery: &Result<(), String>,
    ) -> Vec<String> {
        let initial = history.initial.get(Path::new(VALUE)).cloned().flatten();
        let written = |v: &[u8]| {
            initial.as_deref() == Some(v)
                || history
                    .ops
                    .iter()
                    .any(|op| op.writes.iter().any(|(_, c)| c.as_deref() == Some(v)))
        };
        // A record created by the workload may lose its only value when the
        // creating write's flush lied; one that held a value must still read.
        let anything_held = initial.is_some();
        match self.read(before) {
            Ok(v) if written(&v) => Vec::new(),
            Ok(v) => vec![format!(
                "after a lying flush the record reads {}, which no write wrote",
                describe(&v)
            )],
            Err(_) if !anything_held => Vec::new(),
            Err(e) => vec![format!(
                "after a lying flush the record lost both slots: {e}"
            )],
        }
    }
}
