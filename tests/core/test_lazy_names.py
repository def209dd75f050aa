"""The lazily loaded names of `bridge` and `bridge.buffer` (PEP 562) are listed by dir()
before first use, as every other public name is, and listing them loads nothing."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import importlib, sys
module = importlib.import_module(sys.argv[1])
missing = sorted(set(module.__all__) - set(dir(module)))
print(missing, 'sqlalchemy' in sys.modules)
"""


@pytest.mark.parametrize("name", ["bridge", "bridge.buffer"])
def test_dir_lists_every_public_name_before_it_is_loaded(name):
    done = subprocess.run([sys.executable, "-c", PROBE, name], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.split() == ["[]", "False"], done.stdout
