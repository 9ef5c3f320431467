# A planted inconsistency only fsck can see: after the usual setup, unmount,
# set a file's link count to 5 with debugfs (which keeps the inode checksum
# valid, so the kernel never complains), and mount again with the recording
# options. Every crash state then carries it; the checker never reads the
# file, so only e2fsck ("i_links_count is 5, should be 1") can find it.
# Usage (from the mounted filesystem): M=$PWD; cd / && exec sh setup-fsck-only.sh "$M"
set -e
. "$(dirname "$0")/common.sh"
mnt=$1
cd "$mnt"
content 0 > data && echo victim > victim && sync
cd /
umount "$mnt"
# PLANT=checksum instead breaks the inode's checksum: the kernel logs an
# error when something reads the file.
if [ "${PLANT:-links}" = checksum ]; then
    debugfs -w -R "sif /victim checksum 0x1234" "$POWERCUT_DEV" 2>/dev/null
else
    debugfs -w -R "sif /victim links_count 5" "$POWERCUT_DEV" 2>/dev/null
fi
mount -o "${MOUNT_OPTIONS:-data=ordered,commit=1}" "$POWERCUT_DEV" "$mnt"
