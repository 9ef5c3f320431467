"""The 2002 recipe, as it is usually posted: write a temporary file, rename
it over the target. No fsync of the file (and here none of the directory
either). Readers never see a mix, but after a power cut the target can be
empty or zero-filled: the rename can reach the disk before the data.

Kept as the contender of seed.py; do not use it.
"""

import os
import sys


def save(path, data):
    tmp = path + ".tmp"
    f = open(tmp, "wb")
    f.write(data)
    f.close()
    os.rename(tmp, path)


if __name__ == "__main__":
    save(sys.argv[1], sys.stdin.buffer.read())
