//! The replay backing: a crash image served as a base image plus the
//! sectors of one crash state, with a copy-on-write scratch layer for what
//! mount and recovery write, so that switching states costs nothing and the
//! base is never copied.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use fuser::Errno;

use crate::disk::{lock, Backing, ReplyEmpty, ReplyWrite};
use crate::log::{Log, SECTOR};
use crate::replay::{add_flushed, durable_end, overlay_map, StateSpec};
use crate::rng::Rng;

/// Where the content of one sector of a crash image comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Src {
    /// 512 bytes at this offset of the log's data.
    Log(u64),
    /// Zeroes.
    Zero,
    /// Garbage derived from this seed (a lying-flash corruption).
    Garbage(u64),
}

/// The sectors of a crash image that differ from the base.
pub type SectorMap = HashMap<u64, Src>;

/// Fills `out` (one sector) with the content `src` names.
pub fn sector_bytes(src: Src, log: &Log, out: &mut [u8]) {
    match src {
        Src::Log(d) => out.copy_from_slice(&log.data[d as usize..(d + SECTOR) as usize]),
        Src::Zero => out.fill(0),
        Src::Garbage(seed) => {
            let mut r = Rng::new(seed);
            for c in out.chunks_mut(8) {
                c.copy_from_slice(&r.next_u64().to_le_bytes()[..c.len()]);
            }
        }
    }
}

struct ReplayState {
    /// The flushed records' sectors...
    map: SectorMap,
    /// ...of records `0..n`, when the map was built by [`ReplayDisk::set_spec`]
    /// (it then grows in place for a later state).
    map_end: Option<usize>,
    /// The kept volatile writes and corruptions laid over `map`.
    overlay: SectorMap,
    scratch: HashMap<u64, Box<[u8]>>,
}

impl ReplayState {
    fn src(&self, s: u64) -> Option<Src> {
        self.overlay.get(&s).or_else(|| self.map.get(&s)).copied()
    }
}

/// A disk serving base + crash-state sectors + a scratch layer for what the
/// recovery mount and the checker write.
pub struct ReplayDisk {
    base: Arc<Vec<u8>>,
    log: Arc<Log>,
    state: Mutex<ReplayState>,
}

impl ReplayDisk {
    /// A replay disk over `base` whose sectors can come from `log`.
    pub fn new(base: Arc<Vec<u8>>, log: Arc<Log>) -> Arc<ReplayDisk> {
        Arc::new(ReplayDisk {
            base,
            log,
            state: Mutex::new(ReplayState {
                map: SectorMap::new(),
                map_end: None,
                overlay: SectorMap::new(),
                scratch: HashMap::new(),
            }),
        })
    }

    /// Switches to another crash state and drops everything written since.
    /// Returns the byte ranges (page aligned, coalesced, in order) whose
    /// content may differ from what the disk showed before: among
    /// `candidates` (the sectors that may differ between the two states,
    /// [`crate::replay::changed_sectors`]) those the two maps really map
    /// differently, and every sector written since the last switch. `None`
    /// (nothing known about the last state): the whole disk. A reader's
    /// cache of the rest stays valid.
    pub fn set_state(&self, map: SectorMap, candidates: Option<&[u64]>) -> Vec<(u64, u64)> {
        let mut st = lock(&self.state);
        let before: Option<Vec<(u64, Option<Src>)>> =
            candidates.map(|c| c.iter().map(|&s| (s, st.src(s))).collect());
        st.map = map;
        st.map_end = None;
        st.overlay.clear();
        Self::changes(&mut st, before)
    }

    /// [`ReplayDisk::set_state`] for the crash state `spec` of this disk's
    /// log, without rebuilding the flushed records' map from the start when
    /// `spec` flushed at least what the last state did (the states of a run
    /// come in log order).
    pub fn set_spec(&self, spec: &StateSpec, candidates: Option<&[u64]>) -> Vec<(u64, u64)> {
        let end = durable_end(&self.log, spec);
        let overlay = overlay_map(&self.log, spec);
        let mut st = lock(&self.state);
        let before: Option<Vec<(u64, Option<Src>)>> =
            candidates.map(|c| c.iter().map(|&s| (s, st.src(s))).collect());
        let from = match st.map_end {
            Some(e) if e <= end => e,
            _ => {
                st.map.clear();
                0
            }
        };
        add_flushed(&self.log, from, end, &mut st.map);
        st.map_end = Some(end);
        st.overlay = overlay;
        Self::changes(&mut st, before)
    }

