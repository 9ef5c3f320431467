//! The stack: a FUSE-served disk image, a loop device on it, a real
//! filesystem on the loop device; plus the bookkeeping that lets a later run
//! clean up after a killed one, and the watchdog that aborts a hung FUSE
//! connection.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use crate::disk::{Backing, DiskFs, DISK_NAME};
pub use crate::fsconfig::FsConfig;

/// Where each run keeps its state (`<pid>/<n>/{fuse,mnt,loop}`).
pub const STATE_ROOT: &str = "/run/powercut";

/// An error with a message that says what failed.
pub fn err(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

/// Checks root, `/dev/fuse`, loop support and the tools `configs` need.
pub fn preflight(configs: &[FsConfig]) -> io::Result<()> {
    if !rustix::process::geteuid().is_root() {
        return Err(err(
            "powercut must run as root (it mounts filesystems and attaches loop devices)",
        ));
    }
    if !Path::new("/dev/fuse").exists() {
        return Err(err(
            "/dev/fuse is missing: FUSE is not available on this kernel",
        ));
    }
    if !Path::new("/dev/loop-control").exists() {
        return Err(err(
            "/dev/loop-control is missing: loop devices are not available",
        ));
    }
    let mut tools = vec![("losetup", "mount")];
    for c in configs {
        tools.extend_from_slice(c.tools());
    }
    for (tool, pkg) in tools {
        if which(tool).is_none() {
            return Err(err(format!(
                "`{tool}` not found (install the Debian package {pkg})"
            )));
        }
    }
    Ok(())
}

fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// Runs a command to completion, returning its combined output, or an error naming it.
pub fn run_tool(mut cmd: Command, what: &str, timeout: Duration) -> io::Result<String> {
    let r = run_with_timeout(&mut cmd, timeout)?;
    if r.timed_out {
        return Err(err(format!("{what}: timed out after {timeout:?}")));
    }
    if r.code != Some(0) {
        return Err(err(format!(
            "{what} failed ({}): {}",
            r.status_text(),
            r.output.trim()
        )));
    }
    Ok(r.output)
}

/// The outcome of a command run with a timeout.
#[derive(Debug, Clone)]
pub struct CmdResult {
    /// Exit code, if it exited.
    pub code: Option<i32>,
    /// Stdout and stderr, truncated to a few KiB.
    pub output: String,
    /// Whether it was killed for running too long.
    pub timed_out: bool,
}

impl CmdResult {
    /// "exit 3", "killed by a signal" or "timed out".
    pub fn status_text(&self) -> String {
        match (self.timed_out, self.code) {
            (true, _) => "timed out".into(),
            (false, Some(c)) => format!("exit {c}"),
            (false, None) => "killed by a signal".into(),
        }
    }
}

/// Runs `cmd` in its own process group; kills the group after `timeout`.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> io::Result<CmdResult> {
    use std::os::unix::process::CommandExt;
    let prog = format!("{:?}", cmd.get_program());
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd
        .spawn()
        .map_err(|e| err(format!("cannot run {prog}: {e}")))?;
    let pid = child.id();
    let mut out = child.stdout.take();
    let mut errp = child.stderr.take();
    let reader = thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(o) = out.as_mut() {
            let _ = o.read_to_end(&mut buf);
        }
        buf
    });
    let ereader = thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(e) = errp.as_mut() {
            let _ = e.read_to_end(&mut buf);
        }
        buf
    });
    let (tx, rx) = mpsc::channel();
    let waiter = thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let (status, timed_out) = if let Ok(s) = rx.recv_timeout(timeout) {
        (s?, false)
    } else {
        kill_group(pid);
        (rx.recv().map_err(|_| err("waiter died"))??, true)
    };
    let _ = waiter.join();
    // A background grandchild may keep the pipes open: kill the group, then read.
    kill_group(pid);
    wait_group_gone(pid, Duration::from_secs(30));
    let mut bytes = reader.join().unwrap_or_default();
    bytes.extend(ereader.join().unwrap_or_default());
    let mut output = String::from_utf8_lossy(&bytes).into_owned();
    if output.len() > 4096 {
        let mut cut = 4096;
        while !output.is_char_boundary(cut) {
            cut -= 1;
        }
        output.truncate(cut);
        output.push('…');
    }
    Ok(CmdResult {
        code: status.code(),
        output,
        timed_out,
    })
}

