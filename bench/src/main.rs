//! `fstx-bench`: fstx side by side with atomic-write-file, atomicwrites,
//! tempfile and hand-written recipes (issue 17). `scripts/bench` runs it.
//!
//! ```text
//! fstx-bench run [--quick] [--media cwd,ext4,xfs,btrfs] [--seed N]
//!                [--scratch DIR] [--powercut PATH] [--out FILE.md]
//!                [--chart FILE.svg] [--command TEXT]
//! ```
//!
//! Every workload interleaves its contenders in shuffled rounds (seeded) and
//! prints medians, min–max and the median of per-round ratios against a
//! named baseline. Nothing here asserts a timing.

mod contenders;
mod media;
mod physical;
mod report;
mod stats;
mod workloads;

use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use fstx_testkit::rng::Rng;

use crate::media::Medium;
use crate::stats::Table;

/// How much of everything to run.
#[derive(Debug, Clone)]
pub struct Plan {
    quick: bool,
    /// Rounds of W1.
    rounds: usize,
    /// W1 replaces per contender and round (W1's total is `rounds` × this).
    w1_ops: usize,
    w2_bytes: u64,
    w2_rounds: usize,
    w3_ns: Vec<usize>,
    w3_rounds: usize,
    w4_threads: usize,
    w4_ops: usize,
    w4_rounds: usize,
    w5_files: usize,
    w5_rounds: usize,
    /// Loop images' size.
    image_bytes: u64,
    strace_ops: usize,
    strace_n: usize,
    phys_w1_ops: usize,
    phys_ns: Vec<usize>,
    phys_rounds: usize,
    lat_w1_ops: usize,
    lat_ns: Vec<usize>,
    lat_rounds: usize,
}

impl Plan {
    fn full() -> Plan {
        Plan {
            quick: false,
            rounds: 4,
            w1_ops: 500,
            w2_bytes: 1 << 30,
            w2_rounds: 3,
            w3_ns: vec![1000, 200],
            w3_rounds: 3,
            w4_threads: 8,
            w4_ops: 250,
            w4_rounds: 3,
            w5_files: 1000,
            w5_rounds: 5,
            image_bytes: 4 << 30,
            strace_ops: 20,
            strace_n: 100,
            phys_w1_ops: 20,
            phys_ns: vec![200],
            phys_rounds: 2,
            lat_w1_ops: 20,
            lat_ns: vec![1, 200],
            lat_rounds: 3,
        }
    }

    fn quick() -> Plan {
        Plan {
            quick: true,
            rounds: 2,
            w1_ops: 20,
            w2_bytes: 8 << 20,
            w2_rounds: 2,
            w3_ns: vec![50, 10],
            w3_rounds: 2,
            w4_threads: 8,
            w4_ops: 5,
            w4_rounds: 2,
            w5_files: 20,
            w5_rounds: 2,
            image_bytes: 512 << 20,
            strace_ops: 3,
            strace_n: 10,
            phys_w1_ops: 3,
            phys_ns: vec![10],
            phys_rounds: 1,
            lat_w1_ops: 3,
            lat_ns: vec![1, 10],
            lat_rounds: 1,
        }
    }
}

struct Args {
    plan: Plan,
    media: Vec<String>,
    seed: u64,
    scratch: PathBuf,
    powercut: Option<PathBuf>,
    out: PathBuf,
    chart: PathBuf,
    command: String,
}

