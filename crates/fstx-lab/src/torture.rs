//! `fstx-lab torture`: the kill test. Worker processes update files in a loop,
//! the parent kills them with `SIGKILL` at random moments and restarts them,
//! and checks the files while they run and afterwards.

use std::collections::{HashMap, HashSet};
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fstx_cli::cmd::DurabilityArg;
use fstx_cli::Failure;
use fstx_testkit::{version, Rng};

/// The shared counter file every worker increments.
const SHARED: &str = "shared";

/// A deliberately unsafe updater, to show that the checks find its bugs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum UnsafeMode {
    /// Read, then truncate and write in place (backups too), without the
    /// lock: torn files and lost updates.
    InPlace,
    /// Atomic replace (`fstx::write`), but without the lock: lost updates.
    NoLock,
}

impl UnsafeMode {
    fn name(self) -> &'static str {
        match self {
            UnsafeMode::InPlace => "in-place",
            UnsafeMode::NoLock => "no-lock",
        }
    }
}

/// The kill test: PROCESSES workers update one shared counter file and a
/// few files of their own in a loop, with backups; workers are killed with
/// SIGKILL at random moments and restarted.
///
/// Every version written says which file and which sequence number it is,
/// with its length and a checksum (`fstx_testkit::version`).
/// A worker records an update as acknowledged only after `fstx::update`
/// returned. While the workers run, and at the end (after killing them all
/// and running `fstx recover`), the files are checked: every file and backup
/// verifies (never torn or mixed), backups are not newer than what they back
/// up and never vanish once made, each counter is at least its acknowledged
/// value and at most that plus the updates in flight when kills happened, no
/// sequence number is acknowledged twice (a lost update), and no temporary
/// file remains. Prints a summary and exits 1 on any violation.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Number of worker processes.
    #[arg(long, default_value_t = 10)]
    processes: usize,
    /// How long to run, in seconds.
    #[arg(long, default_value_t = 30.0)]
    seconds: f64,
    /// Files of its own per worker (besides the shared counter).
    #[arg(long, default_value_t = 3)]
    files: usize,
    /// Mean pause between two kills, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 25)]
    kill_every: u64,
    /// Work in DIR (created; default: a fresh directory under $TMPDIR,
    /// removed afterwards unless violations were found).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Use a deliberately unsafe updater instead of `fstx::update`, to show
    /// that the checks find violations (default mode: in-place).
    #[arg(
        long = "unsafe",
        value_enum,
        value_name = "MODE",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "in-place"
    )]
    unsafe_mode: Option<UnsafeMode>,
    /// Seed for the kill schedule (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// Durability of the workers' updates.
    #[arg(long, value_enum, default_value = "durable")]
    durability: DurabilityArg,
}

/// Arguments of a worker process (`fstx-lab torture-worker`, hidden).
#[derive(Debug, clap::Args)]
pub(crate) struct WorkerArgs {
    #[arg(long)]
    data: PathBuf,
    #[arg(long)]
    acks: PathBuf,
    #[arg(long)]
    id: usize,
    #[arg(long)]
    files: usize,
    #[arg(long = "unsafe", value_enum)]
    unsafe_mode: Option<UnsafeMode>,
    #[arg(long, value_enum, default_value = "durable")]
    durability: DurabilityArg,
}

fn clock_seed() -> u64 {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    t.as_secs() ^ u64::from(t.subsec_nanos()) ^ (u64::from(std::process::id()) << 32)
}

/// The sequence number of the current version of `name` (0 for none).
fn seq_of(name: &str, old: Option<&[u8]>) -> Result<u64, String> {
    old.map_or(Ok(0), |b| version::decode(name, b))
}

