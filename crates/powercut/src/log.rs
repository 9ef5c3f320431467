//! The recorded log: every WRITE, zeroing/discard, FLUSH and MARK that reached
//! the recorded disk, in the order the disk completed them.

use std::io::{self, Read, Write};
use std::path::Path;

/// Size of a disk sector: the unit of dedup, tearing and replay.
pub const SECTOR: u64 = 512;

/// One record of the log. Sequence numbers are the indices in [`Log::records`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A completed WRITE of `len` bytes at `off`; the bytes are at `data` in [`Log::data`].
    Write {
        /// Byte offset on the disk.
        off: u64,
        /// Length in bytes.
        len: u64,
        /// Offset of the bytes in [`Log::data`].
        data: u64,
    },
    /// A FALLOCATE that zeroed or discarded (punched) `len` bytes at `off`.
    Zero {
        /// Byte offset on the disk.
        off: u64,
        /// Length in bytes.
        len: u64,
    },
    /// A cache FLUSH (FUSE FSYNC): every write completed before it is durable.
    Flush,
    /// A line the workload wrote to the control file (`$POWERCUT_CTL`).
    Mark(String),
}

impl Record {
    /// The disk range this record changes, if it changes the disk.
    pub fn range(&self) -> Option<(u64, u64)> {
        match *self {
            Record::Write { off, len, .. } | Record::Zero { off, len } => Some((off, len)),
            Record::Flush | Record::Mark(_) => None,
        }
    }
}

/// A recorded log: the records plus the bytes of every write.
#[derive(Debug, Clone, Default)]
pub struct Log {
    /// The records, in completion order.
    pub records: Vec<Record>,
    /// The written bytes, referenced by [`Record::Write::data`].
    pub data: Vec<u8>,
}

impl Log {
    /// Appends a write record, copying its bytes.
    pub fn push_write(&mut self, off: u64, bytes: &[u8]) {
        let data = self.data.len() as u64;
        self.data.extend_from_slice(bytes);
        self.records.push(Record::Write {
            off,
            len: bytes.len() as u64,
            data,
        });
    }

    /// Number of flush records.
    pub fn flushes(&self) -> usize {
        self.records
            .iter()
            .filter(|r| matches!(r, Record::Flush))
            .count()
    }

    /// Number of mark records.
    pub fn marks(&self) -> usize {
        self.records
            .iter()
            .filter(|r| matches!(r, Record::Mark(_)))
            .count()
    }

    /// Number of write and zero records.
    pub fn writes(&self) -> usize {
        self.records.iter().filter(|r| r.range().is_some()).count()
    }

    /// Size of the log in bytes as stored on disk (records plus data).
    pub fn stored_size(&self) -> u64 {
        self.data.len() as u64 + 25 * self.records.len() as u64
    }

    /// Writes the log to `path` in a small binary format.
    pub fn save(&self, path: &Path) -> io::Result<()> {
        let mut out = io::BufWriter::new(std::fs::File::create(path)?);
        out.write_all(b"PCLOG1\n")?;
        out.write_all(&(self.records.len() as u64).to_le_bytes())?;
        for r in &self.records {
            match r {
                Record::Write { off, len, data } => {
                    out.write_all(&[1])?;
                    for v in [off, len, data] {
                        out.write_all(&v.to_le_bytes())?;
                    }
                }
                Record::Zero { off, len } => {
                    out.write_all(&[2])?;
                    for v in [off, len] {
                        out.write_all(&v.to_le_bytes())?;
                    }
                }
                Record::Flush => out.write_all(&[3])?,
                Record::Mark(m) => {
                    out.write_all(&[4])?;
                    out.write_all(&(m.len() as u64).to_le_bytes())?;
                    out.write_all(m.as_bytes())?;
                }
            }
        }
        out.write_all(&(self.data.len() as u64).to_le_bytes())?;
        out.write_all(&self.data)?;
        out.flush()
    }

