//! Workload: a sequence of locked read-modify-writes (`fstx::UpdateOptions`)
//! with backups (`NAME~`, `NAME~2`, … up to three generations, by hard link
//! or by copy), some streamed, on a file that may or may not exist yet and
//! may already have backups; recovery is `fstx::recover` on its directory.
//!
//! Checks: the file holds one of its allowed versions (old or new; nothing
//! older than the last `Durable` acknowledgement); each update function saw
//! the content the previous update committed; every backup name holds a
//! complete earlier version; once the file holds an update's content,
//! `NAME~` holds the version it replaced (or the file's current version, if
//! the next update already backed it up); no temporary file survives
//! recovery (the sidecar lock file `.fstx-lock.NAME` may: it is never removed).

use std::cell::RefCell;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fstx::storage::Storage;
use fstx::{BackupMethod, Durability, Options, UpdateOptions};

use crate::bugs::FlushBugs;
use crate::explore::Workload;
use crate::fs::SimFs;
use crate::history::History;
use crate::rng::Rng;
use crate::workloads::replace::{level_name, name_bugs, parse_bugs, parse_level, Level};
use crate::workloads::{content, live_checks, outcome_of, CallResult};

/// The update workload. See the [module docs](self).
#[derive(Debug, Clone, Copy)]
pub struct Update {
    /// Durability levels used.
    pub level: Level,
    /// Always make backups by copying (otherwise: by hard link, or copy at random).
    pub copy: bool,
    /// Planted flush bugs (a storage wrapper; none by default).
    pub bugs: FlushBugs,
}

struct Step {
    content: Vec<u8>,
    durability: Durability,
    stream: bool,
}

struct Plan {
    dir: PathBuf,
    target: PathBuf,
    initial: Option<Vec<u8>>,
    /// Backups present before the workload: (generation, content).
    old_backups: Vec<(usize, Vec<u8>)>,
    generations: usize,
    method: BackupMethod,
    steps: Vec<Step>,
}

impl Update {
    fn plan(self, seed: u64) -> Plan {
        let mut r = Rng::new(seed);
        let dir = if r.one_in(2) {
            PathBuf::from("/d")
        } else {
            PathBuf::from("/d/sub")
        };
        let target = dir.join("cfg");
        let initial = (r.below(10) < 8).then(|| content(&mut r, "init"));
        let generations = 1 + r.below(3);
        let mut old_backups = Vec::new();
        if initial.is_some() && r.one_in(3) {
            old_backups.push((1, content(&mut r, "old1")));
            if generations > 1 && r.one_in(2) {
                old_backups.push((2, content(&mut r, "old2")));
            }
        }
        let method = if self.copy || r.one_in(3) {
            BackupMethod::Copy
        } else {
            BackupMethod::LinkOrCopy
        };
        let n = 2 + r.below(2);
        let steps = (0..n)
            .map(|i| Step {
                content: content(&mut r, &format!("v{i}")),
                durability: match self.level {
                    Level::Durable => Durability::Durable,
                    Level::Consistent => Durability::Consistent,
                    Level::None => Durability::None,
                    Level::Mixed => [
                        Durability::Durable,
                        Durability::Consistent,
                        Durability::None,
                    ][r.below(3)],
                },
                stream: r.one_in(4),
            })
            .collect();
        Plan {
            dir,
            target,
            initial,
            old_backups,
            generations,
            method,
            steps,
        }
    }
}

fn backup_path(target: &Path, k: usize) -> PathBuf {
    let mut name = target.as_os_str().to_os_string();
    name.push("~");
    if k > 1 {
        name.push(k.to_string());
    }
    PathBuf::from(name)
}

/// Parses a workload name made by [`Update::name`](Workload::name):
/// `update/<level>[/copy][+bug...]`.
pub fn parse(name: &str) -> Option<Update> {
    let rest = name.strip_prefix("update/")?;
    let mut parts = rest.split('+');
    let head = parts.next()?;
    let (level, copy) = match head.strip_suffix("/copy") {
        Some(level) => (level, true),
        None => (head, false),
    };
    let level = parse_level(level)?;
    let bugs = parse_bugs(parts)?;
    Some(Update { level, copy, bugs })
}

impl Workload for Update {
    fn name(&self) -> String {
        let mut name = format!(
            "update/{}{}",
            level_name(self.level),
            if self.copy { "/copy" } else { "" }
        );
        name_bugs(&mut name, self.bugs);
        name
    }

