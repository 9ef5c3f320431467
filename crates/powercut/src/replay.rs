//! Crash states: which writes of the log a power cut leaves on the disk.
//!
//! A crash at point `p` means records `0..p` were issued. Every write
//! completed before the last FLUSH below `p` is durable; the writes after it
//! sat in the volatile disk cache and may each be lost (all subsets when
//! few, seeded random subsets otherwise), optionally torn at 512-byte
//! sectors. The "lying flash" fault additionally corrupts sectors of a write
//! that was already flushed, shortly before the cut.
//!
//! States are deduplicated by a hash of the resulting image (plus the number
//! of marks the checker sees), computed incrementally without building images.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::{xxh3_128, xxh3_128_with_seed};

use crate::disk::{SectorMap, Src};
use crate::log::{Log, Record, SECTOR};
use crate::rng::Rng;

/// One crash state, reproducible from the log alone.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StateSpec {
    /// Records `0..point` were issued before the power failed.
    pub point: usize,
    /// The volatile writes (record indices after the last flush) that reached the media.
    pub keep: Vec<u32>,
    /// A kept write that was torn: only the sectors chosen by the seed landed.
    pub torn: Option<(u32, u64)>,
    /// A flushed write whose sectors chosen by the seed were corrupted (lying flash).
    pub lie: Option<(u32, u64)>,
}

impl StateSpec {
    /// A cut before record `point` that kept the volatile writes `keep`
    /// (no tear, no lie).
    pub fn kept(point: usize, keep: &[u32]) -> StateSpec {
        StateSpec {
            point,
            keep: keep.to_vec(),
            torn: None,
            lie: None,
        }
    }
}

impl fmt::Display for StateSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{}", self.point)?;
        if !self.keep.is_empty() {
            let k: Vec<String> = self.keep.iter().map(u32::to_string).collect();
            write!(f, ":k{}", k.join(","))?;
        }
        if let Some((r, s)) = self.torn {
            write!(f, ":t{r}/{s}")?;
        }
        if let Some((r, s)) = self.lie {
            write!(f, ":l{r}/{s}")?;
        }
        Ok(())
    }
}

impl FromStr for StateSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<StateSpec, String> {
        let bad = || format!("bad state `{s}` (expected like p12:k3,5:t5/77:l2/9)");
        let mut spec = StateSpec {
            point: 0,
            keep: vec![],
            torn: None,
            lie: None,
        };
        let mut parts = s.split(':');
        spec.point = parts
            .next()
            .and_then(|p| p.strip_prefix('p'))
            .and_then(|p| p.parse().ok())
            .ok_or_else(bad)?;
        let pair = |v: &str| -> Option<(u32, u64)> {
            let (a, b) = v.split_once('/')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        };
        for part in parts {
            if let Some(k) = part.strip_prefix('k') {
                spec.keep = k
                    .split(',')
                    .map(|x| x.parse().map_err(|_| bad()))
                    .collect::<Result<_, _>>()?;
            } else if let Some(t) = part.strip_prefix('t') {
                spec.torn = Some(pair(t).ok_or_else(bad)?);
            } else if let Some(l) = part.strip_prefix('l') {
                spec.lie = Some(pair(l).ok_or_else(bad)?);
            } else {
                return Err(bad());
            }
        }
        Ok(spec)
    }
}

fn last_flush_before(log: &Log, point: usize) -> Option<usize> {
    log.records[..point]
        .iter()
        .rposition(|r| matches!(r, Record::Flush))
}

fn chosen(seed: u64, sector: u64) -> bool {
    Rng::new(seed ^ sector.wrapping_mul(0x2545_F491_4F6C_DD1D)).coin()
}

