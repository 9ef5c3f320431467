//! The workloads: fstx's protocols driven on the simulator, with what they
//! promise recorded for the checks.

pub mod replace;

use crate::explore::Workload;

/// The workload with this [`name`](Workload::name), for replay.
pub fn by_name(name: &str) -> Option<Box<dyn Workload>> {
    if let Some(w) = replace::parse(name) {
        return Some(Box::new(w));
    }
    None
}
