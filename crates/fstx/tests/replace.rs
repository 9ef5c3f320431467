//! Integration tests of the single-file replace on the real filesystem.
//! Tests whose names start with `mount_` mount a tmpfs (root) and run in a
//! serial group.

mod common;

use std::ffi::OsStr;
use std::io::{ErrorKind, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt, PermissionsExt};
use std::sync::Arc;

use common::{temps, Hooked, Hooks, TempDir, Tmpfs};
use fstx::{AtomicFile, Durability, HardLinks, Options, State, Step, Symlinks};

fn mode_of(p: &std::path::Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn write_replaces_content_and_leaves_no_temp() {
    let d = TempDir::new("basic");
    let p = d.join("f");
    fstx::write(&p, b"old").unwrap();
    fstx::write(&p, b"new content").unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"new content");
    assert!(temps(d.path()).is_empty());
}

#[test]
fn empty_input_and_non_utf8_names() {
    let d = TempDir::new("names");
    let p = d.join(OsStr::from_bytes(b"caf\xe9-\xff.bin"));
    fstx::write(&p, b"").unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"");
    fstx::write(&p, b"x").unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"x");
}

#[test]
fn nothing_visible_before_commit_and_drop_discards() {
    let d = TempDir::new("drop");
    let p = d.join("f");
    fstx::write(&p, b"old").unwrap();
    {
        let mut f = AtomicFile::create(&p).unwrap();
        f.write_all(b"new").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        assert_eq!(temps(d.path()).len(), 1);
    }
    assert_eq!(std::fs::read(&p).unwrap(), b"old");
    assert!(temps(d.path()).is_empty());
    let mut f = AtomicFile::create(&p).unwrap();
    f.write_all(b"new").unwrap();
    f.discard().unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"old");
    assert!(temps(d.path()).is_empty());
}

#[test]
fn seek_and_overwrite() {
    let d = TempDir::new("seek");
    let p = d.join("f");
    let mut f = AtomicFile::create(&p).unwrap();
    f.write_all(b"hello world").unwrap();
    f.seek(SeekFrom::Start(6)).unwrap();
    f.write_all(b"WORLD").unwrap();
    assert_eq!(f.seek(SeekFrom::End(0)).unwrap(), 11);
    f.commit().unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"hello WORLD");
}

#[test]
fn mode_0600_survives_and_new_files_get_umask_mode() {
    let d = TempDir::new("mode");
    let p = d.join("secret");
    std::fs::write(&p, b"old").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    fstx::write(&p, b"new").unwrap();
    assert_eq!(mode_of(&p), 0o600);

    // A new file: 0o666 less the umask (read back from the kernel).
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let umask = status
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .map(|u| u32::from_str_radix(u.trim(), 8).unwrap())
        .unwrap();
    let q = d.join("new");
    fstx::write(&q, b"x").unwrap();
    assert_eq!(mode_of(&q), 0o666 & !umask);

    let r = d.join("explicit");
    Options::new().mode(0o640).write(&r, b"x").unwrap();
    assert_eq!(mode_of(&r), 0o640);
}

#[test]
fn temp_file_is_never_wider_than_the_old_file() {
    let d = TempDir::new("narrow");
    let p = d.join("f");
    std::fs::write(&p, b"old").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::chown(&p, Some(4242), Some(4343)).unwrap();
    let f = AtomicFile::create(&p).unwrap();
    let temp_mode = mode_of(&f.temp_path());
    // Owned by us (root) until commit: owner bits only, at most the old ones.
    assert_eq!(temp_mode & !0o600, 0, "temp mode {temp_mode:o}");
    f.commit().unwrap();
    let md = std::fs::metadata(&p).unwrap();
    assert_eq!(
        (md.uid(), md.gid(), md.mode() & 0o7777),
        (4242, 4343, 0o640)
    );
}

