//! The second, independent oracle for UBIFS (`--fs ubifs-emulated`): UBI's
//! own power-cut emulation on `nandsim`, in the VM's guest.
//!
//! UBI's debugfs (`tst_emulate_power_cut`, `_min`, `_max`) makes UBI stop
//! writing, as if the power had gone, and turn read-only: with `_min` =
//! `_max` = N, the first erase-counter or volume-header write after arming
//! loads the counter and each later one counts it down, so write N + 1 is
//! the one cut (`cut-after-header-write-N`; the first write after arming
//! can never be cut). Each
//! run formats the simulated NAND, attaches UBI, creates the volume,
//! mounts UBIFS, runs the setup, arms the emulation with a seeded N, runs
//! the workload (its marks go to a plain file outside the flash), then
//! detaches, attaches again (the "reboot"), mounts, runs the recovery and
//! the checker, reads every file, and mounts once more (the fsck stand-in,
//! as in [`crate::flash`]).
//!
//! Independent of the recorded lane: another flash driver (nandsim, small
//! pages), cuts chosen by UBI itself between whole writes (no torn pages),
//! the workload's real execution after the cut (its writes failing). N is
//! drawn from 1 to the first power of two at which a run ends uncut (so up
//! to half the runs may end uncut; they are checked all the same).

#![allow(clippy::cast_precision_loss)] // only for statistics

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::flash::{read_everything, recover_check_read, run_setup};
use crate::kmsg::Kmsg;
use crate::record::shell;
use crate::replay::Coverage;
use crate::rng::Rng;
use crate::run::{Config, ConfigReport, Violation};
use crate::stack::{err, mount_fs, run_tool, run_with_timeout, unmount, FsConfig};

/// nandsim's chip: 16 MiB, 16 KiB erase blocks, 512-byte pages.
const NANDSIM: [&str; 2] = ["first_id_byte=0x20", "second_id_byte=0x33"];
/// Erase-counter and volume-identifier header writes (UBI's `POWER_CUT_EC_WRITE | POWER_CUT_VID_WRITE`).
const CUT_AT: &str = "3";
const UBI: &str = "ubi0";

fn tool(args: &[&str], timeout: Duration) -> io::Result<String> {
    let mut c = Command::new(args[0]);
    c.args(&args[1..]);
    run_tool(c, args[0], timeout)
}

/// nandsim loaded; unloaded (with UBI detached) on drop.
struct Sim {
    mtd: String,
    mnt: PathBuf,
    marks: PathBuf,
    /// `$POWERCUT_CTL`: a FIFO, so that every `echo ... > $POWERCUT_CTL` appends.
    ctl: PathBuf,
    timeout: Duration,
}

impl Sim {
    fn load(dir: &Path, timeout: Duration) -> io::Result<Sim> {
        let mut args = vec!["modprobe", "nandsim"];
        args.extend(NANDSIM);
        tool(&args, timeout)?;
        Self::after_modprobe(dir, timeout).inspect_err(|_| {
            let _ = tool(&["rmmod", "nandsim"], timeout);
        })
    }

    /// [`Sim::load`] once nandsim is loaded (the caller unloads it on error).
    fn after_modprobe(dir: &Path, timeout: Duration) -> io::Result<Sim> {
        let mtds = fs::read_to_string("/proc/mtd")?;
        let mtd = mtds
            .lines()
            .find(|l| l.contains("NAND simulator"))
            .and_then(|l| l.split(':').next())
            .ok_or_else(|| err("nandsim's MTD device is not in /proc/mtd"))?;
        if !Path::new("/sys/kernel/debug/ubi").exists() {
            let _ = rustix::mount::mount(
                "none",
                "/sys/kernel/debug",
                "debugfs",
                rustix::mount::MountFlags::empty(),
                None,
            );
        }
        let mnt = dir.join("mnt");
        fs::create_dir_all(&mnt)?;
        let ctl = dir.join("ctl");
        let _ = fs::remove_file(&ctl);
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &ctl,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .map_err(|e| err(format!("mkfifo {}: {e}", ctl.display())))?;
        Ok(Sim {
            mtd: format!("/dev/{mtd}"),
            mnt,
            marks: dir.join("marks"),
            ctl,
            timeout,
        })
    }

    fn attach(&self) -> io::Result<()> {
        tool(&["ubiattach", "-p", &self.mtd, "-d", "0"], self.timeout).map(drop)
    }

    fn mount(&self) -> io::Result<()> {
        mount_fs(Path::new("ubi0:data"), &self.mnt, "ubifs", "")
    }

    /// Unmounts (if mounted) and detaches (if attached), ignoring "not so".
    fn down(&self) {
        let _ = unmount(&self.mnt);
        let _ = tool(&["ubidetach", "-d", "0"], self.timeout);
    }

