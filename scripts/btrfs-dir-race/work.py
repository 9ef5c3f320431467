#!/usr/bin/env python3
"""Race workload for `powercut run`: W workers each replace their own file in
ONE shared directory (write temp, fsync it, rename it over the file, make the
rename durable) and mark each acknowledged version in $POWERCUT_CTL; one more
process forces btrfs transaction commits with sync(2) every 3 ms.

usage: work.py MODE SECONDS WORKERS

MODE says how the rename is made durable:
  nodirsync  not at all (control: the analyzer must flag most replaces)
  dir        fsync(directory): the classic recipe
  syncfs     syncfs(directory) instead: what fstx does on btrfs
  dir+syncfs fsync(directory), then syncfs(directory)
A suffix "+sleep" waits 2 ms between the rename and the flush.
"""
import ctypes
import os
import sys
import time

mode, secs, workers = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
if mode.split('+sleep')[0] not in ('nodirsync', 'dir', 'syncfs', 'dir+syncfs'):
    sys.exit(f'unknown MODE {mode}')
libc = ctypes.CDLL(None, use_errno=True)
ctl = os.environ.get('POWERCUT_CTL')


def syncfs(fd):
    if libc.syncfs(fd) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def worker(w):
    marks = os.open(ctl, os.O_WRONLY | os.O_APPEND) if ctl else None
    d = os.open('.', os.O_RDONLY | os.O_DIRECTORY)
    n = 0
    end = time.time() + secs
    while time.time() < end:
        n += 1
        body = (f'w{w} n={n} '.encode() * 1000)[:4096]
        tmp = f'.tmp.w{w}'
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(fd, body)
        os.fsync(fd)
        os.close(fd)
        os.rename(tmp, f'w{w}')
        if '+sleep' in mode:
            time.sleep(0.002)
        base = mode.split('+sleep')[0]
        if base in ('dir', 'dir+syncfs'):
            os.fsync(d)
        if base in ('syncfs', 'dir+syncfs'):
            syncfs(d)
        if marks is not None:
            os.write(marks, f'ack w={w} n={n} pid={os.getpid()}\n'.encode())
    os._exit(0)


pids = []
for w in range(workers):
    pid = os.fork()
    if pid == 0:
        worker(w)
    pids.append(pid)
pid = os.fork()
if pid == 0:
    end = time.time() + secs
    while time.time() < end:
        os.sync()
        time.sleep(0.003)
    os._exit(0)
pids.append(pid)
failed = 0
for pid in pids:
    failed |= os.waitpid(pid, 0)[1]
sys.exit(1 if failed else 0)
