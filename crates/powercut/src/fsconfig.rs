//! The filesystem configurations: how each is made, mounted for recording
//! and for a crash image, checked, and whether it runs on this kernel or in
//! the VM lane ([`crate::vm`]).

use std::fmt;
use std::path::Path;
use std::process::Command;

use serde::{Deserialize, Serialize};

/// A filesystem configuration the harness can record and replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FsConfig {
    /// ext4 with `data=ordered` (the default).
    Ext4,
    /// ext4 with `data=writeback`.
    Ext4Writeback,
    /// ext4 with `data=journal`.
    Ext4Journal,
    /// xfs.
    Xfs,
    /// btrfs.
    Btrfs,
    /// No filesystem: the recorded block device itself, as a raw partition
    /// (`$POWERCUT_DEV`; commands run in a scratch directory; no mount, no
    /// fsck). Not in [`ALL`](Self::ALL): `--fs raw` asks for it.
    Raw,
    /// F2FS with its default `fsync_mode=posix` (VM lane).
    F2fs,
    /// F2FS with `fsync_mode=strict` (VM lane).
    F2fsStrict,
    /// vfat (FAT16 at this size; no journal) (VM lane).
    Vfat,
    /// exFAT (no journal) (VM lane).
    Exfat,
    /// UBIFS on UBI on NAND-like raw flash (VM lane, [`crate::flash`]).
    Ubifs,
    /// JFFS2 on NOR-like raw flash (VM lane, [`crate::flash`]).
    Jffs2,
    /// UBIFS under UBI's own power-cut emulation on nandsim: the second,
    /// independent oracle (VM lane, [`crate::flash_emu`]; whole runs, so
    /// not in `all-flash`).
    UbifsEmulated,
}

impl FsConfig {
    /// The five configurations of this kernel (`--fs all`).
    pub const ALL: [FsConfig; 5] = [
        FsConfig::Ext4,
        FsConfig::Ext4Writeback,
        FsConfig::Ext4Journal,
        FsConfig::Xfs,
        FsConfig::Btrfs,
    ];

    /// The configurations of the VM lane's flash filesystems (`--fs all-flash`).
    pub const ALL_FLASH: [FsConfig; 6] = [
        FsConfig::Ubifs,
        FsConfig::Jffs2,
        FsConfig::F2fs,
        FsConfig::F2fsStrict,
        FsConfig::Vfat,
        FsConfig::Exfat,
    ];