/// Calls `f(sector, src)` for every sector record `rec` writes (all of them,
/// or only those a tear with `torn_seed` keeps).
fn for_sectors(log: &Log, rec: usize, torn_seed: Option<u64>, mut f: impl FnMut(u64, Src)) {
    let (off, len, data) = match log.records[rec] {
        Record::Write { off, len, data } => (off, len, Some(data)),
        Record::Zero { off, len } => (off, len, None),
        _ => return,
    };
    let first = off.div_ceil(SECTOR);
    let last = (off + len) / SECTOR; // exclusive; partial sectors are ignored (never happens)
    for s in first..last {
        if let Some(seed) = torn_seed {
            if !chosen(seed, s) {
                continue;
            }
        }
        let src = match data {
            Some(d) => Src::Log(d + s * SECTOR - off),
            None => Src::Zero,
        };
        f(s, src);
    }
}

/// The sectors of the crash image `spec` describes (those not from the base).
pub fn sector_map(log: &Log, spec: &StateSpec) -> SectorMap {
    let mut map = SectorMap::new();
    add_flushed(log, 0, durable_end(log, spec), &mut map);
    map.extend(overlay_map(log, spec));
    map
}

/// The records `0..durable_end` reached the media for sure in the state
/// `spec` (everything before the last flush before its cut).
pub fn durable_end(log: &Log, spec: &StateSpec) -> usize {
    last_flush_before(log, spec.point).unwrap_or(0)
}

/// Adds the sectors records `from..to` write to `map` (later ones win).
pub fn add_flushed(log: &Log, from: usize, to: usize, map: &mut SectorMap) {
    for i in from..to {
        for_sectors(log, i, None, |s, src| {
            map.insert(s, src);
        });
    }
}

/// What `spec` lays over its flushed records: the volatile writes it keeps
/// (a torn one only in part) and a lying-flash corruption.
pub fn overlay_map(log: &Log, spec: &StateSpec) -> SectorMap {
    let mut map = SectorMap::new();
    for &k in &spec.keep {
        let torn = spec.torn.filter(|t| t.0 == k).map(|t| t.1);
        for_sectors(log, k as usize, torn, |s, src| {
            map.insert(s, src);
        });
    }
    if let Some((rec, seed)) = spec.lie {
        for_sectors(log, rec as usize, Some(seed), |s, _| {
            map.insert(s, Src::Garbage(seed ^ s));
        });
    }
    map
}

/// Every sector whose content can differ between the crash images `prev`
/// and `next`: those written by the records flushed in one and not the
/// other, by the writes either keeps, and by a lying-flash record of
/// either. Work in proportion to how far apart the states are, not to the
/// size of their sector maps.
pub fn changed_sectors(log: &Log, prev: &StateSpec, next: &StateSpec) -> Vec<u64> {
    let d1 = last_flush_before(log, prev.point).unwrap_or(0);
    let d2 = last_flush_before(log, next.point).unwrap_or(0);
    let kept = prev.keep.iter().chain(&next.keep).map(|&k| k as usize);
    let lied = [prev.lie, next.lie]
        .into_iter()
        .flatten()
        .map(|(r, _)| r as usize);
    let mut out = Vec::new();
    for rec in (d1.min(d2)..d1.max(d2)).chain(kept).chain(lied) {
        for_sectors(log, rec, None, |s, _| out.push(s));
    }
    out
}

/// The marks a checker of `spec` gets: those written before the crash point.
pub fn marks_before(log: &Log, point: usize) -> Vec<String> {
    log.records[..point]
        .iter()
        .filter_map(|r| match r {
            Record::Mark(m) => Some(m.clone()),
            _ => None,
        })
        .collect()
}

/// How to choose crash states.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Enumeration {
    /// Volatile sets up to this size are enumerated exhaustively.
    pub exhaustive_up_to: usize,
    /// Random subsets per crash point when the volatile set is larger.
    pub random_subsets: usize,
    /// Add torn-write variants (this many per crash point).
    pub torn: usize,
    /// Add lying-flash variants (this many per crash point).
    pub lying_flash: usize,
    /// Keep at most this many distinct states (a seeded sample; 0 = no cap).
    pub max_states: usize,
    /// Seed for every random choice.
    pub seed: u64,
}

