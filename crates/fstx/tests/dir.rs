//! The directory handle (`fstx::Dir`) and its group commit, on the real
//! filesystem.
//!
//! The group-commit tests run real threads through [`Gate`], a wrapper of
//! the real storage that logs, in one total order, every completed rename,
//! the start and end of every directory flush, and every replace's return
//! (logged by the test thread right after the call returns), and that can
//! hold a directory flush after the kernel's `fsync` returned until other
//! renames are done. [`check`] then requires of every replace that
//! returned `Ok`: a directory flush that *began after* its rename completed
//! and ended, successfully, before it returned.

mod common;

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::io::{self, ErrorKind, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use common::{temps, TempDir};
use fstx::storage::{DirEntry, Fd, LockMode, OpenHow, OsStorage, Stat, Storage, SyncKind};
use fstx::{Dir, Options, State, Step};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Ev {
    /// A rename onto this name completed.
    Renamed(OsString),
    /// Directory flush number `n` (1-based, in start order) began.
    FlushBegin(usize),
    /// Directory flush `n` ended.
    FlushEnd(usize, bool),
    /// The replace of this name returned.
    Returned(OsString, bool),
}

#[derive(Default)]
struct Plan {
    /// Hold directory flush number `.0`, after the kernel's flush returned,
    /// until `.1` renames in all have completed.
    hold: Option<(usize, usize)>,
    /// And, with `hold`, until this many replaces wait for a flush.
    hold_waiters: Option<(Arc<std::sync::OnceLock<Dir>>, usize)>,
    /// Fail directory flush number `.0` with errno `.1` (instead of calling the kernel).
    fail: Option<(usize, i32)>,
    /// `list_xattr_at`/`get_xattr_at` fail with `ENOENT`, as without `/proc`.
    no_proc: bool,
    /// Sleep this long (µs) after every rename and before every flush, by a
    /// per-call pseudo-random amount, to vary interleavings.
    jitter_us: u64,
}

#[derive(Default)]
struct Gate {
    os: OsStorage,
    dirs: Mutex<HashSet<i32>>,
    log: Mutex<Vec<Ev>>,
    changed: Condvar,
    flushes: Mutex<usize>,
    plan: Mutex<Plan>,
    tick: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Gate")
    }
}

impl Gate {
    fn new(plan: Plan) -> Arc<Gate> {
        Arc::new(Gate {
            plan: Mutex::new(plan),
            ..Gate::default()
        })
    }

    fn push(&self, ev: Ev) {
        self.log.lock().unwrap().push(ev);
        self.changed.notify_all();
    }

    fn renames(log: &[Ev]) -> usize {
        log.iter().filter(|e| matches!(e, Ev::Renamed(_))).count()
    }

    /// Waits until `pred` holds of the log.
    fn wait_for(&self, pred: impl Fn(&[Ev]) -> bool) {
        let mut log = self.log.lock().unwrap();
        while !pred(&log) {
            log = self.changed.wait(log).unwrap();
        }
    }

    fn jitter(&self) {
        let us = self.plan.lock().unwrap().jitter_us;
        if us > 0 {
            let t = self.tick.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let r = t.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
            std::thread::sleep(Duration::from_micros(r % us));
        }
    }

    fn is_dir(&self, fd: &Fd) -> bool {
        let raw = fd.as_os().expect("real handle").as_raw_fd();
        self.dirs.lock().unwrap().contains(&raw)
    }

