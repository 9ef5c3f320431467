//! What a workload did and what each operation promised, and the checks
//! that follow from it at any crash point.
//!
//! A workload records every operation it starts ([`History::begin`]) and how
//! it ended ([`History::end`]), with the call counter of the simulator at both
//! instants. A crash "after call `k`" then knows exactly which operations had
//! started (`start < k`) and which were acknowledged (`end <= k`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::tree::{describe, Meta, Tree};

/// How an operation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Still running (the crash came first), or not recorded.
    Running,
    /// Returned `Ok` with a durability promise: must survive any later crash.
    Durable,
    /// Returned `Ok`, atomic but not durable: old or new after a crash.
    Consistent,
    /// Returned `Ok` with no crash promise at all (`Durability::None`): the
    /// files it wrote are not checked until a later durable operation.
    NoPromise,
    /// Failed and said "not committed": its content must not appear once it
    /// has returned.
    NotCommitted,
    /// Failed and said "committed, durability unconfirmed": old or new.
    CommittedNotDurable,
    /// Failed and said "committed, recovery will finish it": new after recovery,
    /// old or new before.
    CommittedPendingRecovery,
}

/// One operation: what it writes where.
#[derive(Debug, Clone)]
pub struct OpRecord {
    /// For reports.
    pub label: String,
    /// New content per path (`None`: the path is removed).
    pub writes: Vec<(PathBuf, Option<Vec<u8>>)>,
    /// Calls made before it started.
    pub start: u64,
    /// Calls made when it returned.
    pub end: u64,
    /// How it ended.
    pub outcome: Outcome,
    /// Whether its writes land together (a transaction) or file by file.
    pub atomic_group: bool,
    /// Implications: once the first path of `writes` holds this operation's
    /// content, each of these paths must hold one of the listed contents
    /// (a backup of the version this operation replaced).
    pub implies: Vec<(PathBuf, Vec<Option<Vec<u8>>>)>,
}

/// A workload's history.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// Content of each tracked path before the workload (`None`: absent).
    pub initial: BTreeMap<PathBuf, Option<Vec<u8>>>,
    /// Operations, in order.
    pub ops: Vec<OpRecord>,
    /// Violations seen while the workload ran (on the live state).
    pub live_violations: Vec<String>,
    /// Directories the workload's recovery looks at.
    pub dirs: Vec<PathBuf>,
    /// Paths that may only ever hold a complete version of another tracked
    /// path (backups): path -> (the tracked path, the path's own initial content).
    pub versions_of: BTreeMap<PathBuf, (PathBuf, Option<Vec<u8>>)>,
    /// Transactions: the sequence number each operation ran under (index
    /// into [`ops`](Self::ops) -> seq), when its `begin` succeeded.
    pub txn_seq: BTreeMap<usize, u64>,
    /// The metadata (mode, owner, group, xattrs) of each tracked path that
    /// existed before the workload: a replace carries it to the new content.
    pub meta: BTreeMap<PathBuf, Meta>,
    /// The metadata of a file fstx creates (`0o666` less the umask, the
    /// process's owner and group, no xattrs).
    pub new_file_meta: Option<Meta>,
}

impl History {
    /// Records the metadata the guarantee promises (see [`meta`](Self::meta)):
    /// the tracked paths' as they are in `live` after setup, and a new file's.
    pub fn record_meta(&mut self, live: &Tree, new_file: Meta) {
        for path in self.initial.keys() {
            if let Some(ino) = live.resolve(path) {
                self.meta.insert(path.clone(), live.get(ino).meta.clone());
            }
        }
        self.new_file_meta = Some(new_file);
    }

    /// Metadata after recovery (design §1: the new file gets the old one's
    /// owner, group, mode and xattrs, no set-id bits; a new file the
    /// defaults): every tracked target that holds a complete version after
    /// a crash after call `k` (where its content is checked at all) has the
    /// metadata it had before the workload, or a new file's if it had none.
    /// With `moved` (transactions rename files between tracked paths), any
    /// tracked path's original metadata is accepted.
    pub fn check_meta(&self, tree: &Tree, k: u64, moved: bool) -> Vec<String> {
        let mut out = Vec::new();
        let Some(new_file) = &self.new_file_meta else {
            return out;
        };
        for (path, allowed) in self.allowed_per_file(k) {
            if allowed.unchecked || self.versions_of.contains_key(&path) {
                continue;
            }
            let Some(ino) = tree.resolve(&path) else {
                continue;
            };
            let content = tree.get(ino).data().map(Vec::as_slice);
            if content.is_none()
                || !allowed
                    .versions
                    .iter()
                    .any(|(_, v)| v.as_deref() == content)
            {
                continue; // the content check reports it
            }
            let actual = &tree.get(ino).meta;
            let expected: Vec<&Meta> = if moved {
                self.meta.values().chain([new_file]).collect()
            } else {
                vec![self.meta.get(&path).unwrap_or(new_file)]
            };
            if !expected.contains(&actual) {
                out.push(format!(
                    "{}: holds a complete version but its metadata is mode {:o} owner {}:{} \
                     xattrs {:?}, not the promised mode {:o} owner {}:{} xattrs {:?}",
                    path.display(),
                    actual.mode,
                    actual.uid,
                    actual.gid,
                    actual.xattrs.keys().collect::<Vec<_>>(),
                    expected[0].mode,
                    expected[0].uid,
                    expected[0].gid,
                    expected[0].xattrs.keys().collect::<Vec<_>>()
                ));
            }
        }
        out
    }

