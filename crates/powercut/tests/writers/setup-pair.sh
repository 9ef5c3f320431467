# Version 0 in halves/data and r2002/data, durable before recording starts.
. "$(dirname "$0")/common.sh"
mkdir halves r2002 && content 0 > halves/data && content 0 > r2002/data &&
    sync halves/data r2002/data halves r2002 .
