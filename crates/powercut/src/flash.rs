//! The raw-flash lane: UBIFS (on UBI, NAND-like flash) and JFFS2 (NOR-like
//! flash), in the VM's guest, on `powercut_mtd` (`crates/powercut/mtd/`),
//! a RAM-backed MTD driver of this project that logs every page program
//! and block erase, in the order they took effect, with the workload's
//! marks in between.
//!
//! Flash has no volatile cache: a program or erase is durable when it
//! returns. A power cut therefore leaves the first *k* operations done and
//! at most one cut half way. The crash states are every prefix of the log,
//! and for the operation in flight, torn variants: a program that reached
//! only some pages, its last page partially programmed (a random part of
//! its bits cleared), or an erase cut half way (erased up to a point,
//! garbage after it) — the faults UBI and UBIFS are designed to survive.
//!
//! Each state is written to a checker's own MTD instance (its raw memory,
//! `/dev/powercut_mtd_mem<i>`), attached (UBI's scan), mounted, handed to
//! the recovery command and the checker, and every file is read back.
//! Neither filesystem has an fsck in Debian's mtd-utils: what stands in
//! for it is UBI's attach scan, a clean mount (UBIFS replays its journal
//! and checks its index; JFFS2 scans and checks every node's CRC), reading
//! every file, and, for UBIFS, no kernel error naming the UBI device.

#![allow(clippy::cast_precision_loss)] // only for statistics

use std::collections::HashSet;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::kmsg::Kmsg;
use crate::record::shell;
use crate::replay::Coverage;
use crate::rng::Rng;
use crate::run::{Config, ConfigReport, Violation};
use crate::stack::{err, mount_fs, run_tool, run_with_timeout, unmount, FsConfig};

/// Environment variable naming the built `powercut_mtd.ko` (set by the
/// host side of the VM lane).
pub const MTD_MODULE_ENV: &str = "POWERCUT_MTD_KO";

const PROGRAM: u32 = 1;
const ERASE: u32 = 2;
const MARK: u32 = 3;
const HEADER: usize = 24;

/// The flash each configuration runs on.
#[derive(Debug, Clone, Copy)]
pub struct Geometry {
    /// Bytes.
    pub size: u64,
    /// Erase block size.
    pub erasesize: u32,
    /// Page (program unit); 1 on NOR.
    pub writesize: u32,
    /// NOR-like (JFFS2) rather than NAND-like (UBI).
    pub nor: bool,
}

/// The geometry of `fs`'s flash, if it is a raw-flash configuration.
pub fn geometry(fs: FsConfig) -> Option<Geometry> {
    match fs {
        FsConfig::Ubifs => Some(Geometry {
            size: 16 << 20,
            erasesize: 128 << 10,
            writesize: 2048,
            nor: false,
        }),
        FsConfig::Jffs2 => Some(Geometry {
            size: 8 << 20,
            erasesize: 64 << 10,
            writesize: 1,
            nor: true,
        }),
        _ => None,
    }
}

/// One logged operation.
#[derive(Debug, Clone)]
enum Op {
    Program { off: u64, data: Vec<u8> },
    Erase { off: u64, len: u64 },
    Mark(String),
}

/// Parses the log device's records (whole records only).
fn parse(bytes: &[u8]) -> io::Result<Vec<Op>> {
    let mut ops = Vec::new();
    let mut at = 0;
    let mut first_seq = None;
    let u32_at = |b: &[u8], i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap_or([0; 4]));
    let u64_at = |b: &[u8], i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
    while at < bytes.len() {
        if bytes.len() - at < HEADER {
            return Err(err("the MTD log ends inside a record header"));
        }
        let (kind, len, off) = (
            u32_at(bytes, at),
            u32_at(bytes, at + 4) as usize,
            u64_at(bytes, at + 8),
        );
        // Sequence numbers count from the module's load; what was drained
        // before recording began is not here, but nothing may be missing after.
        let seq = u64_at(bytes, at + 16);
        let first = *first_seq.get_or_insert(seq);
        if seq != first + ops.len() as u64 {
            return Err(err(format!(
                "the MTD log skips from record {} to {seq}",
                first + ops.len() as u64
            )));
        }
        at += HEADER;
        let payload = if kind == ERASE { 0 } else { len };
        if bytes.len() - at < payload {
            return Err(err("the MTD log ends inside a record"));
        }
        let body = &bytes[at..at + payload];
        at += payload;
        ops.push(match kind {
            PROGRAM => Op::Program {
                off,
                data: body.to_vec(),
            },
            ERASE => Op::Erase {
                off,
                len: len as u64,
            },
            MARK => Op::Mark(String::from_utf8_lossy(body).trim_end().to_string()),
            k => return Err(err(format!("the MTD log has a record of unknown kind {k}"))),
        });
    }
    Ok(ops)
}

