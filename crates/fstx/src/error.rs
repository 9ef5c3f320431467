//! The error type: which operation, which path, which step, and which state
//! the caller is left in.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// The state the target is in after an operation failed.
///
/// Every error fstx returns says exactly one of these, so that a caller can
/// tell "nothing happened" from "it happened but may not survive a power cut".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Not committed: the target is untouched and no temporary file is left.
    NotCommitted,
    /// Not committed: the target is untouched, but a temporary file could not
    /// be removed (cleanup failed too, for example because the filesystem went
    /// read-only). [`recover`](crate::recover()) removes it later.
    NotCommittedTempLeft {
        /// The temporary file left behind.
        temp: PathBuf,
    },
    /// Committed, durability unconfirmed: the new content is visible (the
    /// rename happened) but a flush after it failed, so a power cut may still
    /// bring back the old content. Never "fixed" by retrying the flush.
    CommittedNotDurable,
    /// A transaction passed its commit point but could not be applied
    /// completely; recovery (run automatically on the next open of the root,
    /// or by `fstx::recover`) finishes it. Readers see the old tree until then.
    CommittedPendingRecovery,
}

impl State {
    /// Whether the new content is (or, after recovery, will be) in place.
    pub fn is_committed(&self) -> bool {
        matches!(
            self,
            State::CommittedNotDurable | State::CommittedPendingRecovery
        )
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            State::NotCommitted => f.write_str("not committed; target unchanged"),
            State::NotCommittedTempLeft { temp } => write!(
                f,
                "not committed; target unchanged; temporary file {} left behind (fstx recover removes it)",
                temp.display()
            ),
            State::CommittedNotDurable => {
                f.write_str("committed, but durability unconfirmed: a power cut may undo it")
            }
            State::CommittedPendingRecovery => {
                f.write_str("committed; recovery will finish applying it")
            }
        }
    }
}

