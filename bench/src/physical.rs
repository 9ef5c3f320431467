//! Physical costs per operation: system calls (`strace -f -c`, a run of K
//! operations minus a run of zero, divided by K, so process start and setup
//! cancel out) and what reaches the disk (the power-cut recorder's
//! `powercut stats`: writes, bytes and cache flushes between the marks the
//! workload writes around each contender's operations).

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use fstx_testkit::rng::Rng;

use crate::contenders::{syncfs, Batch, Replace};
use crate::workloads::{batch_names, replace_loop, seed_batch, seed_file};

/// What one operation cost in system calls.
#[derive(Debug, Clone)]
pub struct Syscalls {
    /// Contender name.
    pub name: String,
    /// What one operation is.
    pub op: String,
    /// All system calls per operation.
    pub total: f64,
    /// Per system call name, per operation (non-zero only).
    pub by_name: BTreeMap<String, f64>,
}

/// Parses `strace -c` output: calls per system call name.
fn parse_strace(text: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 5 || f[0].parse::<f64>().is_err() {
            continue;
        }
        let name = f[f.len() - 1];
        if name == "total" {
            continue;
        }
        if let Ok(calls) = f[3].parse::<u64>() {
            out.insert(name.to_string(), calls);
        }
    }
    out
}

fn strace_run(scratch: &Path, tag: &str, args: &[String]) -> io::Result<BTreeMap<String, u64>> {
    let out = scratch.join(format!("strace-{tag}.txt"));
    let st = Command::new("strace")
        .args(["-f", "-c", "-o"])
        .arg(&out)
        .arg(std::env::current_exe()?)
        .arg("__ops")
        .args(args)
        .status()?;
    if !st.success() {
        return Err(io::Error::other(format!("strace of {args:?} failed: {st}")));
    }
    let text = fs::read_to_string(&out)?;
    fs::remove_file(&out)?;
    Ok(parse_strace(&text))
}

/// System calls per operation of `args` (the `__ops` arguments without the
/// count, which is appended): (run with `k`) − (run with 0), divided by `k`.
fn per_op(scratch: &Path, name: &str, op: &str, args: &[String], k: usize) -> io::Result<Syscalls> {
    let mut runs = Vec::new();
    for n in [0, k] {
        let dir = scratch.join(format!("strace-dir-{n}"));
        let _ = fs::remove_dir_all(&dir);
        let mut a = args.to_vec();
        a.insert(1, dir.to_string_lossy().into_owned());
        a.push(n.to_string());
        runs.push(strace_run(scratch, &n.to_string(), &a)?);
        fs::remove_dir_all(&dir)?;
    }
    let mut by_name = BTreeMap::new();
    for (sys, &calls) in &runs[1] {
        let base = runs[0].get(sys).copied().unwrap_or(0);
        let d = calls as f64 - base as f64;
        if d.abs() > 1e-9 {
            by_name.insert(sys.clone(), d / k as f64);
        }
    }
    Ok(Syscalls {
        name: name.to_string(),
        op: op.to_string(),
        total: by_name.values().sum(),
        by_name,
    })
}

/// Syscalls per W1 replace of every contender and per W3 batch of `n` files.
pub fn syscalls(scratch: &Path, k: usize, n: usize, k3: usize) -> io::Result<Vec<Syscalls>> {
    if Command::new("strace").arg("-V").output().is_err() {
        return Err(io::Error::other("strace is not installed"));
    }
    let mut out = Vec::new();
    for c in Replace::ALL {
        let args = vec!["w1".to_string(), c.name().to_string()];
        out.push(per_op(scratch, c.name(), "one 4 KiB replace", &args, k)?);
    }
    for c in Batch::ALL {
        let args = vec!["w3".to_string(), c.key().to_string(), n.to_string()];
        out.push(per_op(
            scratch,
            c.name(),
            &format!("a batch of {n} files"),
            &args,
            k3,
        )?);
    }
    Ok(out)
}

