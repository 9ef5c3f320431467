//! `fstx._fstx`: the native half of the Python package `fstx`.
//!
//! Thin: paths arrive as `bytes` (the Python side applies `os.fsencode`),
//! options as plain strings; every filesystem call runs with the GIL
//! released; every `fstx::Error` becomes the Python exception built by
//! `fstx._errors._make` (an `OSError` subclass with the right `errno`).
//! The Pythonic surface (context managers, text mode, dataclasses) is in
//! `python/fstx/__init__.py`.
// PyO3 0.22's `#[pyfunction]` expansion converts `PyErr` into itself.
#![allow(clippy::useless_conversion)]

use std::ffi::OsStr;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// Bytes as a path (no decoding: Linux paths are bytes).
fn path_of(b: &[u8]) -> PathBuf {
    PathBuf::from(OsStr::from_bytes(b))
}

/// The bytes of a path, for Python (`os.fsdecode` happens there).
fn bytes_of<'py>(py: Python<'py>, p: &Path) -> Bound<'py, PyBytes> {
    PyBytes::new_bound(py, p.as_os_str().as_bytes())
}

/// Content from Python: `bytes` only, borrowed as they are (the buffer
/// protocol is not in the limited API before 3.11: the Python side turns
/// other bytes-like objects and `str` into `bytes`).
fn data_of<'a>(obj: &'a Bound<'_, PyAny>) -> PyResult<&'a [u8]> {
    match obj.downcast::<PyBytes>() {
        Ok(b) => Ok(b.as_bytes()),
        Err(_) => Err(PyTypeError::new_err(format!(
            "bytes required, not '{}'",
            obj.get_type().name()?
        ))),
    }
}

/// The errno for an error the kernel did not give one for (fstx's own
/// refusals and timeouts carry an `io::ErrorKind` only).
fn errno_of(e: &io::Error) -> Option<i32> {
    use io::ErrorKind as K;
    if let Some(n) = e.raw_os_error() {
        return Some(n);
    }
    Some(match e.kind() {
        K::NotFound => libc::ENOENT,
        K::PermissionDenied => libc::EACCES,
        K::AlreadyExists => libc::EEXIST,
        K::WouldBlock => libc::EAGAIN,
        K::TimedOut => libc::ETIMEDOUT,
        K::InvalidInput | K::InvalidData => libc::EINVAL,
        K::Unsupported => libc::EOPNOTSUPP,
        K::IsADirectory => libc::EISDIR,
        K::NotADirectory => libc::ENOTDIR,
        K::DirectoryNotEmpty => libc::ENOTEMPTY,
        K::ReadOnlyFilesystem => libc::EROFS,
        K::StorageFull => libc::ENOSPC,
        K::Interrupted => libc::EINTR,
        K::UnexpectedEof | K::WriteZero => libc::EIO,
        K::CrossesDevices => libc::EXDEV,
        K::InvalidFilename => libc::ENAMETOOLONG,
        K::TooManyLinks => libc::EMLINK,
        _ => return None,
    })
}

/// The fields of an error, as `fstx._errors._make` takes them.
struct ErrorParts {
    errno: Option<i32>,
    message: String,
    state: &'static str,
    temp: Option<PathBuf>,
    step: String,
    path: PathBuf,
    operation: String,
    cause: String,
}

impl ErrorParts {
    fn of(e: &fstx::Error) -> ErrorParts {
        let (state, temp) = match e.state() {
            fstx::State::NotCommitted => ("not_committed", None),
            fstx::State::NotCommittedTempLeft { temp } => {
                ("not_committed_temp_left", Some(temp.clone()))
            }
            fstx::State::CommittedNotDurable => ("committed_not_durable", None),
            fstx::State::CommittedPendingRecovery => ("committed_pending_recovery", None),
        };
        ErrorParts {
            errno: errno_of(e.io_error()),
            message: e.to_string(),
            state,
            temp,
            step: e.step().to_string(),
            path: e.path().to_path_buf(),
            operation: e.operation().to_string(),
            cause: e.io_error().to_string(),
        }
    }

