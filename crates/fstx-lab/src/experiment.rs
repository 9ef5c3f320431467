//! The seed experiment: ten processes looping file operations, checked after
//! a power cut. This module holds the parts that run *inside* the recorded
//! filesystem (setup, workers, recovery, checker); `crate::powercut` drives
//! them through the `powercut` harness.
//!
//! Every version written is self-verifying ([`fstx_testkit::version`]): a
//! header line `fstx-pc <tag> n=<version> len=<body length> crc=<crc32c of
//! body>` followed by a body derived from tag and version, so a torn, empty,
//! zero-filled or mixed file is recognised, and the version says whether an
//! acknowledged update survived. Workers write a mark (`ack ...`) to
//! `$POWERCUT_CTL` only after the call returned; the checker receives the
//! marks written before the cut in `$POWERCUT_MARKS`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use fstx_testkit::version::{decode, encode};

/// Who writes the files: fstx, or one of the unsafe contenders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Contender {
    /// fstx: `fstx::write`, `fstx::update` with a backup, and transactions.
    Fstx,
    /// The 2002 snippet: temp file, write, rename, fsync the directory — no
    /// fsync of the temp file.
    #[value(name = "seed-2002")]
    Seed2002,
    /// Temp file and rename without any flush (tempfile's `persist`).
    NoFlush,
    /// Truncate the file and write the new content in place, 4 KiB at a
    /// time, with an fsync after each piece (a program that flushes its
    /// output as it goes).
    InPlace,
    /// fstx transactions with the commit record written and flushed before
    /// the staged data is written (a planted flush bug, see
    /// [`commit_before_data_options`]).
    CommitBeforeData,
}

/// The transaction options of the `commit-before-data` contender: fstx's
/// transactions through a storage that holds each staged file's data back
/// until the commit round is over and the first staged file is renamed into
/// place (`fstx_sim::bugs`, a planted flush bug; the library itself has no
/// branch for it).
pub(crate) fn commit_before_data_options() -> fstx::TxnOptions {
    use fstx_sim::bugs::{FlushBug, FlushBugs};
    let mut opts = fstx::TxnOptions::new();
    opts.storage(FlushBugs::one(FlushBug::CommitBeforeDataWrite).wrap(fstx::storage::os()));
    opts.allow_weak_filesystems(weak());
    opts
}

impl Contender {
    /// The name used on the command line and in reports.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Contender::Fstx => "fstx",
            Contender::Seed2002 => "seed-2002",
            Contender::NoFlush => "no-flush",
            Contender::InPlace => "in-place",
            Contender::CommitBeforeData => "commit-before-data",
        }
    }

    /// One line describing the writer.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Contender::Fstx => "fstx write + locked update with backup + multi-file transactions",
            Contender::Seed2002 => {
                "temp file, rename, fsync(dir); no fsync of the temp file (the 2002 snippet)"
            }
            Contender::NoFlush => "temp file + rename, no fsync at all (tempfile persist)",
            Contender::InPlace => "truncate, then write in place 4 KiB at a time, fsync after each",
            Contender::CommitBeforeData => {
                "transactions applied before their staged data is written (after the commit round)"
            }
        }
    }

    fn ops(self) -> &'static [Op] {
        match self {
            Contender::Fstx => &[Op::File, Op::Counter, Op::Txn],
            Contender::Seed2002 | Contender::NoFlush | Contender::InPlace => &[Op::File],
            Contender::CommitBeforeData => &[Op::Txn],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    File,
    Counter,
    Txn,
}

const COUNTER: &str = "counter";
const BACKUP_SUFFIX: &str = "~";
const TXN_FILES: [&str; 3] = ["a", "sub/b", "sub/c"];

fn file_name(w: usize) -> String {
    format!("w{w}.dat")
}

fn txn_root(w: usize) -> String {
    format!("t{w}")
}