    fn debugfs(name: &str, value: &str) -> io::Result<()> {
        fs::write(
            Path::new("/sys/kernel/debug/ubi").join(UBI).join(name),
            value,
        )
        .map_err(|e| err(format!("UBI debugfs {name}: {e}")))
    }

    /// One run with the cut armed at header write `n` (`None`: no cut).
    /// Returns whether UBI cut the power.
    fn run(&self, cfg: &Config, n: Option<u64>, kmsg: &mut Kmsg) -> io::Result<bool> {
        self.down();
        tool(&["ubiformat", "-y", "-q", &self.mtd], self.timeout)?;
        self.attach()?;
        tool(&["ubimkvol", "/dev/ubi0", "-N", "data", "-m"], self.timeout)?;
        self.mount()?;
        let env = [
            ("POWERCUT_FS", FsConfig::UbifsEmulated.name().to_string()),
            ("POWERCUT_CTL", self.ctl.to_string_lossy().into_owned()),
        ];
        fs::write(&self.marks, "")?;
        run_setup(cfg, FsConfig::UbifsEmulated, &self.mnt, &env)?;
        rustix::fs::sync();
        let _ = kmsg.take_at(UBI, 6);
        if let Some(n) = n {
            Self::debugfs("tst_emulate_power_cut_min", &n.to_string())?;
            Self::debugfs("tst_emulate_power_cut_max", &n.to_string())?;
            Self::debugfs("tst_emulate_power_cut", CUT_AT)?;
        }
        let marks = MarkPipe::start(&self.ctl)?;
        let r = run_with_timeout(&mut shell(&cfg.workload, &self.mnt, &env), cfg.timeout);
        // The unmount writes too (UBIFS commits): the cut may fall there.
        self.down();
        fs::write(&self.marks, marks.stop())?;
        let r = r?;
        let cut = kmsg
            .take_at(UBI, 6)?
            .iter()
            .any(|m| m.contains("emulating a power cut"));
        if !cut && r.code != Some(0) {
            return Err(err(format!(
                "workload failed without a power cut ({}): {}",
                r.status_text(),
                r.output.trim()
            )));
        }
        Ok(cut)
    }

    /// After the "reboot": attach, mount, recover, check, read, mount again.
    fn check(&self, cfg: &Config, kmsg: &mut Kmsg) -> io::Result<Option<(&'static str, String)>> {
        let _ = kmsg.take_at(UBI, 3);
        if let Err(e) = self.attach().and_then(|()| self.mount()) {
            self.down();
            return Ok(Some(("mount", e.to_string())));
        }
        let env = [
            ("POWERCUT_MARKS", self.marks.to_string_lossy().into_owned()),
            ("POWERCUT_FS", FsConfig::UbifsEmulated.name().to_string()),
        ];
        let mut verdict = recover_check_read(cfg, &self.mnt, &env)?;
        self.down();
        let _ = kmsg.take_at(UBI, 3);
        if verdict.is_none() {
            if let Err(e) = self.attach().and_then(|()| self.mount()) {
                self.down();
                return Ok(Some(("fsck", format!("second mount: {e}"))));
            }
            verdict = read_everything(&self.mnt)
                .err()
                .map(|e| ("fsck", format!("second mount: {e}")));
            self.down();
            if verdict.is_none() {
                let errors = kmsg.take_at(UBI, 3)?;
                if let Some(first) = errors.first() {
                    verdict = Some(("fsck", format!("second mount: kernel: {first}")));
                }
            }
        }
        Ok(verdict)
    }
}

/// Collects the lines written to the FIFO `$POWERCUT_CTL`, in order.
struct MarkPipe {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    reader: std::thread::JoinHandle<String>,
}

impl MarkPipe {
    fn start(ctl: &Path) -> io::Result<MarkPipe> {
        use std::io::Read;
        use std::os::unix::fs::OpenOptionsExt;
        // Opened for writing too, so it never sees end-of-file between
        // writers; non-blocking, so it can stop.
        let mut f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(i32::try_from(rustix::fs::OFlags::NONBLOCK.bits()).unwrap_or(0))
            .open(ctl)?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&stop);
        let reader = std::thread::spawn(move || {
            let mut text = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                match f.read(&mut buf) {
                    Ok(n) if n > 0 => text.extend_from_slice(&buf[..n]),
                    _ => {
                        if flag.load(std::sync::atomic::Ordering::Relaxed) {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(2));
                    }
                }
            }
            String::from_utf8_lossy(&text).into_owned()
        });
        Ok(MarkPipe { stop, reader })
    }

    /// Everything written (the writers are gone).
    fn stop(self) -> String {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.reader.join().unwrap_or_default()
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.down();
        let _ = tool(&["rmmod", "nandsim"], Duration::from_secs(60));
    }
}