impl Default for Enumeration {
    fn default() -> Enumeration {
        Enumeration {
            exhaustive_up_to: 5,
            random_subsets: 8,
            torn: 0,
            lying_flash: 0,
            max_states: 2000,
            seed: 1,
        }
    }
}

/// The chosen states and the coverage figures.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Coverage {
    /// Crash points considered (record boundaries).
    pub crash_points: usize,
    /// Largest number of subsets tried at one point.
    pub max_subsets_per_point: usize,
    /// Candidate states generated (before dedup).
    pub candidates: usize,
    /// Distinct images among the candidates.
    pub distinct_images: usize,
    /// Distinct (image, marks) states among the candidates.
    pub distinct_states: usize,
    /// States selected for checking (≤ `max_states`).
    pub selected: usize,
}

struct Hasher<'a> {
    log: &'a Log,
    base: &'a [u8],
    base_cache: HashMap<u64, u128>,
}

fn mix(sector: u64, content: u128) -> u128 {
    xxh3_128_with_seed(&content.to_le_bytes(), sector)
}

impl Hasher<'_> {
    fn base_term(&mut self, s: u64) -> u128 {
        let base = self.base;
        *self.base_cache.entry(s).or_insert_with(|| {
            let a = (s * SECTOR) as usize;
            mix(s, xxh3_128(&base[a..a + SECTOR as usize]))
        })
    }

    /// The contribution of sector `s` holding `src`, relative to the base.
    fn term(&mut self, s: u64, src: Src) -> u128 {
        let content = match src {
            Src::Log(d) => xxh3_128(&self.log.data[d as usize..(d + SECTOR) as usize]),
            Src::Zero => xxh3_128(&[0u8; SECTOR as usize]),
            Src::Garbage(seed) => u128::from(seed) ^ (0xDEAD_u128 << 64),
        };
        mix(s, content).wrapping_sub(self.base_term(s))
    }
}

