//! The contenders: every way of replacing a file (or a set of files) that
//! the benchmark compares, written once and used by every workload, by the
//! syscall counts and by the power-cut recorder's counts.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// One durable replace of a single file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replace {
    /// `fstx::write` (or `fstx::Options::open` + `commit` when streaming).
    Fstx,
    /// `fstx::Dir::write` through one handle per directory, shared by every
    /// thread (its concurrent replaces share directory flushes); streaming
    /// as `Fstx`.
    FstxDir,
    /// `atomic_write_file::AtomicWriteFile::open` + `commit`.
    AtomicWriteFile,
    /// `atomicwrites::AtomicFile::write` (allow overwrite).
    Atomicwrites,
    /// `tempfile::NamedTempFile::new_in` + fsync + `persist` + fsync(dir):
    /// tempfile plus the two flushes it does not make.
    Tempfile,
    /// std only: temp file (`O_EXCL`) + write + fsync + rename + fsync(dir).
    HandWritten,
    /// Not atomic: write over the file in place + `fdatasync` (W1), or
    /// truncate + write + fsync (W2). The floor every atomic method pays over.
    RawFloor,
}

impl Replace {
    /// Every single-file contender, in table order.
    pub const ALL: [Replace; 7] = [
        Replace::Fstx,
        Replace::FstxDir,
        Replace::AtomicWriteFile,
        Replace::Atomicwrites,
        Replace::Tempfile,
        Replace::HandWritten,
        Replace::RawFloor,
    ];

    /// The contenders that are atomic (W4 leaves the in-place floor out).
    pub const ATOMIC: [Replace; 6] = [
        Replace::Fstx,
        Replace::FstxDir,
        Replace::AtomicWriteFile,
        Replace::Atomicwrites,
        Replace::Tempfile,
        Replace::HandWritten,
    ];

    /// The name in tables, charts and command lines.
    pub fn name(self) -> &'static str {
        match self {
            Replace::Fstx => "fstx",
            Replace::FstxDir => "fstx-dir",
            Replace::AtomicWriteFile => "atomic-write-file",
            Replace::Atomicwrites => "atomicwrites",
            Replace::Tempfile => "tempfile+fsyncs",
            Replace::HandWritten => "hand-written",
            Replace::RawFloor => "raw-floor",
        }
    }

    /// The contender called `name`.
    pub fn parse(name: &str) -> Option<Replace> {
        Replace::ALL.into_iter().find(|c| c.name() == name)
    }

    /// One durable replace of `path` (whose directory is `dir`) with `data`.
    pub fn replace(self, dir: &Path, path: &Path, data: &[u8]) -> io::Result<()> {
        match self {
            Replace::Fstx => fstx::write(path, data).map_err(io::Error::from),
            Replace::FstxDir => {
                let name = path
                    .file_name()
                    .ok_or_else(|| io::Error::other("no file name"))?;
                dir_handle(dir)?.write(name, data).map_err(io::Error::from)
            }
            Replace::AtomicWriteFile => {
                let mut f = atomic_write_file::AtomicWriteFile::open(path)?;
                f.write_all(data)?;
                f.commit()
            }
            Replace::Atomicwrites => {
                let af = atomicwrites::AtomicFile::new(path, atomicwrites::AllowOverwrite);
                af.write(|f| f.write_all(data)).map_err(io::Error::from)
            }
            Replace::Tempfile => {
                let mut t = tempfile::NamedTempFile::new_in(dir)?;
                t.write_all(data)?;
                t.as_file().sync_all()?;
                t.persist(path)?;
                sync_dir(dir)
            }
            Replace::HandWritten => {
                let tmp = temp_name(path);
                let mut f = create_new(&tmp)?;
                f.write_all(data)?;
                f.sync_all()?;
                drop(f);
                fs::rename(&tmp, path)?;
                sync_dir(dir)
            }
            Replace::RawFloor => {
                let f = OpenOptions::new().write(true).open(path)?;
                f.write_all_at(data, 0)?;
                f.sync_data()
            }
        }
    }

    /// One durable replace of `path` with `total` bytes written in `chunk`-sized
    /// pieces (the streaming API of each contender; constant memory).
    pub fn stream(self, dir: &Path, path: &Path, chunk: &[u8], total: u64) -> io::Result<()> {
        let pieces = total / chunk.len() as u64;
        let write_all = |w: &mut dyn Write| -> io::Result<()> {
            for _ in 0..pieces {
                w.write_all(chunk)?;
            }
            Ok(())
        };
        match self {
            Replace::Fstx | Replace::FstxDir => {
                let mut f = fstx::Options::new().open(path).map_err(io::Error::from)?;
                write_all(&mut f)?;
                f.commit().map_err(io::Error::from)
            }
            Replace::AtomicWriteFile => {
                let mut f = atomic_write_file::AtomicWriteFile::open(path)?;
                write_all(&mut *f)?;
                f.commit()
            }
            Replace::Atomicwrites => {
                let af = atomicwrites::AtomicFile::new(path, atomicwrites::AllowOverwrite);
                af.write(|f| write_all(f)).map_err(io::Error::from)
            }
            Replace::Tempfile => {
                let mut t = tempfile::NamedTempFile::new_in(dir)?;
                write_all(&mut t)?;
                t.as_file().sync_all()?;
                t.persist(path)?;
                sync_dir(dir)
            }
            Replace::HandWritten => {
                let tmp = temp_name(path);
                let mut f = create_new(&tmp)?;
                write_all(&mut f)?;
                f.sync_all()?;
                drop(f);
                fs::rename(&tmp, path)?;
                sync_dir(dir)
            }
            Replace::RawFloor => {
                let mut f = File::create(path)?;
                write_all(&mut f)?;
                f.sync_all()
            }
        }
    }
}

