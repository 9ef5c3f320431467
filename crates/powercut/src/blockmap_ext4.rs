//! Naming ext4 blocks: the static layout from `dumpe2fs`, file blocks
//! through `debugfs` (`icheck` block → inode, `ncheck` inode → path), and
//! journal blocks from their jbd2 headers: a descriptor block's tags say
//! which filesystem blocks the copies after it stand for.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use crate::blockmap::{blk, blocks_of, fields, leading_u64, plain, tool, Range};

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
    /// The inodes an inode table block holds.
    fn inodes_in(&self, block: u64) -> Option<(u64, u64)> {
        let &(a, _, _, g) = self
            .areas
            .iter()
            .find(|&&(a, b, what, _)| what == "inode table" && a <= block && block <= b)?;
        let per = self.bs / self.inode_size.max(1);
        let first = g * self.inodes_per_group + (block - a) * per + 1;
        Some((first, first + per - 1))
    }

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

/// jbd2 tag layout from the journal features: (tag bytes, csum v3).
fn tag_layout(features: &str) -> (usize, bool) {
    if features.contains("journal_checksum_v3") {
        (16, true)
    } else if features.contains("journal_64bit") {
        (12, false)
    } else {
        (8, false)
    }
}

/// The filesystem blocks a jbd2 descriptor block logs, in order.
fn descriptor_tags(block: &[u8], features: &str) -> Vec<u64> {
    let (size, v3) = tag_layout(features);
    let be32 = |i: usize| -> Option<u64> {
        Some(u32::from_be_bytes(block.get(i..i + 4)?.try_into().ok()?).into())
    };
    let mut out = Vec::new();
    let mut at = 12;
    while at + size <= block.len() {
        let (Some(lo), Some(flags)) = (
            be32(at),
            if v3 {
                be32(at + 4)
            } else {
                be32(at + 4).map(|v| v & 0xFFFF)
            },
        ) else {
            break;
        };
        let hi = if size >= 12 {
            be32(at + 8).unwrap_or(0)
        } else {
            0
        };
        out.push(hi << 32 | lo);
        at += size;
        if flags & 2 == 0 {
            at += 16; // a UUID follows unless SAME_UUID
        }
        if flags & 8 != 0 || out.len() > 1024 {
            break;
        }
    }
    out
}

/// What one block of a range is: the block itself, or a journal block
/// (a header, or the copy of a logged filesystem block).
enum Blk {
    Plain(u64),
    Header(u64, String, Vec<u64>),
    Copy(u64, u64),
}

/// Owners of the blocks of every range, ext4.
pub(crate) fn ext4(dev: &Path, ranges: &[Range<'_>]) -> Result<Vec<Vec<(u64, String)>>, String> {
    let layout = ext4_layout(dev)?;
    let bs = layout.bs;
    let features = fields(&tool(Command::new("dumpe2fs").arg("-h").arg(dev))?, ':')
        .get("Journal features")
        .cloned()
        .unwrap_or_default();
    // Classify every block; journal copies follow their descriptor.
    let split: Vec<Vec<(Blk, u64)>> = ranges
        .iter()
        .map(|r| {
            let mut pending: Vec<u64> = Vec::new();
            blocks_of(r, bs)
                .into_iter()
                .map(|(b, n, at)| {
                    let bytes = r.bytes.map(|d| &d[at as usize..(at + n) as usize]);
                    let kind = bytes.and_then(jbd2_kind);
                    let blk = match kind {
                        Some(k) => {
                            pending = if k.starts_with("journal descriptor") {
                                descriptor_tags(bytes.unwrap_or_default(), &features)
                            } else {
                                Vec::new()
                            };
                            Blk::Header(b, k, pending.clone())
                        }
                        None if !pending.is_empty() => Blk::Copy(b, pending.remove(0)),
                        None => Blk::Plain(b),
                    };
                    (blk, n)
                })
                .collect()
        })
        .collect();
    let mut fs_blocks: Vec<u64> = Vec::new();
    for (blk, _) in split.iter().flatten() {
        match blk {
            Blk::Plain(b) | Blk::Copy(_, b) => fs_blocks.push(*b),
            Blk::Header(b, _, logged) => {
                fs_blocks.push(*b);
                fs_blocks.extend(logged);
            }
        }
    }
    fs_blocks.sort_unstable();
    fs_blocks.dedup();
    let ask: Vec<String> = fs_blocks
        .iter()
        .filter(|&&b| layout.metadata(b).is_none())
        .map(u64::to_string)
        .collect();
    let mut inode_of: BTreeMap<u64, u64> = BTreeMap::new();
    if !ask.is_empty() {
        for l in debugfs(dev, &format!("icheck {}", ask.join(" ")))?.lines() {
            let mut w = l.split_whitespace();
            if let (Some(Ok(b)), Some(Ok(i))) = (w.next().map(str::parse), w.next().map(str::parse))
            {
                inode_of.insert(b, i);
            }
        }
    }
    // Names of the file inodes found and of those in logged or written
    // inode table blocks.
    let mut inodes: Vec<u64> = inode_of.values().copied().filter(|&i| i > 11).collect();
    for &b in &fs_blocks {
        if let Some((first, last)) = layout.inodes_in(b) {
            inodes.extend((first..=last).filter(|&i| i > 11));
        }
    }
    inodes.sort_unstable();
    inodes.dedup();
    let mut path_of: BTreeMap<u64, String> = BTreeMap::new();
    for chunk in inodes.chunks(256) {
        let req: Vec<String> = chunk.iter().map(u64::to_string).collect();
        if let Ok(out) = debugfs(dev, &format!("ncheck -c {}", req.join(" "))) {
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
    // The owner of a filesystem block (not a journal header).
    let owner = |b: u64| -> String {
        if let Some(m) = layout.metadata(b) {
            let Some((first, last)) = layout.inodes_in(b) else {
                return m;
            };
            let named: Vec<String> = (first..=last)
                .filter(|i| path_of.contains_key(i))
                .map(&name)
                .collect();
            if named.is_empty() {
                m
            } else {
                format!("{m}, holding {}", named.join(", "))
            }
        } else {
            match inode_of.get(&b) {
                Some(8) => format!("journal block {b} (inode 8)"),
                Some(&i) => format!("data block{} of {}", blk(b), name(i)),
                None => format!("block {b} (owned by no inode in the recovered image)"),
            }
        }
    };
    Ok(split
        .iter()
        .map(|blocks| {
            blocks
                .iter()
                .map(|(blk, n)| {
                    let text = match blk {
                        Blk::Plain(b) => owner(*b),
                        Blk::Copy(b, logged) => {
                            format!("journal block {b} logging {}", plain(&owner(*logged)))
                        }
                        Blk::Header(b, k, logged) if logged.is_empty() => {
                            format!("{k} (journal block {b})")
                        }
                        Blk::Header(b, k, logged) => {
                            // Only what the copies in this write do not name.
                            let copied = |x: &u64| {
                                blocks
                                    .iter()
                                    .any(|(c, _)| matches!(c, Blk::Copy(_, l) if l == x))
                            };
                            let l: Vec<String> = logged
                                .iter()
                                .filter(|x| !copied(x))
                                .map(|&x| plain(&owner(x)))
                                .collect();
                            if l.is_empty() {
                                return (*n, format!("{k} (journal block {b})"));
                            }
                            format!("{k} (journal block {b}; logs {})", l.join("; "))
                        }
                    };
                    (*n, text)
                })
                .collect()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

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