/// Set by `--allow-weak-fs` (vfat runs): fstx accepts a filesystem whose
/// rename is not crash-atomic, so the report shows what happens there.
static ALLOW_WEAK_FS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Lets fstx write on filesystems it refuses by default (vfat), for this process.
pub(crate) fn allow_weak_fs(yes: bool) {
    ALLOW_WEAK_FS.store(yes, std::sync::atomic::Ordering::Relaxed);
}

fn weak() -> bool {
    ALLOW_WEAK_FS.load(std::sync::atomic::Ordering::Relaxed)
}

fn fstx_write(path: &Path, content: &[u8]) -> io::Result<()> {
    Ok(fstx::Options::new()
        .allow_weak_filesystems(weak())
        .write(path, content)?)
}

fn txn_options() -> fstx::TxnOptions {
    let mut o = fstx::TxnOptions::new();
    o.allow_weak_filesystems(weak());
    o
}

/// Creates version 0 of everything the contender's workers touch.
pub(crate) fn setup(root: &Path, contender: Contender, workers: usize) -> io::Result<()> {
    for w in 0..workers {
        fstx_write(&root.join(file_name(w)), &encode(&file_name(w), 0))?;
        if contender.ops().contains(&Op::Txn) {
            let troot = root.join(txn_root(w));
            fs::create_dir_all(troot.join("sub"))?;
            for f in TXN_FILES {
                fstx_write(&troot.join(f), &encode(&format!("{}/{f}", txn_root(w)), 0))?;
            }
        }
    }
    if contender.ops().contains(&Op::Counter) {
        fstx_write(&root.join(COUNTER), &encode(COUNTER, 0))?;
    }
    Ok(())
}

/// Runs `workers` worker processes (this binary) for `seconds`, waits for them.
pub(crate) fn run_workers(contender: Contender, workers: usize, seconds: f64) -> io::Result<()> {
    let exe = std::env::current_exe()?;
    let children: Vec<_> = (0..workers)
        .map(|w| {
            Command::new(&exe)
                .args(["__powercut", "worker", "--contender", contender.name()])
                .args(["--id", &w.to_string(), "--seconds", &seconds.to_string()])
                .args(weak().then_some("--allow-weak-fs"))
                .spawn()
        })
        .collect::<io::Result<_>>()?;
    let mut failed = 0;
    for mut child in children {
        if !child.wait()?.success() {
            failed += 1;
        }
    }
    if failed > 0 {
        return Err(io::Error::other(format!("{failed} workers failed")));
    }
    Ok(())
}

/// Marks go to `$POWERCUT_CTL` (recorded in order with the disk writes), or
/// nowhere when it is not set.
struct Marks(Option<fs::File>);

impl Marks {
    fn open() -> io::Result<Marks> {
        match std::env::var_os("POWERCUT_CTL") {
            Some(p) => Ok(Marks(Some(OpenOptions::new().append(true).open(p)?))),
            None => Ok(Marks(None)),
        }
    }

    fn ack(&mut self, what: &str) -> io::Result<()> {
        match &mut self.0 {
            // One write per mark, so marks of different workers never interleave.
            Some(f) => f.write_all(format!("ack {what}\n").as_bytes()),
            None => Ok(()),
        }
    }
}

/// One worker: loops the contender's operations until the deadline, marking
/// each acknowledged one.
pub(crate) fn worker(root: &Path, contender: Contender, w: usize, seconds: f64) -> io::Result<()> {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let mut marks = Marks::open()?;
    let ops = contender.ops();
    let mut file_n = 0;
    let mut txn_n = 0;
    let mut i = w; // workers start at different operations
    while Instant::now() < deadline {
        match ops[i % ops.len()] {
            Op::File => {
                file_n += 1;
                let name = file_name(w);
                write_file(contender, &root.join(&name), &encode(&name, file_n))?;
                marks.ack(&format!("w={w} file n={file_n}"))?;
            }
            Op::Counter => {
                let mut o = fstx::Options::new();
                o.allow_weak_filesystems(weak());
                fstx::UpdateOptions::new()
                    .backup(BACKUP_SUFFIX)
                    .options(o)
                    .update(root.join(COUNTER), |old| {
                        let old = old.unwrap_or_default();
                        let n = decode(COUNTER, old).map_err(io::Error::other)?;
                        Ok(Some(encode(COUNTER, n + 1)))
                    })?;
                marks.ack(&format!("w={w} inc"))?;
            }
            Op::Txn => {
                txn_n += 1;
                let troot = root.join(txn_root(w));
                let opts = if contender == Contender::CommitBeforeData {
                    commit_before_data_options()
                } else {
                    txn_options()
                };
                let mut txn = opts.begin(&troot)?;
                for f in TXN_FILES {
                    txn.write(f, encode(&format!("{}/{f}", txn_root(w)), txn_n))?;
                }
                txn.commit()?;
                marks.ack(&format!("w={w} txn n={txn_n}"))?;
            }
        }
        i += 1;
    }
    Ok(())
}

