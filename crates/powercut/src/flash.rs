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

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::kmsg::Kmsg;
use crate::record::shell;
use crate::run::{Config, ConfigReport, Violation};
use crate::stack::{err, mount_fs, run_tool, run_with_timeout, unmount, FsConfig};

mod log;

use self::log::{apply, enumerate, marks_before, parse, torn_seed, Op, State};
pub use self::log::{geometry, Geometry};

/// Environment variable naming the built `powercut_mtd.ko` (set by the
/// host side of the VM lane).
pub const MTD_MODULE_ENV: &str = "POWERCUT_MTD_KO";

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
pub(crate) const MAX_CHECKERS: usize = 15;

/// The error for `--jobs n` on raw flash (checked before the VM boots too;
/// the caller names the configuration).
pub(crate) fn too_many_checkers(n: usize) -> io::Error {
    err(format!(
        "--jobs {n}: raw flash runs at most {MAX_CHECKERS} checkers \
         (powercut_mtd has {} flash instances, one of them records)",
        MAX_CHECKERS + 1
    ))
}

/// Records and checks one raw-flash configuration (in the guest).
pub fn run_config(cfg: &Config, fs: FsConfig) -> io::Result<ConfigReport> {
    let g = geometry(fs).ok_or_else(|| err(format!("{fs} is not a raw-flash configuration")))?;
    let cores = thread::available_parallelism().map_or(1, usize::from);
    let jobs = match cfg.jobs {
        0 => (cores + 1).min(MAX_CHECKERS),
        n if n > MAX_CHECKERS => return Err(too_many_checkers(n)),
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