/// Runs one worker until it is killed or its parent dies.
pub(crate) fn worker(args: &WorkerArgs) -> Result<ExitCode, Failure> {
    let parent = std::os::unix::process::parent_id();
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(args.acks.join(format!("w{}.log", args.id)))?;
    let mut rng = Rng::new(clock_seed() ^ args.id as u64);
    let mut opts = fstx::Options::new();
    opts.durability(args.durability.into());
    loop {
        if std::os::unix::process::parent_id() != parent {
            return Ok(ExitCode::SUCCESS);
        }
        let (name, generations) = if args.files == 0 || rng.below(2) == 0 {
            (SHARED.to_string(), 1)
        } else {
            (format!("w{}-{}", args.id, rng.below(args.files)), 2)
        };
        let path = args.data.join(&name);
        let mut bad: Option<String> = None;
        let result: Result<u64, String> = match args.unsafe_mode {
            None => {
                let mut update = fstx::UpdateOptions::new();
                update.options(opts.clone()).generations(generations);
                let mut new_seq = 0;
                update
                    .update(&path, |old| {
                        let seq = seq_of(&name, old).map_err(|e| {
                            bad = Some(e);
                            io::Error::other("current version does not verify")
                        })?;
                        new_seq = seq + 1;
                        Ok(Some(version::encode(&name, new_seq)))
                    })
                    .map(|_| new_seq)
                    .map_err(|e| e.to_string())
            }
            Some(mode) => unsafe_update(&path, &name, mode, &mut bad),
        };
        let line = match (&bad, result) {
            (Some(why), _) => {
                format!("V {name}: worker read a version that does not verify: {why}\n")
            }
            (None, Ok(seq)) => format!("A {name} {seq}\n"),
            (None, Err(e)) => format!("E {name}: {e}\n"),
        };
        // One write(2) per record: a kill never leaves half a record behind
        // a complete one (a torn last line is ignored by the checker).
        log.write_all(line.as_bytes())?;
        if bad.is_some() {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The deliberately unsafe updaters.
fn unsafe_update(
    path: &Path,
    name: &str,
    mode: UnsafeMode,
    bad: &mut Option<String>,
) -> Result<u64, String> {
    let old = match fs::read(path) {
        Ok(b) => Some(b),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e.to_string()),
    };
    // A torn version is recorded, and overwritten as if the file were new.
    let seq = seq_of(name, old.as_deref()).unwrap_or_else(|e| {
        *bad = Some(e);
        0
    }) + 1;
    let new = version::encode(name, seq);
    match mode {
        UnsafeMode::InPlace => {
            if let Some(old) = &old {
                let mut backup = path.as_os_str().to_os_string();
                backup.push("~");
                fs::write(backup, old).map_err(|e| e.to_string())?;
            }
            // Truncate, then write in two pieces: the classic torn update.
            let mut f = fs::File::create(path).map_err(|e| e.to_string())?;
            let half = new.len() / 2;
            f.write_all(&new[..half]).map_err(|e| e.to_string())?;
            f.write_all(&new[half..]).map_err(|e| e.to_string())?;
        }
        UnsafeMode::NoLock => fstx::write(path, &new).map_err(|e| e.to_string())?,
    }
    Ok(seq)
}

/// What the workers' logs say so far.
#[derive(Default)]
struct Acks {
    /// Acknowledged sequence numbers per file.
    seqs: HashMap<String, Vec<u64>>,
    /// Violations workers saw.
    violations: Vec<String>,
    /// Update errors workers got.
    errors: Vec<String>,
}

impl Acks {
    fn read(dir: &Path) -> io::Result<Acks> {
        let mut acks = Acks::default();
        for entry in fs::read_dir(dir)? {
            let bytes = fs::read(entry?.path())?;
            // Only complete lines: a worker may be writing the last one.
            let complete = bytes
                .iter()
                .rposition(|&c| c == b'\n')
                .map_or(&bytes[..0], |i| &bytes[..=i]);
            for line in String::from_utf8_lossy(complete).lines() {
                if let Some(rest) = line.strip_prefix("A ") {
                    let mut it = rest.split(' ');
                    let (Some(name), Some(seq)) = (it.next(), it.next()) else {
                        continue;
                    };
                    if let Ok(seq) = seq.parse() {
                        acks.seqs.entry(name.to_string()).or_default().push(seq);
                    }
                } else if let Some(rest) = line.strip_prefix("V ") {
                    acks.violations.push(rest.to_string());
                } else if let Some(rest) = line.strip_prefix("E ") {
                    acks.errors.push(rest.to_string());
                }
            }
        }
        Ok(acks)
    }

    fn count(&self) -> usize {
        self.seqs.values().map(Vec::len).sum()
    }
}

/// The checker: state carried between checks.
struct Checker {
    data: PathBuf,
    acks: PathBuf,
    names: Vec<String>,
    /// Backup and target names seen to exist: they must never vanish.
    seen: HashSet<String>,
    violations: Vec<String>,
    checks: u64,
    files_checked: u64,
}

impl Checker {
    fn violation(&mut self, v: String) {
        self.violations.push(v);
    }

    /// Reads `name`, a version of `tag` (itself or one of its backups);
    /// `None` if it does not exist.
    fn read(&mut self, name: &str, tag: &str) -> Option<Result<u64, String>> {
        let bytes = match fs::read(self.data.join(name)) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if self.seen.contains(name) {
                    self.violation(format!("{name}: vanished after it existed"));
                }
                return None;
            }
            Err(e) => return Some(Err(format!("unreadable: {e}"))),
        };
        self.seen.insert(name.to_string());
        self.files_checked += 1;
        Some(version::decode(tag, &bytes))
    }

    /// Checks every file against the acknowledgements read just before.
    /// `in_flight`: a bound on updates that may have committed unacknowledged.
    fn check(&mut self, final_check: bool, in_flight: u64) -> io::Result<usize> {
        self.checks += 1;
        let acks = Acks::read(&self.acks)?;
        let names = self.names.clone();
        for name in &names {
            // Oldest first: each read is at least as old as the next.
            let b2 = format!("{name}~2");
            let b1 = format!("{name}~");
            let mut versions = Vec::new();
            for file in [&b2, &b1, name] {
                match self.read(file, name) {
                    None => {}
                    Some(Ok(seq)) => versions.push((file.clone(), seq)),
                    Some(Err(why)) => {
                        self.violation(format!("{file}: torn or mixed, does not verify: {why}"));
                    }
                }
            }
            for pair in versions.windows(2) {
                if pair[0].1 > pair[1].1 {
                    self.violation(format!(
                        "{} (seq {}) is newer than {} (seq {})",
                        pair[0].0, pair[0].1, pair[1].0, pair[1].1
                    ));
                }
            }
            let current = versions
                .iter()
                .find(|(f, _)| f == name)
                .map(|(_, seq)| *seq);
            let acked = acks.seqs.get(name.as_str()).map_or(&[][..], Vec::as_slice);
            let max_acked = acked.iter().copied().max().unwrap_or(0);
            let count = acked.len() as u64;
            let seq = current.unwrap_or(0);
            if seq < max_acked || (name == SHARED && seq < count) {
                self.violation(format!(
                    "{name}: seq {seq} but {count} acknowledged updates up to seq {max_acked}: an acknowledged update was lost"
                ));
            }
            if final_check {
                let mut sorted = acked.to_vec();
                sorted.sort_unstable();
                if let Some(dup) = sorted.windows(2).find(|w| w[0] == w[1]).map(|w| w[0]) {
                    self.violation(format!(
                        "{name}: seq {dup} acknowledged twice: two updates read the same version (lost update)"
                    ));
                }
                let bound = if name == SHARED {
                    count + in_flight
                } else {
                    max_acked + 1
                };
                if seq > bound {
                    self.violation(format!(
                        "{name}: seq {seq} exceeds acknowledged {count} plus in-flight ({bound})"
                    ));
                }
            }
        }
        if final_check {
            for v in &acks.violations {
                self.violation(format!("seen by a worker: {v}"));
            }
        }
        Ok(acks.count())
    }
}

