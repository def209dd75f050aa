"""Every benchmark runs in smoke mode, so the scripts cannot rot."""

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


# bench/_*.py are modules the scripts share, not benchmarks
@pytest.mark.parametrize("script", sorted(p.name for p in BENCH.glob("*.py")
                                          if not p.name.startswith("_")))
def test_benchmark_runs_in_smoke_mode(script):
    result = subprocess.run([sys.executable, str(BENCH / script), "--smoke"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "summary:" in result.stdout