/// How the operation in flight at the cut was left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Torn {
    variant: u32,
}

/// Applies `op` to `img` as flash does (program clears bits, erase sets
/// 0xFF), or, with `torn`, as a cut in the middle of it leaves it.
fn apply(img: &mut [u8], op: &Op, torn: Option<(u64, Geometry)>) {
    apply_in(img, 0, op, torn);
}

/// [`apply`] to `img`, which holds the flash from byte `origin` on.
fn apply_in(img: &mut [u8], origin: usize, op: &Op, torn: Option<(u64, Geometry)>) {
    match op {
        Op::Program { off, data } => {
            let off = *off as usize - origin;
            let Some((seed, g)) = torn else {
                for (d, s) in img[off..off + data.len()].iter_mut().zip(data) {
                    *d &= *s;
                }
                return;
            };
            let mut rng = Rng::new(seed);
            let unit = g.writesize.max(1) as usize;
            let units = data.len().div_ceil(unit).max(1);
            // Units before `j` programmed, unit `j` partly, the rest not.
            let j = rng.below(units);
            for (i, (d, s)) in img[off..off + data.len()].iter_mut().zip(data).enumerate() {
                match (i / unit).cmp(&j) {
                    std::cmp::Ordering::Less => *d &= *s,
                    // Some of the bits to clear were cleared.
                    std::cmp::Ordering::Equal => *d &= *s | (rng.next_u64() as u8),
                    std::cmp::Ordering::Greater => {}
                }
            }
        }
        Op::Erase { off, len } => {
            let (off, len) = (*off as usize - origin, *len as usize);
            match torn {
                None => img[off..off + len].fill(0xFF),
                Some((seed, _)) => {
                    // Erased up to a point; after it either garbage, or the
                    // old data with some bits already set (half erased:
                    // old headers still there, their data damaged).
                    let mut rng = Rng::new(seed);
                    let cut = (rng.below(len / 4096 + 1) * 4096).min(len);
                    let garbage = rng.coin();
                    img[off..off + cut].fill(0xFF);
                    for b in &mut img[off + cut..off + len] {
                        let r = rng.next_u64() as u8;
                        *b = if garbage {
                            r
                        } else {
                            *b | (r & rng.next_u64() as u8)
                        };
                    }
                }
            }
        }
        Op::Mark(_) => {}
    }
}

/// A crash state: the first `point` records done, and, if `torn`, record
/// `point` cut half way.
#[derive(Debug, Clone)]
struct State {
    point: usize,
    torn: Option<Torn>,
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "p{}", self.point)?;
        if let Some(t) = self.torn {
            write!(f, ":cut{}", t.variant)?;
        }
        Ok(())
    }
}

/// The loaded `powercut_mtd` module; unloaded on drop.
struct Module;

impl Module {
    fn load(g: Geometry, count: usize) -> io::Result<Module> {
        let ko = std::env::var_os(MTD_MODULE_ENV).ok_or_else(|| {
            err(format!(
                "${MTD_MODULE_ENV} is not set: the raw-flash configurations run only in the VM lane"
            ))
        })?;
        let _ = std::process::Command::new("rmmod")
            .arg("powercut_mtd")
            .output();
        let mut c = std::process::Command::new("insmod");
        c.arg(ko).args([
            format!("size={}", g.size),
            format!("erasesize={}", g.erasesize),
            format!("writesize={}", g.writesize.max(512)),
            format!("nor={}", u8::from(g.nor)),
            format!("count={count}"),
        ]);
        run_tool(c, "insmod powercut_mtd", Duration::from_secs(60))?;
        Ok(Module)
    }
}

impl Drop for Module {
    fn drop(&mut self) {
        let mut c = std::process::Command::new("rmmod");
        c.arg("powercut_mtd");
        let _ = run_tool(c, "rmmod powercut_mtd", Duration::from_secs(60));
    }
}

