# Workload: $1 = "record" or "verified", $2 = target, $3 = writes.
# Each write is acknowledged with a mark "ack N" once fstx returned.
. "$(dirname "$0")/value.sh"
i=1
while [ $i -le "$3" ]; do
    if [ "$1" = record ]; then
        value $i | "$FSTX" record write "$2" || exit 1
    else
        value $i | "$FSTX" write --verified "$2" || exit 1
    fi
    echo "ack $i" > "$POWERCUT_CTL"
    i=$((i + 1))
done
