# pair.sh's check: each directory's file, each line naming its writer.
w=$(cd "$(dirname "$0")" && pwd)
h=$(sh "$w/check.sh" halves 2>&1); hs=$?
r=$(sh "$w/check.sh" r2002 2>&1); rs=$?
[ $hs -eq 0 ] || echo "inplace-halves: $h"
[ $rs -eq 0 ] || echo "rename-datanosync: $r"
[ $hs -eq 0 ] && [ $rs -eq 0 ]
