# fstx's own replace: `fstx write` (the device tool, $FSTX), then acknowledge.
. "$(dirname "$0")/common.sh"
i=1
while [ $i -le $N ]; do
    content $i | "$FSTX" write $FSTX_WRITE_FLAGS data || exit 1
    echo "ack $i" > "$POWERCUT_CTL"
    sleep $PAUSE
    i=$((i + 1))
done
