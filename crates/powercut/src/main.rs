//! `powercut`: cut the power at every point of any program's run on real
//! ext4, xfs and btrfs (and, in a VM, the device's filesystems), and check
//! what survives.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use powercut::{Config, Enumeration, FsConfig, StateSpec};

#[derive(Parser)]
#[command(
    name = "powercut",
    version,
    about = "Power-loss simulator for real ext4, xfs, btrfs, and (in a VM) UBIFS, JFFS2, F2FS, vfat, exFAT"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Record a workload and check every crash state.
    Run(RunArgs),
    /// Rebuild one crash state's image from saved artifacts, for inspection.
    Replay {
        /// Artifacts directory of one configuration (as printed in a violation).
        #[arg(long)]
        from: PathBuf,
        /// The crash state, as printed in a violation (e.g. `p120:k118,119`).
        #[arg(long)]
        state: String,
        /// Directory to write `crash.img` and `marks` into.
        #[arg(long)]
        out: PathBuf,
    },
    /// Record a workload without checking crash states, and print what
    /// reached the disk (writes, bytes, flushes) between the marks it wrote
    /// to `$POWERCUT_CTL`: the physical cost of each stretch of work.
    Stats(StatsArgs),
    /// Clean up mounts and loop devices left by killed earlier runs.
    Cleanup,
    /// The VM lane's guest side (run by `powercut run` inside the VM).
    #[command(hide = true)]
    VmGuest {
        /// The run's configuration (JSON).
        #[arg(long)]
        config: PathBuf,
        /// Where to write the report (JSON).
        #[arg(long)]
        report: PathBuf,
    },
}

#[derive(clap::Args)]
struct StatsArgs {
    /// ext4, ext4-writeback, ext4-journal, xfs, btrfs, all; f2fs, f2fs-strict,
    /// vfat, exfat, all-flash (in the VM lane); raw (comma-separated list allowed).
    #[arg(long, default_value = "ext4")]
    fs: String,
    /// Shell command run in the fresh filesystem before recording.
    #[arg(long)]
    setup: Option<String>,
    /// Shell command measured, run in the mounted filesystem while recording.
    #[arg(long)]
    workload: String,
    /// Every FSYNC reaching the recorded disk takes this long (ms).
    #[arg(long, default_value_t = 0)]
    flush_latency: u64,
    /// Noise interval in ms (0 = no noise process, the default here).
    #[arg(long, default_value_t = 0)]
    noise_ms: u64,
    /// ext4/btrfs `commit=1`, xfs sync interval 1 s (default: the filesystems' own).
    #[arg(long)]
    short_commit: bool,
    /// Timeout in seconds for each command.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
}

#[derive(clap::Args)]
#[allow(clippy::struct_excessive_bools)]
struct RunArgs {
    /// ext4, ext4-writeback, ext4-journal, xfs, btrfs, all; f2fs, f2fs-strict,
    /// vfat, exfat, all-flash (in the VM lane); raw (comma-separated list allowed).
    #[arg(long, default_value = "ext4")]
    fs: String,
    /// Shell command run in the fresh filesystem before recording.
    #[arg(long)]
    setup: Option<String>,
    /// Shell command under test, run in the mounted filesystem while recording.
    #[arg(long)]
    workload: String,
    /// Shell command run in each mounted crash image before the checker.
    #[arg(long)]
    recover: Option<String>,
    /// Shell command run in each mounted crash image; non-zero exit = violation.
    #[arg(long)]
    check: String,
    /// Skip fsck of crash images.
    #[arg(long)]
    no_fsck: bool,
    /// fsck every crash image the kernel logged a warning about, plus a
    /// seeded 1 in N of the others (1 = every image).
    #[arg(long, value_name = "N", default_value_t = powercut::run::DEFAULT_FSCK_SAMPLE)]
    fsck_sample: u32,
    /// Noise interval in ms (0 = no noise process).
    #[arg(long, default_value_t = 5)]
    noise_ms: u64,
    /// Keep the filesystems' default commit intervals.
    #[arg(long)]
    no_short_commit: bool,
    /// Maximum WRITE completion delay in µs (0 = complete at once, in order).
    #[arg(long, default_value_t = 300)]
    write_delay_us: u64,
    /// Every FSYNC reaching the recorded disk takes this long.
    #[arg(long, default_value_t = 0)]
    flush_latency: u64,
    /// Torn-write variants per crash point.
    #[arg(long, default_value_t = 0)]
    torn: usize,
    /// Lying-flash variants per crash point (corrupt recently flushed sectors).
    #[arg(long, default_value_t = 0)]
    lying_flash: usize,
    /// Volatile sets up to this size are enumerated exhaustively.
    #[arg(long, default_value_t = 5)]
    exhaustive: usize,
    /// Random subsets per crash point for larger volatile sets.
    #[arg(long, default_value_t = 8)]
    subsets: usize,
    /// Check at most this many distinct states per configuration (0 = all).
    #[arg(long, default_value_t = 2000)]
    max_states: usize,
    /// Seed for sampling and delays.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Parallel checkers (0 = one per core, plus one; on raw flash at
    /// most 15).
    #[arg(long, short = 'j', default_value_t = 0)]
    jobs: usize,
    /// Timeout in seconds for each command.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// Write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the report as one self-contained HTML page to this file.
    #[arg(long)]
    html: Option<PathBuf>,
    /// Where to save base images and logs (for `powercut replay`).
    #[arg(long)]
    artifacts: Option<PathBuf>,
    /// Save artifacts even for configurations without violations.
    #[arg(long)]
    save_all: bool,
    /// Self-test: compare the loop device with the rebuilt image before each check (slow).
    #[arg(long)]
    verify_images: bool,
    /// No progress output.
    #[arg(long, short = 'q')]
    quiet: bool,
    /// Explain every violation (default: the first 5 per configuration).
    #[arg(long, conflicts_with = "no_explain")]
    explain_all: bool,
    /// Do not explain violations (no shrinking, no block owners).
    #[arg(long)]
    no_explain: bool,
}

