//! The VM lane: configurations whose filesystem this kernel lacks (F2FS,
//! vfat) run in Debian's own kernel under QEMU (TCG: no KVM needed).
//!
//! The guest boots from a small initramfs built here (Debian's static
//! busybox, the virtio and 9p modules of the guest kernel), mounts the
//! host's root read-only over 9p with a RAM overlay on top (so every host
//! path, `/tmp` included, is visible at the same path, and nothing the
//! guest writes reaches the host), mounts the run's artifacts directory
//! writable at its own path, and runs `powercut vm-guest` there: the same
//! recorder, replay and checkers as on the host, on the guest's kernel.
//! The guest's report comes back as JSON in the artifacts directory; its
//! progress lines come back on a serial port, its kernel console goes to
//! `vm/console.log`. QEMU dies with the process that started it.

use std::fmt::Write as _;
use std::fs;
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::run::{Config, ConfigReport};
use crate::stack::{err, FsConfig};

/// Set in the guest's environment: configurations run on this kernel.
pub const IN_VM_ENV: &str = "POWERCUT_IN_VM";

/// Whether this process runs inside the VM lane's guest.
pub fn in_guest() -> bool {
    std::env::var_os(IN_VM_ENV).is_some_and(|v| v == "1")
}

/// Whether `fs` must run in the VM from here.
pub fn needs_vm(fs: FsConfig) -> bool {
    fs.needs_vm() && !in_guest()
}

/// Modules the initramfs loads, in order, to mount the host's root.
const BOOT_MODULES: [&str; 11] = [
    "drivers/virtio/virtio_ring",
    "drivers/virtio/virtio",
    "drivers/virtio/virtio_pci_legacy_dev",
    "drivers/virtio/virtio_pci_modern_dev",
    "drivers/virtio/virtio_pci",
    "fs/netfs/netfs",
    "fs/fscache/fscache",
    "net/9p/9pnet",
    "net/9p/9pnet_virtio",
    "fs/9p/9p",
    "fs/overlayfs/overlay",
];

const QEMU: &str = "qemu-system-x86_64";
/// The raw-flash recorder's kernel module, built for the guest kernel when
/// a run needs it.
const MTD_SOURCE: &str = include_str!("../mtd/powercut_mtd.c");
const BUSYBOX: &str = "/bin/busybox";
const SETUP_HINT: &str = "scripts/setup installs it";

/// The guest's `/init`: mount the host's root, run the guest command with
/// its output on the second serial port, record its exit code, power off.
const INIT: &str = r#"#!/bin/busybox sh
B=/bin/busybox
$B mount -t proc proc /proc
$B mount -t sysfs sys /sys
$B mount -t devtmpfs dev /dev
for m in $($B cat /modules); do $B insmod /mod/$($B basename $m).ko || echo "powercut vm: insmod $m failed"; done
share=$($B sed -n 's/.*powercut.share=\([^ ]*\).*/\1/p' /proc/cmdline)
$B mkdir -p /lower /upper /newroot
$B mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot /lower
$B mount -t tmpfs tmpfs /upper
$B mkdir -p /upper/u /upper/w
$B mount -t overlay overlay -o lowerdir=/lower,upperdir=/upper/u,workdir=/upper/w /newroot
$B mount -t proc proc /newroot/proc
$B mount -t sysfs sys /newroot/sys
$B mount -t devtmpfs dev /newroot/dev
$B mount -t tmpfs tmpfs /newroot/run
$B mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 share /newroot$share
$B chroot /newroot /bin/sh $share/vm/guest.sh > /dev/ttyS1 2>&1
echo $? > /newroot$share/vm/rc
$B umount /newroot$share
$B sync
$B poweroff -f
"#;

