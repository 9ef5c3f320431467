"""Every function of the package, on the real kernel (pytest's tmp_path)."""

import io
import json
import os
import pathlib
import pickle
import shutil
import stat
import threading

import pytest

import fstx


def names(d):
    return sorted(os.listdir(d))


def no_temp(d):
    return [n for n in os.listdir(d) if n.startswith(".fstx-tmp.")] == []


# --- write -----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["str", "bytes", "pathlike-str", "pathlike-bytes"])
def test_write_path_types(tmp_path, kind):
    p = str(tmp_path / "f")
    path = {
        "str": p,
        "bytes": os.fsencode(p),
        "pathlike-str": pathlib.Path(p),
        "pathlike-bytes": type("P", (), {"__fspath__": lambda self: os.fsencode(p)})(),
    }[kind]
    fstx.write(path, b"one")
    assert open(p, "rb").read() == b"one"
    fstx.write(path, b"two")
    assert open(p, "rb").read() == b"two"
    assert no_temp(tmp_path)


@pytest.mark.parametrize(
    "data,expected",
    [
        (b"bytes", b"bytes"),
        (bytearray(b"array"), b"array"),
        (memoryview(b"xxview")[2:], b"view"),
        ("text \u00e9", "text \u00e9".encode()),
        (b"", b""),
    ],
)
def test_write_data_types(tmp_path, data, expected):
    fstx.write(tmp_path / "f", data)
    assert (tmp_path / "f").read_bytes() == expected


def test_write_array_and_bad_type(tmp_path):
    import array

    fstx.write(tmp_path / "a", array.array("B", [1, 2, 3]))
    assert (tmp_path / "a").read_bytes() == b"\x01\x02\x03"
    with pytest.raises(TypeError):
        fstx.write(tmp_path / "b", 12)
    with pytest.raises(TypeError):
        fstx.write(12, b"x")


def test_write_non_utf8_name(tmp_path):
    name = os.fsencode(str(tmp_path)) + b"/caf\xe9-\xff"
    fstx.write(name, b"latin-1 name")
    assert b"caf\xe9-\xff" in os.listdir(os.fsencode(str(tmp_path)))
    with open(name, "rb") as f:
        assert f.read() == b"latin-1 name"
    # The same name as str, surrogate-escaped as os.fsdecode gives it.
    fstx.write(os.fsdecode(name), b"again")
    with open(name, "rb") as f:
        assert f.read() == b"again"


def test_write_mode_and_kept_mode(tmp_path):
    p = tmp_path / "m"
    fstx.write(p, b"x", mode=0o600)
    assert stat.S_IMODE(p.stat().st_mode) == 0o600
    fstx.write(p, b"y")  # keeps the old file's mode
    assert stat.S_IMODE(p.stat().st_mode) == 0o600
    fstx.write(p, b"z", mode=0o640)
    assert stat.S_IMODE(p.stat().st_mode) == 0o640


@pytest.mark.parametrize("durability", ["durable", "consistent", "none"])
def test_write_durability(tmp_path, durability):
    fstx.write(tmp_path / "d", b"x", durability=durability)
    assert (tmp_path / "d").read_bytes() == b"x"


def test_write_bad_options(tmp_path):
    with pytest.raises(ValueError):
        fstx.write(tmp_path / "x", b"", durability="maybe")
    with pytest.raises(ValueError):
        fstx.write(tmp_path / "x", b"", symlinks="sometimes")
    with pytest.raises(ValueError):
        fstx.write(tmp_path / "x", b"", mode=0o17777)
    assert not (tmp_path / "x").exists()


def test_write_symlinks(tmp_path):
    (tmp_path / "target").write_bytes(b"old")
    os.symlink("target", tmp_path / "link")
    fstx.write(tmp_path / "link", b"followed")
    assert (tmp_path / "target").read_bytes() == b"followed"
    assert os.path.islink(tmp_path / "link")
    with pytest.raises(fstx.Error) as e:
        fstx.write(tmp_path / "link", b"no", symlinks="refuse")
    assert e.value.state == fstx.State.NOT_COMMITTED
    assert (tmp_path / "target").read_bytes() == b"followed"
    fstx.write(tmp_path / "link", b"replaced", symlinks="replace")
    assert not os.path.islink(tmp_path / "link")
    assert (tmp_path / "link").read_bytes() == b"replaced"
    assert (tmp_path / "target").read_bytes() == b"followed"


