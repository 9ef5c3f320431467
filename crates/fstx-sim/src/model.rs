//! The persistence model: what a power cut may leave behind.
//!
//! The simulator keeps two things: the **durable** image (what survives for
//! sure) and the **pending** changes, in the order they were made, that are
//! not yet covered by a flush. Every change belongs to one *stream*:
//!
//! - `Inode(ino)`: a file's data and an inode's metadata (writes, truncation,
//!   mode, owner, xattrs);
//! - `Entry(dir, name)`: one name in one directory (create, link, unlink, and
//!   each half of a rename).
//!
//! # Rules of the weakest model ([`Profile::Weak`], the default)
//!
//! After ALICE (OSDI 2014) and `../shared/CRASH-SAFETY.md`:
//!
//! 1. **Streams are independent.** After a crash each stream keeps any
//!    prefix of its pending changes, whatever the other streams keep. So
//!    unsynced directory entries survive or vanish independently of one
//!    another and of file data.
//! 2. **One stream is not reordered.** The history of one name, or of one
//!    file's data, is seen up to some point, never with a hole.
//! 3. **Data may be torn.** The last kept write of a file may be kept only in
//!    part (its first half), and a write that grew the file may leave only the
//!    growth: the new region reads as zeros.
//! 4. **A rename may be split, one way.** `rename(a, b)` is two changes:
//!    `b := inode` and `a := nothing`. The new name may survive while the old
//!    one also does (two names for one inode), or neither may survive (the
//!    destination keeps its previous file), but the old name is never lost
//!    while the new one is too: the removal of `a` survives only with `b`,
//!    and with the still-pending entries that make `b`'s directory reachable
//!    (a rename into a directory created but not yet flushed never leaves
//!    the file without a reachable name). Under a literal reading of ALICE
//!    (every entry independent) it could; no journaled Linux filesystem does.
//! 5. **A flush is a barrier for what it covers.** `fsync` of a file makes its
//!    `Inode` stream durable; `fsync` of a directory makes every `Entry`
//!    stream of that directory (and its own metadata) durable; `syncfs` makes
//!    everything durable. A rename's two halves are made durable together.
//!    `fdatasync` is treated as `fsync`.
//! 6. **A failed file flush loses the data** ("clean but lost", Linux ≥ 4.13):
//!    the pending changes of that file are dropped, never to become durable,
//!    while the live file still shows them; the next flush succeeds. A failed
//!    directory flush leaves its changes pending (they may or may not survive).
//!
//! # Stricter profiles
//!
//! - [`Profile::Ordered`], like ext4 `data=ordered`: metadata changes (names,
//!   sizes, modes) survive as a prefix in issue order, like a journal; file
//!   data written before a surviving metadata change survives with it, later
//!   data is lost; nothing is torn. A flush also commits all earlier
//!   metadata, as ext4's journal commit does.
//! - [`Profile::Prefix`]: a prefix of all changes in issue order survives; a
//!   flush commits everything before it. (A perfectly ordered filesystem.)
//!
//! # A weaker profile: btrfs's directory-flush race
//!
//! - [`Profile::BtrfsDirRace`]: the weak model on a filesystem that reports
//!   btrfs's `statfs` magic, where a directory flush returns success and
//!   persists nothing; only `syncfs` makes names durable. It is the worst
//!   case of a race recorded on btrfs (Linux 6.18): `fsync` of a directory
//!   returns at once, with its log not yet on disk, when another process
//!   logged the same directory in the first log transaction of a new btrfs
//!   transaction while the previous one is still being committed
//!   (`docs/design.md` §6).

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsString;

use crate::rng::Rng;
use crate::tree::{Body, Ino, Meta, Tree};