/// Runs `configs` of `cfg` in the VM and returns their reports.
pub fn run_in_vm(cfg: &Config, configs: &[FsConfig]) -> io::Result<Vec<ConfigReport>> {
    // A bad --jobs fails here, not minutes later in the guest.
    if configs.iter().any(|c| c.is_flash()) && cfg.jobs > crate::flash::MAX_CHECKERS {
        return Err(crate::flash::too_many_checkers(cfg.jobs));
    }
    let lane = Lane::find()?;
    let (share, temporary) = match &cfg.artifacts {
        Some(a) => (a.clone(), false),
        None => (
            std::env::temp_dir().join(format!("powercut-vm-{}", std::process::id())),
            true,
        ),
    };
    let r = lane.run(cfg, configs, &share);
    // A temporary directory goes, unless it holds a violation's artifacts
    // (its replay command names them).
    let keep = r
        .as_ref()
        .is_ok_and(|c| c.iter().any(|c| c.artifacts.is_some()));
    if temporary && !keep {
        let _ = fs::remove_dir_all(&share);
    } else if temporary {
        let _ = fs::remove_file(share.join("vm/initrd.cpio"));
    }
    r
}

/// What the lane needs on the host: QEMU, the guest kernel and its modules,
/// a static busybox, and the `powercut` binary the guest runs.
struct Lane {
    kernel: PathBuf,
    modules: PathBuf,
    powercut: PathBuf,
}

impl Lane {
    fn find() -> io::Result<Lane> {
        if which(QEMU).is_none() {
            return Err(err(format!(
                "the VM lane needs {QEMU} (Debian package qemu-system-x86; {SETUP_HINT})"
            )));
        }
        if !Path::new(BUSYBOX).is_file() {
            return Err(err(format!(
                "the VM lane needs {BUSYBOX} (Debian package busybox-static; {SETUP_HINT})"
            )));
        }
        let (kernel, modules) = find_kernel()?;
        Ok(Lane {
            kernel,
            modules,
            powercut: powercut_binary()?,
        })
    }