    fn dir_flush(&self, f: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
        self.jitter();
        let n = {
            let mut c = self.flushes.lock().unwrap();
            *c += 1;
            *c
        };
        self.push(Ev::FlushBegin(n));
        let (hold, fail, waiters) = {
            let p = self.plan.lock().unwrap();
            (p.hold, p.fail, p.hold_waiters.clone())
        };
        let r = match fail {
            Some((nth, errno)) if nth == n => Err(io::Error::from_raw_os_error(errno)),
            _ => f(),
        };
        if let Some((nth, renames)) = hold {
            if nth == n {
                self.wait_for(|log| Gate::renames(log) >= renames);
                if let Some((dir, count)) = waiters {
                    while dir.get().map_or(0, Dir::flush_waiters) < count {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            }
        }
        self.push(Ev::FlushEnd(n, r.is_ok()));
        r
    }

    fn log(&self) -> Vec<Ev> {
        self.log.lock().unwrap().clone()
    }
}

impl Storage for Gate {
    fn open_dir(&self, at: Option<&Fd>, path: &Path, follow: bool) -> io::Result<Fd> {
        let fd = self.os.open_dir(at, path, follow)?;
        self.dirs
            .lock()
            .unwrap()
            .insert(fd.as_os().unwrap().as_raw_fd());
        Ok(fd)
    }
    fn open(&self, at: &Fd, name: &OsStr, how: OpenHow) -> io::Result<Fd> {
        self.os.open(at, name, how)
    }
    fn read_at(&self, file: &Fd, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.os.read_at(file, buf, offset)
    }
    fn write_at(&self, file: &Fd, buf: &[u8], offset: u64) -> io::Result<usize> {
        self.os.write_at(file, buf, offset)
    }
    fn set_len(&self, file: &Fd, len: u64) -> io::Result<()> {
        self.os.set_len(file, len)
    }
    fn end_offset(&self, file: &Fd) -> io::Result<u64> {
        self.os.end_offset(file)
    }
    fn sync(&self, file: &Fd, kind: SyncKind) -> io::Result<()> {
        if self.is_dir(file) {
            self.dir_flush(|| self.os.sync(file, kind))
        } else {
            self.os.sync(file, kind)
        }
    }
    fn sync_fs(&self, file: &Fd) -> io::Result<()> {
        // On btrfs the directory flush is a syncfs.
        self.dir_flush(|| self.os.sync_fs(file))
    }
    fn stat(&self, file: &Fd) -> io::Result<Stat> {
        self.os.stat(file)
    }
    fn stat_at(&self, at: &Fd, name: &OsStr, follow: bool) -> io::Result<Stat> {
        self.os.stat_at(at, name, follow)
    }
    fn fs_type(&self, file: &Fd) -> io::Result<u64> {
        self.os.fs_type(file)
    }
    fn rename_at(&self, a: &Fd, b: &OsStr, c: &Fd, d: &OsStr, nr: bool) -> io::Result<()> {
        self.os.rename_at(a, b, c, d, nr)?;
        self.push(Ev::Renamed(d.to_os_string()));
        self.jitter();
        Ok(())
    }
    fn link_at(&self, a: &Fd, b: &OsStr, c: &Fd, d: &OsStr) -> io::Result<()> {
        self.os.link_at(a, b, c, d)
    }
    fn unlink_at(&self, at: &Fd, name: &OsStr, dir: bool) -> io::Result<()> {
        self.os.unlink_at(at, name, dir)
    }
    fn mkdir_at(&self, at: &Fd, name: &OsStr, mode: u32) -> io::Result<()> {
        self.os.mkdir_at(at, name, mode)
    }
    fn read_link_at(&self, at: &Fd, name: &OsStr) -> io::Result<PathBuf> {
        self.os.read_link_at(at, name)
    }
    fn chmod(&self, file: &Fd, mode: u32) -> io::Result<()> {
        self.os.chmod(file, mode)
    }
    fn chown(&self, file: &Fd, uid: Option<u32>, gid: Option<u32>) -> io::Result<()> {
        self.os.chown(file, uid, gid)
    }
    fn list_xattr(&self, file: &Fd) -> io::Result<Vec<OsString>> {
        self.os.list_xattr(file)
    }
    fn get_xattr(&self, file: &Fd, name: &OsStr) -> io::Result<Vec<u8>> {
        self.os.get_xattr(file, name)
    }
    fn list_xattr_at(&self, at: &Fd, name: &OsStr) -> io::Result<Vec<OsString>> {
        if self.plan.lock().unwrap().no_proc {
            return Err(io::Error::from_raw_os_error(2));
        }
        self.os.list_xattr_at(at, name)
    }
    fn get_xattr_at(&self, at: &Fd, name: &OsStr, attr: &OsStr) -> io::Result<Vec<u8>> {
        if self.plan.lock().unwrap().no_proc {
            return Err(io::Error::from_raw_os_error(2));
        }
        self.os.get_xattr_at(at, name, attr)
    }
    fn set_xattr(&self, file: &Fd, name: &OsStr, value: &[u8]) -> io::Result<()> {
        self.os.set_xattr(file, name, value)
    }
    fn lock(&self, file: &Fd, mode: LockMode, wait: bool) -> io::Result<bool> {
        self.os.lock(file, mode, wait)
    }
    fn unlock(&self, file: &Fd) -> io::Result<()> {
        self.os.unlock(file)
    }
    fn read_dir(&self, dir: &Fd) -> io::Result<Vec<DirEntry>> {
        self.os.read_dir(dir)
    }
    fn caps(&self) -> fstx::storage::Caps {
        self.os.caps()
    }
    fn random(&self) -> io::Result<u64> {
        self.os.random()
    }
}

/// Every replace that returned `Ok` had a directory flush that began after
/// its rename completed and ended successfully before it returned. Returns
/// the violations.
fn check(log: &[Ev]) -> Vec<String> {
    let mut out = Vec::new();
    for (ret, ev) in log.iter().enumerate() {
        let Ev::Returned(name, true) = ev else {
            continue;
        };
        let Some(renamed) = log[..ret]
            .iter()
            .rposition(|e| *e == Ev::Renamed(name.clone()))
        else {
            out.push(format!("{name:?} returned Ok without a rename"));
            continue;
        };
        let covered = log[renamed..ret].iter().enumerate().any(|(i, e)| {
            let Ev::FlushBegin(n) = e else { return false };
            log[renamed + i..ret].contains(&Ev::FlushEnd(*n, true))
        });
        if !covered {
            out.push(format!(
                "{name:?} returned Ok (event {ret}) without a directory flush begun after its \
                 rename (event {renamed}) and ended before"
            ));
        }
    }
    out
}

fn opts(gate: &Arc<Gate>) -> Options {
    let mut o = Options::new();
    o.storage(gate.clone());
    o
}

fn write_logged(gate: &Gate, dir: &Dir, name: &str, content: &[u8]) -> fstx::Result<()> {
    let r = dir.write(name, content);
    gate.push(Ev::Returned(name.into(), r.is_ok()));
    r
}

#[test]
fn dir_handle_replaces_files_in_its_directory() {
    let d = TempDir::new("dir-basic");
    std::fs::write(d.join("a"), b"old").unwrap();
    let dir = Dir::open(d.path()).unwrap();
    assert_eq!(dir.path(), d.path());
    dir.write("a", b"new a").unwrap();
    dir.write("b", b"new b").unwrap();
    let mut f = dir.create("c").unwrap();
    f.write_all(b"streamed").unwrap();
    assert!(!d.join("c").exists(), "nothing visible before commit");
    f.commit().unwrap();
    dir.create("d").unwrap().discard().unwrap();
    assert_eq!(std::fs::read(d.join("a")).unwrap(), b"new a");
    assert_eq!(std::fs::read(d.join("b")).unwrap(), b"new b");
    assert_eq!(std::fs::read(d.join("c")).unwrap(), b"streamed");
    assert!(!d.join("d").exists());
    assert!(temps(d.path()).is_empty());
}

#[test]
fn dir_handle_takes_one_name_only() {
    let d = TempDir::new("dir-names");
    std::fs::create_dir(d.join("sub")).unwrap();
    let dir = Dir::open(d.path()).unwrap();
    for bad in ["sub/x", "../x", "..", ".", "", "/etc/x", "x/"] {
        let e = dir.write(bad, b"x").unwrap_err();
        assert_eq!(e.step(), Step::ParsePath, "{bad}");
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{bad}");
        assert_eq!(e.state(), &State::NotCommitted);
    }
    assert!(!d.join("sub/x").exists() && !d.join("x").exists());
    let e = Dir::open(d.join("missing")).unwrap_err();
    assert_eq!(e.step(), Step::OpenDirectory);
    assert_eq!(e.kind(), ErrorKind::NotFound);
}

#[test]
fn dir_handle_follows_symlinks_by_policy_and_carries_metadata() {
    use std::os::unix::fs::{symlink, PermissionsExt};
    let d = TempDir::new("dir-links");
    std::fs::create_dir(d.join("other")).unwrap();
    std::fs::write(d.join("other/real"), b"old").unwrap();
    std::fs::set_permissions(d.join("other/real"), std::fs::Permissions::from_mode(0o640)).unwrap();
    xattr_set(&d.join("other/real"), "user.fstx-test", b"kept");
    symlink("other/real", d.join("link")).unwrap();
    let dir = Dir::open(d.path()).unwrap();
    dir.write("link", b"through the link").unwrap();
    assert!(std::fs::symlink_metadata(d.join("link"))
        .unwrap()
        .file_type()
        .is_symlink());
    let real = d.join("other/real");
    assert_eq!(std::fs::read(&real).unwrap(), b"through the link");
    let mode = std::fs::metadata(&real).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o640);
    assert_eq!(
        xattr_get(&real, "user.fstx-test").as_deref(),
        Some(&b"kept"[..])
    );
    assert!(temps(&d.join("other")).is_empty() && temps(d.path()).is_empty());

    let mut o = Options::new();
    o.symlinks(fstx::Symlinks::Refuse);
    let refusing = o.open_dir(d.path()).unwrap();
    assert_eq!(
        refusing.write("link", b"x").unwrap_err().step(),
        Step::InspectTarget
    );
}

/// Without `/proc` the old file's xattrs are listed and read through its
/// own handle instead, and still carried.
#[test]
fn xattrs_are_carried_without_proc() {
    let d = TempDir::new("dir-noproc");
    let p = d.join("f");
    std::fs::write(&p, b"old").unwrap();
    xattr_set(&p, "user.fstx-test", b"kept");
    let gate = Gate::new(Plan {
        no_proc: true,
        ..Plan::default()
    });
    opts(&gate).write(&p, b"new").unwrap();
    let dir = opts(&gate).open_dir(d.path()).unwrap();
    dir.write("f", b"newer").unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"newer");
    assert_eq!(
        xattr_get(&p, "user.fstx-test").as_deref(),
        Some(&b"kept"[..])
    );
    // A new file: nothing to list.
    dir.write("g", b"fresh").unwrap();
    assert!(temps(d.path()).is_empty());
}