/// The step of an operation that failed, as named by [`Error::step`].
///
/// Match on it to tell failures apart (for example [`Step::Lock`] for a lock
/// held by another process); its [`Display`](fmt::Display) gives the text
/// shown in the error message (`"fsync temporary file"`, `"rename"`, ...).
/// New steps may be added in later versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Step {
    /// Parsing the path given: it does not end in a file name, or (in a
    /// transaction) it is not a relative path below the root.
    ParsePath,
    /// Opening the directory that holds (or will hold) the target.
    OpenParentDirectory,
    /// Inspecting what is at the target path (`fstat`/`fstatat`), or finding
    /// there something that may not be replaced (a directory, a refused symlink
    /// or hard link, a FIFO, socket or device).
    InspectTarget,
    /// Following a symlink at the target (too many hops, or a link text that
    /// does not name a file).
    ResolveSymlink,
    /// Reading the text of a symlink at the target (`readlinkat`).
    ReadSymlink,
    /// Opening the directory a followed symlink points into.
    OpenSymlinkTargetDirectory,
    /// Opening the existing target to read its metadata (or, in recovery, its
    /// content).
    OpenTarget,
    /// Getting random bytes for a temporary file's name.
    GenerateTemporaryName,
    /// Creating the temporary file beside the target (or finding no free name
    /// for it).
    CreateTemporaryFile,
    /// Locking a temporary file (`flock`): a new one while writing, an old one
    /// while recovering.
    LockTemporaryFile,
    /// Writing the new content to the temporary file.
    WriteTemporaryFile,
    /// Giving the new file the old file's (or the requested) mode, owner and
    /// extended attributes.
    CarryMetadataToNewFile,
    /// Flushing the temporary file's data and metadata (`fsync`).
    FsyncTemporaryFile,
    /// Renaming the temporary file over the target (the commit of a replace).
    RenameTemporaryFileOverTarget,
    /// Removing a temporary file (a discarded replace, or one found by
    /// recovery).
    RemoveTemporaryFile,
    /// Identifying the filesystem (`fstatfs`), or finding one that cannot keep
    /// the promise asked for.
    IdentifyFilesystem,
    /// Flushing a directory so that the names changed in it are durable
    /// (`fsync`).
    FsyncDirectory,
    /// Committing the btrfs transaction (`syncfs`), which makes a directory's
    /// changed names durable on btrfs.
    Syncfs,
    /// Opening (or creating) the sidecar lock file.
    OpenLockFile,
    /// Taking the lock on the sidecar lock file: it failed, it is held by
    /// another process ([`Wait::Try`](crate::Wait::Try)), the wait timed out,
    /// or the lock file or the target's symlinks kept changing.
    Lock,
    /// Checking that the locked lock file is still the one under its name.
    InspectLockFile,
    /// Checking that the target still resolves to the same directory once
    /// locked.
    InspectParentDirectory,
    /// Releasing a lock ([`FileLock::unlock`](crate::FileLock::unlock)).
    Unlock,
    /// Reading the current content of the target for the update function.
    ReadCurrentContent,
    /// The caller's update function failed; [`Error::into_io_error`] gives back
    /// its error unchanged.
    UpdateFunction,
    /// Opening the current version of the target.
    OpenCurrentFile,
    /// Inspecting the current version of the target, or finding it is not a
    /// regular file.
    InspectCurrentFile,
    /// Flushing the directory after making the backup, before the target
    /// changes (the [`FsyncDirectory`](Step::FsyncDirectory) of an update's
    /// backup).
    FsyncDirectoryAfterBackup,
    /// Inspecting an existing backup generation.
    InspectBackup,
    /// Moving a backup generation to the next older name.
    RotateBackups,
    /// Making the previous version the newest backup by a hard link.
    LinkBackup,
    /// Reading the previous version to copy it into a backup.
    ReadPreviousVersion,
    /// Writing a backup copy.
    WriteBackupCopy,
    /// Giving a backup copy the previous version's permission bits.
    SetBackupMode,
    /// Flushing a backup copy (`fsync`).
    FsyncBackupCopy,
    /// Renaming a finished backup copy to its backup name.
    RenameBackupCopy,
    /// Opening a directory (the one being recovered, read or listed, or one a
    /// transaction stages into or changes).
    OpenDirectory,
    /// Listing a directory's entries.
    ListDirectory,
    /// Opening a temporary file found by recovery.
    OpenTemporaryFile,
    /// Inspecting a temporary file found by recovery.
    InspectTemporaryFile,
    /// Opening a transaction root.
    OpenRootDirectory,
    /// Opening (or creating) a transaction root's control directory `.fstx-txn`
    /// and its files.
    OpenControlDirectory,
    /// Inspecting what is at a root's control directory name during recovery.
    InspectControlDirectory,
    /// Taking a root's exclusive writer lock, or finding it held by another
    /// transaction.
    TakeWriterLock,
    /// Taking a root's reader lock (shared for a snapshot, exclusive to hold
    /// readers off while the tree changes).
    TakeReaderLock,
    /// Releasing a snapshot's reader lock to recover a pending transaction.
    ReleaseReaderLock,
    /// Getting random bytes for a transaction's id.
    GenerateTransactionId,
    /// Checking a path against the transaction's other operations (it is used
    /// twice, or is both a file and a directory).
    CheckPath,
    /// Writing the journal's intent record before the first staged file.
    WriteJournalIntent,
    /// Getting random bytes for a staged file's name.
    GenerateStagingName,
    /// Creating a staged file (or finding no free name for it).
    CreateStagedFile,
    /// Writing the content of a staged file.
    WriteStagedFile,
    /// Giving a staged file the old file's mode, owner and extended attributes.
    CarryMetadata,
    /// Finishing a staged file that was already finished.
    FinishStagedFile,
    /// Inspecting a file to remove (finding a directory, for a staged removal).
    InspectFile,
    /// Inspecting the source of a rename (finding a directory, for a staged
    /// rename).
    InspectSource,
    /// Inspecting the destination of a staged rename (finding a directory).
    InspectDestination,
    /// Committing a transaction that an earlier failure made unable to commit.
    CheckTransaction,
    /// Encoding the commit record (too many operations, or a path too long).
    EncodeJournal,
    /// Creating the journal file.
    CreateJournal,
    /// Opening a directory that holds staged files.
    OpenStagingDirectory,
    /// Writing the commit record to the journal.
    WriteCommitRecord,
    /// The commit round: flushing the commit record together with the
    /// staged files and their directories; the commit point.
    FlushCommitRound,
    /// Flushing the directories a transaction (or its rollback) changed.
    FlushDirectories,
    /// Retiring the journal after a transaction was applied.
    RetireJournal,
    /// Removing the staged files of an aborted transaction.
    RemoveStagedFiles,
    /// Reading the journal (or finding a format version this fstx does not
    /// know).
    ReadJournal,
    /// Finishing a committed transaction before a snapshot, on a read-only
    /// filesystem.
    RecoverPendingTransaction,
    /// Opening a file to read it through a snapshot.
    OpenFile,
    /// Reading a file through a snapshot.
    ReadFile,
    /// Reading the retired journal (the last finished transaction's sequence
    /// number).
    ReadRetiredJournal,
    /// Walking the tree for staged files.
    FindStagedFiles,
    /// Removing a journal whose transaction was already retired.
    RemoveStaleJournal,
    /// Removing a staged file while rolling back.
    RemoveStagedFile,
    /// Removing the journal after a rollback.
    RemoveJournal,
    /// Creating the quarantine directory for a malformed journal
    /// (`.fstx-txn/quarantine/<seq>/` and the directories mirroring where
    /// its staged files were).
    CreateQuarantineDirectory,
    /// Moving a staged file of a malformed journal into the quarantine.
    QuarantineStagedFile,
    /// Moving a malformed journal into the quarantine.
    QuarantineJournal,
    /// Opening a staged file to verify it.
    OpenStagedFile,
    /// Reading a staged file to verify it.
    ReadStagedFile,
    /// Reading a target to check whether a write was already applied.
    ReadTarget,
    /// Opening the directory of a write's target.
    OpenTargetDirectory,
    /// Checking a staged file against the journal's length and checksum:
    /// neither it nor the target holds the content.
    VerifyStagedFile,
    /// Creating a directory of the transaction.
    CreateDirectory,
    /// Opening a directory the transaction just created.
    OpenNewDirectory,
    /// Opening the directory of a rename's source.
    OpenSourceDirectory,
    /// Opening the directory of a rename's destination.
    OpenDestinationDirectory,
    /// Removing a rename's source that is already a second name of its
    /// destination.
    RemoveHardLinkedSource,
    /// Renaming a file as a transaction's rename.
    Rename,
    /// Inspecting a staged file before renaming it over its target.
    InspectStagedFile,
    /// Removing a staged file that is already its target (applied before a
    /// crash).
    RemoveHardLinkedStagedFile,
    /// Renaming a staged file over its target (or finding the target became a
    /// directory).
    RenameStagedFileOverTarget,
    /// Removing a file as a transaction's removal.
    RemoveFile,
    /// Creating a record's file.
    CreateRecord,
    /// Reading a record's slots.
    ReadRecord,
    /// Finding a valid value in a record: no slot holds one.
    VerifyRecord,
    /// Checking a record's size: a value larger than the record's largest,
    /// no size for a new record, a size that does not match, a target that
    /// holds no record, a device smaller than two slots.
    CheckRecordSize,
    /// Writing a value into a record's slot.
    WriteRecordSlot,
    /// Flushing a record's slot (`fdatasync`, `fsync` for a block device).
    FlushRecord,
    /// Reading a verified file's candidates (the file and its backups).
    ReadCandidate,
    /// Finding a candidate whose envelope verifies: none does.
    VerifyContent,
    /// Reading the sequence number of the version being replaced (for a
    /// verified write's envelope).
    ReadSequenceNumber,
}

