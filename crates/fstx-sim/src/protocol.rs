//! What a crash state means to recovery and to readers: its protocol key.
//!
//! Two crash images that differ only in how much of a temporary file
//! survived, in the random part of a temporary or staged name, or in a lock
//! file, are the same situation for fstx: recovery removes temporary files
//! without reading them, and never looks at random name parts. The
//! [`protocol_key`] of a crash image keeps what recovery or a reader looks
//! at, and nothing else:
//!
//! - every file the workload tracks (targets and backups): absent, which of
//!   its complete versions (by position in its history: initial, first
//!   write, ...), or torn; with its mode, owner, group and extended
//!   attributes, and which other tracked paths share its inode;
//! - every other file or directory outside fstx's own names: its path,
//!   kind and a hash of its content;
//! - the journal state of each transaction root: no journal, or its kind
//!   and sequence number (or "damaged"), and the retired journal's sequence;
//! - each staged file: the name it stages for, where, and whether it is
//!   intact (its length and CRC-32C match the commit record);
//! - each temporary file: the name it was made for, where (content ignored).
//!
//! Random payloads do not make seeds distinct: versions are named by their
//! position, not their bytes. The explorer counts distinct keys as
//! protocol-distinct crash states, and checks a state only when its key (with
//! what the workload expects at that point) is new.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use fstx::txn::journal::{Kind, Op, Record};
use fstx::InternalName;

use crate::history::History;
use crate::tree::{Body, Ino, Tree};

/// A hasher over the parts of a key (xxh3, streaming).
struct Key(xxhash_rust::xxh3::Xxh3);

impl Key {
    fn new() -> Key {
        Key(xxhash_rust::xxh3::Xxh3::new())
    }