fn xattr_set(p: &Path, name: &str, value: &[u8]) {
    let st = OsStorage::new();
    let dir = st.open_dir(None, p.parent().unwrap(), true).unwrap();
    let f = st
        .open(&dir, p.file_name().unwrap(), OpenHow::READ_NOFOLLOW)
        .unwrap();
    st.set_xattr(&f, OsStr::new(name), value).unwrap();
}

fn xattr_get(p: &Path, name: &str) -> Option<Vec<u8>> {
    let st = OsStorage::new();
    let dir = st.open_dir(None, p.parent().unwrap(), true).unwrap();
    st.get_xattr_at(&dir, p.file_name().unwrap(), OsStr::new(name))
        .ok()
}

/// The seam calls of one replace: a one-shot `write` and a replace through
/// a handle, of an existing file without xattrs whose mode the new file
/// gets at creation. Each is one system call on Linux (`random` only the
/// first time in a process), so this pins the system-call count.
#[test]
fn a_replace_makes_the_calls_it_needs_and_no_more() {
    #[derive(Debug, Default)]
    struct Count {
        os: OsStorage,
        calls: Mutex<Vec<&'static str>>,
    }
    impl Count {
        fn c(&self, name: &'static str) {
            self.calls.lock().unwrap().push(name);
        }
        fn take(&self) -> Vec<&'static str> {
            std::mem::take(&mut *self.calls.lock().unwrap())
        }
    }
    macro_rules! fwd {
        ($($name:ident($($a:ident: $t:ty),*) -> $r:ty;)*) => {
            $(fn $name(&self, $($a: $t),*) -> $r { self.c(stringify!($name)); self.os.$name($($a),*) })*
        };
    }
    impl Storage for Count {
        fwd! {
            open_dir(at: Option<&Fd>, path: &Path, follow: bool) -> io::Result<Fd>;
            open(at: &Fd, name: &OsStr, how: OpenHow) -> io::Result<Fd>;
            read_at(file: &Fd, buf: &mut [u8], offset: u64) -> io::Result<usize>;
            write_at(file: &Fd, buf: &[u8], offset: u64) -> io::Result<usize>;
            set_len(file: &Fd, len: u64) -> io::Result<()>;
            end_offset(file: &Fd) -> io::Result<u64>;
            sync(file: &Fd, kind: SyncKind) -> io::Result<()>;
            sync_fs(file: &Fd) -> io::Result<()>;
            stat(file: &Fd) -> io::Result<Stat>;
            stat_at(at: &Fd, name: &OsStr, follow: bool) -> io::Result<Stat>;
            fs_type(file: &Fd) -> io::Result<u64>;
            rename_at(a: &Fd, b: &OsStr, c: &Fd, d: &OsStr, nr: bool) -> io::Result<()>;
            link_at(a: &Fd, b: &OsStr, c: &Fd, d: &OsStr) -> io::Result<()>;
            unlink_at(at: &Fd, name: &OsStr, dir: bool) -> io::Result<()>;
            mkdir_at(at: &Fd, name: &OsStr, mode: u32) -> io::Result<()>;
            read_link_at(at: &Fd, name: &OsStr) -> io::Result<PathBuf>;
            chmod(file: &Fd, mode: u32) -> io::Result<()>;
            chown(file: &Fd, uid: Option<u32>, gid: Option<u32>) -> io::Result<()>;
            list_xattr(file: &Fd) -> io::Result<Vec<OsString>>;
            get_xattr(file: &Fd, name: &OsStr) -> io::Result<Vec<u8>>;
            list_xattr_at(at: &Fd, name: &OsStr) -> io::Result<Vec<OsString>>;
            get_xattr_at(at: &Fd, name: &OsStr, attr: &OsStr) -> io::Result<Vec<u8>>;
            set_xattr(file: &Fd, name: &OsStr, value: &[u8]) -> io::Result<()>;
            lock(file: &Fd, mode: LockMode, wait: bool) -> io::Result<bool>;
            unlock(file: &Fd) -> io::Result<()>;
            read_dir(dir: &Fd) -> io::Result<Vec<DirEntry>>;
            random() -> io::Result<u64>;
        }
        fn caps(&self) -> fstx::storage::Caps {
            self.os.caps()
        }
    }

    use std::os::unix::fs::MetadataExt;
    let d = TempDir::new("dir-calls");
    let p = d.join("f");
    std::fs::write(&p, b"old").unwrap();
    // The default mode of a new file: what the replace creates without a chmod.
    let mode = std::fs::metadata(&p).unwrap().mode() & 0o777;
    let count = Arc::new(Count::default());
    let mut o = Options::new();
    o.storage(count.clone());
    let btrfs = count
        .os
        .fs_type(&count.os.open_dir(None, d.path(), true).unwrap())
        .unwrap()
        == fstx::fskind::BTRFS_MAGIC;
    let flush = if btrfs { "sync_fs" } else { "sync" };
    let body = [
        "stat_at",
        "list_xattr_at",
        "random",
        "open",
        "lock",
        "stat",
        "write_at",
        "sync",
        "rename_at",
        flush,
    ];

    o.write(&p, vec![1u8; 4096]).unwrap();
    let mut want = vec!["open_dir"];
    want.extend(&body[..1]);
    want.push("fs_type");
    want.extend(&body[1..]);
    assert_eq!(count.take(), want, "one-shot write (file mode {mode:o})");

    let dir = o.open_dir(d.path()).unwrap();
    assert_eq!(count.take(), ["open_dir", "fs_type"]);
    for _ in 0..3 {
        dir.write("f", vec![2u8; 4096]).unwrap();
        assert_eq!(count.take(), body, "replace through a handle");
    }
}

