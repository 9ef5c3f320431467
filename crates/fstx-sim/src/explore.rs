//! Crash-state enumeration and checking.
//!
//! [`explore`] runs a [`Workload`] once on a [`SimFs`], snapshotting the
//! persistence state after every storage call. For every crash point it
//! builds the crash states the [model](crate::model) allows (all of them when
//! few, a seeded sample otherwise), and for each state not seen before
//! (identical images, under identical expectations, are checked once):
//!
//! 1. boots a fresh simulator on the state and runs the workload's recovery;
//! 2. checks the recovered tree (old-or-new, durability of acknowledged
//!    operations, no leftovers);
//! 3. runs recovery again on the result and checks nothing changed
//!    (idempotence);
//! 4. crashes the first recovery after each of its calls, builds those crash
//!    states, recovers each again and checks it.
//!
//! With a lying flush armed ([`FaultError::Lie`]), step 2 is
//! [`Workload::check_after_lie`] instead ("recovery never makes things
//! worse"), and a recovery that refuses to go on ends the checks of that state.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::fault::{Fault, FaultError};
use crate::fs::SimFs;
use crate::history::History;
use crate::model::{Kernel, Profile};
use crate::protocol::{protocol_key, Versions};
use crate::rng::{mix, Rng};
use crate::tree::Tree;

/// A crash-consistency workload: set up a tree, run operations through
/// fstx on the simulator, recover after a crash, check the result.
pub trait Workload: Send + Sync {
    /// A name that, with a seed, identifies the workload (for replay).
    fn name(&self) -> String;
    /// Builds the initial tree (durable) and records what is tracked.
    fn setup(&self, seed: u64, fs: &SimFs, history: &mut History);
    /// Runs the operations, recording each in `history`.
    fn run(&self, seed: u64, fs: &Arc<SimFs>, history: &mut History);
    /// Recovery after a reboot.
    fn recover(&self, fs: &Arc<SimFs>, history: &History) -> Result<(), String>;
    /// Recovery after a reboot from a crash after call `k` (default:
    /// [`recover`](Self::recover)); a workload that can judge what recovery
    /// reports (not only the tree it leaves) overrides this.
    fn recover_at(&self, fs: &Arc<SimFs>, history: &History, k: u64) -> Result<(), String> {
        let _ = k;
        self.recover(fs, history)
    }
    /// Checks a recovered tree for a crash after call `k`. The default:
    /// every tracked file old-or-new per [`History::allowed_per_file`], and no
    /// leftovers (see [`is_leftover`](Self::is_leftover)).
    fn check(&self, tree: &Tree, history: &History, k: u64) -> Vec<String> {
        let mut out: Vec<String> = history
            .allowed_per_file(k)
            .iter()
            .filter_map(|(path, allowed)| allowed.check(tree, path))
            .collect();
        out.extend(history.check_meta(tree, k, false));
        out.extend(leftovers(tree, |p| self.is_leftover(p)));
        out
    }
    /// The check used instead of [`check`](Self::check) when a flush lied
    /// ([`FaultError::Lie`](crate::fault::FaultError::Lie)): data the
    /// protocol was told is durable may be lost, so its promises (old-or-new,
    /// all-or-nothing, durability) cannot hold, and a crash state may already
    /// show damaged content. What must still hold: **recovery never makes
    /// things worse** — every tracked file recovery changed (`before`: the
    /// crash state, `after`: the recovered tree) holds a complete version
    /// some operation wrote (or its initial content, or is absent), or
    /// content some tracked file already held in the crash state (a redone
    /// rename moves a file the lie had already damaged) — and
    /// recovery either succeeds or refuses with an error that
    /// [`is_refusal`](Self::is_refusal) accepts.
    fn check_after_lie(
        &self,
        before: &Tree,
        after: &Tree,
        history: &History,
        recovery: &Result<(), String>,
    ) -> Vec<String> {
        let mut out = Vec::new();
        if let Err(e) = recovery {
            if !self.is_refusal(e) {
                out.push(format!("recovery failed: {e}"));
            }
        }
        for (path, initial) in &history.initial {
            let now = after.read(path);
            if now == before.read(path) {
                continue;
            }
            let legit = initial.as_deref() == now
                || history.ops.iter().any(|op| {
                    op.writes
                        .iter()
                        .any(|(p, c)| p == path && c.as_deref() == now)
                })
                || now.is_some_and(|n| history.initial.keys().any(|p| before.read(p) == Some(n)));
            if !legit {
                out.push(format!(
                    "recovery changed {} from {} to {}, which no operation wrote \
                     (damaged data installed after a lying flush)",
                    path.display(),
                    before
                        .read(path)
                        .map_or_else(|| "absent".into(), crate::tree::describe),
                    now.map_or_else(|| "absent".into(), crate::tree::describe)
                ));
            }
        }
        out
    }
    /// Whether a recovery error is a legitimate refusal to go on after a
    /// lying flush (default: none is).
    fn is_refusal(&self, _error: &str) -> bool {
        false
    }
    /// Whether a path must not exist after recovery (default: fstx's
    /// temporary and staging names, `.fstx-*`).
    fn is_leftover(&self, path: &Path) -> bool {
        path.file_name()
            .is_some_and(|n| n.as_encoded_bytes().starts_with(b".fstx-"))
    }
}

