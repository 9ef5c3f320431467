//! The power-cut log model: the log of page programs, block erases and
//! marks that `powercut_mtd` writes, and the crash states enumerated
//! from it (with the page hashes that deduplicate their images).

use std::collections::HashSet;
use std::io;

use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::Recording;
use crate::replay::Coverage;
use crate::rng::Rng;
use crate::run::Config;
use crate::stack::{err, FsConfig};

const PROGRAM: u32 = 1;
const ERASE: u32 = 2;
const MARK: u32 = 3;
const HEADER: usize = 24;

/// The flash each configuration runs on.
#[derive(Debug, Clone, Copy)]
pub struct Geometry {
    /// Bytes.
    pub size: u64,
    /// Erase block size.
    pub erasesize: u32,
    /// Page (program unit); 1 on NOR.
    pub writesize: u32,
    /// NOR-like (JFFS2) rather than NAND-like (UBI).
    pub nor: bool,
}

/// The geometry of `fs`'s flash, if it is a raw-flash configuration.
pub fn geometry(fs: FsConfig) -> Option<Geometry> {
    match fs {
        FsConfig::Ubifs => Some(Geometry {
            size: 16 << 20,
            erasesize: 128 << 10,
            writesize: 2048,
            nor: false,
        }),
        FsConfig::Jffs2 => Some(Geometry {
            size: 8 << 20,
            erasesize: 64 << 10,
            writesize: 1,
            nor: true,
        }),
        _ => None,
    }
}

/// One logged operation.
#[derive(Debug, Clone)]
pub(super) enum Op {
    Program { off: u64, data: Vec<u8> },
    Erase { off: u64, len: u64 },
    Mark(String),
}

/// Parses the log device's records (whole records only).
pub(super) fn parse(bytes: &[u8]) -> io::Result<Vec<Op>> {
    let mut ops = Vec::new();
    let mut at = 0;
    let mut first_seq = None;
    let u32_at = |b: &[u8], i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap_or([0; 4]));
    let u64_at = |b: &[u8], i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
    while at < bytes.len() {
        if bytes.len() - at < HEADER {
            return Err(err("the MTD log ends inside a record header"));
        }
        let (kind, len, off) = (
            u32_at(bytes, at),
            u32_at(bytes, at + 4) as usize,
            u64_at(bytes, at + 8),
        );
        // Sequence numbers count from the module's load; what was drained
        // before recording began is not here, but nothing may be missing after.
        let seq = u64_at(bytes, at + 16);
        let first = *first_seq.get_or_insert(seq);
        if seq != first + ops.len() as u64 {
            return Err(err(format!(
                "the MTD log skips from record {} to {seq}",
                first + ops.len() as u64
            )));
        }
        at += HEADER;
        let payload = if kind == ERASE { 0 } else { len };
        if bytes.len() - at < payload {
            return Err(err("the MTD log ends inside a record"));
        }
        let body = &bytes[at..at + payload];
        at += payload;
        ops.push(match kind {
            PROGRAM => Op::Program {
                off,
                data: body.to_vec(),
            },
            ERASE => Op::Erase {
                off,
                len: len as u64,
            },
            MARK => Op::Mark(String::from_utf8_lossy(body).trim_end().to_string()),
            k => return Err(err(format!("the MTD log has a record of unknown kind {k}"))),
        });
    }
    Ok(ops)
}

/// How the operation in flight at the cut was left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Torn {
    pub(super) variant: u32,
}

/// Applies `op` to `img` as flash does (program clears bits, erase sets
/// 0xFF), or, with `torn`, as a cut in the middle of it leaves it.
pub(super) fn apply(img: &mut [u8], op: &Op, torn: Option<(u64, Geometry)>) {
    apply_in(img, 0, op, torn);
}

