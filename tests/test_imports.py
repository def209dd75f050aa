"""The import boundaries hold: import-linter's contracts in pyproject.toml, checked here so
that the default suite (and CI) fails when one breaks."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import bridge
from tests.helpers import with_dev_tools

ROOT = Path(__file__).resolve().parents[1]
# what the buffer may import of the core: what it stores and the errors it raises
BELOW_THE_BUFFER = {"bridge.contracts", "bridge.durations", "bridge.errors", "bridge.limits",
                    "bridge.model", "bridge.retry"}


def _contracts() -> list[dict]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"][
        "contracts"]


def test_the_import_contracts_hold():
    done = subprocess.run([sys.executable, "-c", "from importlinter.cli import lint_imports;"
                           "raise SystemExit(lint_imports())"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env=with_dev_tools(dict(os.environ)))
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "4 kept, 0 broken" in done.stdout


def test_the_buffers_contract_names_every_module_above_it():
    """A new core module is either below the buffer (listed here) or forbidden to it."""
    (contract,) = [c for c in _contracts() if c.get("source_modules") == ["bridge.buffer"]]
    modules = {f"bridge.{p.stem}" for p in (ROOT / "bridge").glob("*.py")
               if p.stem not in ("__init__", "__main__")}
    modules |= {f"bridge.{p.name}" for p in (ROOT / "bridge").iterdir()
                if (p / "__init__.py").exists() and p.name != "buffer"}
    assert modules - BELOW_THE_BUFFER == set(contract["forbidden_modules"]) - {"plugins"}


def test_the_public_surface_is_explicit_and_every_name_resolves():
    assert sorted(bridge.__all__, key=str.lower) == sorted(set(bridge.__all__), key=str.lower)
    for name in bridge.__all__:
        assert getattr(bridge, name) is not None, name
