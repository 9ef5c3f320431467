# Checker: $1 = read command ("record" or "verified"), $2 = target.
# The value read is complete (its dots as long as its number says) and no
# older than the last acknowledged one ("ack N" marks), or one newer (the
# write in flight). After a lying flash (state ":l"): one older too, and
# for a verified file a clear error (exit 1) is accepted; a record must
# still read (a lie costs the newest value, never both).
. "$(dirname "$0")/value.sh"
acked=$(awk '$1 == "ack" { a = $2 } END { print a + 0 }' "$POWERCUT_MARKS")
lie=0
case "$POWERCUT_STATE" in *:l*) lie=1 ;; esac
if [ "$1" = record ]; then
    out=$("$FSTX" record read "$2" 2>&1) || { echo "record does not read: $out (acked $acked)"; exit 1; }
else
    out=$("$FSTX" read --require-verified "$2" 2>/tmp/powercut-read-err.$$)
    rc=$?
    err=$(cat /tmp/powercut-read-err.$$); rm -f /tmp/powercut-read-err.$$
    if [ $rc -ne 0 ]; then
        if [ $lie -eq 1 ] && [ $rc -eq 1 ] && [ -n "$err" ]; then exit 0; fi
        echo "read failed ($rc): $err (acked $acked)"; exit 1
    fi
fi
n=$(printf '%s' "$out" | awk '{ print $2; exit }')
case "$n" in ''|*[!0-9]*) echo "garbage: $(printf '%s' "$out" | head -c 40) (acked $acked)"; exit 1 ;; esac
if [ "$(value "$n")" != "$out" ]; then echo "value $n incomplete (acked $acked)"; exit 1; fi
lo=$acked
[ $lie -eq 1 ] && lo=$((acked - 1))
if [ "$n" -lt "$lo" ] || [ "$n" -gt $((acked + 1)) ]; then
    echo "value $n read, acked $acked (lie $lie)"; exit 1
fi
exit 0
