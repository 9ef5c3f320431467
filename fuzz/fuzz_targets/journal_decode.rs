//! The journal decoder on arbitrary bytes: it must never panic, never
//! allocate absurdly, whatever it accepts must re-encode to exactly the
//! same bytes (so nothing it accepts is ambiguous), and every accepted
//! record's paths stay inside the root (each component one name: not
//! empty, `.` or `..`, no `/` or NUL; the staged name too).
#![no_main]

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use fstx::txn::journal::{Op, Record, RelPath};
use libfuzzer_sys::fuzz_target;

fn one_name(c: &OsStr) -> bool {
    let b = c.as_bytes();
    !b.is_empty() && b != b"." && b != b".." && !b.contains(&b'/') && !b.contains(&0)
}

fn inside(p: &RelPath) -> bool {
    p.components().iter().all(|c| one_name(c))
}

fuzz_target!(|data: &[u8]| {
    if let Ok(rec) = Record::decode(data) {
        for op in &rec.ops {
            let ok = match op {
                Op::Mkdir { path, .. } | Op::Remove { path, .. } => inside(path) && !path.is_root(),
                Op::Rename { from, to, .. } => inside(from) && inside(to),
                Op::Put {
                    path,
                    stage_dir,
                    stage_name,
                    ..
                } => inside(path) && inside(stage_dir) && one_name(stage_name),
            };
            assert!(ok, "an accepted record's path leaves the root: {op:?}");
        }
        let again = rec.encode().expect("a decoded record re-encodes");
        assert_eq!(again, data, "decode/encode is not the identity");
        assert_eq!(Record::decode(&again).unwrap(), rec);
    }
});
