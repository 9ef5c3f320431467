//! The FUSE side: a filesystem exposing one disk-image file (`disk.img`) held in
//! memory, and a control file (`ctl`) for marks.
//!
//! Two backings exist: [`Recorder`] keeps the image in RAM and records every
//! WRITE, FALLOCATE, FSYNC and control-file line in completion order; and
//! [`ReplayDisk`] serves a crash image (a base image plus the sectors of one
//! crash state) with a copy-on-write scratch layer, so that switching states
//! costs nothing and the base is never copied.

use std::ffi::OsStr;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEntry, ReplyOpen, Request, WriteFlags,
};

pub use fuser::{ReplyEmpty, ReplyWrite};

use crate::log::{Log, Record};
use crate::rng::Rng;

pub use crate::replay_disk::{sector_bytes, ReplayDisk, SectorMap, Src};

/// Inode number of `disk.img`.
pub const INO_DISK: u64 = 2;
const INO_CTL: u64 = 3;
/// Name of the disk image file inside the FUSE mount.
pub const DISK_NAME: &str = "disk.img";
/// Name of the control file inside the FUSE mount.
pub const CTL_NAME: &str = "ctl";
const TTL: Duration = Duration::from_secs(3600);
const FALLOC_FL_PUNCH_HOLE: i32 = 0x02;
const FALLOC_FL_ZERO_RANGE: i32 = 0x10;

