//! End-to-end tests on the real kernel: FUSE, loop devices, mkfs, mount,
//! fsck. They need root and xfsprogs/btrfs-progs; every test that mounts is
//! named `mount_*` so CI can run them in a serial group.
//!
//! Environment knobs (defaults are the CI budget):
//! - `POWERCUT_TEST_FS`: configurations (`all`, or e.g. `ext4,xfs`).
//! - `POWERCUT_TEST_STATES`: distinct crash states per configuration and writer.
//! - `POWERCUT_TEST_ITERATIONS`: updates each writer makes.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use powercut::log::Record;
use powercut::{Config, FsConfig, Report};

fn powercut() -> Command {
    Command::new(env!("CARGO_BIN_EXE_powercut"))
}

mod common;
use common::writers;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("powercut-test-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs a writer through `powercut run` on the test configurations; returns
/// the exit code and the JSON report.
fn run_writer(writer: &str, states: &str) -> (i32, Report) {
    run_writer_then(writer, states, |_| {})
}

/// Rebuilds a violating crash state with `powercut replay`, mounts the image
/// with a plain loop mount, and runs the checker on it again: it must fail
/// again, independently of the replay disk the run used.
fn replay_and_recheck(c: &powercut::ConfigReport, v: &powercut::Violation, scratch: &Path) {
    let out = replay_and_recheck_fails(c, v, scratch);
    assert_eq!(out.trim(), v.message.trim_start_matches("exit 1: "));
}

/// Rebuilds `v`'s state with `powercut replay`, mounts it with a plain loop
/// mount and checks that the checker fails on it; returns what it said.
fn replay_and_recheck_fails(
    c: &powercut::ConfigReport,
    v: &powercut::Violation,
    scratch: &Path,
) -> String {
    let from = c
        .artifacts
        .as_deref()
        .expect("artifacts saved for a violation");
    let out = scratch.join(format!("inspect-{}", c.config));
    let st = powercut()
        .args(["replay", "--from", from, "--state", &v.state, "--out"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(st.success());
    let mnt = out.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let opts = format!("loop,{}", v.config.replay_options());
    let st = Command::new("mount")
        .args(["-o", &opts])
        .arg(out.join("crash.img"))
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(st.success(), "mounting the replayed image failed");
    let check = Command::new("sh")
        .arg(writers().join("check.sh"))
        .current_dir(&mnt)
        .env("POWERCUT_MARKS", out.join("marks"))
        .output()
        .unwrap();
    let umount = Command::new("umount").arg(&mnt).status().unwrap();
    assert!(umount.success());
    assert_eq!(
        check.status.code(),
        Some(1),
        "replayed state {} on {} passed the checker: {}",
        v.state,
        c.config,
        String::from_utf8_lossy(&check.stdout)
    );
    String::from_utf8_lossy(&check.stdout).into_owned()
}

fn run_writer_then(writer: &str, states: &str, inspect: impl Fn(&Report)) -> (i32, Report) {
    // Explaining is tested on its own (it costs up to 150 checks per violation).
    let fs = env_or("POWERCUT_TEST_FS", "all");
    run_writer_with(writer, &fs, states, &["--no-explain"], inspect)
}

fn run_writer_with(
    writer: &str,
    fs: &str,
    states: &str,
    extra: &[&str],
    inspect: impl Fn(&Report),
) -> (i32, Report) {
    let dir = tmp(writer);
    let json = dir.join("report.json");
    let out = common::run_writer(fs, writer)
        .args(extra)
        .args(["--max-states", states, "--timeout", "120"])
        .arg("--json")
        .arg(&json)
        .arg("--artifacts")
        .arg(dir.join("artifacts"))
        .env(
            "WRITER_ITERATIONS",
            env_or("POWERCUT_TEST_ITERATIONS", "40"),
        )
        .stderr(Stdio::inherit())
        .output()
        .expect("run powercut");
    let stdout = String::from_utf8_lossy(&out.stdout);
    // The table and the first violations, for the test log.
    for line in stdout.lines().take(12) {
        println!("{line}");
    }
    let code = out.status.code().unwrap_or(-1);
    assert!(
        code == 0 || code == 1,
        "powercut failed to run ({code}): {stdout}"
    );
    let report: Report = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    inspect(&report);
    let _ = std::fs::remove_dir_all(&dir);
    (code, report)
}

fn assert_caught_everywhere(writer: &str) {
    let (code, report) = run_writer(writer, &env_or("POWERCUT_TEST_STATES", "500"));
    assert_eq!(
        code, 1,
        "{writer}: powercut must exit 1 when it finds violations"
    );
    for c in &report.configs {
        assert!(
            c.violations.iter().any(|v| v.stage == "check"),
            "{writer} was not caught by the checker on {} ({} states checked)",
            c.config,
            c.checked
        );
        let v = &c.violations[0];
        assert!(v
            .replay
            .as_deref()
            .is_some_and(|r| r.contains("powercut replay")));
    }
}

#[test]
fn mount_catches_truncate_and_write_in_place() {
    assert_caught_everywhere("inplace");
}

/// Each violation's replay command rebuilds a state that fails again when
/// checked on a plain loop mount.
#[test]
fn mount_replay_command_reproduces_violations() {
    let scratch = tmp("replay");
    let (code, _) = run_writer_then("rename-nosync", "60", |report| {
        for c in &report.configs {
            let v = c
                .violations
                .iter()
                .find(|v| v.stage == "check")
                .expect("a checker violation");
            replay_and_recheck(c, v, &scratch);
        }
    });
    assert_eq!(code, 1);
    let _ = std::fs::remove_dir_all(&scratch);
}

#[test]
fn mount_catches_temp_and_rename_without_fsync() {
    assert_caught_everywhere("rename-nosync");
}

#[test]
fn mount_catches_rename_without_directory_fsync() {
    assert_caught_everywhere("rename-nodirsync");
}

/// The lost writes of an explanation that name `file` (`"/data" (inode N)`).
fn lost_writes_naming<'a>(explanation: &'a str, file: &str) -> Vec<&'a str> {
    let lost = explanation.split("; kept (").next().unwrap_or("");
    let lost = lost.split(". Cut at record").next().unwrap_or("");
    let needle = format!("\"{file}\" (inode ");
    lost.split("; ")
        .flat_map(|w| w.split(" + "))
        .filter(|w| w.contains(&needle))
        .collect()
}

/// A planted missing fsync: the new content goes to a temp file that is
/// renamed over the old one and the directory is fsynced, but the data never
/// is. The explanation of the violation names the file by its final name
/// (the lost blocks belong to the inode the durable rename calls `data`;
/// `data.tmp` may show up only as a neighbour in an inode table block) and
/// says what of it was lost.
#[test]
fn mount_explain_names_the_file_whose_data_was_lost() {
    let fs = env_or("POWERCUT_TEST_EXPLAIN_FS", "ext4,xfs,btrfs");
    // The minimal state's replay command rebuilds a state that fails too
    // (checked before the artifacts are removed).
    let recheck_minimal = |report: &Report| {
        let c = &report.configs[0];
        let Some(v) = c.violations.iter().find(|v| v.minimal_replay.is_some()) else {
            return;
        };
        let r = v.minimal_replay.as_deref().unwrap();
        let state = r
            .split("--state ")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap();
        let minimal = powercut::Violation {
            state: state.to_string(),
            ..v.clone()
        };
        let scratch = tmp("explain-minimal");
        let said = replay_and_recheck_fails(c, &minimal, &scratch);
        println!("{} minimal state {state} fails again: {said}", c.config);
        let _ = std::fs::remove_dir_all(&scratch);
    };
    let (code, report) = run_writer_with("rename-datanosync", &fs, "300", &[], recheck_minimal);
    assert_eq!(code, 1);
    for c in &report.configs {
        assert!(c.violation_count > 0, "no violation on {}", c.config);
        let explained: Vec<&powercut::Violation> = c
            .violations
            .iter()
            .filter(|v| v.explanation.is_some())
            .collect();
        assert_eq!(
            explained.len(),
            c.violations.len().min(5),
            "the first 5 violations on {} are explained",
            c.config
        );
        let e = explained[0].explanation.as_deref().unwrap();
        println!("{}: {e}", c.config);
        assert!(e.starts_with("lost"), "{}: {e}", c.config);
        let writes = lost_writes_naming(e, "/data");
        let expected: &[&str] = if c.config.starts_with("ext4") {
            // ext4 (dioread_nolock) usually wrote the data blocks into an
            // unwritten extent before the cut; what the cut lost is then the
            // journal transaction that logs the inode converting that extent
            // (named through the inode table block that holds /data), so the
            // file reads as zeros. When the data was not written yet either,
            // its data blocks are named too.
            &["inode table block", " data block"]
        } else {
            // xfs and btrfs wrote the data itself only after the cut.
            &[" data "]
        };
        assert!(
            writes
                .iter()
                .any(|w| expected.iter().any(|x| w.contains(x))),
            "{}: no lost write of /data in: {e}",
            c.config
        );
    }
}

#[test]
fn mount_correct_writer_passes_everywhere() {
    let (code, report) = run_writer("correct", &env_or("POWERCUT_TEST_CORRECT_STATES", "2500"));
    for c in &report.configs {
        assert_eq!(
            c.violation_count,
            0,
            "correct writer failed on {}: {:?}",
            c.config,
            c.violations.first()
        );
        assert!(
            c.checked > 50,
            "too few states checked on {}: {}",
            c.config,
            c.checked
        );
    }
    assert_eq!(code, 0);
    println!(
        "correct writer: {} distinct crash states checked",
        report.checked
    );
}

/// The recorder sees the filesystem's writes and flushes, and a mark the
/// workload writes after its fsync lands after that fsync's flush.
#[test]
fn mount_recorder_orders_marks_after_flushes() {
    let mut cfg = Config::new(
        "printf hello > f && sync f && echo 'ack 1' > \"$POWERCUT_CTL\" && printf x >> f",
        "true",
    );
    cfg.noise = None;
    let rec = powercut::run::record(&cfg, FsConfig::Ext4).unwrap();
    let recs = &rec.log.records;
    let mark = recs
        .iter()
        .position(|r| r == &Record::Mark("ack 1".into()))
        .expect("mark recorded");
    let flush = recs[..mark]
        .iter()
        .rposition(|r| matches!(r, Record::Flush))
        .expect("flush before mark");
    assert!(
        recs[..flush].iter().any(|r| r.range().is_some()),
        "writes before the flush"
    );
    assert!(
        recs[mark..].iter().any(|r| matches!(r, Record::Flush)),
        "the unmount flushes again"
    );
    assert_eq!(rec.base.len() as u64, FsConfig::Ext4.image_size());
    // The replayed image at the end of the log holds the file's final content.
    let img = powercut::replay::materialize(
        &rec.log,
        &rec.base,
        &powercut::StateSpec {
            point: recs.len(),
            keep: vec![],
            torn: None,
            lie: None,
        },
    );
    assert!(img.windows(6).any(|w| w == b"hellox"));
}

/// `--flush-latency` makes every flush reaching the disk slow.
#[test]
fn mount_flush_latency_slows_fsync() {
    let mut cfg = Config::new("for i in 1 2 3 4 5; do echo $i >> f; sync f; done", "true");
    cfg.noise = None;
    cfg.flush_latency = Duration::from_millis(40);
    let t = Instant::now();
    let rec = powercut::run::record(&cfg, FsConfig::Ext4).unwrap();
    assert!(
        rec.workload_secs >= 0.2,
        "5 fsyncs with 40 ms flushes took {}s",
        rec.workload_secs
    );
    assert!(rec.log.flushes() >= 5);
    println!(
        "5 fsyncs at 40 ms: {:.2}s (recording {:?})",
        rec.workload_secs,
        t.elapsed()
    );
}

fn loop_devices_of(dir: &Path) -> Vec<String> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/sys/block").unwrap().flatten() {
        let bf = e.path().join("loop/backing_file");
        if let Ok(b) = std::fs::read_to_string(bf) {
            if b.trim().starts_with(&*dir.to_string_lossy()) {
                v.push(e.file_name().to_string_lossy().into_owned());
            }
        }
    }
    v
}

