//! A whole run: record the workload on each configuration, choose the crash
//! states, check them in parallel, report.

#![allow(clippy::cast_precision_loss)] // only for statistics

use std::fmt::Write as _;
use std::fs;
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::disk::ReplayDisk;
use crate::kmsg::Kmsg;
use crate::log::{save_image, Log};
pub use crate::record::{record, Recording};
use crate::record::{shell, work_dir};
use crate::replay::{changed_sectors, enumerate, marks_before, Coverage, Enumeration, StateSpec};
use crate::rng::Rng;
use crate::stack::{
    cleanup_dead_runs, err, flush_buffers, preflight, run_with_timeout, DiskStack, FsConfig,
};
use crate::timeline::Timeline;

/// Everything a run needs. Commands are shell commands (`sh -c`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    /// Configurations to run.
    pub configs: Vec<FsConfig>,
    /// Runs in the fresh filesystem before recording starts.
    pub setup: Option<String>,
    /// The program under test; runs in the mounted filesystem while recording.
    pub workload: String,
    /// Runs in each mounted crash image before the checker (the program's own recovery).
    pub recover: Option<String>,
    /// Decides by its exit code whether a crash image is acceptable.
    pub check: String,
    /// Run `fsck` on crash images after the checker (see `fsck_sample`).
    pub fsck: bool,
    /// `fsck` every crash image the kernel warned about (see [`crate::kmsg`])
    /// and a seeded 1 in `fsck_sample` of the others; 1 = every image.
    #[serde(default = "default_fsck_sample")]
    pub fsck_sample: u32,
    /// Background noise: fsync an unrelated file at this interval (None = off).
    pub noise: Option<Duration>,
    /// ext4/btrfs `commit=1`, xfs sync interval 1 s.
    pub short_commit: bool,
    /// Delay and reorder WRITE completions by up to this much (None = off).
    pub write_delay: Option<Duration>,
    /// Every FSYNC reaching the recorded disk takes this long.
    pub flush_latency: Duration,
    /// How crash states are chosen.
    pub enumeration: Enumeration,
    /// Parallel checkers (0 = one per core, plus one).
    pub jobs: usize,
    /// Timeout for each command (setup, workload, recover, check, fsck).
    pub timeout: Duration,
    /// Where to save base images and logs for replaying violations.
    pub artifacts: Option<PathBuf>,
    /// Also save artifacts for configurations without violations.
    pub save_all: bool,
    /// Print progress to stderr.
    pub progress: bool,
    /// Self-test: before mounting each crash image, read the whole loop
    /// device and compare it with the image rebuilt from the log (slow).
    pub verify_images: bool,
    /// Explain the first this many violations per configuration (0 = none).
    #[serde(default)]
    pub explain: usize,
}

impl Config {
    /// A config with the realism switches on and the given commands.
    pub fn new(workload: impl Into<String>, check: impl Into<String>) -> Config {
        Config {
            configs: vec![FsConfig::Ext4],
            setup: None,
            workload: workload.into(),
            recover: None,
            check: check.into(),
            fsck: true,
            fsck_sample: DEFAULT_FSCK_SAMPLE,
            noise: Some(Duration::from_millis(5)),
            short_commit: true,
            write_delay: Some(Duration::from_micros(300)),
            flush_latency: Duration::ZERO,
            enumeration: Enumeration::default(),
            jobs: 0,
            timeout: Duration::from_secs(120),
            artifacts: None,
            save_all: false,
            progress: false,
            verify_images: false,
            explain: crate::explain::DEFAULT_EXPLAIN,
        }
    }
}

/// One crash state that failed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Violation {
    /// The configuration.
    pub config: FsConfig,
    /// The crash state (`powercut replay --state`).
    pub state: String,
    /// Records issued before the cut.
    pub point: usize,
    /// The last mark before the cut, if any.
    pub last_mark: Option<String>,
    /// What failed: `mount`, `recover`, `check`, `umount` or `fsck`.
    pub stage: String,
    /// What it said.
    pub message: String,
    /// A command that rebuilds exactly this crash image for inspection.
    pub replay: Option<String>,
    /// Which writes made the difference and what they belonged to (files,
    /// inodes, journal), when the violation was explained.
    #[serde(default)]
    pub explanation: Option<String>,
    /// The replay command of the explanation's minimal state, when shrinking changed it.
    #[serde(default)]
    pub minimal_replay: Option<String>,
}

