//! A filesystem image: inodes, directory entries, file data, metadata.
//!
//! The same type holds the simulator's live state (what processes see) and
//! its durable state (what survives a power cut), and every crash state the
//! explorer builds. It carries no persistence rules of its own; those are in
//! [`crate::model`].

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::hash::Hasher;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use fstx::storage::FileKind;

/// An inode number.
pub type Ino = u64;

/// The inode number of the root directory.
pub const ROOT: Ino = 1;

/// Owner, permissions and extended attributes of an inode.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Meta {
    /// Permission and set-id bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Extended attributes.
    pub xattrs: BTreeMap<OsString, Vec<u8>>,
}

/// What an inode holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// A regular file's bytes.
    File(Vec<u8>),
    /// A directory's entries (`.` and `..` not included).
    Dir(BTreeMap<OsString, Ino>),
    /// A symbolic link's target.
    Symlink(PathBuf),
    /// A FIFO, socket or device (no content).
    Special(FileKind),
}

/// One inode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inode {
    /// Owner, mode, xattrs.
    pub meta: Meta,
    /// Content.
    pub body: Body,
    /// The device (simulated filesystem) the inode lives on; renames and
    /// links across devices fail with `EXDEV`.
    pub dev: u64,
}

impl Inode {
    /// The kind of this inode.
    pub fn kind(&self) -> FileKind {
        match &self.body {
            Body::File(_) => FileKind::Regular,
            Body::Dir(_) => FileKind::Dir,
            Body::Symlink(_) => FileKind::Symlink,
            Body::Special(k) => *k,
        }
    }

    /// A directory's entries, if this is a directory.
    pub fn entries(&self) -> Option<&BTreeMap<OsString, Ino>> {
        match &self.body {
            Body::Dir(e) => Some(e),
            _ => None,
        }
    }

    /// A directory's entries, mutably.
    pub fn entries_mut(&mut self) -> Option<&mut BTreeMap<OsString, Ino>> {
        match &mut self.body {
            Body::Dir(e) => Some(e),
            _ => None,
        }
    }

    /// A file's data, if this is a regular file.
    pub fn data(&self) -> Option<&Vec<u8>> {
        match &self.body {
            Body::File(d) => Some(d),
            _ => None,
        }
    }

    /// A file's data, mutably.
    pub fn data_mut(&mut self) -> Option<&mut Vec<u8>> {
        match &mut self.body {
            Body::File(d) => Some(d),
            _ => None,
        }
    }
}

/// A whole filesystem image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tree {
    /// All inodes, reachable or not.
    pub inodes: BTreeMap<Ino, Inode>,
    /// The next inode number to hand out.
    pub next_ino: Ino,
}

impl Default for Tree {
    fn default() -> Tree {
        Tree::new()
    }
}

impl Tree {
    /// An image holding only an empty root directory (mode `0o755`, root-owned, device 1).
    pub fn new() -> Tree {
        let mut inodes = BTreeMap::new();
        inodes.insert(
            ROOT,
            Inode {
                meta: Meta {
                    mode: 0o755,
                    uid: 0,
                    gid: 0,
                    xattrs: BTreeMap::new(),
                },
                body: Body::Dir(BTreeMap::new()),
                dev: 1,
            },
        );
        Tree {
            inodes,
            next_ino: ROOT + 1,
        }
    }

    /// The inode `ino`. Panics if it does not exist (a simulator bug).
    pub fn get(&self, ino: Ino) -> &Inode {
        &self.inodes[&ino]
    }

    /// The inode `ino`, mutably.
    ///
    /// # Panics
    ///
    /// If it does not exist (a simulator bug).
    pub fn get_mut(&mut self, ino: Ino) -> &mut Inode {
        self.inodes.get_mut(&ino).expect("inode exists")
    }

    /// Adds an inode, returning its number.
    pub fn add(&mut self, inode: Inode) -> Ino {
        let ino = self.next_ino;
        self.next_ino += 1;
        self.inodes.insert(ino, inode);
        ino
    }

