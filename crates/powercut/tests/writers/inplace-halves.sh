# BUG (held out: no unit test knows it): overwrite in place, in two
# halves, each flushed before the next, then acknowledge. A cut between
# the halves leaves half of each version.
. "$(dirname "$0")/common.sh"
i=1
while [ $i -le $N ]; do
    content $i | dd of=data bs=4096 count=1 conv=notrunc,fsync status=none
    content $i | dd of=data bs=4096 skip=1 seek=1 iflag=fullblock conv=notrunc,fsync status=none
    echo "${ACK:-ack} $i" > "$POWERCUT_CTL"
    sleep $PAUSE
    i=$((i + 1))
done