struct Workers<'a> {
    args: &'a Args,
    exe: PathBuf,
    data: PathBuf,
    acks: PathBuf,
    children: Vec<Child>,
}

impl Workers<'_> {
    fn spawn(&self, id: usize) -> io::Result<Child> {
        let mut cmd = Command::new(&self.exe);
        cmd.arg("torture-worker")
            .arg("--data")
            .arg(&self.data)
            .arg("--acks")
            .arg(&self.acks)
            .arg("--id")
            .arg(id.to_string())
            .arg("--files")
            .arg(self.args.files.to_string())
            .arg("--durability")
            .arg(match self.args.durability {
                DurabilityArg::Durable => "durable",
                DurabilityArg::Consistent => "consistent",
                DurabilityArg::None => "none",
            })
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        if let Some(mode) = self.args.unsafe_mode {
            cmd.arg("--unsafe").arg(mode.name());
        }
        cmd.spawn()
    }

    /// Kills worker `id` with SIGKILL, reaps it, and starts it again.
    fn kill(&mut self, id: usize, restart: bool) -> io::Result<()> {
        let child = &mut self.children[id];
        // The worker may have exited already (kill then fails): still reap it.
        let _ = child.kill();
        child.wait()?;
        if restart {
            self.children[id] = self.spawn(id)?;
        }
        Ok(())
    }
}