/// Figures for one configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConfigReport {
    /// The configuration.
    pub config: String,
    /// Records in the log.
    pub records: usize,
    /// Write and zero records.
    pub writes: usize,
    /// Flush records.
    pub flushes: usize,
    /// Mark records.
    pub marks: usize,
    /// Log size in bytes.
    pub log_bytes: u64,
    /// Noise fsyncs during the workload.
    pub noise_fsyncs: u64,
    /// Seconds the workload command ran.
    pub workload_secs: f64,
    /// Most WRITEs in flight at once on the recorded disk.
    pub max_in_flight: usize,
    /// Coverage of the crash-state enumeration.
    pub coverage: Coverage,
    /// States checked.
    pub checked: usize,
    /// States that failed.
    pub violation_count: usize,
    /// States whose image was `fsck`ed.
    #[serde(default)]
    pub fsck_runs: usize,
    /// States during whose check the kernel logged a warning or worse about
    /// the device (each of them is `fsck`ed).
    #[serde(default)]
    pub kernel_warnings: usize,
    /// The fsck sample: every image with a kernel warning, plus 1 in this
    /// many of the others (1 = all).
    #[serde(default)]
    pub fsck_sample: u32,
    /// Seconds to record (mkfs, setup, workload, teardown).
    pub record_secs: f64,
    /// Seconds to check all states.
    pub check_secs: f64,
    /// Parallel checkers used.
    pub jobs: usize,
    /// Checked states per second per core used (`min(jobs, cores)`).
    pub states_per_sec_per_core: f64,
    /// Where the base image and log were saved.
    pub artifacts: Option<String>,
    /// The violations (at most 1000 listed).
    pub violations: Vec<Violation>,
    /// The recording and the checked states along the log, for the HTML report.
    #[serde(default)]
    pub timeline: Timeline,
}

/// Which images fsck ran on, in words.
pub fn fsck_summary(c: &ConfigReport) -> String {
    let mut s = format!("{} of {} images", c.fsck_runs, c.checked);
    if c.fsck_sample > 1 {
        let _ = write!(
            s,
            ": the {} the kernel warned about, plus a seeded 1 in {} of the others",
            c.kernel_warnings, c.fsck_sample
        );
    }
    s
}

/// The result of a run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    /// Per configuration.
    pub configs: Vec<ConfigReport>,
    /// Violations over all configurations.
    pub violations: usize,
    /// Distinct states checked over all configurations.
    pub checked: usize,
}

impl Report {
    /// True when every crash state passed.
    pub fn passed(&self) -> bool {
        self.violations == 0
    }

    /// The per-configuration table, as text.
    pub fn table(&self) -> String {
        let mut s = format!(
            "{:<15} {:>7} {:>6} {:>6} {:>9} {:>7} {:>8} {:>8} {:>6} {:>6} {:>7} {:>7} {:>8}\n",
            "config",
            "records",
            "flush",
            "marks",
            "log",
            "points",
            "distinct",
            "checked",
            "fsck",
            "viol",
            "rec s",
            "chk s",
            "st/s/cpu"
        );
        for c in &self.configs {
            let _ = writeln!(
                s,
                "{:<15} {:>7} {:>6} {:>6} {:>8}K {:>7} {:>8} {:>8} {:>6} {:>6} {:>7.1} {:>7.1} {:>8.1}",
                c.config,
                c.records,
                c.flushes,
                c.marks,
                c.log_bytes / 1024,
                c.coverage.crash_points,
                c.coverage.distinct_states,
                c.checked,
                c.fsck_runs,
                c.violation_count,
                c.record_secs,
                c.check_secs,
                c.states_per_sec_per_core
            );
        }
        for c in self.configs.iter().filter(|c| c.fsck_sample > 1) {
            let _ = writeln!(s, "{}: fsck ran on {}", c.config, fsck_summary(c));
        }
        s
    }
}