/// Writes one file the contender's way.
fn write_file(contender: Contender, path: &Path, content: &[u8]) -> io::Result<()> {
    let temp = || {
        let mut t = path.as_os_str().to_owned();
        t.push(".tmp");
        PathBuf::from(t)
    };
    match contender {
        Contender::Fstx | Contender::CommitBeforeData => fstx_write(path, content),
        Contender::Seed2002 => {
            let t = temp();
            fs::write(&t, content)?;
            fs::rename(&t, path)?;
            fs::File::open(path.parent().unwrap_or(Path::new(".")))?.sync_all()
        }
        Contender::NoFlush => {
            let t = temp();
            fs::write(&t, content)?;
            fs::rename(&t, path)
        }
        Contender::InPlace => {
            let mut f = OpenOptions::new().write(true).truncate(true).open(path)?;
            // Like a program that produces its output as it goes and flushes
            // each piece: 4 KiB at a time, with a moment of work between.
            for chunk in content.chunks(4096) {
                f.write_all(chunk)?;
                f.sync_all()?;
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok(())
        }
    }
}

/// The recovery run in every crash image before the checker: what a device
/// would run at boot.
pub(crate) fn recover(root: &Path, contender: Contender, workers: usize) -> io::Result<()> {
    boot_recover(root)?;
    if contender.ops().contains(&Op::Txn) {
        for w in 0..workers {
            let troot = root.join(txn_root(w));
            if troot.exists() {
                boot_recover(&troot)?;
            }
        }
    }
    Ok(())
}

/// `fstx::recover(dir)`, with an error that names the state the caller is
/// really in.
fn boot_recover(dir: &Path) -> io::Result<()> {
    let Err(e) = fstx::recover(dir) else {
        return Ok(());
    };
    Err(match e.state() {
        // The error's own state reads "committed; recovery will finish
        // applying it" -- but this *is* recovery, and it just refused.
        fstx::State::CommittedPendingRecovery => {
            io::Error::new(e.kind(), refused_redo_message(dir, e.step(), e.io_error()))
        }
        _ => e.into(),
    })
}

/// The sentence for a redo recovery refused: the transaction is committed
/// but not (fully) applied, and the root stays blocked.
fn refused_redo_message(dir: &Path, step: fstx::Step, why: &io::Error) -> String {
    format!(
        "recover {}: {step}: {why} (recovery refused to apply the committed transaction: \
         it is committed but NOT fully applied, and {} stays blocked -- every transaction \
         there fails the same way -- until the transaction is resolved)",
        dir.display(),
        dir.display()
    )
}

/// What the marks say was acknowledged.
#[derive(Debug, Default)]
struct Acked {
    file: BTreeMap<usize, u64>,
    txn: BTreeMap<usize, u64>,
    incs: u64,
}

fn parse_marks(text: &str) -> Acked {
    let mut acked = Acked::default();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let (Some(&"ack"), Some(w)) = (words.first(), words.get(1)) else {
            continue;
        };
        let Some(w) = w.strip_prefix("w=").and_then(|w| w.parse().ok()) else {
            continue;
        };
        let n = words
            .get(3)
            .and_then(|n| n.strip_prefix("n="))
            .and_then(|n| n.parse().ok());
        match (words.get(2), n) {
            (Some(&"file"), Some(n)) => {
                acked.file.insert(w, n);
            }
            (Some(&"txn"), Some(n)) => {
                acked.txn.insert(w, n);
            }
            (Some(&"inc"), _) => acked.incs += 1,
            _ => {}
        }
    }
    acked
}