    /// The configuration's name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            FsConfig::Ext4 => "ext4",
            FsConfig::Ext4Writeback => "ext4-writeback",
            FsConfig::Ext4Journal => "ext4-journal",
            FsConfig::Xfs => "xfs",
            FsConfig::Btrfs => "btrfs",
            FsConfig::Raw => "raw",
            FsConfig::F2fs => "f2fs",
            FsConfig::F2fsStrict => "f2fs-strict",
            FsConfig::Vfat => "vfat",
            FsConfig::Exfat => "exfat",
            FsConfig::Ubifs => "ubifs",
            FsConfig::Jffs2 => "jffs2",
            FsConfig::UbifsEmulated => "ubifs-emulated",
        }
    }

    /// Whether this configuration runs on raw flash (an MTD device), not a
    /// block device.
    pub fn is_flash(self) -> bool {
        matches!(self, FsConfig::Ubifs | FsConfig::Jffs2)
    }

    /// Whether there is a filesystem to make, mount and check.
    pub fn has_fs(self) -> bool {
        self != FsConfig::Raw
    }

    /// Whether this configuration runs in the VM lane (Debian's kernel under
    /// QEMU) rather than on the running kernel.
    pub fn needs_vm(self) -> bool {
        matches!(
            self,
            FsConfig::F2fs
                | FsConfig::F2fsStrict
                | FsConfig::Vfat
                | FsConfig::Exfat
                | FsConfig::Ubifs
                | FsConfig::Jffs2
                | FsConfig::UbifsEmulated
        )
    }

    /// Parses a name as printed by [`FsConfig::name`] (`ext4-ordered` is accepted too).
    pub fn parse(s: &str) -> Option<FsConfig> {
        Some(match s {
            "ext4" | "ext4-ordered" => FsConfig::Ext4,
            "ext4-writeback" => FsConfig::Ext4Writeback,
            "ext4-journal" => FsConfig::Ext4Journal,
            "xfs" => FsConfig::Xfs,
            "btrfs" => FsConfig::Btrfs,
            "raw" => FsConfig::Raw,
            "f2fs" | "f2fs-posix" => FsConfig::F2fs,
            "f2fs-strict" => FsConfig::F2fsStrict,
            "vfat" => FsConfig::Vfat,
            "exfat" => FsConfig::Exfat,
            "ubifs" => FsConfig::Ubifs,
            "jffs2" => FsConfig::Jffs2,
            "ubifs-emulated" => FsConfig::UbifsEmulated,
            _ => return None,
        })
    }

    /// Parses a comma-separated list; `all` and `all-flash` name groups.
    pub fn parse_list(s: &str) -> Result<Vec<FsConfig>, String> {
        let mut out = Vec::new();
        for n in s.split(',').map(str::trim) {
            match n {
                "all" => out.extend(FsConfig::ALL),
                "all-flash" => out.extend(FsConfig::ALL_FLASH),
                _ => out.push(
                    FsConfig::parse(n)
                        .ok_or_else(|| format!("unknown filesystem configuration `{n}`"))?,
                ),
            }
        }
        let mut seen = std::collections::HashSet::new();
        out.retain(|c| seen.insert(*c));
        Ok(out)
    }

    /// The kernel filesystem type.
    pub fn fstype(self) -> &'static str {
        match self {
            FsConfig::Ext4 | FsConfig::Ext4Writeback | FsConfig::Ext4Journal => "ext4",
            FsConfig::Xfs => "xfs",
            FsConfig::Btrfs => "btrfs",
            FsConfig::Raw => "raw",
            FsConfig::F2fs | FsConfig::F2fsStrict => "f2fs",
            FsConfig::Vfat => "vfat",
            FsConfig::Exfat => "exfat",
            FsConfig::Ubifs | FsConfig::UbifsEmulated => "ubifs",
            FsConfig::Jffs2 => "jffs2",
        }
    }

    /// The kernel modules the configuration needs (loaded in the VM lane).
    pub fn modules(self) -> &'static [&'static str] {
        match self.fstype() {
            "f2fs" => &["f2fs"],
            "vfat" => &["vfat", "nls_cp437", "nls_ascii"],
            "exfat" => &["exfat", "nls_utf8"],
            // UBIFS cannot load its zstd compressor by itself in the guest.
            "ubifs" => &["mtd", "ubi", "zstd", "ubifs"],
            "jffs2" => &["mtd", "jffs2"],
            "ext4" => &["ext4"],
            "xfs" => &["xfs"],
            "btrfs" => &["btrfs"],
            _ => &[],
        }
    }

    /// Size of the recorded disk: as small as each mkfs allows, so fsck is fast.
    pub fn image_size(self) -> u64 {
        match self {
            FsConfig::Xfs => 320 << 20,
            FsConfig::Btrfs => 256 << 20,
            FsConfig::Raw => 4 << 20,
            _ => 64 << 20,
        }
    }

    /// The mkfs command line for `dev`.
    pub fn mkfs(self, dev: &Path) -> Command {
        let mut c = match self.fstype() {
            "ext4" => {
                let mut c = Command::new("mkfs.ext4");
                c.args([
                    "-q",
                    "-F",
                    "-b",
                    "4096",
                    "-E",
                    "lazy_itable_init=0,lazy_journal_init=0,nodiscard",
                ]);
                c
            }
            "xfs" => {
                let mut c = Command::new("mkfs.xfs");
                c.args(["-q", "-f", "-K"]);
                c
            }
            "f2fs" => {
                let mut c = Command::new("mkfs.f2fs");
                // -t 0: no discard of the (already zero) disk.
                c.args(["-q", "-f", "-t", "0"]);
                c
            }
            "vfat" => Command::new("mkfs.vfat"),
            "exfat" => Command::new("mkfs.exfat"),
            _ => {
                let mut c = Command::new("mkfs.btrfs");
                c.args(["-q", "-f", "-K"]);
                c
            }
        };
        c.arg(dev);
        c
    }

    /// Mount options while recording.
    pub fn record_options(self, short_commit: bool) -> String {
        let mut o: Vec<&str> = match self {
            FsConfig::Ext4 => vec!["data=ordered"],
            FsConfig::Ext4Writeback => vec!["data=writeback"],
            FsConfig::Ext4Journal => vec!["data=journal"],
            FsConfig::Xfs
            | FsConfig::Raw
            | FsConfig::Vfat
            | FsConfig::Exfat
            | FsConfig::Ubifs
            | FsConfig::Jffs2
            | FsConfig::UbifsEmulated => vec![],
            FsConfig::Btrfs | FsConfig::F2fs => vec!["nodiscard"],
            FsConfig::F2fsStrict => vec!["nodiscard", "fsync_mode=strict"],
        };
        if short_commit && matches!(self.fstype(), "ext4" | "btrfs") {
            o.push("commit=1");
        }
        o.join(",")
    }

    /// Mount options for a crash image (journal replay happens at mount).
    pub fn replay_options(self) -> &'static str {
        match self {
            FsConfig::Ext4 => "data=ordered",
            FsConfig::Ext4Writeback => "data=writeback",
            FsConfig::Ext4Journal => "data=journal",
            // Crash images share the original's UUID.
            FsConfig::Xfs => "nouuid",
            FsConfig::Btrfs | FsConfig::F2fs => "nodiscard",
            FsConfig::F2fsStrict => "nodiscard,fsync_mode=strict",
            FsConfig::Raw
            | FsConfig::Vfat
            | FsConfig::Exfat
            | FsConfig::Ubifs
            | FsConfig::Jffs2
            | FsConfig::UbifsEmulated => "",
        }
    }

    /// The read-only consistency check of an unmounted crash image; exit 0 means clean.
    pub fn fsck(self, dev: &Path) -> Command {
        let mut c = match self.fstype() {
            "ext4" => {
                let mut c = Command::new("e2fsck");
                c.arg("-fn");
                c
            }
            "xfs" => {
                let mut c = Command::new("xfs_repair");
                c.arg("-n");
                c
            }
            "f2fs" => {
                let mut c = Command::new("fsck.f2fs");
                c.arg("--dry-run");
                c
            }
            "vfat" => {
                let mut c = Command::new("fsck.vfat");
                c.arg("-n");
                c
            }
            "exfat" => {
                let mut c = Command::new("fsck.exfat");
                c.arg("-n");
                c
            }
            _ => {
                let mut c = Command::new("btrfs");
                c.args(["check", "--readonly"]);
                c
            }
        };
        c.arg(dev);
        c
    }

    /// Whether an fsck run's result means a clean image. `fsck.vfat -n`
    /// exits 1 for the dirty bit alone, which vfat sets at mount and clears
    /// at unmount, so every image cut while mounted has it: that alone
    /// counts as clean (any other finding adds lines and does not).
    pub fn fsck_clean(self, code: Option<i32>, output: &str) -> bool {
        match (self, code) {
            (_, Some(0)) => true,
            (FsConfig::Vfat, Some(1)) => output.lines().map(str::trim).all(|l| {
                l.is_empty()
                    || l.starts_with("fsck.fat ")
                    || l.starts_with("Dirty bit is set. Fs was not properly unmounted")
                    || l == "Automatically removing dirty bit."
                    || l == "Leaving filesystem unchanged."
                    || (l.contains(" files, ") && l.ends_with(" clusters"))
            }),
            _ => false,
        }
    }

    /// The programs this configuration needs, with the Debian package that has them.
    pub fn tools(self) -> &'static [(&'static str, &'static str)] {
        match self.fstype() {
            "ext4" => &[("mkfs.ext4", "e2fsprogs"), ("e2fsck", "e2fsprogs")],
            "xfs" => &[("mkfs.xfs", "xfsprogs"), ("xfs_repair", "xfsprogs")],
            "f2fs" => &[("mkfs.f2fs", "f2fs-tools"), ("fsck.f2fs", "f2fs-tools")],
            "vfat" => &[("mkfs.vfat", "dosfstools"), ("fsck.vfat", "dosfstools")],
            "exfat" => &[("mkfs.exfat", "exfatprogs"), ("fsck.exfat", "exfatprogs")],
            "ubifs" => &[
                ("ubiformat", "mtd-utils"),
                ("ubiattach", "mtd-utils"),
                ("ubimkvol", "mtd-utils"),
                ("ubidetach", "mtd-utils"),
                ("insmod", "kmod"),
            ],
            "jffs2" => &[("insmod", "kmod")],
            "raw" => &[],
            _ => &[("mkfs.btrfs", "btrfs-progs"), ("btrfs", "btrfs-progs")],
        }
    }
}