def test_write_threads(tmp_path):
    errors = []

    def run(i):
        try:
            for j in range(20):
                fstx.write(tmp_path / f"t{i}", f"{i}-{j}")
        except Exception as e:  # pragma: no cover
            errors.append(e)

    ts = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert errors == []
    for i in range(8):
        assert (tmp_path / f"t{i}").read_text() == f"{i}-19"
    assert no_temp(tmp_path)


# --- open ------------------------------------------------------------------


def test_open_binary_commit(tmp_path):
    p = tmp_path / "b"
    p.write_bytes(b"old")
    with fstx.open(p, "wb") as f:
        assert f.write(b"new ") == 4
        f.writelines([b"con", bytearray(b"tent")])
        f.flush()
        assert p.read_bytes() == b"old"  # nothing visible before commit
        assert os.path.exists(f.temp_path)
    assert f.closed and f.committed
    assert p.read_bytes() == b"new content"
    assert no_temp(tmp_path)


def test_open_text(tmp_path):
    p = tmp_path / "t"
    with fstx.open(p, "w") as f:
        f.write("h\u00e9\n")
        print("printed", file=f)
    assert p.read_bytes() == "h\u00e9\nprinted\n".encode()
    with fstx.open(p, "w", encoding="latin-1") as f:
        f.write("\u00e9")
    assert p.read_bytes() == b"\xe9"


def test_open_exception_discards(tmp_path):
    p = tmp_path / "e"
    p.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with fstx.open(p, "wb") as f:
            f.write(b"partial")
            temp = f.temp_path
            raise RuntimeError("boom")
    assert p.read_bytes() == b"old"
    assert not os.path.exists(temp)
    assert no_temp(tmp_path)
    with pytest.raises(ValueError):
        f.write(b"after")


def test_open_json_pickle_copyfileobj(tmp_path):
    state = {"volume": 7, "names": ["a", "b"]}
    with fstx.open(tmp_path / "s.json", "w") as f:
        json.dump(state, f)
    assert json.loads((tmp_path / "s.json").read_text()) == state
    with fstx.open(tmp_path / "s.pickle", "wb") as f:
        pickle.dump(state, f)
    assert pickle.loads((tmp_path / "s.pickle").read_bytes()) == state
    src = io.BytesIO(os.urandom(3 << 20))
    with fstx.open(tmp_path / "copy", "wb") as f:
        shutil.copyfileobj(src, f)
    assert (tmp_path / "copy").read_bytes() == src.getvalue()


def test_open_explicit_commit_discard_close(tmp_path):
    f = fstx.open(tmp_path / "c", "wb", permissions=0o600)
    f.write(b"x")
    f.commit()
    assert (tmp_path / "c").read_bytes() == b"x"
    assert stat.S_IMODE((tmp_path / "c").stat().st_mode) == 0o600
    with pytest.raises(ValueError):
        f.commit()
    g = fstx.open(tmp_path / "c", "wb")
    g.write(b"y")
    g.close()  # close without commit discards
    assert (tmp_path / "c").read_bytes() == b"x"
    h = fstx.open(tmp_path / "c", "wb")
    h.write(b"z")
    h.discard()
    h.discard()  # idempotent
    assert (tmp_path / "c").read_bytes() == b"x"
    assert no_temp(tmp_path)


def test_open_bad_mode(tmp_path):
    for mode in ("r", "rb", "a", "w+", "x"):
        with pytest.raises(ValueError):
            fstx.open(tmp_path / "m", mode)
    with pytest.raises(ValueError):
        fstx.open(tmp_path / "m", "wb", encoding="utf-8")
    assert names(tmp_path) == []


def test_open_text_type_errors(tmp_path):
    with pytest.raises(TypeError):
        with fstx.open(tmp_path / "t", "w") as f:
            f.write(b"bytes into text")
    with pytest.raises(TypeError):
        with fstx.open(tmp_path / "b", "wb") as f:
            f.write("text into bytes")
    assert names(tmp_path) == []


# --- update ----------------------------------------------------------------


