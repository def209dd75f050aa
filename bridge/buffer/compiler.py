"""Each statement defined once (SQLAlchemy Core), compiled once per engine, then cached.

A `Query` holds a construct; `Query.on(dialect)` compiles it the first time it runs on that
engine and keeps the SQL text, the order of its named parameters and the value converters
its column types ask for (Escaped text, RowSet). The connectors (bridge.buffer.connectors)
run that text on the drivers directly: the ingest path never compiles, and never goes
through SQLAlchemy's execution layer.

Where the engines differ in meaning, the difference is a construct compiled per dialect
(`greatest`, `least`, `json_field`, `RowSet`, `whole_number`), never a rewrite of text.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.schema import ExecutableDDLElement
from sqlalchemy.sql.elements import BindParameter
from sqlalchemy.sql.expression import ColumnElement, FunctionElement
from sqlalchemy.sql.visitors import InternalTraversal, replacement_traverse
from sqlalchemy.types import TypeDecorator

from bridge.buffer.tables import Escaped, escape_text, postgresql_where

SQLITE = sqlite.dialect()


@functools.cache
def postgresql_dialect() -> sa.Dialect:
    """asyncpg's dialect: $n parameters, each cast to its column's type (asyncpg needs a
    type for a parameter PostgreSQL cannot infer, e.g. in CASE WHEN $1 IS NULL). Built on
    first use, as POSTGRESQL: SQLAlchemy's PostgreSQL dialect (~50 ms of imports) loads
    only in a process that compiles for PostgreSQL, not in every SQLite bridge's start."""
    from sqlalchemy.dialects.postgresql import asyncpg as pg_asyncpg

    postgresql_where()  # the partial indexes' WHERE, which SQLite's schema has from the start
    dialect = pg_asyncpg.dialect()
    dialect.paramstyle = "numeric_dollar"
    return dialect


def __getattr__(name: str) -> Any:
    """POSTGRESQL: postgresql_dialect(), loaded when first named (PEP 562)."""
    if name == "POSTGRESQL":
        return postgresql_dialect()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


P = sa.bindparam  # a named parameter: P("sink")


def insert_of(dialect: sa.Dialect) -> Callable[..., Any]:
    """The dialect's INSERT, which can say ON CONFLICT: a Query built from a function gets
    the one of the engine it is compiled for."""
    if dialect.name == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert
    return sqlite.insert


@dataclass(frozen=True, slots=True)
class Compiled:
    """One statement for one engine: its text, parameter names in order, converters."""

    sql: str
    names: tuple[str, ...]
    defaults: Mapping[str, Any]  # literal values the construct itself binds (LIMIT 1 ...)
    binds: tuple[tuple[int, Callable[[Any], Any]], ...]  # (position, converter)
    results: tuple[tuple[int, Callable[[Any], Any]], ...]  # (column, converter)

    def args(self, params: Mapping[str, Any] | Sequence[Any]) -> list[Any]:
        """The positional parameters, converted: from named `params`, or from values
        already in the statement's order (`names`, each once: see `ordered`)."""
        if type(params) is dict or isinstance(params, Mapping):  # dict: no ABC check
            try:
                values = [params[n] if n in params else self.defaults[n] for n in self.names]
            except KeyError as exc:
                raise TypeError(f"missing SQL parameter {exc.args[0]!r} for: {self.sql}") \
                    from None
        else:
            # a list with nothing to convert goes as it is (a multi-row insert's values)
            values = params if type(params) is list and not self.binds else list(params)
            if len(values) != len(self.names):
                raise TypeError(f"{len(values)} values for {len(self.names)} parameters")
        for position, convert in self.binds:
            values[position] = convert(values[position])
        return values

    def many(self, params: Iterable[Mapping[str, Any] | Sequence[Any]]) -> list[Any]:
        """Parameter sets for executemany; rows already in order and with nothing to
        convert pass as they are."""
        params = list(params)
        if not params or type(params[0]) is dict or isinstance(params[0], Mapping):
            return [self.args(p) for p in params]
        if not self.binds:
            return params
        width = len(self.names)
        converted = []
        for row in params:  # values in order (upserts of a group): convert in place
            values = list(row)
            if len(values) != width:
                raise TypeError(f"{len(values)} values for {width} parameters")
            for position, convert in self.binds:
                values[position] = convert(values[position])
            converted.append(values)
        return converted

    @property
    def ordered(self) -> bool:
        """Whether values may be given in order (each parameter appears once)."""
        return len(set(self.names)) == len(self.names)

    def row(self, row: Sequence[Any]) -> tuple[Any, ...]:
        """A result row as a tuple, its columns converted back."""
        if not self.results:
            return tuple(row)
        values = list(row)
        for position, convert in self.results:
            values[position] = convert(values[position])
        return tuple(values)