/// Chooses the crash states of `log` over `base` and deduplicates them.
pub fn enumerate(log: &Log, base: &[u8], e: &Enumeration) -> (Vec<(StateSpec, u128)>, Coverage) {
    let mut h = Hasher {
        log,
        base,
        base_cache: HashMap::new(),
    };
    let mut rng = Rng::new(e.seed);
    let mut cov = Coverage {
        crash_points: log.records.len() + 1,
        ..Coverage::default()
    };

    // Durable sectors so far (sector -> term), and their sum.
    let mut durable: HashMap<u64, u128> = HashMap::new();
    let mut durable_sum: u128 = 0;
    // Durable writes of the last flushed epoch (lying-flash targets).
    let mut last_epoch: Vec<u32> = Vec::new();
    let mut volatile: Vec<u32> = Vec::new();
    let mut marks = 0usize;
    let mut seen: HashSet<(u128, usize)> = HashSet::new();
    let mut images: HashSet<u128> = HashSet::new();
    let mut out: Vec<(StateSpec, u128)> = Vec::new();

    let mut consider = |h: &mut Hasher<'_>,
                        durable: &HashMap<u64, u128>,
                        durable_sum: u128,
                        spec: StateSpec,
                        marks: usize,
                        cov: &mut Coverage| {
        cov.candidates += 1;
        let mut diff: HashMap<u64, u128> = HashMap::new();
        for &k in &spec.keep {
            let torn = spec.torn.filter(|t| t.0 == k).map(|t| t.1);
            for_sectors(log, k as usize, torn, |s, src| {
                diff.insert(s, h.term(s, src));
            });
        }
        if let Some((rec, seed)) = spec.lie {
            for_sectors(log, rec as usize, Some(seed), |s, _| {
                diff.insert(s, h.term(s, Src::Garbage(seed ^ s)));
            });
        }
        let mut sum = durable_sum;
        for (s, t) in diff {
            sum = sum
                .wrapping_sub(durable.get(&s).copied().unwrap_or(0))
                .wrapping_add(t);
        }
        images.insert(sum);
        if seen.insert((sum, marks)) {
            out.push((spec, sum));
        }
    };

    for p in 0..=log.records.len() {
        if p > 0 {
            match &log.records[p - 1] {
                Record::Flush => {
                    last_epoch.clear();
                    for &w in &volatile {
                        for_sectors(log, w as usize, None, |s, src| {
                            let t = h.term(s, src);
                            let old = durable.insert(s, t).unwrap_or(0);
                            durable_sum = durable_sum.wrapping_sub(old).wrapping_add(t);
                        });
                        last_epoch.push(w);
                    }
                    volatile.clear();
                }
                Record::Mark(_) => marks += 1,
                r if r.range().is_some() => volatile.push((p - 1) as u32),
                _ => {}
            }
        }
        // The in-order prefix state at every point.
        let prefix = StateSpec {
            point: p,
            keep: volatile.clone(),
            torn: None,
            lie: None,
        };
        consider(&mut h, &durable, durable_sum, prefix, marks, &mut cov);
        // Subsets, tears and lies at the end of each segment (before a flush,
        // a mark, or the end): subsets there cover the points inside it.
        let segment_end = match log.records.get(p) {
            None | Some(Record::Flush | Record::Mark(_)) => true,
            Some(_) => false,
        };
        if !segment_end {
            continue;
        }
        let n = volatile.len();
        let mut subsets: BTreeSet<Vec<u32>> = BTreeSet::new();
        if n <= e.exhaustive_up_to {
            for mask in 0u64..(1u64 << n) {
                subsets.insert(
                    (0..n)
                        .filter(|i| mask >> i & 1 == 1)
                        .map(|i| volatile[i])
                        .collect(),
                );
            }
        } else {
            subsets.insert(Vec::new());
            for _ in 0..e.random_subsets {
                subsets.insert(volatile.iter().copied().filter(|_| rng.coin()).collect());
            }
        }
        cov.max_subsets_per_point = cov.max_subsets_per_point.max(subsets.len());
        for keep in subsets {
            consider(
                &mut h,
                &durable,
                durable_sum,
                StateSpec {
                    point: p,
                    keep,
                    torn: None,
                    lie: None,
                },
                marks,
                &mut cov,
            );
        }
        let multi: Vec<u32> = volatile
            .iter()
            .copied()
            .filter(|&w| {
                log.records[w as usize]
                    .range()
                    .is_some_and(|(_, l)| l > SECTOR)
            })
            .collect();
        for _ in 0..e.torn {
            if multi.is_empty() {
                break;
            }
            let victim = multi[rng.below(multi.len())];
            let mut keep: Vec<u32> = volatile
                .iter()
                .copied()
                .filter(|&w| w == victim || rng.coin())
                .collect();
            keep.sort_unstable();
            let spec = StateSpec {
                point: p,
                keep,
                torn: Some((victim, rng.next_u64() >> 11)),
                lie: None,
            };
            consider(&mut h, &durable, durable_sum, spec, marks, &mut cov);
        }
        for _ in 0..e.lying_flash {
            if last_epoch.is_empty() {
                break;
            }
            let victim = last_epoch[rng.below(last_epoch.len())];
            let spec = StateSpec {
                point: p,
                keep: volatile.clone(),
                torn: None,
                lie: Some((victim, rng.next_u64() >> 11)),
            };
            consider(&mut h, &durable, durable_sum, spec, marks, &mut cov);
        }
    }
    cov.distinct_images = images.len();
    cov.distinct_states = out.len();
    if e.max_states > 0 && out.len() > e.max_states {
        // A seeded sample that keeps the states in log order.
        let mut idx: Vec<usize> = (0..out.len()).collect();
        rng.shuffle(&mut idx);
        let mut pick: Vec<usize> = idx[..e.max_states].to_vec();
        pick.sort_unstable();
        out = pick.into_iter().map(|i| out[i].clone()).collect();
    }
    cov.selected = out.len();
    (out, cov)
}

