"""Durations in config: 180, "180s", "3m", "1h", "30d" (plain numbers are seconds)."""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import BeforeValidator

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
HINT = "use 180, 180s, 3m or 1h"
LONGEST = 3650 * 86400.0  # ten years: past it, clock arithmetic (dates) overflows


def parse_duration(value: Any) -> float:
    """Seconds in `value`; raises ValueError naming the accepted forms."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration ({HINT})")
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{value!r} is not a duration ({HINT})")
        if value < 0:
            raise ValueError(f"{value!r} is negative; a duration must be >= 0")
        seconds = value
    else:
        match = _PATTERN.match(str(value))
        if not match:
            raise ValueError(f'"{str(value)[:40]}" is not a duration ({HINT})')
        seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    if seconds > LONGEST:  # an int of any size compares; float() of it might overflow
        raise ValueError("is longer than ten years (use at most 3650d)")
    return float(seconds)


def format_duration(seconds: float) -> str:
    """`seconds` the way a config file writes it: 100ms, 30s, 3m, 1.5h, 7d."""
    if seconds == 0:
        return "0s"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and (seconds / size * 10).is_integer():
            return f"{seconds / size:g}{unit}"
    if seconds >= 1:
        return f"{seconds:.10g}s"
    return f"{seconds * 1000:.10g}ms"


Duration = Annotated[float, BeforeValidator(parse_duration)]