/// Thread B renames while thread A's directory flush is running (its
/// `fsync` already returned, A not yet woken): B must not take A's flush,
/// which began before its rename, but wait for one that begins after it.
/// Deliberately broken (a waiter accepting the flush in flight), this test
/// fails: B returns after A's flush alone.
#[test]
fn group_commit_waits_for_a_flush_begun_after_its_rename() {
    let d = TempDir::new("gc-after");
    // Hold flush 1 until 2 renames (A's and B's) are done.
    let gate = Gate::new(Plan {
        hold: Some((1, 2)),
        ..Plan::default()
    });
    let dir = opts(&gate).open_dir(d.path()).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| write_logged(&gate, &dir, "a", b"A").unwrap());
        gate.wait_for(|log| log.contains(&Ev::FlushBegin(1)));
        s.spawn(|| write_logged(&gate, &dir, "b", b"B").unwrap());
    });
    let log = gate.log();
    assert_eq!(check(&log), Vec::<String>::new(), "{log:?}");
    assert_eq!(*gate.flushes.lock().unwrap(), 2, "{log:?}");
}

/// Eight replaces: the first leads flush 1, held until the seven others have
/// renamed; the seven then share one flush (flush 2), and every replace
/// waited for a flush begun after its rename.
#[test]
fn group_commit_shares_one_flush_among_the_renames_before_it() {
    let d = TempDir::new("gc-share");
    let handle = Arc::new(std::sync::OnceLock::new());
    let gate = Gate::new(Plan {
        hold: Some((1, 8)),
        hold_waiters: Some((handle.clone(), 7)),
        ..Plan::default()
    });
    let dir = handle.get_or_init(|| opts(&gate).open_dir(d.path()).unwrap());
    std::thread::scope(|s| {
        s.spawn(|| write_logged(&gate, dir, "f0", b"0").unwrap());
        gate.wait_for(|log| log.contains(&Ev::FlushBegin(1)));
        for i in 1..8 {
            let gate = &gate;
            s.spawn(move || write_logged(gate, dir, &format!("f{i}"), b"x").unwrap());
        }
    });
    let log = gate.log();
    assert_eq!(check(&log), Vec::<String>::new(), "{log:?}");
    assert_eq!(*gate.flushes.lock().unwrap(), 2, "{log:?}");
    for i in 1..8 {
        assert_eq!(std::fs::read(d.join(format!("f{i}"))).unwrap(), b"x");
    }
}

