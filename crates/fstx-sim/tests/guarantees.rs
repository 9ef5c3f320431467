//! Guarantees of docs/design.md §1–§3 shown in the simulator, each the
//! second, independent test of a guarantee whose first test runs on the real
//! kernel (crates/fstx/tests), or the only test a real kernel cannot give
//! (a network filesystem). No crash exploration here: each test runs the
//! production protocol once on `SimFs` and checks the guarantee it names.

use std::ffi::OsStr;
use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;

use fstx::{Options, RecoverOptions, State, TxnOptions};
use fstx_sim::tree::Meta;
use fstx_sim::SimFs;

/// vfat/msdos (`MSDOS_SUPER_MAGIC`).
const VFAT_MAGIC: u64 = 0x4D44;
/// NFS (`NFS_SUPER_MAGIC`).
const NFS_MAGIC: u64 = 0x6969;

/// A `security.capability` value (v2, `cap_net_raw+ep`).
fn capability() -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&0x0200_0001u32.to_le_bytes()); // VFS_CAP_REVISION_2 | EFFECTIVE
    v.extend_from_slice(&(1u32 << 13).to_le_bytes()); // permitted: CAP_NET_RAW
    v.extend_from_slice(&0u32.to_le_bytes()); // inheritable
    v.extend_from_slice(&0u32.to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    v
}

fn meta(fs: &SimFs, path: &str) -> Meta {
    fs.with_live(|t| {
        let ino = t
            .resolve(Path::new(path))
            .unwrap_or_else(|| panic!("{path} missing"));
        t.get(ino).meta.clone()
    })
}

fn read(fs: &SimFs, path: &str) -> Vec<u8> {
    fs.with_live(|t| t.read(Path::new(path)).map(<[u8]>::to_vec))
        .unwrap_or_else(|| panic!("{path} missing"))
}

/// A root-run simulator with `/r/tool`: set-uid and set-gid, owned by
/// 4242:4343, a capability and a user xattr. (No ACL: the simulator does
/// not derive the group bits from an ACL's mask as Linux does; the
/// real-kernel `transaction_carries_xattrs_and_acls` carries one.)
fn privileged_tool() -> Arc<SimFs> {
    let fs = SimFs::new(1);
    fs.mkdir_p("/r").unwrap();
    fs.set_ids(4242, 4343);
    fs.put_file("/r/tool", b"old", 0o6750).unwrap();
    fs.set_ids(0, 0);
    fs.put_xattr("/r/tool", "security.capability", &capability())
        .unwrap();
    fs.put_xattr("/r/tool", "user.note", b"kept").unwrap();
    fs
}

/// §3 "Guarantee": a transaction carries owner, group, mode without set-id
/// bits and xattrs without `security.capability`, as the replace does.
#[test]
fn transaction_carries_metadata_like_the_replace_in_the_simulator() {
    let fs = privileged_tool();
    let mut o = TxnOptions::new();
    o.storage(fs.clone());
    let mut t = o.begin("/r").unwrap();
    t.write("tool", b"new").unwrap();
    t.commit().unwrap();
    assert_eq!(read(&fs, "/r/tool"), b"new");
    let m = meta(&fs, "/r/tool");
    assert_eq!((m.uid, m.gid), (4242, 4343), "owner and group carried");
    assert_eq!(m.mode, 0o750, "set-id bits dropped, the rest kept");
    assert_eq!(
        m.xattrs.get(OsStr::new("security.capability")),
        None,
        "capability dropped"
    );
    assert_eq!(
        m.xattrs.get(OsStr::new("user.note")).map(Vec::as_slice),
        Some(&b"kept"[..]),
        "user xattr carried"
    );

    // The same file through the single-file replace: the same metadata.
    let fs2 = privileged_tool();
    Options::new()
        .storage(fs2.clone())
        .write("/r/tool", b"new")
        .unwrap();
    let r = meta(&fs2, "/r/tool");
    assert_eq!((r.uid, r.gid, r.mode), (m.uid, m.gid, m.mode));
    assert_eq!(r.xattrs, m.xattrs, "the replace and the transaction agree");
}

/// §1 "set-id bits and `security.capability` dropped unless kept", the
/// second test (the first is the real-kernel
/// `set_id_bits_and_capabilities_dropped_unless_kept`).
#[test]
fn set_id_bits_dropped_by_the_replace_in_the_simulator() {
    let fs = privileged_tool();
    Options::new()
        .storage(fs.clone())
        .write("/r/tool", b"new")
        .unwrap();
    let m = meta(&fs, "/r/tool");
    assert_eq!(m.mode & 0o7000, 0, "set-id bits kept: {:o}", m.mode);
    assert_eq!(m.mode, 0o750);
    assert!(!m.xattrs.contains_key(OsStr::new("security.capability")));
    // Kept only when asked.
    let fs = privileged_tool();
    Options::new()
        .storage(fs.clone())
        .keep_privileges(true)
        .write("/r/tool", b"new")
        .unwrap();
    let m = meta(&fs, "/r/tool");
    assert_eq!(m.mode, 0o6750);
    assert!(m.xattrs.contains_key(OsStr::new("security.capability")));
}