pub(crate) struct Slot {
    pub(crate) base: Arc<Vec<u8>>,
    pub(crate) disk: Arc<ReplayDisk>,
    pub(crate) stack: DiskStack,
    pub(crate) marks_file: PathBuf,
    pub(crate) kmsg: Kmsg,
    pub(crate) dev_name: String,
    /// The state the disk showed last.
    pub(crate) last: Option<StateSpec>,
}

impl Slot {
    /// A replay stack of its own over `base` and `log`, showing the base.
    pub(crate) fn new(base: &Arc<Vec<u8>>, log: &Arc<Log>) -> io::Result<Slot> {
        let disk = ReplayDisk::new(Arc::clone(base), Arc::clone(log));
        let stack = DiskStack::new(Arc::clone(&disk))?;
        let dev_name = stack
            .dev
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        Ok(Slot {
            base: Arc::clone(base),
            disk,
            marks_file: stack.dir.join("marks"),
            stack,
            kmsg: Kmsg::open(),
            dev_name,
            last: None,
        })
    }

    /// Shows the crash state `spec` on the loop device: drops from the
    /// kernel's caches only the pages that differ from the last state.
    pub(crate) fn switch_to(&mut self, log: &Log, spec: &StateSpec) -> io::Result<()> {
        // Until the kernel's caches are known to match `spec`, nothing is
        // known about what they hold: a failed switch makes the next drop all.
        let candidates = self.last.take().map(|p| changed_sectors(log, &p, spec));
        let changed = self.disk.set_spec(spec, candidates.as_deref());
        self.stack.invalidate_ranges(&changed)?;
        flush_buffers(&self.stack.dev)?;
        self.last = Some(spec.clone());
        Ok(())
    }
}

pub(crate) enum Verdict {
    Pass,
    Fail {
        stage: &'static str,
        message: String,
    },
}

/// Time spent per stage of checking (ns), printed with `POWERCUT_TIMING=1`.
pub(crate) static STAGE_NS: [std::sync::atomic::AtomicU64; 6] =
    [const { std::sync::atomic::AtomicU64::new(0) }; 6];
const STAGE_NAMES: [&str; 6] = ["prepare", "mount", "commands", "umount", "fsck", "total"];

fn lap(stage: usize, t: &mut Instant) {
    let now = Instant::now();
    STAGE_NS[stage].fetch_add((now - *t).as_nanos() as u64, Ordering::Relaxed);
    *t = now;
}

/// What checking one state found beside its verdict.
#[derive(Default, Clone, Copy)]
pub(crate) struct Seen {
    fsck: bool,
    kernel_warning: bool,
}

/// Whether a state whose image hashes to `hash` is in the seeded fsck sample.
fn in_fsck_sample(hash: u128, seed: u64, sample: u32) -> bool {
    sample <= 1
        || Rng::new(seed ^ (hash as u64) ^ ((hash >> 64) as u64)).below(sample as usize) == 0
}

