# The file is a complete old or new version, and every acknowledged version survived.
# Marks are in $POWERCUT_MARKS ("ack N", one per line).
acked=$(awk '$1 == "ack" { v = $2 } END { print v + 0 }' "$POWERCUT_MARKS")
if [ ! -f data ]; then echo "data is missing (acked $acked)"; exit 1; fi
v=$(awk '
    NR == 1 { if ($0 !~ /^version [0-9]+\.+$/) bad = "first line: " substr($0, 1, 40); split($0, a, /[ .]/); v = a[2] + 0; first = $0 }
    NR > 1 && NR <= 128 && $0 != first { bad = "line " NR " differs" }
    NR == 129 { if ($0 != sprintf("end %05d", v)) bad = "bad end line" }
    END { if (NR != 129 && bad == "") bad = NR " lines"; if (bad != "") print "BAD " bad; else print v }' data)
case "$v" in
    BAD*) echo "torn or garbage data (acked $acked): $v, size $(wc -c < data)"; exit 1 ;;
esac
if [ "$v" -lt "$acked" ]; then echo "lost acknowledged update: found version $v, acked $acked"; exit 1; fi
exit 0