/// Waits until no process of group `pgid` is left (a killed `sync` may
/// still be finishing its fsync, holding the mount busy).
fn wait_group_gone(pgid: u32, limit: Duration) {
    let Some(p) = i32::try_from(pgid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return;
    };
    let t = Instant::now();
    while rustix::process::test_kill_process_group(p).is_ok() && t.elapsed() < limit {
        thread::sleep(Duration::from_millis(2));
    }
}

fn kill_group(pid: u32) {
    if let Some(p) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process_group(p, rustix::process::Signal::KILL);
    }
}

/// Runs `f` on a helper thread; if it has not finished after `timeout`,
/// calls `on_hang` (which must unblock it, e.g. by aborting the FUSE
/// connection) and waits again.
pub fn guarded<T: Send + 'static>(
    what: &str,
    timeout: Duration,
    on_hang: impl FnOnce(),
    f: impl FnOnce() -> T + Send + 'static,
) -> io::Result<T> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    if let Ok(v) = rx.recv_timeout(timeout) {
        Ok(v)
    } else {
        on_hang();
        let _ = rx.recv_timeout(Duration::from_secs(30));
        Err(err(format!(
            "{what}: hung for {timeout:?}; the FUSE connection was aborted"
        )))
    }
}

/// Mounts `dev` on `target`.
pub fn mount_fs(dev: &Path, target: &Path, fstype: &str, options: &str) -> io::Result<()> {
    let data =
        std::ffi::CString::new(options).map_err(|_| err("mount options contain a NUL byte"))?;
    rustix::mount::mount(
        dev,
        target,
        fstype,
        rustix::mount::MountFlags::empty(),
        Some(data.as_c_str()),
    )
    .map_err(|e| {
        err(format!(
            "mount -t {fstype} -o {options} {}: {e}",
            dev.display()
        ))
    })
}

/// Unmounts `target`, retrying for a while if it is busy (a process that
/// was just killed may still hold it).
pub fn unmount(target: &Path) -> io::Result<()> {
    let t = Instant::now();
    loop {
        match rustix::mount::unmount(target, rustix::mount::UnmountFlags::empty()) {
            Err(rustix::io::Errno::BUSY) if t.elapsed() < Duration::from_secs(10) => {
                thread::sleep(Duration::from_millis(20));
            }
            r => return r.map_err(|e| err(format!("umount {}: {e}", target.display()))),
        }
    }
}

fn is_mountpoint(p: &Path) -> bool {
    mountinfo().iter().any(|(_, mp)| mp == p)
}

/// `(device "major:minor", mount point)` of every mount, from `/proc/self/mountinfo`.
fn mountinfo() -> Vec<(String, PathBuf)> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let mp = f.get(4)?.replace("\\040", " ");
            Some(((*f.get(2)?).to_string(), PathBuf::from(mp)))
        })
        .collect()
}

/// Aborts the FUSE connection mounted at `fuse_mnt` through fusectl, so that
/// everything blocked on it fails instead of hanging. The connection's number
/// is read from mountinfo, never by touching the (possibly hung) mount.
pub fn abort_fuse(fuse_mnt: &Path) {
    let Some((dev, _)) = mountinfo().into_iter().find(|(_, mp)| mp == fuse_mnt) else {
        return;
    };
    let Some(minor) = dev.split(':').nth(1) else {
        return;
    };
    let conns = Path::new("/sys/fs/fuse/connections");
    if fs::read_dir(conns).map_or(true, |mut d| d.next().is_none()) {
        let _ = rustix::mount::mount(
            "none",
            conns,
            "fusectl",
            rustix::mount::MountFlags::empty(),
            None,
        );
    }
    let _ = fs::write(conns.join(minor).join("abort"), "1");
}

