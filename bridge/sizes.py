"""Sizes in config: 1048576, "500MB", "2 GB", "1.5GiB" (plain numbers are bytes).

Units count in 1024s (KB = KiB = 1024 bytes), as disk tools show them.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator

_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:([kmgt]?)(?:i?b)?)\s*$", re.I)
HINT = "use bytes, or a size such as 500MB or 2GB"
LARGEST = 1024**6  # an exbibyte: past any disk


def parse_size(value: Any) -> int:
    """Bytes in `value`; raises ValueError naming the accepted forms."""
    if isinstance(value, bool) or isinstance(value, float) and not value.is_integer():
        raise ValueError(f"{value!r} is not a size ({HINT})")
    if isinstance(value, int | float):
        size = int(value)
    else:
        match = _PATTERN.match(str(value))
        if not match:
            raise ValueError(f'"{str(value)[:40]}" is not a size ({HINT})')
        size = int(float(match.group(1)) * _UNITS[(match.group(2) or "").lower()])
    if size < 0:
        raise ValueError(f"{value!r} is negative; a size must be >= 0")
    if size > LARGEST:
        raise ValueError(f"{str(value)[:40]} is past any disk ({HINT})")
    return size


def format_size(size: float) -> str:
    """`size` bytes the way a person reads it: 900 bytes, 1.5 MB, 2 GB."""
    for unit, scale in (("TB", 1024**4), ("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if size >= scale:
            value = size / scale
            return f"{value:.0f} {unit}" if value >= 100 else f"{value:.3g} {unit}"
    return f"{int(size)} bytes"


Size = Annotated[int, BeforeValidator(parse_size)]