/// Builds the full crash image (for the replay command).
pub fn materialize(log: &Log, base: &[u8], spec: &StateSpec) -> Vec<u8> {
    let mut img = base.to_vec();
    for (s, src) in sector_map(log, spec) {
        let a = (s * SECTOR) as usize;
        crate::disk::sector_bytes(src, log, &mut img[a..a + SECTOR as usize]);
    }
    img
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_of(ops: &[(&str, u64, u8)]) -> Log {
        let mut log = Log::default();
        for &(op, sector, byte) in ops {
            match op {
                "w" => log.push_write(sector * SECTOR, &[byte; SECTOR as usize]),
                "f" => log.records.push(Record::Flush),
                _ => log.records.push(Record::Mark(format!("m{byte}"))),
            }
        }
        log
    }

    #[test]
    fn spec_round_trips_as_text() {
        let s = StateSpec {
            point: 12,
            keep: vec![3, 5],
            torn: Some((5, 77)),
            lie: Some((2, 9)),
        };
        assert_eq!(s.to_string().parse::<StateSpec>().unwrap(), s);
        let s = StateSpec {
            point: 0,
            keep: vec![],
            torn: None,
            lie: None,
        };
        assert_eq!(s.to_string().parse::<StateSpec>().unwrap(), s);
    }

    #[test]
    fn flushed_writes_are_durable_and_later_ones_volatile() {
        let log = log_of(&[("w", 0, 1), ("f", 0, 0), ("w", 1, 2), ("w", 2, 3)]);
        let base = vec![0u8; 8 * SECTOR as usize];
        let (states, cov) = enumerate(&log, &base, &Enumeration::default());
        // Every state has sector 0 once the flush is passed; sectors 1 and 2 vary freely.
        let imgs: HashSet<Vec<u8>> = states
            .iter()
            .map(|(s, _)| materialize(&log, &base, s))
            .collect();
        let after_flush: Vec<_> = states.iter().filter(|(s, _)| s.point >= 2).collect();
        for (s, _) in &after_flush {
            assert_eq!(materialize(&log, &base, s)[0], 1, "{s}");
        }
        // Images: base, [1], [1,2], [1,_,3], [1,2,3] -> 5 distinct.
        assert_eq!(cov.distinct_images, 5);
        assert_eq!(imgs.len(), 5);
    }

    #[test]
    fn hash_dedup_matches_real_image_equality() {
        // Overwrites of the same sector with the same bytes must dedup.
        let log = log_of(&[
            ("w", 0, 7),
            ("w", 0, 7),
            ("w", 1, 0),
            ("f", 0, 0),
            ("m", 0, 1),
            ("w", 0, 9),
        ]);
        let base = vec![0u8; 4 * SECTOR as usize];
        let (states, cov) = enumerate(&log, &base, &Enumeration::default());
        let mut by_hash: HashMap<u128, Vec<u8>> = HashMap::new();
        for (s, hsh) in &states {
            let img = materialize(&log, &base, s);
            if let Some(prev) = by_hash.insert(*hsh, img.clone()) {
                assert_eq!(prev, img);
            }
        }
        let distinct: HashSet<Vec<u8>> = states
            .iter()
            .map(|(s, _)| materialize(&log, &base, s))
            .collect();
        assert_eq!(distinct.len(), cov.distinct_images);
    }

    #[test]
    fn tears_and_lies_change_only_chosen_sectors() {
        let mut log = Log::default();
        log.push_write(0, &[5u8; 8 * SECTOR as usize]);
        log.records.push(Record::Flush);
        log.push_write(8 * SECTOR, &[6u8; 8 * SECTOR as usize]);
        let base = vec![0u8; 16 * SECTOR as usize];
        let e = Enumeration {
            torn: 4,
            lying_flash: 4,
            ..Enumeration::default()
        };
        let (states, _) = enumerate(&log, &base, &e);
        assert!(states.iter().any(|(s, _)| s.torn.is_some()));
        assert!(states.iter().any(|(s, _)| s.lie.is_some()));
        for (s, _) in states.iter().filter(|(s, _)| s.torn.is_some()) {
            let img = materialize(&log, &base, s);
            assert!(img[8 * 512..].iter().all(|&b| b == 0 || b == 6));
        }
    }
}