    fn run(
        &self,
        cfg: &Config,
        configs: &[FsConfig],
        share: &Path,
    ) -> io::Result<Vec<ConfigReport>> {
        let share = std::path::absolute(share)?;
        let text = share.to_string_lossy().into_owned();
        if text.chars().any(char::is_whitespace) {
            return Err(err(format!(
                "the VM lane's artifacts directory may not contain spaces: {text}"
            )));
        }
        let vm = share.join("vm");
        fs::create_dir_all(&vm)?;
        let _ = fs::remove_file(vm.join("rc"));
        let _ = fs::remove_file(vm.join("report.json"));
        let mut guest_cfg = cfg.clone();
        guest_cfg.configs = configs.to_vec();
        guest_cfg.artifacts = Some(share.clone());
        fs::write(
            vm.join("config.json"),
            serde_json::to_vec_pretty(&guest_cfg)?,
        )?;
        let mut modules = vec!["loop", "fuse"];
        for c in configs {
            modules.extend_from_slice(c.modules());
        }
        let mtd = if configs.iter().any(|c| c.is_flash()) {
            let ko = self.build_mtd_module(&vm.join("mtd"))?;
            format!(
                "export {}='{}'\n",
                crate::flash::MTD_MODULE_ENV,
                ko.display()
            )
        } else {
            String::new()
        };
        fs::write(
            vm.join("guest.sh"),
            format!(
                "cd /\nmodprobe -a {}\n{}{mtd}export {IN_VM_ENV}=1\nexec {} vm-guest --config {} --report {}\n",
                modules.join(" "),
                exported_environment(),
                quote(&self.powercut.to_string_lossy()),
                quote(&vm.join("config.json").to_string_lossy()),
                quote(&vm.join("report.json").to_string_lossy()),
            ),
        )?;
        let initrd = vm.join("initrd.cpio");
        fs::write(&initrd, self.initramfs()?)?;
        let console = vm.join("console.log");
        let smp = thread::available_parallelism().map_or(2, |n| n.get().min(4));
        let mut qemu = Command::new(QEMU);
        qemu.args(["-accel", "tcg,thread=multi", "-smp"])
            .arg(smp.to_string())
            .args(["-m", "3072", "-display", "none", "-monitor", "none"])
            .args(["-nodefaults", "-no-reboot", "-net", "none"])
            .arg("-kernel")
            .arg(&self.kernel)
            .arg("-initrd")
            .arg(&initrd)
            .arg("-append")
            .arg(format!(
                "console=ttyS0 loglevel=4 panic=-1 powercut.share={text}"
            ))
            .arg("-serial")
            .arg(format!("file:{}", console.display()))
            .args([
                "-chardev",
                "stdio,id=out,signal=off",
                "-serial",
                "chardev:out",
            ])
            .args([
                "-virtfs",
                "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
            ])
            .arg("-virtfs")
            .arg(format!(
                "local,path={text},mount_tag=share,security_model=none,multidevs=remap"
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        crate::sys::kill_with_parent(&mut qemu);
        let start = Instant::now();
        let mut child = qemu
            .spawn()
            .map_err(|e| err(format!("starting {QEMU}: {e}")))?;
        // The guest's output, to our stderr as it comes (serial lines end in \r\n).
        let out = child.stdout.take().map(|o| {
            thread::spawn(move || {
                for line in io::BufReader::new(o).split(b'\n').map_while(Result::ok) {
                    let line = String::from_utf8_lossy(&line);
                    let _ = writeln!(io::stderr().lock(), "{}", line.trim_end_matches('\r'));
                }
            })
        });
        let qemu_err = child.stderr.take().map(|e| {
            thread::spawn(move || {
                let mut s = String::new();
                let _ = io::Read::read_to_string(&mut io::BufReader::new(e), &mut s);
                s
            })
        });
        let pid = child.id();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        let Ok(status) = rx.recv_timeout(vm_timeout()) else {
            kill(pid);
            rx.recv().map_err(|_| err("the QEMU waiter died"))??;
            return Err(err(format!(
                "the VM lane timed out after {:?} (POWERCUT_VM_TIMEOUT); console log: {}",
                vm_timeout(),
                console.display()
            )));
        };
        let status = status?;
        if let Some(t) = out {
            let _ = t.join();
        }
        // It holds the caller's environment: not left in the artifacts.
        let _ = fs::remove_file(vm.join("guest.sh"));
        let qemu_err = qemu_err.and_then(|t| t.join().ok()).unwrap_or_default();
        let rc = fs::read_to_string(vm.join("rc")).ok();
        let report = fs::read(vm.join("report.json"));
        match (rc.as_deref().map(str::trim), report) {
            (Some("0"), Ok(bytes)) => {
                let r: crate::run::Report = serde_json::from_slice(&bytes)
                    .map_err(|e| err(format!("the guest's report: {e}")))?;
                if cfg.progress {
                    let _ = writeln!(
                        io::stderr().lock(),
                        "[vm] {} in {:.1}s (Debian kernel {}, QEMU TCG, {smp} CPUs)",
                        configs
                            .iter()
                            .map(|c| c.name())
                            .collect::<Vec<_>>()
                            .join(", "),
                        start.elapsed().as_secs_f64(),
                        self.modules
                            .file_name()
                            .unwrap_or_default()
                            .to_string_lossy()
                    );
                }
                Ok(r.configs)
            }
            (rc, _) => Err(err(format!(
                "the VM lane's guest failed ({}, QEMU {status}){}; console log: {}",
                rc.map_or("no exit code".to_string(), |c| format!("exit {c}")),
                qemu_err
                    .lines()
                    .next()
                    .map(|l| format!(": {l}"))
                    .unwrap_or_default(),
                console.display()
            ))),
        }
    }

    /// Builds `powercut_mtd.ko` (its source is in this binary) for the
    /// guest kernel in `dir`, with the kernel's headers (Debian's
    /// `linux-headers-VERSION`); returns its path.
    fn build_mtd_module(&self, dir: &Path) -> io::Result<PathBuf> {
        let build = self.modules.join("build");
        if !build.join("Makefile").is_file() {
            return Err(err(format!(
                "UBIFS and JFFS2 need the guest kernel's headers to build powercut_mtd ({} is missing: Debian package linux-headers-{}); {SETUP_HINT}",
                build.display(),
                self.modules.file_name().unwrap_or_default().to_string_lossy()
            )));
        }
        fs::create_dir_all(dir)?;
        fs::write(dir.join("powercut_mtd.c"), MTD_SOURCE)?;
        fs::write(dir.join("Kbuild"), "obj-m := powercut_mtd.o\n")?;
        let mut c = Command::new("make");
        c.arg("-C")
            .arg(&build)
            .arg(format!("M={}", dir.display()))
            .arg("modules");
        crate::stack::run_tool(c, "building powercut_mtd", Duration::from_secs(600))?;
        Ok(dir.join("powercut_mtd.ko"))
    }

    /// The initramfs: `/init`, busybox, the boot modules (newc cpio).
    fn initramfs(&self) -> io::Result<Vec<u8>> {
        let mut c = Cpio::default();
        for d in ["bin", "mod", "dev", "proc", "sys"] {
            c.dir(d);
        }
        c.file("init", 0o755, INIT.as_bytes());
        c.file("bin/busybox", 0o755, &fs::read(BUSYBOX)?);
        let mut list = String::new();
        for m in BOOT_MODULES {
            let p = self.modules.join("kernel").join(format!("{m}.ko"));
            let bytes = fs::read(&p).map_err(|e| {
                err(format!(
                    "the guest kernel's module {} is missing ({e}); is linux-image-amd64 complete?",
                    p.display()
                ))
            })?;
            let name = Path::new(m)
                .file_name()
                .unwrap_or_default()
                .to_string_lossy();
            c.file(&format!("mod/{name}.ko"), 0o644, &bytes);
            list.push_str(m);
            list.push('\n');
        }
        c.file("modules", 0o644, list.as_bytes());
        Ok(c.finish())
    }
}

/// This process's environment as shell `export` lines, so the guest's
/// commands see what they would see on the host (`$FSTX`, `$PATH`, ...).
fn exported_environment() -> String {
    const SKIP: [&str; 5] = ["PWD", "OLDPWD", "SHLVL", "_", IN_VM_ENV];
    let mut out = String::new();
    for (k, v) in std::env::vars_os() {
        let (Some(k), Some(v)) = (k.to_str(), v.to_str()) else {
            continue;
        };
        let name_ok = k
            .chars()
            .enumerate()
            .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()));
        if k.is_empty() || !name_ok || SKIP.contains(&k) {
            continue;
        }
        let _ = writeln!(out, "export {k}={}", quote(v));
    }
    out
}

