"""Request parameters read one way on every route: a bad value is a 400 with a one-line reason.

Query strings and forms are multi-maps: a name given twice is refused (a proxy, a cache and
this code could each read a different copy), as are values that are too long, hold control
characters (PostgreSQL cannot store NUL) or are not text (a file in a multipart form). Whole
numbers are ASCII digits only: Python's int() also takes '١٢٣', ' 7', '1_0' and '+7', and a
number past 2**63 - 1 fits no database integer.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any

from aiohttp import web
from multidict import MultiMapping

MAX_ID = 2**63 - 1  # the largest integer SQLite and PostgreSQL (bigint) hold
LONGEST = 1000  # characters of a text parameter (a search, a conversation key, a sink name)
MOST_IDS = 10_000  # ids in one form (a page shows far fewer)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DECIMAL = re.compile(r"[0-9]{1,9}(\.[0-9]{1,9})?")
Values = MultiMapping[Any]


def bad(reason: str) -> web.HTTPBadRequest:
    """The 400 every parameter error raises."""
    return web.HTTPBadRequest(text=reason)


def shown(value: str, longest: int = 60) -> str:
    """`value` quoted for an error message, cut short: a reason stays one short line."""
    return repr(value if len(value) <= longest else value[:longest] + "...")


def text(values: Values, name: str, default: str | None = None, *,
         longest: int = LONGEST) -> str | None:
    """The value of `name` given at most once, or `default` when it is absent."""
    found = values.getall(name, [])
    if not found:
        return default
    if len(found) > 1:
        raise bad(f"{name} is given {len(found)} times (give it once)")
    return _checked(name, found[0], longest)


def _checked(name: str, value: Any, longest: int) -> str:
    if not isinstance(value, str):
        raise bad(f"{name} must be text, not a file")
    if len(value) > longest:
        raise bad(f"{name} is longer than {longest} characters")
    if _CONTROL.search(value):
        raise bad(f"{name} holds a control character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise bad(f"{name} is not valid UTF-8") from None
    return value


def whole(values: Values, name: str, default: int | None = None, *, low: int = 0,
          high: int = MAX_ID) -> int | None:
    """`name` as a whole number from `low` to `high`, or `default` when absent."""
    given = text(values, name)
    return default if given is None else to_whole(name, given, low, high)


def to_whole(name: str, given: str, low: int = 0, high: int = MAX_ID) -> int:
    """`given` (ASCII digits only) as a whole number from `low` to `high`."""
    if not (given.isascii() and given.isdigit() and len(given) <= len(str(high))
            and low <= int(given) <= high):
        raise bad(f"{name} must be a whole number from {low} to {high}")
    return int(given)


def ids(values: Values, name: str) -> list[int]:
    """Every value of `name` (it may repeat) as a row id from 1 to 2**63 - 1."""
    found = values.getall(name, [])
    if len(found) > MOST_IDS:
        raise bad(f"{name} is given {len(found)} times (at most {MOST_IDS})")
    return [to_whole(name, _checked(name, value, LONGEST), 1) for value in found]


def decimal(values: Values, name: str, *, high: float) -> float | None:
    """`name` as a number above 0 and at most `high` (e.g. 7 or 0.5), or None when absent."""
    given = text(values, name, longest=20)
    if given is None:
        return None
    if not (_DECIMAL.fullmatch(given) and 0 < float(given) <= high):
        raise bad(f"{name} must be a number above 0 and at most {high:g} (e.g. 7 or 0.5)")
    return float(given)


def choice(values: Values, name: str, options: Collection[str], default: str) -> str:
    """`name` as one of `options`, or `default` when absent."""
    given = text(values, name, default)
    if given not in options:
        raise bad(f"{name} must be one of {', '.join(options)}")
    return given


async def form(request: web.Request) -> Values:
    """The request's form fields; a body aiohttp cannot read as a form is a 400."""
    try:
        return await request.post()
    except (ValueError, LookupError):  # bad UTF-8 or charset, a broken multipart body
        raise bad("the form could not be read (send it as application/x-www-form-urlencoded"
                  " in UTF-8)") from None
