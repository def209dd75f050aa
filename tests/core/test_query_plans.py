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

import pytest

import bridge.buffer
from bridge.buffer.compiler import SQLITE, Query
from bridge.buffer.sqlite import migrate

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
