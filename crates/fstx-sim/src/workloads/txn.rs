//! Workload: a sequence of multi-file transactions (`fstx::Transaction`) on
//! one root with nested directories: writes (some streamed), removals,
//! renames, files in directories the transaction creates; recovery is
//! `fstx::recover` on the root (which redoes or rolls back a journal).
//!
//! Checks: after recovery the tracked files are exactly the state after
//! some prefix of the transactions (all-or-nothing, in order), never before
//! the last acknowledged one; no staged or temporary file and no journal is
//! left; no file appears that no transaction wrote; each failed transaction
//! left the live tree as its error's `State` says.
//!
//! The verified variant (`/verified`, [`TxnOptions::verified`]) seals every
//! file it writes: the versions tracked are the sealed bytes, each numbered
//! one above the sequence number of the version it replaces (the initial
//! files are plain), so the checks above compare exact envelopes; and after
//! recovery every tracked file reads back through `fstx::read` as the
//! payload of the bytes it holds (or `NotFound` when it does not exist).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fstx::storage::Storage;
use fstx::txn::Flush;
#[cfg(feature = "planted-bugs")]
use fstx::TxnBugs;
use fstx::{Durability, TxnOptions};

use crate::bugs::FlushBugs;
use crate::explore::Workload;
use crate::fs::SimFs;
use crate::history::History;
use crate::rng::Rng;
use crate::tree::Tree;
use crate::workloads::replace::{name_bugs, parse_bugs};
use crate::workloads::{content, live_checks, outcome_of, CallResult};

/// The root of the transactions.
const ROOT: &str = "/r";

/// Paths (relative to the root) the transactions work on.
const POOL: [&str; 7] = ["a", "b", "sub/c", "sub/d", "sub/deep/e", "new/f", "new/g/h"];

/// The wide variant's paths: more files, more of them existing at first.
const WIDE_POOL: [&str; 12] = [
    "a",
    "b",
    "c",
    "sub/c",
    "sub/d",
    "sub/x",
    "sub/deep/e",
    "sub/deep/y",
    "d",
    "new/f",
    "new/g/h",
    "new/z",
];

/// The paths a workload works on, and how many of them may exist at first.
fn pool(wide: bool) -> (&'static [&'static str], usize) {
    if wide {
        (&WIDE_POOL, 9)
    } else {
        (&POOL, 5)
    }
}

/// The transaction workload. See the [module docs](self).
#[derive(Debug, Clone, Copy, Default)]
pub struct Txn {
    /// Planted recovery bugs of the library (only with the `planted-bugs`
    /// feature).
    #[cfg(feature = "planted-bugs")]
    pub bugs: TxnBugs,
    /// Planted flush bugs (a storage wrapper; none by default).
    pub flush_bugs: FlushBugs,
    /// How the transactions flush: [`Flush::Auto`] (default: what
    /// production does, decided by the simulated kernel's capabilities),
    /// or a fixed strategy.
    pub flush: Flush,
    /// Wider transactions: twelve paths instead of seven, up to six
    /// operations per transaction instead of three. More situations per
    /// crash point (the big run spends most of its budget here).
    pub wide: bool,
    /// Verified transactions ([`TxnOptions::verified`]): every written file
    /// sealed in an envelope.
    pub verified: bool,
}

/// The workload-name part for each flush strategy.
fn flush_name(flush: Flush) -> &'static str {
    match flush {
        Flush::Auto => "txn",
        Flush::Serial => "txn/serial",
        Flush::SyncFs => "txn/syncfs",
        Flush::Threads(_) => "txn/threads",
    }
}

enum Step {
    Write(&'static str, Vec<u8>, bool),
    Remove(&'static str),
    Rename(&'static str, &'static str),
}

#[cfg(feature = "planted-bugs")]
const BUGS: [&str; 5] = [
    "trust_staged",
    "replay_retired",
    "sweep_staging_first",
    "retire_before_dir_flush",
    "refuse_lost_data",
];

#[cfg(feature = "planted-bugs")]
fn bug_flag<'a>(bugs: &'a mut TxnBugs, name: &str) -> Option<&'a mut bool> {
    Some(match name {
        "trust_staged" => &mut bugs.trust_staged,
        "replay_retired" => &mut bugs.replay_retired,
        "sweep_staging_first" => &mut bugs.sweep_staging_first,
        "retire_before_dir_flush" => &mut bugs.retire_before_dir_flush,
        "refuse_lost_data" => &mut bugs.refuse_lost_data,
        _ => return None,
    })
}

