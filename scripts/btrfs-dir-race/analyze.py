#!/usr/bin/env python3
"""For every acknowledged replace of work.py: was a btrfs superblock written and
flushed between the moment the rename returned and the acknowledgement?

usage: analyze.py LOG TRACE
  LOG    powercut's recorded log (artifacts/btrfs/log.bin, format PCLOG1)
  TRACE  ftrace text of the workers' rename/fsync/write syscalls

The log orders the disk writes, flushes and the acknowledgement marks; the
trace gives, per process, when its rename returned. The rename's position in
the log is bounded below by the last mark written before the rename
returned. If no superblock write followed by a flush lies between that bound
and the process's acknowledgement, the replace was acknowledged while the
rename was not durable: a power cut there loses it.
"""
import re, struct, sys, collections
b = open(sys.argv[1], 'rb').read(); i = 7; n, = struct.unpack_from('<Q', b, i); i += 8; recs = []
for _ in range(n):
    t = b[i]; i += 1
    if t == 1: recs.append(('W',) + struct.unpack_from('<QQQ', b, i)); i += 24
    elif t == 2: recs.append(('Z',)); i += 16
    elif t == 3: recs.append(('F',))
    else:
        l, = struct.unpack_from('<Q', b, i); i += 8; recs.append(('M', b[i:i+l].decode())); i += l
# durable points: index of an F that follows a superblock write (since the last F)
durable = []; super_pending = False
for k, r in enumerate(recs):
    if r[0] == 'W' and r[1] == 65536: super_pending = True
    elif r[0] == 'F' and super_pending: durable.append(k); super_pending = False
# trace: per pid, rename exits and mark writes (short writes) in order
ev = collections.defaultdict(list)
pat = re.compile(r'-(\d+)\s+\[\d+\]\s+\S+\s+([\d.]+): (sys_\w+)(.*)')
for line in open(sys.argv[2]):
    m = pat.search(line)
    if not m: continue
    pid, ts, name, rest = int(m[1]), float(m[2]), m[3], m[4]
    if name in ('sys_rename', 'sys_renameat', 'sys_renameat2') and rest.startswith(' ->'):
        ev[pid].append(('ren', ts))
    elif name == 'sys_write' and rest.startswith('(') and re.search(r'count: (0x[0-9a-f]+)', rest) and int(re.search(r'count: (0x[0-9a-f]+)', rest)[1], 16) < 100:
        ev[pid].append(('mark', ts))
marks = [(k, r[1]) for k, r in enumerate(recs) if r[0] == 'M']
mark_ts = {}  # log index -> trace ts of its write
per_pid_count = collections.Counter()
ack_info = []
for k, text in marks:
    m = re.match(r'ack w=(\d+) n=(\d+) pid=(\d+)', text)
    if not m: continue
    pid = int(m[3]); per_pid_count[pid] += 1; nth = per_pid_count[pid]
    es = ev.get(pid, []); ms = [j for j, e in enumerate(es) if e[0] == 'mark']
    if nth > len(ms): continue
    j = ms[nth - 1]; mark_ts[k] = es[j][1]
    ren = [e[1] for e in es[:j] if e[0] == 'ren']
    if ren: ack_info.append((k, text, ren[-1]))
sorted_marks = sorted(mark_ts.items())
bad = 0; checked = 0
import bisect
durable_idx = durable
for k, text, t_ren in ack_info:
    # lower bound of the rename's log position: last mark written before the rename returned
    lo = max([mk for mk, ts in sorted_marks if ts < t_ren and mk < k], default=-1)
    checked += 1
    p = bisect.bisect_right(durable_idx, lo)
    if p >= len(durable_idx) or durable_idx[p] > k:
        bad += 1; print(f'NO DURABLE SUPER between rename (after log {lo}) and ack at log {k}: {text}')
print(f'{len(recs)} records, {len(durable)} durable points, {checked} acks checked, {bad} acknowledged before any superblock+flush after the rename')