    fn setup(&self, seed: u64, fs: &SimFs, history: &mut History) {
        let plan = self.plan(seed);
        fs.mkdir_p(&plan.dir).expect("setup");
        if let Some(init) = &plan.initial {
            fs.put_file(&plan.target, init, 0o640).expect("setup");
        }
        history.track(plan.target.clone(), plan.initial.clone());
        for k in 1..=plan.generations.max(3) {
            let own = plan
                .old_backups
                .iter()
                .find(|(g, _)| *g == k)
                .map(|(_, c)| c.clone());
            let path = backup_path(&plan.target, k);
            if let Some(c) = &own {
                fs.put_file(&path, c, 0o640).expect("setup");
            }
            history.versions_of.insert(path, (plan.target.clone(), own));
        }
        history.dirs = vec![plan.dir.clone()];
    }

    fn run(&self, seed: u64, fs: &Arc<SimFs>, history: &mut History) {
        let plan = self.plan(seed);
        let storage: Arc<dyn Storage> = self.bugs.wrap(fs.clone());
        let mut temp_left = false;
        for (i, step) in plan.steps.iter().enumerate() {
            let before = history.current(&plan.target).map(<[u8]>::to_vec);
            let label = format!(
                "update#{i} {:?}{} {}",
                step.durability,
                if step.stream { " streamed" } else { "" },
                plan.target.display()
            );
            let op = history.begin(
                label.clone(),
                vec![(plan.target.clone(), Some(step.content.clone()))],
                fs.calls(),
            );
            if before.is_some() && step.durability != Durability::None {
                history.ops[op].implies = vec![(
                    backup_path(&plan.target, 1),
                    vec![before.clone(), Some(step.content.clone())],
                )];
            }
            let mut opts = Options::new();
            opts.storage(storage.clone()).durability(step.durability);
            let mut uopts = UpdateOptions::new();
            uopts
                .options(opts)
                .backup("~")
                .generations(plan.generations)
                .backup_method(plan.method);
            let saw: RefCell<Option<Option<Vec<u8>>>> = RefCell::new(None);
            let result = if step.stream {
                uopts.update_stream(&plan.target, |old, new| {
                    let mut buf = Vec::new();
                    if let Some(old) = old {
                        old.read_to_end(&mut buf)?;
                        *saw.borrow_mut() = Some(Some(buf));
                    } else {
                        *saw.borrow_mut() = Some(None);
                    }
                    new.write_all(&step.content)?;
                    Ok(true)
                })
            } else {
                uopts.update(&plan.target, |old| {
                    *saw.borrow_mut() = Some(old.map(<[u8]>::to_vec));
                    Ok(Some(step.content.clone()))
                })
            };
            let result: CallResult = result
                .map(|_| ())
                .map_err(|e| (e.state().clone(), e.into_io_error()));
            history.end(op, outcome_of(&result, step.durability), fs.calls());
            if let Some(seen) = saw.into_inner() {
                if seen != before {
                    history.live_violations.push(format!(
                        "{label}: the update function saw {:?} bytes, not the current version ({:?} bytes)",
                        seen.map(|s| s.len()),
                        before.as_ref().map(Vec::len)
                    ));
                }
            }
            live_checks(
                fs,
                history,
                op,
                &result,
                &|_| before.clone(),
                &mut temp_left,
            );
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

    fn check(&self, tree: &crate::tree::Tree, history: &History, k: u64) -> Vec<String> {
        let mut out: Vec<String> = history
            .allowed_per_file(k)
            .iter()
            .filter_map(|(path, allowed)| allowed.check(tree, path))
            .collect();
        if history
            .ops
            .iter()
            .all(|op| op.start >= k || !matches!(op.outcome, crate::history::Outcome::NoPromise))
        {
            out.extend(history.check_versions(tree, k));
        }
        out.extend(history.check_meta(tree, k, false));
        out.extend(crate::explore::leftovers(tree, |p| self.is_leftover(p)));
        out
    }

    fn is_leftover(&self, path: &Path) -> bool {
        // Lock files stay: someone may wait on one.
        path.file_name()
            .and_then(fstx::internal_name)
            .is_some_and(|k| k != fstx::InternalName::Lock)
    }
}