/// [`apply`] to `img`, which holds the flash from byte `origin` on.
fn apply_in(img: &mut [u8], origin: usize, op: &Op, torn: Option<(u64, Geometry)>) {
    match op {
        Op::Program { off, data } => {
            let off = *off as usize - origin;
            let Some((seed, g)) = torn else {
                for (d, s) in img[off..off + data.len()].iter_mut().zip(data) {
                    *d &= *s;
                }
                return;
            };
            let mut rng = Rng::new(seed);
            let unit = g.writesize.max(1) as usize;
            let units = data.len().div_ceil(unit).max(1);
            // Units before `j` programmed, unit `j` partly, the rest not.
            let j = rng.below(units);
            for (i, (d, s)) in img[off..off + data.len()].iter_mut().zip(data).enumerate() {
                match (i / unit).cmp(&j) {
                    std::cmp::Ordering::Less => *d &= *s,
                    // Some of the bits to clear were cleared.
                    std::cmp::Ordering::Equal => *d &= *s | (rng.next_u64() as u8),
                    std::cmp::Ordering::Greater => {}
                }
            }
        }
        Op::Erase { off, len } => {
            let (off, len) = (*off as usize - origin, *len as usize);
            match torn {
                None => img[off..off + len].fill(0xFF),
                Some((seed, _)) => {
                    // Erased up to a point; after it either garbage, or the
                    // old data with some bits already set (half erased:
                    // old headers still there, their data damaged).
                    let mut rng = Rng::new(seed);
                    let cut = (rng.below(len / 4096 + 1) * 4096).min(len);
                    let garbage = rng.coin();
                    img[off..off + cut].fill(0xFF);
                    for b in &mut img[off + cut..off + len] {
                        let r = rng.next_u64() as u8;
                        *b = if garbage {
                            r
                        } else {
                            *b | (r & rng.next_u64() as u8)
                        };
                    }
                }
            }
        }
        Op::Mark(_) => {}
    }
}

/// A crash state: the first `point` records done, and, if `torn`, record
/// `point` cut half way.
#[derive(Debug, Clone)]
pub(super) struct State {
    pub(super) point: usize,
    pub(super) torn: Option<Torn>,
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "p{}", self.point)?;
        if let Some(t) = self.torn {
            write!(f, ":cut{}", t.variant)?;
        }
        Ok(())
    }
}

/// The hash of an image, as the XOR of its pages' hashes (updated page by
/// page as operations change them).
struct PageHash {
    page: usize,
    pages: Vec<u64>,
    total: u64,
}

impl PageHash {
    fn new(img: &[u8], page: usize) -> PageHash {
        let pages: Vec<u64> = img
            .chunks(page)
            .enumerate()
            .map(|(i, p)| xxh3_64_with_seed(p, i as u64))
            .collect();
        let total = pages.iter().fold(0, |a, h| a ^ h);
        PageHash { page, pages, total }
    }

    /// Rehashes the pages of `img` in `off..off+len`; returns the new total.
    fn update(&mut self, img: &[u8], off: usize, len: usize) -> u64 {
        if len == 0 {
            return self.total;
        }
        for i in off / self.page..=(off + len - 1) / self.page {
            let h = xxh3_64_with_seed(&img[i * self.page..(i + 1) * self.page], i as u64);
            self.total ^= self.pages[i] ^ h;
            self.pages[i] = h;
        }
        self.total
    }

    /// The total the image would have with `span` at `off` instead of what
    /// `img` holds there.
    fn with(&self, img: &[u8], off: usize, span: &[u8]) -> u64 {
        let mut t = self.total;
        if span.is_empty() {
            return t;
        }
        let mut page = vec![0u8; self.page];
        for i in off / self.page..=(off + span.len() - 1) / self.page {
            let (start, end) = (i * self.page, (i + 1) * self.page);
            page.copy_from_slice(&img[start..end]);
            let (a, b) = (off.max(start), (off + span.len()).min(end));
            page[a - start..b - start].copy_from_slice(&span[a - off..b - off]);
            t ^= self.pages[i] ^ xxh3_64_with_seed(&page, i as u64);
        }
        t
    }
}

fn span(op: &Op) -> (usize, usize) {
    match op {
        Op::Program { off, data } => (*off as usize, data.len()),
        Op::Erase { off, len } => (*off as usize, *len as usize),
        Op::Mark(_) => (0, 0),
    }
}

pub(super) fn torn_seed(seed: u64, point: usize, variant: u32) -> u64 {
    fstx_testkit::rng::mix(seed ^ 0xF1A5_4000, (point as u64) << 8 | u64::from(variant))
}

