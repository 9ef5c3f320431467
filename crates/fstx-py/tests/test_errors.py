"""fstx.Error: an OSError with the right errno and subclass, plus the state."""

import errno
import os
import pickle
import subprocess
import sys
import tempfile

import pytest

import fstx
from fstx import _errors


def raised(fn, *args, **kw):
    with pytest.raises(fstx.Error) as e:
        fn(*args, **kw)
    return e.value


def test_file_not_found(tmp_path):
    e = raised(fstx.write, tmp_path / "no" / "f", b"x")
    assert isinstance(e, FileNotFoundError) and isinstance(e, OSError)
    assert e.errno == errno.ENOENT
    assert e.state is fstx.State.NOT_COMMITTED and not e.committed
    assert e.step == "open parent directory"
    assert e.operation == "write"
    assert e.path == e.filename == str(tmp_path / "no" / "f")
    assert e.temp is None
    # The Rust error's one-line message.
    assert str(e) == (
        f"write {tmp_path}/no/f: open parent directory: No such file or directory "
        "(os error 2) (not committed; target unchanged)"
    )
    assert "\n" not in str(e)


def test_except_builtin_subclasses(tmp_path):
    (tmp_path / "dir").mkdir()
    (tmp_path / "file").write_bytes(b"")
    try:
        fstx.write(tmp_path / "missing" / "x", b"")
    except FileNotFoundError:
        pass
    with pytest.raises(IsADirectoryError) as e:
        fstx.write(tmp_path / "dir", b"")
    assert e.value.errno == errno.EISDIR and e.value.step == "inspect target"
    with pytest.raises(NotADirectoryError) as e:
        fstx.write(tmp_path / "file" / "x", b"")
    assert e.value.errno == errno.ENOTDIR
    os.symlink("loop", tmp_path / "loop")
    e = raised(fstx.write, tmp_path / "loop", b"")
    assert e.errno == errno.ELOOP and type(e) is fstx.Error
    assert e.step == "resolve symlink"


def test_errors_of_every_entry_point(tmp_path):
    missing = tmp_path / "missing" / "f"
    for call in (
        lambda: fstx.write(missing, b""),
        lambda: fstx.open(missing, "wb"),
        lambda: fstx.update(missing, lambda old: b""),
        lambda: fstx.Transaction(missing),
        lambda: fstx.Snapshot(missing),
        lambda: fstx.recover(missing),
    ):
        with pytest.raises(FileNotFoundError) as e:
            call()
        assert isinstance(e.value, fstx.Error)
        assert e.value.state == fstx.State.NOT_COMMITTED
        assert e.value.path.startswith(str(tmp_path))
        assert e.value.operation


def test_non_utf8_path_in_error(tmp_path):
    bad = os.fsencode(str(tmp_path)) + b"/\xff/f"
    e = raised(fstx.write, bad, b"")
    assert os.fsencode(e.path) == bad
    assert isinstance(e, FileNotFoundError)


def test_permission_error_as_nobody(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to an unprivileged user")
    d = tempfile.mkdtemp(prefix="fstx-perm-")
    try:
        os.chmod(d, 0o755)
        with open(os.path.join(d, "f"), "wb") as f:
            f.write(b"root's")
        code = (
            "import sys\n"
            "sys.path[:0] = sys.argv[2:]\n"
            "import fstx\n"
            "try:\n"
            "    fstx.write(sys.argv[1], b'x')\n"
            "except PermissionError as e:\n"
            "    assert isinstance(e, fstx.Error) and e.state == 'not_committed'\n"
            "    print('PermissionError', e.errno, e.step)\n"
        )
        paths = [os.path.dirname(os.path.dirname(fstx.__file__))]
        try:
            r = subprocess.run(
                [sys.executable, "-c", code, os.path.join(d, "f"), *paths],
                user=65534, group=65534, capture_output=True, text=True,
            )
        except PermissionError:
            pytest.skip("this interpreter is not executable by nobody (under /root)")
        if "No module named" in r.stderr or "Permission denied: '/root" in r.stderr:
            pytest.skip(f"fstx is not importable by nobody: {r.stderr[-200:]}")
        assert r.stdout.startswith("PermissionError 13 "), r.stderr
        with open(os.path.join(d, "f"), "rb") as f:
            assert f.read() == b"root's"
    finally:
        import shutil

        shutil.rmtree(d)


def test_pickle_keeps_everything(tmp_path):
    e = raised(fstx.write, tmp_path / "no" / "f", b"x")
    e2 = pickle.loads(pickle.dumps(e))
    assert type(e2) is type(e)
    assert isinstance(e2, FileNotFoundError) and isinstance(e2, fstx.Error)
    assert (e2.errno, str(e2), e2.state, e2.step, e2.path, e2.operation) == (
        e.errno, str(e), e.state, e.step, e.path, e.operation,
    )


@pytest.mark.parametrize("state", list(fstx.State))
def test_every_state(state):
    e = _errors._make(
        errno.EIO, "msg", state.value, b"/t/.fstx-tmp.x" if "temp" in state.value else None,
        "fsync directory", b"/t/x", "write", "I/O error",
    )
    assert isinstance(e, fstx.Error) and e.errno == errno.EIO
    assert e.state is state and e.state == state.value
    assert e.committed == (state in (fstx.State.COMMITTED_NOT_DURABLE,
                                     fstx.State.COMMITTED_PENDING_RECOVERY))
    assert (e.temp is not None) == (state is fstx.State.NOT_COMMITTED_TEMP_LEFT)


def test_errno_mapping_and_no_errno():
    for code, base in [
        (errno.ENOENT, FileNotFoundError),
        (errno.EEXIST, FileExistsError),
        (errno.EACCES, PermissionError),
        (errno.EPERM, PermissionError),
        (errno.ETIMEDOUT, TimeoutError),
        (errno.EAGAIN, BlockingIOError),
        (errno.EISDIR, IsADirectoryError),
        (errno.ENOTDIR, NotADirectoryError),
    ]:
        e = _errors._make(code, "m", "not_committed", None, "s", b"/p", "op", "c")
        assert isinstance(e, base) and isinstance(e, fstx.Error), code
    e = _errors._make(None, "m", "not_committed", None, "s", b"/p", "op", "cause")
    assert type(e) is fstx.Error and e.errno is None and str(e) == "m"