/// `s` as one shell word.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A sort key that orders version strings by their numbers (`-9` < `-57`).
fn version_key(s: &str) -> Vec<(u64, String)> {
    let mut key = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits > 0 {
            key.push((rest[..digits].parse().unwrap_or(u64::MAX), String::new()));
            rest = &rest[digits..];
        } else {
            let text = rest.len() - rest.trim_start_matches(|c: char| !c.is_ascii_digit()).len();
            key.push((0, rest[..text].to_string()));
            rest = &rest[text..];
        }
    }
    key
}

/// How long one VM run may take (`POWERCUT_VM_TIMEOUT` seconds; 4 h).
fn vm_timeout() -> Duration {
    let secs = std::env::var("POWERCUT_VM_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4 * 3600);
    Duration::from_secs(secs)
}

/// The guest kernel: `$POWERCUT_KERNEL`, else the newest `/boot/vmlinuz-*`
/// whose modules include 9p (Debian's `linux-image-amd64`).
fn find_kernel() -> io::Result<(PathBuf, PathBuf)> {
    let candidates: Vec<PathBuf> = if let Some(k) = std::env::var_os("POWERCUT_KERNEL") {
        vec![PathBuf::from(k)]
    } else {
        let mut v: Vec<PathBuf> = fs::read_dir("/boot")
            .map(|d| {
                d.flatten()
                    .map(|e| e.path())
                    .filter(|p| {
                        p.file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
                    })
                    .collect()
            })
            .unwrap_or_default();
        // Newest first, by version (6.1.0-57 after 6.1.0-9).
        v.sort_by_key(|p| version_key(&p.to_string_lossy()));
        v.reverse();
        v
    };
    for k in candidates {
        let ver = k
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .trim_start_matches("vmlinuz-")
            .to_string();
        let modules = Path::new("/lib/modules").join(&ver);
        if modules.join("kernel/fs/9p/9p.ko").is_file() {
            return Ok((k, modules));
        }
    }
    Err(err(format!(
        "the VM lane needs Debian's kernel (package linux-image-amd64: /boot/vmlinuz-* with its modules); {SETUP_HINT}"
    )))
}

/// The `powercut` binary: this one, or the one beside this program.
fn powercut_binary() -> io::Result<PathBuf> {
    let me = std::env::current_exe()?;
    if me.file_name().is_some_and(|n| n == "powercut") {
        return Ok(me);
    }
    let beside = me.with_file_name("powercut");
    if beside.is_file() {
        return Ok(beside);
    }
    // A test binary lives in target/PROFILE/deps, the workspace's binaries
    // one level up.
    if me
        .parent()
        .and_then(Path::file_name)
        .is_some_and(|d| d == "deps")
    {
        if let Some(up) = me.parent().and_then(Path::parent) {
            if up.join("powercut").is_file() {
                return Ok(up.join("powercut"));
            }
        }
    }
    which("powercut").ok_or_else(|| {
        err(format!(
            "the VM lane runs the `powercut` binary in the guest; none beside {} or on PATH (cargo build -p powercut)",
            me.display()
        ))
    })
}

fn kill(pid: u32) {
    if let Some(p) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
    }
}

fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// The guest side (`powercut vm-guest`): run the configuration, write the report.
pub fn guest_main(config: &Path, report: &Path) -> io::Result<()> {
    let cfg: Config = serde_json::from_slice(&fs::read(config)?)?;
    let r = crate::run(&cfg)?;
    fs::write(report, serde_json::to_vec(&r)?)?;
    Ok(())
}

/// A newc-format cpio archive, built in memory.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_sort_by_version_and_words_quote() {
        let mut v = vec![
            "vmlinuz-6.1.0-57-amd64",
            "vmlinuz-6.1.0-9-amd64",
            "vmlinuz-6.10.0-1-amd64",
        ];
        v.sort_by_key(|s| version_key(s));
        assert_eq!(
            v,
            [
                "vmlinuz-6.1.0-9-amd64",
                "vmlinuz-6.1.0-57-amd64",
                "vmlinuz-6.10.0-1-amd64"
            ]
        );
        assert_eq!(quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn cpio_entries_are_newc_and_aligned() {
        let mut c = Cpio::default();
        c.dir("bin");
        c.file("init", 0o755, b"#!/bin/sh\n");
        let out = c.finish();
        assert!(out.starts_with(b"070701"));
        assert_eq!(out.len() % 4, 0);
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("TRAILER!!!") && text.contains("init"));
    }
}

#[derive(Default)]
struct Cpio {
    out: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.ino += 1;
        let fields = [
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            u32::try_from(data.len()).unwrap_or(u32::MAX),
            0,
            0,
            0,
            0,
            u32::try_from(name.len() + 1).unwrap_or(u32::MAX),
            0,
        ];
        self.out.extend_from_slice(b"070701");
        for f in fields {
            self.out.extend_from_slice(format!("{f:08X}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while self.out.len() % 4 != 0 {
            self.out.push(0);
        }
    }

    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040_755, &[]);
    }

    fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(name, 0o100_000 | perm, data);
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[]);
        self.out
    }
}