#[test]
fn set_id_bits_and_capabilities_dropped_unless_kept() {
    let d = TempDir::new("setid");
    let p = d.join("tool");
    std::fs::write(&p, b"old").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o4755)).unwrap();
    // What `setcap cap_net_raw+ep` writes, set directly: no tool needed,
    // so the capability half of the test cannot be skipped.
    xattr_set(&p, "security.capability", &capability());
    xattr_set(&p, "user.note", b"kept");
    assert_eq!(mode_of(&p), 0o4755);
    fstx::write(&p, b"new").unwrap();
    assert_eq!(mode_of(&p), 0o755);
    assert_eq!(xattr_get(&p, "user.note").as_deref(), Some(&b"kept"[..]));
    assert_eq!(xattr_get(&p, "security.capability"), None);

    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o4755)).unwrap();
    xattr_set(&p, "security.capability", &capability());
    Options::new()
        .keep_privileges(true)
        .write(&p, b"newer")
        .unwrap();
    assert_eq!(mode_of(&p), 0o4755);
    assert_eq!(xattr_get(&p, "security.capability"), Some(capability()));
}

/// A `security.capability` value (`VFS_CAP_REVISION_2`, effective,
/// `cap_net_raw` permitted): the bytes `setcap cap_net_raw+ep` writes.
fn capability() -> Vec<u8> {
    [0x0200_0001u32, 1 << 13, 0, 0, 0]
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .collect()
}

#[test]
fn xattrs_can_be_left_behind() {
    let d = TempDir::new("noxattr");
    let p = d.join("f");
    std::fs::write(&p, b"old").unwrap();
    xattr_set(&p, "user.note", b"v");
    Options::new()
        .preserve_xattrs(false)
        .write(&p, b"new")
        .unwrap();
    assert_eq!(xattr_get(&p, "user.note"), None);
}

#[test]
fn without_preserve_metadata_the_file_is_new() {
    let d = TempDir::new("nopreserve");
    let p = d.join("f");
    std::fs::write(&p, b"old").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(&p, Some(4242), None).unwrap();
    xattr_set(&p, "user.note", b"v");
    Options::new()
        .preserve_metadata(false)
        .mode(0o644)
        .write(&p, b"new")
        .unwrap();
    let md = std::fs::metadata(&p).unwrap();
    assert_eq!((md.uid(), md.mode() & 0o7777), (0, 0o644));
    assert_eq!(xattr_get(&p, "user.note"), None);
}

#[test]
fn posix_acl_is_carried() {
    let d = TempDir::new("acl");
    let p = d.join("f");
    std::fs::write(&p, b"old").unwrap();
    // user::rw- user:1234:r-- group::--- mask::r-- other::---
    let acl: Vec<u8> = [
        (0x01u16, 6u16, u32::MAX),
        (0x02, 4, 1234),
        (0x04, 0, u32::MAX),
        (0x10, 4, u32::MAX),
        (0x20, 0, u32::MAX),
    ]
    .iter()
    .fold(vec![2, 0, 0, 0], |mut v, (tag, perm, id)| {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
        v
    });
    // Every filesystem CI puts TMPDIR on (ext4, xfs, btrfs, tmpfs) has
    // POSIX ACLs: a refusal fails the test rather than skip it silently.
    if let Err(e) = rustix::fs::setxattr(
        &p,
        "system.posix_acl_access",
        &acl,
        rustix::fs::XattrFlags::empty(),
    ) {
        panic!(
            "setting a POSIX ACL failed ({e}): run the tests with TMPDIR on a filesystem \
             with ACLs (ext4, xfs, btrfs, tmpfs)"
        );
    }
    let before = xattr_get(&p, "system.posix_acl_access").unwrap();
    let mode_before = mode_of(&p);
    fstx::write(&p, b"new").unwrap();
    assert_eq!(xattr_get(&p, "system.posix_acl_access").unwrap(), before);
    assert_eq!(mode_of(&p), mode_before);
}

#[test]
fn symlink_follow_keeps_the_link_and_never_copies_its_mode() {
    let d = TempDir::new("symlink");
    let real = d.join("real");
    let link = d.join("link");
    std::fs::write(&real, b"old").unwrap();
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o600)).unwrap();
    symlink("real", &link).unwrap();
    fstx::write(&link, b"new").unwrap();
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(std::fs::read(&real).unwrap(), b"new");
    assert_eq!(mode_of(&real), 0o600);
    assert!(temps(d.path()).is_empty());
}

