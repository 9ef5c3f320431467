//! The timed workloads W1–W5 on one medium. Every sample starts after a
//! `syncfs` of the medium, so no contender pays for another's writeback.

use std::collections::HashMap;
use std::fs;
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fstx_testkit::rng::Rng;

use crate::contenders::{content, syncfs, Batch, Replace};
use crate::media::Medium;
use crate::stats::{interleave, median, Table};
use crate::Plan;

fn fresh_dir(p: &Path) -> io::Result<PathBuf> {
    if p.exists() {
        fs::remove_dir_all(p)?;
    }
    fs::create_dir_all(p)?;
    Ok(p.to_path_buf())
}

fn names_of(cs: &[Replace]) -> Vec<String> {
    cs.iter().map(|c| c.name().to_string()).collect()
}

/// Creates `dir/name` with 4 KiB, durably (setup, untimed).
pub fn seed_file(dir: &Path, name: &str) -> io::Result<PathBuf> {
    let p = dir.join(name);
    let mut f = fs::File::create(&p)?;
    f.write_all(&content(4096, 0))?;
    f.sync_all()?;
    Ok(p)
}

/// `ops` replaces of one file by `c`; returns the seconds they took.
pub fn replace_loop(
    c: Replace,
    dir: &Path,
    path: &Path,
    ops: usize,
    first: u64,
) -> io::Result<f64> {
    let mut buf = content(4096, 0);
    let t0 = Instant::now();
    for i in 0..ops {
        buf[..8].copy_from_slice(&(first + i as u64).to_le_bytes());
        c.replace(dir, path, &buf)?;
    }
    Ok(t0.elapsed().as_secs_f64())
}

/// W1: `plan.w1_ops` durable replaces of one 4 KiB file.
pub fn w1(plan: &Plan, m: &Medium, rng: &mut Rng) -> io::Result<Table> {
    let cs = Replace::ALL;
    let mut targets = Vec::new();
    for c in cs {
        let d = fresh_dir(&m.dir.join("w1").join(c.name()))?;
        let p = seed_file(&d, "state")?;
        targets.push((d, p));
    }
    let mut version = 1;
    let samples = interleave(rng, cs.len(), plan.rounds, |i| {
        let (d, p) = &targets[i];
        syncfs(&m.dir)?;
        let s = replace_loop(cs[i], d, p, plan.w1_ops, version)?;
        version += plan.w1_ops as u64;
        Ok(s / plan.w1_ops as f64)
    })?;
    fs::remove_dir_all(m.dir.join("w1"))?;
    let names = names_of(&cs);
    Ok(Table {
        workload: "W1".into(),
        what: format!(
            "{} durable replaces of one 4 KiB file per contender, in {} interleaved rounds of {}",
            plan.w1_ops * plan.rounds,
            plan.rounds,
            plan.w1_ops
        ),
        medium: m.label.clone(),
        unit: "µs/replace".into(),
        scale: 1e6,
        baseline: Replace::HandWritten.name().into(),
        lower_is_better: true,
        extra: None,
        rows: Table::from_samples(&names, samples, Replace::HandWritten.name()),
    })
}

fn proc_status_kib(field: &str) -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Runs `f` and returns how far the process's peak resident set grew
/// above its resident set at the start (KiB): the high-water mark is reset
/// through `/proc/self/clear_refs` first.
pub fn peak_rss_growth_kib<T>(f: impl FnOnce() -> T) -> io::Result<(T, u64)> {
    fs::write("/proc/self/clear_refs", "5")?;
    let before = proc_status_kib("VmRSS:");
    let r = f();
    let peak = proc_status_kib("VmHWM:");
    Ok((r, peak.saturating_sub(before)))
}