/// A run killed with SIGKILL mid-workload leaves mounts and a loop device;
/// the next run (here `powercut cleanup`) removes exactly those. Two runs
/// side by side work too.
#[test]
fn mount_killed_run_is_cleaned_up_and_runs_coexist() {
    let mut victim = powercut()
        .args([
            "run",
            "-q",
            "--fs",
            "ext4",
            "--workload",
            "sleep 600",
            "--check",
            "true",
        ])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let dir = Path::new("/run/powercut").join(victim.id().to_string());
    let t = Instant::now();
    while loop_devices_of(&dir).is_empty() || !dir.join("0/mnt/lost+found").exists() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "victim never mounted"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("victim mounted after {:?}", t.elapsed());
    // Meanwhile a second run works side by side.
    let other = common::run_writer("ext4", "correct")
        .args(["--max-states", "30"])
        .env("WRITER_ITERATIONS", "5")
        .output()
        .unwrap();
    assert!(
        other.status.success(),
        "{}",
        String::from_utf8_lossy(&other.stdout)
    );
    println!("side-by-side run done after {:?}", t.elapsed());
    victim.kill().unwrap();
    victim.wait().unwrap();
    println!("victim killed after {:?}", t.elapsed());
    assert!(
        !loop_devices_of(&dir).is_empty(),
        "the killed run left its loop device"
    );
    let st = powercut().arg("cleanup").status().unwrap();
    assert!(st.success());
    println!("cleanup done after {:?}", t.elapsed());
    // A loop device still held by the dying mount is cleared when released.
    let t = Instant::now();
    while !loop_devices_of(&dir).is_empty() && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        loop_devices_of(&dir).is_empty(),
        "loop device still attached after cleanup"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&*dir.to_string_lossy()),
        "mounts left: {mounts}"
    );
    assert!(!dir.exists());
}