#[test]
fn symlink_chain_into_another_directory_and_dangling_link() {
    let d = TempDir::new("chain");
    std::fs::create_dir(d.join("sub")).unwrap();
    symlink("sub/hop", d.join("a")).unwrap();
    symlink(d.join("sub/target"), d.join("sub/hop")).unwrap(); // absolute, dangling
    fstx::write(d.join("a"), b"through two links").unwrap();
    assert_eq!(
        std::fs::read(d.join("sub/target")).unwrap(),
        b"through two links"
    );
    assert!(std::fs::symlink_metadata(d.join("a"))
        .unwrap()
        .file_type()
        .is_symlink());
}

#[test]
fn symlink_replace_and_refuse_policies() {
    let d = TempDir::new("policy");
    std::fs::write(d.join("real"), b"old").unwrap();
    symlink("real", d.join("link")).unwrap();
    let e = Options::new()
        .symlinks(Symlinks::Refuse)
        .write(d.join("link"), b"x")
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert_eq!(e.state(), &State::NotCommitted);
    assert!(e.to_string().contains("symlink"), "{e}");

    Options::new()
        .symlinks(Symlinks::ReplaceLink)
        .write(d.join("link"), b"plain")
        .unwrap();
    let md = std::fs::symlink_metadata(d.join("link")).unwrap();
    assert!(md.file_type().is_file());
    assert_ne!(md.permissions().mode() & 0o777, 0o777);
    assert_eq!(std::fs::read(d.join("real")).unwrap(), b"old");
}

#[test]
fn symlink_loop_is_a_clear_error() {
    let d = TempDir::new("loop");
    symlink("b", d.join("a")).unwrap();
    symlink("a", d.join("b")).unwrap();
    let e = fstx::write(d.join("a"), b"x").unwrap_err();
    assert_eq!(
        e.io_error().raw_os_error(),
        Some(rustix::io::Errno::LOOP.raw_os_error())
    );
    assert_eq!(e.step(), Step::ResolveSymlink, "{e}");
    assert!(temps(d.path()).is_empty());
}

#[test]
fn hard_links_are_broken_or_refused() {
    let d = TempDir::new("hardlink");
    std::fs::write(d.join("a"), b"old").unwrap();
    std::fs::hard_link(d.join("a"), d.join("b")).unwrap();
    let e = Options::new()
        .hard_links(HardLinks::Refuse)
        .write(d.join("a"), b"new")
        .unwrap_err();
    assert!(e.to_string().contains("hard link"), "{e}");
    fstx::write(d.join("a"), b"new").unwrap();
    assert_eq!(std::fs::read(d.join("a")).unwrap(), b"new");
    assert_eq!(std::fs::read(d.join("b")).unwrap(), b"old");
}

#[test]
fn refuses_directories_fifos_and_devices() {
    let d = TempDir::new("kinds");
    std::fs::create_dir(d.join("dir")).unwrap();
    let e = fstx::write(d.join("dir"), b"x").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::IsADirectory);
    rustix::fs::mknodat(
        rustix::fs::CWD,
        d.join("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    let e = fstx::write(d.join("fifo"), b"x").unwrap_err();
    assert!(e.to_string().contains("not a regular file"), "{e}");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        d.join("null"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 3),
    )
    .unwrap();
    let e = fstx::write(d.join("null"), b"x").unwrap_err();
    assert!(e.to_string().contains("not a regular file"), "{e}");
    assert!(std::fs::symlink_metadata(d.join("null"))
        .unwrap()
        .file_type()
        .is_char_device());
    assert!(temps(d.path()).is_empty());
}