    /// Reads a log written by [`Log::save`].
    pub fn load(path: &Path) -> io::Result<Log> {
        fn bad(what: &str) -> io::Error {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad powercut log: {what}"),
            )
        }
        fn u64_of(r: &mut impl Read) -> io::Result<u64> {
            let mut b = [0u8; 8];
            r.read_exact(&mut b)?;
            Ok(u64::from_le_bytes(b))
        }
        let mut inp = io::BufReader::new(std::fs::File::open(path)?);
        let mut magic = [0u8; 7];
        inp.read_exact(&mut magic)?;
        if &magic != b"PCLOG1\n" {
            return Err(bad("magic"));
        }
        let n = u64_of(&mut inp)?;
        let mut records = Vec::with_capacity(n.min(1 << 24) as usize);
        for _ in 0..n {
            let mut tag = [0u8; 1];
            inp.read_exact(&mut tag)?;
            records.push(match tag[0] {
                1 => Record::Write {
                    off: u64_of(&mut inp)?,
                    len: u64_of(&mut inp)?,
                    data: u64_of(&mut inp)?,
                },
                2 => Record::Zero {
                    off: u64_of(&mut inp)?,
                    len: u64_of(&mut inp)?,
                },
                3 => Record::Flush,
                4 => {
                    let len = u64_of(&mut inp)?;
                    if len > 1 << 20 {
                        return Err(bad("mark length"));
                    }
                    let mut s = vec![0u8; len as usize];
                    inp.read_exact(&mut s)?;
                    Record::Mark(String::from_utf8(s).map_err(|_| bad("mark text"))?)
                }
                _ => return Err(bad("record tag")),
            });
        }
        let dlen = u64_of(&mut inp)?;
        let mut data = Vec::new();
        inp.take(dlen).read_to_end(&mut data)?;
        if data.len() as u64 != dlen {
            return Err(bad("truncated data"));
        }
        for r in &records {
            if let Record::Write { len, data: d, .. } = r {
                if d + len > dlen {
                    return Err(bad("write data out of range"));
                }
            }
        }
        Ok(Log { records, data })
    }
}

/// What reached the disk between one mark and the next: the physical cost
/// of the work the workload did in that stretch (see `powercut stats`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Segment {
    /// The mark that opens the segment (empty for the records before the first mark).
    pub mark: String,
    /// Write records.
    pub writes: usize,
    /// Bytes written.
    pub bytes: u64,
    /// Bytes zeroed or discarded.
    pub zeroed: u64,
    /// Cache flushes.
    pub flushes: usize,
}

impl Log {
    /// The log cut at its marks: one segment per mark, counting the records
    /// from that mark up to the next one (the last segment runs to the end of
    /// the log), after a segment for the records before the first mark.
    pub fn segments(&self) -> Vec<Segment> {
        let mut done = Vec::new();
        let mut seg = Segment::default();
        for r in &self.records {
            match r {
                Record::Write { len, .. } => {
                    seg.writes += 1;
                    seg.bytes += len;
                }
                Record::Zero { len, .. } => seg.zeroed += len,
                Record::Flush => seg.flushes += 1,
                Record::Mark(m) => done.push(std::mem::replace(
                    &mut seg,
                    Segment {
                        mark: m.clone(),
                        ..Segment::default()
                    },
                )),
            }
        }
        done.push(seg);
        done
    }
}

/// Saves a disk image sparsely (all-zero 4 KiB blocks become holes).
pub fn save_image(img: &[u8], path: &Path) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::create(path)?;
    f.set_len(img.len() as u64)?;
    for (i, chunk) in img.chunks(4096).enumerate() {
        if chunk.iter().any(|&b| b != 0) {
            f.write_all_at(chunk, i as u64 * 4096)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_round_trips_through_a_file() {
        let mut log = Log::default();
        log.push_write(4096, &[7u8; 1024]);
        log.records.push(Record::Zero { off: 0, len: 512 });
        log.records.push(Record::Flush);
        log.records.push(Record::Mark("ack 1".into()));
        let dir = std::env::temp_dir().join(format!("powercut-logtest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("l");
        log.save(&p).unwrap();
        let back = Log::load(&p).unwrap();
        assert_eq!(back.records, log.records);
        assert_eq!(back.data, log.data);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn segments_count_what_lies_between_marks() {
        let mut log = Log::default();
        log.push_write(0, &[1u8; 512]);
        log.records.push(Record::Mark("start a".into()));
        log.push_write(4096, &[2u8; 4096]);
        log.records.push(Record::Zero { off: 0, len: 1024 });
        log.records.push(Record::Flush);
        log.push_write(8192, &[3u8; 512]);
        log.records.push(Record::Flush);
        log.records.push(Record::Mark("end a".into()));
        log.records.push(Record::Flush);
        let segs = log.segments();
        assert_eq!(segs.len(), 3);
        assert_eq!(
            (segs[0].mark.as_str(), segs[0].writes, segs[0].bytes),
            ("", 1, 512)
        );
        assert_eq!(
            segs[1],
            Segment {
                mark: "start a".into(),
                writes: 2,
                bytes: 4608,
                zeroed: 1024,
                flushes: 2,
            }
        );
        assert_eq!(
            (segs[2].mark.as_str(), segs[2].flushes, segs[2].bytes),
            ("end a", 1, 0)
        );
    }
}