    fn into_pyerr(self, py: Python<'_>) -> PyErr {
        let made = (|| -> PyResult<PyErr> {
            let make = py.import_bound("fstx._errors")?.getattr("_make")?;
            let exc = make.call1((
                self.errno,
                self.message,
                self.state,
                self.temp.map(|t| bytes_of(py, &t)),
                self.step,
                bytes_of(py, &self.path),
                self.operation,
                self.cause,
            ))?;
            Ok(PyErr::from_value_bound(exc))
        })();
        made.unwrap_or_else(|e| e)
    }
}

fn to_pyerr(py: Python<'_>, e: &fstx::Error) -> PyErr {
    ErrorParts::of(e).into_pyerr(py)
}

fn durability_of(s: &str) -> PyResult<fstx::Durability> {
    Ok(match s {
        "durable" => fstx::Durability::Durable,
        "consistent" => fstx::Durability::Consistent,
        "none" => fstx::Durability::None,
        _ => {
            return Err(PyValueError::new_err(format!(
                "durability must be 'durable', 'consistent' or 'none', not {s:?}"
            )))
        }
    })
}

fn symlinks_of(s: &str) -> PyResult<fstx::Symlinks> {
    Ok(match s {
        "follow" => fstx::Symlinks::Follow,
        "replace" => fstx::Symlinks::ReplaceLink,
        "refuse" => fstx::Symlinks::Refuse,
        _ => {
            return Err(PyValueError::new_err(format!(
                "symlinks must be 'follow', 'replace' or 'refuse', not {s:?}"
            )))
        }
    })
}

fn options(
    mode: Option<u32>,
    durability: &str,
    symlinks: &str,
    allow_weak_fs: bool,
) -> PyResult<fstx::Options> {
    let mut o = fstx::Options::new();
    o.durability(durability_of(durability)?)
        .symlinks(symlinks_of(symlinks)?)
        .allow_weak_filesystems(allow_weak_fs);
    if let Some(m) = mode {
        if m > 0o7777 {
            return Err(PyValueError::new_err(format!(
                "mode must be at most 0o7777, not {m:#o}"
            )));
        }
        o.mode(m);
    }
    Ok(o)
}

/// Replaces the file at `path` with `data`, atomically and durably.
#[pyfunction]
#[pyo3(signature = (path, data, mode, durability, symlinks, allow_weak_fs))]
fn write(
    py: Python<'_>,
    path: &[u8],
    data: &Bound<'_, PyAny>,
    mode: Option<u32>,
    durability: &str,
    symlinks: &str,
    allow_weak_fs: bool,
) -> PyResult<()> {
    let opts = options(mode, durability, symlinks, allow_weak_fs)?;
    let path = path_of(path);
    let bytes = data_of(data)?;
    py.allow_threads(|| opts.write(&path, bytes))
        .map_err(|e| to_pyerr(py, &e))
}

/// A replace in progress: write, then `commit` or `discard`.
#[pyclass(module = "fstx._fstx")]
struct AtomicFile {
    inner: Option<fstx::AtomicFile>,
    path: PathBuf,
}

fn finished() -> PyErr {
    PyValueError::new_err("I/O operation on a committed or discarded file")
}

impl AtomicFile {
    fn inner(&mut self) -> PyResult<&mut fstx::AtomicFile> {
        self.inner.as_mut().ok_or_else(finished)
    }
}

