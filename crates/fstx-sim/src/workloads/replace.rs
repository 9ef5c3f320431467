//! Workload: a sequence of single-file replaces (`fstx::Options::write` and
//! streamed `AtomicFile`s, or the same through `fstx::Dir` handles kept
//! open across replaces), on one to three files in nested directories,
//! some reached through a symlink, one with a second hard link, some with
//! extended attributes; recovery is `fstx::recover` on every directory.
//!
//! Checks: each file holds one of its allowed versions (old or new; nothing
//! older than the last `Durable` acknowledgement), the other hard link keeps
//! the old content, no temporary file survives recovery, and every failed
//! replace left the live tree as its error's `State` says.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fstx::storage::Storage;
use fstx::{Durability, Options, State};

use crate::bugs::{FlushBug, FlushBugs};
use crate::explore::Workload;
use crate::fs::SimFs;
use crate::history::History;
use crate::rng::Rng;
use crate::workloads::{content, live_checks, outcome_of, CallResult};

/// Which durability levels the replaces use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// All `Durable`.
    Durable,
    /// All `Consistent`.
    Consistent,
    /// All `None`.
    None,
    /// Each replace picks one.
    Mixed,
}

/// The replace workload. See the [module docs](self).
#[derive(Debug, Clone, Copy)]
pub struct Replace {
    /// Durability levels used.
    pub level: Level,
    /// Planted flush bugs (a storage wrapper; none by default).
    pub bugs: FlushBugs,
    /// Replace through directory handles (`fstx::Dir`, one per directory
    /// and durability, opened at its first use and kept) instead of
    /// `Options::write`/`open` on paths.
    pub handle: bool,
}

struct Step {
    path: PathBuf,
    content: Vec<u8>,
    durability: Durability,
    chunks: Vec<usize>,
}

struct Plan {
    dirs: Vec<PathBuf>,
    /// Tracked files with initial content.
    files: Vec<(PathBuf, Option<Vec<u8>>)>,
    /// (link path, relative target): the link is what the steps write to.
    symlink: Option<(PathBuf, PathBuf)>,
    /// (existing file, second name).
    hard_link: Option<(PathBuf, PathBuf)>,
    xattr_on: Option<PathBuf>,
    steps: Vec<Step>,
}

impl Replace {
    fn plan(self, seed: u64) -> Plan {
        let mut r = Rng::new(seed);
        let mut dirs = vec![PathBuf::from("/d")];
        if r.one_in(2) {
            dirs.push(PathBuf::from("/d/sub"));
            if r.one_in(3) {
                dirs.push(PathBuf::from("/d/sub/deep"));
            }
        }
        let nfiles = 1 + r.below(2);
        let files: Vec<(PathBuf, Option<Vec<u8>>)> = (0..nfiles)
            .map(|i| {
                let dir = &dirs[r.below(dirs.len())];
                let init = (r.below(10) < 7).then(|| content(&mut r, "init"));
                (dir.join(format!("f{i}")), init)
            })
            .collect();
        // Sometimes the first file in a subdirectory is written through a
        // symlink in /d (the default policy follows it).
        let mut symlink = None;
        if files[0].0.parent() != Some(Path::new("/d")) && r.one_in(3) {
            let rel = files[0]
                .0
                .strip_prefix("/d")
                .expect("under /d")
                .to_path_buf();
            symlink = Some((PathBuf::from("/d/link"), rel));
        }
        let hard_link = (files[0].1.is_some() && r.one_in(4))
            .then(|| (files[0].0.clone(), PathBuf::from("/d/hardlink")));
        let xattr_on = files
            .iter()
            .find(|f| f.1.is_some())
            .filter(|_| r.one_in(3))
            .map(|f| f.0.clone());
        let n = 2 + r.below(3);
        let steps = (0..n)
            .map(|i| {
                let t = r.below(files.len());
                let path = match (&symlink, t) {
                    (Some((link, _)), 0) => link.clone(),
                    _ => files[t].0.clone(),
                };
                let content = content(&mut r, &format!("v{i}"));
                let durability = match self.level {
                    Level::Durable => Durability::Durable,
                    Level::Consistent => Durability::Consistent,
                    Level::None => Durability::None,
                    Level::Mixed => [
                        Durability::Durable,
                        Durability::Consistent,
                        Durability::None,
                    ][r.below(3)],
                };
                let chunks = if r.one_in(3) && content.len() > 4 {
                    let a = 1 + r.below(content.len() - 2);
                    vec![a, content.len() - a]
                } else {
                    vec![content.len()]
                };
                Step {
                    path,
                    content,
                    durability,
                    chunks,
                }
            })
            .collect();
        Plan {
            dirs,
            files,
            symlink,
            hard_link,
            xattr_on,
            steps,
        }
    }
}

/// Parses [`level_name`].
pub(crate) fn parse_level(s: &str) -> Option<Level> {
    [Level::Durable, Level::Consistent, Level::None, Level::Mixed]
        .into_iter()
        .find(|l| level_name(*l) == s)
}

/// Parses `+bug+bug...` parts of a workload name into flush bugs.
pub(crate) fn parse_bugs<'a>(parts: impl Iterator<Item = &'a str>) -> Option<FlushBugs> {
    let mut bugs = FlushBugs::NONE;
    for bug in parts {
        bugs = bugs.with(FlushBug::parse(bug)?);
    }
    Some(bugs)
}