/// Violations for every leftover path in `tree`.
pub fn leftovers(tree: &Tree, is_leftover: impl Fn(&Path) -> bool) -> Vec<String> {
    tree.walk()
        .into_iter()
        .filter(|(p, _)| is_leftover(p))
        .map(|(p, _)| format!("leftover after recovery: {}", p.display()))
        .collect()
}

/// How to explore.
#[derive(Debug, Clone)]
pub struct Config {
    /// Seed of the workload and of the sampling.
    pub seed: u64,
    /// Persistence model.
    pub profile: Profile,
    /// The kernel simulated (what `syncfs` reports; see [`Kernel`]).
    pub kernel: Kernel,
    /// A planted bug: the workload's writers are told they run on this
    /// kernel instead (see [`SimFs::report_kernel`]); recovery is told the
    /// truth.
    pub reported_kernel: Option<Kernel>,
    /// Crash states per crash point of the workload (all when fewer).
    pub states_per_crash: usize,
    /// Whether to crash recovery too.
    pub recovery_crashes: bool,
    /// Crash states per crash point of a recovery.
    pub states_per_recovery_crash: usize,
    /// Faults armed for the workload run.
    pub faults: Vec<Fault>,
    /// Violations kept in full (all are counted).
    pub max_kept: usize,
}

impl Config {
    /// A fresh simulated filesystem for a run under this configuration: its
    /// seed, persistence profile, kernel, and the kernel the writers are told.
    pub fn boot(&self) -> Arc<SimFs> {
        let fs = SimFs::new(self.seed);
        fs.set_profile(self.profile);
        fs.set_kernel(self.kernel);
        fs.report_kernel(self.reported_kernel);
        fs
    }

    /// Defaults for `seed`: weak model, 64 states per crash point, recovery
    /// crashed with 8 states per point, no faults.
    pub fn new(seed: u64) -> Config {
        Config {
            seed,
            profile: Profile::Weak,
            kernel: Kernel::Current,
            reported_kernel: None,
            states_per_crash: 64,
            recovery_crashes: true,
            states_per_recovery_crash: 8,
            faults: Vec::new(),
            max_kept: 5,
        }
    }
}

/// One violated invariant, with everything needed to understand and replay it.
#[derive(Debug, Clone)]
pub struct Violation {
    /// What is wrong.
    pub message: String,
    /// Workload name.
    pub workload: String,
    /// Seed.
    pub seed: u64,
    /// Persistence model.
    pub profile: Profile,
    /// The kernel simulated.
    pub kernel: Kernel,
    /// The kernel the writers were told they run on, if not the simulated one.
    pub reported_kernel: Option<Kernel>,
    /// Armed faults.
    pub faults: Vec<Fault>,
    /// Where: live run, crash after call k, or crash of the recovery.
    pub phase: String,
    /// The workload's calls up to the crash.
    pub trace: Vec<String>,
    /// The crash state (durable image), if any.
    pub state: String,
    /// The state after recovery, if any.
    pub recovered: String,
}