/// Flush 2, shared by seven replaces, fails: each of the seven gets the
/// kernel's errno as committed-not-durable, the flush is never retried (two
/// flushes in all), and the handle refuses later replaces before touching
/// anything.
#[test]
fn group_commit_reports_a_failed_flush_to_every_waiter_and_never_retries() {
    let d = TempDir::new("gc-fail");
    let handle = Arc::new(std::sync::OnceLock::new());
    let gate = Gate::new(Plan {
        hold: Some((1, 8)),
        hold_waiters: Some((handle.clone(), 7)),
        fail: Some((2, libc_eio())),
        ..Plan::default()
    });
    let dir = handle.get_or_init(|| opts(&gate).open_dir(d.path()).unwrap());
    let results = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        s.spawn(|| write_logged(&gate, dir, "f0", b"0").unwrap());
        gate.wait_for(|log| log.contains(&Ev::FlushBegin(1)));
        for i in 1..8 {
            let (gate, results) = (&gate, &results);
            s.spawn(move || {
                let r = write_logged(gate, dir, &format!("f{i}"), b"x");
                results.lock().unwrap().push(r);
            });
        }
    });
    let results = results.into_inner().unwrap();
    assert_eq!(results.len(), 7);
    for r in results {
        let e = r.unwrap_err();
        assert_eq!(e.state(), &State::CommittedNotDurable, "{e}");
        assert_eq!(e.step(), Step::FsyncDirectory, "{e}");
        assert_eq!(e.io_error().raw_os_error(), Some(libc_eio()), "{e}");
    }
    let log = gate.log();
    assert_eq!(check(&log), Vec::<String>::new(), "{log:?}");
    assert_eq!(*gate.flushes.lock().unwrap(), 2, "never retried: {log:?}");
    // Final for the handle: refused before anything is created or flushed.
    std::fs::write(d.join("later"), b"before").unwrap();
    let e = dir.write("later", b"after").unwrap_err();
    assert_eq!(e.state(), &State::NotCommitted, "{e}");
    assert_eq!(e.io_error().raw_os_error(), Some(libc_eio()), "{e}");
    assert_eq!(std::fs::read(d.join("later")).unwrap(), b"before");
    assert!(temps(d.path()).is_empty());
    assert_eq!(*gate.flushes.lock().unwrap(), 2);
}

