"""Readers for the JSON shapes of a webhook: lenient ones for the envelope, strict ones
(raising BadField) for the known fields of a message."""

from __future__ import annotations

from typing import Any


class BadField(Exception):
    """A known field of a message has the wrong shape: the message becomes "unsupported"."""


# -- lenient readers (shape of the envelope) -----------------------------------------------

def text_or_none(value: object) -> str | None:
    """A non-empty string, else None."""
    return value if isinstance(value, str) and value else None


def items(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def dicts(value: object) -> list[dict[str, Any]]:
    """The objects of a list (anything else in it skipped); [] when not a list."""
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def error_list(value: object) -> list[dict[str, Any]]:
    return dicts(value)


# -- strict readers (known fields of a message): wrong shape raises BadField ------------------

def as_dict(value: object) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    raise BadField("expected an object")


def req_dict(data: dict[str, Any], key: str) -> dict[str, Any]:
    return as_dict(data.get(key))


def opt_dict(data: dict[str, Any], key: str) -> dict[str, Any] | None:
    return None if data.get(key) is None else as_dict(data[key])


def opt_list(data: dict[str, Any], key: str) -> list[Any]:
    value = data.get(key)
    if value is None or isinstance(value, list):
        return value or []
    raise BadField(key)


def opt_str(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None or isinstance(value, str):
        return value
    raise BadField(key)


def opt_bool(data: dict[str, Any], key: str) -> bool:
    value = data.get(key)
    if value is None or isinstance(value, bool):
        return bool(value)
    raise BadField(key)


def opt_number(data: dict[str, Any], key: str) -> int | float | None:
    value = data.get(key)
    if value is None or (isinstance(value, int | float) and not isinstance(value, bool)):
        return value
    raise BadField(key)


def opt_scalar(data: dict[str, Any], key: str) -> int | float | str | None:
    """A number Meta may send as a number or as a string (quantities, prices)."""
    value = data.get(key)
    return value if isinstance(value, str) else opt_number(data, key)
