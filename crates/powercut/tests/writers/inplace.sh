# BUG: truncate and rewrite in place, no fsync.
. "$(dirname "$0")/common.sh"
i=1
while [ $i -le $N ]; do
    content $i > data
    echo "ack $i" > "$POWERCUT_CTL"
    sleep $PAUSE
    i=$((i + 1))
done