#[test]
fn bad_paths_fail_clearly_and_leave_nothing() {
    let d = TempDir::new("badpath");
    let e = fstx::write(d.join("missing/f"), b"x").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert_eq!(e.step(), Step::OpenParentDirectory, "{e}");
    assert!(e.to_string().contains("missing/f"), "{e}");

    std::fs::write(d.join("file"), b"").unwrap();
    let e = fstx::write(d.join("file/f"), b"x").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotADirectory);

    let long = "n".repeat(256);
    let e = fstx::write(d.join(&long), b"x").unwrap_err();
    assert_eq!(
        e.io_error().raw_os_error(),
        Some(rustix::io::Errno::NAMETOOLONG.raw_os_error())
    );
    assert_eq!(e.state(), &State::NotCommitted);
    assert!(temps(d.path()).is_empty());

    let e = fstx::write(d.join("dir/"), b"x").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
}

/// Every path operation after opening the parent is relative to that
/// directory's handle: swapping the parent for a symlink mid-operation cannot
/// redirect the write.
#[test]
fn swapping_the_parent_for_a_symlink_cannot_redirect_the_write() {
    let d = TempDir::new("swap");
    std::fs::create_dir(d.join("conf")).unwrap();
    std::fs::create_dir(d.join("attacker")).unwrap();
    std::fs::write(d.join("conf/f"), b"old").unwrap();
    let mut f = AtomicFile::create(d.join("conf/f")).unwrap();
    f.write_all(b"new").unwrap();
    std::fs::rename(d.join("conf"), d.join("conf.moved")).unwrap();
    symlink(d.join("attacker"), d.join("conf")).unwrap();
    f.commit().unwrap();
    assert_eq!(std::fs::read(d.join("conf.moved/f")).unwrap(), b"new");
    assert!(!d.join("attacker/f").exists());
    assert!(std::fs::read_dir(d.join("attacker"))
        .unwrap()
        .next()
        .is_none());
}

#[test]
fn racing_writers_leave_exactly_one_version() {
    let d = TempDir::new("race");
    let p = Arc::new(d.join("f"));
    let a = vec![b'a'; 256 * 1024];
    let b = vec![b'b'; 256 * 1024 + 7];
    fstx::write(&*p, &a).unwrap();
    let writers: Vec<_> = [a.clone(), b.clone()]
        .into_iter()
        .map(|content| {
            let p = p.clone();
            std::thread::spawn(move || {
                for _ in 0..50 {
                    let mut opts = Options::new();
                    opts.durability(Durability::None);
                    opts.write(&*p, &content).unwrap();
                }
            })
        })
        .collect();
    let mut reads = 0;
    while writers.iter().any(|w| !w.is_finished()) {
        let got = std::fs::read(&*p).unwrap();
        assert!(got == a || got == b, "torn read of {} bytes", got.len());
        reads += 1;
    }
    for w in writers {
        w.join().unwrap();
    }
    let got = std::fs::read(&*p).unwrap();
    assert!(got == a || got == b);
    assert!(reads > 0);
    assert!(temps(d.path()).is_empty());
}

#[test]
fn succeeds_beside_stale_temps_and_recover_removes_them() {
    let d = TempDir::new("stale");
    // A dead writer's temp: a file with an fstx temp name and no lock holder.
    let stale = d.join(".fstx-tmp.00000000deadbeef.f");
    std::fs::write(&stale, b"half").unwrap();
    fstx::write(d.join("f"), b"ok").unwrap();
    assert_eq!(std::fs::read(d.join("f")).unwrap(), b"ok");
    // A live writer's temp.
    let live = AtomicFile::create(d.join("g")).unwrap();
    let dry = fstx::RecoverOptions::new()
        .dry_run(true)
        .recover(d.path())
        .unwrap();
    assert_eq!(dry.removed, vec![stale.clone()]);
    assert!(stale.exists());
    let report = fstx::recover(d.path()).unwrap();
    assert_eq!(report.removed, vec![stale.clone()]);
    assert_eq!(report.in_use, vec![live.temp_path()]);
    assert!(!stale.exists());
    assert!(live.temp_path().exists());
    live.commit().unwrap();
    assert!(temps(d.path()).is_empty());
    // Other files that merely look similar are never touched.
    std::fs::write(d.join(".fstx-tmp.notours"), b"").unwrap();
    assert!(fstx::recover(d.path()).unwrap().is_empty());
    assert!(d.join(".fstx-tmp.notours").exists());
}