impl Violation {
    /// A shell command that replays this case.
    pub fn replay_command(&self) -> String {
        let faults: Vec<String> = self.faults.iter().map(ToString::to_string).collect();
        let reported = self
            .reported_kernel
            .map(|k| format!(" FSTX_SIM_REPORTED_KERNEL={}", k.name()))
            .unwrap_or_default();
        format!(
            "FSTX_SIM_WORKLOAD='{}' FSTX_SIM_SEED={} FSTX_SIM_PROFILE={} FSTX_SIM_KERNEL={}{reported} \
             FSTX_SIM_FAULTS='{}' cargo test -p fstx-sim --all-features --test replay -- --ignored --nocapture",
            self.workload,
            self.seed,
            self.profile.name(),
            self.kernel.name(),
            faults.join(",")
        )
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "VIOLATION: {}", self.message)?;
        writeln!(
            f,
            "  workload {} seed {} profile {} kernel {}",
            self.workload,
            self.seed,
            self.profile.name(),
            self.kernel.name()
        )?;
        if !self.faults.is_empty() {
            let faults: Vec<String> = self.faults.iter().map(ToString::to_string).collect();
            writeln!(f, "  faults {}", faults.join(","))?;
        }
        writeln!(f, "  at: {}", self.phase)?;
        writeln!(f, "  call trace:")?;
        for line in &self.trace {
            writeln!(f, "    {line}")?;
        }
        if !self.state.is_empty() {
            writeln!(f, "  crash state (durable image):\n{}", self.state)?;
        }
        if !self.recovered.is_empty() {
            writeln!(f, "  after recovery:\n{}", self.recovered)?;
        }
        writeln!(f, "  replay: {}", self.replay_command())
    }
}

/// What an exploration did and found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Storage calls the workload made.
    pub calls: u64,
    /// Crash points whose states were built.
    pub crash_points: u64,
    /// Crash states recovered and checked (after de-duplication).
    pub states_checked: u64,
    /// Hashes of the distinct crash images seen.
    pub distinct: HashSet<u64>,
    /// Protocol keys of the crash states seen: states that differ in
    /// something recovery or a reader looks at (see [`crate::protocol`]).
    pub protocol_distinct: HashSet<u64>,
    /// Faults that fired.
    pub faults_injected: u64,
    /// Number of violations found.
    pub violation_count: u64,
    /// The first few violations, in full.
    pub violations: Vec<Violation>,
    /// Wall time.
    pub elapsed: Duration,
}

impl Report {
    /// Adds another report's figures to this one.
    pub fn merge(&mut self, other: Report) {
        self.calls += other.calls;
        self.crash_points += other.crash_points;
        self.states_checked += other.states_checked;
        self.distinct.extend(other.distinct);
        self.protocol_distinct.extend(other.protocol_distinct);
        self.faults_injected += other.faults_injected;
        self.violation_count += other.violation_count;
        let room = 5usize.saturating_sub(self.violations.len());
        self.violations
            .extend(other.violations.into_iter().take(room));
        self.elapsed += other.elapsed;
    }

    /// Whether violations were found and one of those kept in full says
    /// `needle`: the kind of violation a planted bug must cause (a count
    /// alone could be an unrelated bug).
    pub fn caught(&self, needle: &str) -> bool {
        self.violation_count > 0 && self.violations.iter().any(|v| v.message.contains(needle))
    }

    /// One line of figures.
    pub fn summary(&self) -> String {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        format!(
            "distinct crash states {}, protocol-distinct crash states {}, states checked {}, \
             crash points {}, faults injected {}, {:.0} states/s, {:.1} s, violations {}",
            self.distinct.len(),
            self.protocol_distinct.len(),
            self.states_checked,
            self.crash_points,
            self.faults_injected,
            f64::from(u32::try_from(self.states_checked).unwrap_or(u32::MAX)) / secs,
            secs,
            self.violation_count
        )
    }
}