class Query:
    """A named statement: compiled per dialect on first use, then reused.

    `construct` is a SQLAlchemy statement, or a function of the dialect's `insert` that
    returns one (for upserts: ON CONFLICT is built by each dialect's own insert)."""

    __slots__ = ("construct", "name", "_by_dialect")

    def __init__(self, construct: Any, name: str = "") -> None:
        self.construct = construct
        self.name = name
        self._by_dialect: dict[str, Compiled] = {}

    def on(self, dialect: sa.Dialect) -> Compiled:
        found = self._by_dialect.get(dialect.name)
        if found is None:
            found = self._by_dialect[dialect.name] = compile_for(self.build(dialect), dialect)
        return found

    def build(self, dialect: sa.Dialect) -> Any:
        """The construct for `dialect`."""
        if isinstance(self.construct, sa.ClauseElement):
            return self.construct
        return self.construct(insert_of(dialect))

    def __repr__(self) -> str:
        return f"Query({self.name or self.construct!s})"


def compile_for(construct: Any, dialect: sa.Dialect) -> Compiled:
    """Compile a construct for one dialect (bridge.buffer only ever does this once each).

    Constants written in the construct ('pending', LIMIT 1) go into the text as literals:
    a partial index (WHERE state = 'pending') serves only a query that names its constant,
    and PostgreSQL's generic plan of a prepared statement cannot see a parameter's value.
    """
    if not isinstance(construct, ExecutableDDLElement):
        construct = replacement_traverse(construct, {}, _inline_constant)
    compiled = construct.compile(dialect=dialect)
    bound = tuple(getattr(compiled, "positiontup", None) or ())  # DDL has no parameters
    names = tuple(name.split(PART, 1)[0] for name in bound)
    defaults = {name: bind.value for name, bind in getattr(compiled, "binds", {}).items()
                if not bind.required and bind.callable is None}
    binds = []
    for position, name in enumerate(bound):
        kind = compiled.binds[name].type
        if isinstance(kind, TypeDecorator):
            binds.append((position, _bind_converter(kind, dialect)))
    results = []
    for position, column in enumerate(_result_columns(construct)):
        kind = getattr(column, "type", None)
        if isinstance(kind, TypeDecorator):
            results.append((position, _result_converter(kind, dialect)))
    return Compiled(compiled.string, names, defaults, tuple(binds), tuple(results))


def _inline_constant(element: Any) -> Any:
    if not isinstance(element, BindParameter) or element.required or element.callable:
        return None
    if element.expanding:  # IN ('pending', 'dead')
        items = [_literal(v) for v in element.value or ()]
        if items and None not in items:
            return sa.literal_column("(" + ", ".join(items) + ")")
        return None
    if _literal(element.value) is not None:
        return sa.literal_column(_literal(element.value), element.type)
    return None


