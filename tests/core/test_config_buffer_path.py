"""Issue 13, config weakness: a buffer path that is a directory is a config error, not a
traceback, for `bridge run` and `bridge check` alike."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.processes import failed_start


def test_buffer_path_that_is_a_directory_is_refused_with_its_key_path(tmp_path):
    (tmp_path / "data").mkdir()
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({"buffer": {"path": "data"}}))
    expected = (f"Error: buffer.path: {tmp_path / 'data'} is a directory (name a file in it, "
                f"e.g. {tmp_path / 'data' / 'chatbridge.db'})")
    assert failed_start(config) == expected
    check = subprocess.run([sys.executable, "-m", "bridge", "check", "-c", str(config)],
                           capture_output=True, text=True, timeout=60)
    assert (check.returncode, check.stderr.strip()) == (1, expected)