impl Step {
    /// The text shown in error messages.
    fn text(self) -> &'static str {
        match self {
            Step::ParsePath => "parse path",
            Step::OpenParentDirectory => "open parent directory",
            Step::InspectTarget => "inspect target",
            Step::ResolveSymlink => "resolve symlink",
            Step::ReadSymlink => "read symlink",
            Step::OpenSymlinkTargetDirectory => "open symlink target's directory",
            Step::OpenTarget => "open target",
            Step::GenerateTemporaryName => "generate temporary name",
            Step::CreateTemporaryFile => "create temporary file",
            Step::LockTemporaryFile => "lock temporary file",
            Step::WriteTemporaryFile => "write temporary file",
            Step::CarryMetadataToNewFile => "carry metadata to the new file",
            Step::FsyncTemporaryFile => "fsync temporary file",
            Step::RenameTemporaryFileOverTarget => "rename temporary file over target",
            Step::RemoveTemporaryFile => "remove temporary file",
            Step::IdentifyFilesystem => "identify filesystem",
            Step::FsyncDirectory => "fsync directory",
            Step::Syncfs => "syncfs (commit the btrfs transaction)",
            Step::OpenLockFile => "open lock file",
            Step::Lock => "lock",
            Step::InspectLockFile => "inspect lock file",
            Step::InspectParentDirectory => "inspect parent directory",
            Step::Unlock => "unlock",
            Step::ReadCurrentContent => "read current content",
            Step::UpdateFunction => "update function",
            Step::OpenCurrentFile => "open current file",
            Step::InspectCurrentFile => "inspect current file",
            Step::FsyncDirectoryAfterBackup => "fsync directory after backup",
            Step::InspectBackup => "inspect backup",
            Step::RotateBackups => "rotate backups",
            Step::LinkBackup => "link backup",
            Step::ReadPreviousVersion => "read previous version",
            Step::WriteBackupCopy => "write backup copy",
            Step::SetBackupMode => "set backup mode",
            Step::FsyncBackupCopy => "fsync backup copy",
            Step::RenameBackupCopy => "rename backup copy",
            Step::OpenDirectory => "open directory",
            Step::ListDirectory => "list directory",
            Step::OpenTemporaryFile => "open temporary file",
            Step::InspectTemporaryFile => "inspect temporary file",
            Step::OpenRootDirectory => "open root directory",
            Step::OpenControlDirectory => "open control directory",
            Step::InspectControlDirectory => "inspect control directory",
            Step::TakeWriterLock => "take writer lock",
            Step::TakeReaderLock => "take reader lock",
            Step::ReleaseReaderLock => "release reader lock",
            Step::GenerateTransactionId => "generate transaction id",
            Step::CheckPath => "check path",
            Step::WriteJournalIntent => "write journal intent",
            Step::GenerateStagingName => "generate staging name",
            Step::CreateStagedFile => "create staged file",
            Step::WriteStagedFile => "write staged file",
            Step::CarryMetadata => "carry metadata",
            Step::FinishStagedFile => "finish staged file",
            Step::InspectFile => "inspect file",
            Step::InspectSource => "inspect source",
            Step::InspectDestination => "inspect destination",
            Step::CheckTransaction => "check transaction",
            Step::EncodeJournal => "encode journal",
            Step::CreateJournal => "create journal",
            Step::OpenStagingDirectory => "open staging directory",
            Step::WriteCommitRecord => "write commit record",
            Step::FlushCommitRound => "flush commit round",
            Step::FlushDirectories => "flush directories",
            Step::RetireJournal => "retire journal",
            Step::RemoveStagedFiles => "remove staged files",
            Step::ReadJournal => "read journal",
            Step::RecoverPendingTransaction => "recover pending transaction",
            Step::OpenFile => "open file",
            Step::ReadFile => "read file",
            Step::ReadRetiredJournal => "read retired journal",
            Step::FindStagedFiles => "find staged files",
            Step::RemoveStaleJournal => "remove stale journal",
            Step::RemoveStagedFile => "remove staged file",
            Step::RemoveJournal => "remove journal",
            Step::CreateQuarantineDirectory => "create quarantine directory",
            Step::QuarantineStagedFile => "move staged file to quarantine",
            Step::QuarantineJournal => "move journal to quarantine",
            Step::OpenStagedFile => "open staged file",
            Step::ReadStagedFile => "read staged file",
            Step::ReadTarget => "read target",
            Step::OpenTargetDirectory => "open target directory",
            Step::VerifyStagedFile => "verify staged file",
            Step::CreateDirectory => "create directory",
            Step::OpenNewDirectory => "open new directory",
            Step::OpenSourceDirectory => "open source directory",
            Step::OpenDestinationDirectory => "open destination directory",
            Step::RemoveHardLinkedSource => "remove hard-linked source",
            Step::Rename => "rename",
            Step::InspectStagedFile => "inspect staged file",
            Step::RemoveHardLinkedStagedFile => "remove hard-linked staged file",
            Step::RenameStagedFileOverTarget => "rename staged file over target",
            Step::RemoveFile => "remove file",
            Step::CreateRecord => "create record",
            Step::ReadRecord => "read record",
            Step::VerifyRecord => "verify record",
            Step::CheckRecordSize => "check record size",
            Step::WriteRecordSlot => "write record slot",
            Step::FlushRecord => "flush record",
            Step::ReadCandidate => "read candidate",
            Step::VerifyContent => "verify content",
            Step::ReadSequenceNumber => "read sequence number",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text())
    }
}

