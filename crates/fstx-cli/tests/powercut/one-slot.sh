# A planted bug for the checker: a "record" kept in one slot, overwritten in
# place (each value made as a fresh one-slot record in a scratch file, then
# copied over slot 0 of the device and flushed). A torn write there loses
# every value. $1 = device, $2 = writes.
. "$(dirname "$0")/value.sh"
i=1
while [ $i -le "$2" ]; do
    rm -f one.rec
    value $i | "$FSTX" record write one.rec --size 3000 || exit 1
    dd if=one.rec of="$1" bs=4096 count=1 conv=notrunc,fsync 2>/dev/null || exit 1
    echo "ack $i" > "$POWERCUT_CTL"
    i=$((i + 1))
done