/// `fstx-bench __ops w1 NAME DIR K` / `__ops w3 KEY DIR N K`: setup, then K operations.
pub fn ops_main(args: &[String]) -> io::Result<()> {
    let bad = || io::Error::other(format!("bad __ops arguments {args:?}"));
    let kind = args.first().ok_or_else(bad)?;
    let num = |i: usize| -> io::Result<usize> {
        args.get(i).and_then(|s| s.parse().ok()).ok_or_else(bad)
    };
    let dir = PathBuf::from(args.get(1).ok_or_else(bad)?);
    fs::create_dir_all(&dir)?;
    match kind.as_str() {
        "w1" => {
            let c = Replace::parse(args.get(2).ok_or_else(bad)?).ok_or_else(bad)?;
            let p = seed_file(&dir, "state")?;
            replace_loop(c, &dir, &p, num(3)?, 1)?;
        }
        "w3" => {
            let c = Batch::parse(args.get(2).ok_or_else(bad)?).ok_or_else(bad)?;
            let names = batch_names(num(3)?);
            seed_batch(c, &dir, &names)?;
            for r in 0..num(4)? {
                c.run(&dir, &names, &|i| {
                    crate::contenders::content(4096, (r * 1_000_000 + i + 1) as u64)
                })?;
            }
        }
        _ => return Err(bad()),
    }
    Ok(())
}

/// One contender's recorded stretch: what reached the disk, and how long it took.
#[derive(Debug, Clone)]
pub struct Stretch {
    /// Filesystem configuration (`ext4`, ...).
    pub fs: String,
    /// `w1` or `w3-N`.
    pub workload: String,
    /// Contender name.
    pub name: String,
    /// Operations in the stretch (replaces, or batches).
    pub ops: u64,
    /// Write requests.
    pub writes: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Cache flushes.
    pub flushes: u64,
    /// Wall time in seconds.
    pub secs: f64,
}

/// The workload `powercut stats` runs (in the recorded filesystem): each
/// W1 contender for `w1_ops` replaces and each W3 contender for one batch of
/// each size in `w3_ns`, in `rounds` shuffled rounds, marked.
pub fn phys_command(
    w1_ops: usize,
    w3_ns: &[usize],
    rounds: usize,
    seed: u64,
) -> io::Result<String> {
    let exe = std::env::current_exe()?;
    let ns: Vec<String> = w3_ns.iter().map(ToString::to_string).collect();
    Ok(format!(
        "'{}' __phys {w1_ops} {} {rounds} {seed}",
        exe.display(),
        if ns.is_empty() {
            "-".into()
        } else {
            ns.join(",")
        }
    ))
}

/// A marked job: (workload label, contender name, the work; returns its operation count).
type Job = (String, String, Box<dyn FnMut() -> io::Result<u64>>);

/// `fstx-bench __phys W1_OPS NS ROUNDS SEED`, in the recorded filesystem.
pub fn phys_main(args: &[String]) -> io::Result<()> {
    let bad = || io::Error::other(format!("bad __phys arguments {args:?}"));
    let num =
        |i: usize| -> io::Result<u64> { args.get(i).and_then(|s| s.parse().ok()).ok_or_else(bad) };
    let w1_ops = num(0)? as usize;
    let ns: Vec<usize> = match args.get(1).map(String::as_str) {
        Some("-") => Vec::new(),
        Some(s) => s
            .split(',')
            .map(|n| n.parse().map_err(|_| bad()))
            .collect::<io::Result<_>>()?,
        None => return Err(bad()),
    };
    let rounds = num(2)? as usize;
    let mut rng = Rng::new(num(3)?);
    let ctl =
        std::env::var_os("POWERCUT_CTL").ok_or_else(|| io::Error::other("no $POWERCUT_CTL"))?;
    let mut ctl = fs::OpenOptions::new().append(true).open(ctl)?;
    let mut mark = |s: String| -> io::Result<()> { ctl.write_all(format!("{s}\n").as_bytes()) };
    let here = std::env::current_dir()?;
    let mut jobs: Vec<Job> = Vec::new();
    for c in Replace::ALL {
        let d = here.join("w1").join(c.name());
        fs::create_dir_all(&d)?;
        let p = seed_file(&d, "state")?;
        let mut v = 1;
        jobs.push((
            "w1".into(),
            c.name().into(),
            Box::new(move || {
                replace_loop(c, &d, &p, w1_ops, v)?;
                v += w1_ops as u64;
                Ok(w1_ops as u64)
            }),
        ));
    }
    for &n in &ns {
        for c in Batch::ALL {
            let d = here.join(format!("w3-{n}")).join(c.key());
            fs::create_dir_all(&d)?;
            let names = batch_names(n);
            seed_batch(c, &d, &names)?;
            let mut v = 1u64;
            jobs.push((
                format!("w3-{n}"),
                c.name().into(),
                Box::new(move || {
                    let base = v;
                    c.run(&d, &names, &|i| {
                        crate::contenders::content(4096, base * 1_000_000 + i as u64)
                    })?;
                    v += 1;
                    Ok(1)
                }),
            ));
        }
    }
    let mut order: Vec<usize> = (0..jobs.len()).collect();
    for _ in 0..rounds {
        rng.shuffle(&mut order);
        for &j in &order {
            syncfs(&here)?;
            let (wl, name, run) = &mut jobs[j];
            let key = name.replace(' ', "_");
            mark(format!("start {wl} {key}"))?;
            let t0 = Instant::now();
            let ops = run()?;
            let ns = t0.elapsed().as_nanos();
            mark(format!("end {wl} {key} ns={ns} ops={ops}"))?;
        }
    }
    Ok(())
}

