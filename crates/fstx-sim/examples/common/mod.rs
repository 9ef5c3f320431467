//! What the examples share: their command line, `WORKLOAD FROM TO`.

use std::ops::Range;

use fstx_sim::explore::Workload;
use fstx_sim::workloads;

/// The workload named by the first argument and the seeds `FROM..TO` named
/// by the next two.
pub(crate) fn workload_and_seeds() -> (Box<dyn Workload>, Range<u64>) {
    let args: Vec<String> = std::env::args().collect();
    let w = workloads::by_name(&args[1]).expect("workload");
    let from: u64 = args[2].parse().expect("seed");
    let to: u64 = args[3].parse().expect("seed");
    (w, from..to)
}
