//! Workload: verified files — a sequence of `Options::verified` writes and
//! verified updates with backups (`cfg~`, `cfg~2`) of `/d/cfg` (every other
//! update streamed, `update_stream`), which may exist before (with a
//! backup); recovery is `fstx::recover` on `/d`.
//!
//! The value is tracked under the pseudo path `/value-of/d/cfg` (the file's
//! bytes carry the envelope); crash images of the files count as distinct by
//! their bytes.
//!
//! Checks, reading the recovered image with `fstx::ReadOptions` (backup
//! suffix `~`) on a simulator booted from it: the value read is the last
//! durably acknowledged one or one written after it; once a value was
//! acknowledged (or existed), the read never fails. After a lying flush:
//! the read returns a value some write wrote (or the initial one), or a
//! clear error — never garbage.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fstx::formats::EnvelopeHeader;
use fstx::storage::Storage;
use fstx::{Options, ReadOptions, UpdateOptions};

use crate::bugs::FlushBugs;
use crate::explore::{leftovers, Workload};
use crate::fs::SimFs;
use crate::history::{History, Outcome};
use crate::model::Profile;
use crate::rng::Rng;
use crate::tree::{describe, Tree};
use crate::workloads::replace::{name_bugs, parse_bugs};
use crate::workloads::{content, outcome_of, CallResult};

const TARGET: &str = "/d/cfg";
const VALUE: &str = "/value-of/d/cfg";

/// The verified-file workload. See the [module docs](self).
#[derive(Debug, Clone, Copy)]
pub struct Verified {
    /// Planted flush bugs (a storage wrapper; none by default).
    pub bugs: FlushBugs,
}

impl Default for Verified {
    fn default() -> Verified {
        Verified {
            bugs: FlushBugs::NONE,
        }
    }
}

struct Plan {
    /// (seq, value) of `cfg` and of `cfg~` before the workload.
    initial: Option<(u64, Vec<u8>)>,
    backup: Option<(u64, Vec<u8>)>,
    /// (value, as an update with backups?)
    steps: Vec<(Vec<u8>, bool)>,
}

fn sealed(seq: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = EnvelopeHeader {
        seq,
        len: payload.len() as u64,
        crc: crc32c::crc32c(payload),
    }
    .encode()
    .to_vec();
    out.extend_from_slice(payload);
    out
}

impl Verified {
    fn plan(seed: u64) -> Plan {
        let mut r = Rng::new(seed);
        let initial = r.one_in(3).then(|| (7, content(&mut r, "init")));
        let backup = (initial.is_some() && r.one_in(2)).then(|| (6, content(&mut r, "older")));
        let n = 2 + r.below(3);
        let steps = (0..n)
            .map(|i| (content(&mut r, &format!("v{i}")), r.one_in(2)))
            .collect();
        Plan {
            initial,
            backup,
            steps,
        }
    }

    fn read(tree: &Tree) -> Result<Vec<u8>, String> {
        let fs = SimFs::from_image(tree.clone(), 0, Profile::Weak);
        let mut r = ReadOptions::new();
        r.storage(fs).require_verified(true);
        r.read(TARGET).map(|o| o.content).map_err(|e| e.to_string())
    }
}

/// Parses a workload name made by [`Verified::name`](Workload::name).
pub fn parse(name: &str) -> Option<Verified> {
    let rest = name.strip_prefix("verified")?;
    let bugs = parse_bugs(rest.split('+').skip(1))?;
    Some(Verified { bugs })
}

impl Workload for Verified {
    fn name(&self) -> String {
        let mut name = "verified".to_string();
        name_bugs(&mut name, self.bugs);
        name
    }

    fn setup(&self, seed: u64, fs: &SimFs, history: &mut History) {
        let plan = Verified::plan(seed);
        fs.mkdir_p("/d").expect("setup");
        if let Some((seq, v)) = &plan.initial {
            fs.put_file(TARGET, &sealed(*seq, v), 0o644).expect("setup");
        }
        if let Some((seq, v)) = &plan.backup {
            fs.put_file("/d/cfg~", &sealed(*seq, v), 0o644)
                .expect("setup");
        }
        history.track(VALUE, plan.initial.map(|(_, v)| v));
        // The backup's value, a legitimate (older) version to fall back to.
        if let Some((_, v)) = plan.backup {
            history.track("/value-of/d/cfg~", Some(v));
        }
        history.dirs = vec![PathBuf::from("/d")];
    }

