//! End-to-end tests of `fstx record` and `fstx read` / `fstx write
//! --verified`: exit codes, one clean error line, fallback reported.

use std::io::Write;
use std::process::Stdio;

mod support;

use fstx_testkit::TempDir;
use support::fstx;

/// Runs fstx with `args` and `input` on stdin; returns (exit code, stdout, stderr).
fn run(args: &[&str], input: &[u8]) -> (i32, Vec<u8>, String) {
    let mut child = fstx()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _ = child.stdin.take().unwrap().write_all(input);
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        out.stdout,
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn one_line_error(stderr: &str, needle: &str) {
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("fstx: "), "{stderr}");
    assert!(stderr.contains(needle), "{stderr}");
}

#[test]
fn record_write_and_read() {
    let d = TempDir::new("cli-record");
    let r = d.join("rec");
    let r = r.to_str().unwrap();
    let (code, _, err) = run(&["record", "write", r], b"x");
    assert_eq!(code, 1);
    one_line_error(&err, "--size");
    assert_eq!(run(&["record", "write", r, "--size", "8"], b"one").0, 0);
    assert_eq!(run(&["record", "write", r], b"two").0, 0);
    assert_eq!(
        run(&["record", "read", r], b""),
        (0, b"two".to_vec(), String::new())
    );
    // Too large: exit 1, nothing written.
    let (code, _, err) = run(&["record", "write", r], b"123456789");
    assert_eq!(code, 1);
    one_line_error(&err, "larger than the record's largest 8");
    assert_eq!(run(&["record", "read", r], b"").1, b"two");
    // Another size needs --init.
    let (code, _, err) = run(&["record", "write", r, "--size", "9"], b"x");
    assert_eq!(code, 1);
    one_line_error(&err, "--init");
    assert_eq!(
        run(
            &["record", "write", r, "--size", "9", "--init"],
            b"123456789"
        )
        .0,
        0
    );
    assert_eq!(run(&["record", "read", r], b"").1, b"123456789");
    // A file that is not a record; a symlink to a file.
    let other = d.join("other");
    std::fs::write(&other, b"text").unwrap();
    let (code, _, err) = run(
        &["record", "write", other.to_str().unwrap(), "--size", "9"],
        b"x",
    );
    assert_eq!(code, 1);
    one_line_error(&err, "holds no record");
    let (code, _, err) = run(&["record", "read", other.to_str().unwrap()], b"");
    assert_eq!(code, 1);
    one_line_error(&err, "no valid value");
    let link = d.join("link");
    std::os::unix::fs::symlink("rec", &link).unwrap();
    let (code, _, err) = run(&["record", "read", link.to_str().unwrap()], b"");
    assert_eq!(code, 1);
    one_line_error(&err, "only to a block device");
}

#[test]
fn verified_write_and_read_with_fallback() {
    let d = TempDir::new("cli-verified");
    let f = d.join("cfg");
    let f = f.to_str().unwrap();
    assert_eq!(run(&["write", "--verified", f], b"v1").0, 0);
    std::fs::copy(f, d.join("cfg~")).unwrap();
    assert_eq!(run(&["write", "--verified", f], b"v2").0, 0);
    assert_eq!(run(&["read", f], b""), (0, b"v2".to_vec(), String::new()));
    // Damage FILE: v1 from cfg~, and one line on stderr saying so.
    let mut b = std::fs::read(f).unwrap();
    let last = b.len() - 1;
    b[last] ^= 1;
    std::fs::write(f, &b).unwrap();
    let (code, out, err) = run(&["read", f], b"");
    assert_eq!((code, out.as_slice()), (0, &b"v1"[..]));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("fell back to") && err.contains("payload checksum"),
        "{err}"
    );
    // Nothing valid: exit 1, every candidate named.
    std::fs::write(d.join("cfg~"), b"plain").unwrap();
    let (code, out, err) = run(&["read", f], b"");
    assert_eq!((code, out.len()), (1, 0));
    one_line_error(&err, "no envelope");
    assert!(err.contains("payload checksum"), "{err}");
    // Plain files: read as is, unless --require-verified.
    let p = d.join("plain");
    std::fs::write(&p, b"as is").unwrap();
    let p = p.to_str().unwrap();
    assert_eq!(run(&["read", p], b"").1, b"as is");
    let (code, _, err) = run(&["read", "--require-verified", p], b"");
    assert_eq!(code, 1);
    one_line_error(&err, "no envelope");
}