    /// The pages that changed: the scratch layer's (then dropped) and those
    /// of the sectors in `before` whose source differs now; `None`: all.
    fn changes(st: &mut ReplayState, before: Option<Vec<(u64, Option<Src>)>>) -> Vec<(u64, u64)> {
        let Some(before) = before else {
            st.scratch.clear();
            return vec![(0, 0)];
        };
        let mut pages: Vec<u64> = st.scratch.keys().map(|&s| s / PAGE_SECTORS).collect();
        pages.extend(
            before
                .iter()
                .filter(|&&(s, old)| st.src(s) != old)
                .map(|&(s, _)| s / PAGE_SECTORS),
        );
        st.scratch.clear();
        page_ranges(pages)
    }

    fn read_sector(&self, st: &ReplayState, s: u64, out: &mut [u8]) {
        if let Some(b) = st.scratch.get(&s) {
            out.copy_from_slice(b);
        } else if let Some(src) = st.src(s) {
            sector_bytes(src, &self.log, out);
        } else {
            let a = (s * SECTOR) as usize;
            out.copy_from_slice(&self.base[a..a + SECTOR as usize]);
        }
    }

    fn write_bytes(&self, off: u64, data: &[u8]) {
        let mut st = lock(&self.state);
        let mut pos = off;
        let end = off + data.len() as u64;
        while pos < end {
            let s = pos / SECTOR;
            let in_sec = (pos % SECTOR) as usize;
            let n = ((SECTOR as usize) - in_sec).min((end - pos) as usize);
            let mut buf = vec![0u8; SECTOR as usize].into_boxed_slice();
            if n != SECTOR as usize {
                self.read_sector(&st, s, &mut buf);
            }
            let from = (pos - off) as usize;
            buf[in_sec..in_sec + n].copy_from_slice(&data[from..from + n]);
            st.scratch.insert(s, buf);
            pos += n as u64;
        }
    }
}

impl Backing for ReplayDisk {
    fn size(&self) -> u64 {
        self.base.len() as u64
    }

    fn read(&self, off: u64, size: u64) -> Vec<u8> {
        let len = self.base.len() as u64;
        let end = (off + size).min(len);
        let off = off.min(end);
        let st = lock(&self.state);
        let mut out = vec![0u8; (end - off) as usize];
        let mut sec = [0u8; SECTOR as usize];
        let mut pos = off;
        while pos < end {
            let s = pos / SECTOR;
            let in_sec = (pos % SECTOR) as usize;
            let n = ((SECTOR as usize) - in_sec).min((end - pos) as usize);
            self.read_sector(&st, s, &mut sec);
            let to = (pos - off) as usize;
            out[to..to + n].copy_from_slice(&sec[in_sec..in_sec + n]);
            pos += n as u64;
        }
        out
    }

    fn write(&self, off: u64, data: &[u8], reply: ReplyWrite) {
        if off + data.len() as u64 > self.base.len() as u64 {
            reply.error(Errno::ENOSPC);
            return;
        }
        self.write_bytes(off, data);
        reply.written(data.len() as u32);
    }

    fn zero(&self, off: u64, len: u64) {
        let end = (off + len).min(self.base.len() as u64);
        let mut pos = off;
        while pos < end {
            let n = (end - pos).min(1 << 20);
            self.write_bytes(pos, &vec![0u8; n as usize]);
            pos += n;
        }
    }

    fn flush(&self, reply: ReplyEmpty) {
        reply.ok();
    }

    fn mark(&self, _line: &str) {}

    fn direct_io(&self) -> bool {
        false
    }
}

/// Sectors per page of the kernel's cache.
const PAGE_SECTORS: u64 = 4096 / SECTOR;

