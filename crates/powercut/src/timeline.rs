//! A compact picture of one recording for reports: what reached the disk
//! along the record index (writes, zeroing, flushes, marks), and how many
//! crash states were checked where. Bucketed, so a log of 100k records
//! stays a few kilobytes in the JSON report.

use serde::{Deserialize, Serialize};

use crate::log::{Log, Record};
use crate::replay::StateSpec;

/// Buckets at most; a log shorter than this gets one bucket per crash point.
pub const MAX_BUCKETS: usize = 500;
/// Marks listed by text at most (the per-bucket counts include all of them).
pub const MAX_LISTED_MARKS: usize = 300;
/// Characters of a listed mark's text kept.
const MARK_TEXT: usize = 60;

/// One mark the workload wrote, at its record index.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineMark {
    /// Index of the mark record in the log.
    pub at: usize,
    /// Its text (shortened to 60 characters).
    pub text: String,
}

/// The recording and the checked crash states, bucketed along the log.
///
/// Bucket `b` covers crash points (and records) `b * bucket .. (b + 1) * bucket`;
/// there are `records + 1` crash points (a cut before each record and after
/// the last).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeline {
    /// Records in the log.
    pub records: usize,
    /// Records (crash points) per bucket.
    pub bucket: usize,
    /// Write records per bucket.
    pub writes: Vec<u32>,
    /// Zeroing/discard records per bucket.
    pub zeros: Vec<u32>,
    /// Flush records per bucket.
    pub flushes: Vec<u32>,
    /// Mark records per bucket (acknowledgements included).
    pub marks: Vec<u32>,
    /// Marks starting with `ack` per bucket.
    pub acks: Vec<u32>,
    /// Checked crash states per bucket, by their point.
    pub checked: Vec<u32>,
    /// Distinct crash points with at least one checked state.
    pub points_checked: usize,
    /// Most states checked at one crash point.
    pub max_states_at_point: usize,
    /// Checked states with a torn write.
    pub torn: usize,
    /// Checked states with a lying-flash corruption.
    pub lies: usize,
    /// The first marks (at most [`MAX_LISTED_MARKS`]), for labels.
    pub listed_marks: Vec<TimelineMark>,
}

impl Timeline {
    /// Builds the timeline of `log` and the states chosen for checking.
    pub fn new<'a>(log: &Log, states: impl IntoIterator<Item = &'a StateSpec>) -> Timeline {
        let records = log.records.len();
        let bucket = (records + 1).div_ceil(MAX_BUCKETS).max(1);
        let n = (records + 1).div_ceil(bucket);
        let mut t = Timeline {
            records,
            bucket,
            writes: vec![0; n],
            zeros: vec![0; n],
            flushes: vec![0; n],
            marks: vec![0; n],
            acks: vec![0; n],
            checked: vec![0; n],
            ..Timeline::default()
        };
        for (i, r) in log.records.iter().enumerate() {
            let b = i / bucket;
            match r {
                Record::Write { .. } => t.writes[b] += 1,
                Record::Zero { .. } => t.zeros[b] += 1,
                Record::Flush => t.flushes[b] += 1,
                Record::Mark(m) => {
                    t.marks[b] += 1;
                    if m.starts_with("ack") {
                        t.acks[b] += 1;
                    }
                    if t.listed_marks.len() < MAX_LISTED_MARKS {
                        t.listed_marks.push(TimelineMark {
                            at: i,
                            text: m.chars().take(MARK_TEXT).collect(),
                        });
                    }
                }
            }
        }
        let mut per_point: std::collections::HashMap<usize, usize> =
            std::collections::HashMap::new();
        for s in states {
            if let Some(c) = t.checked.get_mut(s.point / bucket) {
                *c += 1;
            }
            *per_point.entry(s.point).or_default() += 1;
            t.torn += usize::from(s.torn.is_some());
            t.lies += usize::from(s.lie.is_some());
        }
        t.points_checked = per_point.len();
        t.max_states_at_point = per_point.values().copied().max().unwrap_or(0);
        t
    }

    /// Number of buckets.
    pub fn buckets(&self) -> usize {
        self.writes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(point: usize) -> StateSpec {
        StateSpec {
            point,
            keep: vec![],
            torn: None,
            lie: None,
        }
    }

    #[test]
    fn small_logs_get_one_bucket_per_point() {
        let mut log = Log::default();
        log.push_write(0, &[1; 512]);
        log.records.push(Record::Zero { off: 0, len: 512 });
        log.records.push(Record::Flush);
        log.records.push(Record::Mark("ack 1".into()));
        log.records.push(Record::Mark("start 2".into()));
        let states = [spec(0), spec(3), spec(3), spec(5)];
        let t = Timeline::new(&log, &states);
        assert_eq!((t.records, t.bucket, t.buckets()), (5, 1, 6));
        assert_eq!(t.writes, [1, 0, 0, 0, 0, 0]);
        assert_eq!(t.zeros, [0, 1, 0, 0, 0, 0]);
        assert_eq!(t.flushes, [0, 0, 1, 0, 0, 0]);
        assert_eq!(t.marks, [0, 0, 0, 1, 1, 0]);
        assert_eq!(t.acks, [0, 0, 0, 1, 0, 0]);
        assert_eq!(t.checked, [1, 0, 0, 2, 0, 1]);
        assert_eq!((t.points_checked, t.max_states_at_point), (3, 2));
        assert_eq!(t.listed_marks[1].at, 4);
    }

    #[test]
    fn a_long_log_stays_small() {
        let mut log = Log::default();
        for i in 0..100_000u64 {
            if i % 10 == 9 {
                log.records.push(Record::Flush);
            } else {
                log.records.push(Record::Zero { off: 0, len: 512 });
            }
        }
        let states: Vec<StateSpec> = (0..=100_000).step_by(7).map(spec).collect();
        let t = Timeline::new(&log, &states);
        assert!(t.buckets() <= MAX_BUCKETS, "{}", t.buckets());
        assert_eq!(t.zeros.iter().sum::<u32>(), 90_000);
        assert_eq!(t.flushes.iter().sum::<u32>(), 10_000);
        assert_eq!(t.checked.iter().sum::<u32>() as usize, states.len());
        assert!(serde_json::to_string(&t).unwrap().len() < 20_000);
    }
}
