//! Integration tests of `fstx::update`, its lock and its backups, on the
//! real filesystem. Cross-process tests live in `fstx-cli/tests/update.rs`.

use std::ffi::OsString;
use std::io::{self, ErrorKind, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use fstx_testkit::TempDir;

use fstx::{BackupKind, BackupMethod, FileLock, Step, UpdateOptions, Wait};

fn count(old: Option<&[u8]>) -> u64 {
    old.map_or(0, |b| String::from_utf8_lossy(b).trim().parse().unwrap())
}

fn increment(path: &Path) {
    fstx::update(path, |old| {
        Ok(Some(format!("{}\n", count(old) + 1).into_bytes()))
    })
    .unwrap();
}

#[test]
fn threads_never_lose_an_update() {
    let d = TempDir::new("threads");
    let p = d.join("count");
    let threads = 8;
    let per_thread = 100;
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let p = p.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                for _ in 0..per_thread {
                    increment(&p);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(
        std::fs::read_to_string(&p).unwrap(),
        format!("{}\n", threads * per_thread)
    );
    // Only the target and its lock file remain: no temporary file.
    assert_eq!(d.names(), vec![".fstx-lock.count", "count"]);
}

#[test]
fn function_sees_none_for_a_missing_file_and_can_decline() {
    let d = TempDir::new("none");
    let p = d.join("f");
    let done = fstx::update(&p, |old| {
        assert!(old.is_none());
        Ok(None)
    })
    .unwrap();
    assert!(!done.replaced);
    assert!(!p.exists());
    let done = fstx::update(&p, |_| Ok(Some(b"x".to_vec()))).unwrap();
    assert!(done.replaced);
    assert_eq!(done.backup, None);
    let ino = std::fs::metadata(&p).unwrap().ino();
    let done = fstx::update(&p, |old| {
        assert_eq!(old, Some(&b"x"[..]));
        Ok(None)
    })
    .unwrap();
    assert!(!done.replaced);
    assert_eq!(std::fs::metadata(&p).unwrap().ino(), ino);
}

#[test]
fn failing_function_leaves_file_untouched_and_returns_its_error() {
    #[derive(Debug)]
    struct Mine;
    impl std::fmt::Display for Mine {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("mine")
        }
    }
    impl std::error::Error for Mine {}

    let d = TempDir::new("fail");
    let p = d.join("f");
    std::fs::write(&p, b"precious").unwrap();
    let ino = std::fs::metadata(&p).unwrap().ino();
    let mut opts = UpdateOptions::new();
    opts.backup("~");
    let err = opts
        .update(&p, |_| Err(io::Error::new(ErrorKind::InvalidData, Mine)))
        .unwrap_err();
    assert_eq!(err.step(), Step::UpdateFunction);
    assert_eq!(err.kind(), ErrorKind::InvalidData);
    assert_eq!(*err.state(), fstx::State::NotCommitted);
    assert!(err.into_io_error().into_inner().unwrap().is::<Mine>());
    // Streaming: the function wrote half its output before failing.
    let err = opts
        .update_stream(&p, |_, new| {
            new.write_all(b"half of the new")?;
            Err(io::Error::other("gave up"))
        })
        .unwrap_err();
    assert_eq!(err.step(), Step::UpdateFunction);
    assert_eq!(std::fs::read(&p).unwrap(), b"precious");
    assert_eq!(std::fs::metadata(&p).unwrap().ino(), ino);
    // No backup made, no temporary file left; the lock is free.
    assert_eq!(d.names(), vec![".fstx-lock.f", "f"]);
    assert!(FileLock::try_lock(&p).unwrap().is_some());
}

#[test]
fn streaming_update_copies_and_extends() {
    let d = TempDir::new("stream");
    let p = d.join("big");
    let chunk = vec![7u8; 1 << 20];
    for i in 0..3u8 {
        fstx::update_stream(&p, |old, new| {
            if let Some(old) = old {
                assert_eq!(old.len(), u64::from(i) << 20);
                io::copy(old, new)?;
            } else {
                assert_eq!(i, 0);
            }
            new.write_all(&chunk)?;
            Ok(true)
        })
        .unwrap();
    }
    assert_eq!(std::fs::metadata(&p).unwrap().len(), 3 << 20);
    // Declining discards what was written.
    let done = fstx::update_stream(&p, |_, new| {
        new.write_all(b"nope")?;
        Ok(false)
    })
    .unwrap();
    assert!(!done.replaced);
    assert_eq!(std::fs::metadata(&p).unwrap().len(), 3 << 20);
    assert_eq!(d.names(), vec![".fstx-lock.big", "big"]);
}

#[test]
fn try_lock_and_timeout_while_held() {
    let d = TempDir::new("timeout");
    let p = d.join("f");
    std::fs::write(&p, b"1").unwrap();
    let held = FileLock::lock(&p).unwrap();
    assert_eq!(held.lock_path(), d.join(".fstx-lock.f"));

    // Another thread is locked out: try-lock, timeout, and update with a timeout.
    let p2 = p.clone();
    std::thread::spawn(move || {
        assert!(FileLock::try_lock(&p2).unwrap().is_none());
        let start = Instant::now();
        let err = UpdateOptions::new()
            .timeout(Duration::from_millis(150))
            .update(&p2, |_| Ok(Some(b"2".to_vec())))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::TimedOut);
        assert_eq!(err.step(), Step::Lock);
        assert!(start.elapsed() >= Duration::from_millis(150));
        assert!(start.elapsed() < Duration::from_secs(5));
        let err = UpdateOptions::new()
            .wait(Wait::Try)
            .update(&p2, |_| Ok(Some(b"2".to_vec())))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::WouldBlock);
    })
    .join()
    .unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"1");

    // A waiter gets the lock as soon as it is released.
    let p3 = p.clone();
    let waiter = std::thread::spawn(move || {
        UpdateOptions::new()
            .timeout(Duration::from_secs(10))
            .update(&p3, |old| {
                assert_eq!(old, Some(&b"1"[..]));
                Ok(Some(b"2".to_vec()))
            })
            .unwrap();
    });
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        std::fs::read(&p).unwrap(),
        b"1",
        "updated while the lock was held"
    );
    held.unlock().unwrap();
    waiter.join().unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"2");
}

