#!/bin/bash
# One recorded run of work.py on btrfs through powercut, with the workers'
# syscalls traced, then analyze.py over every acknowledged replace.
#
# usage: run.sh MODE OUTDIR [SECONDS] [WORKERS]     (as root; see README.md)
# env:   POWERCUT=path/to/powercut (default: built with cargo, found wherever
#        cargo puts it)
#
# The trace buffer is global: never run two of these at once.
set -euo pipefail
mode=$1 out=$2 secs=${3:-3} workers=${4:-10}
here=$(cd "$(dirname "$0")" && pwd)
# The harness, built if needed and found wherever cargo puts it
# (CARGO_TARGET_DIR and the like), unless POWERCUT names one.
powercut=${POWERCUT:-$(cd "$here/../.." && scripts/cargo-exe powercut --quiet -p powercut)}
T=/sys/kernel/tracing
[ -e $T/trace ] || mount -t tracefs nodev $T
rm -rf "$out"; mkdir -p "$out"
echo 0 > $T/tracing_on; echo > $T/trace; echo 0 > $T/events/enable
echo 200000 > $T/buffer_size_kb
for e in rename renameat renameat2 fsync write syncfs; do
  for k in enter exit; do
    f=$T/events/syscalls/sys_${k}_$e
    [ -d $f ] || continue
    echo 'comm == "python3"' > $f/filter; echo 1 > $f/enable
  done
done
echo 1 > $T/tracing_on
# The workers: a python3 whose first argument is work.py (not the powercut,
# timeout or sh command lines that mention it).
pat="^[^ ]*python3[^ ]* [^ ]*work\.py ${mode//+/\\+} "
( # stop tracing once the workload has exited, before crash states are checked
  while ! pgrep -f "$pat" >/dev/null; do sleep 0.05; done
  while pgrep -f "$pat" >/dev/null; do sleep 0.05; done
  echo 0 > $T/tracing_on ) &
watcher=$!
timeout 600 "$powercut" run --fs btrfs \
  --workload "python3 $here/work.py $mode $secs $workers" --check true \
  --max-states 1 --jobs 1 --save-all --artifacts "$out/art" > "$out/powercut.txt" 2>&1
kill $watcher 2>/dev/null || true
echo 0 > $T/tracing_on
cp $T/trace "$out/trace.txt"
echo 0 > $T/events/enable
python3 "$here/analyze.py" "$out/art/btrfs/log.bin" "$out/trace.txt" | tee "$out/analysis.txt" | tail -1
