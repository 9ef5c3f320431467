"""The repository's Python examples run and check themselves."""

import os
import subprocess
import sys

import pytest

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "..", "..", "examples")


@pytest.mark.skipif(not os.path.exists(os.path.join(EXAMPLES, "seed.py")),
                    reason="not in a checkout")
def test_seed_example(tmp_path):
    for _ in range(2):  # the second run recovers and checks the first one's files
        r = subprocess.run(
            [sys.executable, os.path.join(EXAMPLES, "seed.py"), str(tmp_path),
             "--workers", "4", "--seconds", "0.5"],
            capture_output=True, text=True, timeout=120,
        )
        assert r.returncode == 0, r.stderr
        assert "ok: every file complete, the tree consistent" in r.stdout


@pytest.mark.skipif(not os.path.exists(os.path.join(EXAMPLES, "seed_2002.py")),
                    reason="not in a checkout")
def test_seed_2002_example(tmp_path):
    target = tmp_path / "state"
    subprocess.run([sys.executable, os.path.join(EXAMPLES, "seed_2002.py"), str(target)],
                   input=b"data", check=True)
    assert target.read_bytes() == b"data"