#[pymethods]
impl AtomicFile {
    /// Writes all of `data` to the temporary file; returns its length.
    fn write(&mut self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<usize> {
        let bytes = data_of(data)?;
        let path = self.path.clone();
        let file = self.inner()?;
        py.allow_threads(|| file.write_all(bytes)).map_err(|e| {
            ErrorParts {
                errno: errno_of(&e),
                message: format!(
                    "write {}: write temporary file: {e} (not committed; target unchanged)",
                    path.display()
                ),
                state: "not_committed",
                temp: None,
                step: "write temporary file".into(),
                path,
                operation: "write".into(),
                cause: e.to_string(),
            }
            .into_pyerr(py)
        })?;
        Ok(bytes.len())
    }

    /// Makes the new content visible (and durable): the commit point.
    fn commit(&mut self, py: Python<'_>) -> PyResult<()> {
        let file = self.inner.take().ok_or_else(finished)?;
        py.allow_threads(|| file.commit())
            .map_err(|e| to_pyerr(py, &e))
    }

    /// Removes the temporary file; the target stays as it was.
    fn discard(&mut self, py: Python<'_>) -> PyResult<()> {
        let Some(file) = self.inner.take() else {
            return Ok(());
        };
        py.allow_threads(|| file.discard())
            .map_err(|e| to_pyerr(py, &e))
    }

    /// The temporary file holding the new content (`None` once finished).
    #[getter]
    fn temp_path<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyBytes>> {
        self.inner.as_ref().map(|f| bytes_of(py, &f.temp_path()))
    }

    /// Whether `commit` or `discard` was called.
    #[getter]
    fn finished(&self) -> bool {
        self.inner.is_none()
    }
}

/// Starts replacing `path`; nothing is visible there until `commit`.
#[pyfunction]
#[pyo3(signature = (path, mode, durability, symlinks, allow_weak_fs))]
fn open(
    py: Python<'_>,
    path: &[u8],
    mode: Option<u32>,
    durability: &str,
    symlinks: &str,
    allow_weak_fs: bool,
) -> PyResult<AtomicFile> {
    let opts = options(mode, durability, symlinks, allow_weak_fs)?;
    let path = path_of(path);
    let file = py
        .allow_threads(|| opts.open(&path))
        .map_err(|e| to_pyerr(py, &e))?;
    Ok(AtomicFile {
        inner: Some(file),
        path,
    })
}

/// Locked read-modify-write. Returns `(replaced, backup)`, `backup` being
/// `None`, `"hardlink"` or `"copy"`.
#[pyfunction]
#[pyo3(signature = (path, func, backup, generations, timeout, mode, durability, symlinks, allow_weak_fs))]
#[allow(clippy::too_many_arguments)]
fn update(
    py: Python<'_>,
    path: &[u8],
    func: PyObject,
    backup: Option<&[u8]>,
    generations: usize,
    timeout: Option<f64>,
    mode: Option<u32>,
    durability: &str,
    symlinks: &str,
    allow_weak_fs: bool,
) -> PyResult<(bool, Option<&'static str>)> {
    let mut uo = fstx::UpdateOptions::new();
    uo.options(options(mode, durability, symlinks, allow_weak_fs)?);
    if let Some(suffix) = backup {
        uo.backup(OsStr::from_bytes(suffix));
        uo.generations(generations);
    }
    match timeout {
        None => {}
        Some(t) if t.is_nan() || t < 0.0 => {
            return Err(PyValueError::new_err("timeout must be None or >= 0"))
        }
        Some(0.0) => {
            uo.wait(fstx::Wait::Try);
        }
        Some(t) => {
            uo.timeout(Duration::from_secs_f64(t));
        }
    }
    let path = path_of(path);
    // The function's own exception, given back unchanged.
    let mut raised: Option<PyErr> = None;
    let result = py.allow_threads(|| {
        uo.update(&path, |old| {
            Python::with_gil(|py| {
                let old = old.map(|b| PyBytes::new_bound(py, b));
                let out = func.call1(py, (old,)).and_then(|new| {
                    let new = new.bind(py);
                    if new.is_none() {
                        Ok(None)
                    } else {
                        Ok(Some(data_of(new)?.to_vec()))
                    }
                });
                out.map_err(|e| {
                    raised = Some(e);
                    io::Error::other("the update function raised an exception")
                })
            })
        })
    });
    match result {
        Ok(u) => Ok((
            u.replaced,
            u.backup.map(|b| match b {
                fstx::BackupKind::HardLink => "hardlink",
                fstx::BackupKind::Copy => "copy",
            }),
        )),
        Err(e) => match raised.take() {
            Some(pyerr) if e.step() == fstx::Step::UpdateFunction => Err(pyerr),
            _ => Err(to_pyerr(py, &e)),
        },
    }
}

/// A multi-file transaction under one root.
#[pyclass(module = "fstx._fstx")]
struct Transaction {
    inner: Option<fstx::Transaction>,
}

fn txn_finished() -> PyErr {
    PyValueError::new_err("the transaction was already committed or aborted")
}

impl Transaction {
    fn inner(&mut self) -> PyResult<&mut fstx::Transaction> {
        self.inner.as_mut().ok_or_else(txn_finished)
    }
}

#[pymethods]
impl Transaction {
    #[new]
    #[pyo3(signature = (root, durability, wait, allow_weak_fs))]
    fn new(
        py: Python<'_>,
        root: &[u8],
        durability: &str,
        wait: bool,
        allow_weak_fs: bool,
    ) -> PyResult<Transaction> {
        let mut o = fstx::TxnOptions::new();
        o.durability(durability_of(durability)?)
            .wait(wait)
            .allow_weak_filesystems(allow_weak_fs);
        let root = path_of(root);
        let txn = py
            .allow_threads(|| o.begin(&root))
            .map_err(|e| to_pyerr(py, &e))?;
        Ok(Transaction { inner: Some(txn) })
    }