def _literal(value: Any) -> str | None:
    """SQL text of a constant both engines read alike, or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.isprintable():
        return "'" + value.replace("'", "''") + "'"
    return None


def _bind_converter(kind: TypeDecorator, dialect: sa.Dialect) -> Callable[[Any], Any]:
    if type(kind) is Escaped:  # the same function, without two calls around it
        return escape_text

    def convert(value: Any) -> Any:
        return kind.process_bind_param(value, dialect)
    return convert


def _result_converter(kind: TypeDecorator, dialect: sa.Dialect) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        return kind.process_result_value(value, dialect)
    return convert


def _result_columns(construct: Any) -> list[Any]:
    if isinstance(construct, sa.Select | sa.CompoundSelect):
        return list(construct.selected_columns)
    if isinstance(construct, sa.Insert | sa.Update | sa.Delete):
        return list(construct.exported_columns)
    return []


# -- constructs whose SQL differs per engine -------------------------------------------


def starts_with(column: Any, prefix: str) -> Any:
    """`column` begins with `prefix`: substr, not LIKE (a prefix may hold % or _, and LIKE's
    case rules differ between the engines)."""
    return sa.func.substr(column, 1, len(prefix)) == prefix


class greatest(FunctionElement):  # noqa: N801 - a SQL function
    """The larger of its arguments: PostgreSQL's greatest(), SQLite's scalar max().

    They differ on NULL: greatest() ignores NULL arguments, SQLite's max(a, b) returns
    NULL if any is NULL. Callers pass no NULLs (coalesce them), so both mean the same.
    """

    inherit_cache = True
    name = "greatest"

    @property
    def type(self) -> Any:  # the first argument's type
        return next(iter(self.clauses)).type


class least(FunctionElement):  # noqa: N801 - a SQL function
    """The smaller of its arguments (PostgreSQL's least, SQLite's min); the same NULL gap
    as greatest: pass no NULLs."""

    inherit_cache = True
    name = "least"

    @property
    def type(self) -> Any:
        return next(iter(self.clauses)).type


@compiles(greatest, "sqlite")
def _greatest_sqlite(element: greatest, compiler: Any, **kw: Any) -> str:
    return f"max({compiler.process(element.clauses, **kw)})"


@compiles(least, "sqlite")
def _least_sqlite(element: least, compiler: Any, **kw: Any) -> str:
    return f"min({compiler.process(element.clauses, **kw)})"


@compiles(greatest)
@compiles(least)
def _extreme_default(element: FunctionElement, compiler: Any, **kw: Any) -> str:
    return f"{element.name}({compiler.process(element.clauses, **kw)})"


class whole_number(ColumnElement):  # noqa: N801 - a SQL expression
    """The integer part of a non-negative number: a CAST to INTEGER truncates on SQLite
    but rounds on PostgreSQL, so PostgreSQL says floor() first."""

    inherit_cache = True
    type = sa.BigInteger()
    _traverse_internals = [("value", InternalTraversal.dp_clauseelement)]

    def __init__(self, value: Any) -> None:
        self.value = value

    @property
    def _from_objects(self) -> list[Any]:
        return self.value._from_objects


@compiles(whole_number, "sqlite")
def _whole_sqlite(element: whole_number, compiler: Any, **kw: Any) -> str:
    return f"CAST({compiler.process(element.value, **kw)} AS INTEGER)"


@compiles(whole_number)
def _whole_default(element: whole_number, compiler: Any, **kw: Any) -> str:
    return f"CAST(floor({compiler.process(element.value, **kw)}) AS BIGINT)"


class json_field(ColumnElement):  # noqa: N801 - a SQL expression
    """One field of JSON text as text (only migrations look inside a message body).

    SQLite: json_extract(x, '$.a'); PostgreSQL: x::json ->> 'a' (json, not jsonb: jsonb
    refuses \\u0000 anywhere in the document, json only in the field extracted)."""

    inherit_cache = True
    type = sa.Text()
    _traverse_internals = [("value", InternalTraversal.dp_clauseelement),
                           ("field", InternalTraversal.dp_string)]

    @property
    def _from_objects(self) -> list[Any]:
        return self.value._from_objects

    def __init__(self, value: Any, field: str) -> None:
        if not field.isidentifier():
            raise ValueError(f"json_field: {field!r} is not a plain field name")
        self.value = value
        self.field = field


@compiles(json_field, "sqlite")
def _json_sqlite(element: json_field, compiler: Any, **kw: Any) -> str:
    return f"json_extract({compiler.process(element.value, **kw)}, '$.{element.field}')"


@compiles(json_field)
def _json_default(element: json_field, compiler: Any, **kw: Any) -> str:
    return f"(CAST({compiler.process(element.value, **kw)} AS json) ->> '{element.field}')"


# -- sets of values as one parameter -----------------------------------------------------


class RowSet(TypeDecorator):
    """Rows (or single values) passed as one argument: PostgreSQL takes one array per
    column (unnest), SQLite one JSON array (json_each). Either way a statement's text does
    not depend on how many rows it carries: it is compiled once and prepared once."""

    impl = sa.Text
    cache_ok = True

    def __init__(self, width: int = 1, column: int | None = None, kind: str = "text",
                 kinds: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.width = width
        self.column = column  # PostgreSQL: which column's array this parameter is
        self.kind = kind
        self.kinds = kinds  # SQLite: every column's kind

    def load_dialect_impl(self, dialect: Any) -> Any:
        if self.column is not None:
            item = sa.Text() if self.kind == "escaped" else _KIND_TYPE[self.kind]
            from sqlalchemy.dialects.postgresql import ARRAY

            return dialect.type_descriptor(ARRAY(item))
        return dialect.type_descriptor(sa.Text())

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        if self.column is not None:
            column = [row[self.column] for row in value] if self.width > 1 else list(value)
            return [escape_text(v) for v in column] if self.kind == "escaped" else column
        if self.width == 1:
            return json.dumps(list(value))
        escaped = [i for i, kind in enumerate(self.kinds) if kind == "escaped"]
        return json.dumps([[escape_text(v) if i in escaped else v for i, v in enumerate(row)]
                           for row in value])


_KIND_TYPE = {"text": sa.Text(), "real": sa.Double(), "int": sa.BigInteger(),
              "escaped": Escaped()}  # free text, stored as bridge.buffer.tables.Escaped
PART = "__"  # rows_in's PostgreSQL parameters: <name>__<column>


class rows_in(sa.TableClause):  # noqa: N801 - a SQL table function
    """A table of the rows passed as parameter `name` (a list of tuples, or of values
    when there is one column); `columns`: (name, kind) with kind text, real or int."""

    inherit_cache = False

    def __init__(self, name: str, columns: Sequence[tuple[str, str]], alias: str = "r") -> None:
        super().__init__(alias, *(sa.column(c, _KIND_TYPE[k]) for c, k in columns))
        self.param = name
        self.spec = tuple(columns)


@compiles(rows_in, "sqlite")
def _rows_sqlite(element: rows_in, compiler: Any, asfrom: bool = False, **kw: Any) -> str:
    if not asfrom:
        return compiler.visit_table(element, asfrom=asfrom, **kw)
    kinds = tuple(kind for _, kind in element.spec)
    param = compiler.process(sa.bindparam(element.param, type_=RowSet(len(kinds), kinds=kinds)),
                             **kw)
    if len(element.spec) == 1:
        picks = f"value AS {element.spec[0][0]}"
    else:
        picks = ", ".join(f"value ->> {i} AS {name}" for i, (name, _) in enumerate(element.spec))
    return f"(SELECT {picks} FROM json_each({param})) AS {element.name}"


@compiles(rows_in)
def _rows_default(element: rows_in, compiler: Any, asfrom: bool = False, **kw: Any) -> str:
    if not asfrom:
        return compiler.visit_table(element, asfrom=asfrom, **kw)
    width = len(element.spec)
    arrays = ", ".join(
        compiler.process(sa.bindparam(f"{element.param}{PART}{i}", type_=RowSet(width, i, kind)),
                         **kw)
        for i, (_, kind) in enumerate(element.spec))
    names = ", ".join(name for name, _ in element.spec)
    return f"unnest({arrays}) AS {element.name}({names})"


def values_of(name: str, kind: str = "int") -> Any:
    """`column.in_(values_of("ids"))`: a list parameter, one statement for any length."""
    table = rows_in(name, [("value", kind)], alias=f"{name}_values")
    return sa.select(table.c.value)


class indexed(sa.TableClause):  # noqa: N801 - a FROM item
    """`table` read through `index` on SQLite (INDEXED BY), as plain `table` elsewhere.

    Without ANALYZE statistics SQLite's planner may prefer a primary key that reads every
    row a sink ever had; PostgreSQL's planner has statistics and takes no such hint."""

    inherit_cache = False

    def __init__(self, table: sa.Table, index: str, alias: str | None = None) -> None:
        super().__init__(alias or table.name,
                         *(sa.column(c.name, c.type) for c in table.columns))
        self.table = table
        self.index = index