/// Appends `+bug` for each bug of `bugs` to a workload name.
pub(crate) fn name_bugs(name: &mut String, bugs: FlushBugs) {
    for bug in bugs.iter() {
        name.push('+');
        name.push_str(bug.name());
    }
}

pub(crate) fn level_name(level: Level) -> &'static str {
    match level {
        Level::Durable => "durable",
        Level::Consistent => "consistent",
        Level::None => "none",
        Level::Mixed => "mixed",
    }
}

/// Parses a workload name made by [`Replace::name`](Workload::name).
pub fn parse(name: &str) -> Option<Replace> {
    let rest = name.strip_prefix("replace/")?;
    let mut parts = rest.split('+');
    let head = parts.next()?;
    let (level, handle) = match head.strip_suffix("/dir") {
        Some(level) => (level, true),
        None => (head, false),
    };
    let level = parse_level(level)?;
    let bugs = parse_bugs(parts)?;
    Some(Replace {
        level,
        bugs,
        handle,
    })
}

impl Workload for Replace {
    fn name(&self) -> String {
        let mut name = format!("replace/{}", level_name(self.level));
        if self.handle {
            name.push_str("/dir");
        }
        name_bugs(&mut name, self.bugs);
        name
    }

    fn setup(&self, seed: u64, fs: &SimFs, history: &mut History) {
        let plan = self.plan(seed);
        for dir in &plan.dirs {
            fs.mkdir_p(dir).expect("setup");
        }
        if let Some((link, target)) = &plan.symlink {
            fs.symlink(target, link).expect("setup");
        }
        for (i, (path, init)) in plan.files.iter().enumerate() {
            if let Some(init) = init {
                fs.put_file(path, init, 0o640).expect("setup");
            }
            // Track the file under the name the steps use.
            let tracked = match (&plan.symlink, i) {
                (Some((link, _)), 0) => link.clone(),
                _ => path.clone(),
            };
            history.track(tracked, init.clone());
        }
        if let Some((existing, second)) = &plan.hard_link {
            fs.hard_link(existing, second).expect("setup");
            history.track(second.clone(), plan.files[0].1.clone());
        }
        if let Some(path) = &plan.xattr_on {
            fs.put_xattr(path, "user.origin", b"sim").expect("setup");
        }
        history.dirs.clone_from(&plan.dirs);
    }

    fn run(&self, seed: u64, fs: &Arc<SimFs>, history: &mut History) {
        let plan = self.plan(seed);
        let storage: Arc<dyn Storage> = self.bugs.wrap(fs.clone());
        let mut temp_left = false;
        let mut handles: Vec<((PathBuf, Durability), fstx::Dir)> = Vec::new();
        for (i, step) in plan.steps.iter().enumerate() {
            let before = history.current(&step.path).map(<[u8]>::to_vec);
            let label = format!("replace#{i} {:?} {}", step.durability, step.path.display());
            let op = history.begin(
                label.clone(),
                vec![(step.path.clone(), Some(step.content.clone()))],
                fs.calls(),
            );
            let mut opts = Options::new();
            opts.storage(storage.clone()).durability(step.durability);
            let result: CallResult = if self.handle {
                through_handle(&mut handles, &opts, step)
            } else if step.chunks.len() == 1 {
                opts.write(&step.path, &step.content)
                    .map_err(|e| (e.state().clone(), e.into_io_error()))
            } else {
                streamed(&opts, &step.path, &step.content, &step.chunks)
            };
            let outcome = outcome_of(&result, step.durability);
            history.end(op, outcome, fs.calls());
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
}

/// Runs a step through the handle of its directory (opened with `opts` if
/// there is none yet for this directory and durability; a failed open is
/// the step's error, and the next step tries again).
fn through_handle(
    handles: &mut Vec<((PathBuf, Durability), fstx::Dir)>,
    opts: &Options,
    step: &Step,
) -> CallResult {
    let err = |e: fstx::Error| (e.state().clone(), e.into_io_error());
    let dir = step.path.parent().expect("a file in a directory");
    let name = step.path.file_name().expect("a file name");
    let key = (dir.to_path_buf(), step.durability);
    let at = if let Some(at) = handles.iter().position(|(k, _)| *k == key) {
        at
    } else {
        handles.push((key, opts.open_dir(dir).map_err(err)?));
        handles.len() - 1
    };
    let handle = &handles[at].1;
    if step.chunks.len() == 1 {
        return handle.write(name, &step.content).map_err(err);
    }
    let file = handle.create(name).map_err(err)?;
    stream_into(file, &step.content, &step.chunks)
}

/// Streams `content` in `chunks` through an `AtomicFile`.
fn streamed(
    opts: &Options,
    path: &Path,
    content: &[u8],
    chunks: &[usize],
) -> Result<(), (State, std::io::Error)> {
    let file = opts
        .open(path)
        .map_err(|e| (e.state().clone(), e.into_io_error()))?;
    stream_into(file, content, chunks)
}

/// Writes `content` in `chunks` into `file` and commits it.
fn stream_into(
    mut file: fstx::AtomicFile,
    content: &[u8],
    chunks: &[usize],
) -> Result<(), (State, std::io::Error)> {
    let mut at = 0;
    for &n in chunks {
        if let Err(e) = file.write_all(&content[at..at + n]) {
            return match file.discard() {
                Ok(()) => Err((State::NotCommitted, e)),
                Err(d) => Err((d.state().clone(), e)),
            };
        }
        at += n;
    }
    file.commit()
        .map_err(|e| (e.state().clone(), e.into_io_error()))
}