/// What a disk backing must provide to the FUSE plumbing.
pub trait Backing: Send + Sync + 'static {
    /// Size of the disk image in bytes.
    fn size(&self) -> u64;
    /// Reads `size` bytes at `off` (clamped to the image).
    fn read(&self, off: u64, size: u64) -> Vec<u8>;
    /// Handles a WRITE; must reply.
    fn write(&self, off: u64, data: &[u8], reply: ReplyWrite);
    /// Handles a FALLOCATE that zeroes `len` bytes at `off`.
    fn zero(&self, off: u64, len: u64);
    /// Handles an FSYNC of the disk; must reply.
    fn flush(&self, reply: ReplyEmpty);
    /// Handles a line written to the control file.
    fn mark(&self, line: &str);
    /// Whether the disk file bypasses the kernel's page cache (the recorder:
    /// every I/O reaches the log in order). Without it reads are cached and
    /// read ahead, and the owner must invalidate the cache when the disk
    /// content changes under it.
    fn direct_io(&self) -> bool {
        true
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking daemon thread must not wedge the kernel: keep going with the data.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

// ---------------------------------------------------------------- recorder

/// Realism switches of the recording disk.
#[derive(Debug, Clone, Copy, Default)]
pub struct RecorderOptions {
    /// Hold WRITE replies back for up to this long and release them out of
    /// order from several threads (`None`: complete every write at once).
    pub write_delay: Option<Duration>,
    /// Every FSYNC takes this long before it is answered.
    pub flush_latency: Duration,
    /// Seed for the delays.
    pub seed: u64,
}

struct RecState {
    image: Vec<u8>,
    log: Log,
    recording: bool,
    /// WRITEs received but not yet completed, and the most seen at once.
    in_flight: usize,
    max_in_flight: usize,
}

impl RecState {
    fn complete_write(&mut self, off: u64, data: &[u8]) {
        self.in_flight -= 1;
        if self.recording {
            self.log.push_write(off, data);
        }
    }
}

struct DelayedWrite {
    off: u64,
    data: Vec<u8>,
    reply: ReplyWrite,
    delay: Duration,
}

/// The recording disk: an in-memory image plus the log of what reached it.
pub struct Recorder {
    state: Arc<Mutex<RecState>>,
    opts: RecorderOptions,
    rng: Mutex<Rng>,
    delayers: Vec<mpsc::Sender<DelayedWrite>>,
    flusher: Option<mpsc::Sender<ReplyEmpty>>,
}

impl Recorder {
    /// A recorder for a zero-filled image of `size` bytes.
    ///
    /// # Panics
    /// If the helper threads for the realism switches cannot be spawned.
    pub fn new(size: u64, opts: RecorderOptions) -> Arc<Recorder> {
        let state = Arc::new(Mutex::new(RecState {
            image: vec![0u8; size as usize],
            log: Log::default(),
            recording: false,
            in_flight: 0,
            max_in_flight: 0,
        }));
        let mut delayers = Vec::new();
        if opts.write_delay.is_some() {
            for _ in 0..4 {
                let (tx, rx) = mpsc::channel::<DelayedWrite>();
                let st = Arc::clone(&state);
                thread::Builder::new()
                    .name("powercut-delay".into())
                    .spawn(move || {
                        for job in rx {
                            thread::sleep(job.delay);
                            lock(&st).complete_write(job.off, &job.data);
                            job.reply.written(job.data.len() as u32);
                        }
                    })
                    .expect("spawn delay thread");
                delayers.push(tx);
            }
        }
        let flusher = (!opts.flush_latency.is_zero()).then(|| {
            let (tx, rx) = mpsc::channel::<ReplyEmpty>();
            let lat = opts.flush_latency;
            thread::Builder::new()
                .name("powercut-flush".into())
                .spawn(move || {
                    for reply in rx {
                        thread::sleep(lat);
                        reply.ok();
                    }
                })
                .expect("spawn flush thread");
            tx
        });
        Arc::new(Recorder {
            state,
            rng: Mutex::new(Rng::new(opts.seed)),
            opts,
            delayers,
            flusher,
        })
    }

    /// Starts recording: returns a snapshot of the image (the replay base)
    /// and clears the log.
    pub fn start(&self) -> Vec<u8> {
        let mut st = lock(&self.state);
        st.log = Log::default();
        st.recording = true;
        st.image.clone()
    }

    /// Stops recording and returns the log.
    pub fn stop(&self) -> Log {
        let mut st = lock(&self.state);
        st.recording = false;
        std::mem::take(&mut st.log)
    }

    /// The most WRITEs that were in flight at once while recording (more
    /// than one means completions could really be reordered).
    pub fn max_in_flight(&self) -> usize {
        lock(&self.state).max_in_flight
    }

    /// A copy of the current image.
    pub fn image(&self) -> Vec<u8> {
        lock(&self.state).image.clone()
    }
}

impl Backing for Recorder {
    fn size(&self) -> u64 {
        lock(&self.state).image.len() as u64
    }

    fn read(&self, off: u64, size: u64) -> Vec<u8> {
        let st = lock(&self.state);
        let len = st.image.len() as u64;
        let (a, b) = (off.min(len), (off + size).min(len));
        st.image[a as usize..b as usize].to_vec()
    }

    fn write(&self, off: u64, data: &[u8], reply: ReplyWrite) {
        {
            let mut st = lock(&self.state);
            let end = (off as usize + data.len()).min(st.image.len());
            let n = end.saturating_sub(off as usize);
            if n < data.len() {
                drop(st);
                reply.error(Errno::ENOSPC);
                return;
            }
            st.image[off as usize..end].copy_from_slice(data);
            st.in_flight += 1;
            if st.recording {
                st.max_in_flight = st.max_in_flight.max(st.in_flight);
            }
            if self.delayers.is_empty() {
                st.complete_write(off, data);
            }
        }
        match self.opts.write_delay {
            Some(max) if !self.delayers.is_empty() => {
                let (which, delay) = {
                    let mut rng = lock(&self.rng);
                    let which = rng.below(self.delayers.len());
                    let us = rng.below_u64(max.as_micros() as u64 + 1);
                    (which, Duration::from_micros(us))
                };
                let job = DelayedWrite {
                    off,
                    data: data.to_vec(),
                    reply,
                    delay,
                };
                if let Err(mpsc::SendError(job)) = self.delayers[which].send(job) {
                    job.reply.error(Errno::EIO);
                }
            }
            _ => reply.written(data.len() as u32),
        }
    }

    fn zero(&self, off: u64, len: u64) {
        let mut st = lock(&self.state);
        let size = st.image.len() as u64;
        let (a, b) = (off.min(size), (off + len).min(size));
        st.image[a as usize..b as usize].fill(0);
        if st.recording && b > a {
            st.log.records.push(Record::Zero { off: a, len: b - a });
        }
    }

    fn flush(&self, reply: ReplyEmpty) {
        {
            let mut st = lock(&self.state);
            if st.recording {
                st.log.records.push(Record::Flush);
            }
        }
        match &self.flusher {
            Some(tx) => {
                if let Err(mpsc::SendError(r)) = tx.send(reply) {
                    r.error(Errno::EIO);
                }
            }
            None => reply.ok(),
        }
    }

    fn mark(&self, line: &str) {
        let mut st = lock(&self.state);
        if st.recording {
            st.log.records.push(Record::Mark(line.to_string()));
        }
    }
}

// ---------------------------------------------------------------- FUSE plumbing

/// The FUSE filesystem over a [`Backing`].
pub struct DiskFs<B: Backing> {
    backing: Arc<B>,
    /// A partial control-file line waiting for its newline.
    pending_ctl: Mutex<Vec<u8>>,
}

impl<B: Backing> DiskFs<B> {
    /// A filesystem serving `backing`.
    pub fn new(backing: Arc<B>) -> DiskFs<B> {
        DiskFs {
            backing,
            pending_ctl: Mutex::new(Vec::new()),
        }
    }

    fn attr(&self, ino: u64) -> Option<FileAttr> {
        let (kind, perm, size, nlink) = match ino {
            1 => (FileType::Directory, 0o755, 0, 2),
            INO_DISK => (FileType::RegularFile, 0o600, self.backing.size(), 1),
            INO_CTL => (FileType::RegularFile, 0o666, 0, 1),
            _ => return None,
        };
        let t = SystemTime::UNIX_EPOCH;
        Some(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: t,
            mtime: t,
            ctime: t,
            crtime: t,
            kind,
            perm,
            nlink,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }
}

impl<B: Backing> Filesystem for DiskFs<B> {
    fn init(&mut self, _req: &Request, config: &mut fuser::KernelConfig) -> std::io::Result<()> {
        // Bigger requests: fewer round trips. Values the kernel refuses are clamped.
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_readahead(1 << 20);
        // Let a loop device in direct-I/O mode have several WRITEs in flight,
        // so delayed completions really reorder (as on a disk with a queue).
        let _ = config.add_capabilities(fuser::InitFlags::FUSE_ASYNC_DIO);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let ino = match (parent.0, name.to_str()) {
            (1, Some(DISK_NAME)) => INO_DISK,
            (1, Some(CTL_NAME)) => INO_CTL,
            _ => return reply.error(Errno::ENOENT),
        };
        match self.attr(ino) {
            Some(a) => reply.entry(&TTL, &a, Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr(ino.0) {
            Some(a) => reply.attr(&TTL, &a),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<fuser::TimeOrNow>,
        _mtime: Option<fuser::TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        // The control file may be truncated by `>`; the disk never changes size.
        if ino.0 == INO_DISK && size.is_some_and(|s| s != self.backing.size()) {
            return reply.error(Errno::EPERM);
        }
        match self.attr(ino.0) {
            Some(a) => reply.attr(&TTL, &a),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match ino.0 {
            // Direct I/O: no FUSE page cache, so every read and write reaches us.
            INO_DISK if self.backing.direct_io() => {
                reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO);
            }
            INO_DISK => reply.opened(FileHandle(0), FopenFlags::empty()),
            INO_CTL => reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO),
            _ => reply.error(Errno::EISDIR),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match ino.0 {
            INO_DISK => reply.data(&self.backing.read(offset, u64::from(size))),
            INO_CTL => reply.data(&[]),
            _ => reply.error(Errno::EISDIR),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match ino.0 {
            INO_DISK => self.backing.write(offset, data, reply),
            INO_CTL => {
                let mut pending = lock(&self.pending_ctl);
                pending.extend_from_slice(data);
                while let Some(nl) = pending.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=nl).collect();
                    let text = String::from_utf8_lossy(&line[..nl]);
                    let text = text.trim_end_matches('\r');
                    if !text.is_empty() {
                        self.backing.mark(text);
                    }
                }
                reply.written(data.len() as u32);
            }
            _ => reply.error(Errno::EISDIR),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        if ino.0 == INO_CTL {
            // A line without a newline counts once the writer closes the file.
            let mut pending = lock(&self.pending_ctl);
            if !pending.is_empty() {
                let text = String::from_utf8_lossy(&pending).trim().to_string();
                pending.clear();
                if !text.is_empty() {
                    self.backing.mark(&text);
                }
            }
        }
        reply.ok();
    }

    fn fsync(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _ds: bool, reply: ReplyEmpty) {
        if ino.0 == INO_DISK {
            self.backing.flush(reply);
        } else {
            reply.ok();
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        if ino.0 != INO_DISK {
            return reply.error(Errno::EOPNOTSUPP);
        }
        if mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE) != 0 {
            self.backing.zero(offset, length);
        }
        // Plain allocation of an in-memory image: nothing to do.
        reply.ok();
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if ino.0 != 1 {
            return reply.error(Errno::ENOTDIR);
        }
        let entries = [
            (1, FileType::Directory, "."),
            (1, FileType::Directory, ".."),
            (INO_DISK, FileType::RegularFile, DISK_NAME),
            (INO_CTL, FileType::RegularFile, CTL_NAME),
        ];
        for (i, (ino, kind, name)) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(*ino), (i + 1) as u64, *kind, name) {
                break;
            }
        }
        reply.ok();
    }
}