/// Ways of making N files change together (W3). Only the fstx transaction
/// is all-or-nothing across a power cut; the others are what it is
/// measured against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Batch {
    /// One `fstx::Transaction` writing the N files.
    FstxTxn,
    /// N × `fstx::write` (each file atomic, the set not).
    FstxWrites,
    /// N × the hand-written replace.
    HandWritten,
    /// Write every temp file, one `syncfs`, rename every one, one fsync(dir).
    Syncfs,
    /// Write every temp file, fsync them on 8 threads, rename every one,
    /// one fsync(dir).
    Threads,
}

impl Batch {
    /// Every W3 contender, in table order.
    pub const ALL: [Batch; 5] = [
        Batch::FstxTxn,
        Batch::FstxWrites,
        Batch::HandWritten,
        Batch::Syncfs,
        Batch::Threads,
    ];

    /// The name in tables, charts and command lines.
    pub fn name(self) -> &'static str {
        match self {
            Batch::FstxTxn => "fstx txn",
            Batch::FstxWrites => "fstx write ×N",
            Batch::HandWritten => "hand-written ×N",
            Batch::Syncfs => "batch syncfs",
            Batch::Threads => "batch 8 threads",
        }
    }

    /// A name without spaces, for command lines and marks.
    pub fn key(self) -> &'static str {
        match self {
            Batch::FstxTxn => "fstx-txn",
            Batch::FstxWrites => "fstx-writes",
            Batch::HandWritten => "hand-written-n",
            Batch::Syncfs => "batch-syncfs",
            Batch::Threads => "batch-threads",
        }
    }

    /// The contender whose key is `key`.
    pub fn parse(key: &str) -> Option<Batch> {
        Batch::ALL.into_iter().find(|c| c.key() == key)
    }

    /// Replaces the files `names` under `root` with `data(i)`.
    pub fn run(
        self,
        root: &Path,
        names: &[String],
        data: &dyn Fn(usize) -> Vec<u8>,
    ) -> io::Result<()> {
        match self {
            Batch::FstxTxn => {
                let mut txn = fstx::Transaction::begin(root).map_err(io::Error::from)?;
                for (i, n) in names.iter().enumerate() {
                    txn.write(n, data(i)).map_err(io::Error::from)?;
                }
                txn.commit().map(drop).map_err(io::Error::from)
            }
            Batch::FstxWrites => {
                for (i, n) in names.iter().enumerate() {
                    fstx::write(root.join(n), data(i)).map_err(io::Error::from)?;
                }
                Ok(())
            }
            Batch::HandWritten => {
                for (i, n) in names.iter().enumerate() {
                    Replace::HandWritten.replace(root, &root.join(n), &data(i))?;
                }
                Ok(())
            }
            Batch::Syncfs | Batch::Threads => {
                let mut temps = Vec::with_capacity(names.len());
                let mut files = Vec::with_capacity(names.len());
                for (i, n) in names.iter().enumerate() {
                    let target = root.join(n);
                    let tmp = temp_name(&target);
                    let mut f = create_new(&tmp)?;
                    f.write_all(&data(i))?;
                    temps.push((tmp, target));
                    if self == Batch::Threads {
                        files.push(f);
                    }
                }
                if self == Batch::Syncfs {
                    rustix::fs::syncfs(&File::open(root)?)?;
                } else {
                    sync_on_threads(&files, 8)?;
                    drop(files);
                }
                for (tmp, target) in &temps {
                    fs::rename(tmp, target)?;
                }
                sync_dir(root)
            }
        }
    }
}

/// fsyncs `files` on `threads` threads.
fn sync_on_threads(files: &[File], threads: usize) -> io::Result<()> {
    let per = files.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = files
            .chunks(per)
            .map(|part| s.spawn(move || part.iter().try_for_each(File::sync_all)))
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().expect("fsync thread panicked"))
    })
}

/// fsync of a directory.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// `syncfs` of the filesystem holding `dir` (settles writeback between samples).
pub fn syncfs(dir: &Path) -> io::Result<()> {
    Ok(rustix::fs::syncfs(&File::open(dir)?)?)
}

fn create_new(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)
}

/// A fresh temporary name beside `target` (the hand-written recipes' own).
fn temp_name(target: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let name = target.file_name().unwrap_or_default().to_string_lossy();
    target.with_file_name(format!(".{name}.{}.{n}.tmp", std::process::id()))
}

/// `len` bytes whose first eight are `version`: every replace writes new content.
pub fn content(len: usize, version: u64) -> Vec<u8> {
    let mut v = vec![0x5a; len];
    let n = 8.min(len);
    v[..n].copy_from_slice(&version.to_le_bytes()[..n]);
    v
}

/// The process's one `fstx::Dir` for `dir` (opened on first use).
fn dir_handle(dir: &Path) -> io::Result<std::sync::Arc<fstx::Dir>> {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, OnceLock};
    static DIRS: OnceLock<Mutex<HashMap<PathBuf, Arc<fstx::Dir>>>> = OnceLock::new();
    let mut dirs = DIRS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(d) = dirs.get(dir) {
        return Ok(d.clone());
    }
    let d = Arc::new(fstx::Dir::open(dir).map_err(io::Error::from)?);
    dirs.insert(dir.to_path_buf(), d.clone());
    Ok(d)
}