pub(crate) fn check_one(
    cfg: &Config,
    fs: FsConfig,
    slot: &mut Slot,
    log: &Log,
    (spec, hash): (&StateSpec, u128),
) -> io::Result<(Verdict, Seen)> {
    let t_start = Instant::now();
    let mut t = t_start;
    // Only the pages that differ from the last state are dropped from the
    // kernel's cache of the disk file: the rest is read again from memory,
    // not through FUSE (`--verify-images` checks the result).
    slot.switch_to(log, spec)?;
    if cfg.verify_images {
        let seen = fs::read(&slot.stack.dev)?;
        if seen != crate::replay::materialize(log, &slot.base, spec) {
            return Err(err(format!(
                "{fs} state {spec}: the loop device does not show the crash image"
            )));
        }
    }
    let marks = marks_before(log, spec.point);
    let mut text = marks.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    fs::write(&slot.marks_file, text)?;
    // What the kernel says about the device from here to the unmount.
    let _ = slot.kmsg.take_unusual(&slot.dev_name);
    let mut seen = Seen::default();
    lap(0, &mut t);
    if fs.has_fs() {
        if let Err(e) = slot
            .stack
            .mount(fs.fstype(), fs.replay_options(), cfg.timeout)
        {
            return Ok((
                Verdict::Fail {
                    stage: "mount",
                    message: e.to_string(),
                },
                seen,
            ));
        }
    }
    lap(1, &mut t);
    let cwd = work_dir(&slot.stack, fs)?;
    let env = [
        (
            "POWERCUT_DEV",
            slot.stack.dev.to_string_lossy().into_owned(),
        ),
        (
            "POWERCUT_MARKS",
            slot.marks_file.to_string_lossy().into_owned(),
        ),
        ("POWERCUT_STATE", spec.to_string()),
        ("POWERCUT_FS", fs.name().to_string()),
    ];
    let mut verdict = Verdict::Pass;
    let stages = [
        ("recover", cfg.recover.as_deref()),
        ("check", Some(cfg.check.as_str())),
    ];
    for (stage, cmd) in stages {
        let Some(cmd) = cmd else { continue };
        let r = run_with_timeout(&mut shell(cmd, &cwd, &env), cfg.timeout)?;
        if r.code != Some(0) {
            verdict = Verdict::Fail {
                stage,
                message: format!("{}: {}", r.status_text(), r.output.trim()),
            };
            break;
        }
    }
    lap(2, &mut t);
    if let Err(e) = slot.stack.unmount(cfg.timeout) {
        return Err(err(format!("{fs} state {spec}: {e}")));
    }
    lap(3, &mut t);
    seen.kernel_warning = slot
        .kmsg
        .take_unusual(&slot.dev_name)
        .map_or(true, |w| !w.is_empty());
    seen.fsck = cfg.fsck
        && fs.has_fs()
        && matches!(verdict, Verdict::Pass)
        && (seen.kernel_warning || in_fsck_sample(hash, cfg.enumeration.seed, cfg.fsck_sample));
    if seen.fsck {
        let r = run_with_timeout(&mut fs.fsck(&slot.stack.dev), cfg.timeout)?;
        if r.timed_out || !fs.fsck_clean(r.code, &r.output) {
            verdict = Verdict::Fail {
                stage: "fsck",
                message: format!("{}: {}", r.status_text(), fsck_findings(&r.output)),
            };
        }
    }
    lap(4, &mut t);
    STAGE_NS[5].fetch_add(t_start.elapsed().as_nanos() as u64, Ordering::Relaxed);
    Ok((verdict, seen))
}

/// What fsck found, in one line: the first problems it reported (e2fsck's
/// `... Fix? no`, `xfs_repair`'s `would ...`, btrfs's `ERROR: ...`), then the
/// last lines of its output.
fn fsck_findings(output: &str) -> String {
    let problems = output.lines().filter(|l| {
        let l = l.trim();
        l.ends_with("? no") || l.starts_with("would ") || l.starts_with("ERROR")
    });
    let lines: Vec<&str> = output.lines().collect();
    let tail = &lines[lines.len().saturating_sub(4)..];
    problems
        .take(3)
        .chain(tail.iter().copied())
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ")
}