/// Parses a workload name made by [`Txn::name`](Workload::name):
/// `txn[/serial|/syncfs|/threads][/wide][/verified][+bug...]`.
pub fn parse(name: &str) -> Option<Txn> {
    let mut parts = name.split('+');
    let first = parts.next()?;
    let (first, verified) = match first.strip_suffix("/verified") {
        Some(f) => (f, true),
        None => (first, false),
    };
    let (first, wide) = match first.strip_suffix("/wide") {
        Some(f) => (f, true),
        None => (first, false),
    };
    let flush = [
        Flush::Auto,
        Flush::Serial,
        Flush::SyncFs,
        Flush::Threads(fstx::txn::DEFAULT_FLUSH_THREADS),
    ]
    .into_iter()
    .find(|f| flush_name(*f) == first)?;
    // Flush bugs are a storage wrapper; the library's recovery bugs exist
    // only where the `planted-bugs` feature built them in.
    #[cfg(feature = "planted-bugs")]
    let mut bugs = TxnBugs::default();
    let mut rest = Vec::new();
    for bug in parts {
        #[cfg(feature = "planted-bugs")]
        if let Some(flag) = bug_flag(&mut bugs, bug) {
            *flag = true;
            continue;
        }
        rest.push(bug);
    }
    let flush_bugs = parse_bugs(rest.into_iter())?;
    Some(Txn {
        #[cfg(feature = "planted-bugs")]
        bugs,
        flush_bugs,
        flush,
        wide,
        verified,
    })
}

/// `payload` sealed in an envelope numbered `seq`, as the library writes it.
fn sealed(seq: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = fstx::formats::EnvelopeHeader {
        seq,
        len: payload.len() as u64,
        crc: crc32c::crc32c(payload),
    }
    .encode()
    .to_vec();
    out.extend_from_slice(payload);
    out
}

/// The sequence number of a version (0 for a plain file or none).
fn seq_of(bytes: Option<&Vec<u8>>) -> u64 {
    bytes.map_or(0, |b| {
        fstx::formats::decode_envelope_header(b, b.len() as u64).map_or(0, |h| h.seq)
    })
}

fn abs(rel: &str) -> PathBuf {
    Path::new(ROOT).join(rel)
}

/// The initial files: (path, content), from the seed.
fn initial(seed: u64, wide: bool) -> Vec<(&'static str, Vec<u8>)> {
    let mut r = Rng::new(seed);
    let (pool, existing) = pool(wide);
    pool[..existing]
        .iter()
        .filter_map(|p| {
            let keep = r.below(10) < 6;
            let c = content(&mut r, "init");
            keep.then_some((*p, c))
        })
        .collect::<Vec<_>>()
}

/// One transaction's steps, given the current files.
fn plan_txn(r: &mut Rng, i: usize, now: &BTreeMap<&'static str, Vec<u8>>, wide: bool) -> Vec<Step> {
    let mut claimed: Vec<&str> = Vec::new();
    let mut steps = Vec::new();
    let n = 1 + r.below(if wide { 6 } else { 3 });
    for j in 0..n {
        let free: Vec<&'static str> = pool(wide)
            .0
            .iter()
            .copied()
            .filter(|p| !claimed.contains(p))
            .collect();
        let existing: Vec<&'static str> = free
            .iter()
            .copied()
            .filter(|p| now.contains_key(p))
            .collect();
        match r.below(6) {
            0 if !existing.is_empty() => {
                let p = existing[r.below(existing.len())];
                claimed.push(p);
                steps.push(Step::Remove(p));
            }
            1 if !existing.is_empty() && free.len() > 1 => {
                let from = existing[r.below(existing.len())];
                let to: Vec<&'static str> = free.iter().copied().filter(|p| *p != from).collect();
                let to = to[r.below(to.len())];
                claimed.push(from);
                claimed.push(to);
                steps.push(Step::Rename(from, to));
            }
            _ if !free.is_empty() => {
                let p = free[r.below(free.len())];
                claimed.push(p);
                steps.push(Step::Write(
                    p,
                    content(r, &format!("t{i}.{j}")),
                    r.one_in(4),
                ));
            }
            _ => {}
        }
    }
    steps
}

impl Workload for Txn {
    fn name(&self) -> String {
        let mut name = String::from(flush_name(self.flush));
        if self.wide {
            name.push_str("/wide");
        }
        if self.verified {
            name.push_str("/verified");
        }
        name_bugs(&mut name, self.flush_bugs);
        #[cfg(feature = "planted-bugs")]
        {
            let mut bugs = self.bugs;
            for bug in BUGS {
                if *bug_flag(&mut bugs, bug).expect("known") {
                    name.push('+');
                    name.push_str(bug);
                }
            }
        }
        name
    }

