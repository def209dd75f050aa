"""Schema versions: one source for both engines, run on start, newer databases refused.

A new buffer is created from bridge.buffer.tables at VERSION in one transaction. An
existing one runs the steps after its version, in order, each written once with
SQLAlchemy's DDL constructs and compiled for the engine (an SQLite file older than 9
first walks bridge.buffer.legacy, the history from before PostgreSQL). The version lives
where each engine keeps such a thing: SQLite's `PRAGMA user_version`, PostgreSQL's
`schema_version` table (read by `bridge check` without opening the buffer).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.schema import CreateIndex, CreateTable, DropIndex, DropTable, ExecutableDDLElement

from bridge.buffer.compiler import P, Query, json_field
from bridge.buffer.connectors import Connector
from bridge.buffer.tables import (
    MARK,
    batches,
    buffer_imports,
    deliveries,
    escape_text,
    escaped_columns,
    media,
    messages,
    metadata,
    processes,
    rate_budgets,
    sink_numbers,
    source_syncs,
    statuses,
    targets,
)
from bridge.errors import SchemaError

Step = Callable[[Connector], Awaitable[None]]
CREATED_AFTER_10 = frozenset({"source_syncs", "sink_numbers"})  # tables later steps create


class AddColumn(ExecutableDDLElement):
    """ALTER TABLE ... ADD COLUMN, the column spelled as its table declares it."""

    inherit_cache = False

    def __init__(self, column: sa.Column) -> None:
        self.column = column


@compiles(AddColumn)
def _add_column(element: AddColumn, compiler: sa.sql.compiler.DDLCompiler, **kw: object) -> str:
    spec = compiler.get_column_specification(element.column)
    return f"ALTER TABLE {element.column.table.name} ADD COLUMN {spec}"


async def _ddl(db: Connector, *elements: ExecutableDDLElement) -> None:
    for element in elements:
        await db.run(Query(element))


def _index(table: sa.Table, name: str) -> sa.Index:
    return next(index for index in table.indexes if index.name == name)


async def m010_one_source(db: Connector) -> None:
    """Both engines' schemas made one (bridge.buffer.tables):
    - messages.direction, a column (filled from the body once): the hourly chart's
      outbound index reads it, where SQLite had an index on a JSON expression and
      PostgreSQL none;
    - PostgreSQL's extra deliveries_message index goes (queries name the sink first);
    - the cluster's tables are declared with the rest (JSON text where PostgreSQL had
      arrays and jsonb); they hold only live coordination state, so they are recreated.
    """
    await _escape_marked(db)
    await _ddl(db, AddColumn(messages.c.direction))
    await db.run(Query(sa.update(messages).values(direction="out").where(
        json_field(messages.c.body, "direction") == "out")))
    await _ddl(db, DropIndex(sa.Index("messages_out"), if_exists=True),
               CreateIndex(_index(messages, "messages_out")),
               DropIndex(sa.Index("deliveries_message"), if_exists=True),
               DropTable(processes, if_exists=True), DropTable(rate_budgets, if_exists=True),
               CreateTable(processes), CreateTable(rate_budgets),
               CreateTable(buffer_imports, if_not_exists=True))


async def _escape_marked(db: Connector) -> None:
    """Free text written before Escaped existed that starts with its mark (U+0001) would
    read back changed: such values (rare) are rewritten escaped. (U+0000 and lone
    surrogates need nothing: SQLite kept them as they are, PostgreSQL never had them.)"""
    for column in escaped_columns():
        if column.table.name in CREATED_AFTER_10:
            continue  # not there yet: a later step creates it, escaped from the start
        table, raw = column.table, sa.type_coerce(column, sa.Text)
        keys = list(table.primary_key.columns)
        found = await db.rows(Query(sa.select(*keys, raw).where(
            sa.func.substr(raw, 1, 1) == MARK)))
        for *key, value in found:
            await db.run(Query(sa.update(table).values(
                {column.name: sa.bindparam("value", type_=sa.Text)}).where(
                *(k == sa.bindparam(f"k{i}", type_=k.type) for i, k in enumerate(keys)))),
                value=escape_text(value), **{f"k{i}": v for i, v in enumerate(key)})


async def m011_failing_since(db: Connector) -> None:
    """batches.failing_since and batches.outage_tries (issue 25): a CRM outage retries for
    the sink's retry_for from the first failure; max_attempts counts the other tries.
    Batches already failing start their window now (NULL: their next failure sets it)."""
    await _ddl(db, AddColumn(batches.c.failing_since), AddColumn(batches.c.outage_tries))


async def m012_source_syncs(db: Connector) -> None:
    """source_syncs: a source's one-off syncs (WhatsApp coexistence history and contacts)
    and how far they got (bridge.buffer.syncs)."""
    await _ddl(db, CreateTable(source_syncs, if_not_exists=True))


async def m013_business_accounts(db: Connector) -> None:
    """A conversation is a customer and a business number (issue 26):
    - messages.account, a column (filled from the body once): a claim batches each
      customer's chat with each business number apart;
    - batches.account: the account of a batch's messages. A batch formed before keeps its
      messages and its key (what it posted is in the ledger under that key, so a retry
      finds it and posts nothing twice); when its messages are all of one account it is
      noted, else it stays NULL (mixed: delivered as it was formed, and never grows).
    """
    await _ddl(db, AddColumn(messages.c.account), AddColumn(batches.c.account))
    await db.run(Query(sa.update(messages).values(account=sa.func.coalesce(
        json_field(messages.c.body, "account"), ""))))
    d, m, b = deliveries.c, messages.c, batches.c
    accounts = (sa.select(sa.func.min(m.account)).join_from(deliveries, messages,
                                                             m.id == d.message_id)
                .where(d.batch_id == b.id).group_by(d.batch_id)
                .having(sa.func.count(sa.distinct(m.account)) == 1).scalar_subquery())
    await db.run(Query(sa.update(batches).values(account=accounts).where(b.state != "done")))


async def m014_failed_sends(db: Connector) -> None:
    """statuses_failed, partial on failed_at: the status page's failed sends and their
    count read every status row (one per outbound message: ~60 ms at 500,000) on each
    view; only failures enter the index, so an ordinary status update writes nothing more."""
    await _ddl(db, CreateIndex(_index(statuses, "statuses_failed"), if_not_exists=True))


async def m015_sink_numbers(db: Connector) -> None:
    """sink_numbers: per sink and business number, when its chats last reached the sink
    (the status's per-rep view). Empty until the next completion of each number."""
    await _ddl(db, CreateTable(sink_numbers, if_not_exists=True))


async def m016_media_lease_owner(db: Connector) -> None:
    """media.lease_owner: on a shared buffer, the process whose fetch holds a job's lease,
    so a killed one's lease is freed once the registry sees it gone (as its batches are)
    instead of after the whole lease (900 s). Leases taken before name no process: they
    run out as they did."""
    await _ddl(db, AddColumn(media.c.lease_owner))


async def m017_media_leased(db: Connector) -> None:
    """media_leased, partial on lease_owner: the heartbeat's release of a gone process's
    media leases walked every pending job to find them (PostgreSQL: a sequential scan of
    a million-job backlog every 5 s in each process); only fetches under way enter it."""
    await _ddl(db, CreateIndex(_index(media, "media_leased"), if_not_exists=True))


async def m018_target_outages(db: Connector) -> None:
    """A target's transient failures are not counted to max_attempts (an opportunity's
    outage while the lead takes posts killed the deal's copy after max_attempts syncs):
    targets.outages and targets.transient; batches.aside, so a batch whose messages are on
    the lead and only wait for other targets lets the chat's later batches pass. Rows
    stored before read as counted failures (0), as they were counted then."""
    await _ddl(db, AddColumn(targets.c.outages), AddColumn(targets.c.transient),
               AddColumn(batches.c.aside))


STEPS: dict[int, Step] = {10: m010_one_source, 11: m011_failing_since,
                          12: m012_source_syncs, 13: m013_business_accounts,
                          14: m014_failed_sends, 15: m015_sink_numbers,
                          16: m016_media_lease_owner, 17: m017_media_leased,
                          18: m018_target_outages}
VERSION = max(STEPS)


def refuse_newer(version: int, where: str) -> None:
    """SchemaError when the database is newer than this code."""
    if version > VERSION:
        raise SchemaError(
            f"the buffer database has schema version {version}, newer than this Chatbridge "
            f"understands ({VERSION}); upgrade Chatbridge or point {where} elsewhere")


async def create(db: Connector) -> None:
    """Every table and index of bridge.buffer.tables, at VERSION."""
    for table in metadata.sorted_tables:
        await _ddl(db, CreateTable(table))
        for index in sorted(table.indexes, key=lambda i: i.name or ""):
            await _ddl(db, CreateIndex(index))


async def upgrade(db: Connector, current: int) -> None:
    """Run the shared steps after `current` (at least legacy.LAST), in order; numbers
    may leave gaps (each branch of work takes its own)."""
    for number in sorted(n for n in STEPS if n > current):
        await STEPS[number](db)


# -- where each engine keeps its version ------------------------------------------------

schema_version = sa.Table("schema_version", sa.MetaData(),
                          sa.Column("version", sa.BigInteger, nullable=False))
PG_VERSION = Query(sa.select(sa.func.max(schema_version.c.version)), "schema version")
PG_HAS_VERSION = Query(sa.select(sa.func.to_regclass("schema_version").isnot(None)),
                       "schema version kept")
PG_SET_VERSION = Query(sa.update(schema_version).values(version=P("version")),
                       "set schema version")
PG_FIRST_VERSION = Query(sa.insert(schema_version).values(version=P("version")),
                         "first schema version")
PG_VERSION_TABLE = Query(CreateTable(schema_version))
MIGRATION_LOCK = "chatbridge:migrate"  # processes starting together: one migrates


async def postgres_version(db: Connector) -> int:
    """The schema version of a PostgreSQL buffer (0: no Chatbridge tables yet)."""
    if not await db.value(PG_HAS_VERSION):
        return 0
    return int(await db.value(PG_VERSION))


async def migrate_postgres(db: Connector, where: str) -> int:
    """Create or upgrade a PostgreSQL buffer, in the caller's transaction, under a lock."""
    await db.lock(MIGRATION_LOCK)
    current = await postgres_version(db)
    refuse_newer(current, where)
    if current == 0:
        await create(db)
        await db.run(PG_VERSION_TABLE)
        await db.run(PG_FIRST_VERSION, version=VERSION)
    elif current < VERSION:
        await upgrade(db, current)
        await db.run(PG_SET_VERSION, version=VERSION)
    return VERSION
