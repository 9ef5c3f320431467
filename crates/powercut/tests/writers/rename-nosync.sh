# BUG: temp + rename, no fsync at all.
. "$(dirname "$0")/common.sh"
i=1
while [ $i -le $N ]; do
    content $i > data.tmp
    mv data.tmp data
    echo "ack $i" > "$POWERCUT_CTL"
    sleep $PAUSE
    i=$((i + 1))
done
