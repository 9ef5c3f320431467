//! A tiny program for counting the system calls of a replace with strace.
//!
//! `replace_syscalls DIR N [handle]`: replaces `DIR/f` with 4 KiB N times,
//! with `fstx::write` (the one-shot call) or, given `handle`, through one
//! `fstx::Dir` opened before the first marker. Before each replace and
//! after the last it prints a marker line (`write(2, "--mark--\n")`).
//! Count the calls between markers:
//!
//! ```text
//! strace -f -o trace target/release/examples/replace_syscalls /tmp/x 3 handle
//! ```
fn main() {
    let mut args = std::env::args_os().skip(1);
    let dir = std::path::PathBuf::from(args.next().expect("DIR"));
    let n: usize = args
        .next()
        .map_or(3, |s| s.to_string_lossy().parse().expect("N"));
    let handle = args.next().is_some_and(|a| a == "handle");
    let data = vec![7u8; 4096];
    let path = dir.join("f");
    std::fs::write(&path, b"old").unwrap();
    let d = handle.then(|| fstx::Dir::open(&dir).unwrap());
    for _ in 0..n {
        eprintln!("--mark--");
        match &d {
            Some(d) => d.write("f", &data).unwrap(),
            None => fstx::write(&path, &data).unwrap(),
        }
    }
    eprintln!("--mark--");
}