/// The MTD number of instance `i` (`/proc/mtd`).
fn mtd_number(i: usize) -> io::Result<usize> {
    let text = fs::read_to_string("/proc/mtd")?;
    let name = format!("\"powercut{i}\"");
    text.lines()
        .find(|l| l.trim_end().ends_with(&name))
        .and_then(|l| l.strip_prefix("mtd")?.split(':').next()?.parse().ok())
        .ok_or_else(|| err(format!("powercut{i} is not in /proc/mtd")))
}

/// One MTD instance with its mount point: attach and mount, unmount and detach.
struct Instance {
    i: usize,
    mtd: usize,
    fs: FsConfig,
    mnt: PathBuf,
    mounted: bool,
    attached: bool,
}

impl Instance {
    fn new(i: usize, fs: FsConfig, dir: &Path) -> io::Result<Instance> {
        let mnt = dir.join(format!("mnt{i}"));
        fs::create_dir_all(&mnt)?;
        Ok(Instance {
            i,
            mtd: mtd_number(i)?,
            fs,
            mnt,
            mounted: false,
            attached: false,
        })
    }

    fn ubi(&self) -> String {
        format!("ubi{}", self.i)
    }

    /// Attaches UBI (UBIFS) and mounts; `format` creates the volume first.
    fn mount(&mut self, format: bool, timeout: Duration) -> io::Result<()> {
        if self.fs == FsConfig::Ubifs {
            let mut c = std::process::Command::new("ubiattach");
            c.args(["-m", &self.mtd.to_string(), "-d", &self.i.to_string()]);
            run_tool(c, "ubiattach", timeout)?;
            self.attached = true;
            if format {
                let mut c = std::process::Command::new("ubimkvol");
                c.arg(format!("/dev/{}", self.ubi()))
                    .args(["-N", "data", "-m"]);
                run_tool(c, "ubimkvol", timeout)?;
            }
            mount_fs(
                Path::new(&format!("{}:data", self.ubi())),
                &self.mnt,
                "ubifs",
                "",
            )?;
        } else {
            mount_fs(
                Path::new(&format!("mtd{}", self.mtd)),
                &self.mnt,
                "jffs2",
                "",
            )?;
        }
        self.mounted = true;
        Ok(())
    }

    fn unmount(&mut self, timeout: Duration) -> io::Result<()> {
        if self.mounted {
            unmount(&self.mnt)?;
            self.mounted = false;
        }
        if self.attached {
            let mut c = std::process::Command::new("ubidetach");
            c.args(["-d", &self.i.to_string()]);
            run_tool(c, "ubidetach", timeout)?;
            self.attached = false;
        }
        Ok(())
    }

    fn mem(&self) -> PathBuf {
        PathBuf::from(format!("/dev/powercut_mtd_mem{}", self.i))
    }

    fn log(&self) -> PathBuf {
        PathBuf::from(format!("/dev/powercut_mtd_log{}", self.i))
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.unmount(Duration::from_secs(60));
    }
}

/// Reads everything the log device holds now.
fn drain(log: &mut fs::File, into: &mut Vec<u8>) -> io::Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = log.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        into.extend_from_slice(&buf[..n]);
    }
}

/// What recording produced.
struct Recording {
    base: Vec<u8>,
    ops: Vec<Op>,
    /// The log as read from the device (saved with a violation's artifacts).
    raw_log: Vec<u8>,
    log_bytes: u64,
    workload_secs: f64,
}

/// Runs the setup command (if any) in the mounted filesystem `mnt`.
pub(crate) fn run_setup(
    cfg: &Config,
    fs: FsConfig,
    mnt: &Path,
    env: &[(&str, String)],
) -> io::Result<()> {
    let Some(setup) = &cfg.setup else {
        return Ok(());
    };
    let r = run_with_timeout(&mut shell(setup, mnt, env), cfg.timeout)?;
    if r.code != Some(0) {
        return Err(err(format!(
            "setup failed on {fs} ({}): {}",
            r.status_text(),
            r.output.trim()
        )));
    }
    Ok(())
}

