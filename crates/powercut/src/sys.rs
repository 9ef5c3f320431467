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