    /// Looks a name up in a directory.
    pub fn lookup(&self, dir: Ino, name: &OsStr) -> Option<Ino> {
        self.get(dir).entries()?.get(name).copied()
    }

    /// Resolves an absolute path, following symlinks everywhere (at most 40).
    /// `None` if anything along the way is missing.
    pub fn resolve(&self, path: &Path) -> Option<Ino> {
        self.resolve_from(ROOT, path, true, &mut 0)
    }

    fn resolve_from(
        &self,
        start: Ino,
        path: &Path,
        follow_last: bool,
        hops: &mut u32,
    ) -> Option<Ino> {
        use std::path::Component;
        let mut stack = vec![start];
        let comps: Vec<Component> = path.components().collect();
        for (i, comp) in comps.iter().enumerate() {
            let cur = *stack.last()?;
            match comp {
                Component::RootDir => stack = vec![ROOT],
                Component::CurDir | Component::Prefix(_) => {}
                Component::ParentDir => {
                    if stack.len() > 1 {
                        stack.pop();
                    }
                }
                Component::Normal(name) => {
                    let next = self.lookup(cur, name)?;
                    let last = i + 1 == comps.len();
                    if let Body::Symlink(target) = &self.get(next).body {
                        if !last || follow_last {
                            *hops += 1;
                            if *hops > 40 {
                                return None;
                            }
                            let to = self.resolve_from(cur, target, true, hops)?;
                            stack.push(to);
                            continue;
                        }
                    }
                    stack.push(next);
                }
            }
        }
        stack.last().copied()
    }

    /// The content of the regular file at `path` (symlinks followed), or
    /// `None` if there is none.
    pub fn read(&self, path: &Path) -> Option<&[u8]> {
        let ino = self.resolve(path)?;
        self.get(ino).data().map(Vec::as_slice)
    }

    /// Every reachable path with its inode, depth first, names sorted.
    pub fn walk(&self) -> Vec<(PathBuf, Ino)> {
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        self.walk_into(ROOT, &PathBuf::from("/"), &mut out, &mut seen);
        out
    }

    fn walk_into(
        &self,
        dir: Ino,
        path: &Path,
        out: &mut Vec<(PathBuf, Ino)>,
        seen: &mut std::collections::HashSet<Ino>,
    ) {
        if !seen.insert(dir) {
            return;
        }
        let Some(entries) = self.inodes.get(&dir).and_then(Inode::entries) else {
            return;
        };
        for (name, &ino) in entries {
            let p = path.join(name);
            out.push((p.clone(), ino));
            if self.inodes.get(&ino).is_some_and(|i| i.entries().is_some()) {
                self.walk_into(ino, &p, out, seen);
            }
        }
    }

    /// A copy holding only the inodes reachable from the root, and
    /// directory entries only to inodes that exist.
    #[must_use]
    pub fn reachable(&self) -> Tree {
        let mut keep = BTreeMap::new();
        let mut todo = vec![ROOT];
        while let Some(ino) = todo.pop() {
            if keep.contains_key(&ino) {
                continue;
            }
            let Some(inode) = self.inodes.get(&ino) else {
                continue;
            };
            let mut inode = inode.clone();
            if let Some(entries) = inode.entries_mut() {
                entries.retain(|_, child| self.inodes.contains_key(child));
                todo.extend(entries.values().copied());
            }
            keep.insert(ino, inode);
        }
        Tree {
            inodes: keep,
            next_ino: self.next_ino,
        }
    }

