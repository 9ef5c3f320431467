"""A large file streamed through fstx.open in constant memory."""

import hashlib
import os
import subprocess
import sys

import fstx

SIZE_MIB = int(os.environ.get("FSTX_PY_LARGE_MIB", "512"))

CHILD = r"""
import hashlib, os, resource, sys
import fstx

def rss_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])

path, mib = sys.argv[1], int(sys.argv[2])
chunk = bytearray(1 << 20)
h = hashlib.sha256()
before = rss_kib()
with fstx.open(path, "wb") as f:
    for i in range(mib):
        chunk[:8] = i.to_bytes(8, "little")
        f.write(chunk)
        h.update(chunk)
after = rss_kib()
print(before, after, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, h.hexdigest())
"""


def test_large_file_constant_memory(tmp_path):
    path = tmp_path / "large.bin"
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), str(SIZE_MIB)],
        check=True, capture_output=True, text=True,
    ).stdout.split()
    before, after, maxrss, digest = int(out[0]), int(out[1]), int(out[2]), out[3]
    growth_mib = (after - before) / 1024
    # 512 MiB went through; the peak resident size grew by at most a few
    # buffers (io's 1 MiB buffer, one chunk copied to bytes).
    assert growth_mib < 32, f"peak RSS grew by {growth_mib:.1f} MiB"
    assert maxrss < 128 * 1024
    assert path.stat().st_size == SIZE_MIB << 20
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            h.update(b)
    assert h.hexdigest() == digest
    assert [n for n in os.listdir(tmp_path) if n.startswith(".fstx-tmp.")] == []
    os.unlink(path)


def test_large_write_releases_gil(tmp_path):
    # Another thread keeps running while a 64 MiB durable write is in Rust.
    import threading

    data = os.urandom(64 << 20)
    ticks = []
    stop = threading.Event()

    def tick():
        while not stop.is_set():
            ticks.append(1)
            stop.wait(0.001)

    t = threading.Thread(target=tick)
    t.start()
    try:
        for i in range(3):
            fstx.write(tmp_path / "big", data)
    finally:
        stop.set()
        t.join()
    assert len(ticks) > 3
    assert (tmp_path / "big").stat().st_size == 64 << 20