    /// Stages `data` as the new content of `path` (relative to the root).
    fn write(&mut self, py: Python<'_>, path: &[u8], data: &Bound<'_, PyAny>) -> PyResult<()> {
        let bytes = data_of(data)?;
        let path = path_of(path);
        let txn = self.inner()?;
        py.allow_threads(|| txn.write(&path, bytes))
            .map_err(|e| to_pyerr(py, &e))
    }

    /// Stages the removal of the file `path`.
    fn remove(&mut self, py: Python<'_>, path: &[u8]) -> PyResult<()> {
        let path = path_of(path);
        let txn = self.inner()?;
        py.allow_threads(|| txn.remove(&path))
            .map_err(|e| to_pyerr(py, &e))
    }

    /// Stages renaming the file `src` to `dst`.
    fn rename(&mut self, py: Python<'_>, src: &[u8], dst: &[u8]) -> PyResult<()> {
        let (src, dst) = (path_of(src), path_of(dst));
        let txn = self.inner()?;
        py.allow_threads(|| txn.rename(&src, &dst))
            .map_err(|e| to_pyerr(py, &e))
    }

    /// Stages creating the directory `path` (and its missing parents).
    fn mkdir(&mut self, py: Python<'_>, path: &[u8]) -> PyResult<()> {
        let path = path_of(path);
        let txn = self.inner()?;
        py.allow_threads(|| txn.mkdir(&path))
            .map_err(|e| to_pyerr(py, &e))
    }

    /// Commits: returns `(seq, written, removed, renamed, dirs_created)`.
    fn commit(&mut self, py: Python<'_>) -> PyResult<(u64, usize, usize, usize, usize)> {
        let txn = self.inner.take().ok_or_else(txn_finished)?;
        let c = py
            .allow_threads(|| txn.commit())
            .map_err(|e| to_pyerr(py, &e))?;
        Ok((c.seq, c.written, c.removed, c.renamed, c.dirs_created))
    }

    /// Aborts: removes what was staged; the tree stays as it was.
    fn abort(&mut self, py: Python<'_>) -> PyResult<()> {
        let Some(txn) = self.inner.take() else {
            return Ok(());
        };
        py.allow_threads(|| txn.abort())
            .map_err(|e| to_pyerr(py, &e))
    }

    /// The transaction's sequence number.
    #[getter]
    fn seq(&self) -> PyResult<u64> {
        Ok(self.inner.as_ref().ok_or_else(txn_finished)?.seq())
    }