/// Runs `powercut stats` on `fs` (comma list) with the marked workload and
/// returns every contender's stretches.
pub fn powercut_stats(
    powercut: &Path,
    fs: &str,
    flush_latency_ms: u64,
    workload: &str,
) -> io::Result<Vec<Stretch>> {
    let out = Command::new(powercut)
        .args(["stats", "--timeout", "1200", "--fs", fs])
        .args(["--flush-latency", &flush_latency_ms.to_string()])
        .args(["--workload", workload])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "powercut stats failed: {}{}",
            text,
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(parse_segments(&text))
}

fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split(' ')
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

/// Pairs each `start W C` segment with the `end W C ns=.. ops=..` mark after it.
fn parse_segments(text: &str) -> Vec<Stretch> {
    let segs: Vec<&str> = text.lines().filter(|l| l.starts_with("segment ")).collect();
    let mut out = Vec::new();
    for w in segs.windows(2) {
        let (s, e) = (w[0], w[1]);
        let (Some(sm), Some(em)) = (s.split_once(" mark="), e.split_once(" mark=")) else {
            continue;
        };
        let Some(start) = sm.1.strip_prefix("start ") else {
            continue;
        };
        let Some(end) = em.1.strip_prefix("end ") else {
            continue;
        };
        let mut sp = start.split(' ');
        let (Some(wl), Some(name)) = (sp.next(), sp.next()) else {
            continue;
        };
        if !end.starts_with(start) {
            continue;
        }
        let num = |l: &str, k: &str| field(l, k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        out.push(Stretch {
            fs: field(s, "fs").unwrap_or("?").to_string(),
            workload: wl.to_string(),
            name: name.replace('_', " "),
            ops: num(em.1, "ops").max(1),
            writes: num(s, "writes"),
            bytes: num(s, "bytes"),
            flushes: num(s, "flushes"),
            secs: num(em.1, "ns") as f64 / 1e9,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strace_summary_is_parsed() {
        let t = "% time     seconds  usecs/call     calls    errors syscall\n\
------ ----------- ----------- --------- --------- ----------------\n\
 40.00    0.000040           4        10           fsync\n\
 30.00    0.000030           3        10         2 openat\n\
------ ----------- ----------- --------- --------- ----------------\n\
100.00    0.000070           3        20         2 total\n";
        let m = parse_strace(t);
        assert_eq!(m.get("fsync"), Some(&10));
        assert_eq!(m.get("openat"), Some(&10));
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn segments_pair_start_and_end() {
        let t = "segment fs=ext4 writes=0 bytes=0 zeroed=0 flushes=0 mark=\n\
segment fs=ext4 writes=6 bytes=40960 zeroed=0 flushes=4 mark=start w1 fstx\n\
segment fs=ext4 writes=1 bytes=4096 zeroed=0 flushes=1 mark=end w1 fstx ns=2000000 ops=2\n\
segment fs=ext4 writes=3 bytes=8192 zeroed=0 flushes=2 mark=start w3-10 fstx_txn\n\
segment fs=ext4 writes=0 bytes=0 zeroed=0 flushes=0 mark=end w3-10 fstx_txn ns=5 ops=1\n";
        let s = parse_segments(t);
        assert_eq!(s.len(), 2);
        assert_eq!(
            (s[0].name.as_str(), s[0].ops, s[0].flushes, s[0].bytes),
            ("fstx", 2, 4, 40960)
        );
        assert!((s[0].secs - 0.002).abs() < 1e-12);
        assert_eq!(
            (s[1].workload.as_str(), s[1].name.as_str()),
            ("w3-10", "fstx txn")
        );
    }
}
