"""No statement reads every row of a table that grows with traffic, unless it is named here
with the reason that is fine.

Found by listing every statement's SQLite plan (adv30's history read, then the same
shape in five more places): a statement that names a message id but not the sink scanned
every delivery, in the writer's transaction (a history chunk, a failed send); a status
page view read every status row. Each statement of bridge.buffer is planned here on a
fresh buffer; a plan that scans a growing table fails the test unless it walks a partial
index bounded by a state (pending, dead ...), or the statement is listed in ALLOWED.
"""

from __future__ import annotations

import importlib
import pkgutil
import sqlite3

import asyncpg
import pytest

import bridge.buffer
import bridge.buffer.shared as shared
from bridge.buffer import Buffer
from bridge.buffer.compiler import POSTGRESQL, SQLITE, Query
from bridge.buffer.pgurl import split_schema
from bridge.buffer.sqlite import migrate
from tests.backends import fresh_schema_url, needs_postgres

# tables with a row per message, delivery, status, conversation or mapping
GROWING = {"messages", "deliveries", "statuses", "ledger", "conversations",
           "sink_conversations", "batches", "media", "identities", "directory"}
# partial indexes: a walk of one is bounded by rows in that state, not by the table
BOUNDED = {"deliveries_pending", "deliveries_dead", "deliveries_backfill", "batches_leased",
           "targets_dead"}
ALLOWED = {
    # admin commands on one person or the whole buffer, not on a serving path
    **dict.fromkeys(("purge.STATUSES", "purge.DROP_STATUSES", "purge.HELD_NAMES",
                     "purge.DROP_LEDGER", "purge.MAPPINGS", "purge.RECORDS"),
                    "bridge purge: an erasure reads what it must find once"),
    "store.CATCH_UP": "a sink enabled again queues what it missed: once",
    "transfer.ANY_MESSAGE": "bridge buffer migrate: LIMIT 1, stops at the first row",
    "reads.MESSAGES": "Buffer.messages(): tests and tools; no page or drain reads it",
    "reads.MESSAGE_COUNT": "the status report's total: an index-only count (bench/README "
                           "status_page.py: within the 200 ms at 1,000,000 messages)",
    "reads.GROUP_CHATS": "a count over conversations, one row per customer (not per "
                         "message): a few ms at 100,000",
    # the media table has a row per media message; these run per media pass or per
    # status view over it (index-free sums and lists, measured within the page's target)
    **dict.fromkeys(("media.RELEASE", "media.REQUEUE_ALL", "media.ORPHANS", "media.PATHS",
                     "media.BY_STATE", "media.BYTES", "media.TOTAL_BYTES", "media.REASONS",
                     "reads.OVERDUE_COUNT", "reads.OVERDUE"),
                    "one row per media file, read by the media runner's start, the room "
                    "check and the status page"),
}


def _queries() -> dict[str, Query]:
    found: dict[int, tuple[str, Query]] = {}
    for module in pkgutil.iter_modules(bridge.buffer.__path__):
        loaded = importlib.import_module(f"bridge.buffer.{module.name}")
        for name, value in vars(loaded).items():
            if isinstance(value, Query):
                found.setdefault(id(value), (f"{module.name}.{name}", value))
    return dict(found.values())


def _args(compiled) -> list:
    """Any values of the right kinds: a plan does not depend on them."""
    values: list = [None] * len(compiled.names)
    for position, convert in compiled.binds:
        for value in (None, [], "x"):
            try:
                values[position] = convert(value)
                break
            except (TypeError, ValueError, AttributeError):
                continue
    return values


def _scans(db: sqlite3.Connection, query: Query) -> list[str] | None:
    """The plan's full scans of growing tables, or None where SQLite cannot plan it
    (PostgreSQL-only statements: locks, clocks, notifications)."""
    compiled = query.on(SQLITE)
    try:
        plan = [row[3] for row in db.execute("EXPLAIN QUERY PLAN " + compiled.sql,
                                              _args(compiled))]
    except sqlite3.OperationalError:
        return None
    bad = []
    for line in plan:
        words = line.split()
        if words[:1] != ["SCAN"] or words[1] not in GROWING:
            continue
        if not BOUNDED.intersection(words):
            bad.append(line)
    return bad