fn parse_args(argv: &[String]) -> Result<Args, String> {
    let quick = argv.iter().any(|a| a == "--quick");
    let mut a = Args {
        plan: if quick { Plan::quick() } else { Plan::full() },
        media: if quick {
            vec!["cwd".into()]
        } else {
            ["cwd", "ext4", "xfs", "btrfs"].map(String::from).to_vec()
        },
        seed: 1,
        scratch: std::env::current_dir()
            .map_err(|e| e.to_string())?
            .join(format!("bench-scratch-{}", std::process::id())),
        powercut: None,
        out: PathBuf::from("benchmarks.md"),
        chart: PathBuf::from("benchmarks.svg"),
        command: format!("fstx-bench {}", argv.join(" ")),
    };
    let mut it = argv.iter();
    while let Some(k) = it.next() {
        if k == "--quick" {
            continue;
        }
        let mut v = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{k} needs a value"))
        };
        match k.as_str() {
            "--media" => a.media = v()?.split(',').map(String::from).collect(),
            "--seed" => a.seed = v()?.parse().map_err(|_| "--seed: a number")?,
            "--scratch" => a.scratch = PathBuf::from(v()?),
            "--powercut" => a.powercut = Some(PathBuf::from(v()?)),
            "--out" => a.out = PathBuf::from(v()?),
            "--chart" => a.chart = PathBuf::from(v()?),
            "--command" => a.command = v()?,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

fn say(msg: &str) {
    eprintln!(
        "[bench {:>6.1}s] {msg}",
        START.with(|s| s.elapsed().as_secs_f64())
    );
}

thread_local! {
    static START: Instant = Instant::now();
}

fn machine() -> String {
    let sh = |c: &str| {
        media::run("sh", &["-c", c])
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    format!(
        "{} cores (`nproc`: {}), {}, {} MiB RAM; kernel {}",
        sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"),
        sh("nproc"),
        sh("uname -m"),
        sh("awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo"),
        sh("uname -r"),
    )
}

/// The 1-, 5- and 15-minute load averages (`/proc/loadavg`).
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn run(a: &Args) -> io::Result<()> {
    START.with(|_| ());
    let load_start = loadavg();
    let p = &a.plan;
    let mut rng = Rng::new(a.seed);
    std::fs::create_dir_all(&a.scratch)?;
    let mut tables: Vec<Table> = Vec::new();
    let mut media_labels = Vec::new();
    for key in &a.media {
        let m = if key == "cwd" {
            Medium::cwd(&a.scratch)?
        } else {
            say(&format!("mkfs {key} on a loop device"));
            Medium::loop_fs(&a.scratch, key, p.image_bytes)?
        };
        media_labels.push(m.label.clone());
        say(&format!("{}: W1", m.label));
        tables.push(workloads::w1(p, &m, &mut rng)?);
        say(&format!("{}: W2", m.label));
        tables.push(workloads::w2(p, &m, &mut rng)?);
        for &n in &p.w3_ns {
            say(&format!("{}: W3 N={n}", m.label));
            tables.push(workloads::w3(p, &m, &mut rng, n)?);
        }
        say(&format!("{}: W4", m.label));
        tables.push(workloads::w4(p, &m, &mut rng)?);
        say(&format!("{}: W5", m.label));
        tables.push(workloads::w5(p, &m, &mut rng)?);
        for t in &tables[tables.len() - 4 - p.w3_ns.len()..] {
            eprint!("{}", report::table_md(t));
        }
    }
    say("syscalls (strace -f -c)");
    let cwd_scratch = a.scratch.join("strace");
    std::fs::create_dir_all(&cwd_scratch)?;
    let syscalls = physical::syscalls(&cwd_scratch, p.strace_ops, p.strace_n, 1);
    let _ = std::fs::remove_dir_all(&cwd_scratch);
    let mut counts = None;
    let mut latency = None;
    if let Some(pc) = &a.powercut {
        let fs_list = if p.quick { "ext4" } else { "ext4,xfs,btrfs" };
        say(&format!("powercut stats on {fs_list}"));
        let w = physical::phys_command(p.phys_w1_ops, &p.phys_ns, p.phys_rounds, a.seed)?;
        counts = Some(physical::powercut_stats(pc, fs_list, 0, &w)?);
        say("powercut stats on ext4, 5 ms flushes");
        let w = physical::phys_command(p.lat_w1_ops, &p.lat_ns, p.lat_rounds, a.seed)?;
        latency = Some(physical::powercut_stats(pc, "ext4", 5, &w)?);
    }
    say("writing the report");
    let load = format!("{load_start} at the start, {} at the end", loadavg());
    let md = render(
        a,
        &load,
        &tables,
        &media_labels,
        &syscalls,
        counts.as_deref(),
        latency.as_deref(),
    );
    if let Some(d) = a.out.parent() {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(&a.out, md)?;
    report::chart(&tables, &a.chart)?;
    std::fs::remove_dir_all(&a.scratch)?;
    say(&format!(
        "wrote {} and {}",
        a.out.display(),
        a.chart.display()
    ));
    Ok(())
}

fn headline(tables: &[Table]) -> String {
    let mut s = String::from("| workload | medium | fstx | time ÷ baseline |\n|---|---|---|---|\n");
    for t in tables {
        let who = if t.workload.starts_with("W3") {
            "fstx txn"
        } else {
            "fstx"
        };
        if t.baseline.is_empty() {
            if let Some(r) = t.rows.first() {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {:.1} ms (median) |",
                    t.workload,
                    t.medium,
                    r.name,
                    stats::median(&r.samples) * 1e3
                );
            }
            continue;
        }
        let _ = writeln!(
            s,
            "| {} | {} | {who} | {:.2}× {} |",
            t.workload,
            t.medium,
            t.time_ratio(who),
            t.baseline
        );
    }
    s
}

fn render(
    args: &Args,
    load: &str,
    tables: &[Table],
    media_labels: &[String],
    syscalls: &io::Result<Vec<physical::Syscalls>>,
    counts: Option<&[physical::Stretch]>,
    latency: Option<&[physical::Stretch]>,
) -> String {
    let p = &args.plan;
    let mut s = String::new();
    let chart_name = args
        .chart
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let _ = writeln!(s, "# Benchmarks\n");
    let _ = writeln!(
        s,
        "Generated by the benchmark itself (`bench/`, its own workspace), {}. \
         Command: `{}`. fstx at `{}`.\n",
        media::run("date", &["-u", "+%Y-%m-%d %H:%M UTC"])
            .unwrap_or_default()
            .trim(),
        args.command,
        media::run("git", &["rev-parse", "--short", "HEAD"])
            .unwrap_or_default()
            .trim(),
    );
    let _ = writeln!(
        s,
        "Machine: {}. Load average (1, 5, 15 min): {load}. Media: {}.\n",
        machine(),
        media_labels.join(", ")
    );
    let _ = writeln!(
        s,
        "Each workload runs its contenders interleaved in shuffled rounds (seed {}); a table \
         gives the median and min–max over rounds, and the **median of per-round ratios** \
         against the named baseline (ratios hold when the machine's speed drifts; absolute \
         times do not). Every sample starts after a `syncfs`; work a transaction's commit \
         leaves for later (if any) is done by the next `begin` and counted in the next sample. The machine is shared: other \
         processes' I/O lands in some samples (see min–max). Timings are never asserted in tests.\n",
        args.seed
    );
    let _ = writeln!(
        s,
        "## Headline\n\n{}\n![time ratios]({chart_name})\n",
        headline(tables)
    );
    let _ = writeln!(
        s,
        "Contenders: `fstx` (`fstx::write`, `Options::open` + `commit` when streaming, \
         `Transaction`, `recover`), `atomic-write-file` (0.3), `atomicwrites` (0.4), \
         `tempfile+fsyncs` (`NamedTempFile` + fsync + `persist` + fsync(dir)), `hand-written` \
         (std: `O_EXCL` temp + write + fsync + rename + fsync(dir)), batches (write all temp \
         files, one `syncfs` or fsyncs on 8 threads, rename all, one fsync(dir); no \
         atomicity), and `raw-floor` (W1: `pwrite` in place + `fdatasync`; W2: truncate + \
         write + fsync; not atomic).\n"
    );
    let mut wls: Vec<&str> = Vec::new();
    for t in tables {
        if !wls.contains(&t.workload.as_str()) {
            wls.push(&t.workload);
        }
    }
    for w in wls {
        let _ = writeln!(s, "## {w}\n");
        for t in tables.iter().filter(|t| t.workload == w) {
            s.push_str(&report::table_md(t));
        }
    }
    let _ = writeln!(s, "## Syscalls per operation\n");
    let _ = writeln!(
        s,
        "`strace -f -c` of a child process doing K operations minus the same child doing \
         none (setup and process start cancel out), divided by K (W1: K = {}; W3: one batch \
         of {} files). Working directory's filesystem.\n",
        p.strace_ops, p.strace_n
    );
    match syscalls {
        Ok(rows) => s.push_str(&report::syscalls_md(rows)),
        Err(e) => {
            let _ = writeln!(s, "Not measured: {e}.");
        }
    }
    s.push('\n');
    let _ = writeln!(s, "## Flushes and bytes reaching the disk\n");
    match (counts, latency) {
        (Some(c), Some(l)) => {
            let _ = writeln!(
                s,
                "From the power-cut recorder (`powercut stats`: a FUSE-recorded RAM disk under a \
                 loop device, a fresh filesystem, no noise, the filesystems' default commit \
                 intervals): cache flushes, bytes and write requests that reached the disk \
                 between the marks the workload wrote around each contender's operations \
                 (W1: {} replaces; W3: one batch; median of {} round(s)).\n",
                p.phys_w1_ops, p.phys_rounds
            );
            s.push_str(&report::phys_md(c, false));
            let _ = writeln!(
                s,
                "\n### On a disk whose flushes take 5 ms (`powercut stats --flush-latency 5`, ext4)\n\n\
                 An eMMC-like flush: flush rounds dominate, as on a device (W1: {} replaces, \
                 median of {} rounds; time ÷ baseline: W1 against `hand-written`, W3 against `batch syncfs` of the same N).\n",
                p.lat_w1_ops, p.lat_rounds
            );
            s.push_str(&report::phys_md(l, true));
        }
        _ => {
            let _ = writeln!(s, "Not measured in this run (no `--powercut`).");
        }
    }
    s
}

fn try_main() -> Result<(), String> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    match argv.first().map(String::as_str) {
        Some("run") => {
            let a = parse_args(&argv[1..])?;
            run(&a).map_err(|e| e.to_string())
        }
        Some("__ops") => physical::ops_main(&argv[1..]).map_err(|e| e.to_string()),
        Some("__phys") => physical::phys_main(&argv[1..]).map_err(|e| e.to_string()),
        Some("__w5-child") => {
            let root = argv.get(1).ok_or("__w5-child ROOT N")?;
            let n = argv
                .get(2)
                .and_then(|n| n.parse().ok())
                .ok_or("__w5-child ROOT N")?;
            workloads::w5_child(Path::new(root), n).map_err(|e| e.to_string())
        }
        _ => Err(
            "usage: fstx-bench run [--quick] [--media cwd,ext4,xfs,btrfs] [--seed N] \
                  [--scratch DIR] [--powercut PATH] [--out FILE.md] [--chart FILE.svg]"
                .into(),
        ),
    }
}

fn main() -> ExitCode {
    match try_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fstx-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
