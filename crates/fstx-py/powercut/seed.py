"""The seed experiment with Python workers, for `powercut run`.

    python seed.py workload WRITER [--workers 4] [--seconds 1]
    python seed.py recover  WRITER
    python seed.py check    WRITER

WRITER is ``fstx`` (the binding: ``fstx.write`` of each worker's file,
``fstx.update`` of a shared counter with a backup, and ``fstx.Transaction``
of three files under ``tree/`` holding one generation) or ``seed-2002`` (the
2002 snippet in Python as posted: temporary file, write, rename, fsync of
the directory, no fsync of the file; the counter and the tree's files under
``fcntl.flock``, one file after the other). Each worker writes ``ack file W
N`` / ``ack inc W`` / ``ack txn G`` to ``$POWERCUT_CTL`` after its call
returned. The checker gets the marks before the cut in
``$POWERCUT_MARKS``: every worker file decodes and is not older than its
last acknowledged version; the counter decodes, is at least the
acknowledged increments and at most those plus one in flight per worker;
``counter~`` decodes; the three files of ``tree/`` hold one generation, not
older than the last acknowledged one; no fstx temporary file is left after
recovery.
"""

import argparse
import fcntl
import multiprocessing
import os
import sys
import time
import zlib

LINES = 64


def version(tag, n):
    """A self-checking version: header (tag, number, length, crc) and body."""
    body = f"{tag} {n:010d}\n".encode() * LINES
    return f"pc {tag} n={n} len={len(body)} crc={zlib.crc32(body)}\n".encode() + body


def decode(data, tag):
    """The version number; ValueError naming what is wrong."""
    if not data:
        raise ValueError(f"{tag}: empty file")
    if data.count(b"\0") == len(data):
        raise ValueError(f"{tag}: {len(data)} zero bytes")
    head, _, body = data.partition(b"\n")
    try:
        _, t, n, ln, crc = head.decode().split()
        n = int(n[2:])
    except ValueError:
        raise ValueError(f"{tag}: not a version: {head[:40]!r}") from None
    if t != tag or data != version(tag, n):
        raise ValueError(f"{tag}: torn or foreign ({len(data)} bytes, header {head[:40]!r})")
    return n


class Marks:
    def __init__(self):
        ctl = os.environ.get("POWERCUT_CTL")
        self.fd = os.open(ctl, os.O_WRONLY | os.O_APPEND) if ctl else None

    def ack(self, what):
        if self.fd is not None:
            os.write(self.fd, f"ack {what}\n".encode())  # one write per mark


def seed_2002_write(path, data):
    """The snippet: temp file, write, rename, fsync the directory."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.rename(tmp, path)
    fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def seed_2002_update(path, fn):
    with open(path + ".lock", "ab") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            old = open(path, "rb").read()
        except FileNotFoundError:
            old = None
        if old is not None:
            seed_2002_write(path + "~", old)
        seed_2002_write(path, fn(old))


TREE = ("a.conf", "b.conf", "c.conf")


def tree_generation(read):
    """The generation all three tree files hold; ValueError if they differ."""
    gens = set()
    for name in TREE:
        try:
            data = read(name)
        except FileNotFoundError:
            gens.add(0)
            continue
        gens.add(decode(data, "tree"))
    if len(gens) != 1:
        raise ValueError(f"tree: files hold different generations {sorted(gens)}")
    return gens.pop()


def read_file(name):
    with open(name, "rb") as f:
        return f.read()


def fstx_txn():
    import fstx

    with fstx.Transaction("tree") as txn:  # holds the root's writer lock
        g = tree_generation(lambda n: read_file(os.path.join("tree", n))) + 1
        for name in TREE:
            txn.write(name, version("tree", g))
    return g


def seed_2002_txn():
    with open("tree.lock", "ab") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        g = tree_generation(lambda n: read_file(os.path.join("tree", n))) + 1
        for name in TREE:
            seed_2002_write(os.path.join("tree", name), version("tree", g))
    return g


def worker(writer, w, seconds):
    import fstx

    marks = Marks()
    deadline = time.monotonic() + seconds
    n = 0

    def increment(old):
        return version("counter", (decode(old, "counter") if old else 0) + 1)

    while time.monotonic() < deadline:
        n += 1
        name = f"w{w}.dat"
        if writer == "fstx":
            fstx.write(name, version(f"w{w}", n))
        else:
            seed_2002_write(name, version(f"w{w}", n))
        marks.ack(f"file {w} {n}")
        if writer == "fstx":
            fstx.update("counter", increment, backup=True)
        else:
            seed_2002_update("counter", increment)
        marks.ack(f"inc {w}")
        g = fstx_txn() if writer == "fstx" else seed_2002_txn()
        marks.ack(f"txn {g}")


def workload(args):
    os.makedirs("tree", exist_ok=True)
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=worker, args=(args.writer, w, args.seconds))
             for w in range(args.workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    return 0 if all(p.exitcode == 0 for p in procs) else 1


def recover(args):
    if args.writer == "fstx":
        import fstx

        fstx.recover(".")
        if os.path.isdir("tree"):
            fstx.recover("tree")
    return 0


def check(args):
    acked = {}
    incs = 0
    txn = 0
    workers = set()
    with open(os.environ["POWERCUT_MARKS"]) as f:
        for line in f:
            parts = line.split()
            if parts[:2] == ["ack", "file"]:
                acked[int(parts[2])] = int(parts[3])
                workers.add(int(parts[2]))
            elif parts[:2] == ["ack", "txn"]:
                txn = max(txn, int(parts[2]))
            elif parts[:2] == ["ack", "inc"]:
                incs += 1
                workers.add(int(parts[2]))
    problems = []
    for w, n in sorted(acked.items()):
        try:
            got = decode(open(f"w{w}.dat", "rb").read(), f"w{w}")
            if got < n:
                problems.append(f"w{w}.dat: version {got}, but {n} was acknowledged")
        except (OSError, ValueError) as e:
            problems.append(f"w{w}.dat: {e} (version {n} was acknowledged)")
    if incs:
        try:
            c = decode(open("counter", "rb").read(), "counter")
            if not incs <= c <= incs + args.workers:
                problems.append(f"counter: {c}, but {incs} increments were acknowledged")
        except (OSError, ValueError) as e:
            problems.append(f"counter: {e} ({incs} increments acknowledged)")
        if os.path.exists("counter~"):
            try:
                decode(open("counter~", "rb").read(), "counter")
            except ValueError as e:
                problems.append(f"counter~: {e}")
    if txn:
        try:
            if args.writer == "fstx":
                import fstx

                with fstx.Snapshot("tree") as snap:
                    g = tree_generation(snap.read)
            else:
                g = tree_generation(lambda n: read_file(os.path.join("tree", n)))
            if g < txn:
                problems.append(f"tree: generation {g}, but {txn} was acknowledged")
        except (OSError, ValueError) as e:
            problems.append(f"{e} (generation {txn} acknowledged)")
    if args.writer == "fstx":
        left = [n for n in os.listdir(".") if n.startswith(".fstx-tmp.")]
        if left:
            problems.append(f"temporary files left after recovery: {left}")
    for p in problems:
        print(p)
    return 1 if problems else 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("command", choices=["workload", "recover", "check"])
    ap.add_argument("writer", choices=["fstx", "seed-2002"])
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=1.0)
    args = ap.parse_args()
    return {"workload": workload, "recover": recover, "check": check}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
