//! The SIGKILL test of `fstx commit --from-dir --delete-missing`, shared by
//! `fstx-cli`'s tests (the `fstx` binary, killed at random moments) and
//! `fstx-lab`'s (the same commit code paused at a phase by `fstx-lab
//! __commit --pause`, killed there). Included with `#[path]`; each test
//! uses part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fstx_testkit::TempDir;

/// The number of files each commit installs.
pub(crate) const FILES: usize = 300;

/// Regular files under `root` (excluding `.fstx-txn`), path → content.
/// Staged files would show up here too.
pub(crate) fn tree(root: &Path) -> BTreeMap<String, String> {
    // Tolerates entries vanishing mid-walk (the test polls a running writer).
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let rel = e
                .path()
                .strip_prefix(base)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if rel == ".fstx-txn" {
                continue;
            }
            match e.file_type() {
                Ok(t) if t.is_dir() => walk(base, &e.path(), out),
                Ok(_) => {
                    if let Ok(b) = std::fs::read(e.path()) {
                        out.insert(rel, String::from_utf8_lossy(&b).into_owned());
                    }
                }
                Err(_) => {}
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Content of file `i` in version `v`: versions alternate between two
/// contents (parity), so each stage directory is written once.
pub(crate) fn content(v: u32, i: usize) -> String {
    format!("version {} file {i}\n{}", v % 2, "x".repeat(200 + i % 300))
}

pub(crate) fn stage_version(stage: &Path, v: u32, files: usize) {
    let _ = std::fs::remove_dir_all(stage);
    for i in 0..files {
        let p = stage.join(format!("d{}/f{i}", i % 7));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content(v, i)).unwrap();
    }
    // Each version also has a file of its own, so --delete-missing removes
    // the other version's one.
    std::fs::write(stage.join(format!("only-v{}", v % 2)), content(v, 0)).unwrap();
}

/// Which version (parity) the whole tree is at, or why it is not one version.
pub(crate) fn version_of(root: &Path, files: usize) -> Result<u32, String> {
    let mut t = tree(root);
    t.retain(|k, _| !k.contains(".fstx-stage."));
    let v = t
        .get("d0/f0")
        .and_then(|c| c.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u32>().ok())
        .ok_or("d0/f0 missing")?;
    let mut want = BTreeMap::new();
    for i in 0..files {
        want.insert(format!("d{}/f{i}", i % 7), content(v, i));
    }
    want.insert(format!("only-v{v}"), content(v, 0));
    if t == want {
        Ok(v)
    } else {
        let diff: Vec<_> = t
            .iter()
            .filter(|(k, c)| want.get(*k) != Some(c))
            .map(|(k, _)| k.clone())
            .chain(want.keys().filter(|k| !t.contains_key(*k)).cloned())
            .take(5)
            .collect();
        Err(format!(
            "mixed tree (base version {v}), differing: {diff:?}"
        ))
    }
}

/// The phase each kill landed in, read from the disk before recovery.
#[derive(Debug, Default)]
pub(crate) struct Phases {
    pub not_started: u32,
    pub staging: u32,
    pub commit_record: u32,
    pub apply: u32,
    pub retire: u32,
    pub completed: u32,
}

pub(crate) fn has_staging(root: &Path) -> bool {
    tree(root).keys().any(|k| k.contains(".fstx-stage."))
}

/// Starts `commit` (a `fstx commit` command line up to its subcommand and
/// flags) on `ROOT --from-dir STAGE --delete-missing --quiet`, silenced.
pub(crate) fn spawn_commit(mut commit: Command, root: &Path, stage: &Path) -> Child {
    commit
        .arg(root)
        .arg("--from-dir")
        .arg(stage)
        .arg("--delete-missing")
        .arg("--quiet")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// How the kill test runs a commit and a recovery.
pub(crate) struct Tools<'a> {
    /// Starts `fstx commit ROOT --from-dir STAGE --delete-missing --quiet`,
    /// paused (`Some("PHASE:MS")`) or not.
    pub commit: &'a dyn Fn(&Path, &Path, Option<&str>) -> Child,
    /// Recovers ROOT: success, and what it said.
    pub recover: &'a dyn Fn(&Path) -> (bool, String),
}

/// The kill moments, by mode: 0, uniformly random over a whole commit; 1,
/// random in its last fifth; 2, while the commit sleeps at the commit
/// point; 3, while it sleeps before retiring; 4, just after a pause at the
/// commit point ends (applying). Modes 2 to 4 need a commit that pauses.
///
/// Runs kills with the modes in turn for `budget`, and on (up to three
/// times as long) until `done` says enough phases were hit; after each kill
/// recovers and checks the tree is entirely the old version or entirely the
/// new one, with nothing staged and no journal. Returns the phases hit.
pub(crate) fn sigkill_loop(
    d: &TempDir,
    tools: &Tools,
    modes: &[u64],
    budget: Duration,
    done: &dyn Fn(&Phases) -> bool,
) -> Phases {
    let root = d.join("root");
    std::fs::create_dir_all(&root).unwrap();
    let stages = [d.join("stage0"), d.join("stage1")];
    stage_version(&stages[0], 0, FILES);
    stage_version(&stages[1], 1, FILES);
    let commit = |stage: &Path, pause: Option<&str>| (tools.commit)(&root, stage, pause);
    assert!(commit(&stages[0], None).wait().unwrap().success());
    assert_eq!(version_of(&root, FILES), Ok(0));
    let t0 = Instant::now();
    assert!(commit(&stages[1], None).wait().unwrap().success());
    let full = t0.elapsed();
    assert_eq!(version_of(&root, FILES), Ok(1));
    let mut current = 1u32;
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    let mut rng = fstx_testkit::Rng::new(seed);
    let mut rand = move || rng.next_u64();
    let mut phases = Phases::default();
    let mut paused = 0;
    let start = Instant::now();
    let mut kills = 0;
    let journal = root.join(".fstx-txn/journal");
    while start.elapsed() < budget || (!done(&phases) && start.elapsed() < budget * 3) {
        let next = (current + 1) % 2;
        let stage = &stages[next as usize];
        let span = full.as_micros() as u64 + 1;
        let mode = modes[kills % modes.len()];
        let mut child;
        if mode < 2 {
            let at = if mode == 0 {
                rand() % span
            } else {
                span * 4 / 5 + rand() % (span / 5 + 1)
            };
            child = commit(stage, None);
            std::thread::sleep(Duration::from_micros(at));
        } else {
            // 2: in the pause after the commit point; 3: in the pause after
            // applying; 4: just after a 200 ms pause at the commit point ends
            // (so, while applying).
            let (which, ms) = match mode {
                2 => ("committed", 5000),
                3 => ("applied", 5000),
                _ => ("committed", 200),
            };
            // The paused commit creates `flag` when its pause begins.
            let flag = d.join("pause-began");
            let _ = std::fs::remove_file(&flag);
            child = commit(stage, Some(&format!("{which}:{ms}:{}", flag.display())));
            // Wait until the writer is in that phase (or finished/failed).
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let there = flag.exists();
                if there || child.try_wait().unwrap().is_some() || Instant::now() > deadline {
                    break;
                }
                std::thread::sleep(Duration::from_micros(500));
            }
            let extra = if mode == 4 { 200_000 } else { 0 };
            std::thread::sleep(Duration::from_micros(extra + rand() % 3000));
            paused += 1;
        }
        let _ = child.kill(); // SIGKILL
        let status = child.wait().unwrap();
        kills += 1;
        // The phase, from the disk, before recovery.
        let j = std::fs::read(&journal).ok();
        let v = version_of(&root, FILES);
        match (&j, &v) {
            (None, Ok(v)) if *v == next => phases.completed += 1,
            (None, _) if has_staging(&root) => phases.staging += 1,
            (None, _) => phases.not_started += 1,
            (Some(j), _) if j.len() <= 44 => phases.staging += 1,
            (Some(_), Ok(v)) if *v == current => phases.commit_record += 1,
            (Some(_), Ok(v)) if *v == next => phases.retire += 1,
            (Some(_), _) => phases.apply += 1,
        }
        let (ok, out) = (tools.recover)(&root);
        assert!(ok, "recover failed: {out}");
        match version_of(&root, FILES) {
            Ok(v) => current = v,
            other => panic!(
                "seed {seed}, kill {kills} (status {status:?}): after recovery {other:?}; recover said: {out}"
            ),
        }
        assert!(!has_staging(&root), "staging left after recovery");
        assert!(!journal.exists(), "journal left after recovery");
    }
    println!(
        "{kills} kills ({paused} in a paused phase) in {:.1}s; one commit of {FILES} files takes {:.0} ms; seed {seed}; phase at kill: {phases:?}",
        start.elapsed().as_secs_f64(),
        full.as_secs_f64() * 1e3
    );
    phases
}

/// The kill test's budget: `FSTX_KILL_SECS` (default 20) seconds, shared by
/// its two halves (random kills in `fstx-cli`, paused ones in `fstx-lab`).
pub(crate) fn budget() -> Duration {
    let secs: u64 = std::env::var("FSTX_KILL_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    Duration::from_secs(secs) / 2
}