/// Every crash state, deduplicated by (image, marks), then a seeded sample
/// of at most `max_states` (0 = all), in log order.
pub(super) fn enumerate(cfg: &Config, rec: &Recording, g: Geometry) -> (Vec<State>, Coverage) {
    let variants = cfg.enumeration.torn.max(1) as u32;
    let mut img = rec.base.clone();
    let mut hash = PageHash::new(&img, 4096);
    let mut seen = HashSet::new();
    let mut states = Vec::new();
    let mut candidates = 0;
    let mut images = HashSet::new();
    let mut marks = 0usize;
    for point in 0..=rec.ops.len() {
        candidates += 1;
        images.insert(hash.total);
        if seen.insert((hash.total, marks)) {
            states.push(State { point, torn: None });
        }
        let Some(op) = rec.ops.get(point) else { break };
        if !matches!(op, Op::Mark(_)) {
            let (off, len) = span(op);
            for variant in 0..variants {
                candidates += 1;
                let mut torn = img[off..off + len].to_vec();
                let seed = torn_seed(cfg.enumeration.seed, point, variant);
                apply_in(&mut torn, off, op, Some((seed, g)));
                let h = hash.with(&img, off, &torn);
                images.insert(h);
                if seen.insert((h, marks)) {
                    states.push(State {
                        point,
                        torn: Some(Torn { variant }),
                    });
                }
            }
        }
        apply(&mut img, op, None);
        let (off, len) = span(op);
        hash.update(&img, off, len);
        if matches!(op, Op::Mark(_)) {
            marks += 1;
        }
    }
    let distinct = states.len();
    let max = cfg.enumeration.max_states;
    if max > 0 && states.len() > max {
        let mut rng = Rng::new(cfg.enumeration.seed);
        rng.shuffle(&mut states);
        states.truncate(max);
        states.sort_by_key(|s| (s.point, s.torn.map(|t| t.variant)));
    }
    let coverage = Coverage {
        crash_points: rec.ops.len() + 1,
        max_subsets_per_point: variants as usize + 1,
        candidates,
        distinct_images: images.len(),
        distinct_states: distinct,
        selected: states.len(),
    };
    (states, coverage)
}

pub(super) fn marks_before(ops: &[Op], point: usize) -> Vec<String> {
    ops[..point]
        .iter()
        .filter_map(|o| match o {
            Op::Mark(m) => Some(m.clone()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(kind: u32, len: u32, off: u64, seq: u64, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&kind.to_le_bytes());
        v.extend_from_slice(&len.to_le_bytes());
        v.extend_from_slice(&off.to_le_bytes());
        v.extend_from_slice(&seq.to_le_bytes());
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn parses_and_applies_flash_semantics() {
        let mut log = rec(ERASE, 8, 0, 0, &[]);
        log.extend(rec(PROGRAM, 4, 2, 1, &[0x0F, 0xF0, 0x00, 0xFF]));
        log.extend(rec(MARK, 6, 0, 2, b"ack 1\n"));
        let ops = parse(&log).unwrap();
        assert_eq!(ops.len(), 3);
        let mut img = vec![0u8; 8];
        for op in &ops {
            apply(&mut img, op, None);
        }
        assert_eq!(img, [0xFF, 0xFF, 0x0F, 0xF0, 0x00, 0xFF, 0xFF, 0xFF]);
        assert!(matches!(&ops[2], Op::Mark(m) if m == "ack 1"));
        // A gap in the sequence numbers is an error, not a silent loss.
        let mut later = rec(ERASE, 8, 0, 7, &[]);
        later.extend(rec(ERASE, 8, 0, 8, &[]));
        assert_eq!(parse(&later).unwrap().len(), 2);
        let mut bad = rec(ERASE, 8, 0, 0, &[]);
        bad.extend(rec(ERASE, 8, 0, 2, &[]));
        assert!(parse(&bad).is_err());
        assert!(parse(&log[..log.len() - 1]).is_err());
    }

    #[test]
    fn a_torn_program_stops_at_a_page_and_never_sets_bits() {
        let g = geometry(FsConfig::Ubifs).unwrap();
        let data = vec![0u8; 4 * 2048];
        let op = Op::Program { off: 0, data };
        let mut differ = 0;
        for seed in 0..50 {
            let mut img = vec![0xFFu8; 4 * 2048];
            apply(&mut img, &op, Some((seed, g)));
            // Pages fully programmed come first, then one partial, then none.
            let pages: Vec<u8> = img
                .chunks(2048)
                .map(
                    |p| match (p.iter().all(|&b| b == 0), p.iter().all(|&b| b == 0xFF)) {
                        (true, _) => 0,
                        (_, true) => 2,
                        _ => 1,
                    },
                )
                .collect();
            assert!(pages.windows(2).all(|w| w[0] <= w[1]), "{pages:?}");
            assert!(pages.iter().filter(|&&p| p == 1).nth(1).is_none());
            differ += usize::from(pages != [0, 0, 0, 0]);
        }
        assert!(differ > 40, "torn programs must differ from complete ones");
    }

    #[test]
    fn page_hash_tracks_changes() {
        let mut img = vec![0xFFu8; 16384];
        let mut h = PageHash::new(&img, 4096);
        let before = h.total;
        let predicted = h.with(&img, 4999, &[0xFF, 0]);
        img[5000] = 0;
        assert_eq!(predicted, h.update(&img, 5000, 1));
        assert_ne!(h.total, before);
        img[5000] = 0xFF;
        assert_eq!(h.update(&img, 5000, 1), before);
    }
}