#[test]
fn lock_goes_through_symlinks_to_the_real_target() {
    let d = TempDir::new("symlink");
    std::fs::create_dir(d.join("real")).unwrap();
    let real = d.join("real/data");
    std::fs::write(&real, b"0").unwrap();
    std::os::unix::fs::symlink("real/data", d.join("alias")).unwrap();
    let _held = FileLock::lock(d.join("alias")).unwrap();
    assert!(d.join("real/.fstx-lock.data").exists());
    assert!(FileLock::try_lock(&real).unwrap().is_none());
}

#[test]
fn lock_file_is_never_removed_by_recover() {
    let d = TempDir::new("recover");
    let p = d.join("f");
    increment(&p);
    increment(&p);
    // Someone waits on the lock file while recovery runs: it must stay.
    let held = FileLock::lock(&p).unwrap();
    let report = fstx::recover(&d.0).unwrap();
    assert!(report.is_empty(), "{report:?}");
    drop(held);
    let report = fstx::recover(&d.0).unwrap();
    assert!(report.is_empty(), "{report:?}");
    assert_eq!(d.names(), vec![".fstx-lock.f", "f"]);
}

#[test]
fn backup_holds_the_previous_version_as_a_hard_link() {
    let d = TempDir::new("backup");
    let p = d.join("conf");
    let mut opts = UpdateOptions::new();
    opts.backup("~");
    // No previous version: no backup.
    let done = opts.update(&p, |_| Ok(Some(b"v1".to_vec()))).unwrap();
    assert_eq!(done.backup, None);
    assert!(!d.join("conf~").exists());
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
    let v1_ino = std::fs::metadata(&p).unwrap().ino();
    let done = opts.update(&p, |_| Ok(Some(b"v2".to_vec()))).unwrap();
    assert_eq!(done.backup, Some(BackupKind::HardLink));
    assert_eq!(std::fs::read(&p).unwrap(), b"v2");
    assert_eq!(std::fs::read(d.join("conf~")).unwrap(), b"v1");
    // The backup is the previous inode itself: no data was copied.
    let b = std::fs::metadata(d.join("conf~")).unwrap();
    assert_eq!(b.ino(), v1_ino);
    assert_eq!(b.nlink(), 1);
    assert_eq!(b.permissions().mode() & 0o7777, 0o640);
    opts.update(&p, |_| Ok(Some(b"v3".to_vec()))).unwrap();
    assert_eq!(std::fs::read(d.join("conf~")).unwrap(), b"v2");
    assert_eq!(d.names(), vec![".fstx-lock.conf", "conf", "conf~"]);
}