def test_update_counter_and_none(tmp_path):
    p = tmp_path / "n"
    seen = []

    def inc(old):
        seen.append(old)
        return str(int(old or b"0") + 1)

    assert fstx.update(p, inc) == fstx.Updated(replaced=True, backup=None)
    assert fstx.update(p, inc).replaced
    assert seen == [None, b"1"]
    assert p.read_bytes() == b"2"
    assert fstx.update(p, lambda old: None) == fstx.Updated(False, None)
    assert p.read_bytes() == b"2"


def test_update_exception_propagates_unchanged(tmp_path):
    p = tmp_path / "n"
    p.write_bytes(b"5")

    class Mine(Exception):
        pass

    def bad(old):
        raise Mine("mine")

    with pytest.raises(Mine, match="mine"):
        fstx.update(p, bad)
    assert p.read_bytes() == b"5"
    assert no_temp(tmp_path)
    with pytest.raises(TypeError):
        fstx.update(p, lambda old: 42)
    assert p.read_bytes() == b"5"


def test_update_backup_generations(tmp_path):
    p = tmp_path / "cfg"
    for v in (b"v1", b"v2", b"v3"):
        r = fstx.update(p, lambda old, v=v: v, backup=True, generations=2)
    assert r.backup in ("hardlink", "copy")
    assert p.read_bytes() == b"v3"
    assert (tmp_path / "cfg~").read_bytes() == b"v2"
    assert (tmp_path / "cfg~2").read_bytes() == b"v1"
    fstx.update(p, lambda old: b"v4", backup=".bak")
    assert (tmp_path / "cfg.bak").read_bytes() == b"v3"
    with pytest.raises(ValueError):
        fstx.update(p, lambda old: b"", generations=0)


def test_update_timeout_and_try(tmp_path):
    p = tmp_path / "locked"
    entered = threading.Event()
    release = threading.Event()

    def slow(old):
        entered.set()
        release.wait(10)
        return b"slow"

    t = threading.Thread(target=fstx.update, args=(p, slow))
    t.start()
    assert entered.wait(10)
    try:
        with pytest.raises(TimeoutError) as e:
            fstx.update(p, lambda old: b"late", timeout=0.2)
        assert isinstance(e.value, fstx.Error)
        assert e.value.step == "lock"
        assert e.value.state == fstx.State.NOT_COMMITTED
        with pytest.raises(BlockingIOError):
            fstx.update(p, lambda old: b"late", timeout=0)
    finally:
        release.set()
        t.join()
    assert p.read_bytes() == b"slow"
    with pytest.raises(ValueError):
        fstx.update(p, lambda old: b"", timeout=-1)