fn record(cfg: &Config, fs: FsConfig, g: Geometry, dir: &Path) -> io::Result<Recording> {
    let mut inst = Instance::new(0, fs, dir)?;
    let env = [("POWERCUT_FS", fs.name().to_string())];
    inst.mount(true, cfg.timeout)?;
    run_setup(cfg, fs, &inst.mnt, &env)?;
    inst.unmount(cfg.timeout)?;
    let mut log = fs::File::open(inst.log())?;
    drain(&mut log, &mut Vec::new())?;
    let mut base = vec![0u8; g.size as usize];
    fs::File::open(inst.mem())?.read_exact_at(&mut base, 0)?;
    // The log is drained while the workload runs (the driver keeps it in
    // kernel memory until read).
    let stop = Arc::new(AtomicBool::new(false));
    let bytes = Arc::new(Mutex::new(Vec::new()));
    let drainer = {
        let (stop, bytes) = (Arc::clone(&stop), Arc::clone(&bytes));
        thread::spawn(move || -> io::Result<()> {
            while !stop.load(Ordering::Relaxed) {
                drain(
                    &mut log,
                    &mut bytes
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner),
                )?;
                thread::sleep(Duration::from_millis(5));
            }
            drain(
                &mut log,
                &mut bytes
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            )
        })
    };
    let t = Instant::now();
    let result = (|| {
        inst.mount(false, cfg.timeout)?;
        let mut env = env.to_vec();
        env.push(("POWERCUT_CTL", inst.log().to_string_lossy().into_owned()));
        let r = run_with_timeout(&mut shell(&cfg.workload, &inst.mnt, &env), cfg.timeout)?;
        if r.code != Some(0) {
            return Err(err(format!(
                "workload failed on {fs} ({}): {}",
                r.status_text(),
                r.output.trim()
            )));
        }
        inst.unmount(cfg.timeout)
    })();
    let workload_secs = t.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let drained = drainer
        .join()
        .map_err(|_| err("the MTD log reader panicked"))?;
    result?;
    drained?;
    let bytes = std::mem::take(
        &mut *bytes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    Ok(Recording {
        base,
        ops: parse(&bytes)?,
        log_bytes: bytes.len() as u64,
        raw_log: bytes,
        workload_secs,
    })
}

/// The hash of an image, as the XOR of its pages' hashes (updated page by
/// page as operations change them).
struct PageHash {
    page: usize,
    pages: Vec<u64>,
    total: u64,
}

impl PageHash {
    fn new(img: &[u8], page: usize) -> PageHash {
        let pages: Vec<u64> = img
            .chunks(page)
            .enumerate()
            .map(|(i, p)| xxh3_64_with_seed(p, i as u64))
            .collect();
        let total = pages.iter().fold(0, |a, h| a ^ h);
        PageHash { page, pages, total }
    }

    /// Rehashes the pages of `img` in `off..off+len`; returns the new total.
    fn update(&mut self, img: &[u8], off: usize, len: usize) -> u64 {
        if len == 0 {
            return self.total;
        }
        for i in off / self.page..=(off + len - 1) / self.page {
            let h = xxh3_64_with_seed(&img[i * self.page..(i + 1) * self.page], i as u64);
            self.total ^= self.pages[i] ^ h;
            self.pages[i] = h;
        }
        self.total
    }

    /// The total the image would have with `span` at `off` instead of what
    /// `img` holds there.
    fn with(&self, img: &[u8], off: usize, span: &[u8]) -> u64 {
        let mut t = self.total;
        if span.is_empty() {
            return t;
        }
        let mut page = vec![0u8; self.page];
        for i in off / self.page..=(off + span.len() - 1) / self.page {
            let (start, end) = (i * self.page, (i + 1) * self.page);
            page.copy_from_slice(&img[start..end]);
            let (a, b) = (off.max(start), (off + span.len()).min(end));
            page[a - start..b - start].copy_from_slice(&span[a - off..b - off]);
            t ^= self.pages[i] ^ xxh3_64_with_seed(&page, i as u64);
        }
        t
    }
}

fn span(op: &Op) -> (usize, usize) {
    match op {
        Op::Program { off, data } => (*off as usize, data.len()),
        Op::Erase { off, len } => (*off as usize, *len as usize),
        Op::Mark(_) => (0, 0),
    }
}

fn torn_seed(seed: u64, point: usize, variant: u32) -> u64 {
    fstx_testkit::rng::mix(seed ^ 0xF1A5_4000, (point as u64) << 8 | u64::from(variant))
}

