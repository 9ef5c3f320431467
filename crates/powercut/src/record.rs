//! Recording a workload on one configuration: the FUSE disk, loop device,
//! mkfs, mount, setup, then the workload and its unmount, recorded.

use std::fs;
use std::io;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::disk::{Recorder, RecorderOptions};
use crate::log::Log;
use crate::run::Config;
use crate::stack::{
    err, run_tool, run_with_timeout, set_xfs_sync_centisecs, DiskStack, FsConfig, Noise,
};

/// The outcome of recording a workload on one configuration.
pub struct Recording {
    /// The image when recording started (after mkfs, setup and a sync).
    pub base: Vec<u8>,
    /// What reached the disk from then until teardown.
    pub log: Log,
    /// Noise fsyncs made.
    pub noise_fsyncs: u64,
    /// Seconds the workload command ran.
    pub workload_secs: f64,
    /// Most WRITEs in flight at once on the recorded disk.
    pub max_in_flight: usize,
}

pub(crate) fn shell(cmd: &str, cwd: &Path, env: &[(&str, String)]) -> Command {
    let mut c = Command::new("sh");
    c.arg("-c").arg(cmd).current_dir(cwd);
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

/// Records `cfg.workload` on `fs`: FUSE disk, loop, mkfs, mount, setup, sync,
/// then record the workload and the unmount.
pub fn record(cfg: &Config, fs: FsConfig) -> io::Result<Recording> {
    let rec = Recorder::new(
        fs.image_size(),
        RecorderOptions {
            write_delay: cfg.write_delay,
            flush_latency: cfg.flush_latency,
            seed: cfg.enumeration.seed,
        },
    );
    let mut stack = DiskStack::new(Arc::clone(&rec))?;
    if fs.has_fs() {
        // mkfs of a 64-320 MiB RAM disk takes well under a second; a stuck one
        // is stopped by the watchdog rather than waiting for the long timeout.
        let mkfs_timeout = cfg.timeout.min(Duration::from_secs(60));
        if let Err(e) = run_tool(fs.mkfs(&stack.dev), &format!("mkfs for {fs}"), mkfs_timeout) {
            stack.abort();
            return Err(e);
        }
        stack.mount(
            fs.fstype(),
            &fs.record_options(cfg.short_commit),
            cfg.timeout,
        )?;
    }
    // Where the commands run: the filesystem, or (raw) a scratch directory.
    let cwd = work_dir(&stack, fs)?;
    let env = [
        ("POWERCUT_CTL", stack.ctl().to_string_lossy().into_owned()),
        ("POWERCUT_FS", fs.name().to_string()),
        ("POWERCUT_DEV", stack.dev.to_string_lossy().into_owned()),
    ];
    if let Some(setup) = &cfg.setup {
        let r = run_with_timeout(&mut shell(setup, &cwd, &env), cfg.timeout)?;
        if r.code != Some(0) {
            return Err(err(format!(
                "setup failed on {fs} ({}): {}",
                r.status_text(),
                r.output.trim()
            )));
        }
    }
    if fs.has_fs() {
        let dirf = fs::File::open(&stack.mnt)?;
        rustix::fs::syncfs(&dirf).map_err(|e| err(format!("syncfs: {e}")))?;
    } else {
        fs::OpenOptions::new()
            .write(true)
            .open(&stack.dev)?
            .sync_all()?;
    }
    let base = rec.start();
    let old_xfs = (cfg.short_commit && fs == FsConfig::Xfs)
        .then(|| set_xfs_sync_centisecs(100))
        .flatten();
    let noise = match cfg.noise {
        Some(iv) if fs.has_fs() => Some(Noise::start(&stack.mnt, iv)?),
        _ => None,
    };
    let t_workload = Instant::now();
    let result = run_with_timeout(&mut shell(&cfg.workload, &cwd, &env), cfg.timeout);
    let workload_secs = t_workload.elapsed().as_secs_f64();
    let noise_fsyncs = noise.map_or(0, Noise::stop);
    if let Some(old) = old_xfs {
        set_xfs_sync_centisecs(old);
    }
    let result = match result {
        Ok(r) if r.timed_out => {
            stack.abort();
            Err(err(format!(
                "workload timed out on {fs} after {:?}",
                cfg.timeout
            )))
        }
        Ok(r) if r.code != Some(0) => Err(err(format!(
            "workload failed on {fs} ({}): {}",
            r.status_text(),
            r.output.trim()
        ))),
        Ok(_) => Ok(()),
        Err(e) => Err(e),
    };
    let unmounted = result.and_then(|()| stack.unmount(cfg.timeout));
    let log = rec.stop();
    let max_in_flight = rec.max_in_flight();
    stack.teardown()?;
    unmounted?;
    Ok(Recording {
        base,
        log,
        noise_fsyncs,
        workload_secs,
        max_in_flight,
    })
}

/// The directory commands run in: the mounted filesystem, or for `raw` a
/// scratch directory beside the stack (the device is `$POWERCUT_DEV`).
pub(crate) fn work_dir(stack: &DiskStack, fs: FsConfig) -> io::Result<std::path::PathBuf> {
    if fs.has_fs() {
        return Ok(stack.mnt.clone());
    }
    let d = stack.dir.join("scratch");
    fs::create_dir_all(&d)?;
    Ok(d)
}