    fn run(&self, seed: u64, fs: &Arc<SimFs>, history: &mut History) {
        let plan = Verified::plan(seed);
        let storage: Arc<dyn Storage> = self.bugs.wrap(fs.clone());
        let mut opts = Options::new();
        opts.storage(storage).verified(true);
        for (i, (v, update)) in plan.steps.iter().enumerate() {
            let stream = *update && i % 2 == 1;
            let label = format!(
                "{}#{i} ({} bytes)",
                match (*update, stream) {
                    (true, true) => "update_stream",
                    (true, false) => "update",
                    _ => "write",
                },
                v.len()
            );
            let before = history.current(Path::new(VALUE)).map(<[u8]>::to_vec);
            let op = history.begin(
                label.clone(),
                vec![(PathBuf::from(VALUE), Some(v.clone()))],
                fs.calls(),
            );
            let result: CallResult = if *update {
                let mut u = UpdateOptions::new();
                u.options(opts.clone()).backup("~").generations(2);
                let seen = std::cell::RefCell::new(None);
                let r = if stream {
                    u.update_stream(TARGET, |old, new| {
                        let old = match old {
                            Some(f) => {
                                let mut b = Vec::new();
                                f.read_to_end(&mut b)?;
                                Some(b)
                            }
                            None => None,
                        };
                        *seen.borrow_mut() = Some(old);
                        // In two pieces: the payload streams.
                        let half = v.len() / 2;
                        new.write_all(&v[..half])?;
                        new.write_all(&v[half..])?;
                        Ok(true)
                    })
                } else {
                    u.update(TARGET, |old| {
                        *seen.borrow_mut() = Some(old.map(<[u8]>::to_vec));
                        Ok(Some(v.clone()))
                    })
                }
                .map(|_| ())
                .map_err(|e| (e.state().clone(), e.into_io_error()));
                if let Some(old) = seen.into_inner() {
                    if old != before {
                        history.live_violations.push(format!(
                            "{label}: the update function saw {}, not the current value",
                            old.as_deref().map_or_else(|| "nothing".into(), describe)
                        ));
                    }
                }
                r
            } else {
                opts.write(TARGET, v)
                    .map_err(|e| (e.state().clone(), e.into_io_error()))
            };
            let outcome = outcome_of(&result, fstx::Durability::Durable);
            history.end(op, outcome.clone(), fs.calls());
            let live = Verified::read(&fs.live());
            let expect = match outcome {
                Outcome::NotCommitted => before,
                _ => Some(v.clone()),
            };
            if live.as_ref().ok() != expect.as_ref() {
                history.live_violations.push(format!(
                    "{label} returned {outcome:?}, but the live file reads {}",
                    match &live {
                        Ok(v) => describe(v),
                        Err(e) => e.clone(),
                    }
                ));
            }
        }
    }

    fn recover(&self, fs: &Arc<SimFs>, history: &History) -> Result<(), String> {
        let storage: Arc<dyn Storage> = fs.clone();
        for dir in &history.dirs {
            fstx::RecoverOptions::new()
                .storage(storage.clone())
                .recover(dir)
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    fn check(&self, tree: &Tree, history: &History, k: u64) -> Vec<String> {
        let allowed = history.allowed_per_file(k);
        let allowed = &allowed[Path::new(VALUE)];
        let got = Verified::read(tree);
        let ok = match &got {
            Ok(v) => allowed
                .versions
                .iter()
                .any(|(_, a)| a.as_deref() == Some(v)),
            Err(_) => allowed.versions.iter().any(|(_, a)| a.is_none()),
        };
        let mut out = leftovers(tree, |p| self.is_leftover(p));
        if !ok {
            let names: Vec<String> = allowed.versions.iter().map(|(l, _)| l.clone()).collect();
            out.push(format!(
                "the verified read {} after a crash after call {k}; allowed: {}",
                match &got {
                    Ok(v) => format!("returns {}", describe(v)),
                    Err(e) => format!("fails: {e}"),
                },
                names.join(", ")
            ));
        }
        out
    }

    fn check_after_lie(
        &self,
        before: &Tree,
        _after: &Tree,
        history: &History,
        _recovery: &Result<(), String>,
    ) -> Vec<String> {
        match Verified::read(before) {
            Ok(v)
                if history
                    .initial
                    .values()
                    .any(|i| i.as_deref() == Some(&v[..]))
                    || history
                        .ops
                        .iter()
                        .any(|op| op.writes.iter().any(|(_, c)| c.as_deref() == Some(&v[..]))) =>
            {
                Vec::new()
            }
            Ok(v) => vec![format!(
                "after a lying flush the verified read returns {}, which no write wrote",
                describe(&v)
            )],
            // A clear error is the honest answer when every candidate is damaged.
            Err(_) => Vec::new(),
        }
    }

    fn is_leftover(&self, path: &Path) -> bool {
        // Lock files stay: someone may wait on one.
        path.file_name()
            .and_then(fstx::internal_name)
            .is_some_and(|k| k != fstx::InternalName::Lock)
    }
}
