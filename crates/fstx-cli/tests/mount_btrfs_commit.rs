//! On real btrfs, a durable replace ends with a btrfs transaction commit
//! (`syncfs`), not with a directory fsync alone: btrfs can let a directory
//! fsync return before the rename is on disk (docs/design.md §6).

use powercut::log::Record;
use powercut::{Config, FsConfig};

/// Offset of btrfs's primary superblock, and of `log_root` inside it.
const SUPER: u64 = 64 * 1024;
const LOG_ROOT: usize = 96;

#[test]
fn mount_btrfs_replace_commits_the_transaction() {
    let fstx = env!("CARGO_BIN_EXE_fstx");
    let writes = 10;
    let mut cfg = Config::new(
        format!("for i in $(seq {writes}); do echo $i | {fstx} write f || exit 1; done"),
        "true",
    );
    // No noise fsyncs and btrfs's default 30 s commit interval: without
    // fstx's syncfs, the recording has (almost) no transaction commit.
    cfg.noise = None;
    cfg.short_commit = false;
    let rec = powercut::run::record(&cfg, FsConfig::Btrfs).expect("record fstx write on btrfs");
    let (mut commits, mut log_syncs) = (0, 0);
    for r in &rec.log.records {
        if let Record::Write { off, len, data } = *r {
            if off == SUPER && len >= 4096 {
                let at = usize::try_from(data).unwrap() + LOG_ROOT;
                let log_root = u64::from_le_bytes(rec.log.data[at..at + 8].try_into().unwrap());
                if log_root == 0 {
                    commits += 1;
                } else {
                    log_syncs += 1;
                }
            }
        }
    }
    eprintln!("{writes} replaces: {commits} commit superblocks, {log_syncs} log-sync superblocks");
    assert!(
        commits >= writes,
        "{writes} replaces on btrfs wrote only {commits} transaction-commit superblocks \
         ({log_syncs} log syncs): the directory flush did not commit the transaction"
    );
}