/// Which persistence model the simulator follows. See the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum Profile {
    /// The weakest model worth simulating (default).
    #[default]
    Weak,
    /// ext4 `data=ordered`-like: metadata in order, data before metadata.
    Ordered,
    /// Everything in issue order.
    Prefix,
    /// Weak, on "btrfs" (`fs_type` reports btrfs, so fstx takes its btrfs
    /// paths), with directory flushes that work.
    Btrfs,
    /// Weak, on "btrfs", with directory flushes that persist nothing.
    BtrfsDirRace,
    /// Weak, and a write may also be torn at 512-byte sectors: the last
    /// kept write of a file keeps only some of its sectors (every other
    /// one, all but the first, only the first, all but the last), as a
    /// disk without atomic multi-sector writes leaves it. For the two-slot
    /// records and verified files (`--torn` of powercut, in memory).
    TornSectors,
}

impl Profile {
    /// Parses `weak`, `ordered`, `prefix` or `btrfs-dir-race`.
    pub fn parse(s: &str) -> Option<Profile> {
        match s {
            "weak" => Some(Profile::Weak),
            "ordered" => Some(Profile::Ordered),
            "prefix" => Some(Profile::Prefix),
            "btrfs" => Some(Profile::Btrfs),
            "btrfs-dir-race" => Some(Profile::BtrfsDirRace),
            "torn-sectors" => Some(Profile::TornSectors),
            _ => None,
        }
    }

    /// The name [`parse`](Self::parse) reads.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Weak => "weak",
            Profile::Ordered => "ordered",
            Profile::Prefix => "prefix",
            Profile::Btrfs => "btrfs",
            Profile::BtrfsDirRace => "btrfs-dir-race",
            Profile::TornSectors => "torn-sectors",
        }
    }

    /// Whether `fs_type` reports btrfs under this profile.
    pub fn is_btrfs(self) -> bool {
        matches!(self, Profile::Btrfs | Profile::BtrfsDirRace)
    }
}

/// Which kernel the simulator behaves as, where fstx's choices depend on it
/// (answered through [`fstx::storage::Storage::caps`]): what `syncfs`
/// reports when it fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum Kernel {
    /// Linux >= 5.17 (default): `syncfs` reports writeback errors and the
    /// filesystem's own sync errors (a failed btrfs commit).
    #[default]
    Current,
    /// Linux 5.8 to 5.16: `syncfs` reports writeback errors, but a failed
    /// btrfs transaction commit returns success.
    Linux5_10,
    /// Linux before 5.8: a failed `syncfs` returns success.
    Linux5_4,
}

impl Kernel {
    /// Every variant.
    pub const ALL: [Kernel; 3] = [Kernel::Current, Kernel::Linux5_10, Kernel::Linux5_4];

    /// Parses [`name`](Self::name).
    pub fn parse(s: &str) -> Option<Kernel> {
        Kernel::ALL.into_iter().find(|k| k.name() == s)
    }

    /// `current`, `5.10` or `5.4`.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Current => "current",
            Kernel::Linux5_10 => "5.10",
            Kernel::Linux5_4 => "5.4",
        }
    }

    /// The capabilities the simulator reports: this kernel's, without
    /// concurrent flushes (the simulator needs one call order).
    pub fn caps(self) -> fstx::storage::Caps {
        let (major, minor) = match self {
            Kernel::Current => (6, 1),
            Kernel::Linux5_10 => (5, 10),
            Kernel::Linux5_4 => (5, 4),
        };
        fstx::storage::Caps::linux(major, minor).concurrent_flushes(false)
    }

    /// Whether a failed `syncfs` returns its error, on a filesystem that is
    /// btrfs or not: on btrfs the failure is the transaction commit's (a
    /// filesystem sync error), elsewhere a writeback error.
    pub fn syncfs_reports_failure(self, btrfs: bool) -> bool {
        let caps = self.caps();
        if btrfs {
            caps.syncfs_reports_fs_errors
        } else {
            caps.syncfs_reports_writeback_errors
        }
    }
}

/// What a change belongs to; see the [module docs](self).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stream {
    /// A file's data and an inode's metadata.
    Inode(Ino),
    /// One name in one directory.
    Entry(Ino, OsString),
}

