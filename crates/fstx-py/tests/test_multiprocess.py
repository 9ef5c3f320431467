"""multiprocessing workers updating one counter: no lost update, and
SIGKILL at random instants: acknowledged <= final <= attempted, never torn."""

import multiprocessing
import os
import random
import signal
import time

import pytest

import _workers
import fstx

METHODS = ["fork", "spawn", "forkserver"]
PROCESSES = 8
INCREMENTS = int(os.environ.get("FSTX_PY_INCREMENTS", "200"))
KILL_SECONDS = float(os.environ.get("FSTX_PY_KILL_SECONDS", "3"))


@pytest.mark.parametrize("method", METHODS)
def test_8_processes_200_increments(tmp_path, method):
    ctx = multiprocessing.get_context(method)
    path = str(tmp_path / "counter")
    procs = [ctx.Process(target=_workers.count, args=(path, INCREMENTS))
             for _ in range(PROCESSES)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    with open(path, "rb") as f:
        assert _workers.decode(f.read()) == PROCESSES * INCREMENTS
    assert [n for n in os.listdir(tmp_path) if n.startswith(".fstx-tmp.")] == []


@pytest.mark.parametrize("method", METHODS)
def test_sigkill_mid_update(tmp_path, method):
    ctx = multiprocessing.get_context(method)
    path = str(tmp_path / "counter")
    logs = tmp_path / "logs"
    logs.mkdir()
    rng = random.Random(1234)
    seeds = iter(range(1_000_000))

    def start(wid):
        p = ctx.Process(target=_workers.count_until_killed,
                        args=(path, str(logs), wid, next(seeds)), daemon=True)
        p.start()
        return p

    workers = [start(w) for w in range(PROCESSES)]
    kills = 0
    reads = 0
    deadline = time.monotonic() + KILL_SECONDS
    while time.monotonic() < deadline:
        time.sleep(rng.uniform(0.005, 0.05))
        w = rng.randrange(PROCESSES)
        os.kill(workers[w].pid, signal.SIGKILL)
        workers[w].join()
        assert workers[w].exitcode == -signal.SIGKILL
        kills += 1
        workers[w] = start(w)
        # Readers need no lock: whatever is there is one complete version.
        try:
            with open(path, "rb") as f:
                _workers.decode(f.read())
            reads += 1
        except FileNotFoundError:
            pass
    for p in workers:
        os.kill(p.pid, signal.SIGKILL)
        p.join()

    def total(prefix):
        return sum(os.path.getsize(logs / n) for n in os.listdir(logs) if n.startswith(prefix))

    acknowledged, attempted = total("ack."), total("attempt.")
    with open(path, "rb") as f:
        final = _workers.decode(f.read())
    assert kills > 10 and reads > 0
    assert acknowledged <= final <= attempted, (acknowledged, final, attempted)
    assert acknowledged > 0
    # Killed writers left temporary files; recovery removes every one.
    recovered = fstx.recover(tmp_path)
    left = [n for n in os.listdir(tmp_path) if n.startswith(".fstx-tmp.")]
    assert left == []
    assert sorted(os.listdir(tmp_path)) == [".fstx-lock.counter", "counter", "logs"]
    # The lock of a killed holder was released by the kernel.
    fstx.update(path, _workers.increment, timeout=5)
    with open(path, "rb") as f:
        assert _workers.decode(f.read()) == final + 1
    print(f"{method}: kills={kills} acknowledged={acknowledged} final={final} "
          f"attempted={attempted} temporary files removed={len(recovered.removed)}")
