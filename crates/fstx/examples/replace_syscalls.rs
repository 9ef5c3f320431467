//! A tiny program for counting the system calls of a replace with strace.
//!
//! `replace_syscalls DIR N`: writes `DIR/f` with 4 KiB once (`fstx::write`,
//! the one-shot call), prints a marker line (`write(2, "--mark--")`), then
//! replaces `DIR/f` N more times the same way. Count the calls between
//! markers with `strace -f -e trace=all`.
fn main() {
    let mut args = std::env::args_os().skip(1);
    let dir = std::path::PathBuf::from(args.next().expect("DIR"));
    let n: usize = args
        .next()
        .map_or(3, |s| s.to_string_lossy().parse().expect("N"));
    let data = vec![7u8; 4096];
    let path = dir.join("f");
    std::fs::write(&path, b"old").unwrap();
    for _ in 0..n {
        eprintln!("--mark--");
        fstx::write(&path, &data).unwrap();
    }
    eprintln!("--mark--");
}