    fn setup(&self, seed: u64, fs: &SimFs, history: &mut History) {
        fs.mkdir_p(abs("sub/deep")).expect("setup");
        let init = initial(seed, self.wide);
        for p in pool(self.wide).0 {
            let c = init.iter().find(|(q, _)| q == p).map(|(_, c)| c.clone());
            if let Some(c) = &c {
                fs.put_file(abs(p), c, 0o644).expect("setup");
            }
            history.track(abs(p), c);
        }
        history.dirs = vec![PathBuf::from(ROOT)];
    }

    fn run(&self, seed: u64, fs: &Arc<SimFs>, history: &mut History) {
        let mut rng = Rng::new(seed ^ 0x7478_6e00);
        let mut now: BTreeMap<&'static str, Vec<u8>> =
            initial(seed, self.wide).into_iter().collect();
        let storage: Arc<dyn Storage> = self.flush_bugs.wrap(fs.clone());
        let mut temp_left = false;
        let count = 2 + rng.below(3);
        for i in 0..count {
            let steps = plan_txn(&mut rng, i, &now, self.wide);
            let mut next = now.clone();
            let mut writes = Vec::new();
            let mut desc = Vec::new();
            for s in &steps {
                match s {
                    Step::Write(path, data, streamed) => {
                        let data = if self.verified {
                            sealed(seq_of(next.get(path)) + 1, data)
                        } else {
                            data.clone()
                        };
                        next.insert(path, data.clone());
                        writes.push((abs(path), Some(data)));
                        desc.push(format!(
                            "write {path}{}",
                            if *streamed { " (streamed)" } else { "" }
                        ));
                    }
                    Step::Remove(path) => {
                        next.remove(path);
                        writes.push((abs(path), None));
                        desc.push(format!("remove {path}"));
                    }
                    Step::Rename(from, to) => {
                        let data = next.remove(from).expect("exists");
                        next.insert(to, data.clone());
                        writes.push((abs(from), None));
                        writes.push((abs(to), Some(data)));
                        desc.push(format!("rename {from} {to}"));
                    }
                }
            }
            let label = format!("txn#{i} [{}]", desc.join(", "));
            let op = history.begin(label, writes, fs.calls());
            history.ops[op].atomic_group = true;
            let mut opts = TxnOptions::new();
            opts.storage(storage.clone())
                .durability(Durability::Durable)
                .flush(self.flush)
                .verified(self.verified);
            #[cfg(feature = "planted-bugs")]
            opts.planted_bugs(self.bugs);
            let mut seq = None;
            let result: CallResult = (|| {
                // A failed `begin` leaves this transaction uncommitted,
                // whatever state its error reports (its recovery of an
                // earlier transaction reports that one's).
                let mut txn = opts
                    .begin(ROOT)
                    .map_err(|e| fstx_not_committed(e.into_io_error()))?;
                seq = Some(txn.seq());
                for s in &steps {
                    match s {
                        Step::Write(path, data, false) => txn.write(path, data)?,
                        Step::Write(path, data, true) => {
                            let mut file = txn.create(path)?;
                            let half = data.len() / 2;
                            if let Err(e) = file
                                .write_all(&data[..half])
                                .and_then(|()| file.write_all(&data[half..]))
                            {
                                drop(file);
                                txn.abort()?;
                                return Err(fstx_not_committed(e));
                            }
                            file.finish()?;
                        }
                        Step::Remove(path) => txn.remove(path)?,
                        Step::Rename(from, to) => txn.rename(from, to)?,
                    }
                }
                txn.commit()?;
                Ok(())
            })()
            .map_err(|e: TxnError| match e {
                TxnError::Fstx(e) => (e.state().clone(), e.into_io_error()),
                TxnError::Io(e) => (fstx::State::NotCommitted, e),
            });
            if let Some(seq) = seq {
                history.txn_seq.insert(op, seq);
            }
            let outcome = outcome_of(&result, Durability::Durable);
            history.end(op, outcome.clone(), fs.calls());
            if !matches!(outcome, crate::history::Outcome::NotCommitted) {
                now = next;
            }
            let before = now.clone();
            let before_of = |p: &Path| -> Option<Vec<u8>> {
                let rel = p.strip_prefix(ROOT).ok()?;
                before
                    .iter()
                    .find(|(q, _)| Path::new(q) == rel)
                    .map(|(_, c)| c.clone())
            };
            live_checks(fs, history, op, &result, &before_of, &mut temp_left);
        }
    }

    fn recover(&self, fs: &Arc<SimFs>, history: &History) -> Result<(), String> {
        self.recover_at(fs, history, u64::MAX)
    }

