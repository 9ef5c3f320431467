# Two broken writers at once, one directory each (one recording, one VM
# boot for both): the held-out two-halves overwrite in halves/ and the
# 2002 recipe in r2002/, acknowledged as "ack-halves N" and "ack-r2002 N".
w=$(cd "$(dirname "$0")" && pwd)
(cd halves && ACK=ack-halves exec sh "$w/inplace-halves.sh") &
h=$!
(cd r2002 && ACK=ack-r2002 exec sh "$w/rename-datanosync.sh") &
r=$!
# Both finish before the verdict: a writer still running would keep the
# filesystem busy.
wait $h; hs=$?
wait $r; rs=$?
[ $hs -eq 0 ] || echo "pair.sh: inplace-halves.sh failed ($hs)" >&2
[ $rs -eq 0 ] || echo "pair.sh: rename-datanosync.sh failed ($rs)" >&2
[ $hs -eq 0 ] && [ $rs -eq 0 ]
