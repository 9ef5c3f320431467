//! `fstx-lab powercut`: the seed experiment, for real. Ten processes loop fstx
//! operations (and, side by side, the unsafe ways people replace files) on a
//! real filesystem whose every block write and cache flush is recorded; every
//! crash state a power cut could leave is then mounted, recovered and checked.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use powercut::FsConfig;
use serde::Serialize;

use fstx_cli::Failure;

use crate::experiment::{self, Contender};

/// Run the power-cut experiment: 10 processes looping transactions, power
/// cut at every point, every crash state checked (fstx side by side with
/// the unsafe recipes people use).
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Filesystem configurations: ext4, ext4-writeback, ext4-journal, xfs,
    /// btrfs, or all.
    #[arg(long, value_delimiter = ',', default_value = "ext4")]
    fs: Vec<String>,
    /// Worker processes.
    #[arg(long, default_value_t = 10)]
    workers: usize,
    /// Seconds each worker loops.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Who writes: fstx and the contenders to compare it with.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "fstx,seed-2002,no-flush,in-place,commit-before-data"
    )]
    contenders: Vec<Contender>,
    /// At most this many distinct crash states per contender and configuration.
    #[arg(long, default_value_t = 400)]
    max_states: usize,
    /// Seed for every random choice of crash states.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Parallel checkers (0: one per core).
    #[arg(long, default_value_t = 0)]
    jobs: usize,
    /// fsck every crash image the kernel warned about, plus a seeded 1 in N
    /// of the others (1 = every image).
    #[arg(long, value_name = "N", default_value_t = powercut::run::DEFAULT_FSCK_SAMPLE)]
    fsck_sample: u32,
    /// Explain the first N violations per writer and configuration: shrink
    /// each to the writes that made the difference and name what they hold
    /// (0 = none).
    #[arg(long, value_name = "N", default_value_t = powercut::explain::DEFAULT_EXPLAIN)]
    explain: usize,
    /// Write the full results as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write the results as one self-contained HTML page to FILE (summary
    /// table, then each writer's timeline, coverage and violations).
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// Keep base images and logs here, to replay violations: DIR/CONTENDER
    /// (and DIR/CONTENDER/allow-weak-fs for the filesystems fstx refuses).
    #[arg(long, value_name = "DIR")]
    artifacts: Option<PathBuf>,
    /// Run on the in-process simulator even where the kernel stack works.
    #[arg(long)]
    sim: bool,
}

/// The hidden commands the experiment runs inside the recorded filesystem.
#[derive(Debug, clap::Args)]
pub(crate) struct InnerArgs {
    #[command(subcommand)]
    action: Inner,
}

#[derive(Debug, clap::Subcommand)]
enum Inner {
    /// Create version 0 of every file.
    Setup(Common),
    /// Run the workers.
    Work(Common),
    /// One worker.
    Worker {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        id: usize,
    },
    /// Boot-time recovery.
    Recover(Common),
    /// Check a recovered crash image.
    Check(Common),
}

#[derive(Debug, clap::Args)]
struct Common {
    #[arg(long, value_enum)]
    contender: Contender,
    #[arg(long, default_value_t = 10)]
    workers: usize,
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Let fstx write on a filesystem it refuses (vfat).
    #[arg(long)]
    allow_weak_fs: bool,
}

