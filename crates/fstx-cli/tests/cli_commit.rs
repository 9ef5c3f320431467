//! End-to-end tests of `fstx commit` and `fstx recover` on transaction
//! roots, with the real binary: the CLI operations, and the SIGKILL test
//! (a commit of a few hundred files killed at random moments, recovered,
//! checked all-old or all-new, kills counted per phase).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn fstx() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fstx"))
}

struct Dir(PathBuf);
impl Dir {
    fn new(tag: &str) -> Dir {
        let p = std::env::temp_dir().join(format!("fstx-cli-commit-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }
    fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(cmd: &mut Command) -> (bool, String, String) {
    let o = cmd.output().unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn commit_operations_and_errors() {
    let d = Dir::new("ops");
    let root = d.join("root");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("a"), "a").unwrap();
    std::fs::write(root.join("old"), "old").unwrap();
    std::fs::write(d.join("src"), "from a file").unwrap();
    let (ok, out, err) = run(fstx()
        .arg("commit")
        .arg(&root)
        .args(["--put", &format!("n/b={}", d.join("src").display())])
        .args(["--rename", "a=moved/a", "--delete", "old", "--mkdir", "e/f"]));
    assert!(ok, "{err}");
    assert!(out.contains("committed transaction 1"), "{out}");
    assert_eq!(
        std::fs::read_to_string(root.join("n/b")).unwrap(),
        "from a file"
    );
    assert_eq!(std::fs::read_to_string(root.join("moved/a")).unwrap(), "a");
    assert!(!root.join("old").exists() && !root.join("a").exists());
    assert!(root.join("e/f").is_dir());
    // Standard input.
    let mut c = fstx()
        .arg("commit")
        .arg(&root)
        .args(["--put", "stdin=-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::io::Write::write_all(c.stdin.as_mut().unwrap(), b"piped").unwrap();
    drop(c.stdin.take());
    assert!(c.wait().unwrap().success());
    assert_eq!(
        std::fs::read_to_string(root.join("stdin")).unwrap(),
        "piped"
    );
    // Errors leave everything as it was: one bad operation fails them all.
    let before = tree(&root);
    for bad in [
        vec!["--put", "/abs=src"],
        vec!["--put", "../up=src"],
        vec!["--delete", "missing"],
        vec!["--put", "x=/nonexistent/file"],
        vec!["--put", "ok=-", "--put", "ok2=-"],
        vec!["--rename", "nonsense"],
    ] {
        let (ok, _, err) = run(fstx()
            .arg("commit")
            .arg(&root)
            .args(["--put", &format!("fine={}", d.join("src").display())])
            .args(&bad)
            .stdin(Stdio::null()));
        assert!(!ok, "{bad:?}");
        assert!(err.starts_with("fstx: "), "{err}");
        assert_eq!(tree(&root), before, "{bad:?} changed the tree");
    }
}

#[test]
fn from_dir_installs_a_set_atomically() {
    let d = Dir::new("fromdir");
    let root = d.join("root");
    let stage = d.join("stage");
    std::fs::create_dir_all(root.join("conf.d")).unwrap();
    std::fs::create_dir_all(stage.join("conf.d")).unwrap();
    std::fs::write(root.join("main.conf"), "old main").unwrap();
    std::fs::write(root.join("conf.d/stale.conf"), "stale").unwrap();
    std::fs::write(stage.join("main.conf"), "new main").unwrap();
    std::fs::write(stage.join("conf.d/new.conf"), "new").unwrap();
    let (ok, _, err) = run(fstx()
        .arg("commit")
        .arg(&root)
        .arg("--from-dir")
        .arg(&stage));
    assert!(ok, "{err}");
    assert!(root.join("conf.d/stale.conf").exists());
    let (ok, _, err) = run(fstx()
        .arg("commit")
        .arg(&root)
        .arg("--from-dir")
        .arg(&stage)
        .arg("--delete-missing"));
    assert!(ok, "{err}");
    let want: BTreeMap<String, String> = [("conf.d/new.conf", "new"), ("main.conf", "new main")]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(tree(&root), want);
}

/// Regular files under `root` (excluding `.fstx-txn`), path → content.
/// Staged files would show up here too.
fn tree(root: &Path) -> BTreeMap<String, String> {
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
fn content(v: u32, i: usize) -> String {
    format!("version {} file {i}\n{}", v % 2, "x".repeat(200 + i % 300))
}

fn stage_version(stage: &Path, v: u32, files: usize) {
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
fn version_of(root: &Path, files: usize) -> Result<u32, String> {
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

#[derive(Debug, Default)]
struct Phases {
    not_started: u32,
    staging: u32,
    commit_record: u32,
    apply: u32,
    retire: u32,
    completed: u32,
}

/// `fstx commit --from-dir --delete-missing` of 300 files, `SIGKILL`ed many
/// times; after each kill `fstx recover`, then the tree must be entirely the
/// old version or entirely the new one, with nothing staged and no journal.
/// The phase each kill landed in is read from the disk before recovery.
///
/// Kill moments, in turn: uniformly random over a whole commit; random in
/// its last fifth; while the commit sleeps at the commit point; while it
/// sleeps before retiring; just after a pause at the commit point ends
/// (applying). The pauses use the test hook `FSTX_TXN_PHASE_PAUSE`, since the
/// phases after staging last milliseconds.
#[test]
fn sigkill_during_commit_then_recover() {
    const FILES: usize = 300;
    let budget = Duration::from_secs(
        std::env::var("FSTX_KILL_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(20),
    );
    let d = Dir::new("kill");
    let root = d.join("root");
    std::fs::create_dir_all(&root).unwrap();
    let stages = [d.join("stage0"), d.join("stage1")];
    stage_version(&stages[0], 0, FILES);
    stage_version(&stages[1], 1, FILES);
    let commit = |stage: &Path, pause: Option<&str>| {
        let mut c = fstx();
        c.arg("commit")
            .arg(&root)
            .arg("--from-dir")
            .arg(stage)
            .arg("--delete-missing")
            .arg("--quiet")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(p) = pause {
            c.env("FSTX_TXN_PHASE_PAUSE", p);
        }
        c.spawn().unwrap()
    };
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
    let mut x = seed;
    let mut rand = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut phases = Phases::default();
    let mut paused = 0;
    let start = Instant::now();
    let mut kills = 0;
    let journal = root.join(".fstx-txn/journal");
    let all_hit = |p: &Phases| p.staging > 0 && p.commit_record > 0 && p.apply > 0 && p.retire > 0;
    // Run for the budget, and on (up to three times as long) until every
    // phase was hit.
    while start.elapsed() < budget || (!all_hit(&phases) && start.elapsed() < budget * 3) {
        let next = (current + 1) % 2;
        let stage = &stages[next as usize];
        let span = full.as_micros() as u64 + 1;
        let mode = kills % 5;
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
            child = commit(stage, Some(&format!("{which}:{ms}")));
            // Wait until the writer is in that phase (or finished/failed).
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let big = std::fs::metadata(&journal).is_ok_and(|m| m.len() > 44);
                let there = big && (which == "committed" || version_of(&root, FILES) == Ok(next));
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
        let (ok, out, err) = run(fstx().arg("recover").arg(&root));
        assert!(ok, "recover failed: {err}");
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
    assert!(phases.staging > 0, "{phases:?}");
    assert!(phases.commit_record > 0, "{phases:?}");
    assert!(phases.apply > 0, "{phases:?}");
    assert!(phases.retire > 0, "{phases:?}");
}

fn has_staging(root: &Path) -> bool {
    tree(root).keys().any(|k| k.contains(".fstx-stage."))
}