/// One change to the durable image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// `pwrite`.
    Write {
        /// Offset.
        offset: u64,
        /// Bytes written.
        bytes: Vec<u8>,
    },
    /// `ftruncate`.
    SetLen(u64),
    /// New owner, mode or xattrs (the whole metadata after the change).
    Meta(Meta),
    /// The name now refers to this inode, or to nothing.
    Link(Option<Ino>),
}

impl Change {
    fn is_data(&self) -> bool {
        matches!(self, Change::Write { .. })
    }
}

/// A pending change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    id: u64,
    stream: Stream,
    change: Change,
    /// This change survives only if the changes with these ids do (rule 4).
    requires: Vec<u64>,
}

/// How much of the last kept write of a file stream survives (rule 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Tear {
    /// All of it.
    Full,
    /// Its first half; growth beyond that reads as zeros.
    Half,
    /// Only the growth, as zeros.
    Zeros,
    /// Some of its 512-byte sectors ([`Profile::TornSectors`]): pattern 0
    /// keeps the even sectors, 1 the odd ones, 2 all but the first, 3 only
    /// the first, 4 all but the last.
    Sectors(u8),
}

/// The sector size of [`Tear::Sectors`].
const SECTOR: u64 = 512;

/// The durable image plus the pending changes.
#[derive(Debug, Clone, Default)]
pub struct Persist {
    /// What survives for sure.
    pub durable: Tree,
    pending: Vec<Op>,
    next_id: u64,
}

impl Persist {
    /// Starts from a fully durable image.
    pub fn new(durable: Tree) -> Persist {
        Persist {
            durable,
            pending: Vec::new(),
            next_id: 0,
        }
    }

    /// Number of pending changes.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// A new inode exists (with no name yet): durable at once, since an
    /// inode nobody names is invisible after a crash anyway.
    pub fn create_inode(&mut self, ino: Ino, inode: crate::tree::Inode) {
        self.durable.inodes.insert(ino, inode);
        self.durable.next_ino = self.durable.next_ino.max(ino + 1);
    }

    /// The pending change that last linked `ino` into a directory, if any.
    pub fn pending_link_of(&self, ino: Ino) -> Option<u64> {
        self.pending
            .iter()
            .rev()
            .find(|op| op.change == Change::Link(Some(ino)))
            .map(|op| op.id)
    }