/// Alive, and not merely dying: a run killed while one of its threads was
/// blocked on its own FUSE disk stays in the process table with SIGKILL
/// pending until its connection is aborted, so it counts as dead here.
fn pid_alive(pid: i32) -> bool {
    let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    let sigkill_pending = status.lines().any(|l| {
        (l.starts_with("ShdPnd:") || l.starts_with("SigPnd:"))
            && u64::from_str_radix(l.split_whitespace().nth(1).unwrap_or("0"), 16)
                .is_ok_and(|m| m & (1 << 8) != 0)
    });
    let zombie = status
        .lines()
        .any(|l| l.starts_with("State:") && l.contains('Z'));
    !(sigkill_pending || zombie)
}

/// Cleans what killed earlier runs left behind: their filesystem mounts,
/// the loop devices they recorded as theirs, their FUSE mounts. Only
/// directories under [`STATE_ROOT`] whose process is gone are touched.
pub fn cleanup_dead_runs() {
    let Ok(dirs) = fs::read_dir(STATE_ROOT) else {
        return;
    };
    for d in dirs.flatten() {
        let Some(pid) = d.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid_alive(pid) {
            continue;
        }
        if let Ok(stacks) = fs::read_dir(d.path()) {
            for s in stacks.flatten() {
                cleanup_stack_dir(&s.path());
            }
        }
        let _ = fs::remove_dir_all(d.path());
    }
}

