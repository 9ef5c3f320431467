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

/// An fstx error.
///
/// Names the operation (`write`, `update`, `commit`, `recover`, ...), the
/// path it was applied to, the step that failed, the underlying
/// [`io::Error`], and the [`State`] the caller is left in. Converts into an
/// `io::Error` with the same [`io::ErrorKind`].
pub struct Error {
    op: &'static str,
    path: PathBuf,
    step: &'static str,
    state: State,
    source: io::Error,
}

impl Error {
    pub(crate) fn new(
        op: &'static str,
        path: &Path,
        step: &'static str,
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

    /// The step that failed (`"fsync temporary file"`, `"rename"`, ...).
    pub fn step(&self) -> &'static str {
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
