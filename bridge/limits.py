"""Bounds of config values: the smallest and largest with which a setting still does its job.

A bound is declared beside its field, `Annotated[Duration, Limits(low=1.0, ...)]`, and
checked when a config file is loaded, by `bridge check` and `bridge run` alike; a model built
in code is not checked (tests drain every 50 ms to run fast). Rules between two keys (a lease
that must outlast deliver_timeout) live in the model's `limit_checks()`. Each error names the
key path, the value, what goes wrong and the bound to use.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from bridge.durations import format_duration


@dataclass(frozen=True)
class Limits:
    """low/high: the bounds (inclusive); why_low/why_high: what goes wrong past each, as a
    person reads it; example: a good value; duration: shown as 3m rather than 180."""

    low: float | None = None
    high: float | None = None
    why_low: str = ""
    why_high: str = ""
    example: str = ""
    duration: bool = True

    def shown(self, value: float) -> str:
        if self.duration:
            return format_duration(value)
        text = f"{value:,}" if isinstance(value, int) else f"{value:,g}"
        return text if len(text) <= 30 else text[:20] + "..."

    def problem(self, value: float) -> str | None:
        """What is wrong with `value`, or None when it is within bounds."""
        short, long = ("too short", "too long") if self.duration else ("too small", "too large")
        hint = f", e.g. {self.example}" if self.example else ""
        if self.low is not None and value < self.low:
            return (f"{self.shown(value)} is {short} ({self.why_low}; use at least "
                    f"{self.shown(self.low)}{hint})")
        if self.high is not None and value > self.high:
            return (f"{self.shown(value)} is {long} ({self.why_high}; use at most "
                    f"{self.shown(self.high)}{hint})")
        return None


def problems(section: Any, prefix: str) -> list[str]:
    """`key.path: problem` for each value of `section` out of its bounds, and each broken
    rule between its keys; nested sections are checked too."""
    if not isinstance(section, BaseModel):
        return []
    found = []
    for name, field in type(section).model_fields.items():
        value = getattr(section, name)
        path = f"{prefix}.{name}" if prefix else name
        if isinstance(value, BaseModel):
            found.extend(problems(value, path))
            continue
        for limits in (m for m in field.metadata if isinstance(m, Limits)):
            problem = value is not None and limits.problem(value)
            if problem:
                found.append(f"{path}: {problem}")
    if found:  # rules between keys only make sense once each key is within bounds
        return found
    for key, problem in _cross_checks(section):
        found.append(f"{prefix}.{key}: {problem}" if prefix else f"{key}: {problem}")
    return found


def _cross_checks(section: BaseModel) -> Iterator[tuple[str, str]]:
    checks = getattr(section, "limit_checks", None)
    return iter(checks()) if callable(checks) else iter(())
