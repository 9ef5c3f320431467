//! The only place with `unsafe`: ioctls rustix has no safe wrapper for.

use std::os::fd::AsFd;

/// `BLKFLSBUF`: drop a block device's buffer cache, so the next mount of a
/// replay disk reads the new crash state and nothing cached from the last one.
pub(crate) fn flush_block_buffers(fd: impl AsFd) -> std::io::Result<()> {
    // `_IO(0x12, 97)`
    const BLKFLSBUF: rustix::ioctl::Opcode = 0x1261;
    // SAFETY: BLKFLSBUF takes no argument and only acts on the block device
    // behind `fd`; `NoArg` passes a null argument, which is what it expects.
    unsafe { rustix::ioctl::ioctl(fd, rustix::ioctl::NoArg::<BLKFLSBUF>::new()) }?;
    Ok(())
}

/// Makes the kernel kill `cmd`'s process with SIGKILL when the thread that
/// spawned it exits, so a killed powercut never leaves a VM running.
pub(crate) fn kill_with_parent(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the child between fork and exec; it only
    // makes one prctl system call (async-signal-safe) and allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
                .map_err(std::io::Error::from)
        });
    }
}
