"""SQLite SQL of the buffer package, rewritten for PostgreSQL.

The buffer's queries are written once, in SQLite's dialect. The PostgreSQL backend runs
them through `to_postgres`, which rewrites the few constructs the two disagree on:

    ?  ?N                      -> $n  $N (positional parameters)
    INDEXED BY name            -> (dropped: PostgreSQL's planner picks its indexes)
    INSERT OR IGNORE INTO ...  -> INSERT INTO ... ON CONFLICT DO NOTHING
    max(a, b)  min(a, b)       -> greatest(a, b)  least(a, b) (aggregates stay)
    a IS NOT b  a IS b         -> a IS DISTINCT FROM b  a IS NOT DISTINCT FROM b
    LIKE                       -> ILIKE (SQLite's LIKE ignores ASCII case)
    json_extract(x, '$.a.b')   -> (x::jsonb #>> '{a,b}') (text; compare with text)
    json_array(...)            -> json_build_array(...) (JSON text either way)
    CROSS JOIN t a ON ...      -> JOIN t a ON ... (SQLite's join-order hint; PG wants no ON)
    CAST(x AS INTEGER)         -> CAST(trunc(x) AS BIGINT) (SQLite truncates, PG rounds)

What cannot be rewritten mechanically is written portably at its call site (table-
qualified names in upserts, sum(CASE ...) instead of sum(boolean), RETURNING id instead of
lastrowid), or asks the connection's `dialect` for a fragment.
"""

from __future__ import annotations

import re
from functools import lru_cache

_INDEXED_BY = re.compile(r"\s+INDEXED BY \w+", re.IGNORECASE)
_IS_NOT = re.compile(r"\bIS NOT (?!NULL\b|DISTINCT\b)", re.IGNORECASE)
_IS = re.compile(r"\bIS (?!NOT\b|NULL\b|DISTINCT\b)", re.IGNORECASE)
_LIKE = re.compile(r"(?<![IN])\bLIKE\b")
_OR_IGNORE = re.compile(r"\bINSERT OR IGNORE INTO\b", re.IGNORECASE)
_RETURNING = re.compile(r"\sRETURNING\s", re.IGNORECASE)
_JSON = re.compile(r"json_extract\(([\w.]+),\s*'\$\.([\w.]+)'\)")
_SCALAR = re.compile(r"\b(max|min)\(", re.IGNORECASE)
_JSON_ARRAY = re.compile(r"\bjson_array\(")
_CROSS_ON = re.compile(r"\bCROSS JOIN (\w+ \w+)(?= ON\b)")
_CAST_INTEGER = re.compile(r"\bCAST\(([^()]+) AS INTEGER\)", re.IGNORECASE)
# Fragments whose meaning differs beyond the rules above, rewritten whole (first).
_SPECIAL = {
    # SQLite's json_extract gives a JSON true as 1; PostgreSQL's #>> gives the text 'true'
    "coalesce(json_extract(m.body, '$.history'), 0)":
        "CASE WHEN (m.body::jsonb #>> '{history}') = 'true' THEN 1 ELSE 0 END",
    # the columns a table has (reads looks for identity columns): (position, name) rows
    "PRAGMA table_info(conversations)":
        "SELECT ordinal_position, column_name FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name = 'conversations'",
}


@lru_cache(maxsize=2048)
def to_postgres(sql: str) -> str:
    """The PostgreSQL form of one statement of the buffer's SQLite SQL."""
    for sqlite, postgres in _SPECIAL.items():
        sql = sql.replace(sqlite, postgres)
    sql = _INDEXED_BY.sub("", sql)
    sql = _JSON_ARRAY.sub("json_build_array(", sql)
    sql = _CROSS_ON.sub(r"JOIN \1", sql)
    sql = _CAST_INTEGER.sub(r"CAST(trunc(\1) AS BIGINT)", sql)
    sql = _JSON.sub(lambda m: f"({m[1]}::jsonb #>> '{{{m[2].replace('.', ',')}}}')", sql)
    sql = _IS_NOT.sub("IS DISTINCT FROM ", sql)
    sql = _IS.sub("IS NOT DISTINCT FROM ", sql)
    sql = _LIKE.sub("ILIKE", sql)
    sql = _scalar_extremes(sql)
    if _OR_IGNORE.search(sql):
        sql = _OR_IGNORE.sub("INSERT INTO", sql)
        found = _RETURNING.search(sql)
        cut = found.start() if found else len(sql)
        sql = f"{sql[:cut]} ON CONFLICT DO NOTHING{sql[cut:]}"
    return _parameters(sql)


def _scalar_extremes(sql: str) -> str:
    """max(a, b) / min(a, b) with two or more arguments -> greatest / least."""
    out, pos = [], 0
    for match in _SCALAR.finditer(sql):
        if match.start() < pos:
            continue
        close, commas = _call_extent(sql, match.end())
        if commas:
            name = "greatest" if match[1].lower() == "max" else "least"
            out.append(sql[pos:match.start()] + name + "(")
            pos = match.end()
    out.append(sql[pos:])
    return "".join(out)


def _call_extent(sql: str, start: int) -> tuple[int, int]:
    """(index of the closing parenthesis, top-level commas) of a call opened before start."""
    depth, commas, quoted = 1, 0, False
    for index in range(start, len(sql)):
        char = sql[index]
        if char == "'":
            quoted = not quoted
        elif quoted:
            continue
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return index, commas
        elif char == "," and depth == 1:
            commas += 1
    return len(sql), commas


def _parameters(sql: str) -> str:
    """? -> $1, $2 ... in order; ?N -> $N; question marks inside quotes stay."""
    out, counter, index, quoted = [], 0, 0, False
    while index < len(sql):
        char = sql[index]
        if char == "'":
            quoted = not quoted
        if char == "?" and not quoted:
            digits = re.match(r"\d+", sql[index + 1:])
            if digits:
                out.append("$" + digits[0])
                index += 1 + len(digits[0])
                continue
            counter += 1
            out.append(f"${counter}")
        else:
            out.append(char)
        index += 1
    return "".join(out)


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def identifier(name: str) -> str:
    """`name` if it is a plain SQL identifier (a table, column or schema), else ValueError:
    identifiers cannot be parameters, so this is what may be formatted into SQL."""
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
        raise ValueError(f"{name!r} is not a plain SQL identifier (letters, digits and _)")
    return name


def identifiers(names: list[str] | tuple[str, ...]) -> str:
    """'a, b, c' for plain identifiers (see identifier)."""
    return ", ".join(identifier(name) for name in names)