@pytest.fixture(scope="module")
def planner(tmp_path_factory) -> sqlite3.Connection:
    db = sqlite3.connect(tmp_path_factory.mktemp("plans") / "buffer.db")
    migrate(db)
    return db


def test_no_statement_scans_a_growing_table_unless_named_with_its_reason(planner):
    queries = _queries()
    assert len(queries) > 150  # every module's statements were found
    planned = {name: _scans(planner, query) for name, query in queries.items()}
    assert sum(scans is not None for scans in planned.values()) > 150
    scanning = {name: scans for name, scans in planned.items() if scans}
    assert {name: scans for name, scans in scanning.items() if name not in ALLOWED} == {}
    assert set(ALLOWED) <= set(scanning), "an allowed scan is gone: drop its entry"


@pytest.mark.parametrize("name", ["append.HISTORY_AS_BACKFILL", "append.FOLD_UPGRADED",
                                  "append.ORIGINALS", "failures.ORIGINAL",
                                  "failures.NOTICE_DELIVERIES", "identity._MERGE_MAPPINGS",
                                  "identity._DROP_MAPPINGS", "reads.MAPPINGS",
                                  "reads.FAILED_SENDS", "reads.FAILED_COUNT"])
def test_the_statements_that_scanned_find_their_rows_by_key_now(planner, name):
    assert _scans(planner, _queries()[name]) == []


@needs_postgres
async def test_the_heartbeats_media_release_finds_leases_by_their_index_on_postgresql():
    """Every heartbeat of every process frees a gone process's media leases
    (shared.RELEASE_DEAD_MEDIA, PostgreSQL only, so not planned above). Without an index on
    lease_owner it walked every pending job: a sequential scan of a million-job backlog
    (a Graph outage) took ~0.35 s, each heartbeat of each process. With media_leased
    (schema 17) it reads only the fetches under way."""
    async with fresh_schema_url() as url:
        buffer = await Buffer.open(url)
        await buffer.close()
        dsn, schema = split_schema(url)
        conn = await asyncpg.connect(dsn, server_settings={"search_path": schema})
        try:
            await conn.execute(
                "INSERT INTO messages (source, provider_id, conversation, sent_at, stored_at,"
                " body) SELECT 'whatsapp', 'wamid.' || g, '+91' || (g % 500), g, g, '{}'"
                " FROM generate_series(1, 20000) g")
            await conn.execute(  # a backlog: every job pending, four fetches under way
                "INSERT INTO media (message_id, source, media_id, updated_at, lease_until,"
                " lease_owner) SELECT id, 'whatsapp', 'm' || id, 0,"
                " CASE WHEN id <= 4 THEN 9e9 END, CASE WHEN id <= 4 THEN 'gone' END"
                " FROM messages")
            await conn.execute("ANALYZE")
            compiled = shared.RELEASE_DEAD_MEDIA.on(POSTGRESQL)
            plan = "\n".join(row[0] for row in await conn.fetch(
                "EXPLAIN " + compiled.sql, *compiled.args({"dead_after": 15.0})))
        finally:
            await conn.close()
    assert "media_leased" in plan and "Seq Scan on media" not in plan, plan


def test_the_claims_batching_finds_each_delivery_by_its_key(planner):
    """delivery.ASSIGN (put a claim's new batches' messages in them) searched deliveries by
    the sink alone and scanned the members for each row: every delivery row the sink ever
    had, times the members. A claim took 19 s at 100,000 pending messages (190 s at
    1,000,000) on the writer, and each webhook waited that long for its 200
    (bench/footprint.py). Each row is now found by its key."""
    compiled = _queries()["delivery.ASSIGN"].on(SQLITE)
    plan = [row[3] for row in planner.execute("EXPLAIN QUERY PLAN " + compiled.sql,
                                              _args(compiled))]
    searches = [line for line in plan if line.startswith("SEARCH deliveries")]
    assert searches and all(line.endswith("(sink=? AND message_id=?)") for line in searches), \
        plan