/// §1 "owner, group, mode carried", the second test (the first is the
/// real-kernel `temp_file_is_never_wider_than_the_old_file`): the replace,
/// an update and a transaction each give the new file the old owner and group.
#[test]
fn owner_and_group_carried_in_the_simulator() {
    let setup = || {
        let fs = SimFs::new(2);
        fs.mkdir_p("/r").unwrap();
        fs.set_ids(4242, 4343);
        fs.put_file("/r/f", b"old", 0o640).unwrap();
        fs.set_ids(0, 0);
        fs
    };
    let check = |fs: &SimFs, how: &str| {
        assert_eq!(read(fs, "/r/f"), b"new", "{how}");
        let m = meta(fs, "/r/f");
        assert_eq!((m.uid, m.gid, m.mode), (4242, 4343, 0o640), "{how}");
    };
    let fs = setup();
    Options::new()
        .storage(fs.clone())
        .write("/r/f", b"new")
        .unwrap();
    check(&fs, "replace");

    let fs = setup();
    let mut u = fstx::UpdateOptions::new();
    let mut o = Options::new();
    o.storage(fs.clone());
    u.options(o).backup("~");
    u.update("/r/f", |_| Ok(Some(b"new".to_vec()))).unwrap();
    check(&fs, "update");

    let fs = setup();
    let mut o = TxnOptions::new();
    o.storage(fs.clone());
    let mut t = o.begin("/r").unwrap();
    t.write("f", b"new").unwrap();
    t.commit().unwrap();
    check(&fs, "transaction");
}

/// §3 "begin: refuse vfat/exfat/network filesystems (unless allowed)".
/// A real kernel cannot give this test an NFS mount; the simulator reports
/// each magic.
#[test]
fn transactions_on_vfat_and_nfs_are_refused_in_the_simulator() {
    for (name, magic) in [("vfat", VFAT_MAGIC), ("nfs", NFS_MAGIC)] {
        let fs = SimFs::new(3);
        fs.mkdir_p("/r").unwrap();
        fs.put_file("/r/a", b"old", 0o644).unwrap();
        fs.set_fs_magic(magic);
        let before = fs.live_hash();
        let mut o = TxnOptions::new();
        o.storage(fs.clone());
        let Err(e) = o.begin("/r") else {
            panic!("{name}: begin did not refuse a filesystem it read as {magic:#x}")
        };
        assert_eq!(e.kind(), std::io::ErrorKind::Unsupported, "{name}: {e}");
        assert_eq!(*e.state(), State::NotCommitted, "{name}: {e}");
        assert_eq!(fs.live_hash(), before, "{name}: begin changed the tree");
        // Accepted when asked, and then it works.
        o.allow_weak_filesystems(true);
        let mut t = o.begin("/r").unwrap();
        t.write("a", b"new").unwrap();
        t.commit().unwrap();
        assert_eq!(read(&fs, "/r/a"), b"new", "{name}");
    }
}

/// §1 "Stale temporary files": recovery never removes a live writer's
/// temporary file, the second test (the first is the real-kernel
/// `succeeds_beside_stale_temps_and_recover_removes_them`): a writer holds
/// its temporary file open in the simulator while recovery runs; the file
/// survives, the writer commits, and once it is gone nothing is left.
#[test]
fn recovery_spares_a_live_writers_temp_file_in_the_simulator() {
    let fs = SimFs::new(4);
    fs.mkdir_p("/r").unwrap();
    fs.put_file("/r/f", b"old", 0o644).unwrap();
    // A stale temp of a dead writer: recovery removes it.
    fs.put_file("/r/.fstx-tmp.00000000000000aa.f", b"dead", 0o600)
        .unwrap();
    let mut o = Options::new();
    o.storage(fs.clone());
    let mut live = o.open("/r/f").unwrap();
    live.write_all(b"new from a live writer").unwrap();
    let temp = live.temp_path();
    let temp_name = temp.file_name().unwrap().to_os_string();
    let mut ro = RecoverOptions::new();
    ro.storage(fs.clone());
    let rep = ro.recover("/r").unwrap();
    assert!(
        fs.with_live(|t| t.resolve(&temp).is_some()),
        "recovery removed a live writer's temp file"
    );
    assert_eq!(rep.in_use.len(), 1, "{rep:?}");
    assert!(rep.in_use[0].ends_with(&temp_name), "{rep:?}");
    assert_eq!(rep.removed.len(), 1, "{rep:?}");
    assert!(rep.removed[0].ends_with(".fstx-tmp.00000000000000aa.f"));
    live.commit().unwrap();
    assert_eq!(read(&fs, "/r/f"), b"new from a live writer");
    let rep = ro.recover("/r").unwrap();
    assert!(rep.is_empty(), "{rep:?}");
}