    /// Tracks `path`, whose content before the workload is `initial`.
    pub fn track(&mut self, path: impl Into<PathBuf>, initial: Option<Vec<u8>>) {
        self.initial.insert(path.into(), initial);
    }

    /// Records the start of an operation; returns its index.
    pub fn begin(
        &mut self,
        label: impl Into<String>,
        writes: Vec<(PathBuf, Option<Vec<u8>>)>,
        calls: u64,
    ) -> usize {
        for (p, _) in &writes {
            self.initial.entry(p.clone()).or_insert(None);
        }
        self.ops.push(OpRecord {
            label: label.into(),
            writes,
            start: calls,
            end: u64::MAX,
            outcome: Outcome::Running,
            atomic_group: false,
            implies: Vec::new(),
        });
        self.ops.len() - 1
    }

    /// Records how operation `op` ended.
    pub fn end(&mut self, op: usize, outcome: Outcome, calls: u64) {
        self.ops[op].outcome = outcome;
        self.ops[op].end = calls;
    }

    /// The content `path` is expected to have after every operation so far
    /// that returned `Ok` or committed (the live expectation).
    pub fn current(&self, path: &Path) -> Option<&[u8]> {
        let mut cur = self.initial.get(path).and_then(|c| c.as_deref());
        for op in &self.ops {
            if matches!(op.outcome, Outcome::NotCommitted | Outcome::Running) {
                continue;
            }
            for (p, c) in &op.writes {
                if p == path {
                    cur = c.as_deref();
                }
            }
        }
        cur
    }

    /// What may be at each tracked path after a crash after call `k`, file by
    /// file (single-file operations: each file independently old or new).
    pub fn allowed_per_file(&self, k: u64) -> BTreeMap<PathBuf, Allowed> {
        let mut out = BTreeMap::new();
        for (path, initial) in &self.initial {
            let mut allowed = Allowed {
                versions: vec![(String::from("initial"), initial.clone())],
                unchecked: false,
            };
            for op in &self.ops {
                let Some((_, content)) = op.writes.iter().rev().find(|(p, _)| p == path) else {
                    continue;
                };
                if op.start >= k {
                    break;
                }
                let returned = op.end <= k;
                let version = (op.label.clone(), content.clone());
                match (&op.outcome, returned) {
                    (Outcome::Durable, true) => {
                        // A durable acknowledgement: nothing older may show.
                        allowed.versions = vec![version];
                        allowed.unchecked = false;
                    }
                    (Outcome::NotCommitted, true) => {}
                    (Outcome::NoPromise, _) => {
                        allowed.versions.push(version);
                        allowed.unchecked = true;
                    }
                    _ => allowed.versions.push(version),
                }
            }
            out.insert(path.clone(), allowed);
        }
        out
    }

    /// Expectation key for a crash after call `k` (equal keys: equal checks).
    pub fn expectation_key(&self, k: u64) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for op in &self.ops {
            (op.start < k, op.end <= k).hash(&mut h);
        }
        h.finish()
    }
}

