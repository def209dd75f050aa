"""A webhook body's bytes as a JSON value: UTF-8 only, and only text SQLite can store."""

from __future__ import annotations

import json
import math
import re
from typing import Any

BOM = "\ufeff"
REPLACEMENT = "\ufffd"
# \uD800-\uDFFF (paired or not) and \u0000: escapes of what may need replacing
_SURROGATE_ESCAPE = re.compile(r"\\u(?:[dD][89a-fA-F]|0000)")
_SURROGATE = re.compile("[\ud800-\udfff\x00]")  # lone surrogates (SQLite), NUL (PostgreSQL)


def load_body(body: bytes) -> Any:
    """The JSON value of `body`; ValueError when it is not UTF-8 JSON (RecursionError when
    absurdly nested).

    UTF-8 strictly (RFC 8259 §8.1): json.loads(bytes) would also take UTF-16/32 and
    UTF-8-encoded surrogates. A leading BOM is ignored, as the RFC allows. NaN, Infinity
    and fractions too large for a double (1e400) are not JSON numbers a reader can keep
    (§6, §9) and are refused: stored, they made the row unreadable to SQLite's JSON
    functions. Integers of any size are kept (SQLite reads them). Escapes of
    unpaired surrogates (`\\ud83d` alone: valid JSON, not Unicode, §8.2) become U+FFFD:
    SQLite cannot store them, and refusing would lose the rest of the notification. So
    does NUL (`\\u0000`), which PostgreSQL cannot store in text (a name or an id holding
    one made the whole notification answer 503, retried for days).
    """
    text = body.decode("utf-8")
    if text.startswith(BOM):
        text = text[1:]
    value = _DECODER.decode(text)
    # pairs decode to one code point; lone ones, NUL stay. "\\u" in text first: a plain
    # substring scan, several times cheaper than the pattern's over a body without escapes
    if "\\u" in text and _SURROGATE_ESCAPE.search(text):
        value = replace_lone_surrogates(value)
    return value


def _not_a_number(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"{text[:20]} does not fit a double")
    return value


_DECODER = json.JSONDecoder(parse_constant=_not_a_number, parse_float=_finite)


def replace_lone_surrogates(value: Any) -> Any:
    """`value` with every lone surrogate and NUL in its strings and keys made U+FFFD.

    Walks with a stack, not recursion: bodies may be nested close to the parser's limit.
    Containers are changed in place; a string argument is returned replaced.
    """
    if isinstance(value, str):
        return _fix(value)
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if any(_SURROGATE.search(key) for key in node):
                items = list(node.items())
                node.clear()
                for key, item in items:  # a clash after replacing: the later one wins
                    node[_fix(key)] = item
            entries = node.items()
        elif isinstance(node, list):
            entries = enumerate(node)
        else:
            continue
        for key, item in list(entries):
            if isinstance(item, str):
                if _SURROGATE.search(item):
                    node[key] = _fix(item)
            elif isinstance(item, dict | list):
                stack.append(item)
    return value


def _fix(text: str) -> str:
    return _SURROGATE.sub(REPLACEMENT, text)