/// What the runs found: failures (N, stage, message, last mark), the
/// distinct N that cut, runs checked.
#[derive(Default)]
struct Tally {
    failures: Vec<(u64, &'static str, String, Option<String>)>,
    cuts: BTreeSet<u64>,
    checked: usize,
}

impl Tally {
    /// One run cut at header write `n`, checked; whether the cut happened.
    fn run(&mut self, cfg: &Config, n: u64, sim: &Sim, kmsg: &mut Kmsg) -> io::Result<bool> {
        let cut = sim.run(cfg, Some(n), kmsg)?;
        if let Some((stage, msg)) = sim.check(cfg, kmsg)? {
            let marks = fs::read_to_string(&sim.marks).unwrap_or_default();
            self.failures
                .push((n, stage, msg, marks.lines().last().map(str::to_string)));
        }
        self.checked += 1;
        if cut {
            self.cuts.insert(n);
        }
        Ok(cut)
    }
}

/// Runs the emulation oracle (in the guest): `cfg.enumeration.max_states`
/// cuts (0: 50), each a whole run.
pub fn run_config(cfg: &Config) -> io::Result<ConfigReport> {
    let dir = Path::new(crate::stack::STATE_ROOT).join(format!("ubi-emu-{}", std::process::id()));
    fs::create_dir_all(&dir)?;
    let sim = Sim::load(&dir, cfg.timeout)?;
    let mut kmsg = Kmsg::open();
    let t0 = Instant::now();
    let runs = match cfg.enumeration.max_states {
        0 => 50,
        n => n,
    };
    let mut t = Tally::default();
    // `POWERCUT_UBI_CUTS=1,2,3`: exactly these cuts (tests that need a
    // given cut point); else seeded ones.
    if let Ok(list) = std::env::var("POWERCUT_UBI_CUTS") {
        let cuts: Vec<u64> = list
            .split(',')
            .map(|n| n.trim().parse())
            .collect::<Result<_, _>>()
            .map_err(|_| err(format!("POWERCUT_UBI_CUTS: not a list of numbers: {list}")))?;
        for &n in &cuts {
            t.run(cfg, n, &sim, &mut kmsg)?;
        }
        return Ok(report(
            t,
            cuts.iter().max().copied().unwrap_or(0),
            t0,
            sim,
            &dir,
        ));
    }
    // Find how many header writes a run makes: double N until the run ends
    // before its cut (every calibration run is a checked cut too).
    let mut upper = 2;
    while t.run(cfg, upper, &sim, &mut kmsg)? {
        upper *= 2;
        if upper > 1 << 20 {
            return Err(err(
                "UBI's power-cut emulation never let the workload finish",
            ));
        }
    }
    let mut rng = Rng::new(cfg.enumeration.seed ^ 0x0B1);
    while t.checked < runs {
        let n = 1 + rng.below_u64(upper);
        t.run(cfg, n, &sim, &mut kmsg)?;
    }
    Ok(report(t, upper, t0, sim, &dir))
}

fn report(t: Tally, upper: u64, t0: Instant, sim: Sim, dir: &Path) -> ConfigReport {
    let fs = FsConfig::UbifsEmulated;
    let Tally {
        mut failures,
        cuts,
        checked,
    } = t;
    let secs = t0.elapsed().as_secs_f64();
    drop(sim);
    let _ = fs::remove_dir_all(dir);
    failures.sort_by_key(|f| f.0);
    let violations = failures
        .iter()
        .take(1000)
        .map(|(n, stage, message, last)| Violation {
            config: fs,
            state: format!("cut-after-header-write-{n}"),
            point: usize::try_from(*n).unwrap_or(usize::MAX),
            last_mark: last.clone(),
            stage: (*stage).to_string(),
            message: message.clone(),
            replay: None,
            explanation: None,
            minimal_replay: None,
        })
        .collect();
    ConfigReport {
        config: fs.name().to_string(),
        coverage: Coverage {
            crash_points: usize::try_from(upper).unwrap_or(usize::MAX),
            max_subsets_per_point: 1,
            candidates: checked,
            distinct_images: cuts.len(),
            distinct_states: cuts.len(),
            selected: checked,
        },
        checked,
        violation_count: failures.len(),
        fsck_runs: checked,
        fsck_sample: 1,
        record_secs: 0.0,
        check_secs: secs,
        jobs: 1,
        states_per_sec_per_core: checked as f64 / secs.max(1e-9),
        violations,
        ..ConfigReport::default()
    }
}