/// An fstx error.
///
/// Names the operation (`write`, `update`, `commit`, `recover`, ...), the
/// path it was applied to, the step that failed, the underlying
/// [`io::Error`], and the [`State`] the caller is left in. Converts into an
/// `io::Error` with the same [`io::ErrorKind`].
pub struct Error {
    op: &'static str,
    path: PathBuf,
    step: Step,
    state: State,
    source: io::Error,
}

impl Error {
    pub(crate) fn new(
        op: &'static str,
        path: &Path,
        step: Step,
        state: State,
        source: io::Error,
    ) -> Error {
        Error {
            op,
            path: path.to_path_buf(),
            step,
            state,
            source,
        }
    }

    /// The operation that failed (`"write"`, `"update"`, `"commit"`, ...).
    pub fn operation(&self) -> &'static str {
        self.op
    }

    /// The path the operation was applied to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The step that failed ([`Step::FsyncTemporaryFile`], [`Step::Lock`], ...).
    pub fn step(&self) -> Step {
        self.step
    }

    /// The state the target is left in.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The kind of the underlying I/O error.
    pub fn kind(&self) -> io::ErrorKind {
        self.source.kind()
    }

    /// The underlying I/O error.
    pub fn io_error(&self) -> &io::Error {
        &self.source
    }

    /// The underlying I/O error, by value.
    pub fn into_io_error(self) -> io::Error {
        self.source
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("op", &self.op)
            .field("path", &self.path)
            .field("step", &self.step)
            .field("state", &self.state)
            .field("source", &self.source)
            .finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}: {} ({})",
            self.op,
            self.path.display(),
            self.step,
            self.source,
            self.state
        )
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        io::Error::new(e.kind(), e)
    }
}