    /// Whether `commit` or `abort` was called.
    #[getter]
    fn finished(&self) -> bool {
        self.inner.is_none()
    }
}

/// A consistent view of a transaction root.
#[pyclass(module = "fstx._fstx")]
struct Snapshot {
    inner: Option<fstx::Snapshot>,
}

fn snapshot_closed() -> PyErr {
    PyValueError::new_err("the snapshot is closed")
}

#[pymethods]
impl Snapshot {
    #[new]
    fn new(py: Python<'_>, root: &[u8]) -> PyResult<Snapshot> {
        let root = path_of(root);
        let snap = py
            .allow_threads(|| fstx::Snapshot::open(&root))
            .map_err(|e| to_pyerr(py, &e))?;
        Ok(Snapshot { inner: Some(snap) })
    }

    /// The content of `path` in this snapshot.
    fn read<'py>(&self, py: Python<'py>, path: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
        let snap = self.inner.as_ref().ok_or_else(snapshot_closed)?;
        let path = path_of(path);
        let data = py
            .allow_threads(|| snap.read(&path))
            .map_err(|e| to_pyerr(py, &e))?;
        Ok(PyBytes::new_bound(py, &data))
    }

    /// The names in directory `path` in this snapshot.
    fn list<'py>(&self, py: Python<'py>, path: &[u8]) -> PyResult<Vec<Bound<'py, PyBytes>>> {
        let snap = self.inner.as_ref().ok_or_else(snapshot_closed)?;
        let path = path_of(path);
        let names = py
            .allow_threads(|| snap.list(&path))
            .map_err(|e| to_pyerr(py, &e))?;
        Ok(names
            .iter()
            .map(|n| PyBytes::new_bound(py, n.as_bytes()))
            .collect())
    }

    /// Releases the snapshot's reader lock.
    fn close(&mut self) {
        self.inner = None;
    }

    #[getter]
    fn closed(&self) -> bool {
        self.inner.is_none()
    }
}

type TxnTuple<'py> = (
    Bound<'py, PyBytes>,
    Option<u64>,
    &'static str,
    String,
    Vec<Bound<'py, PyBytes>>,
);

/// Recovers `path`: returns `(removed, in_use, transactions)`, each
/// transaction `(root, seq, outcome, description, swept)`.
#[pyfunction]
#[pyo3(signature = (path, dry_run))]
#[allow(clippy::type_complexity)]
fn recover<'py>(
    py: Python<'py>,
    path: &[u8],
    dry_run: bool,
) -> PyResult<(
    Vec<Bound<'py, PyBytes>>,
    Vec<Bound<'py, PyBytes>>,
    Vec<TxnTuple<'py>>,
)> {
    let path = path_of(path);
    let mut o = fstx::RecoverOptions::new();
    o.dry_run(dry_run);
    let r = py
        .allow_threads(|| o.recover(&path))
        .map_err(|e| to_pyerr(py, &e))?;
    let paths = |v: &[PathBuf]| v.iter().map(|p| bytes_of(py, p)).collect::<Vec<_>>();
    let txns = r
        .transactions
        .iter()
        .map(|t| {
            let outcome = match t.outcome {
                fstx::TxnOutcome::Finished { .. } => "finished",
                fstx::TxnOutcome::RolledBack { .. } => "rolled_back",
                fstx::TxnOutcome::Quarantined { .. } => "quarantined",
                fstx::TxnOutcome::DiscardedStale => "discarded_stale",
                _ => "other",
            };
            (
                bytes_of(py, &t.root),
                t.seq,
                outcome,
                t.to_string(),
                paths(&t.swept),
            )
        })
        .collect();
    Ok((paths(&r.removed), paths(&r.in_use), txns))
}

/// The native module; `fstx/__init__.py` is the public API.
#[pymodule]
fn _fstx(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(write, m)?)?;
    m.add_function(wrap_pyfunction!(open, m)?)?;
    m.add_function(wrap_pyfunction!(update, m)?)?;
    m.add_function(wrap_pyfunction!(recover, m)?)?;
    m.add_class::<AtomicFile>()?;
    m.add_class::<Transaction>()?;
    m.add_class::<Snapshot>()?;
    Ok(())
}
