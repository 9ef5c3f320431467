# Two broken writers at once, one directory each (one recording, one VM
# boot for both): the held-out two-halves overwrite in halves/ and the
# 2002 recipe in r2002/, acknowledged as "ack-halves N" and "ack-r2002 N".
w=$(cd "$(dirname "$0")" && pwd)
(cd halves && ACK=ack-halves exec sh "$w/inplace-halves.sh") &
h=$!
(cd r2002 && ACK=ack-r2002 exec sh "$w/rename-datanosync.sh") &
r=$!
wait $h || exit 1
wait $r || exit 1
