# BUG: temp + rename + fsync(dir), but the temp file's data is never fsynced:
# the rename can become durable before the new content does.
. "$(dirname "$0")/common.sh"
i=1
while [ $i -le $N ]; do
    content $i > data.tmp
    mv data.tmp data
    sync .
    echo "${ACK:-ack} $i" > "$POWERCUT_CTL"
    sleep $PAUSE
    i=$((i + 1))
done