/// The create-then-lock window: a recovery that runs after the writer created
/// its temporary file but before it locked it takes the (free) lock and
/// removes the file. The writer must notice and start again under a new name.
#[test]
fn recovery_between_create_and_lock_cannot_break_a_writer() {
    let d = TempDir::new("window");
    let dir = d.path().to_path_buf();
    let removed = Arc::new(std::sync::Mutex::new(Vec::new()));
    let removed2 = removed.clone();
    let storage = Hooked::new(Hooks {
        before_first_lock: Some(Box::new(move || {
            let r = fstx::recover(&dir).unwrap();
            removed2.lock().unwrap().extend(r.removed);
        })),
        ..Hooks::default()
    });
    Options::new()
        .storage(storage.clone())
        .write(d.join("f"), b"content")
        .unwrap();
    assert_eq!(
        removed.lock().unwrap().len(),
        1,
        "the interleaving did not happen"
    );
    assert_eq!(storage.creates.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert_eq!(std::fs::read(d.join("f")).unwrap(), b"content");
    assert!(temps(d.path()).is_empty());
}

#[test]
fn failed_file_flush_is_not_committed_and_never_retried() {
    let d = TempDir::new("eio");
    let p = d.join("f");
    std::fs::write(&p, b"old").unwrap();
    let storage = Hooked::new(Hooks {
        fail_sync: Some((1, rustix::io::Errno::IO.raw_os_error())),
        ..Hooks::default()
    });
    let e = Options::new()
        .storage(storage.clone())
        .write(&p, b"new")
        .unwrap_err();
    assert_eq!(e.state(), &State::NotCommitted);
    assert_eq!(e.step(), Step::FsyncTemporaryFile);
    assert_eq!(
        storage.syncs.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "fsync retried"
    );
    assert_eq!(std::fs::read(&p).unwrap(), b"old");
    assert!(temps(d.path()).is_empty());
    let io: std::io::Error = e.into();
    assert_eq!(io.raw_os_error(), None);
    assert!(io.to_string().contains("not committed"));
}

#[test]
fn failed_directory_flush_is_committed_not_durable() {
    let d = TempDir::new("dirsync");
    let p = d.join("f");
    std::fs::write(&p, b"old").unwrap();
    let storage = Hooked::new(Hooks {
        fail_sync: Some((2, rustix::io::Errno::IO.raw_os_error())),
        // ext4: the directory flush is the second fsync, whatever the temp
        // dir is on (on btrfs it would be a syncfs).
        fs_magic: Some(0xEF53),
        ..Hooks::default()
    });
    let e = Options::new()
        .storage(storage)
        .write(&p, b"new")
        .unwrap_err();
    assert_eq!(e.state(), &State::CommittedNotDurable);
    assert!(e.state().is_committed());
    assert_eq!(std::fs::read(&p).unwrap(), b"new");
    assert!(e.to_string().contains("durability unconfirmed"), "{e}");
}

/// Where the weak-filesystem check was skipped, the directory flush
/// identifies the filesystem itself; if it cannot, the replace is committed
/// but not durable, with the kernel's errno (it never guesses).
#[test]
fn unidentified_filesystem_at_the_directory_flush_is_committed_not_durable() {
    let d = TempDir::new("fstype");
    let p = d.join("f");
    std::fs::write(&p, b"old").unwrap();
    let storage = Hooked::new(Hooks {
        fail_fs_type: Some(rustix::io::Errno::IO.raw_os_error()),
        ..Hooks::default()
    });
    let e = Options::new()
        .storage(storage)
        .allow_weak_filesystems(true)
        .write(&p, b"new")
        .unwrap_err();
    assert_eq!(e.state(), &State::CommittedNotDurable);
    assert_eq!(std::fs::read(&p).unwrap(), b"new");
    assert_eq!(e.step(), Step::IdentifyFilesystem);
    assert_eq!(
        e.io_error().raw_os_error(),
        Some(rustix::io::Errno::IO.raw_os_error())
    );
}

#[test]
fn failed_cleanup_reports_the_temp_left_behind() {
    let d = TempDir::new("cleanup");
    let p = d.join("f");
    std::fs::write(&p, b"old").unwrap();
    let storage = Hooked::new(Hooks {
        fail_sync: Some((1, rustix::io::Errno::IO.raw_os_error())),
        fail_unlink: Some(rustix::io::Errno::ROFS.raw_os_error()),
        ..Hooks::default()
    });
    let e = Options::new()
        .storage(storage)
        .write(&p, b"new")
        .unwrap_err();
    let State::NotCommittedTempLeft { temp } = e.state() else {
        panic!("wrong state {:?}", e.state());
    };
    assert!(temp.exists());
    assert_eq!(std::fs::read(&p).unwrap(), b"old");
    assert_eq!(fstx::recover(d.path()).unwrap().removed, vec![temp.clone()]);
    assert!(temps(d.path()).is_empty());
}

#[test]
fn weak_filesystems_are_refused_unless_accepted() {
    let d = TempDir::new("vfat");
    for magic in [0x4D44_u64, 0x6969] {
        let storage = Hooked::new(Hooks {
            fs_magic: Some(magic),
            ..Hooks::default()
        });
        let e = Options::new()
            .storage(storage.clone())
            .write(d.join("f"), b"x")
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported);
        assert!(!d.join("f").exists());
        Options::new()
            .storage(storage.clone())
            .allow_weak_filesystems(true)
            .write(d.join("f"), b"x")
            .unwrap();
        Options::new()
            .storage(storage)
            .durability(Durability::None)
            .write(d.join("f"), b"y")
            .unwrap();
        std::fs::remove_file(d.join("f")).unwrap();
    }
    assert!(temps(d.path()).is_empty());
}