struct Explorer<'a> {
    workload: &'a dyn Workload,
    cfg: &'a Config,
    history: History,
    /// The tracked paths' versions, for protocol keys.
    versions: Versions,
    trace: Vec<String>,
    report: Report,
    seen: HashSet<(u64, u64)>,
    /// Protocol keys by image hash: the same image recurs at many crash
    /// points, and its key needs a walk of the whole tree.
    keys: HashMap<u64, u64>,
    rng: Rng,
    /// A lying flush is armed: [`Workload::check_after_lie`] replaces the checks.
    lying: bool,
}

/// Runs `workload` under `cfg` and checks every crash state. See the
/// [module docs](self).
pub fn explore(workload: &dyn Workload, cfg: &Config) -> Report {
    let started = Instant::now();
    let fs = cfg.boot();
    let mut history = History::default();
    workload.setup(cfg.seed, &fs, &mut history);
    history.record_meta(&fs.live(), fs.new_file_meta());
    fs.record_trace(true);
    fs.record_snapshots(true);
    for fault in &cfg.faults {
        fs.inject(*fault);
    }
    workload.run(cfg.seed, &fs, &mut history);
    let snapshots = fs.take_snapshots();
    let trace = fs.trace();
    let injected = fs.injected();
    drop(fs);

    let mut ex = Explorer {
        workload,
        cfg,
        versions: Versions::of(&history),
        history,
        trace,
        report: Report::default(),
        seen: HashSet::new(),
        keys: HashMap::new(),
        rng: Rng::new(mix(cfg.seed, 0x5eed)),
        lying: cfg.faults.iter().any(|f| f.error == FaultError::Lie),
    };
    ex.report.calls = snapshots.last().map_or(0, |s| s.call);
    ex.report.faults_injected = injected.len() as u64;
    for message in std::mem::take(&mut ex.history.live_violations) {
        ex.violation(message, "live run (no crash)".into(), u64::MAX, None, None);
    }

    let mut prev: Option<(&Arc<crate::model::Persist>, u64)> = None;
    for snap in &snapshots {
        let key = ex.history.expectation_key(snap.call);
        if let Some((p, k)) = prev {
            if Arc::ptr_eq(p, &snap.persist) && k == key {
                continue;
            }
        }
        prev = Some((&snap.persist, key));
        ex.report.crash_points += 1;
        let states = snap
            .persist
            .crash_states(cfg.profile, cfg.states_per_crash, &mut ex.rng);
        for state in states {
            ex.check_crash_state(&state, snap.call, key);
        }
    }
    let mut report = ex.report;
    report.elapsed = started.elapsed();
    report
}