fn parse_fs(s: &str) -> Result<Vec<FsConfig>, String> {
    FsConfig::parse_list(s)
}

fn try_main() -> Result<ExitCode, String> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::VmGuest { config, report } => {
            powercut::vm::guest_main(&config, &report).map_err(|e| e.to_string())?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Cleanup => {
            powercut::stack::cleanup_dead_runs();
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Stats(a) => {
            let mut cfg = Config::new(a.workload, "true");
            cfg.configs = parse_fs(&a.fs)?;
            cfg.setup = a.setup;
            cfg.noise = (a.noise_ms > 0).then(|| Duration::from_millis(a.noise_ms));
            cfg.short_commit = a.short_commit;
            // Writes complete at once and in order, so a write lands in the
            // segment of the work that issued it.
            cfg.write_delay = None;
            cfg.flush_latency = Duration::from_millis(a.flush_latency);
            cfg.timeout = Duration::from_secs(a.timeout);
            powercut::stack::preflight(&cfg.configs).map_err(|e| e.to_string())?;
            powercut::stack::cleanup_dead_runs();
            for &fs in &cfg.configs {
                let rec = powercut::run::record(&cfg, fs).map_err(|e| format!("{fs}: {e}"))?;
                for s in rec.log.segments() {
                    println!(
                        "segment fs={fs} writes={} bytes={} zeroed={} flushes={} mark={}",
                        s.writes, s.bytes, s.zeroed, s.flushes, s.mark
                    );
                }
                println!(
                    "total fs={fs} writes={} flushes={} marks={} workload_secs={:.3}",
                    rec.log.writes(),
                    rec.log.flushes(),
                    rec.log.marks(),
                    rec.workload_secs
                );
            }
            let state = std::path::Path::new(powercut::stack::STATE_ROOT);
            let _ = std::fs::remove_dir(state.join(std::process::id().to_string()));
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Replay { from, state, out } => {
            let spec: StateSpec = state.parse()?;
            let img = powercut::run::replay_to(&from, &spec, &out).map_err(|e| e.to_string())?;
            let cfg = std::fs::read_to_string(from.join("config")).unwrap_or_default();
            let opts = FsConfig::parse(cfg.trim()).map_or("", FsConfig::replay_options);
            println!("{}", img.display());
            println!(
                "inspect with: mkdir -p {0}/mnt && mount -o loop,{opts} {1} {0}/mnt",
                out.display(),
                img.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Run(a) => {
            let workload = a.workload.clone();
            let mut cfg = Config::new(a.workload, a.check);
            cfg.configs = parse_fs(&a.fs)?;
            cfg.setup = a.setup;
            cfg.recover = a.recover;
            cfg.fsck = !a.no_fsck;
            cfg.fsck_sample = a.fsck_sample;
            cfg.noise = (a.noise_ms > 0).then(|| Duration::from_millis(a.noise_ms));
            cfg.short_commit = !a.no_short_commit;
            cfg.write_delay =
                (a.write_delay_us > 0).then(|| Duration::from_micros(a.write_delay_us));
            cfg.flush_latency = Duration::from_millis(a.flush_latency);
            cfg.enumeration = Enumeration {
                exhaustive_up_to: a.exhaustive,
                random_subsets: a.subsets,
                torn: a.torn,
                lying_flash: a.lying_flash,
                max_states: a.max_states,
                seed: a.seed,
            };
            cfg.jobs = a.jobs;
            cfg.timeout = Duration::from_secs(a.timeout);
            cfg.artifacts = Some(a.artifacts.unwrap_or_else(|| {
                std::env::temp_dir().join(format!("powercut-{}", std::process::id()))
            }));
            cfg.save_all = a.save_all;
            cfg.progress = !a.quiet;
            cfg.verify_images = a.verify_images;
            if a.explain_all {
                cfg.explain = usize::MAX;
            } else if a.no_explain {
                cfg.explain = 0;
            }
            let report = powercut::run(&cfg).map_err(|e| e.to_string())?;
            print!("{}", report.table());
            for c in &report.configs {
                for v in &c.violations {
                    println!(
                        "VIOLATION {} {} [{}] after {:?}: {}",
                        v.config, v.state, v.stage, v.last_mark, v.message
                    );
                    if let Some(e) = &v.explanation {
                        println!("  explanation: {e}");
                    }
                    if let Some(r) = &v.replay {
                        println!("  replay: {r}");
                    }
                    if let Some(r) = &v.minimal_replay {
                        println!("  replay minimal: {r}");
                    }
                }
                if c.violation_count > c.violations.len() {
                    println!(
                        "  ... {} more violations on {}",
                        c.violation_count - c.violations.len(),
                        c.config
                    );
                }
            }
            println!(
                "{} states checked, {} violations",
                report.checked, report.violations
            );
            if let Some(path) = a.json {
                let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
                std::fs::write(&path, text)
                    .map_err(|e| format!("writing {}: {e}", path.display()))?;
            }
            if let Some(path) = a.html {
                let html = powercut::html::report(&report, &format!("powercut run: {workload}"));
                std::fs::write(&path, html)
                    .map_err(|e| format!("writing {}: {e}", path.display()))?;
            }
            Ok(if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}

fn main() -> ExitCode {
    match try_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("powercut: {e}");
            ExitCode::from(2)
        }
    }
}
