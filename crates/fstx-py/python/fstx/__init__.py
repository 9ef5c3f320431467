"""File updates that survive a power cut at any instant.

fstx replaces files so that, at every instant, a file holds either its
complete old content or its complete new content — for readers in other
processes, and after a power cut. It is the Rust library ``fstx``; this
package is its Python binding.

Guarantees of :func:`write`, :func:`open` (on commit) and :func:`update`
with the default ``durability="durable"``, on a supported filesystem (ext4,
xfs, btrfs, tmpfs, ...; vfat, exfat and network filesystems are refused
unless ``allow_weak_fs=True``):

- **Atomic**: readers see the complete old or the complete new content,
  never a mix, never an empty or partial file — also after a power cut.
- **Durable**: once the call returned, the new content survives a power cut
  (the file and its directory are flushed; a failed flush is never retried
  into a success).
- **Metadata kept**: the new file gets the old one's owner, group, mode and
  extended attributes (never wider permissions, no set-id bits).
- **No garbage survives recovery**: a writer that dies leaves at most one
  temporary file, which :func:`recover` removes.

:func:`update` runs a read-modify-write under a cross-process lock, so
concurrent updaters (threads, processes) never lose an update.
:class:`Transaction` changes several files under one root all together or
not at all, whatever the moment of a power cut; :class:`Snapshot` reads a
root without ever seeing a transaction half applied.

Every failure raises :class:`Error`, an ``OSError`` with the right ``errno``
(and an instance of ``FileNotFoundError``, ``PermissionError``, ... as
``open`` raises), telling the failed ``step`` and the ``state`` you are in.
The GIL is released during all file I/O and flushes.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from typing import (
    Any,
    Callable,
    Iterable,
    List,
    Optional,
    Tuple,
    Union,
)

from . import _fstx
from ._errors import Error, State

__all__ = [
    "Error",
    "State",
    "write",
    "open",
    "AtomicFile",
    "update",
    "Updated",
    "Transaction",
    "Committed",
    "Snapshot",
    "recover",
    "Recovery",
    "TxnRecovery",
]

__version__ = "0.1.0"

StrPath = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]
Data = Union[bytes, bytearray, memoryview, str]


def _path(path: StrPath) -> bytes:
    """A path as the bytes the kernel sees (``os.fsencode`` of ``os.fspath``)."""
    return os.fsencode(os.fspath(path))


def _bytes(data: Any) -> bytes:
    """``bytes`` as they are, ``str`` as UTF-8, any other buffer copied."""
    if type(data) is bytes:
        return data
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, bytes):
        return bytes(data)
    try:
        with memoryview(data) as view:
            return view.tobytes()
    except TypeError:
        raise TypeError(
            f"a bytes-like object or str is required, not {type(data).__name__!r}"
        ) from None


def write(
    path: StrPath,
    data: Data,
    *,
    mode: Optional[int] = None,
    durability: str = "durable",
    symlinks: str = "follow",
    allow_weak_fs: bool = False,
) -> None:
    """Replaces the file at ``path`` with ``data``, atomically and durably.

    Like ``pathlib.Path.write_bytes``, but readers (and a power cut) see
    the complete old or the complete new content, never a mix or an empty
    file; once this returns (``durability="durable"``), the new content
    survives a power cut.

    - ``path``: ``str``, ``bytes`` (any name, also not UTF-8) or
      ``os.PathLike``.
    - ``data``: ``bytes``-like, or ``str`` (written as UTF-8).
    - ``mode``: permission bits of the new file (default: the old file's,
      or ``0o666`` less the umask for a new one).
    - ``durability``: ``"durable"`` (flush file and directory),
      ``"consistent"`` (flush the file: atomic after a power cut, may come
      back old) or ``"none"`` (atomic for readers only).
    - ``symlinks``: ``"follow"`` (replace the file a symlink points to),
      ``"replace"`` (replace the link itself) or ``"refuse"``.
    - ``allow_weak_fs``: accept filesystems that cannot keep the promise
      (vfat, exfat, NFS, ...) instead of refusing them.

    Raises :class:`Error` (state ``NOT_COMMITTED`` unless it says otherwise).
    """
    _fstx.write(_path(path), _bytes(data), mode, durability, symlinks, allow_weak_fs)


class _Raw(io.RawIOBase):
    """The native replace as a raw binary stream (for io's buffer and text layers)."""

    def __init__(self, native: _fstx.AtomicFile) -> None:
        super().__init__()
        self._native = native
        self._dropped = False

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        if self._dropped:  # discarded: what io still flushes goes nowhere
            return len(memoryview(b))
        return self._native.write(_bytes(b))


class AtomicFile:
    """A file being replaced: write to it, then :meth:`commit` or :meth:`discard`.

    Returned by :func:`open`. As a context manager it commits on a clean
    exit and discards on an exception. Nothing is visible at the target
    until :meth:`commit` returns; the content goes to a temporary file
    beside it, in constant memory whatever its size. A file object:
    ``write``, ``writelines``, ``flush`` — usable by ``json.dump``,
    ``pickle.dump``, ``shutil.copyfileobj``, ``print(file=...)``.
    """

    def __init__(self, native: _fstx.AtomicFile, path: StrPath, text: bool, encoding: Optional[str],
                 errors: Optional[str], newline: Optional[str], buffering: int) -> None:
        self._native = native
        self._raw = _Raw(native)
        size = buffering if buffering > 0 else 1 << 20
        self._buffer = io.BufferedWriter(self._raw, buffer_size=size)
        self._stream: Any  # io.BufferedWriter, or io.TextIOWrapper over it
        if text:
            self._stream = io.TextIOWrapper(
                self._buffer,
                encoding=encoding or "utf-8",
                errors=errors,
                newline=newline,
            )
        else:
            self._stream = self._buffer
        self.name = path
        self.mode = "w" if text else "wb"
        self._state: Optional[str] = None  # "committed" | "discarded" | "failed"

    # The file object.
    def write(self, data: Any) -> int:
        """Writes ``data`` (``bytes``-like in ``"wb"``, ``str`` in ``"w"``)."""
        self._check()
        n: int = self._stream.write(data)
        return n

    def writelines(self, lines: Iterable[Any]) -> None:
        """Writes each item of ``lines`` (no separators added)."""
        self._check()
        self._stream.writelines(lines)

    def flush(self) -> None:
        """Passes buffered data to the temporary file (not durable: commit is)."""
        self._check()
        self._stream.flush()

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    @property
    def closed(self) -> bool:
        """Whether the file was committed or discarded."""
        return self._state is not None

    @property
    def committed(self) -> bool:
        return self._state == "committed"

    @property
    def temp_path(self) -> Optional[str]:
        """The temporary file holding the new content until commit."""
        p = self._native.temp_path
        return os.fsdecode(p) if p is not None else None

    def _check(self) -> None:
        if self._state is not None:
            raise ValueError(f"I/O operation on a {self._state} file")

    def commit(self) -> None:
        """Makes the new content visible and (by default) durable.

        On success the target holds exactly what was written; on an error
        its ``state`` says whether the rename happened.
        """
        self._check()
        try:
            self._stream.flush()
        except BaseException:
            self.discard()
            raise
        try:
            self._native.commit()
        except BaseException:
            # The replace is over either way; the error's ``state`` says
            # whether the rename happened.
            self._state = "failed"
            raise
        else:
            self._state = "committed"
        finally:
            self._raw._dropped = True
            self._stream.close()

    def discard(self) -> None:
        """Drops what was written; the target stays as it was."""
        if self._state is not None:
            return
        self._state = "discarded"
        self._raw._dropped = True
        try:
            self._native.discard()
        finally:
            try:
                self._stream.close()
            except Exception:
                pass

    def close(self) -> None:
        """Discards, unless committed: an unfinished file never replaces the target."""
        self.discard()

    def __enter__(self) -> "AtomicFile":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            if self._state is None:
                self.commit()
        else:
            self.discard()

    def __del__(self) -> None:
        if getattr(self, "_state", "x") is None:
            try:
                self.discard()
            except Exception:
                pass

    def __repr__(self) -> str:
        return f"<fstx.AtomicFile name={self.name!r} mode={self.mode!r}>"


def open(
    path: StrPath,
    mode: str = "wb",
    *,
    encoding: Optional[str] = None,
    errors: Optional[str] = None,
    newline: Optional[str] = None,
    buffering: int = -1,
    permissions: Optional[int] = None,
    durability: str = "durable",
    symlinks: str = "follow",
    allow_weak_fs: bool = False,
) -> AtomicFile:
    """Opens ``path`` for an atomic replace; use it in a ``with`` block.

    ``mode`` is ``"wb"`` (write bytes) or ``"w"`` (write text with
    ``encoding``, default UTF-8, ``errors`` and ``newline`` as for the
    built-in ``open``). The content goes to a temporary file beside the
    target (constant memory, any size); a clean exit of the ``with`` block
    commits it — atomically and, by default, durably, with the guarantees of
    :func:`write` — and an exception discards it, leaving the target as it
    was. ``permissions`` is the new file's mode bits (``mode`` in
    :func:`write`); the other options are those of :func:`write`.

    >>> with fstx.open("state.json", "w") as f:   # doctest: +SKIP
    ...     json.dump(state, f)
    """
    if mode in ("wb", "bw"):
        text = False
    elif mode in ("w", "wt", "tw"):
        text = True
    else:
        raise ValueError(f"fstx.open: mode must be 'wb' or 'w', not {mode!r}")
    if not text and (encoding is not None or errors is not None or newline is not None):
        raise ValueError("binary mode doesn't take an encoding, errors or newline argument")
    native = _fstx.open(_path(path), permissions, durability, symlinks, allow_weak_fs)
    return AtomicFile(native, path, text, encoding, errors, newline, buffering)


@dataclass(frozen=True)
class Updated:
    """What :func:`update` did."""

    #: Whether the file was replaced (``False``: the function returned ``None``).
    replaced: bool
    #: How the previous version was kept: ``None``, ``"hardlink"`` or ``"copy"``.
    backup: Optional[str]


def update(
    path: StrPath,
    fn: Callable[[Optional[bytes]], Optional[Data]],
    *,
    backup: Union[bool, str] = False,
    generations: int = 1,
    timeout: Optional[float] = None,
    mode: Optional[int] = None,
    durability: str = "durable",
    symlinks: str = "follow",
    allow_weak_fs: bool = False,
) -> Updated:
    """Read-modify-write of ``path`` under a cross-process lock: no lost updates.

    Takes an exclusive lock (a sidecar ``.fstx-lock.NAME``, shared by
    threads and processes, released by the kernel if the holder dies),
    reads the current content, calls ``fn(old)`` — ``old`` is ``bytes``, or
    ``None`` if the file does not exist — and replaces the file with what it
    returns (``bytes``-like or ``str``) atomically and durably, as
    :func:`write`; ``None`` leaves the file as it is. An exception in ``fn``
    leaves the file unchanged and propagates as it is.

    - ``backup``: ``True`` keeps the previous version as ``NAME~`` (a
      string: that suffix), complete at every instant, also after a crash;
      ``generations`` keeps that many (``NAME~``, ``NAME~2``, ...).
    - ``timeout``: ``None`` waits for the lock as long as it takes; ``0``
      does not wait (``BlockingIOError``); a number of seconds waits at most
      that long (``TimeoutError``).

    The GIL is released while waiting for the lock and during I/O; ``fn``
    runs with it held. A blocking wait is not interrupted by Ctrl-C (the
    signal is handled once the call returns): give a ``timeout`` where that
    matters. Readers need no lock.
    """
    if isinstance(backup, str):
        suffix: Optional[bytes] = os.fsencode(backup) if backup else None
    else:
        suffix = b"~" if backup else None
    if generations < 1:
        raise ValueError("generations must be >= 1")

    def call(old: Optional[bytes]) -> Optional[bytes]:
        new = fn(old)
        return None if new is None else _bytes(new)

    replaced, kind = _fstx.update(
        _path(path), call, suffix, generations, timeout, mode, durability, symlinks,
        allow_weak_fs,
    )
    return Updated(replaced, kind)


@dataclass(frozen=True)
class Committed:
    """What a committed :class:`Transaction` did."""

    seq: int
    written: int
    removed: int
    renamed: int
    dirs_created: int


class Transaction:
    """Several files under one root that change all together or not at all.

    ``with fstx.Transaction(root) as txn:`` stages operations (``write``,
    ``remove``, ``rename``, ``mkdir``, paths relative to ``root``); a clean
    exit commits them, an exception aborts them. Whenever the power is cut,
    the tree holds either every change or none: a checksummed journal is the
    commit point, and recovery (automatic on the next transaction, or
    :func:`recover`) finishes or rolls back an interrupted one. Readers
    through :class:`Snapshot` never see a transaction half applied. One
    transaction at a time per root: the constructor takes the root's writer
    lock (``wait=True`` waits for it, ``wait=False`` raises if it is held)
    and recovers an interrupted transaction first.
    """

    def __init__(
        self,
        root: StrPath,
        *,
        durability: str = "durable",
        wait: bool = True,
        allow_weak_fs: bool = False,
    ) -> None:
        self.root = root
        self._native = _fstx.Transaction(_path(root), durability, wait, allow_weak_fs)
        #: What the commit did, once committed.
        self.committed: Optional[Committed] = None

    @property
    def seq(self) -> int:
        """The transaction's sequence number."""
        return self._native.seq

    def write(self, path: StrPath, data: Data) -> None:
        """Stages ``data`` as the new content of the file ``path``."""
        self._native.write(_path(path), _bytes(data))

    def remove(self, path: StrPath) -> None:
        """Stages the removal of the file ``path``."""
        self._native.remove(_path(path))

    def rename(self, src: StrPath, dst: StrPath) -> None:
        """Stages renaming the file ``src`` to ``dst``."""
        self._native.rename(_path(src), _path(dst))

    def mkdir(self, path: StrPath) -> None:
        """Stages creating the directory ``path`` (and missing parents)."""
        self._native.mkdir(_path(path))

    def commit(self) -> Committed:
        """Commits: every staged change is made, durably, or none is."""
        self.committed = Committed(*self._native.commit())
        return self.committed

    def abort(self) -> None:
        """Drops every staged change; the tree stays as it was."""
        self._native.abort()

    @property
    def finished(self) -> bool:
        return self._native.finished

    def __enter__(self) -> "Transaction":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self._native.finished:
            return
        if exc_type is None:
            self.commit()
        else:
            self._native.abort()

    def __repr__(self) -> str:
        return f"<fstx.Transaction root={self.root!r}>"


class Snapshot:
    """A consistent view of a transaction root for readers.

    While open, no transaction is applied under it (it holds the root's
    shared reader lock; writers stage and commit meanwhile, and apply once
    it is closed), so reads through it never see a transaction half
    applied. Use it in a ``with`` block or :meth:`close` it.
    """

    def __init__(self, root: StrPath) -> None:
        self.root = root
        self._native = _fstx.Snapshot(_path(root))

    def read(self, path: StrPath) -> bytes:
        """The content of the file ``path`` (relative to the root)."""
        return self._native.read(_path(path))

    def read_text(self, path: StrPath, encoding: str = "utf-8") -> str:
        return self.read(path).decode(encoding)

    def list(self, path: StrPath = ".") -> List[Any]:
        """The names in directory ``path``; ``bytes`` if ``path`` is bytes, else ``str``."""
        names = self._native.list(_path(path))
        if isinstance(os.fspath(path), bytes):
            return names
        return [os.fsdecode(n) for n in names]

    def close(self) -> None:
        self._native.close()

    @property
    def closed(self) -> bool:
        return self._native.closed

    def __enter__(self) -> "Snapshot":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


@dataclass(frozen=True)
class TxnRecovery:
    """What recovery did to one transaction root."""

    root: str
    seq: Optional[int]
    #: ``"finished"`` (it had committed: applied to completion),
    #: ``"rolled_back"`` (it had not: staged files removed),
    #: ``"quarantined"`` (malformed record moved aside) or
    #: ``"discarded_stale"`` (an already applied journal removed).
    outcome: str
    #: The Rust library's one-line description.
    description: str
    swept: Tuple[str, ...] = ()


@dataclass(frozen=True)
class Recovery:
    """What :func:`recover` did (or, with ``dry_run``, would do)."""

    #: Temporary files of dead writers removed.
    removed: Tuple[str, ...] = ()
    #: Temporary files left alone because a live writer holds them.
    in_use: Tuple[str, ...] = ()
    #: Interrupted transactions finished or rolled back.
    transactions: Tuple[TxnRecovery, ...] = field(default_factory=tuple)

    def __bool__(self) -> bool:
        """True if recovery found something to do."""
        return bool(self.removed or self.in_use or self.transactions)


def recover(path: StrPath, *, dry_run: bool = False) -> Recovery:
    """Cleans up after writers that died (a crash, SIGKILL, a power cut).

    For a directory: removes the temporary files of dead writers (never a
    live writer's). For a transaction root: finishes a transaction that had
    committed, or rolls back one that had not. Run it at boot, before the
    application reads its files. Returns what it did.
    """
    removed, in_use, txns = _fstx.recover(_path(path), dry_run)
    return Recovery(
        removed=tuple(os.fsdecode(p) for p in removed),
        in_use=tuple(os.fsdecode(p) for p in in_use),
        transactions=tuple(
            TxnRecovery(os.fsdecode(r), seq, outcome, desc, tuple(os.fsdecode(s) for s in swept))
            for (r, seq, outcome, desc, swept) in txns
        ),
    )