    /// Number of directory entries naming each reachable inode (a
    /// directory counts `.` and its subdirectories' `..` as Linux does).
    pub fn link_counts(&self) -> HashMap<Ino, u64> {
        let mut counts: HashMap<Ino, u64> = HashMap::new();
        counts.insert(ROOT, 2);
        for inode in self.inodes.values() {
            if let Some(entries) = inode.entries() {
                for child in entries.values() {
                    let is_dir = self
                        .inodes
                        .get(child)
                        .is_some_and(|c| c.entries().is_some());
                    *counts.entry(*child).or_insert(0) += if is_dir { 2 } else { 1 };
                }
            }
        }
        for (ino, inode) in &self.inodes {
            if let Some(entries) = inode.entries() {
                let subdirs = entries
                    .values()
                    .filter(|c| self.inodes.get(c).is_some_and(|c| c.entries().is_some()))
                    .count() as u64;
                *counts.entry(*ino).or_insert(0) += subdirs;
            }
        }
        counts
    }

    /// A hash of the reachable image that ignores inode numbers (hard links
    /// are kept apart by the order in which they are first met). Two images
    /// with the same hash are, for every check, the same crash state.
    pub fn image_hash(&self) -> u64 {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        let mut ids: HashMap<Ino, u64> = HashMap::new();
        self.hash_into(ROOT, &mut h, &mut ids);
        h.finish()
    }

    fn hash_into(&self, ino: Ino, h: &mut xxhash_rust::xxh3::Xxh3, ids: &mut HashMap<Ino, u64>) {
        if let Some(id) = ids.get(&ino) {
            h.write_u8(b'L');
            h.write_u64(*id);
            return;
        }
        let id = ids.len() as u64;
        ids.insert(ino, id);
        let Some(inode) = self.inodes.get(&ino) else {
            h.write_u8(b'?');
            return;
        };
        h.write_u32(inode.meta.mode);
        h.write_u32(inode.meta.uid);
        h.write_u32(inode.meta.gid);
        h.write_u64(inode.dev);
        h.write_usize(inode.meta.xattrs.len());
        for (k, v) in &inode.meta.xattrs {
            h.write_usize(k.len());
            h.write(k.as_bytes());
            h.write_usize(v.len());
            h.write(v);
        }
        match &inode.body {
            Body::File(d) => {
                h.write_u8(b'F');
                h.write_usize(d.len());
                h.write(d);
            }
            Body::Symlink(t) => {
                h.write_u8(b'S');
                h.write_usize(t.as_os_str().len());
                h.write(t.as_os_str().as_bytes());
            }
            Body::Special(k) => {
                h.write_u8(b'X');
                h.write_u8(*k as u8);
            }
            Body::Dir(entries) => {
                h.write_u8(b'D');
                h.write_usize(entries.len());
                for (name, child) in entries {
                    h.write_usize(name.len());
                    h.write(name.as_bytes());
                    self.hash_into(*child, h, ids);
                }
            }
        }
    }

    /// A readable listing of the reachable image, for failure reports.
    pub fn dump(&self) -> String {
        let mut out = String::new();
        for (path, ino) in self.walk() {
            let Some(inode) = self.inodes.get(&ino) else {
                let _ = writeln!(out, "  {} -> missing inode {ino}", path.display());
                continue;
            };
            let mode = inode.meta.mode;
            let _ = match &inode.body {
                Body::Dir(_) => writeln!(out, "  {}/  dir {mode:o} ino {ino}", path.display()),
                Body::Symlink(t) => {
                    writeln!(out, "  {} -> {}  ino {ino}", path.display(), t.display())
                }
                Body::Special(k) => writeln!(out, "  {}  {k:?}  ino {ino}", path.display()),
                Body::File(d) => writeln!(
                    out,
                    "  {}  file {mode:o} ino {ino} {}",
                    path.display(),
                    describe(d)
                ),
            };
        }
        out
    }
}

/// A short human description of some bytes: length and a printable prefix.
pub fn describe(data: &[u8]) -> String {
    let shown: String = data
        .iter()
        .take(32)
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                char::from(b).to_string()
            } else {
                format!("\\x{b:02x}")
            }
        })
        .collect();
    let more = if data.len() > 32 { "..." } else { "" };
    format!("{} bytes \"{shown}{more}\"", data.len())
}