impl History {
    /// Checks backups and implications in a recovered tree after a crash
    /// after call `k`: every path of [`versions_of`](Self::versions_of)
    /// holds a complete version of its source (or its own initial content,
    /// or is absent if it was absent at first), and every operation whose
    /// content is visible has its implications met.
    pub fn check_versions(&self, tree: &Tree, k: u64) -> Vec<String> {
        let mut out = Vec::new();
        for (path, (source, own_initial)) in &self.versions_of {
            let _ = own_initial;
            let Some(actual) = tree.read(path) else {
                if own_initial.is_some() {
                    out.push(format!(
                        "{}: missing, but it existed before",
                        path.display()
                    ));
                }
                continue;
            };
            // Its own or another backup's first content (rotated), the
            // source's first content, or what an operation wrote there.
            let mut ok = self.initial.get(source).and_then(|c| c.as_deref()) == Some(actual)
                || self
                    .versions_of
                    .values()
                    .any(|(s, own)| s == source && own.as_deref() == Some(actual));
            for op in self.ops.iter().filter(|op| op.start < k) {
                ok |= op
                    .writes
                    .iter()
                    .any(|(p, c)| p == source && c.as_deref() == Some(actual));
            }
            if !ok {
                out.push(format!(
                    "{}: holds {}, which is no complete version of {}",
                    path.display(),
                    describe(actual),
                    source.display()
                ));
            }
        }
        for (i, op) in self.ops.iter().enumerate() {
            if op.start >= k || op.implies.is_empty() {
                continue;
            }
            let Some((target, Some(content))) = op.writes.first() else {
                continue;
            };
            // A later operation that committed without a durability promise
            // (`Consistent`, or a failed flush after its rename) may be undone
            // by the crash while later backups of its content survive: the
            // target then shows this older content again, and the
            // implication no longer says anything.
            if self.ops[i + 1..].iter().any(|later| {
                later.start < k
                    && matches!(
                        later.outcome,
                        Outcome::CommittedNotDurable | Outcome::Consistent
                    )
            }) {
                continue;
            }
            if tree.read(target) != Some(content.as_slice()) {
                continue;
            }
            for (path, allowed) in &op.implies {
                let actual = tree.read(path);
                if !allowed.iter().any(|a| a.as_deref() == actual) {
                    out.push(format!(
                        "{} holds the content of {}, but {} holds {} instead of the version it replaced",
                        target.display(),
                        op.label,
                        path.display(),
                        actual.map_or_else(|| "nothing".into(), describe)
                    ));
                }
            }
        }
        out
    }
}

/// A whole-tree state: content per tracked path (`None`: absent).
pub type TreeState = BTreeMap<PathBuf, Option<Vec<u8>>>;

impl History {
    /// The tree states allowed after a crash after call `k` and recovery,
    /// for all-or-nothing operations applied in order (transactions): the
    /// state after some prefix of the operations, no shorter than the last
    /// acknowledged `Durable` (or committed-pending-recovery) one, no longer
    /// than the last one started; an operation that returned "not
    /// committed" is never applied. Each state is labelled by its last operation.
    pub fn allowed_prefixes(&self, k: u64) -> Vec<(String, TreeState)> {
        let mut state: TreeState = self.initial.clone();
        let mut out = vec![("initial".to_string(), state.clone())];
        for op in &self.ops {
            if op.start >= k {
                break;
            }
            let returned = op.end <= k;
            if returned && op.outcome == Outcome::NotCommitted {
                continue;
            }
            for (p, c) in &op.writes {
                state.insert(p.clone(), c.clone());
            }
            let required = returned
                && matches!(
                    op.outcome,
                    Outcome::Durable | Outcome::CommittedPendingRecovery
                );
            if required {
                out.clear();
            }
            out.push((op.label.clone(), state.clone()));
        }
        out
    }

    /// Checks `tree` against [`allowed_prefixes`](Self::allowed_prefixes).
    pub fn check_prefix(&self, tree: &Tree, k: u64) -> Option<String> {
        let allowed = self.allowed_prefixes(k);
        let actual: TreeState = self
            .initial
            .keys()
            .map(|p| (p.clone(), tree.read(p).map(<[u8]>::to_vec)))
            .collect();
        if allowed.iter().any(|(_, s)| *s == actual) {
            return None;
        }
        let show =
            |c: &Option<Vec<u8>>| c.as_deref().map_or_else(|| "absent".to_string(), describe);
        let mut msg =
            String::from("the tree is not the state after any allowed prefix of the transactions:");
        for (label, s) in &allowed {
            let diffs: Vec<String> = s
                .iter()
                .filter(|(p, c)| actual.get(*p) != Some(*c))
                .map(|(p, c)| {
                    format!(
                        "{} is {} instead of {}",
                        p.display(),
                        show(&actual[p]),
                        show(c)
                    )
                })
                .collect();
            let _ = write!(msg, "\n    vs after {label}: {}", diffs.join("; "));
        }
        Some(msg)
    }
}

/// The contents a path may have.
#[derive(Debug, Clone)]
pub struct Allowed {
    /// Labelled versions (`None`: absent).
    pub versions: Vec<(String, Option<Vec<u8>>)>,
    /// Whether a `Durability::None` write makes any content acceptable.
    pub unchecked: bool,
}

impl Allowed {
    /// Checks `path` in `tree`; returns a violation message if its content is
    /// none of the allowed versions.
    pub fn check(&self, tree: &Tree, path: &Path) -> Option<String> {
        if self.unchecked {
            return None;
        }
        let actual = tree.read(path);
        if self.versions.iter().any(|(_, v)| v.as_deref() == actual) {
            return None;
        }
        let show = |c: Option<&[u8]>| c.map_or_else(|| "absent".to_string(), describe);
        let allowed: Vec<String> = self
            .versions
            .iter()
            .map(|(label, v)| format!("{label}: {}", show(v.as_deref())))
            .collect();
        Some(format!(
            "{}: holds {}, but only these are allowed: [{}]",
            path.display(),
            show(actual),
            allowed.join("; ")
        ))
    }
}