/// A state that failed: its spec, the stage and what it said.
type Failure = (StateSpec, &'static str, String);

/// Checks the chosen states of one recording in parallel.
fn check_states(
    cfg: &Config,
    fs: FsConfig,
    base: &Arc<Vec<u8>>,
    log: &Arc<Log>,
    states: &[(StateSpec, u128)],
    jobs: usize,
) -> io::Result<(Vec<Failure>, [usize; 2])> {
    let next = AtomicUsize::new(0);
    // States fsck'ed, states with a kernel warning.
    let counts = [AtomicUsize::new(0), AtomicUsize::new(0)];
    let done = AtomicUsize::new(0);
    let failures: Mutex<Vec<Failure>> = Mutex::new(Vec::new());
    let fatal: Mutex<Option<io::Error>> = Mutex::new(None);
    let tty = cfg.progress && io::stderr().is_terminal();
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| {
                let mut slot = match Slot::new(base, log) {
                    Ok(slot) => slot,
                    Err(e) => {
                        fatal.lock().unwrap().get_or_insert(e);
                        return;
                    }
                };
                loop {
                    if fatal.lock().unwrap().is_some() {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((spec, hash)) = states.get(i) else {
                        break;
                    };
                    let checked = check_one(cfg, fs, &mut slot, log, (spec, *hash));
                    if let Ok((_, seen)) = &checked {
                        counts[0].fetch_add(usize::from(seen.fsck), Ordering::Relaxed);
                        counts[1].fetch_add(usize::from(seen.kernel_warning), Ordering::Relaxed);
                    }
                    match checked.map(|(v, _)| v) {
                        Ok(Verdict::Pass) => {}
                        Ok(Verdict::Fail { stage, message }) => {
                            failures
                                .lock()
                                .unwrap()
                                .push((spec.clone(), stage, message));
                        }
                        Err(e) => {
                            fatal.lock().unwrap().get_or_insert(e);
                            break;
                        }
                    }
                    let d = done.fetch_add(1, Ordering::Relaxed) + 1;
                    if tty && (d % 10 == 0 || d == states.len()) {
                        let nfail = failures.lock().unwrap().len();
                        let width = 30;
                        let filled = d * width / states.len().max(1);
                        eprint!(
                            "\r[{fs:<14}] [{}{}] {d}/{} states, {nfail} violations ",
                            "#".repeat(filled),
                            " ".repeat(width - filled),
                            states.len()
                        );
                    }
                }
                if let Err(e) = slot.stack.teardown() {
                    fatal.lock().unwrap().get_or_insert(e);
                }
            });
        }
    });
    if tty {
        eprintln!();
    }
    if std::env::var_os("POWERCUT_TIMING").is_some() {
        let n = states.len().max(1) as u64;
        let parts: Vec<String> = STAGE_NAMES
            .iter()
            .zip(&STAGE_NS)
            .map(|(name, ns)| {
                format!(
                    "{name} {:.2}ms",
                    ns.swap(0, Ordering::Relaxed) as f64 / n as f64 / 1e6
                )
            })
            .collect();
        eprintln!("[{fs:<14}] per state: {}", parts.join(", "));
    }
    if let Some(e) = fatal.into_inner().unwrap() {
        return Err(e);
    }
    let mut f = failures.into_inner().unwrap();
    // The whole spec: which violations are explained first must not depend
    // on the order the checkers finished in.
    f.sort_by_key(|(s, _, _)| (s.point, s.keep.clone(), s.torn, s.lie));
    Ok((f, counts.map(AtomicUsize::into_inner)))
}

/// Records and checks one configuration.
pub fn run_config(cfg: &Config, fs: FsConfig) -> io::Result<ConfigReport> {
    if fs.is_flash() {
        return crate::flash::run_config(cfg, fs);
    }
    if fs == FsConfig::UbifsEmulated {
        return crate::flash_emu::run_config(cfg);
    }
    let t0 = Instant::now();
    let rec = record(cfg, fs)?;
    let record_secs = t0.elapsed().as_secs_f64();
    let log = Arc::new(rec.log);
    let base = Arc::new(rec.base);
    let (states, coverage) = enumerate(&log, &base, &cfg.enumeration);
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    // One checker more than cores: each spends part of its time waiting on
    // FUSE round trips, and the extra one fills those gaps (measured +20%).
    let jobs = if cfg.jobs == 0 { cores + 1 } else { cfg.jobs };
    let t1 = Instant::now();
    let (failures, [fsck_runs, kernel_warnings]) =
        check_states(cfg, fs, &base, &log, &states, jobs)?;
    let check_secs = t1.elapsed().as_secs_f64();
    let mut artifacts = None;
    if let Some(dir) = &cfg.artifacts {
        if cfg.save_all || !failures.is_empty() {
            let d = dir.join(fs.name());
            fs::create_dir_all(&d)?;
            save_image(&base, &d.join("base.img"))?;
            log.save(&d.join("log.bin"))?;
            fs::write(d.join("config"), fs.name())?;
            artifacts = Some(d);
        }
    }
    let mut violations: Vec<Violation> = failures
        .iter()
        .take(1000)
        .map(|(spec, stage, message)| Violation {
            config: fs,
            state: spec.to_string(),
            point: spec.point,
            last_mark: marks_before(&log, spec.point).pop(),
            stage: (*stage).to_string(),
            message: message.clone(),
            replay: artifacts.as_ref().map(|d| {
                format!(
                    "powercut replay --from {} --state {spec} --out /tmp/powercut-inspect",
                    d.display()
                )
            }),
            explanation: None,
            minimal_replay: None,
        })
        .collect();
    crate::explain::explain_violations(cfg, fs, &base, &log, &mut violations, cfg.explain);
    Ok(ConfigReport {
        config: fs.name().to_string(),
        records: log.records.len(),
        writes: log.writes(),
        flushes: log.flushes(),
        marks: log.marks(),
        log_bytes: log.stored_size(),
        noise_fsyncs: rec.noise_fsyncs,
        workload_secs: rec.workload_secs,
        max_in_flight: rec.max_in_flight,
        checked: states.len(),
        violation_count: failures.len(),
        fsck_runs,
        kernel_warnings,
        fsck_sample: if cfg.fsck && fs.has_fs() {
            cfg.fsck_sample.max(1)
        } else {
            0
        },
        record_secs,
        check_secs,
        jobs,
        states_per_sec_per_core: states.len() as f64
            / check_secs.max(1e-9)
            / jobs.min(cores) as f64,
        artifacts: artifacts.map(|d| d.display().to_string()),
        violations,
        coverage,
        timeline: Timeline::new(&log, states.iter().map(|(s, _)| s)),
    })
}