/// Every crash state, deduplicated by (image, marks), then a seeded sample
/// of at most `max_states` (0 = all), in log order.
fn enumerate(cfg: &Config, rec: &Recording, g: Geometry) -> (Vec<State>, Coverage) {
    let variants = cfg.enumeration.torn.max(1) as u32;
    let mut img = rec.base.clone();
    let mut hash = PageHash::new(&img, 4096);
    let mut seen = HashSet::new();
    let mut states = Vec::new();
    let mut candidates = 0;
    let mut images = HashSet::new();
    let mut marks = 0usize;
    for point in 0..=rec.ops.len() {
        candidates += 1;
        images.insert(hash.total);
        if seen.insert((hash.total, marks)) {
            states.push(State { point, torn: None });
        }
        let Some(op) = rec.ops.get(point) else { break };
        if !matches!(op, Op::Mark(_)) {
            let (off, len) = span(op);
            for variant in 0..variants {
                candidates += 1;
                let mut torn = img[off..off + len].to_vec();
                let seed = torn_seed(cfg.enumeration.seed, point, variant);
                apply_in(&mut torn, off, op, Some((seed, g)));
                let h = hash.with(&img, off, &torn);
                images.insert(h);
                if seen.insert((h, marks)) {
                    states.push(State {
                        point,
                        torn: Some(Torn { variant }),
                    });
                }
            }
        }
        apply(&mut img, op, None);
        let (off, len) = span(op);
        hash.update(&img, off, len);
        if matches!(op, Op::Mark(_)) {
            marks += 1;
        }
    }
    let distinct = states.len();
    let max = cfg.enumeration.max_states;
    if max > 0 && states.len() > max {
        let mut rng = Rng::new(cfg.enumeration.seed);
        rng.shuffle(&mut states);
        states.truncate(max);
        states.sort_by_key(|s| (s.point, s.torn.map(|t| t.variant)));
    }
    let coverage = Coverage {
        crash_points: rec.ops.len() + 1,
        max_subsets_per_point: variants as usize + 1,
        candidates,
        distinct_images: images.len(),
        distinct_states: distinct,
        selected: states.len(),
    };
    (states, coverage)
}

fn marks_before(ops: &[Op], point: usize) -> Vec<String> {
    ops[..point]
        .iter()
        .filter_map(|o| match o {
            Op::Mark(m) => Some(m.clone()),
            _ => None,
        })
        .collect()
}