impl fmt::Display for FsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::FsConfig;

    /// `fsck.vfat -n` on a vfat image with only its dirty bit set (exit 1),
    /// as dosfstools 4.2 prints it.
    const DIRTY_ONLY: &str = "fsck.fat 4.2 (2021-01-31)\nDirty bit is set. Fs was not properly unmounted and some data may be corrupt.\n Automatically removing dirty bit.\n\nLeaving filesystem unchanged.\nv.img: 0 files, 0/32695 clusters\n";

    #[test]
    fn vfat_dirty_bit_alone_is_clean_anything_else_is_not() {
        assert!(FsConfig::Vfat.fsck_clean(Some(1), DIRTY_ONLY));
        let more = DIRTY_ONLY.replace(
            "\nLeaving",
            "\n/a: File size is 12 bytes, cluster chain length is 0.\nLeaving",
        );
        assert!(!FsConfig::Vfat.fsck_clean(Some(1), &more));
        assert!(!FsConfig::Vfat.fsck_clean(Some(4), DIRTY_ONLY));
        assert!(!FsConfig::Ext4.fsck_clean(Some(1), DIRTY_ONLY));
        assert!(FsConfig::F2fs.fsck_clean(Some(0), ""));
    }

    #[test]
    fn lists_parse() {
        assert_eq!(
            FsConfig::parse_list("all-flash").unwrap(),
            FsConfig::ALL_FLASH.to_vec()
        );
        assert_eq!(
            FsConfig::parse_list("ext4,f2fs-strict").unwrap(),
            vec![FsConfig::Ext4, FsConfig::F2fsStrict]
        );
        assert!(FsConfig::parse_list("ubifs,jffs2").is_ok());
        assert_eq!(
            FsConfig::parse_list("ext4,all").unwrap(),
            FsConfig::ALL.to_vec()
        );
        assert!(FsConfig::parse_list("yaffs").is_err());
    }
}
