//! Where the workloads run: a directory on the working directory's
//! filesystem, or a fresh ext4, xfs or btrfs on a loop device (image file,
//! `losetup`, `mkfs`, `mount`), torn down by `Drop` in reverse order. Only
//! what this process attached or mounted is ever detached or unmounted;
//! `scripts/bench` also sweeps its scratch directory on a signal.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A filesystem to run the workloads on.
pub struct Medium {
    /// `cwd (ext4)`, `ext4 (loop)`, ...
    pub label: String,
    /// A directory on it where the workloads may create anything.
    pub dir: PathBuf,
    /// The loop stack, when this medium is one.
    _loop: Option<LoopFs>,
}

impl Medium {
    /// A scratch directory on the working directory's filesystem.
    pub fn cwd(scratch: &Path) -> io::Result<Medium> {
        let dir = scratch.join("cwd");
        fs::create_dir_all(&dir)?;
        Ok(Medium {
            label: format!("cwd ({})", fs_type(&dir)),
            dir,
            _loop: None,
        })
    }

    /// A fresh `fstype` (ext4, xfs, btrfs) of `size` bytes on a loop device
    /// whose image lives in `scratch`.
    pub fn loop_fs(scratch: &Path, fstype: &str, size: u64) -> io::Result<Medium> {
        let lfs = LoopFs::new(scratch, fstype, size)?;
        let dir = lfs.mnt.join("work");
        fs::create_dir_all(&dir)?;
        Ok(Medium {
            label: format!("{fstype} (loop)"),
            dir,
            _loop: Some(lfs),
        })
    }
}

/// Image file → loop device → filesystem → mount point. Each field is set
/// once its step succeeded, so `Drop` undoes exactly what was done.
struct LoopFs {
    img: PathBuf,
    dev: Option<String>,
    mnt: PathBuf,
    mounted: bool,
}

impl LoopFs {
    fn new(scratch: &Path, fstype: &str, size: u64) -> io::Result<LoopFs> {
        let img = scratch.join(format!("{fstype}.img"));
        let mnt = scratch.join(format!("mnt-{fstype}"));
        let mut me = LoopFs {
            img,
            dev: None,
            mnt,
            mounted: false,
        };
        fs::File::create(&me.img)?.set_len(size)?;
        let dev = run("losetup", &["--find", "--show", &me.img.to_string_lossy()])?;
        me.dev = Some(dev.trim().to_string());
        let dev = me.dev.clone().unwrap_or_default();
        match fstype {
            "ext4" => run(
                "mkfs.ext4",
                &[
                    "-F",
                    "-q",
                    "-E",
                    "lazy_itable_init=0,lazy_journal_init=0,nodiscard",
                    &dev,
                ],
            )?,
            "xfs" => run("mkfs.xfs", &["-f", "-q", "-K", &dev])?,
            "btrfs" => run("mkfs.btrfs", &["-f", "-q", "--nodiscard", &dev])?,
            other => return Err(io::Error::other(format!("unknown filesystem {other}"))),
        };
        fs::create_dir_all(&me.mnt)?;
        run("mount", &["-t", fstype, &dev, &me.mnt.to_string_lossy()])?;
        me.mounted = true;
        Ok(me)
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        if self.mounted {
            let mnt = self.mnt.to_string_lossy().into_owned();
            if run("umount", &[&mnt]).is_err() {
                // Busy for a moment after the last writer: retry, then lazily.
                std::thread::sleep(std::time::Duration::from_millis(200));
                if run("umount", &[&mnt]).is_err() {
                    let _ = run("umount", &["-l", &mnt]);
                }
            }
        }
        if let Some(dev) = &self.dev {
            let _ = run("losetup", &["-d", dev]);
        }
        let _ = fs::remove_dir(&self.mnt);
        let _ = fs::remove_file(&self.img);
    }
}

/// Runs a tool; its stdout on success, its stderr in the error.
pub fn run(tool: &str, args: &[&str]) -> io::Result<String> {
    let out = Command::new(tool)
        .args(args)
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("{tool}: {e}")))?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{tool} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The filesystem type of `path` (`findmnt`), or `unknown`.
pub fn fs_type(path: &Path) -> String {
    run(
        "findmnt",
        &["-n", "-o", "FSTYPE", "--target", &path.to_string_lossy()],
    )
    .map(|s| s.trim().to_string())
    .ok()
    .filter(|s| !s.is_empty())
    .unwrap_or_else(|| "unknown".into())
}
