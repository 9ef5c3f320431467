//! What the kernel said about one device while a crash image was checked.
//!
//! A checker reads `/dev/kmsg` from the position it had when the crash
//! image was mounted; every record that names the image's loop device at
//! warning level or worse (`EXT4-fs error`, `XFS ... Metadata corruption`,
//! `BTRFS warning`, a checksum failure) marks the state *unusual*, and an
//! unusual state is always `fsck`ed, whatever the fsck sample says
//! ([`crate::run::Config::fsck_sample`]).

use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;

/// A reader of kernel log records written after it was opened (or after
/// the last [`Kmsg::take_unusual`]).
pub struct Kmsg {
    file: Option<fs::File>,
}

/// The kernel's log levels: 0 emergency .. 4 warning .. 7 debug.
const WARNING: u32 = 4;

impl Kmsg {
    /// Opens `/dev/kmsg` at its end. When it cannot be opened, every state
    /// counts as unusual (so every state is `fsck`ed).
    pub fn open() -> Kmsg {
        let file = fs::OpenOptions::new()
            .read(true)
            .custom_flags(i32::try_from(rustix::fs::OFlags::NONBLOCK.bits()).unwrap_or(0))
            .open("/dev/kmsg")
            .and_then(|mut f| f.seek(SeekFrom::End(0)).map(|_| f))
            .ok();
        Kmsg { file }
    }

    /// True when the log could not be read: nothing can be ruled out.
    pub fn blind(&self) -> bool {
        self.file.is_none()
    }

    /// The records since the last call that name `dev` (e.g. `loop7`) at
    /// warning level or worse; `Err` when records were lost or the log
    /// cannot be read (the caller must treat the state as unusual).
    pub fn take_unusual(&mut self, dev: &str) -> io::Result<Vec<String>> {
        self.take_at(dev, WARNING)
    }

    /// [`take_unusual`](Self::take_unusual) at error level or worse.
    pub fn take_errors(&mut self, dev: &str) -> io::Result<Vec<String>> {
        self.take_at(dev, 3)
    }

    /// The records since the last call that name `dev` at `level` or worse
    /// (0 emergency ... 7 debug).
    pub fn take_at(&mut self, dev: &str, level: u32) -> io::Result<Vec<String>> {
        let Some(f) = self.file.as_mut() else {
            return Err(io::Error::other("/dev/kmsg is not readable"));
        };
        let mut found = Vec::new();
        let mut lost = false;
        let mut buf = vec![0u8; 8192];
        loop {
            match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if let Some(msg) = at_level(&buf[..n], dev, level) {
                        found.push(msg);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // EPIPE: the ring overwrote records before they were read;
                // the next read continues with the oldest one left.
                Err(e) if e.raw_os_error() == Some(rustix::io::Errno::PIPE.raw_os_error()) => {
                    lost = true;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if lost {
            return Err(io::Error::other("kernel log records were lost"));
        }
        Ok(found)
    }
}

/// The message of one `/dev/kmsg` record (`prio,seq,usec,flags;text`), if
/// it is at warning level or worse and names `dev` as a whole word.
#[cfg(test)]
fn unusual(record: &[u8], dev: &str) -> Option<String> {
    at_level(record, dev, WARNING)
}

/// [`unusual`] at `level` or worse.
fn at_level(record: &[u8], dev: &str, level: u32) -> Option<String> {
    let text = String::from_utf8_lossy(record);
    let (head, body) = text.split_once(';')?;
    let prio: u32 = head.split(',').next()?.parse().ok()?;
    let msg = body.lines().next().unwrap_or("");
    (prio & 7 <= level && names_device(msg, dev) && !expected_after_a_cut(msg))
        .then(|| msg.to_string())
}

/// A warning every crash image of a filesystem without a journal gets at
/// mount (vfat's and exFAT's "Volume was not properly unmounted"): the
/// normal trace of a cut there, not a sign of anything unusual.
fn expected_after_a_cut(msg: &str) -> bool {
    msg.contains("Volume was not properly unmounted")
}

/// `dev` appears in `msg` not followed by a digit (`loop1` is not `loop12`).
fn names_device(msg: &str, dev: &str) -> bool {
    msg.match_indices(dev).any(|(i, _)| {
        let before = msg[..i].chars().next_back();
        let after = msg[i + dev.len()..].chars().next();
        !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(|c| c.is_ascii_digit())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_warnings_about_the_device_are_unusual() {
        let err = b"3,100,5,-;EXT4-fs error (device loop7): ext4_lookup:1855: inode #2: comm sh: deleted inode referenced: 13";
        assert!(unusual(err, "loop7").is_some());
        assert!(unusual(err, "loop1").is_none());
        assert!(unusual(err, "loop").is_none());
        let dirty = b"4,104,5,-;FAT-fs (loop7): Volume was not properly unmounted. Some data may be corrupt. Please run fsck.";
        assert!(unusual(dirty, "loop7").is_none());
        let info = b"6,101,5,-;EXT4-fs (loop7): recovery complete";
        assert!(unusual(info, "loop7").is_none());
        let warn = b"4,102,5,-;BTRFS warning (device loop12): csum failed root 5 ino 257";
        assert!(unusual(warn, "loop12").is_some());
        assert!(unusual(warn, "loop1").is_none());
        // Facility bits above the level are ignored (prio = facility * 8 + level).
        let user_crit = b"10,103,5,-;XFS (loop7): Metadata corruption detected";
        assert!(unusual(user_crit, "loop7").is_some());
        assert!(unusual(b"garbage", "loop7").is_none());
    }

    #[test]
    fn a_kernel_warning_written_now_is_read_back() {
        // Needs root (writing to /dev/kmsg); skipped, with a note, otherwise.
        let mut k = Kmsg::open();
        if k.blind()
            || fs::OpenOptions::new()
                .write(true)
                .open("/dev/kmsg")
                .is_err()
        {
            eprintln!("skipped: /dev/kmsg is not readable and writable here");
            return;
        }
        let dev = format!("powercuttest{}", std::process::id());
        // "<4>" asks for warning level.
        fs::write("/dev/kmsg", format!("<4>kmsg self-test ({dev}): unusual\n")).unwrap();
        fs::write("/dev/kmsg", format!("<6>kmsg self-test ({dev}): usual\n")).unwrap();
        let seen = k.take_unusual(&dev).unwrap();
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert!(seen[0].contains("unusual"), "{seen:?}");
        assert!(k.take_unusual(&dev).unwrap().is_empty());
    }
}