/// W2: one file of `plan.w2_bytes` streamed in 1 MiB writes: MB/s and peak
/// RSS growth (`VmHWM` after the replace minus `VmRSS` before it, with the
/// high-water mark reset through `/proc/self/clear_refs`).
pub fn w2(plan: &Plan, m: &Medium, rng: &mut Rng) -> io::Result<Table> {
    let cs = Replace::ALL;
    let chunk = content(1 << 20, 7);
    let mut rss: HashMap<usize, Vec<f64>> = HashMap::new();
    let samples = interleave(rng, cs.len(), plan.w2_rounds, |i| {
        let d = fresh_dir(&m.dir.join("w2").join(cs[i].name()))?;
        let p = d.join("big");
        fs::write(&p, b"old")?;
        syncfs(&m.dir)?;
        let t0 = Instant::now();
        let (r, growth) = peak_rss_growth_kib(|| cs[i].stream(&d, &p, &chunk, plan.w2_bytes))?;
        r?;
        let secs = t0.elapsed().as_secs_f64();
        rss.entry(i).or_default().push(growth as f64);
        if fs::metadata(&p)?.len() != plan.w2_bytes {
            return Err(io::Error::other(format!("{}: wrong size", cs[i].name())));
        }
        fs::remove_dir_all(&d)?;
        syncfs(&m.dir)?;
        Ok(plan.w2_bytes as f64 / secs / 1e6)
    })?;
    let _ = fs::remove_dir_all(m.dir.join("w2"));
    let names = names_of(&cs);
    let mut rows = Table::from_samples(&names, samples, Replace::RawFloor.name());
    for (i, r) in rows.iter_mut().enumerate() {
        r.extra = Some(format!("{:.0} KiB", median(&rss[&i])));
    }
    Ok(Table {
        workload: "W2".into(),
        what: format!(
            "one {} MiB file streamed in 1 MiB writes (raw-floor: truncate + write + fsync, not atomic)",
            plan.w2_bytes >> 20
        ),
        medium: m.label.clone(),
        unit: "MB/s".into(),
        scale: 1.0,
        baseline: Replace::RawFloor.name().into(),
        lower_is_better: false,
        extra: Some("peak RSS growth (median)".into()),
        rows,
    })
}

/// `n` file names, `f0000`...
pub fn batch_names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("f{i:05}")).collect()
}

/// Creates `n` 4 KiB files under `root` (and, for the transaction, its
/// control directory by one warm-up transaction), then settles them.
pub fn seed_batch(c: Batch, root: &Path, names: &[String]) -> io::Result<()> {
    for n in names {
        fs::write(root.join(n), content(4096, 0))?;
    }
    if c == Batch::FstxTxn {
        let mut t = fstx::Transaction::begin(root).map_err(io::Error::from)?;
        t.write(&names[0], content(4096, 0))
            .map_err(io::Error::from)?;
        t.commit().map_err(io::Error::from)?;
    }
    syncfs(root)
}

/// W3: `n` 4 KiB files that must land all-or-nothing.
pub fn w3(plan: &Plan, m: &Medium, rng: &mut Rng, n: usize) -> io::Result<Table> {
    let cs = Batch::ALL;
    let names = batch_names(n);
    let mut roots = Vec::new();
    for c in cs {
        let d = fresh_dir(&m.dir.join(format!("w3-{n}")).join(c.key()))?;
        seed_batch(c, &d, &names)?;
        roots.push(d);
    }
    let mut version = 1u64;
    let samples = interleave(rng, cs.len(), plan.w3_rounds, |i| {
        syncfs(&m.dir)?;
        let v = version;
        version += 1;
        let t0 = Instant::now();
        cs[i].run(&roots[i], &names, &|k| {
            content(4096, v * 1_000_000 + k as u64)
        })?;
        Ok(t0.elapsed().as_secs_f64())
    })?;
    fs::remove_dir_all(m.dir.join(format!("w3-{n}")))?;
    let labels: Vec<String> = cs.iter().map(|c| c.name().to_string()).collect();
    Ok(Table {
        workload: format!("W3 N={n}"),
        what: format!("{n} × 4 KiB files replaced together (only `fstx txn` is all-or-nothing)"),
        medium: m.label.clone(),
        unit: "ms/batch".into(),
        scale: 1e3,
        baseline: Batch::Syncfs.name().into(),
        lower_is_better: true,
        extra: None,
        rows: Table::from_samples(&labels, samples, Batch::Syncfs.name()),
    })
}

/// W4: `plan.w4_threads` threads, each replacing its own file in one shared
/// directory `plan.w4_ops` times.
pub fn w4(plan: &Plan, m: &Medium, rng: &mut Rng) -> io::Result<Table> {
    let cs = Replace::ATOMIC;
    let mut dirs = Vec::new();
    for c in cs {
        let d = fresh_dir(&m.dir.join("w4").join(c.name()))?;
        for t in 0..plan.w4_threads {
            seed_file(&d, &format!("t{t}"))?;
        }
        dirs.push(d);
    }
    let total = (plan.w4_threads * plan.w4_ops) as f64;
    let samples = interleave(rng, cs.len(), plan.w4_rounds, |i| {
        syncfs(&m.dir)?;
        let d = &dirs[i];
        let t0 = Instant::now();
        std::thread::scope(|s| {
            let hs: Vec<_> = (0..plan.w4_threads)
                .map(|t| {
                    let p = d.join(format!("t{t}"));
                    s.spawn(move || replace_loop(cs[i], d, &p, plan.w4_ops, 1))
                })
                .collect();
            hs.into_iter()
                .try_for_each(|h| h.join().expect("W4 thread panicked").map(drop))
        })?;
        Ok(t0.elapsed().as_secs_f64() / total)
    })?;
    fs::remove_dir_all(m.dir.join("w4"))?;
    let names = names_of(&cs);
    Ok(Table {
        workload: "W4".into(),
        what: format!(
            "{} threads × {} durable replaces, each thread its own file, one directory (wall time / replaces)",
            plan.w4_threads, plan.w4_ops
        ),
        medium: m.label.clone(),
        unit: "µs/replace".into(),
        scale: 1e6,
        baseline: Replace::AtomicWriteFile.name().into(),
        lower_is_better: true,
        extra: None,
        rows: Table::from_samples(&names, samples, Replace::AtomicWriteFile.name()),
    })
}