/// A specialised `Result` for fstx operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An `io::Error` with a message, for conditions the kernel does not report.
pub(crate) fn invalid(kind: io::ErrorKind, msg: &'static str) -> io::Error {
    io::Error::new(kind, msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_display_is_the_message_text() {
        let cases = [
            (Step::FsyncTemporaryFile, "fsync temporary file"),
            (Step::FsyncDirectory, "fsync directory"),
            (
                Step::FsyncDirectoryAfterBackup,
                "fsync directory after backup",
            ),
            (Step::Syncfs, "syncfs (commit the btrfs transaction)"),
            (Step::UpdateFunction, "update function"),
            (Step::Lock, "lock"),
            (Step::Rename, "rename"),
            (
                Step::OpenSymlinkTargetDirectory,
                "open symlink target's directory",
            ),
        ];
        for (step, text) in cases {
            assert_eq!(step.to_string(), text, "{step:?}");
        }
    }

    #[test]
    fn error_display_names_op_path_step_source_and_state() {
        let e = Error::new(
            "write",
            Path::new("/d/f"),
            Step::FsyncTemporaryFile,
            State::NotCommitted,
            io::Error::other("boom"),
        );
        assert_eq!(e.step(), Step::FsyncTemporaryFile);
        assert_eq!(
            e.to_string(),
            "write /d/f: fsync temporary file: boom (not committed; target unchanged)"
        );
        let e = Error::new(
            "update",
            Path::new("c"),
            Step::FsyncDirectoryAfterBackup,
            State::CommittedNotDurable,
            io::Error::from(io::ErrorKind::Other),
        );
        assert_eq!(
            e.to_string(),
            format!(
                "{} {}: {}: {} ({})",
                e.operation(),
                e.path().display(),
                e.step(),
                e.io_error(),
                e.state()
            )
        );
        assert!(e
            .to_string()
            .starts_with("update c: fsync directory after backup: "));
        assert!(e
            .to_string()
            .ends_with(" (committed, but durability unconfirmed: a power cut may undo it)"));
    }
}
