//! Naming disk blocks: which file, inode, journal or metadata structure a
//! byte range of a crash image belongs to, asked of the filesystem's own
//! tools (`dumpe2fs`/`debugfs`, `xfs_db`, `btrfs inspect-internal`).
//!
//! Everything here is best effort: a tool that fails or says something we
//! do not understand gives "owner unknown: why", never an error.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::stack::{run_with_timeout, FsConfig};

/// One disk range to name: byte offset, length, and the bytes written there
/// (for recognising journal blocks by their header).
pub struct Range<'a> {
    /// Byte offset on the disk.
    pub off: u64,
    /// Length in bytes.
    pub len: u64,
    /// What the write put there, if it was a write (not a zeroing).
    pub bytes: Option<&'a [u8]>,
}

const TOOL_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs a tool; its stdout, or why not.
pub(crate) fn tool(cmd: &mut Command) -> Result<String, String> {
    let name = format!("{:?}", cmd.get_program());
    let r = run_with_timeout(cmd, TOOL_TIMEOUT).map_err(|e| e.to_string())?;
    if r.timed_out {
        return Err(format!("{name} timed out"));
    }
    if r.code != Some(0) && r.output.trim().is_empty() {
        return Err(format!("{name}: {}", r.status_text()));
    }
    Ok(r.output)
}

/// "4 KiB", "512 B", "12 KiB".
pub fn size_text(bytes: u64) -> String {
    if bytes >= 1024 && bytes % 1024 == 0 {
        format!("{} KiB", bytes / 1024)
    } else {
        format!("{bytes} B")
    }
}

/// Describes each range of `ranges` on the (unmounted, recovered) device or
/// image `dev` of configuration `fs`: one text per range.
pub fn describe(fs: FsConfig, dev: &Path, ranges: &[Range<'_>]) -> Vec<String> {
    let owners: Result<Vec<Vec<(u64, String)>>, String> = match fs {
        FsConfig::Ext4 | FsConfig::Ext4Writeback | FsConfig::Ext4Journal => {
            crate::blockmap_ext4::ext4(dev, ranges)
        }
        FsConfig::Xfs => crate::blockmap_xfs_btrfs::xfs(dev, ranges),
        FsConfig::Btrfs => crate::blockmap_xfs_btrfs::btrfs(dev, ranges),
        FsConfig::Raw => Err("raw device, no filesystem".into()),
        // The VM lane's filesystems: no owner lookup.
        _ => Err(format!("no block owner lookup for {}", fs.fstype())),
    };
    match owners {
        Ok(per_range) => ranges
            .iter()
            .zip(per_range)
            .map(|(r, blocks)| group(r, &blocks))
            .collect(),
        Err(why) => ranges
            .iter()
            .map(|r| {
                format!(
                    "{} at sectors {}-{} (owner unknown: {why})",
                    size_text(r.len),
                    r.off / 512,
                    (r.off + r.len).div_ceil(512) - 1
                )
            })
            .collect(),
    }
}

/// A block number inside an owner text, written right after the word
/// "block": runs of one owner merge into "blocks 10-12".
pub fn blk(n: u64) -> String {
    format!("\u{1}{n}\u{1}")
}

/// An owner text with its block number written out (for texts that are
/// not merged: a journal copy, a descriptor's list).
pub fn plain(o: &str) -> String {
    let (text, n) = split_blk(o);
    text.replace('\u{1}', &n.map(|n| format!(" {n}")).unwrap_or_default())
}

/// The owner text without its block number, and the number.
fn split_blk(o: &str) -> (String, Option<u64>) {
    let mut parts = o.splitn(3, '\u{1}');
    let (Some(a), Some(n), Some(b)) = (parts.next(), parts.next(), parts.next()) else {
        return (o.to_string(), None);
    };
    (format!("{a}\u{1}{b}"), n.parse().ok())
}

/// Bytes, owner text, first and last block number of a run of one owner.
type Part = (u64, String, Option<(u64, u64)>);

/// Joins the owners of one range's blocks (`(bytes, owner)` in disk order):
/// runs of the same owner become one "12 KiB data blocks 10-12 of ...".
fn group(r: &Range<'_>, blocks: &[(u64, String)]) -> String {
    let mut parts: Vec<Part> = Vec::new();
    for (n, o) in blocks {
        let (text, b) = split_blk(o);
        match parts.last_mut() {
            Some((m, last, span)) if *last == text => {
                *m += n;
                if let (Some((_, hi)), Some(b)) = (span.as_mut(), b) {
                    *hi = b;
                }
            }
            _ => parts.push((*n, text, b.map(|b| (b, b)))),
        }
    }
    if parts.is_empty() {
        return format!("{} at byte {} (no blocks)", size_text(r.len), r.off);
    }
    parts
        .iter()
        .map(|(n, o, span)| {
            let nums = match span {
                Some((a, b)) if a == b => format!(" {a}"),
                Some((a, b)) => format!("s {a}-{b}"),
                None => String::new(),
            };
            format!("{} {}", size_text(*n), o.replace('\u{1}', &nums))
        })
        .collect::<Vec<_>>()
        .join(" + ")
}

/// Splits `r` at `bs`-byte block boundaries: (block number, bytes of the
/// range in it, offset of that part within the range).
pub fn blocks_of(r: &Range<'_>, bs: u64) -> Vec<(u64, u64, u64)> {
    let mut out = Vec::new();
    let mut pos = r.off;
    let end = r.off + r.len;
    while pos < end {
        let b = pos / bs;
        let next = ((b + 1) * bs).min(end);
        out.push((b, next - pos, pos - r.off));
        pos = next;
    }
    out
}

/// `key: value` lines of a tool's output (first occurrence of each key).
pub fn fields(text: &str, sep: char) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for l in text.lines() {
        if let Some((k, v)) = l.split_once(sep) {
            m.entry(k.trim().to_string())
                .or_insert_with(|| v.trim().to_string());
        }
    }
    m
}

/// The number at the start of `s` (after spaces), if any.
pub fn leading_u64(s: &str) -> Option<u64> {
    let s = s.trim_start();
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    s[..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_ranges_at_block_boundaries() {
        let r = Range {
            off: 4096 + 512,
            len: 8192,
            bytes: None,
        };
        assert_eq!(
            blocks_of(&r, 4096),
            vec![(1, 3584, 0), (2, 4096, 3584), (3, 512, 7680)]
        );
    }

    #[test]
    fn groups_runs_of_one_owner() {
        let r = Range {
            off: 0,
            len: 12288,
            bytes: None,
        };
        let b = vec![
            (4096, format!("data block{} of a", blk(7))),
            (4096, format!("data block{} of a", blk(8))),
            (4096, "journal".to_string()),
            (4096, format!("data block{} of a", blk(9))),
        ];
        assert_eq!(
            group(&r, &b),
            "8 KiB data blocks 7-8 of a + 4 KiB journal + 4 KiB data block 9 of a"
        );
    }
}