    /// Also checks what recovery reports: it must never redo a transaction
    /// whose `commit` had returned `Ok` before the crash (its journal was
    /// retired durably then): that is a retired journal replayed, possibly
    /// over later transactions.
    fn recover_at(&self, fs: &Arc<SimFs>, history: &History, k: u64) -> Result<(), String> {
        // The transaction's own recovery (with the library's planted
        // recovery bugs; flush bugs are the writer's), then the general
        // sweep `fstx recover` runs.
        let storage: Arc<dyn Storage> = fs.clone();
        let mut opts = TxnOptions::new();
        opts.storage(storage.clone());
        #[cfg(feature = "planted-bugs")]
        opts.planted_bugs(self.bugs);
        let report = opts.recover(ROOT).map_err(|e| e.to_string())?;
        if let Some(fstx::TxnRecovery {
            seq: Some(seq),
            outcome: fstx::TxnOutcome::Finished { .. },
            ..
        }) = report
        {
            let acked = history.txn_seq.iter().find(|(op, s)| {
                **s == seq
                    && history.ops[**op].end <= k
                    && history.ops[**op].outcome == crate::history::Outcome::Durable
            });
            if let Some((op, _)) = acked {
                let later: Vec<&str> = history
                    .ops
                    .iter()
                    .skip(op + 1)
                    .filter(|o| o.start < k)
                    .map(|o| o.label.as_str())
                    .collect();
                return Err(format!(
                    "replayed the journal of transaction {seq} ({}), whose commit had returned Ok \
                     before the crash (a retired journal); transactions started after it: [{}]",
                    history.ops[*op].label,
                    later.join("; ")
                ));
            }
        }
        fstx::RecoverOptions::new()
            .storage(storage)
            .recover(ROOT)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn check(&self, tree: &Tree, history: &History, k: u64) -> Vec<String> {
        let mut out: Vec<String> = history.check_prefix(tree, k).into_iter().collect();
        // Renames move files, and their metadata, between tracked paths.
        out.extend(history.check_meta(tree, k, true));
        if self.verified {
            out.extend(verified_reads(tree, history));
        }
        let control = Path::new(ROOT).join(".fstx-txn");
        for (p, ino) in tree.walk() {
            if self.is_leftover(&p) || p == control.join("journal") {
                out.push(format!("leftover after recovery: {}", p.display()));
            } else if tree.get(ino).data().is_some()
                && !p.starts_with(&control)
                && !history.initial.contains_key(&p)
            {
                out.push(format!("unexpected file after recovery: {}", p.display()));
            }
        }
        out
    }

    /// Redo's verification refusing a damaged staged file.
    fn is_refusal(&self, error: &str) -> bool {
        error.contains("does not match the journal")
    }

    fn is_leftover(&self, path: &Path) -> bool {
        path.file_name().is_some_and(|n| {
            matches!(
                fstx::internal_name(n),
                Some(fstx::InternalName::Temp | fstx::InternalName::Staged)
            )
        })
    }
}

/// Every tracked file reads back through `fstx::read` (on a simulator
/// booted from `tree`) as the payload of the bytes it holds — the bytes
/// themselves for a plain (initial) file — or `NotFound` when it does not
/// exist.
fn verified_reads(tree: &Tree, history: &History) -> Vec<String> {
    let fs = SimFs::from_image(tree.clone(), 0, crate::model::Profile::Weak);
    let mut r = fstx::ReadOptions::new();
    r.storage(fs);
    let mut out = Vec::new();
    for path in history.initial.keys() {
        let bytes = tree.read(path);
        let want = bytes.map(|b| match fstx::formats::decode_envelope(b) {
            Ok((_, payload)) => payload,
            Err(_) => b,
        });
        let got = r.read(path);
        let ok = match (&got, want) {
            (Ok(o), Some(w)) => o.content == w,
            (Err(e), None) => e.kind() == std::io::ErrorKind::NotFound,
            _ => false,
        };
        if !ok {
            out.push(format!(
                "the verified read of {} {}, the file holds {}",
                path.display(),
                match &got {
                    Ok(o) => format!("returns {}", crate::tree::describe(&o.content)),
                    Err(e) => format!("fails: {e}"),
                },
                bytes.map_or_else(|| "nothing".into(), crate::tree::describe)
            ));
        }
    }
    out
}

/// Errors inside the transaction closure.
enum TxnError {
    Fstx(fstx::Error),
    Io(std::io::Error),
}

impl From<fstx::Error> for TxnError {
    fn from(e: fstx::Error) -> TxnError {
        TxnError::Fstx(e)
    }
}

fn fstx_not_committed(e: std::io::Error) -> TxnError {
    TxnError::Io(e)
}
