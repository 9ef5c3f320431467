"""Worker processes of test_multiprocess.py (importable under spawn and forkserver)."""

import os
import random
import time

import fstx

#: Lines per counter version: a torn file would mix two versions.
LINES = 1024


def encode(n: int) -> bytes:
    return f"{n:012d}\n".encode() * LINES


def decode(data: bytes) -> int:
    """The counter in ``data``; AssertionError if it is torn or truncated."""
    if data == b"":
        raise AssertionError("empty counter file")
    line = data[:13]
    assert data == line * LINES, f"torn counter file ({len(data)} bytes)"
    return int(line)


def increment(old):
    return encode((decode(old) if old is not None else 0) + 1)


def count(path, n):
    """``n`` locked increments."""
    for _ in range(n):
        fstx.update(path, increment)


def count_until_killed(path, logdir, wid, seed):
    """Increments forever: a byte in attempt.WID before each, in ack.WID after."""
    rng = random.Random(seed)
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
    attempt = os.open(os.path.join(logdir, f"attempt.{wid}"), flags, 0o644)
    ack = os.open(os.path.join(logdir, f"ack.{wid}"), flags, 0o644)

    def slow_increment(old):
        # Hold the lock a little, so that kills land inside updates.
        if rng.random() < 0.5:
            time.sleep(rng.random() * 0.003)
        return increment(old)

    while True:
        os.write(attempt, b"a")
        fstx.update(path, slow_increment)
        os.write(ack, b"k")