/// Runs `fstx-lab torture`.
pub(crate) fn run(args: &Args) -> Result<ExitCode, Failure> {
    let seed = args.seed.unwrap_or_else(clock_seed);
    let (root, temporary) = match &args.dir {
        Some(dir) => (dir.clone(), false),
        None => (
            std::env::temp_dir().join(format!("fstx-torture-{}-{seed:x}", std::process::id())),
            true,
        ),
    };
    let data = root.join("data");
    let acks = root.join("acks");
    fs::create_dir_all(&data)?;
    fs::create_dir_all(&acks)?;
    let mut names = vec![SHARED.to_string()];
    for id in 0..args.processes {
        names.extend((0..args.files).map(|k| format!("w{id}-{k}")));
    }
    let mut checker = Checker {
        data: data.clone(),
        acks: acks.clone(),
        names,
        seen: HashSet::new(),
        violations: Vec::new(),
        checks: 0,
        files_checked: 0,
    };
    let mut workers = Workers {
        args,
        exe: std::env::current_exe()?,
        data: data.clone(),
        acks,
        children: Vec::new(),
    };
    for id in 0..args.processes {
        let child = workers.spawn(id)?;
        workers.children.push(child);
    }
    let mut rng = Rng::new(seed);
    let mut kills: u64 = 0;
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(args.seconds.max(0.0));
    let check_every = Duration::from_millis(100);
    let mut next_check = start + check_every;
    let run: io::Result<()> = (|| {
        while Instant::now() < deadline {
            let pause = rng.below_u64(2 * args.kill_every.max(1) + 1);
            std::thread::sleep(Duration::from_millis(pause));
            if args.processes > 0 {
                let id = rng.below(args.processes);
                workers.kill(id, true)?;
                kills += 1;
            }
            if Instant::now() >= next_check {
                checker.check(false, kills)?;
                next_check = Instant::now() + check_every;
            }
        }
        for id in 0..args.processes {
            workers.kill(id, false)?;
            kills += 1;
        }
        Ok(())
    })();
    if let Err(e) = run {
        for id in 0..workers.children.len() {
            let _ = workers.kill(id, false);
        }
        return Err(Failure::new(format!("torture: {e}")));
    }

    // After the run (every worker killed and reaped): recover, as `fstx
    // recover` does at boot, then nothing but targets, backups and lock
    // files may remain.
    if let Err(e) = fstx::recover(&data) {
        checker.violation(format!("fstx recover failed: {e}"));
    }
    for entry in fs::read_dir(&data)? {
        let name = entry?.file_name();
        if fstx::internal_name(&name).is_some_and(|k| k != fstx::InternalName::Lock) {
            checker.violation(format!(
                "{}: temporary file left after recover",
                name.to_string_lossy()
            ));
        }
    }
    let acked = checker.check(true, kills)?;
    let errors = Acks::read(&workers.acks)?.errors;

    let mode = args.unsafe_mode.map_or("fstx::update", UnsafeMode::name);
    let shared = fs::read(data.join(SHARED))
        .ok()
        .and_then(|b| version::decode(SHARED, &b).ok())
        .unwrap_or(0);
    for v in checker.violations.iter().take(20) {
        println!("violation: {v}");
    }
    if checker.violations.len() > 20 {
        println!("... and {} more violations", checker.violations.len() - 20);
    }
    let kind = |key: &str| {
        checker
            .violations
            .iter()
            .filter(|v| v.contains(key))
            .count()
    };
    let (torn, lost, vanished) = (kind("not verify"), kind("lost"), kind("vanished"));
    println!(
        "torture: violation kinds: torn {torn}, lost {lost}, vanished {vanished}, other {}",
        checker.violations.len() - torn - lost - vanished
    );
    for e in errors.iter().take(10) {
        println!("error: {e}");
    }
    println!(
        "torture: updater {mode}, processes {}, seconds {:.1}, seed {seed}, kills {kills}, \
         updates {acked}, shared counter {shared}, checks {}, files checked {}, errors {}, violations {}",
        args.processes,
        start.elapsed().as_secs_f64(),
        checker.checks,
        checker.files_checked,
        errors.len(),
        checker.violations.len(),
    );
    let failed = !checker.violations.is_empty() || !errors.is_empty();
    if failed {
        println!("torture: FAILED; files kept in {}", root.display());
        Ok(ExitCode::from(1))
    } else {
        if temporary {
            let _ = fs::remove_dir_all(&root);
        }
        println!("torture: passed");
        Ok(ExitCode::SUCCESS)
    }
}
