"""The seed's program, with fstx: ten processes looping file updates, and
every instant safe to cut the power.

    python examples/seed.py DIR [--workers 10] [--seconds 5]

Each worker loops three kinds of operation for a few seconds:

- it replaces its own file ``wN.dat`` (``fstx.write``): after a power cut
  the file holds a complete version, never a mix, never empty;
- it increments a shared counter under the cross-process lock, keeping the
  previous version as ``counter~`` (``fstx.update``): no increment is lost;
- it changes three files of ``DIR/tree`` together (``fstx.Transaction``):
  all three hold the same generation, whenever the power goes.

At the start (what a device does at boot) ``fstx.recover`` removes what
writers killed by the last power cut left behind and finishes or rolls back
an interrupted transaction; then the program checks what it finds.
"""

import argparse
import multiprocessing
import os
import sys
import time

import fstx


def version(tag, n):
    """A self-checking version: a header line and a body derived from it."""
    body = f"{tag} {n}\n".encode() * 64
    return f"v1 {tag} n={n} len={len(body)}\n".encode() + body


def check(data, tag):
    """The version number in ``data``; ValueError if incomplete or foreign."""
    head, _, body = data.partition(b"\n")
    parts = head.decode().split()
    if len(parts) != 4 or parts[:2] != ["v1", tag]:
        raise ValueError(f"{tag}: not a version: {head[:40]!r}")
    n = int(parts[2][2:])
    if data != version(tag, n):
        raise ValueError(f"{tag}: torn or truncated ({len(data)} bytes)")
    return n


def increment(old):
    return version("counter", (check(old, "counter") if old else 0) + 1)


def worker(root, w, seconds):
    tree = os.path.join(root, "tree")
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        n += 1
        fstx.write(os.path.join(root, f"w{w}.dat"), version(f"w{w}", n))
        fstx.update(os.path.join(root, "counter"), increment, backup=True)
        with fstx.Transaction(tree) as txn:
            for name in ("a", "b", "c"):
                txn.write(f"{name}.conf", version(f"tree-{w}", n))
    print(f"worker {w}: {n} rounds", flush=True)


def verify(root, workers):
    """What a power cut may leave: every file complete, the tree consistent."""
    report = fstx.recover(root)
    report_tree = fstx.recover(os.path.join(root, "tree"))
    for r in (report, report_tree):
        for path in r.removed:
            print(f"recover: removed {path}")
        for t in r.transactions:
            print(f"recover: {t.description}")
    for w in range(workers):
        p = os.path.join(root, f"w{w}.dat")
        if os.path.exists(p):
            check(open(p, "rb").read(), f"w{w}")
    if os.path.exists(os.path.join(root, "counter")):
        counter = check(open(os.path.join(root, "counter"), "rb").read(), "counter")
        print(f"counter: {counter}")
    with fstx.Snapshot(os.path.join(root, "tree")) as snap:
        found = {snap.read(f"{n}.conf") for n in ("a", "b", "c") if n + ".conf" in snap.list()}
    if len(found) > 1:
        raise ValueError("tree: the transaction's files disagree")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir")
    ap.add_argument("--workers", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=5)
    args = ap.parse_args()
    os.makedirs(os.path.join(args.dir, "tree"), exist_ok=True)
    verify(args.dir, args.workers)
    procs = [
        multiprocessing.Process(target=worker, args=(args.dir, w, args.seconds))
        for w in range(args.workers)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    verify(args.dir, args.workers)
    print("ok: every file complete, the tree consistent")
    return 0 if all(p.exitcode == 0 for p in procs) else 1


if __name__ == "__main__":
    sys.exit(main())