type Failure = (String, usize, &'static str, String);

/// Checks one state on instance `inst`: the verdict, and whether the
/// kernel logged an error about the device at the first mount.
fn check_one(
    cfg: &Config,
    inst: &mut Instance,
    kmsg: &mut Kmsg,
    img: &[u8],
    marks: &[String],
) -> io::Result<(Option<(&'static str, String)>, bool)> {
    fs::OpenOptions::new()
        .write(true)
        .open(inst.mem())?
        .write_all_at(img, 0)?;
    let marks_file = inst.mnt.with_extension("marks");
    let mut text = marks.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    fs::write(&marks_file, text)?;
    let _ = kmsg.take_unusual(&inst.ubi());
    // A checker's own log is of no use: dropped, so the kernel does not
    // keep every program the checks make.
    drain(&mut fs::File::open(inst.log())?, &mut Vec::new())?;
    if let Err(e) = inst.mount(false, cfg.timeout) {
        let _ = inst.unmount(cfg.timeout);
        return Ok((Some(("mount", e.to_string())), false));
    }
    let env = [
        ("POWERCUT_MARKS", marks_file.to_string_lossy().into_owned()),
        ("POWERCUT_FS", inst.fs.name().to_string()),
    ];
    let mut verdict = recover_check_read(cfg, &inst.mnt, &env)?;
    if let Err(e) = inst.unmount(cfg.timeout) {
        return Err(err(format!("{}: {e}", inst.fs)));
    }
    // The first mount after a cut may log errors about what it then
    // repairs (UBIFS: "ubifs_scan: garbage" on a torn master node copy):
    // counted, not judged. The fsck stand-in is the second mount: once
    // recovered, the filesystem must attach and mount again with no
    // kernel error and every file readable.
    let first_errors = kmsg.take_errors(&inst.ubi()).map_or(1, |e| e.len());
    if verdict.is_none() {
        if let Err(e) = inst.mount(false, cfg.timeout) {
            let _ = inst.unmount(cfg.timeout);
            return Ok((
                Some(("fsck", format!("second mount: {e}"))),
                first_errors > 0,
            ));
        }
        if let Err(e) = read_everything(&inst.mnt) {
            verdict = Some(("fsck", format!("second mount: {e}")));
        }
        if let Err(e) = inst.unmount(cfg.timeout) {
            return Err(err(format!("{}: {e}", inst.fs)));
        }
        if verdict.is_none() && inst.fs == FsConfig::Ubifs {
            // UBI and UBIFS name their device in every message.
            if let Ok(errors) = kmsg.take_errors(&inst.ubi()) {
                if !errors.is_empty() {
                    let shown: Vec<&str> = errors.iter().take(4).map(String::as_str).collect();
                    verdict = Some((
                        "fsck",
                        format!("second mount: kernel: {}", shown.join(" | ")),
                    ));
                }
            }
        }
    }
    Ok((verdict, first_errors > 0))
}

/// Runs the recovery command and the checker in the mounted crash image
/// `mnt`, then reads every file: the first failure (stage, message).
pub(crate) fn recover_check_read(
    cfg: &Config,
    mnt: &Path,
    env: &[(&str, String)],
) -> io::Result<Option<(&'static str, String)>> {
    for (stage, cmd) in [
        ("recover", cfg.recover.as_deref()),
        ("check", Some(cfg.check.as_str())),
    ] {
        let Some(cmd) = cmd else { continue };
        let r = run_with_timeout(&mut shell(cmd, mnt, env), cfg.timeout)?;
        if r.code != Some(0) {
            return Ok(Some((
                stage,
                format!("{}: {}", r.status_text(), r.output.trim()),
            )));
        }
    }
    Ok(read_everything(mnt).err().map(|e| ("fsck", e)))
}

/// Reads every file under `dir` (the fsck stand-in: every node's CRC is
/// checked on the way); the first error, naming the file.
pub(crate) fn read_everything(dir: &Path) -> Result<(), String> {
    let mut buf = vec![0u8; 1 << 16];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = fs::read_dir(&d).map_err(|e| format!("listing {}: {e}", d.display()))?;
        for e in entries {
            let e = e.map_err(|e| format!("listing {}: {e}", d.display()))?;
            let p = e.path();
            let t = e.file_type().map_err(|e| format!("{}: {e}", p.display()))?;
            if t.is_dir() {
                stack.push(p);
            } else if t.is_file() {
                let mut f =
                    fs::File::open(&p).map_err(|e| format!("opening {}: {e}", p.display()))?;
                while f
                    .read(&mut buf)
                    .map_err(|e| format!("reading {}: {e}", p.display()))?
                    > 0
                {}
            } else if t.is_symlink() {
                fs::read_link(&p).map_err(|e| format!("reading link {}: {e}", p.display()))?;
            }
        }
    }
    Ok(())
}

/// Checks `states` on `jobs` MTD instances (1..=jobs), the images built in
/// log order by this thread; returns the failures and how many states the
/// kernel logged an error about at the first mount.
fn check_all(
    cfg: &Config,
    fs: FsConfig,
    g: Geometry,
    rec: &Recording,
    states: &[State],
    jobs: usize,
    dir: &Path,
) -> io::Result<(Vec<Failure>, usize)> {
    let failures: Mutex<Vec<Failure>> = Mutex::new(Vec::new());
    let (tx, rx) = mpsc::sync_channel::<(State, Vec<u8>, Vec<String>)>(jobs);
    let rx = Mutex::new(rx);
    let fatal: Mutex<Option<io::Error>> = Mutex::new(None);
    let warned = std::sync::atomic::AtomicUsize::new(0);
    thread::scope(|s| {
        for i in 1..=jobs {
            let (rx, failures, fatal, warned) = (&rx, &failures, &fatal, &warned);
            s.spawn(move || {
                let mut inst = match Instance::new(i, fs, dir) {
                    Ok(x) => x,
                    Err(e) => {
                        fatal.lock().unwrap().get_or_insert(e);
                        return;
                    }
                };
                let mut kmsg = Kmsg::open();
                loop {
                    let Ok((state, img, marks)) = rx.lock().unwrap().recv() else {
                        break;
                    };
                    let checked = check_one(cfg, &mut inst, &mut kmsg, &img, &marks);
                    if let Ok((_, true)) = checked {
                        warned.fetch_add(1, Ordering::Relaxed);
                    }
                    match checked.map(|(v, _)| v) {
                        Ok(None) => {}
                        Ok(Some((stage, msg))) => failures.lock().unwrap().push((
                            state.to_string(),
                            state.point,
                            stage,
                            msg,
                        )),
                        Err(e) => {
                            fatal.lock().unwrap().get_or_insert(e);
                            break;
                        }
                    }
                }
            });
        }
        // The producer: images in log order, built incrementally.
        let mut img = rec.base.clone();
        let mut applied = 0;
        for st in states {
            if fatal.lock().unwrap().is_some() {
                break;
            }
            while applied < st.point {
                apply(&mut img, &rec.ops[applied], None);
                applied += 1;
            }
            let mut state_img = img.clone();
            if let Some(t) = st.torn {
                apply(
                    &mut state_img,
                    &rec.ops[st.point],
                    Some((torn_seed(cfg.enumeration.seed, st.point, t.variant), g)),
                );
            }
            // Never blocks for good: if every checker stopped on an error,
            // the queue stays full and `fatal` says why.
            let mut item = (st.clone(), state_img, marks_before(&rec.ops, st.point));
            let sent = loop {
                match tx.try_send(item) {
                    Ok(()) => break true,
                    Err(mpsc::TrySendError::Full(back)) => {
                        if fatal.lock().unwrap().is_some() {
                            break false;
                        }
                        item = back;
                        thread::sleep(Duration::from_millis(2));
                    }
                    Err(mpsc::TrySendError::Disconnected(_)) => break false,
                }
            };
            if !sent {
                break;
            }
        }
        drop(tx);
    });
    if let Some(e) = fatal.into_inner().unwrap() {
        return Err(e);
    }
    Ok((failures.into_inner().unwrap(), warned.into_inner()))
}

/// Checkers at most: `powercut_mtd` has 16 instances (`PCM_MAX_INSTANCES`
/// in `mtd/powercut_mtd.c`), and the first one records.
const MAX_CHECKERS: usize = 15;

/// Records and checks one raw-flash configuration (in the guest).
pub fn run_config(cfg: &Config, fs: FsConfig) -> io::Result<ConfigReport> {
    let g = geometry(fs).ok_or_else(|| err(format!("{fs} is not a raw-flash configuration")))?;
    let cores = thread::available_parallelism().map_or(1, usize::from);
    let jobs = match cfg.jobs {
        0 => (cores + 1).min(MAX_CHECKERS),
        n if n > MAX_CHECKERS => {
            return Err(err(format!(
                "--jobs {n}: {fs} runs at most {MAX_CHECKERS} checkers \
                 (powercut_mtd has {} flash instances, one of them records)",
                MAX_CHECKERS + 1
            )))
        }
        n => n,
    };
    let dir = Path::new(crate::stack::STATE_ROOT).join(format!("flash-{}", std::process::id()));
    fs::create_dir_all(&dir)?;
    let _module = Module::load(g, jobs + 1)?;
    let t0 = Instant::now();
    let rec = record(cfg, fs, g, &dir)?;
    let record_secs = t0.elapsed().as_secs_f64();
    let (states, coverage) = enumerate(cfg, &rec, g);
    let t1 = Instant::now();
    let (mut failures, warned) = check_all(cfg, fs, g, &rec, &states, jobs, &dir)?;
    let check_secs = t1.elapsed().as_secs_f64();
    failures.sort_by_key(|f| f.1);
    let mut artifacts = None;
    if let Some(a) = &cfg.artifacts {
        if cfg.save_all || !failures.is_empty() {
            let d = a.join(fs.name());
            fs::create_dir_all(&d)?;
            fs::write(d.join("base.img"), &rec.base)?;
            // The program/erase log (the driver's record format) and the
            // seed of the torn variants: with the base image, every state.
            fs::write(d.join("mtd-log.bin"), &rec.raw_log)?;
            fs::write(d.join("seed"), cfg.enumeration.seed.to_string())?;
            fs::write(d.join("config"), fs.name())?;
            artifacts = Some(d);
        }
    }
    let _ = fs::remove_dir_all(&dir);
    let violations = failures
        .iter()
        .take(1000)
        .map(|(state, point, stage, message)| Violation {
            config: fs,
            state: state.clone(),
            point: *point,
            last_mark: marks_before(&rec.ops, *point).pop(),
            stage: (*stage).to_string(),
            message: message.clone(),
            replay: None,
            explanation: None,
            minimal_replay: None,
        })
        .collect();
    let writes = rec.ops.iter().filter(|o| !matches!(o, Op::Mark(_))).count();
    Ok(ConfigReport {
        config: fs.name().to_string(),
        records: rec.ops.len(),
        writes,
        flushes: 0,
        marks: rec.ops.len() - writes,
        log_bytes: rec.log_bytes,
        workload_secs: rec.workload_secs,
        coverage,
        checked: states.len(),
        violation_count: failures.len(),
        fsck_runs: states.len(),
        kernel_warnings: warned,
        fsck_sample: 1,
        record_secs,
        check_secs,
        jobs,
        states_per_sec_per_core: states.len() as f64
            / check_secs.max(1e-9)
            / jobs.min(cores) as f64,
        artifacts: artifacts.map(|d| d.display().to_string()),
        violations,
        ..ConfigReport::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(kind: u32, len: u32, off: u64, seq: u64, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&kind.to_le_bytes());
        v.extend_from_slice(&len.to_le_bytes());
        v.extend_from_slice(&off.to_le_bytes());
        v.extend_from_slice(&seq.to_le_bytes());
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn parses_and_applies_flash_semantics() {
        let mut log = rec(ERASE, 8, 0, 0, &[]);
        log.extend(rec(PROGRAM, 4, 2, 1, &[0x0F, 0xF0, 0x00, 0xFF]));
        log.extend(rec(MARK, 6, 0, 2, b"ack 1\n"));
        let ops = parse(&log).unwrap();
        assert_eq!(ops.len(), 3);
        let mut img = vec![0u8; 8];
        for op in &ops {
            apply(&mut img, op, None);
        }
        assert_eq!(img, [0xFF, 0xFF, 0x0F, 0xF0, 0x00, 0xFF, 0xFF, 0xFF]);
        assert!(matches!(&ops[2], Op::Mark(m) if m == "ack 1"));
        // A gap in the sequence numbers is an error, not a silent loss.
        let mut later = rec(ERASE, 8, 0, 7, &[]);
        later.extend(rec(ERASE, 8, 0, 8, &[]));
        assert_eq!(parse(&later).unwrap().len(), 2);
        let mut bad = rec(ERASE, 8, 0, 0, &[]);
        bad.extend(rec(ERASE, 8, 0, 2, &[]));
        assert!(parse(&bad).is_err());
        assert!(parse(&log[..log.len() - 1]).is_err());
    }

    #[test]
    fn a_torn_program_stops_at_a_page_and_never_sets_bits() {
        let g = geometry(FsConfig::Ubifs).unwrap();
        let data = vec![0u8; 4 * 2048];
        let op = Op::Program { off: 0, data };
        let mut differ = 0;
        for seed in 0..50 {
            let mut img = vec![0xFFu8; 4 * 2048];
            apply(&mut img, &op, Some((seed, g)));
            // Pages fully programmed come first, then one partial, then none.
            let pages: Vec<u8> = img
                .chunks(2048)
                .map(
                    |p| match (p.iter().all(|&b| b == 0), p.iter().all(|&b| b == 0xFF)) {
                        (true, _) => 0,
                        (_, true) => 2,
                        _ => 1,
                    },
                )
                .collect();
            assert!(pages.windows(2).all(|w| w[0] <= w[1]), "{pages:?}");
            assert!(pages.iter().filter(|&&p| p == 1).nth(1).is_none());
            differ += usize::from(pages != [0, 0, 0, 0]);
        }
        assert!(differ > 40, "torn programs must differ from complete ones");
    }

    #[test]
    fn page_hash_tracks_changes() {
        let mut img = vec![0xFFu8; 16384];
        let mut h = PageHash::new(&img, 4096);
        let before = h.total;
        let predicted = h.with(&img, 4999, &[0xFF, 0]);
        img[5000] = 0;
        assert_eq!(predicted, h.update(&img, 5000, 1));
        assert_ne!(h.total, before);
        img[5000] = 0xFF;
        assert_eq!(h.update(&img, 5000, 1), before);
    }
}