def test_update_threads_no_lost_update(tmp_path):
    p = tmp_path / "n"

    def run():
        for _ in range(25):
            fstx.update(p, lambda old: str(int(old or b"0") + 1))

    ts = [threading.Thread(target=run) for _ in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert p.read_bytes() == b"200"


# --- transactions and snapshots ---------------------------------------------


def test_transaction_all_operations(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "old.conf").write_bytes(b"old")
    (root / "a.json").write_bytes(b"a")
    with fstx.Transaction(root) as txn:
        assert txn.seq >= 1
        txn.mkdir("cache/sub")
        txn.write("config/app.toml", "level = 3\n")
        txn.write(b"config/limits.toml", b"max = 10\n")
        txn.remove(pathlib.Path("old.conf"))
        txn.rename("a.json", "b.json")
        assert not (root / "config").exists()  # nothing applied before commit
    c = txn.committed
    assert (c.written, c.removed, c.renamed) == (2, 1, 1)
    assert c.dirs_created >= 1
    assert (root / "config/app.toml").read_text() == "level = 3\n"
    assert (root / "config/limits.toml").read_text() == "max = 10\n"
    assert not (root / "old.conf").exists()
    assert (root / "b.json").read_bytes() == b"a" and not (root / "a.json").exists()
    assert (root / "cache/sub").is_dir()
    assert txn.finished
    with pytest.raises(ValueError):
        txn.write("x", b"x")


def test_transaction_exception_aborts(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "keep").write_bytes(b"keep")
    with pytest.raises(KeyError):
        with fstx.Transaction(root) as txn:
            txn.write("new", b"new")
            txn.remove("keep")
            raise KeyError("no")
    assert names(root) in (["keep"], [".fstx-txn", "keep"])
    assert (root / "keep").read_bytes() == b"keep"
    t2 = fstx.Transaction(root)
    t2.write("explicit", b"1")
    assert t2.commit().written == 1
    t3 = fstx.Transaction(root)
    t3.write("dropped", b"1")
    t3.abort()
    assert not (root / "dropped").exists()


def test_transaction_errors(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        fstx.Transaction(tmp_path / "missing")
    assert isinstance(e.value, fstx.Error) and e.value.state == fstx.State.NOT_COMMITTED
    root = tmp_path / "r"
    root.mkdir()
    with fstx.Transaction(root) as txn:
        with pytest.raises(fstx.Error) as e:
            txn.write("../escape", b"x")
        assert e.value.step == "parse path"
        with pytest.raises(FileNotFoundError):
            txn.remove("not-there")
        with pytest.raises(FileNotFoundError):
            txn.rename("not-there", "b")
        txn.abort()
    assert not (tmp_path / "escape").exists()
    # One writer per root: without waiting, a second transaction is refused.
    with fstx.Transaction(root) as held:
        with pytest.raises(fstx.Error) as e:
            fstx.Transaction(root, wait=False)
        assert e.value.step == "take writer lock"
        held.write("h", b"h")


def test_snapshot(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    with fstx.Transaction(root) as txn:
        txn.write("a", b"1")
        txn.write("d/b", b"2")
    with fstx.Snapshot(root) as snap:
        assert snap.read("a") == b"1"
        assert snap.read_text(pathlib.Path("d/b")) == "2"
        assert sorted(snap.list(".")) == ["a", "d"]
        assert sorted(snap.list(b"d")) == [b"b"]
        with pytest.raises(FileNotFoundError) as e:
            snap.read("missing")
        assert isinstance(e.value, fstx.Error)
    assert snap.closed
    with pytest.raises(ValueError):
        snap.read("a")
    with pytest.raises(FileNotFoundError):
        fstx.Snapshot(tmp_path / "nope")


# --- recover ---------------------------------------------------------------


def test_recover_removes_dead_writers_temp(tmp_path):
    import subprocess
    import sys

    (tmp_path / "f").write_bytes(b"old")
    # A writer killed mid-replace leaves its temporary file behind.
    code = (
        "import fstx, os, sys\n"
        "f = fstx.open(sys.argv[1], 'wb')\n"
        "f.write(b'half')\n"
        "f.flush()\n"
        "os._exit(9)\n"
    )
    rc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "f")]).returncode
    assert rc == 9
    (dead,) = [n for n in os.listdir(tmp_path) if n.startswith(".fstx-tmp.")]
    # A live writer's temporary file is never removed.
    live = fstx.open(tmp_path / "f", "wb")
    live.write(b"live")
    dry = fstx.recover(tmp_path, dry_run=True)
    assert dry.removed == (str(tmp_path / dead),)
    assert os.path.exists(tmp_path / dead)
    r = fstx.recover(tmp_path)
    assert r.removed == (str(tmp_path / dead),)
    assert r.in_use == (live.temp_path,)
    assert bool(r)
    live.commit()
    assert (tmp_path / "f").read_bytes() == b"live"
    assert not fstx.recover(tmp_path)
    assert no_temp(tmp_path)


def test_recover_transaction_root(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    with fstx.Transaction(root) as txn:
        txn.write("a", b"1")
    r = fstx.recover(root)
    assert isinstance(r, fstx.Recovery)
    assert all(isinstance(t, fstx.TxnRecovery) for t in r.transactions)
    with pytest.raises(FileNotFoundError):
        fstx.recover(tmp_path / "missing")


def test_open_commit_failure_state(tmp_path):
    p = tmp_path / "target"
    f = fstx.open(p, "wb")
    f.write(b"new")
    p.mkdir()  # something that may not be replaced appears meanwhile
    with pytest.raises(fstx.Error) as e:
        f.commit()
    assert isinstance(e.value, OSError) and e.value.errno is not None
    assert e.value.state == fstx.State.NOT_COMMITTED and not e.value.committed
    assert f.closed and not f.committed
    assert p.is_dir()
    assert no_temp(tmp_path)
    with pytest.raises(ValueError):
        f.write(b"more")
