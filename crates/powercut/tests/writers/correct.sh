# Correct: temp + fsync + rename + fsync(dir), then acknowledge; any
# failure stops before the acknowledgement (a flush error is final).
. "$(dirname "$0")/common.sh"
i=1
while [ $i -le $N ]; do
    content $i > data.tmp || exit 1
    sync data.tmp || exit 1
    mv data.tmp data || exit 1
    sync . || exit 1
    echo "ack $i" > "$POWERCUT_CTL"
    sleep $PAUSE
    i=$((i + 1))
done
