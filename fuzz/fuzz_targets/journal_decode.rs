//! The journal decoder on arbitrary bytes: it must never panic, never
//! allocate absurdly, and whatever it accepts must re-encode to exactly the
//! same bytes (so nothing it accepts is ambiguous).
#![no_main]

use fstx::txn::journal::Record;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(rec) = Record::decode(data) {
        let again = rec.encode().expect("a decoded record re-encodes");
        assert_eq!(again, data, "decode/encode is not the identity");
        assert_eq!(Record::decode(&again).unwrap(), rec);
    }
});
