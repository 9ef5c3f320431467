"""fstx's exception: an OSError that also says which state you are in.

The native module raises what ``_make`` builds: an instance of ``Error``
and, when the errno has one, of the matching built-in ``OSError`` subclass
(``FileNotFoundError``, ``PermissionError``, ``TimeoutError``, ...), so
``except FileNotFoundError`` works as it does for ``open``.
"""

from __future__ import annotations

import enum
import errno as _errno
import os
from typing import Dict, Optional, Type

__all__ = ["Error", "State"]


class State(str, enum.Enum):
    """The state the target is in after an operation failed."""

    #: Not committed: the target is untouched and no temporary file is left.
    NOT_COMMITTED = "not_committed"
    #: Not committed: the target is untouched, but a temporary file could not
    #: be removed (``Error.temp`` names it); ``fstx.recover`` removes it later.
    NOT_COMMITTED_TEMP_LEFT = "not_committed_temp_left"
    #: Committed, durability unconfirmed: the new content is visible but a
    #: flush after the rename failed; a power cut may still undo it. Never
    #: "fixed" by retrying.
    COMMITTED_NOT_DURABLE = "committed_not_durable"
    #: A transaction passed its commit point but could not be applied
    #: completely; recovery (on the next transaction or ``fstx.recover``)
    #: finishes it.
    COMMITTED_PENDING_RECOVERY = "committed_pending_recovery"

    @property
    def committed(self) -> bool:
        """Whether the new content is (or, after recovery, will be) in place."""
        return self in (State.COMMITTED_NOT_DURABLE, State.COMMITTED_PENDING_RECOVERY)

    def __str__(self) -> str:
        return self.value


class Error(OSError):
    """An fstx operation failed.

    An ``OSError`` with the errno of the underlying failure (and an instance
    of the matching built-in subclass such as ``FileNotFoundError``), plus:

    - ``state``: a :class:`State` — not committed (old content intact), not
      committed with a temporary file left, committed but not durable, or
      committed pending recovery;
    - ``step``: the failed step, e.g. ``"fsync temporary file"``;
    - ``path``: the path the operation was given (``str``, undecodable bytes
      escaped as by ``os.fsdecode``), also in ``filename``;
    - ``operation``: ``"write"``, ``"update"``, ``"commit"``, ...;
    - ``temp``: the temporary file left behind, or ``None``.

    ``str(e)`` is the Rust error's one-line message.
    """

    state: State
    step: str
    path: str
    operation: str
    temp: Optional[str]
    message: str

    __module__ = "fstx"

    def __str__(self) -> str:
        message = self.__dict__.get("message")
        return message if message is not None else super().__str__()

    @property
    def committed(self) -> bool:
        """Whether the new content is (or will be, after recovery) in place."""
        return self.state.committed


# One class per built-in OSError subclass, so that ``isinstance(e,
# FileNotFoundError)`` and ``isinstance(e, fstx.Error)`` both hold. They are
# named after their built-in base and live here (importable: picklable).
_BASES = {
    _errno.ENOENT: FileNotFoundError,
    _errno.EEXIST: FileExistsError,
    _errno.EACCES: PermissionError,
    _errno.EPERM: PermissionError,
    _errno.EISDIR: IsADirectoryError,
    _errno.ENOTDIR: NotADirectoryError,
    _errno.ETIMEDOUT: TimeoutError,
    _errno.EAGAIN: BlockingIOError,
    _errno.EWOULDBLOCK: BlockingIOError,
    _errno.EINTR: InterruptedError,
    _errno.ECHILD: ChildProcessError,
    _errno.ESRCH: ProcessLookupError,
    _errno.EPIPE: BrokenPipeError,
}

_BY_ERRNO: Dict[int, Type[Error]] = {}
for _code, _base in _BASES.items():
    _cls = next((c for c in _BY_ERRNO.values() if _base in c.__bases__), None)
    if _cls is None:
        _cls = type(_base.__name__, (Error, _base), {"__module__": __name__})
        globals()[_base.__name__] = _cls
    _BY_ERRNO[_code] = _cls
del _code, _base, _cls


def _make(
    errno: Optional[int],
    message: str,
    state: str,
    temp: Optional[bytes],
    step: str,
    path: bytes,
    operation: str,
    cause: str,
) -> Error:
    """Builds the exception for a native error (called by ``fstx._fstx``)."""
    cls = _BY_ERRNO.get(errno, Error) if errno is not None else Error
    filename = os.fsdecode(path)
    if errno is not None:
        e = cls(errno, os.strerror(errno), filename)
    else:
        e = cls(cause)
        e.filename = filename
    e.message = message
    e.state = State(state)
    e.step = step
    e.path = filename
    e.operation = operation
    e.temp = os.fsdecode(temp) if temp is not None else None
    return e
