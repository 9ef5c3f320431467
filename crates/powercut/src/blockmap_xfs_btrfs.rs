//! Naming disk blocks on xfs (`xfs_db`) and btrfs (`btrfs inspect-internal`).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use crate::blockmap::{blk, blocks_of, fields, leading_u64, size_text, tool, Range};

/// Runs `xfs_db -r` with the given commands.
fn xfs_db(dev: &Path, cmds: &[String]) -> Result<String, String> {
    let mut c = Command::new("xfs_db");
    c.arg("-r");
    for x in cmds {
        c.arg("-c").arg(x);
    }
    tool(c.arg(dev))
}

/// Owners of the blocks of every range, xfs: `blockget -n` builds the
/// block usage map, `blockuse -n` says each block's type and inode, inode
/// clusters are named through `ncheck -i`.
pub(crate) fn xfs(dev: &Path, ranges: &[Range<'_>]) -> Result<Vec<Vec<(u64, String)>>, String> {
    let sb = fields(
        &xfs_db(
            dev,
            &[
                "sb 0".into(),
                "p blocksize agblocks agblklog inopblog".into(),
            ],
        )?,
        '=',
    );
    let num = |k: &str| {
        sb.get(k)
            .and_then(|v| leading_u64(v))
            .ok_or_else(|| format!("xfs_db gave no `{k}`"))
    };
    let (bs, agblocks, agblklog, inopblog) = (
        num("blocksize")?,
        num("agblocks")?,
        num("agblklog")?,
        num("inopblog")?,
    );
    // Disk block (linear) → xfs fsblock (AG number in the high bits).
    let fsb = |d: u64| ((d / agblocks) << agblklog) | (d % agblocks);
    let split: Vec<Vec<(u64, u64, u64)>> = ranges.iter().map(|r| blocks_of(r, bs)).collect();
    let mut ask: Vec<u64> = split.iter().flatten().map(|&(d, _, _)| fsb(d)).collect();
    ask.sort_unstable();
    ask.dedup();
    let mut cmds = vec!["blockget -n".to_string()];
    for b in &ask {
        cmds.push(format!("fsblock {b}"));
        cmds.push("blockuse -n".into());
    }
    // fsblock → (type, inode, name).
    let mut use_of: BTreeMap<u64, (String, Option<u64>, Option<String>)> = BTreeMap::new();
    for l in xfs_db(dev, &cmds)?.lines() {
        let Some(rest) = l.strip_prefix("block ") else {
            continue;
        };
        let Some(b) = leading_u64(rest) else { continue };
        let Some((_, after)) = rest.split_once(" type ") else {
            continue;
        };
        let mut w = after.split_whitespace();
        let ty = w.next().unwrap_or("?").to_string();
        let (mut ino, mut name) = (None, None);
        if w.next() == Some("inode") {
            ino = w.next().and_then(|i| i.parse().ok());
            let n: Vec<&str> = w.collect();
            if !n.is_empty() {
                name = Some(n.join(" "));
            }
        }
        use_of.insert(b, (ty, ino, name));
    }
    // Names of the inodes in inode clusters.
    let per = 1u64 << inopblog;
    let mut ncheck = vec!["blockget -n".to_string()];
    for (b, (ty, _, _)) in &use_of {
        if ty == "inode" {
            ncheck.extend((0..per).map(|i| format!("ncheck -i {}", b << inopblog | i)));
        }
    }
    let mut names: BTreeMap<u64, String> = BTreeMap::new();
    if ncheck.len() > 1 {
        if let Ok(out) = xfs_db(dev, &ncheck) {
            for l in out.lines() {
                let l = l.trim();
                if let (Some(i), Some((_, n))) = (leading_u64(l), l.split_once(' ')) {
                    names.insert(i, n.trim().to_string());
                }
            }
        }
    }
    let file = |ino: u64, name: Option<&String>| match name {
        Some(n) => format!("\"/{}\" (inode {ino})", n.trim_start_matches('/')),
        None => format!("inode {ino}"),
    };
    let owner = |d: u64| -> String {
        let b = fsb(d);
        let ag = b >> agblklog;
        let Some((ty, ino, name)) = use_of.get(&b) else {
            return format!("block {b} (xfs_db said nothing about it)");
        };
        match (ty.as_str(), ino) {
            ("data", Some(i)) => format!("data block{} of {}", blk(b), file(*i, name.as_ref())),
            ("inode", _) => {
                let named: Vec<String> = (0..per)
                    .map(|k| b << inopblog | k)
                    .filter_map(|i| names.get(&i).map(|n| file(i, Some(n))))
                    .collect();
                if named.is_empty() {
                    format!("inode cluster block {b} of AG {ag}")
                } else {
                    format!(
                        "inode cluster block {b} of AG {ag}, holding {}",
                        named.join(", ")
                    )
                }
            }
            ("log", _) => format!("xfs log block {b}"),
            ("sb", _) => format!("AG {ag} header block (superblock, AGF, AGI, AGFL)"),
            (t, Some(i)) => format!("{t} block {b} of {}", file(*i, name.as_ref())),
            (t, None) if t.starts_with("free") => {
                format!("block {b} (free in the recovered image)")
            }
            (t, None) => format!("{t} block {b} of AG {ag}"),
        }
    };
    Ok(split
        .iter()
        .map(|blocks| blocks.iter().map(|&(d, n, _)| (n, owner(d))).collect())
        .collect())
}

/// Where btrfs keeps its superblock copies (physical bytes).
const SUPERS: [u64; 3] = [65536, 64 << 20, 256 << 30];

/// A btrfs chunk: logical start, length, type, physical stripe offsets.
struct Chunk {
    logical: u64,
    len: u64,
    ty: String,
    stripes: Vec<u64>,
}

fn dump_tree(dev: &Path, tree: &str) -> Result<String, String> {
    tool(
        Command::new("btrfs")
            .args(["inspect-internal", "dump-tree", "-t", tree])
            .arg(dev),
    )
}

/// The chunk map, from the chunk tree.
fn chunks(dev: &Path) -> Result<Vec<Chunk>, String> {
    let mut out: Vec<Chunk> = Vec::new();
    for l in dump_tree(dev, "chunk")?.lines() {
        let l = l.trim();
        if let Some(k) = l.strip_prefix("item ") {
            if let Some((_, off)) = k.split_once("CHUNK_ITEM ") {
                out.push(Chunk {
                    logical: leading_u64(off).unwrap_or(0),
                    len: 0,
                    ty: String::new(),
                    stripes: Vec::new(),
                });
            }
        } else if let Some(c) = out.last_mut() {
            if let Some(rest) = l.strip_prefix("length ") {
                c.len = leading_u64(rest).unwrap_or(0);
                c.ty = rest.split(" type ").nth(1).unwrap_or("").to_string();
            } else if l.starts_with("stripe ") {
                if let Some((_, off)) = l.split_once(" offset ") {
                    c.stripes.extend(leading_u64(off));
                }
            }
        }
    }
    Ok(out)
}

/// Names of the trees a btrfs tree block header's owner field can give.
fn tree_name(owner: u64) -> String {
    match owner {
        1 => "the root tree".into(),
        2 => "the extent tree".into(),
        3 => "the chunk tree".into(),
        4 => "the device tree".into(),
        5 => "the filesystem tree".into(),
        7 => "the checksum tree".into(),
        9 => "the uuid tree".into(),
        10 => "the free space tree".into(),
        0xFFFF_FFFF_FFFF_FFFA => "the log tree".into(),
        0xFFFF_FFFF_FFFF_FFFB => "the log root tree".into(),
        o => format!("tree {o}"),
    }
}

/// Owners of the blocks of every range, btrfs: physical → logical through
/// the chunk tree; a data extent's inode and name from the filesystem tree
/// (`EXTENT_DATA` and `INODE_REF` items); a tree block's tree from the
/// header of the block as written.
pub(crate) fn btrfs(dev: &Path, ranges: &[Range<'_>]) -> Result<Vec<Vec<(u64, String)>>, String> {
    let chunks = chunks(dev)?;
    let fs_tree = dump_tree(dev, "5").unwrap_or_default();
    // (disk bytenr, length, inode) of every data extent; inode → name.
    let mut extents: Vec<(u64, u64, u64)> = Vec::new();
    let mut names: BTreeMap<u64, String> = BTreeMap::new();
    let (mut obj, mut kind) = (0u64, String::new());
    for l in fs_tree.lines() {
        let l = l.trim();
        if let Some(k) = l.strip_prefix("item ") {
            if let Some((_, key)) = k.split_once("key (") {
                let mut w = key.split_whitespace();
                obj = w.next().and_then(|o| o.parse().ok()).unwrap_or(0);
                kind = w.next().unwrap_or("").to_string();
            }
        } else if kind == "INODE_REF" {
            if let Some((_, n)) = l.split_once("name: ") {
                names.entry(obj).or_insert_with(|| n.to_string());
            }
        } else if let Some(rest) = l.strip_prefix("extent data disk byte ") {
            let start = leading_u64(rest).unwrap_or(0);
            let len = rest.split(" nr ").nth(1).and_then(leading_u64).unwrap_or(0);
            if start > 0 {
                extents.push((start, len, obj));
            }
        }
    }
    let owner = |phys: u64, n: u64, bytes: Option<&[u8]>| -> String {
        if SUPERS.iter().any(|&s| s <= phys && phys < s + 4096) {
            return "btrfs superblock".into();
        }
        let Some((c, logical)) = chunks.iter().find_map(|c| {
            c.stripes
                .iter()
                .find(|&&o| o <= phys && phys < o + c.len)
                .map(|&o| (c, c.logical + phys - o))
        }) else {
            return format!("physical byte {phys} (in no chunk)");
        };
        if c.ty.starts_with("DATA") {
            return match extents
                .iter()
                .find(|&&(s, l, _)| s <= logical && logical < s + l)
            {
                Some(&(start, len, ino)) => {
                    let file = match names.get(&ino) {
                        Some(nm) => format!("\"/{nm}\" (inode {ino})"),
                        None => format!("inode {ino}"),
                    };
                    format!(
                        "data of the {} extent at logical {start} of {file}",
                        size_text(len)
                    )
                }
                None => format!(
                    "data block at logical {logical} (no file refers to it in the recovered image)"
                ),
            };
        }
        // A tree block: its header (as written) says which tree owns it.
        let header = bytes.filter(|b| b.len() >= 101 && n >= 101);
        match header {
            Some(b) if u64::from_le_bytes(b[48..56].try_into().unwrap_or_default()) == logical => {
                let owner = u64::from_le_bytes(b[88..96].try_into().unwrap_or_default());
                let generation = u64::from_le_bytes(b[80..88].try_into().unwrap_or_default());
                format!(
                    "{} tree block at logical {logical} of {} (level {}, generation {generation})",
                    c.ty.split('|').next().unwrap_or("metadata").to_lowercase(),
                    tree_name(owner),
                    b[100]
                )
            }
            _ => format!(
                "{} block at logical {logical}",
                c.ty.split('|').next().unwrap_or("metadata").to_lowercase()
            ),
        }
    };
    Ok(ranges
        .iter()
        .map(|r| {
            // Tree blocks are nodesize long; split at 4 KiB and describe each
            // piece, then the grouping in `describe` merges equal neighbours.
            let mut out: Vec<(u64, String)> = Vec::new();
            let mut at = 0u64;
            while at < r.len {
                let phys = r.off + at;
                let piece = r.bytes.map(|d| &d[at as usize..]);
                let text = owner(phys, r.len - at, piece);
                // A tree block's header covers the whole node: take it whole.
                let step = if text.contains("tree block at logical") {
                    (r.len - at).min(16384)
                } else {
                    (4096 - phys % 4096).min(r.len - at)
                };
                out.push((step, text));
                at += step;
            }
            out
        })
        .collect())
}
