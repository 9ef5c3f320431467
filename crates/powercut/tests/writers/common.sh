# Shared by the writers: content of version $1 is 128 lines of 64 bytes
# ("version NNNNN" padded) plus a last line "end NNNNN": 8 KiB + a bit, so
# a torn or zero-filled file never looks like a complete version.
content() {
    awk -v v="$1" 'BEGIN { l = sprintf("version %05d", v); while (length(l) < 63) l = l "."; for (i = 0; i < 128; i++) print l; printf "end %05d\n", v }'
}
N=${WRITER_ITERATIONS:-20}
PAUSE=${WRITER_PAUSE:-0.02}
