//! Group commit under crash enumeration: two threads replace two files
//! through one `fstx::Dir` on the simulator, in the interleaving that
//! matters — B renames while A's directory flush is running (the simulated
//! `fsync` has already persisted what it covers; A is not yet woken). B must
//! not return before a flush that began after its rename: every crash state
//! after B's acknowledgement is checked to hold B's new content.
//! Deliberately broken (a waiter joining the flush in flight), the crash
//! states after B's `Ok` lose B's rename and this test fails ("/d/b: holds
//! 5 bytes "b-old", but only these are allowed: [... "b-new"]", 2
//! violations on the weak profile). The workload is this file's own, with
//! real threads: the replay command a violation prints does not know it.

use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use fstx::storage::{Caps, DirEntry, Fd, LockMode, OpenHow, Stat, Storage, SyncKind};
use fstx::{Durability, Options, State};
use fstx_sim::history::{History, Outcome};
use fstx_sim::{explore, Config, Profile, SimFs, Workload};

/// The simulator, with directory flush 1 held (after the simulated flush
/// returned) until two renames have completed, and a signal when it began.
#[derive(Debug)]
struct Gate {
    fs: Arc<SimFs>,
    dirs: Mutex<Vec<u64>>,
    state: Mutex<(usize, usize)>, // (directory flushes begun, renames done)
    changed: Condvar,
}

impl Gate {
    fn wait_for(&self, pred: impl Fn((usize, usize)) -> bool) {
        let mut g = self.state.lock().unwrap();
        while !pred(*g) {
            g = self.changed.wait(g).unwrap();
        }
    }
    fn bump(&self, f: impl FnOnce(&mut (usize, usize))) -> (usize, usize) {
        let mut g = self.state.lock().unwrap();
        f(&mut g);
        self.changed.notify_all();
        *g
    }
}

macro_rules! fwd {
    ($($name:ident($($a:ident: $t:ty),*) -> $r:ty;)*) => {
        $(fn $name(&self, $($a: $t),*) -> $r { self.fs.$name($($a),*) })*
    };
}

impl Storage for Gate {
    fn open_dir(&self, at: Option<&Fd>, path: &Path, follow: bool) -> io::Result<Fd> {
        let fd = self.fs.open_dir(at, path, follow)?;
        self.dirs.lock().unwrap().push(fd.virtual_id().unwrap());
        Ok(fd)
    }
    fn sync(&self, file: &Fd, kind: SyncKind) -> io::Result<()> {
        let dir = self
            .dirs
            .lock()
            .unwrap()
            .contains(&file.virtual_id().unwrap());
        if !dir {
            return self.fs.sync(file, kind);
        }
        let (n, _) = self.bump(|g| g.0 += 1);
        let r = self.fs.sync(file, kind);
        if n == 1 {
            self.wait_for(|g| g.1 >= 2);
        }
        r
    }
    fn rename_at(&self, a: &Fd, b: &OsStr, c: &Fd, d: &OsStr, nr: bool) -> io::Result<()> {
        self.fs.rename_at(a, b, c, d, nr)?;
        self.bump(|g| g.1 += 1);
        Ok(())
    }
    fn caps(&self) -> Caps {
        self.fs.caps()
    }
    fwd! {
        open(at: &Fd, name: &OsStr, how: OpenHow) -> io::Result<Fd>;
        read_at(file: &Fd, buf: &mut [u8], offset: u64) -> io::Result<usize>;
        write_at(file: &Fd, buf: &[u8], offset: u64) -> io::Result<usize>;
        set_len(file: &Fd, len: u64) -> io::Result<()>;
        end_offset(file: &Fd) -> io::Result<u64>;
        sync_fs(file: &Fd) -> io::Result<()>;
        stat(file: &Fd) -> io::Result<Stat>;
        stat_at(at: &Fd, name: &OsStr, follow: bool) -> io::Result<Stat>;
        fs_type(file: &Fd) -> io::Result<u64>;
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
}

/// Two durable replaces through one handle, B's rename inside A's flush.
struct TwoThreads;

const FILES: [(&str, &[u8], &[u8]); 2] =
    [("/d/a", b"a-old", b"a-new"), ("/d/b", b"b-old", b"b-new")];

impl Workload for TwoThreads {
    fn name(&self) -> String {
        "group-commit/two-threads".into()
    }

    fn setup(&self, _seed: u64, fs: &SimFs, history: &mut History) {
        fs.mkdir_p("/d").expect("setup");
        for (path, old, _) in FILES {
            fs.put_file(path, old, 0o644).expect("setup");
            history.track(path, Some(old.to_vec()));
        }
        history.dirs = vec![PathBuf::from("/d")];
    }

    fn run(&self, _seed: u64, fs: &Arc<SimFs>, history: &mut History) {
        let gate = Arc::new(Gate {
            fs: fs.clone(),
            dirs: Mutex::new(Vec::new()),
            state: Mutex::new((0, 0)),
            changed: Condvar::new(),
        });
        let mut opts = Options::new();
        opts.storage(gate.clone()).durability(Durability::Durable);
        let dir = opts.open_dir("/d").expect("open the directory");
        let history = Mutex::new(history);
        let replace = |(path, _, new): (&str, &[u8], &[u8])| {
            let op = history.lock().unwrap().begin(
                format!("replace {path}"),
                vec![(PathBuf::from(path), Some(new.to_vec()))],
                fs.calls(),
            );
            let name = Path::new(path).file_name().unwrap();
            let outcome = match dir.write(name, new) {
                Ok(()) => Outcome::Durable,
                Err(e) if *e.state() == State::CommittedNotDurable => Outcome::CommittedNotDurable,
                Err(_) => Outcome::NotCommitted,
            };
            history.lock().unwrap().end(op, outcome, fs.calls());
        };
        std::thread::scope(|s| {
            s.spawn(|| replace(FILES[0]));
            // B starts once A's directory flush has begun.
            gate.wait_for(|g| g.0 >= 1);
            s.spawn(|| replace(FILES[1]));
        });
    }

    fn recover(&self, fs: &Arc<SimFs>, history: &History) -> Result<(), String> {
        let storage: Arc<dyn Storage> = fs.clone();
        for dir in &history.dirs {
            fstx::RecoverOptions::new()
                .storage(storage.clone())
                .recover(dir)
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

#[test]
fn group_commit_acknowledges_only_after_a_flush_begun_after_the_rename() {
    for profile in [Profile::Weak, Profile::Ordered] {
        let mut cfg = Config::new(1);
        cfg.profile = profile;
        let r = explore(&TwoThreads, &cfg);
        println!(
            "{} on {}: {}",
            TwoThreads.name(),
            profile.name(),
            r.summary()
        );
        for v in &r.violations {
            println!("{v}");
        }
        assert_eq!(r.violation_count, 0);
        assert!(r.distinct.len() > 4, "{}", r.summary());
    }
}