/// Byte ranges covering the pages `pages` (unsorted, with duplicates).
fn page_ranges(mut pages: Vec<u64>) -> Vec<(u64, u64)> {
    pages.sort_unstable();
    pages.dedup();
    let page = PAGE_SECTORS * SECTOR;
    let mut out: Vec<(u64, u64)> = Vec::new();
    for p in pages {
        match out.last_mut() {
            Some((start, len)) if *start + *len == p * page => *len += page,
            _ => out.push((p * page, page)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_with(writes: &[(u64, usize)]) -> Arc<Log> {
        let mut log = Log::default();
        for &(off, len) in writes {
            log.push_write(off, &vec![7u8; len]);
        }
        Arc::new(log)
    }

    #[test]
    fn page_ranges_coalesce_neighbours() {
        assert_eq!(
            page_ranges(vec![3, 1, 2, 2, 7]),
            vec![(4096, 3 * 4096), (7 * 4096, 4096)]
        );
        assert!(page_ranges(Vec::new()).is_empty());
    }

    #[test]
    fn a_switch_reports_what_the_maps_and_the_scratch_changed() {
        let log = log_with(&[(0, 512), (8192, 1024)]);
        let disk = ReplayDisk::new(Arc::new(vec![0u8; 1 << 16]), Arc::clone(&log));
        let mut a = SectorMap::new();
        a.insert(0, Src::Log(0));
        // Nothing known about the last state: everything.
        assert_eq!(disk.set_state(a.clone(), None), vec![(0, 0)]);
        // The same map again, nothing written: nothing changed.
        assert!(disk.set_state(a.clone(), Some(&[0, 16, 17])).is_empty());
        // A write lands in the scratch layer: its page changes back.
        disk.write_bytes(5 * 4096 + 512, &[1u8; 512]);
        assert_eq!(disk.set_state(a.clone(), Some(&[])), vec![(5 * 4096, 4096)]);
        // Another map: the page it drops and the pages it adds.
        let mut b = SectorMap::new();
        b.insert(16, Src::Log(512));
        b.insert(17, Src::Log(1024));
        let all = [0, 16, 17];
        assert_eq!(
            disk.set_state(b.clone(), Some(&all)),
            vec![(0, 4096), (8192, 4096)]
        );
        // The same sector from another source is a change.
        b.insert(16, Src::Zero);
        assert_eq!(disk.set_state(b.clone(), Some(&all)), vec![(8192, 4096)]);
        // Only candidates are looked at.
        b.insert(16, Src::Log(512));
        assert!(disk.set_state(b, Some(&[0])).is_empty());
    }

    #[test]
    fn set_spec_serves_what_sector_map_describes_in_any_order() {
        use crate::log::Record;
        use crate::replay::sector_map;
        // Writes to overlapping sectors, with flushes between them.
        let mut log = Log::default();
        for i in 0..40u64 {
            log.push_write((i % 7) * 1024, &vec![i as u8; 1536]);
            if i % 5 == 4 {
                log.records.push(Record::Flush);
            }
        }
        let log = Arc::new(log);
        let disk = ReplayDisk::new(Arc::new(vec![0u8; 1 << 16]), Arc::clone(&log));
        let n = log.records.len();
        let mut specs: Vec<StateSpec> = (0..=n).map(|p| StateSpec::kept(p, &[])).collect();
        // Keep the writes after the last flush, tear one, lie about one.
        specs.push(StateSpec::kept(n, &[n as u32 - 2, n as u32 - 1]));
        specs.push(StateSpec {
            torn: Some((n as u32 - 1, 9)),
            ..StateSpec::kept(n, &[n as u32 - 1])
        });
        specs.push(StateSpec {
            lie: Some((3, 5)),
            ..StateSpec::kept(20, &[])
        });
        // Forward, then backward, then forward again.
        let order: Vec<&StateSpec> = specs
            .iter()
            .chain(specs.iter().rev())
            .chain(&specs)
            .collect();
        let mut last: Option<&StateSpec> = None;
        for spec in order {
            let cand = last.map(|p| crate::replay::changed_sectors(&log, p, spec));
            disk.set_spec(spec, cand.as_deref());
            let want = sector_map(&log, spec);
            let st = lock(&disk.state);
            for s in 0..(1 << 16) / SECTOR {
                assert_eq!(st.src(s), want.get(&s).copied(), "sector {s} of {spec}");
            }
            drop(st);
            last = Some(spec);
        }
    }
}