#[test]
fn generations_rotate_newest_first() {
    let d = TempDir::new("generations");
    let p = d.join("g");
    let mut opts = UpdateOptions::new();
    opts.backup(".bak").generations(3);
    for v in 1..=6 {
        opts.update(&p, |_| Ok(Some(format!("v{v}").into_bytes())))
            .unwrap();
    }
    let read = |n: &str| std::fs::read_to_string(d.join(n)).unwrap();
    assert_eq!(read("g"), "v6");
    assert_eq!(read("g.bak"), "v5");
    assert_eq!(read("g.bak2"), "v4");
    assert_eq!(read("g.bak3"), "v3");
    assert_eq!(
        d.names(),
        vec![".fstx-lock.g", "g", "g.bak", "g.bak2", "g.bak3"]
    );
}

#[test]
fn copied_backup_is_complete_and_keeps_the_mode() {
    let d = TempDir::new("copy");
    let p = d.join("c");
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&p, &big).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o604)).unwrap();
    let ino = std::fs::metadata(&p).unwrap().ino();
    let mut opts = UpdateOptions::new();
    opts.backup("~").backup_method(BackupMethod::Copy);
    let done = opts.update(&p, |_| Ok(Some(b"new".to_vec()))).unwrap();
    assert_eq!(done.backup, Some(BackupKind::Copy));
    let b = std::fs::metadata(d.join("c~")).unwrap();
    assert_ne!(b.ino(), ino);
    assert_eq!(b.permissions().mode() & 0o7777, 0o604);
    assert_eq!(std::fs::read(d.join("c~")).unwrap(), big);
    assert_eq!(d.names(), vec![".fstx-lock.c", "c", "c~"]);
}

#[test]
fn interrupted_backup_link_is_swept_and_not_duplicated() {
    let d = TempDir::new("interrupted");
    let p = d.join("s");
    let mut opts = UpdateOptions::new();
    opts.generations(2);
    opts.update(&p, |_| Ok(Some(b"v1".to_vec()))).unwrap();
    opts.update(&p, |_| Ok(Some(b"v2".to_vec()))).unwrap();
    // A crash after the backup link but before its rename leaves a
    // temporary second name of the target: recovery removes just that name.
    let stale = d.join(".fstx-tmp.0123456789abcdef.s~");
    std::fs::hard_link(&p, &stale).unwrap();
    let report = fstx::recover(&d.0).unwrap();
    assert_eq!(report.removed, vec![stale]);
    assert_eq!(std::fs::read(&p).unwrap(), b"v2");
    // A crash after the backup rename but before the replace: `s~` is
    // already the current version; the next update must not rotate it
    // into `s~2` as well.
    std::fs::rename(d.join("s~"), d.join("s~2")).unwrap();
    std::fs::hard_link(&p, d.join("s~")).unwrap();
    opts.update(&p, |_| Ok(Some(b"v3".to_vec()))).unwrap();
    let read = |n: &str| std::fs::read_to_string(d.join(n)).unwrap();
    assert_eq!(
        (read("s"), read("s~"), read("s~2")),
        ("v3".into(), "v2".into(), "v1".into())
    );
}

#[test]
fn readers_without_the_lock_see_complete_versions() {
    let d = TempDir::new("readers");
    let p = d.join("r");
    let version = |n: u64| -> Vec<u8> {
        let mut v = format!("{n:020}").into_bytes();
        v.resize(64 * 1024 + (n as usize % 4096), b'a' + (n % 26) as u8);
        v
    };
    fstx::write(&p, version(0)).unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (p, stop) = (p.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut reads = 0;
            while !stop.load(Ordering::Relaxed) {
                let mut buf = Vec::new();
                std::fs::File::open(&p)
                    .unwrap()
                    .read_to_end(&mut buf)
                    .unwrap();
                let n: u64 = std::str::from_utf8(&buf[..20]).unwrap().parse().unwrap();
                assert_eq!(buf, version(n), "torn read");
                reads += 1;
            }
            reads
        })
    };
    let mut opts = UpdateOptions::new();
    opts.options(
        fstx::Options::new()
            .durability(fstx::Durability::None)
            .clone(),
    );
    for _ in 0..300 {
        opts.update(&p, |old| {
            let n: u64 = std::str::from_utf8(&old.unwrap()[..20])
                .unwrap()
                .parse()
                .unwrap();
            Ok(Some(version(n + 1)))
        })
        .unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    assert!(reader.join().unwrap() > 0);
}

#[test]
fn long_names_get_a_lock_file_that_fits() {
    let d = TempDir::new("long");
    let name: OsString = "n".repeat(250).into();
    let p = d.join(&name);
    increment(&p);
    increment(&p);
    assert_eq!(std::fs::read_to_string(&p).unwrap(), "2\n");
    assert!(d
        .names()
        .iter()
        .any(|n| n.starts_with(".fstx-lock.") && n.len() == 255));
}