#[test]
fn mount_disk_full_is_a_clear_error_and_keeps_the_old_content() {
    let fs = Tmpfs::new("enospc", "size=1m");
    let p = fs.join("f");
    fstx::write(&p, b"old").unwrap();
    let e = fstx::write(&p, vec![7u8; 2 << 20]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::StorageFull, "{e}");
    assert!(e.to_string().contains("not committed"), "{e}");
    let io: std::io::Error = e.into();
    assert_eq!(
        io.kind(),
        ErrorKind::StorageFull,
        "the kind survives the conversion"
    );
    let e = fstx::write(&p, vec![7u8; 2 << 20]).unwrap_err();
    assert_eq!(e.state(), &State::NotCommitted);
    assert_eq!(std::fs::read(&p).unwrap(), b"old");
    assert!(temps(fs.path()).is_empty());
}

#[test]
fn mount_read_only_filesystem_fails_clearly() {
    let fs = Tmpfs::new("rofs", "size=1m");
    std::fs::write(fs.join("f"), b"old").unwrap();
    assert!(std::process::Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(fs.path())
        .status()
        .unwrap()
        .success());
    let e = fstx::write(fs.join("f"), b"new").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ReadOnlyFilesystem);
    assert_eq!(e.state(), &State::NotCommitted);
    assert_eq!(std::fs::read(fs.join("f")).unwrap(), b"old");
}

#[test]
fn mount_target_through_symlinked_parent_on_another_filesystem() {
    let fs = Tmpfs::new("otherfs", "size=1m");
    let d = TempDir::new("linkparent");
    symlink(fs.path(), d.join("elsewhere")).unwrap();
    fstx::write(d.join("elsewhere/f"), b"there").unwrap();
    assert_eq!(std::fs::read(fs.join("f")).unwrap(), b"there");
    assert!(temps(fs.path()).is_empty());
}

fn xattr_set(p: &std::path::Path, name: &str, v: &[u8]) {
    rustix::fs::setxattr(p, name, v, rustix::fs::XattrFlags::empty()).unwrap();
}

fn xattr_get(p: &std::path::Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 4096];
    rustix::fs::getxattr(p, name, &mut buf[..]).ok().map(|n| {
        buf.truncate(n);
        buf
    })
}