/// W5: `fstx::recover` of a root whose `plan.w5_files`-file transaction was
/// killed (`SIGKILL`) right after its commit point (the child process pauses in the
/// commit's [`fstx::Phase::Committed`] hook and is killed there), next to
/// the same call on a root with nothing to recover. Page cache warm.
pub fn w5(plan: &Plan, m: &Medium, rng: &mut Rng) -> io::Result<Table> {
    let root = fresh_dir(&m.dir.join("w5"))?;
    let names = batch_names(plan.w5_files);
    seed_batch(Batch::FstxTxn, &root, &names)?;
    // Whatever the warm-up commit left for later (if anything) is done now.
    fstx::recover(&root).map_err(io::Error::from)?;
    let variants = [
        format!(
            "redo: killed after the commit point ({} files)",
            plan.w5_files
        ),
        "nothing to recover".to_string(),
    ];
    let samples = interleave(rng, variants.len(), plan.w5_rounds, |i| {
        if i == 0 {
            interrupted_commit(&root, plan.w5_files)?;
        }
        syncfs(&m.dir)?;
        let t0 = Instant::now();
        let rep = fstx::recover(&root).map_err(io::Error::from)?;
        let secs = t0.elapsed().as_secs_f64();
        if i == 0 && rep.transactions.is_empty() {
            return Err(io::Error::other(format!(
                "W5 {}: recovery found no transaction to finish",
                variants[i]
            )));
        }
        Ok(secs)
    })?;
    fs::remove_dir_all(&root)?;
    Ok(Table {
        workload: "W5".into(),
        what: format!(
            "`fstx::recover` after a {}-file transaction was SIGKILLed after its commit point",
            plan.w5_files
        ),
        medium: m.label.clone(),
        unit: "ms".into(),
        scale: 1e3,
        baseline: String::new(),
        lower_is_better: true,
        extra: None,
        rows: Table::from_samples(&variants, samples, ""),
    })
}

/// Leaves `root` with an interrupted transaction of `n` files: a child
/// process commits it, pauses at the commit point, and is killed there with `SIGKILL`.
fn interrupted_commit(root: &Path, n: usize) -> io::Result<()> {
    let mut child = Command::new(std::env::current_exe()?)
        .arg("__w5-child")
        .arg(root)
        .arg(n.to_string())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
    child.kill()?;
    child.wait()?;
    if line.trim() != "paused" {
        return Err(io::Error::other(format!(
            "W5: the commit never reached the commit point (child said {line:?})"
        )));
    }
    Ok(())
}

/// The child of [`interrupted_commit`].
pub fn w5_child(root: &Path, n: usize) -> io::Result<()> {
    let mut opts = fstx::TxnOptions::new();
    opts.on_phase(|p| {
        if p == fstx::Phase::Committed {
            println!("paused");
            let _ = io::stdout().flush();
            std::thread::sleep(Duration::from_secs(3600));
        }
    });
    let mut t = opts.begin(root).map_err(io::Error::from)?;
    for (i, name) in batch_names(n).iter().enumerate() {
        t.write(name, content(4096, 1 << 40 | i as u64))
            .map_err(io::Error::from)?;
    }
    t.commit().map_err(io::Error::from)?;
    println!("finished");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_rss_growth_sees_a_big_allocation_and_not_a_small_one() {
        let (_, small) = peak_rss_growth_kib(|| std::hint::black_box(vec![1u8; 4096])).unwrap();
        let (v, big) = peak_rss_growth_kib(|| {
            let v = vec![1u8; 64 << 20];
            std::hint::black_box(v.iter().map(|&b| u64::from(b)).sum::<u64>())
        })
        .unwrap();
        assert_eq!(v, 64 << 20);
        assert!(big >= 60 << 10, "64 MiB touched, peak grew {big} KiB");
        assert!(small < 8 << 10, "4 KiB allocated, peak grew {small} KiB");
    }
}
