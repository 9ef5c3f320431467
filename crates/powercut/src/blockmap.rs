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
fn tool(cmd: &mut Command) -> Result<String, String> {
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
        FsConfig::Ext4 | FsConfig::Ext4Writeback | FsConfig::Ext4Journal => ext4(dev, ranges),
        FsConfig::Xfs => crate::blockmap_xfs_btrfs::xfs(dev, ranges),
        FsConfig::Btrfs => crate::blockmap_xfs_btrfs::btrfs(dev, ranges),
        FsConfig::Raw => Err("raw device, no filesystem".into()),
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

/// Joins the owners of one range's blocks (`(bytes, owner)` in disk order):
/// runs of the same owner become one "8 KiB data block of ...".
fn group(r: &Range<'_>, blocks: &[(u64, String)]) -> String {
    let mut parts: Vec<(u64, &str)> = Vec::new();
    for (n, o) in blocks {
        match parts.last_mut() {
            Some((m, last)) if *last == o.as_str() => *m += n,
            _ => parts.push((*n, o)),
        }
    }
    if parts.is_empty() {
        return format!("{} at byte {} (no blocks)", size_text(r.len), r.off);
    }
    parts
        .iter()
        .map(|(n, o)| format!("{} {o}", size_text(*n)))
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

/// What a jbd2 journal block is, from its header (big-endian magic, type,
/// transaction sequence); None for a journaled copy of a block.
fn jbd2_kind(bytes: &[u8]) -> Option<String> {
    let be = |i: usize| -> Option<u32> {
        Some(u32::from_be_bytes(bytes.get(i..i + 4)?.try_into().ok()?))
    };
    if be(0) != Some(0xC03B_3998) {
        return None;
    }
    let seq = be(8).unwrap_or(0);
    Some(match be(4)? {
        1 => format!("journal descriptor block of transaction {seq}"),
        2 => format!("journal commit block of transaction {seq}"),
        3 | 4 => "journal superblock".to_string(),
        5 => format!("journal revoke block of transaction {seq}"),
        _ => return None,
    })
}

/// The static metadata layout of an ext4 image, from `dumpe2fs`.
struct Ext4Layout {
    bs: u64,
    inode_size: u64,
    inodes_per_group: u64,
    /// (first block, last block, what, group, first block of the area).
    areas: Vec<(u64, u64, &'static str, u64)>,
}

fn ext4_layout(dev: &Path) -> Result<Ext4Layout, String> {
    let text = tool(Command::new("dumpe2fs").arg(dev))?;
    let f = fields(&text, ':');
    let num = |k: &str| {
        f.get(k)
            .and_then(|v| leading_u64(v))
            .ok_or_else(|| format!("dumpe2fs gave no `{k}`"))
    };
    let mut l = Ext4Layout {
        bs: num("Block size")?,
        inode_size: num("Inode size")?,
        inodes_per_group: num("Inodes per group")?,
        areas: Vec::new(),
    };
    let labels: [(&str, &'static str); 7] = [
        ("Primary superblock at ", "superblock"),
        ("Backup superblock at ", "backup superblock"),
        ("Group descriptors at ", "group descriptors"),
        ("Reserved GDT blocks at ", "reserved GDT blocks"),
        ("Block bitmap at ", "block bitmap"),
        ("Inode bitmap at ", "inode bitmap"),
        ("Inode table at ", "inode table"),
    ];
    let mut group = 0u64;
    for line in text.lines() {
        if let Some(g) = line.strip_prefix("Group ") {
            group = leading_u64(g).unwrap_or(group);
            continue;
        }
        for piece in line.trim().split(", ") {
            for (prefix, what) in labels {
                let Some(rest) = piece.strip_prefix(prefix) else {
                    continue;
                };
                let Some(a) = leading_u64(rest) else { continue };
                let after = &rest[a.to_string().len()..];
                let b = after.strip_prefix('-').and_then(leading_u64).unwrap_or(a);
                l.areas.push((a, b, what, group));
            }
        }
    }
    Ok(l)
}

impl Ext4Layout {
    fn metadata(&self, block: u64) -> Option<String> {
        let &(a, _, what, g) = self
            .areas
            .iter()
            .find(|&&(a, b, _, _)| a <= block && block <= b)?;
        Some(if what == "inode table" {
            let per = self.bs / self.inode_size.max(1);
            let first = g * self.inodes_per_group + (block - a) * per + 1;
            format!(
                "inode table block (inodes {first}-{}) of group {g}",
                first + per - 1
            )
        } else {
            format!("{what} of group {g}")
        })
    }
}

/// Runs one `debugfs -R` request (read-only).
fn debugfs(dev: &Path, request: &str) -> Result<String, String> {
    tool(Command::new("debugfs").arg("-R").arg(request).arg(dev))
}

/// Owners of the blocks of every range, ext4: metadata from the layout,
/// the rest through `icheck` (block → inode) and `ncheck` (inode → path).
fn ext4(dev: &Path, ranges: &[Range<'_>]) -> Result<Vec<Vec<(u64, String)>>, String> {
    let layout = ext4_layout(dev)?;
    let bs = layout.bs;
    let split: Vec<Vec<(u64, u64, u64)>> = ranges.iter().map(|r| blocks_of(r, bs)).collect();
    let ask: Vec<u64> = split
        .iter()
        .flatten()
        .map(|&(b, _, _)| b)
        .filter(|&b| layout.metadata(b).is_none())
        .collect();
    let mut inode_of: BTreeMap<u64, u64> = BTreeMap::new();
    if !ask.is_empty() {
        let req: Vec<String> = ask.iter().map(u64::to_string).collect();
        let out = debugfs(dev, &format!("icheck {}", req.join(" ")))?;
        for l in out.lines() {
            let mut w = l.split_whitespace();
            if let (Some(b), Some(i)) = (w.next(), w.next()) {
                if let (Ok(b), Ok(i)) = (b.parse(), i.parse()) {
                    inode_of.insert(b, i);
                }
            }
        }
    }
    let mut path_of: BTreeMap<u64, String> = BTreeMap::new();
    let inodes: Vec<String> = inode_of
        .values()
        .filter(|&&i| i > 11)
        .map(u64::to_string)
        .collect();
    if !inodes.is_empty() {
        if let Ok(out) = debugfs(dev, &format!("ncheck -c {}", inodes.join(" "))) {
            for l in out.lines() {
                if let Some((i, p)) = l.split_once('\t') {
                    if let Ok(i) = i.trim().parse::<u64>() {
                        let p = p.trim().replace("//", "/");
                        path_of.entry(i).or_insert(p);
                    }
                }
            }
        }
    }
    let name = |i: u64| match i {
        2 => "the root directory (inode 2)".to_string(),
        7 => "the resize inode (inode 7)".to_string(),
        8 => "the journal (inode 8)".to_string(),
        i => match path_of.get(&i) {
            Some(p) => format!("\"{p}\" (inode {i})"),
            None => format!("inode {i} (no name)"),
        },
    };
    Ok(ranges
        .iter()
        .zip(&split)
        .map(|(r, blocks)| {
            blocks
                .iter()
                .map(|&(b, n, at)| {
                    let owner = if let Some(m) = layout.metadata(b) {
                        m
                    } else if let Some(&i) = inode_of.get(&b) {
                        let journal = (i == 8)
                            .then(|| r.bytes.and_then(|d| jbd2_kind(&d[at as usize..])))
                            .flatten();
                        match journal {
                            Some(k) => format!("{k} (block {b}, in the journal, inode 8)"),
                            None if i == 8 => format!("journal block {b} (inode 8)"),
                            None => format!("data block {b} of {}", name(i)),
                        }
                    } else {
                        format!("block {b} (owned by no inode in the recovered image)")
                    };
                    (n, owner)
                })
                .collect()
        })
        .collect())
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
            (4096, "data of a".to_string()),
            (4096, "data of a".to_string()),
            (4096, "journal".to_string()),
        ];
        assert_eq!(group(&r, &b), "8 KiB data of a + 4 KiB journal");
    }

    #[test]
    fn recognises_jbd2_commit_blocks() {
        let mut b = vec![0u8; 4096];
        b[..4].copy_from_slice(&0xC03B_3998u32.to_be_bytes());
        b[4..8].copy_from_slice(&2u32.to_be_bytes());
        b[8..12].copy_from_slice(&22u32.to_be_bytes());
        assert_eq!(
            jbd2_kind(&b).as_deref(),
            Some("journal commit block of transaction 22")
        );
        assert_eq!(jbd2_kind(&[0u8; 16]), None);
    }
}