    /// Records a change; returns its id.
    pub fn record(&mut self, stream: Stream, change: Change, requires: Vec<u64>) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.pending.push(Op {
            id,
            stream,
            change,
            requires,
        });
        id
    }

    /// A successful flush of `streams` (rule 5; stricter profiles commit more).
    pub fn flush(&mut self, profile: Profile, covers: &dyn Fn(&Stream) -> bool) {
        let Some(last) = self.pending.iter().rposition(|op| covers(&op.stream)) else {
            return;
        };
        let mut keep = vec![false; self.pending.len()];
        match profile {
            Profile::Weak | Profile::Btrfs | Profile::BtrfsDirRace | Profile::TornSectors => {
                for (i, op) in self.pending.iter().enumerate() {
                    if covers(&op.stream) {
                        keep[i] = true;
                    }
                }
            }
            Profile::Ordered => {
                // Everything covered, plus all metadata before the flush and
                // the data written before that metadata.
                for (i, op) in self.pending.iter().enumerate() {
                    if covers(&op.stream) || (i <= last && !op.change.is_data()) {
                        keep[i] = true;
                    }
                }
                if let Some(m) = (0..=last)
                    .rev()
                    .find(|&i| keep[i] && !self.pending[i].change.is_data())
                {
                    keep[..m].iter_mut().for_each(|k| *k = true);
                }
            }
            Profile::Prefix => keep[..=last].iter_mut().for_each(|k| *k = true),
        }
        self.close_over(&mut keep);
        self.apply_kept(&keep);
    }

    /// A flush that failed: the file's pending changes are lost (rule 6).
    pub fn flush_failed(&mut self, stream: &Stream) {
        if matches!(stream, Stream::Inode(_)) {
            self.pending.retain(|op| &op.stream != stream);
        }
    }

    /// A failed `syncfs`: every file's pending data and metadata is lost
    /// (written back and failed, so never written again, as with
    /// [`flush_failed`](Self::flush_failed)); names stay pending.
    /// Returns the inodes that lost something.
    pub fn flush_all_failed(&mut self) -> Vec<Ino> {
        let mut lost: Vec<Ino> = self
            .pending
            .iter()
            .filter_map(|op| match op.stream {
                Stream::Inode(ino) => Some(ino),
                Stream::Entry(..) => None,
            })
            .collect();
        lost.sort_unstable();
        lost.dedup();
        self.pending
            .retain(|op| !matches!(op.stream, Stream::Inode(_)));
        lost
    }

    /// Everything becomes durable (`syncfs`).
    pub fn flush_all(&mut self) {
        let keep = vec![true; self.pending.len()];
        self.apply_kept(&keep);
    }

    /// Where each pending change is in `pending`, by its id.
    fn index_by_id(&self) -> BTreeMap<u64, usize> {
        self.pending
            .iter()
            .enumerate()
            .map(|(i, op)| (op.id, i))
            .collect()
    }

    /// Adds to `keep` whatever kept changes need: earlier changes of the same
    /// stream (rule 2) and the other half of a rename (rule 4).
    fn close_over(&self, keep: &mut [bool]) {
        let index = self.index_by_id();
        loop {
            let mut changed = false;
            for i in (0..self.pending.len()).rev() {
                if !keep[i] {
                    continue;
                }
                let stream = &self.pending[i].stream;
                for (k, op) in keep[..i].iter_mut().zip(&self.pending) {
                    if !*k && op.stream == *stream {
                        *k = true;
                        changed = true;
                    }
                }
                for r in self.pending[i].requires.iter().filter_map(|r| index.get(r)) {
                    if !keep[*r] {
                        keep[*r] = true;
                        changed = true;
                    }
                }
            }
            if !changed {
                break;
            }
        }
    }

    fn apply_kept(&mut self, keep: &[bool]) {
        let pending = std::mem::take(&mut self.pending);
        for (op, k) in pending.into_iter().zip(keep) {
            if *k {
                apply(&mut self.durable, &op, Tear::Full);
            } else {
                self.pending.push(op);
            }
        }
    }

    /// The crash states this point allows: every one when there are at most
    /// `limit`, otherwise `limit` of them drawn with `rng` (always including
    /// "nothing pending survived" and "everything survived"). Each image holds
    /// only what is reachable from the root.
    ///
    /// # Panics
    ///
    /// Never for a consistent state (the choice lists are never empty).
    pub fn crash_states(&self, profile: Profile, limit: usize, rng: &mut Rng) -> Vec<Tree> {
        if self.pending.is_empty() {
            return vec![self.durable.reachable()];
        }
        let choices = match profile {
            Profile::Weak | Profile::Btrfs | Profile::BtrfsDirRace => {
                self.weak_choices(limit, rng, false)
            }
            Profile::TornSectors => self.weak_choices(limit, rng, true),
            Profile::Ordered => self.ordered_choices(),
            Profile::Prefix => (0..=self.pending.len())
                .map(|n| {
                    (0..self.pending.len())
                        .map(|i| (i < n).then_some(Tear::Full))
                        .collect()
                })
                .collect(),
        };
        let mut choices = choices;
        if choices.len() > limit {
            // Keep both extremes, sample the rest.
            let last = choices.pop().expect("non-empty");
            let first = choices.swap_remove(0);
            rng.shuffle(&mut choices);
            choices.truncate(limit.saturating_sub(2));
            choices.insert(0, first);
            choices.push(last);
        }
        choices.iter().map(|keep| self.build(keep)).collect()
    }

    /// Builds the image where pending change `i` survives as `keep[i]`.
    fn build(&self, keep: &[Option<Tear>]) -> Tree {
        let mut tree = self.durable.clone();
        for (op, k) in self.pending.iter().zip(keep) {
            if let Some(tear) = k {
                apply(&mut tree, op, *tear);
            }
        }
        tree.reachable()
    }

    /// Rule 1–4: per stream, a prefix (with tearing of its last write);
    /// combinations across streams, filtered by the rename rule.
    fn weak_choices(&self, limit: usize, rng: &mut Rng, sectors: bool) -> Vec<Vec<Option<Tear>>> {
        // Streams in order of first appearance, with their op indices.
        let mut streams: Vec<(Stream, Vec<usize>)> = Vec::new();
        for (i, op) in self.pending.iter().enumerate() {
            match streams.iter_mut().find(|(s, _)| *s == op.stream) {
                Some((_, v)) => v.push(i),
                None => streams.push((op.stream.clone(), vec![i])),
            }
        }
        // Per stream: its variants as (prefix length, tear of the last op).
        let variants: Vec<Vec<(usize, Tear)>> = streams
            .iter()
            .map(|(stream, ops)| self.stream_variants(stream, ops, sectors))
            .collect();
        let total = variants
            .iter()
            .try_fold(1usize, |acc, v| acc.checked_mul(v.len()))
            .unwrap_or(usize::MAX);
        let index = self.index_by_id();
        let to_keep = |pick: &[usize]| -> Option<Vec<Option<Tear>>> {
            let mut keep = vec![None; self.pending.len()];
            for (s, &p) in pick.iter().enumerate() {
                let (n, tear) = variants[s][p];
                let ops = &streams[s].1;
                for (j, &i) in ops.iter().take(n).enumerate() {
                    keep[i] = Some(if j + 1 == n { tear } else { Tear::Full });
                }
            }
            for (i, op) in self.pending.iter().enumerate() {
                if keep[i].is_some() {
                    for r in op.requires.iter().filter_map(|r| index.get(r)) {
                        keep[*r]?;
                    }
                }
            }
            Some(keep)
        };
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        if total <= limit.saturating_mul(2) {
            let mut pick = vec![0usize; variants.len()];
            loop {
                if let Some(keep) = to_keep(&pick) {
                    out.push(keep);
                }
                // Mixed-radix increment.
                let mut s = 0;
                loop {
                    if s == pick.len() {
                        return out;
                    }
                    pick[s] += 1;
                    if pick[s] < variants[s].len() {
                        break;
                    }
                    pick[s] = 0;
                    s += 1;
                }
            }
        }
        // Too many: nothing, everything, then a seeded sample.
        let none = vec![0usize; variants.len()];
        let all: Vec<usize> = variants.iter().map(|v| v.len() - 1).collect();
        for pick in [none, all] {
            if seen.insert(pick.clone()) {
                if let Some(keep) = to_keep(&pick) {
                    out.push(keep);
                }
            }
        }
        let mut attempts = 0;
        while out.len() < limit && attempts < limit * 8 {
            attempts += 1;
            let pick: Vec<usize> = variants.iter().map(|v| rng.below(v.len())).collect();
            if seen.insert(pick.clone()) {
                if let Some(keep) = to_keep(&pick) {
                    out.push(keep);
                }
            }
        }
        // The "everything survived" state last, as `crash_states` expects.
        if let Some(pos) = out
            .iter()
            .position(|k| k.iter().all(|t| *t == Some(Tear::Full)))
        {
            let all = out.remove(pos);
            out.push(all);
        }
        out
    }

    fn stream_variants(&self, stream: &Stream, ops: &[usize], sectors: bool) -> Vec<(usize, Tear)> {
        let mut out = vec![(0, Tear::Full)];
        // Track the file's size to know which writes grew it.
        let mut size = match stream {
            Stream::Inode(ino) => self
                .durable
                .inodes
                .get(ino)
                .and_then(|i| i.data())
                .map_or(0, |d| d.len() as u64),
            Stream::Entry(..) => 0,
        };
        for (j, &i) in ops.iter().enumerate() {
            let n = j + 1;
            match &self.pending[i].change {
                Change::Write { offset, bytes } => {
                    let end = offset + bytes.len() as u64;
                    if bytes.len() >= 2 {
                        out.push((n, Tear::Half));
                    }
                    if end > size {
                        out.push((n, Tear::Zeros));
                    }
                    // Torn at sectors: only for writes spanning several.
                    if sectors && end.div_ceil(SECTOR) - offset / SECTOR >= 2 {
                        out.extend((0..5).map(|p| (n, Tear::Sectors(p))));
                    }
                    size = size.max(end);
                }
                Change::SetLen(len) => size = *len,
                _ => {}
            }
            out.push((n, Tear::Full));
        }
        out
    }

    /// Ordered profile: a metadata prefix, data before the last kept metadata.
    fn ordered_choices(&self) -> Vec<Vec<Option<Tear>>> {
        let meta: Vec<usize> = (0..self.pending.len())
            .filter(|&i| !self.pending[i].change.is_data())
            .collect();
        let mut out = Vec::new();
        for m in 0..=meta.len() {
            // Keep the first m metadata changes and all data before the m-th.
            let data_before = if m == 0 { 0 } else { meta[m - 1] };
            let keep = (0..self.pending.len())
                .map(|i| {
                    let op = &self.pending[i];
                    let kept = if op.change.is_data() {
                        i < data_before
                    } else {
                        meta[..m].contains(&i)
                    };
                    kept.then_some(Tear::Full)
                })
                .collect();
            out.push(keep);
        }
        out.push(vec![Some(Tear::Full); self.pending.len()]);
        out
    }
}