/// Checks a recovered crash image. Returns the problems found, the most
/// serious first (corruption, then lost acknowledged updates, then garbage),
/// each a sentence.
pub(crate) fn check(root: &Path, contender: Contender, workers: usize, marks: &str) -> Vec<String> {
    let acked = parse_marks(marks);
    let mut corrupt = Vec::new();
    let mut lost = Vec::new();
    let mut garbage = Vec::new();
    let read = |rel: &str| fs::read(root.join(rel));
    for w in 0..workers {
        let name = file_name(w);
        let want = acked.file.get(&w).copied().unwrap_or(0);
        match read(&name) {
            Err(e) => lost.push(format!("{name} is missing ({e}), where {}", expected(want))),
            Ok(bytes) => match decode(&name, &bytes) {
                Err(why) => corrupt.push(format!("{name} {why}, where {}", expected(want))),
                Ok(n) if n < want => lost.push(format!(
                    "{name} holds version {n}, but version {want} was acknowledged before the cut"
                )),
                Ok(_) => {}
            },
        }
        if contender.ops().contains(&Op::Txn) {
            let troot = txn_root(w);
            let want = acked.txn.get(&w).copied().unwrap_or(0);
            let mut gens = Vec::new();
            for f in TXN_FILES {
                let rel = format!("{troot}/{f}");
                match read(&rel)
                    .map_err(|e| e.to_string())
                    .and_then(|b| decode(&rel, &b))
                {
                    Ok(n) => gens.push((f, n)),
                    Err(why) => corrupt.push(format!("{rel} {why}")),
                }
            }
            if let Some(&(_, first)) = gens.first() {
                if gens.iter().any(|&(_, n)| n != first) {
                    let list: Vec<String> = gens.iter().map(|(f, n)| format!("{f}={n}")).collect();
                    corrupt.push(format!(
                        "transaction root {troot} is a mix of transactions: {}",
                        list.join(" ")
                    ));
                } else if first < want {
                    lost.push(format!(
                        "transaction root {troot} holds transaction {first}, but {want} was acknowledged"
                    ));
                }
            }
        }
    }
    if contender.ops().contains(&Op::Counter) {
        check_counter(root, &acked, workers, &mut corrupt, &mut lost);
    }
    find_garbage(root, root, &mut garbage);
    corrupt.into_iter().chain(lost).chain(garbage).collect()
}

fn check_counter(
    root: &Path,
    acked: &Acked,
    workers: usize,
    corrupt: &mut Vec<String>,
    lost: &mut Vec<String>,
) {
    let counter = match fs::read(root.join(COUNTER)) {
        Err(e) => {
            lost.push(format!("{COUNTER} is missing ({e})"));
            return;
        }
        Ok(b) => match decode(COUNTER, &b) {
            Err(why) => {
                corrupt.push(format!("{COUNTER} {why}"));
                return;
            }
            Ok(n) => n,
        },
    };
    if counter < acked.incs {
        lost.push(format!(
            "{COUNTER} is {counter}, below the {} acknowledged increments (a lost update)",
            acked.incs
        ));
    }
    // Each worker has at most one increment in flight at the cut.
    if counter > acked.incs + workers as u64 {
        corrupt.push(format!(
            "{COUNTER} is {counter}, more than the {} acknowledged increments plus {workers} in flight",
            acked.incs
        ));
    }
    let backup = format!("{COUNTER}{BACKUP_SUFFIX}");
    match fs::read(root.join(&backup)) {
        // No update has made a backup yet.
        Err(e) if e.kind() == io::ErrorKind::NotFound && counter == 0 => {}
        Err(e) => lost.push(format!(
            "{backup} is missing ({e}) while {COUNTER} is {counter}"
        )),
        Ok(b) => match decode(COUNTER, &b) {
            Err(why) => corrupt.push(format!("the backup {backup} {why}")),
            Ok(n) if n + 1 < counter || n > counter => corrupt.push(format!(
                "the backup {backup} holds {n}, not the version before {COUNTER}'s {counter}"
            )),
            Ok(_) => {}
        },
    }
}