@compiles(indexed, "sqlite")
def _indexed_sqlite(element: indexed, compiler: Any, asfrom: bool = False, **kw: Any) -> str:
    if not asfrom:
        return compiler.visit_table(element, asfrom=asfrom, **kw)
    return f"{_from(element)} INDEXED BY {element.index}"


@compiles(indexed)
def _indexed_default(element: indexed, compiler: Any, asfrom: bool = False, **kw: Any) -> str:
    if not asfrom:
        return compiler.visit_table(element, asfrom=asfrom, **kw)
    return _from(element)


def _from(element: indexed) -> str:
    if element.name == element.table.name:
        return element.name
    return f"{element.table.name} AS {element.name}"


class ordered_join(sa.sql.selectable.Join):  # noqa: N801 - a FROM item
    """An inner join SQLite must run in the written order (its CROSS JOIN): without
    statistics it may start from the side that reads every row a sink ever had.
    PostgreSQL plans an ordinary JOIN with statistics."""

    inherit_cache = False

    def __init__(self, left: Any, right: Any, onclause: Any) -> None:
        super().__init__(left, right, onclause)


@compiles(ordered_join, "sqlite")
def _ordered_sqlite(element: ordered_join, compiler: Any, **kw: Any) -> str:
    kw["asfrom"] = True
    return (f"{compiler.process(element.left, **kw)} CROSS JOIN "
            f"{compiler.process(element.right, **kw)} ON "
            f"{compiler.process(element.onclause, **kw)}")


@compiles(ordered_join)
def _ordered_default(element: ordered_join, compiler: Any, **kw: Any) -> str:
    return compiler.visit_join(element, **kw)
