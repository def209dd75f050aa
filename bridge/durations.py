"""Durations in config: 180, "180s", "3m", "1h", "30d" (plain numbers are seconds)."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
HINT = "use 180, 180s, 3m or 1h"


def parse_duration(value: Any) -> float:
    """Seconds in `value`; raises ValueError naming the accepted forms."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration ({HINT})")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"{value!r} is negative; a duration must be >= 0")
        return float(value)
    match = _PATTERN.match(str(value))
    if not match:
        raise ValueError(f'"{value}" is not a duration ({HINT})')
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


Duration = Annotated[float, BeforeValidator(parse_duration)]