impl Explorer<'_> {
    fn violation(
        &mut self,
        message: String,
        phase: String,
        k: u64,
        state: Option<&Tree>,
        recovered: Option<&Tree>,
    ) {
        self.report.violation_count += 1;
        if self.report.violations.len() >= self.cfg.max_kept {
            return;
        }
        let trace = self
            .trace
            .iter()
            .take(usize::try_from(k).unwrap_or(usize::MAX))
            .cloned()
            .collect();
        self.report.violations.push(Violation {
            message,
            workload: self.workload.name(),
            seed: self.cfg.seed,
            profile: self.cfg.profile,
            kernel: self.cfg.kernel,
            reported_kernel: self.cfg.reported_kernel,
            faults: self.cfg.faults.clone(),
            phase,
            trace,
            state: state.map(Tree::dump).unwrap_or_default(),
            recovered: recovered.map(Tree::dump).unwrap_or_default(),
        });
    }

    /// The protocol key of crash image `state`, whose image hash is `hash`.
    fn situation(&mut self, state: &Tree, hash: u64) -> u64 {
        let versions = &self.versions;
        *self
            .keys
            .entry(hash)
            .or_insert_with(|| protocol_key(state, versions))
    }

    /// The machine after a power cut: `image` durable and live, under the
    /// configured profile and kernel.
    fn boot(&self, image: Tree, seed: u64) -> Arc<SimFs> {
        let fs = SimFs::from_image(image, seed, self.cfg.profile);
        fs.set_kernel(self.cfg.kernel);
        fs
    }

    /// Recovers one crash state of the workload and checks it; crashes the
    /// recovery too.
    fn check_crash_state(&mut self, state: &Tree, k: u64, key: u64) {
        let hash = state.image_hash();
        self.report.distinct.insert(hash);
        // Checked once per situation: images that differ only in what
        // recovery never looks at (temporary files' bytes, random name
        // parts, lock files) are one protocol state.
        let situation = self.situation(state, hash);
        self.report.protocol_distinct.insert(situation);
        if !self.seen.insert((situation, key)) {
            return;
        }
        self.report.states_checked += 1;
        let seed = mix(self.cfg.seed, hash);
        let fs = self.boot(state.clone(), seed);
        fs.record_snapshots(self.cfg.recovery_crashes);
        let phase = format!("crash after call {k}");
        let recovered = match self.recover_and_check(&fs, k, state) {
            Ok(tree) => tree,
            Err((messages, tree)) => {
                for m in messages {
                    self.violation(m, phase.clone(), k, Some(state), tree.as_ref());
                }
                return;
            }
        };
        // Idempotence: recovering the recovered state changes nothing.
        let again = self.boot(recovered.clone(), seed);
        match self.workload.recover_at(&again, &self.history, k) {
            Ok(()) => {
                let after = again.live().reachable();
                if after.image_hash() != recovered.image_hash() {
                    self.violation(
                        "recovery is not idempotent: a second recovery changed the tree".into(),
                        phase.clone(),
                        k,
                        Some(&recovered),
                        Some(&after),
                    );
                }
            }
            Err(e) => self.violation(
                format!("second recovery failed: {e}"),
                phase.clone(),
                k,
                Some(state),
                None,
            ),
        }
        if !self.cfg.recovery_crashes {
            return;
        }
        // Crash the recovery after each of its calls; recover again.
        let snaps = fs.take_snapshots();
        drop(fs);
        let mut prev: Option<&Arc<crate::model::Persist>> = None;
        for snap in &snaps {
            if prev.is_some_and(|p| Arc::ptr_eq(p, &snap.persist)) {
                continue;
            }
            prev = Some(&snap.persist);
            let states = snap.persist.crash_states(
                self.cfg.profile,
                self.cfg.states_per_recovery_crash,
                &mut self.rng,
            );
            for rstate in states {
                let h = rstate.image_hash();
                self.report.distinct.insert(h);
                let situation = self.situation(&rstate, h);
                self.report.protocol_distinct.insert(situation);
                if !self.seen.insert((situation, key)) {
                    continue;
                }
                self.report.states_checked += 1;
                let rfs = self.boot(rstate.clone(), mix(seed, h));
                if let Err((messages, tree)) = self.recover_and_check(&rfs, k, state) {
                    let phase = format!(
                        "crash after call {k}, then recovery crashed after its call {}, then recovered again",
                        snap.call
                    );
                    for m in messages {
                        self.violation(m, phase.clone(), k, Some(&rstate), tree.as_ref());
                    }
                }
            }
        }
    }

    #[allow(clippy::type_complexity)]
    fn recover_and_check(
        &self,
        fs: &Arc<SimFs>,
        k: u64,
        crash_state: &Tree,
    ) -> Result<Tree, (Vec<String>, Option<Tree>)> {
        if self.lying {
            let r = self.workload.recover_at(fs, &self.history, k);
            let tree = fs.live().reachable();
            let problems = self
                .workload
                .check_after_lie(crash_state, &tree, &self.history, &r);
            return match (problems.is_empty(), r.is_ok()) {
                (true, true) => Ok(tree),
                // A refusal: nothing more to check on this state.
                (true, false) => Err((Vec::new(), None)),
                (false, _) => Err((problems, Some(tree))),
            };
        }
        if let Err(e) = self.workload.recover_at(fs, &self.history, k) {
            return Err((vec![format!("recovery failed: {e}")], None));
        }
        let tree = fs.live().reachable();
        let problems = self.workload.check(&tree, &self.history, k);
        if problems.is_empty() {
            Ok(tree)
        } else {
            Err((problems, Some(tree)))
        }
    }
}
