//! Debug helper: prints the trace and crash-state counts of one seed.
use fstx_sim::explore::Workload;
use fstx_sim::history::History;
use fstx_sim::rng::Rng;
use fstx_sim::workloads::replace::{Level, Replace};
use fstx_sim::{Profile, SimFs};

fn main() {
    let seed: u64 = std::env::args().nth(1).map_or(1, |s| s.parse().unwrap());
    let w = Replace {
        level: Level::Durable,
        bugs: fstx_sim::bugs::FlushBugs::NONE,
        handle: false,
    };
    let fs = SimFs::new(seed);
    let mut h = History::default();
    w.setup(seed, &fs, &mut h);
    fs.record_trace(true);
    fs.record_snapshots(true);
    w.run(seed, &fs, &mut h);
    let snaps = fs.take_snapshots();
    for (i, line) in fs.trace().iter().enumerate() {
        let s = &snaps[i + 1];
        let n = s
            .persist
            .crash_states(Profile::Weak, 64, &mut Rng::new(1))
            .len();
        println!("{line}    [pending {} states {n}]", s.persist.pending_len());
    }
}
