"""The constructs whose SQL differs per engine mean the same on both (each runs on a real
SQLite buffer and, when available, a real PostgreSQL one)."""

from __future__ import annotations

import sqlite3

import sqlalchemy as sa

from bridge.buffer import append, delivery, identity
from bridge.buffer.compiler import (
    POSTGRESQL,
    SQLITE,
    P,
    Query,
    greatest,
    least,
    rows_in,
    values_of,
    whole_number,
)
from bridge.buffer.tables import escape_text, unescape_text

ODD = ["", "plain", "a\x00b", "\ud800 alone", "\x01marked", "नमस्ते 👩🏽‍💻", "\\u0000"]


async def test_extremes_whole_numbers_and_list_parameters_agree(buffer):
    one = sa.literal_column("1")
    found = await buffer.read(lambda db: db.one(Query(sa.select(
        greatest(P("a", type_=sa.Float), one), least(P("a", type_=sa.Float), one),
        whole_number(P("b", type_=sa.Float) / sa.literal_column("3600.0")),
        sa.select(sa.func.count()).select_from(rows_in("r", [("x", "int")]))
        .scalar_subquery(),
        sa.select(sa.func.count()).where(sa.literal_column("2").in_(values_of("ids")))
        .scalar_subquery())), a=0.5, b=7199.9, r=[], ids=[1, 2, 3]))
    assert found == (1, 0.5, 1, 0, 1)


async def test_free_text_round_trips_through_every_kind_of_parameter(buffer):
    escaped = rows_in("rows", [("n", "int"), ("v", "escaped")])
    back = await buffer.read(lambda db: db.rows(Query(
        sa.select(escaped.c.n, escaped.c.v).order_by(escaped.c.n)),
        rows=list(enumerate(ODD))))
    assert [v for _, v in back] == ODD  # stored escaped, read back through the type
    assert [unescape_text(escape_text(v)) for v in ODD] == ODD
    assert escape_text("plain") == "plain"  # searches and ordering see plain text as it is


def test_statements_given_values_in_order_declare_that_order():
    """The append path passes rows as they are: their statements' parameter order is
    what the rows hold, on both engines."""
    for dialect in (SQLITE, POSTGRESQL):
        assert append.UPSERT_CONVERSATION.on(dialect).names == (
            "key", "contact_name", "account", "last_message_at", "message_count", "kind",
            "group_id")
        assert append.UPSERT_STATUS.on(dialect).names == (
            "source", "provider_id", "status", "rank", "at", "recipient", "failed_at", "errors")
        assert identity.NEW_IDENTITY.on(dialect).names == ("key", "person", "seen_at")
        assert append.insert_messages(2).on(dialect).names == tuple(
            f"{c}_{n}" for n in range(2) for c in append._MESSAGE_COLUMNS)


def test_constants_are_in_the_text_so_partial_indexes_serve(tmp_path):
    """A claim's reads of pending rows walk the partial index (a parameter for 'pending'
    would hide the predicate from both planners)."""
    sql = delivery.OLDEST.on(SQLITE).sql
    assert "'pending'" in sql and "INDEXED BY deliveries_pending" in sql
    assert "'pending'" in delivery.OLDEST.on(POSTGRESQL).sql
    db = sqlite3.connect(tmp_path / "x.db")
    db.executescript("CREATE TABLE deliveries (sink, message_id, state, batch_id, backfill);"
                     "CREATE TABLE messages (id INTEGER PRIMARY KEY, conversation, account);"
                     "CREATE INDEX deliveries_pending ON deliveries (sink, batch_id, backfill)"
                     " WHERE state = 'pending';")
    compiled = delivery.OLDEST.on(SQLITE)
    plan = " ".join(str(row) for row in db.execute(
        "EXPLAIN QUERY PLAN " + compiled.sql, compiled.args({"sink": "s", "size": 5})))
    assert "deliveries_pending" in plan