/// A soak run: many more states and iterations. `cargo test -- --ignored`.
#[test]
#[ignore = "soak: long"]
fn mount_soak_all_writers() {
    for w in ["inplace", "rename-nosync", "rename-nodirsync"] {
        let (code, _) = run_writer(w, &env_or("POWERCUT_SOAK_STATES", "0"));
        assert_eq!(code, 1);
    }
    let (code, report) = run_writer("correct", &env_or("POWERCUT_SOAK_STATES", "0"));
    assert_eq!(
        code,
        0,
        "{:?}",
        report
            .configs
            .iter()
            .map(|c| &c.violations)
            .collect::<Vec<_>>()
    );
}

/// Not root: one clean error line and exit 2, before touching anything.
#[test]
fn refuses_clearly_when_not_root() {
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_powercut"))
        .args(["run", "--workload", "true", "--check", "true"])
        .output()
        .expect("setpriv (util-linux) is needed for this test");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("must run as root"), "{err}");
}

use powercut::disk::Backing;

/// A disk whose reads hang on demand, like a wedged FUSE daemon.
struct HangingDisk {
    inner: std::sync::Arc<powercut::disk::Recorder>,
    hang: std::sync::atomic::AtomicBool,
    release: std::sync::atomic::AtomicBool,
}

impl powercut::disk::Backing for HangingDisk {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read(&self, off: u64, size: u64) -> Vec<u8> {
        use std::sync::atomic::Ordering::Relaxed;
        while self.hang.load(Relaxed) && !self.release.load(Relaxed) {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.inner.read(off, size)
    }
    fn write(&self, off: u64, data: &[u8], reply: powercut::disk::ReplyWrite) {
        self.inner.write(off, data, reply);
    }
    fn zero(&self, off: u64, len: u64) {
        self.inner.zero(off, len);
    }
    fn flush(&self, reply: powercut::disk::ReplyEmpty) {
        self.inner.flush(reply);
    }
    fn mark(&self, line: &str) {
        self.inner.mark(line);
    }
}

/// When the FUSE side stops answering, the watchdog aborts the connection
/// through fusectl: the mount fails after its timeout instead of hanging.
#[test]
fn mount_watchdog_aborts_a_hung_fuse_connection() {
    use std::sync::atomic::Ordering::Relaxed;
    let disk = std::sync::Arc::new(HangingDisk {
        inner: powercut::disk::Recorder::new(64 << 20, powercut::disk::RecorderOptions::default()),
        hang: false.into(),
        release: false.into(),
    });
    let mut stack = powercut::stack::DiskStack::new(std::sync::Arc::clone(&disk)).unwrap();
    powercut::stack::run_tool(
        FsConfig::Ext4.mkfs(&stack.dev),
        "mkfs",
        Duration::from_secs(60),
    )
    .unwrap();
    powercut::stack::flush_buffers(&stack.dev).unwrap();
    stack.invalidate_cache().unwrap();
    disk.hang.store(true, Relaxed);
    let t = Instant::now();
    let r = stack.mount("ext4", "", Duration::from_secs(2));
    let waited = t.elapsed();
    disk.release.store(true, Relaxed);
    let e = r.expect_err("a mount on a hung disk must fail");
    assert!(e.to_string().contains("aborted"), "{e}");
    assert!(
        waited < Duration::from_secs(20),
        "the watchdog took {waited:?}"
    );
    assert!(disk.size() > 0);
    stack.teardown().ok();
}

#[test]
fn mount_stats_counts_writes_and_flushes_between_marks() {
    let out = powercut()
        .args(["stats", "--fs", "ext4", "--workload"])
        .arg(concat!(
            "echo 'start dd' > \"$POWERCUT_CTL\"; ",
            "dd if=/dev/urandom of=f bs=4096 count=4 conv=fsync 2>/dev/null; ",
            "echo 'end dd' > \"$POWERCUT_CTL\""
        ))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = text
        .lines()
        .find(|l| l.starts_with("segment fs=ext4 ") && l.ends_with(" mark=start dd"))
        .unwrap_or_else(|| panic!("no segment for the mark: {text}"));
    let field = |k: &str| -> u64 {
        line.split(' ')
            .find_map(|w| w.strip_prefix(k)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {k} in {line}"))
    };
    // The file's 16 KiB and its metadata reached the disk, and the fsync
    // sent at least one cache flush.
    assert!(field("bytes") >= 16384, "{line}");
    assert!(field("flushes") >= 1, "{line}");
    assert!(
        text.lines().any(|l| l.starts_with("total fs=ext4 ")),
        "{text}"
    );
}
