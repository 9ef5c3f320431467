# BUG: temp + fsync + rename, but no directory fsync: the rename is not durable.
. "$(dirname "$0")/common.sh"
i=1
while [ $i -le $N ]; do
    content $i > data.tmp
    sync data.tmp
    mv data.tmp data
    echo "ack $i" > "$POWERCUT_CTL"
    sleep $PAUSE
    i=$((i + 1))
done
