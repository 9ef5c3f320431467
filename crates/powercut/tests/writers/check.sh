# The file is a complete old or new version, and every acknowledged version survived.
# Marks are in $POWERCUT_MARKS ("ack N", one per line). One awk process: cheap per crash state.
# `check.sh DIR`: the file DIR/data, acknowledged by "ack-DIR N" (the writers' $ACK).
exec awk -v marks="$POWERCUT_MARKS" -v dir="$1" '
function fail(msg) { print msg " (acked " acked ")"; exit 1 }
BEGIN {
    acked = 0
    label = dir == "" ? "ack" : "ack-" dir
    data = dir == "" ? "data" : dir "/data"
    while ((getline l < marks) > 0) { split(l, a, " "); if (a[1] == label) acked = a[2] + 0 }
    r = (getline first < data)
    if (r < 0) fail("data is missing")
    if (r == 0) fail("torn or garbage data: empty file")
    if (first !~ /^version [0-9]+\.+$/) fail("torn or garbage data: first line " substr(first, 1, 40))
    split(first, a, /[ .]/); v = a[2] + 0
    n = 1
    while ((getline l < data) > 0) {
        n++
        if (n <= 128 && l != first) fail("torn or garbage data: line " n " differs")
        if (n == 129 && l != sprintf("end %05d", v)) fail("torn or garbage data: bad end line")
    }
    if (n != 129) fail("torn or garbage data: " n " lines")
    if (v < acked) fail("lost acknowledged update: found version " v)
    exit 0
}'