/// What a file should hold, given the last acknowledged version.
fn expected(want: u64) -> String {
    if want == 0 {
        "the initial version or a later one was expected".to_string()
    } else {
        format!("version {want} (acknowledged) or a later one was expected")
    }
}

/// Temporary and staging files that survived recovery.
fn find_garbage(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let s = name.to_string_lossy();
        let rel = e.path();
        let rel = rel.strip_prefix(root).unwrap_or(&rel).display().to_string();
        let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
        if s == ".powercut-noise" || s == "lost+found" {
            continue;
        }
        if let Some(kind) = fstx::internal_name(&name) {
            // fstx's own files: lock files and a transaction root's control
            // directory may stay (without a pending journal); temporary and
            // staged files may not.
            if kind == fstx::InternalName::Lock {
                continue;
            }
            if kind == fstx::InternalName::Control {
                if e.path().join("journal").exists() {
                    out.push(format!(
                        "{rel}/journal: a transaction journal is still pending after recovery"
                    ));
                }
                continue;
            }
            out.push(format!("{rel}: a temporary file survived recovery"));
        } else if s.ends_with(".tmp") {
            // The unsafe contenders' temporary files.
            out.push(format!("{rel}: a temporary file survived recovery"));
        }
        if is_dir {
            find_garbage(root, &e.path(), out);
        }
    }
}

/// Formats the check result for the harness: one line per problem.
pub(crate) fn report_problems(problems: &[String]) -> String {
    let mut s = String::new();
    for p in problems {
        let _ = writeln!(s, "{p}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_redo_names_the_real_state() {
        let m = refused_redo_message(
            Path::new("/r"),
            fstx::Step::VerifyStagedFile,
            &io::Error::other("checksum mismatch"),
        );
        assert!(m.contains("committed but NOT fully applied"), "{m}");
        assert!(m.contains("/r stays blocked"), "{m}");
        assert!(!m.contains("will finish applying"), "{m}");
    }

    #[test]
    fn marks_are_parsed() {
        let a = parse_marks(
            "ack w=1 file n=3\nack w=1 file n=4\nack w=2 inc\nack w=0 txn n=9\nack w=3 inc\n",
        );
        assert_eq!(a.file.get(&1), Some(&4));
        assert_eq!(a.txn.get(&0), Some(&9));
        assert_eq!(a.incs, 2);
    }

    #[test]
    fn checker_accepts_a_consistent_tree_and_names_each_problem() {
        let d = std::env::temp_dir().join(format!("fstx-exp-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        setup(&d, Contender::Fstx, 2).unwrap();
        assert_eq!(check(&d, Contender::Fstx, 2, ""), Vec::<String>::new());
        // A lost acknowledged update, a torn file, a broken transaction, garbage.
        let p = check(&d, Contender::Fstx, 2, "ack w=0 file n=1\n");
        assert!(p[0].contains("version 1 was acknowledged"), "{p:?}");
        fs::write(d.join("w1.dat"), &encode("w1.dat", 3)[..50]).unwrap();
        fs::write(d.join("t0/sub/b"), encode("t0/sub/b", 2)).unwrap();
        fs::write(d.join(".fstx-tmp.0123456789abcdef.x"), b"").unwrap();
        let p = check(&d, Contender::Fstx, 2, "");
        assert!(p.iter().any(|s| s.contains("w1.dat is torn")), "{p:?}");
        assert!(p.iter().any(|s| s.contains("mix of transactions")), "{p:?}");
        assert!(
            p.iter().any(|s| s.contains("temporary file survived")),
            "{p:?}"
        );
        let _ = fs::remove_dir_all(&d);
    }
}
