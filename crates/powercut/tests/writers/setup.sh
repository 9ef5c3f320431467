# Version 0 exists and is durable before recording starts.
. "$(dirname "$0")/common.sh"
content 0 > data && sync data && sync .
