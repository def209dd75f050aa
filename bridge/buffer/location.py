"""What a buffer target names, from its text alone (no backend loaded): the config and the
CLI ask this before any buffer is opened."""

from __future__ import annotations

from pathlib import Path

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres(target: str | Path) -> bool:
    """Does this buffer target name a PostgreSQL server?"""
    return str(target).startswith(POSTGRES_SCHEMES)


def sqlite_path(target: str | Path) -> str:
    """The file of an SQLite target: `sqlite:///rel.db`, `sqlite:////abs.db` or a path."""
    text = str(target)
    return text[len("sqlite:///"):] if text.startswith("sqlite:///") else text