fn libc_eio() -> i32 {
    5
}

/// Eight threads × 40 replaces of their own files, with random pauses
/// after renames and before flushes: every acknowledged replace was covered
/// by a flush begun after its rename, and flushes were shared.
#[test]
fn group_commit_under_random_interleavings() {
    let d = TempDir::new("gc-stress");
    let gate = Gate::new(Plan {
        jitter_us: 300,
        ..Plan::default()
    });
    let dir = opts(&gate).open_dir(d.path()).unwrap();
    std::thread::scope(|s| {
        for t in 0..8 {
            let (gate, dir) = (&gate, &dir);
            s.spawn(move || {
                for i in 0..40 {
                    write_logged(gate, dir, &format!("t{t}"), format!("{i}").as_bytes()).unwrap();
                }
            });
        }
    });
    let v = check(&gate.log());
    assert!(
        v.is_empty(),
        "{} violations, first: {:?}",
        v.len(),
        &v[..3.min(v.len())]
    );
    let flushes = *gate.flushes.lock().unwrap();
    assert!(flushes < 320, "no flush was shared: {flushes}");
    for t in 0..8 {
        assert_eq!(std::fs::read(d.join(format!("t{t}"))).unwrap(), b"39");
    }
    assert!(temps(d.path()).is_empty());
}

/// The checker itself: a replace acknowledged after a flush that began
/// before its rename is reported.
#[test]
fn the_group_commit_checker_catches_a_flush_begun_before_the_rename() {
    let log = [
        Ev::Renamed("a".into()),
        Ev::FlushBegin(1),
        Ev::Renamed("b".into()),
        Ev::FlushEnd(1, true),
        Ev::Returned("a".into(), true),
        Ev::Returned("b".into(), true),
    ];
    let v = check(&log);
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(v[0].contains("\"b\""), "{v:?}");
    let failed = [
        Ev::Renamed("a".into()),
        Ev::FlushBegin(1),
        Ev::FlushEnd(1, false),
        Ev::Returned("a".into(), true),
    ];
    assert_eq!(check(&failed).len(), 1);
}
