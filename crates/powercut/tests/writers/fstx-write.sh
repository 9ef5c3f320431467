# fstx's own replace: `fstx write` (the device tool, $FSTX), then acknowledge.
# On vfat/exFAT fstx must refuse a durable replace (the workload fails if it
# does not); then, told to accept weak semantics, it shows why it refuses.
. "$(dirname "$0")/common.sh"
flags=$FSTX_WRITE_FLAGS
fs=$(stat -f -c %T .)
case $fs in
msdos | vfat | fat | exfat)
    if out=$(content 1 | "$FSTX" write data 2>&1); then
        echo "fstx wrote to $fs without --allow-weak-fs" >&2
        exit 1
    fi
    case $out in
    *crash-atomic*) ;;
    *) echo "fstx refused $fs, but not as expected: $out" >&2; exit 1 ;;
    esac
    case " $flags " in
    *" --allow-weak-fs "*) ;;
    *) flags="$flags --allow-weak-fs" ;;
    esac
    ;;
esac
i=1
while [ $i -le $N ]; do
    content $i | "$FSTX" write $flags data || exit 1
    echo "ack $i" > "$POWERCUT_CTL"
    sleep $PAUSE
    i=$((i + 1))
done