    fn part(&mut self, bytes: &[u8]) {
        self.0.update(&(bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
    }

    fn num(&mut self, n: u64) {
        self.0.update(&n.to_le_bytes());
    }

    fn path(&mut self, p: &Path) {
        self.part(p.as_os_str().as_encoded_bytes());
    }
}

/// What the protocol key needs from a workload's history, computed once per
/// exploration: for each tracked path (targets and backups), the versions
/// it may hold, by content hash, in history order (a backup's own initial
/// content, its source's initial content, then what each operation wrote
/// to the source).
#[derive(Debug, Default)]
pub struct Versions(HashMap<PathBuf, Vec<Option<u64>>>);

impl Versions {
    /// The versions of every path `history` tracks.
    pub fn of(history: &History) -> Versions {
        let hash = |c: &Option<Vec<u8>>| c.as_deref().map(xxhash_rust::xxh3::xxh3_64);
        let mut out = HashMap::new();
        for path in history.initial.keys().chain(history.versions_of.keys()) {
            let (source, own) = match history.versions_of.get(path) {
                Some((source, own)) => (source.as_path(), Some(hash(own))),
                None => (path.as_path(), None),
            };
            let mut v: Vec<Option<u64>> = own.into_iter().collect();
            v.push(history.initial.get(source).and_then(hash));
            for op in &history.ops {
                for (p, c) in &op.writes {
                    if p == source {
                        v.push(hash(c));
                    }
                }
            }
            out.insert(path.clone(), v);
        }
        Versions(out)
    }
}

/// The protocol key of crash image `tree` for a workload with `history`.
/// See the [module docs](self).
pub fn protocol_key(tree: &Tree, versions: &Versions) -> u64 {
    let mut key = Key::new();
    let walk = tree.walk();
    // Inodes numbered by first appearance among the paths fstx does not own.
    let mut inode_order: HashMap<Ino, u64> = HashMap::new();
    let mut journals: BTreeMap<PathBuf, Option<Record>> = BTreeMap::new();
    for (path, ino) in &walk {
        let name = path.file_name().unwrap_or_default();
        let kind = fstx::internal_name(name);
        if kind.is_none() {
            let n = inode_order.len() as u64;
            inode_order.entry(*ino).or_insert(n);
        }
        if kind == Some(InternalName::Control) {
            let journal = tree.read(&path.join("journal")).map(Record::decode);
            let record = journal.as_ref().and_then(|j| j.as_ref().ok()).cloned();
            key.path(path);
            match journal {
                None => key.part(b"no journal"),
                Some(Ok(r)) => {
                    key.part(if r.kind == Kind::Commit {
                        b"COMMIT"
                    } else {
                        b"BEGIN"
                    });
                    key.num(r.seq);
                }
                Some(Err(_)) => key.part(b"damaged journal"),
            }
            match tree.read(&path.join("retired")).map(Record::decode) {
                Some(Ok(r)) => key.num(r.seq),
                Some(Err(_)) => key.part(b"damaged retired"),
                None => key.part(b"no retired"),
            }
            journals.insert(
                path.parent().unwrap_or(Path::new("/")).to_path_buf(),
                record,
            );
        }
    }
    for (path, ino) in &walk {
        let name = path.file_name().unwrap_or_default();
        let parent = path.parent().unwrap_or(Path::new("/"));
        match fstx::internal_name(name) {
            // Lock files: never removed, never read. The control directory:
            // its journal state is above; its own files are not the tree's.
            Some(InternalName::Lock | InternalName::Control) => {}
            Some(InternalName::Temp) => {
                key.part(b"temp");
                key.path(parent);
                key.part(fstx::internal_target(name).map_or(&[][..], OsStr::as_encoded_bytes));
            }
            Some(InternalName::Staged) => {
                key.part(b"staged");
                key.path(parent);
                key.part(fstx::internal_target(name).map_or(&[][..], OsStr::as_encoded_bytes));
                let intact = staged_intact(tree, &journals, path, name);
                key.part(match intact {
                    Some(true) => b"intact",
                    Some(false) => b"damaged",
                    None => b"no record",
                });
            }
            _ if path.ancestors().any(|a| {
                a.file_name()
                    .is_some_and(|n| fstx::internal_name(n) == Some(InternalName::Control))
            }) => {}
            _ => {
                key.path(path);
                let inode = tree.get(*ino);
                let meta = &inode.meta;
                key.num(u64::from(meta.mode));
                key.num(u64::from(meta.uid));
                key.num(u64::from(meta.gid));
                for (n, v) in &meta.xattrs {
                    key.part(n.as_encoded_bytes());
                    key.part(v);
                }
                key.num(inode_order.get(ino).copied().unwrap_or(u64::MAX));
                match &inode.body {
                    Body::File(data) => {
                        let h = xxhash_rust::xxh3::xxh3_64(data);
                        if let Some(v) = versions.0.get(path) {
                            match v.iter().position(|x| *x == Some(h)) {
                                Some(i) => {
                                    key.part(b"version");
                                    key.num(i as u64);
                                }
                                None => key.part(b"torn"),
                            }
                        } else {
                            key.part(b"file");
                            key.num(h);
                        }
                    }
                    Body::Dir(_) => key.part(b"dir"),
                    Body::Symlink(t) => {
                        key.part(b"symlink");
                        key.path(t);
                    }
                    Body::Special(_) => key.part(b"special"),
                }
            }
        }
    }
    // A tracked path that is absent is a state too.
    let mut tracked: Vec<&PathBuf> = versions.0.keys().collect();
    tracked.sort();
    for path in tracked {
        if tree.resolve(path).is_none() {
            key.path(path);
            key.part(b"absent");
        }
    }
    key.0.digest()
}

/// Whether a staged file matches what the commit record of its root says
/// (`None`: no readable commit record names it).
fn staged_intact(
    tree: &Tree,
    journals: &BTreeMap<PathBuf, Option<Record>>,
    path: &Path,
    name: &OsStr,
) -> Option<bool> {
    let data = tree.read(path)?;
    let record = journals
        .iter()
        .filter(|(root, _)| path.starts_with(root))
        .max_by_key(|(root, _)| root.as_os_str().len())?
        .1
        .as_ref()?;
    record.ops.iter().find_map(|op| match op {
        Op::Put {
            stage_name,
            len,
            crc,
            ..
        } if stage_name.as_os_str() == name => {
            Some(data.len() as u64 == *len && crc32c::crc32c(data) == *crc)
        }
        _ => None,
    })
}