/// Kills processes a dead run left working inside `mnt` (an orphaned
/// workload keeps the filesystem, and so the loop device, busy).
fn kill_processes_in(mnt: &Path) {
    let Ok(procs) = fs::read_dir("/proc") else {
        return;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(cwd) = fs::read_link(p.path().join("cwd")) else {
            continue;
        };
        if cwd.starts_with(mnt) {
            if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
    }
}

fn cleanup_stack_dir(dir: &Path) {
    let fuse = dir.join("fuse");
    let mnt = dir.join("mnt");
    abort_fuse(&fuse);
    kill_processes_in(&mnt);
    if is_mountpoint(&mnt) {
        let _ = rustix::mount::unmount(&mnt, rustix::mount::UnmountFlags::DETACH);
    }
    if let Ok(dev) = fs::read_to_string(dir.join("loop")) {
        let dev = dev.trim();
        // Detach only if the loop device still points at this run's disk.
        let name = dev.trim_start_matches("/dev/");
        let backing =
            fs::read_to_string(format!("/sys/block/{name}/loop/backing_file")).unwrap_or_default();
        if backing.trim() == fuse.join(DISK_NAME).to_string_lossy() {
            let _ = Command::new("losetup").arg("-d").arg(dev).output();
        }
    }
    if is_mountpoint(&fuse) {
        let _ = rustix::mount::unmount(&fuse, rustix::mount::UnmountFlags::DETACH);
    }
}

static STACK_SEQ: AtomicU64 = AtomicU64::new(0);

/// A disk served over FUSE from a [`Backing`], with a loop device attached
/// and a mount point ready. Drop tears it down in the right order.
pub struct DiskStack {
    /// This stack's state directory.
    pub dir: PathBuf,
    /// The FUSE mount point (holds `disk.img` and `ctl`).
    pub fuse_mnt: PathBuf,
    /// Where the filesystem on the loop device gets mounted.
    pub mnt: PathBuf,
    /// The loop device.
    pub dev: PathBuf,
    session: Option<fuser::BackgroundSession>,
    mounted: bool,
}

impl DiskStack {
    /// Serves `backing` over FUSE and attaches a loop device to it.
    pub fn new<B: Backing>(backing: Arc<B>) -> io::Result<DiskStack> {
        let n = STACK_SEQ.fetch_add(1, Ordering::Relaxed);
        let dir = Path::new(STATE_ROOT)
            .join(std::process::id().to_string())
            .join(n.to_string());
        let fuse_mnt = dir.join("fuse");
        let mnt = dir.join("mnt");
        fs::create_dir_all(&fuse_mnt)?;
        fs::create_dir_all(&mnt)?;
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            fuser::MountOption::FSName("powercut".into()),
            fuser::MountOption::Subtype("powercut".into()),
            fuser::MountOption::NoDev,
            fuser::MountOption::NoSuid,
        ];
        let session = fuser::Session::new(DiskFs::new(backing), &fuse_mnt, &config)
            .and_then(fuser::Session::spawn)
            .map_err(|e| err(format!("FUSE mount on {}: {e}", fuse_mnt.display())))?;
        let mut stack = DiskStack {
            dir,
            fuse_mnt,
            mnt,
            dev: PathBuf::new(),
            session: Some(session),
            mounted: false,
        };
        let img = stack.fuse_mnt.join(DISK_NAME);
        let mut last = String::new();
        for _ in 0..5 {
            let mut c = Command::new("losetup");
            c.args(["--find", "--show"]).arg(&img);
            match run_tool(c, "losetup", Duration::from_secs(30)) {
                Ok(out) => {
                    stack.dev = PathBuf::from(out.trim());
                    fs::write(stack.dir.join("loop"), out.trim())?;
                    return Ok(stack);
                }
                Err(e) => last = e.to_string(),
            }
            thread::sleep(Duration::from_millis(50));
        }
        Err(err(format!("attaching a loop device failed: {last}")))
    }

    /// The path of the control file inside the FUSE mount.
    pub fn ctl(&self) -> PathBuf {
        self.fuse_mnt.join(crate::disk::CTL_NAME)
    }

    /// Drops the kernel's cached pages of `disk.img` (after its content changed).
    pub fn invalidate_cache(&self) -> io::Result<()> {
        self.invalidate_ranges(&[(0, 0)])
    }

    /// Drops the kernel's cached pages of `disk.img` in these byte ranges
    /// (offset, length; length 0 = to the end). Many ranges: all of it.
    pub fn invalidate_ranges(&self, ranges: &[(u64, u64)]) -> io::Result<()> {
        let Some(s) = &self.session else {
            return Ok(());
        };
        let whole = [(0, 0)];
        let ranges = if ranges.len() > MAX_INVALIDATIONS {
            &whole[..]
        } else {
            ranges
        };
        let n = s.notifier();
        for &(off, len) in ranges {
            let r = n.inval_inode(
                fuser::INodeNo(crate::disk::INO_DISK),
                i64::try_from(off).unwrap_or(i64::MAX),
                i64::try_from(len).unwrap_or(0),
            );
            match r {
                // Nothing cached yet: nothing to drop.
                Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NOENT.raw_os_error()) => {}
                other => other?,
            }
        }
        Ok(())
    }

    /// Mounts the filesystem on the loop device at [`DiskStack::mnt`].
    pub fn mount(&mut self, fstype: &str, options: &str, timeout: Duration) -> io::Result<()> {
        let (dev, mnt, fstype2, opts) = (
            self.dev.clone(),
            self.mnt.clone(),
            fstype.to_string(),
            options.to_string(),
        );
        let fuse = self.fuse_mnt.clone();
        guarded(
            "mount",
            timeout,
            || abort_fuse(&fuse),
            move || mount_fs(&dev, &mnt, &fstype2, &opts),
        )??;
        self.mounted = true;
        Ok(())
    }

    /// Unmounts the filesystem (a hang aborts the FUSE connection).
    pub fn unmount(&mut self, timeout: Duration) -> io::Result<()> {
        if !self.mounted {
            return Ok(());
        }
        let mnt = self.mnt.clone();
        let fuse = self.fuse_mnt.clone();
        let r = guarded(
            "umount",
            timeout,
            || abort_fuse(&fuse),
            move || unmount(&mnt),
        );
        match r {
            Ok(Ok(())) => {
                self.mounted = false;
                Ok(())
            }
            Ok(Err(e)) | Err(e) => Err(e),
        }
    }

    /// Aborts the FUSE connection (the watchdog's last resort).
    pub fn abort(&self) {
        abort_fuse(&self.fuse_mnt);
    }

    /// Tears down: unmount the filesystem, detach the loop device, unmount FUSE.
    pub fn teardown(mut self) -> io::Result<()> {
        self.teardown_inner()
    }

    fn teardown_inner(&mut self) -> io::Result<()> {
        let mut first_err = None;
        if self.mounted {
            if let Err(e) = self.unmount(Duration::from_secs(60)) {
                let _ = rustix::mount::unmount(&self.mnt, rustix::mount::UnmountFlags::DETACH);
                self.mounted = false;
                first_err.get_or_insert(e);
            }
        }
        if !self.dev.as_os_str().is_empty() {
            let mut c = Command::new("losetup");
            c.arg("-d").arg(&self.dev);
            if let Err(e) = run_tool(c, "losetup -d", Duration::from_secs(30)) {
                first_err.get_or_insert(e);
            }
            // Detaching is deferred while the loop device still has I/O in
            // flight (a slow flush): wait until it lets go of the disk file.
            let name = self
                .dev
                .file_name()
                .map(|n| n.to_string_lossy().into_owned());
            let backing = format!("/sys/block/{}/loop/backing_file", name.unwrap_or_default());
            let t = Instant::now();
            while Path::new(&backing).exists() && t.elapsed() < Duration::from_secs(30) {
                thread::sleep(Duration::from_millis(5));
            }
            self.dev = PathBuf::new();
        }
        if let Some(s) = self.session.take() {
            if let Err(e) = s.umount_and_join() {
                let _ = rustix::mount::unmount(&self.fuse_mnt, rustix::mount::UnmountFlags::DETACH);
                first_err.get_or_insert(err(format!("unmounting FUSE: {e}")));
            }
        }
        let _ = fs::remove_dir_all(&self.dir);
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Drop for DiskStack {
    fn drop(&mut self) {
        let _ = self.teardown_inner();
    }
}

/// More ranges than this are dropped as one: the whole file.
const MAX_INVALIDATIONS: usize = 512;

/// Drops the loop device's buffer cache.
pub fn flush_buffers(dev: &Path) -> io::Result<()> {
    let f = fs::OpenOptions::new().read(true).open(dev)?;
    crate::sys::flush_block_buffers(&f)
}

/// Sets the xfs periodic sync interval (global); returns the old value.
pub fn set_xfs_sync_centisecs(v: u32) -> Option<u32> {
    let p = "/proc/sys/fs/xfs/xfssyncd_centisecs";
    let old = fs::read_to_string(p).ok()?.trim().parse().ok()?;
    fs::write(p, v.to_string()).ok()?;
    Some(old)
}

/// Background "noise": another *process* appends to and fsyncs an
/// unrelated file in `dir` every `interval` until stopped, so the filesystem
/// commits metadata while the workload runs (as on a real system). It must
/// not be a thread of the FUSE daemon's process: a thread blocked on the
/// recorded filesystem would keep a killed daemon from ever exiting.
pub struct Noise {
    child: Option<std::process::Child>,
    file: PathBuf,
}

/// Name of the noise file in the recorded filesystem.
pub const NOISE_FILE: &str = ".powercut-noise";

impl Noise {
    /// Starts the noise process.
    pub fn start(dir: &Path, interval: Duration) -> io::Result<Noise> {
        use std::os::unix::process::CommandExt;
        let script = format!(
            "while :; do echo noise >> {NOISE_FILE}; sync {NOISE_FILE}; sleep {:.3}; done",
            interval.as_secs_f64()
        );
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()?;
        Ok(Noise {
            child: Some(child),
            file: dir.join(NOISE_FILE),
        })
    }

    /// Stops the noise; returns how many appends (each followed by an fsync) it made.
    pub fn stop(mut self) -> u64 {
        self.kill();
        fs::read_to_string(&self.file).map_or(0, |t| t.lines().count() as u64)
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill_group(c.id());
            let _ = c.wait();
            wait_group_gone(c.id(), Duration::from_secs(30));
        }
    }
}

impl Drop for Noise {
    fn drop(&mut self) {
        self.kill();
    }
}