/// Runs every configuration of `cfg` and reports.
pub fn run(cfg: &Config) -> io::Result<Report> {
    let (in_vm, here): (Vec<FsConfig>, Vec<FsConfig>) =
        cfg.configs.iter().partition(|&&c| crate::vm::needs_vm(c));
    let mut report = Report::default();
    if !here.is_empty() {
        preflight(&here)?;
        cleanup_dead_runs();
    }
    for &fs in &here {
        let c = run_config(cfg, fs).map_err(|e| err(format!("{fs}: {e}")))?;
        if cfg.progress {
            let mut e = io::stderr().lock();
            let _ = writeln!(
                e,
                "[{fs:<14}] {} records, {} distinct states, {} checked, {} violations ({:.1}s + {:.1}s)",
                c.records, c.coverage.distinct_states, c.checked, c.violation_count, c.record_secs, c.check_secs
            );
        }
        report.violations += c.violation_count;
        report.checked += c.checked;
        report.configs.push(c);
    }
    if !in_vm.is_empty() {
        let names: Vec<&str> = in_vm.iter().map(|c| c.name()).collect();
        for c in crate::vm::run_in_vm(cfg, &in_vm)
            .map_err(|e| err(format!("{}: {e}", names.join(","))))?
        {
            report.violations += c.violation_count;
            report.checked += c.checked;
            report.configs.push(c);
        }
    }
    // Our state directory is empty once every stack is torn down.
    let _ =
        fs::remove_dir(Path::new(crate::stack::STATE_ROOT).join(std::process::id().to_string()));
    Ok(report)
}

/// Rebuilds one crash image from saved artifacts into `out/crash.img`.
pub fn replay_to(from: &Path, spec: &StateSpec, out: &Path) -> io::Result<PathBuf> {
    let log = Log::load(&from.join("log.bin"))?;
    let base = fs::read(from.join("base.img"))?;
    if spec.point > log.records.len() {
        return Err(err(format!(
            "state {spec} is past the end of the log ({} records)",
            log.records.len()
        )));
    }
    let img = crate::replay::materialize(&log, &base, spec);
    fs::create_dir_all(out)?;
    let p = out.join("crash.img");
    fs::write(&p, img)?;
    let marks = marks_before(&log, spec.point);
    fs::write(
        out.join("marks"),
        marks
            .iter()
            .flat_map(|m| [m.as_str(), "\n"])
            .collect::<String>(),
    )?;
    Ok(p)
}

fn default_fsck_sample() -> u32 {
    DEFAULT_FSCK_SAMPLE
}

/// The default fsck sample: every image the kernel warned about, plus a
/// seeded 1 in this many of the others.
pub const DEFAULT_FSCK_SAMPLE: u32 = 10;

/// Default wall-clock timeout for one command.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