/// Applies one change to an image.
fn apply(tree: &mut Tree, op: &Op, tear: Tear) {
    match (&op.stream, &op.change) {
        (Stream::Inode(ino), Change::Write { offset, bytes }) => {
            let Some(data) = tree.inodes.get_mut(ino).and_then(|i| i.data_mut()) else {
                return;
            };
            let offset = *offset as usize;
            let end = offset + bytes.len();
            let old_len = data.len();
            if data.len() < end {
                data.resize(end, 0);
            }
            let kept = match tear {
                Tear::Full => bytes.len(),
                Tear::Half => bytes.len() / 2,
                Tear::Zeros => 0,
                Tear::Sectors(pattern) => {
                    let first = offset as u64 / SECTOR;
                    let last = (end as u64 - 1) / SECTOR;
                    for sector in first..=last {
                        let j = sector - first;
                        let keep = match pattern {
                            0 => j % 2 == 0,
                            1 => j % 2 == 1,
                            2 => j != 0,
                            3 => j == 0,
                            _ => sector != last,
                        };
                        if keep {
                            let a = (sector * SECTOR).max(offset as u64) as usize;
                            let b = ((sector + 1) * SECTOR).min(end as u64) as usize;
                            data[a..b].copy_from_slice(&bytes[a - offset..b - offset]);
                        }
                    }
                    0
                }
            };
            data[offset..offset + kept].copy_from_slice(&bytes[..kept]);
            // Growth beyond what was kept reads as zeros (already zero from resize),
            // but the part of an overwrite that was not kept keeps the old bytes.
            let _ = old_len;
        }
        (Stream::Inode(ino), Change::SetLen(len)) => {
            if let Some(data) = tree.inodes.get_mut(ino).and_then(|i| i.data_mut()) {
                data.resize(*len as usize, 0);
            }
        }
        (Stream::Inode(ino), Change::Meta(meta)) => {
            if let Some(inode) = tree.inodes.get_mut(ino) {
                inode.meta = meta.clone();
            }
        }
        (Stream::Entry(dir, name), Change::Link(target)) => {
            let Some(Body::Dir(entries)) = tree.inodes.get_mut(dir).map(|i| &mut i.body) else {
                return;
            };
            match target {
                Some(ino) => {
                    entries.insert(name.clone(), *ino);
                }
                None => {
                    entries.remove(name);
                }
            }
        }
        _ => unreachable!(
            "change {:?} does not belong to stream {:?}",
            op.change, op.stream
        ),
    }
}