/// Runs a hidden inner command (in the current directory).
pub(crate) fn inner(args: &InnerArgs) -> Result<ExitCode, Failure> {
    let root = std::env::current_dir()?;
    let c = match &args.action {
        Inner::Setup(c) | Inner::Work(c) | Inner::Recover(c) | Inner::Check(c) => c,
        Inner::Worker { common, .. } => common,
    };
    experiment::allow_weak_fs(c.allow_weak_fs);
    match &args.action {
        Inner::Setup(c) => experiment::setup(&root, c.contender, c.workers)?,
        Inner::Work(c) => experiment::run_workers(c.contender, c.workers, c.seconds)?,
        Inner::Worker { common: c, id } => {
            experiment::worker(&root, c.contender, *id, c.seconds)?;
        }
        Inner::Recover(c) => experiment::recover(&root, c.contender, c.workers)?,
        Inner::Check(c) => {
            let marks = match std::env::var_os("POWERCUT_MARKS") {
                Some(p) => std::fs::read_to_string(p)?,
                None => String::new(),
            };
            let problems = experiment::check(&root, c.contender, c.workers, &marks);
            if !problems.is_empty() {
                print!("{}", experiment::report_problems(&problems));
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One contender's results.
#[derive(Debug, Serialize)]
struct ContenderReport {
    contender: &'static str,
    writer: &'static str,
    report: powercut::Report,
}

fn parse_fs(names: &[String]) -> Result<Vec<FsConfig>, Failure> {
    FsConfig::parse_list(&names.join(",")).map_err(|e| {
        Failure::new(format!(
            "--fs: {e} (ext4, ext4-writeback, ext4-journal, xfs, btrfs, all; ubifs, jffs2, f2fs, f2fs-strict, vfat, exfat, all-flash, ubifs-emulated)"
        ))
    })
}

/// Whether fstx refuses this configuration's filesystem by default (its
/// rename is not crash-atomic): the experiment runs fstx there with
/// `--allow-weak-fs`, to show what happens.
fn weak(fs: FsConfig) -> bool {
    matches!(fs, FsConfig::Vfat | FsConfig::Exfat)
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Runs `fstx-lab powercut`.
pub(crate) fn run(args: &Args) -> Result<ExitCode, Failure> {
    let configs = parse_fs(&args.fs)?;
    if args.workers == 0 || args.seconds <= 0.0 {
        return Err(Failure::new("--workers and --seconds must be positive"));
    }
    if args.sim {
        no_html_on_sim(args);
        return crate::simrun::run(args.workers, args.seconds, &args.contenders, args.seed);
    }
    let here: Vec<FsConfig> = configs
        .iter()
        .copied()
        .filter(|&c| !powercut::vm::needs_vm(c))
        .collect();
    if let Err(e) = powercut::stack::preflight(&here) {
        eprintln!(
            "fstx-lab powercut: the kernel stack cannot run here ({e}); running the same experiment on the in-process simulator instead"
        );
        no_html_on_sim(args);
        return crate::simrun::run(args.workers, args.seconds, &args.contenders, args.seed);
    }
    let exe = std::env::current_exe()?;
    let exe = quote(&exe.to_string_lossy());
    let mut reports = Vec::new();
    let started = std::time::Instant::now();
    for &contender in &args.contenders {
        eprintln!("== {}: {}", contender.name(), contender.describe());
        let mut report: Option<powercut::Report> = None;
        // Filesystems fstx refuses run apart, with --allow-weak-fs.
        for weak_group in [false, true] {
            let group: Vec<FsConfig> = configs
                .iter()
                .copied()
                .filter(|&c| weak(c) == weak_group)
                .collect();
            if group.is_empty() {
                continue;
            }
            let common = format!(
                "--contender {} --workers {} --seconds {}{}",
                contender.name(),
                args.workers,
                args.seconds,
                if weak_group { " --allow-weak-fs" } else { "" }
            );
            let mut cfg = powercut::Config::new(
                format!("{exe} __powercut work {common}"),
                format!("{exe} __powercut check {common}"),
            );
            cfg.configs = group;
            cfg.setup = Some(format!("{exe} __powercut setup {common}"));
            cfg.recover = Some(format!("{exe} __powercut recover {common}"));
            cfg.enumeration.max_states = args.max_states;
            cfg.enumeration.seed = args.seed;
            cfg.jobs = args.jobs;
            cfg.fsck_sample = args.fsck_sample;
            cfg.explain = args.explain;
            cfg.progress = true;
            // Each group is a run of its own (its own VM in the VM lane):
            // its own directory, so that the second does not overwrite the
            // first's `vm/`.
            cfg.artifacts = args.artifacts.as_ref().map(|d| {
                let d = d.join(contender.name());
                if weak_group {
                    d.join("allow-weak-fs")
                } else {
                    d
                }
            });
            let r = powercut::run(&cfg)?;
            match &mut report {
                None => report = Some(r),
                Some(all) => {
                    all.checked += r.checked;
                    all.violations += r.violations;
                    all.configs.extend(r.configs);
                }
            }
        }
        reports.push(ContenderReport {
            contender: contender.name(),
            writer: contender.describe(),
            report: report.unwrap_or_default(),
        });
    }
    print!("{}", human_report(&configs, &reports));
    println!("time: {:.0} s", started.elapsed().as_secs_f64());
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&reports)
            .map_err(|e| Failure::new(format!("--json: {e}")))?;
        std::fs::write(path, json)
            .map_err(|e| Failure::new(format!("--json {}: {e}", path.display())))?;
    }
    if let Some(path) = &args.html {
        std::fs::write(path, html_report(&configs, &reports, args))
            .map_err(|e| Failure::new(format!("--html {}: {e}", path.display())))?;
        println!("HTML report: {}", path.display());
    }
    // On vfat fstx runs with --allow-weak-fs, as evidence for refusing it:
    // violations there are the expected result, not a failure of fstx.
    let fstx_failed = reports
        .iter()
        .filter(|r| r.contender == Contender::Fstx.name())
        .flat_map(|r| r.report.configs.iter())
        .any(|c| c.violation_count > 0 && !FsConfig::parse(&c.config).is_some_and(weak));
    if fstx_failed {
        return Err(Failure::new(
            "fstx itself failed a crash state: see the report above",
        ));
    }
    Ok(ExitCode::SUCCESS)
}

fn no_html_on_sim(args: &Args) {
    if let Some(p) = &args.html {
        eprintln!(
            "fstx-lab powercut: --html {}: only the run on the real kernel writes an HTML report",
            p.display()
        );
    }
}

fn verdict(c: &powercut::ConfigReport) -> String {
    if c.violation_count == 0 {
        "every state old-or-new, acknowledged data present".to_string()
    } else {
        format!("{} crash states lost or corrupted data", c.violation_count)
    }
}

/// The experiment as one HTML page: fstx against the unsafe writers at the
/// top, then one section (timeline, coverage, violations) per writer and
/// configuration.
fn html_report(configs: &[FsConfig], reports: &[ContenderReport], args: &Args) -> String {
    use powercut::html;
    let mut rows = Vec::new();
    for fs in configs {
        for r in reports {
            if let Some(c) = r.report.configs.iter().find(|c| c.config == fs.name()) {
                rows.push((
                    Some(c.violation_count > 0),
                    vec![
                        fs.name().to_string(),
                        r.contender.to_string(),
                        c.checked.to_string(),
                        c.violation_count.to_string(),
                        format!("{:.1}", c.states_per_sec_per_core),
                        verdict(c),
                    ],
                ));
            }
        }
    }
    let headers = [
        "filesystem",
        "writer",
        "states",
        "violations",
        "st/s/core",
        "verdict",
    ];
    let mut body = vec![html::table("summary", &headers, &rows)];
    let mut who = String::from("<h3>The writers</h3><ul>");
    for r in reports {
        let first = r.report.configs.first().map_or("", |c| c.config.as_str());
        let _ = write!(
            who,
            "<li><a href=\"#{}\"><b>{}</b></a>: {}</li>",
            html::anchor(&format!("{}-{first}", r.contender)),
            html::escape(r.contender),
            html::escape(r.writer)
        );
    }
    who.push_str("</ul>");
    body.push(who);
    for r in reports {
        for c in &r.report.configs {
            let heading = format!("{} on {}", r.contender, c.config);
            body.push(html::section(&heading, c, r.contender));
        }
    }
    let lead = format!(
        "{} worker processes loop each writer's operations for {} s on a real filesystem whose \
         every block write and cache flush is recorded; every crash state a power cut could \
         leave (up to {} per writer and configuration, seed {}) is rebuilt, mounted, recovered \
         and checked.",
        args.workers, args.seconds, args.max_states, args.seed
    );
    html::page("fstx power-cut experiment", &lead, &body)
}

/// The first problem the checker (or mount/fsck) named, as a sentence.
fn first_problem(v: &powercut::Violation) -> String {
    // The harness reports "<exit status>: <output>".
    let text = v
        .message
        .split_once(": ")
        .map_or(v.message.as_str(), |(_, rest)| rest);
    let line = text.lines().next().unwrap_or("").trim();
    match v.stage.as_str() {
        "check" => line.to_string(),
        stage => format!("{stage} failed: {line}"),
    }
}

fn human_report(configs: &[FsConfig], reports: &[ContenderReport]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\nPower-cut experiment: every crash state checked after recovery\n"
    );
    let _ = writeln!(
        s,
        "{:<15} {:<19} {:>8} {:>9} {:>10}  verdict",
        "filesystem", "writer", "states", "violat.", "st/s/core"
    );
    for fs in configs {
        for r in reports {
            let Some(c) = r.report.configs.iter().find(|c| c.config == fs.name()) else {
                continue;
            };
            let mut verdict = verdict(c);
            if weak(*fs) && r.contender == Contender::Fstx.name() {
                verdict.push_str(" (fstx refuses this filesystem; run with --allow-weak-fs)");
            }
            let _ = writeln!(
                s,
                "{:<15} {:<19} {:>8} {:>9} {:>10.1}  {}",
                fs.name(),
                r.contender,
                c.checked,
                c.violation_count,
                c.states_per_sec_per_core,
                verdict
            );
        }
    }
    let _ = writeln!(s, "\nWhat the power cut did to each writer:");
    for r in reports {
        let example = r
            .report
            .configs
            .iter()
            .flat_map(|c| c.violations.iter())
            .find(|v| v.stage == "check")
            .or_else(|| {
                r.report
                    .configs
                    .iter()
                    .flat_map(|c| c.violations.iter())
                    .next()
            });
        match example {
            None => {
                let _ = writeln!(
                    s,
                    "- {} ({}): no violation in {} crash states.",
                    r.contender, r.writer, r.report.checked
                );
            }
            Some(v) => {
                let mark = v
                    .last_mark
                    .as_deref()
                    .map_or("before any acknowledgement".to_string(), |m| {
                        format!("just after '{m}'")
                    });
                let _ = writeln!(
                    s,
                    "- {} ({}): on {}, a power cut at disk record {} ({mark}) left: {}.",
                    r.contender,
                    r.writer,
                    v.config.name(),
                    v.point,
                    first_problem(v)
                );
                if let Some(why) = &v.explanation {
                    let _ = writeln!(s, "  why: {why}");
                }
                if let Some(replay) = &v.replay {
                    let _ = writeln!(s, "  replay it: {replay}");
                }
            }
        }
    }
    s
}
