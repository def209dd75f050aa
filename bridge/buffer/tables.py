"""The buffer's schema, declared once for both engines (SQLAlchemy Core).

Each table documents its state machine here; constraints enforce what must hold. The
engines differ only where a type says so: text collates "C" (byte order) on PostgreSQL,
as SQLite compares text, so the ledger's key-prefix ranges and every ORDER BY mean the
same on both; SQLite keeps its REAL/INTEGER names (an INTEGER PRIMARY KEY is its rowid).
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator

metadata = sa.MetaData()

TEXT = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")
REAL = sa.Double().with_variant(sa.REAL(), "sqlite")
INT = sa.BigInteger().with_variant(sa.INTEGER(), "sqlite")

# A string PostgreSQL's text would refuse (U+0000), or no UTF-8 encoder takes (a lone
# surrogate, which JSON's \ud800 escapes can carry), is stored as this mark plus its JSON
# escapes; every other string as itself, so searches and ordering see plain text.
_MARK = "\x01"


def escape_text(value: str | None) -> str | None:
    """A string as a text column can hold it on both engines (see Escaped)."""
    if value is None:
        return None
    if "\x00" in value or value.startswith(_MARK) or not _encodable(value):
        return _MARK + json.dumps(value)[1:-1]
    return value


def unescape_text(value: str | None) -> str | None:
    """The string escape_text stored (a marked value that is not valid JSON escapes was
    never escaped: it is returned as it is)."""
    if value is not None and value.startswith(_MARK):
        try:
            return json.loads('"' + value[1:] + '"')
        except ValueError:
            return value
    return value


def escaped_columns() -> list[sa.Column]:
    """Every column of type Escaped (a migration re-escapes values written before it)."""
    return [c for t in metadata.sorted_tables for c in t.columns if isinstance(c.type, Escaped)]


MARK = _MARK


def _encodable(value: str) -> bool:
    if value.isascii():
        return True
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


class Escaped(TypeDecorator):
    """Free text from outside (a profile name, an API's error): any Python string,
    stored losslessly on both engines (escape_text); the connectors apply it."""

    impl = sa.Text
    cache_ok = True

    def load_dialect_impl(self, dialect: sa.Dialect) -> Any:
        return sa.Text(collation="C") if dialect.name == "postgresql" else sa.Text()

    def process_bind_param(self, value: Any, dialect: sa.Dialect) -> Any:
        return escape_text(value)

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> Any:
        return unescape_text(value)


def _table(name: str, *parts: Any, rowid: bool = False, **options: Any) -> sa.Table:
    """A table; without rowid on SQLite unless it has an integer key of its own."""
    if not rowid:
        options["sqlite_with_rowid"] = False
    return sa.Table(name, metadata, *parts, **options)


# Each partial index and its WHERE, which PostgreSQL gets from postgresql_where(), called
# when its dialect is first built (bridge.buffer.compiler.postgresql_dialect): naming
# postgresql_where in the Index made SQLAlchemy load its whole PostgreSQL dialect (~50 ms)
# in every process that imports the schema, an SQLite bridge's too.
_PARTIAL: list[tuple[sa.Index, Any]] = []


def _partial(name: str, table: sa.Table, *columns: str, where: Any) -> sa.Index:
    index = sa.Index(name, *(table.c[c] for c in columns), sqlite_where=where)
    _PARTIAL.append((index, where))
    return index


def postgresql_where() -> None:
    """Every partial index's WHERE for PostgreSQL too, as for SQLite (idempotent)."""
    for index, where in _PARTIAL:
        index.dialect_kwargs["postgresql_where"] = where


# One row per provider message. UNIQUE (source, provider_id) makes webhook retries,
# replays and backfill overlaps store once. body: the rest of the neutral Message as JSON
# text with its escapes kept (bridge.buffer.codec), so U+0000 and lone surrogates survive;
# SQL never looks inside it. direction: 'in' or 'out' (the hourly chart's index).
# account: the business number the customer wrote to or was written from (its provider
# id): a claim batches a customer's chat with each business number apart (schema 13).
messages = _table(
    "messages",
    sa.Column("id", INT, sa.Identity(), primary_key=True),  # monotonic
    sa.Column("source", TEXT, nullable=False),
    sa.Column("provider_id", TEXT, nullable=False),
    sa.Column("conversation", TEXT, nullable=False),
    sa.Column("sent_at", REAL, nullable=False),  # unix seconds, UTC
    sa.Column("stored_at", REAL, nullable=False),
    sa.Column("body", TEXT, nullable=False),
    sa.Column("direction", TEXT, nullable=False, server_default="in"),
    sa.Column("account", TEXT, nullable=False, server_default=""),
    sa.UniqueConstraint("source", "provider_id"),
    rowid=True, sqlite_autoincrement=True)
sa.Index("messages_conversation", messages.c.conversation)
sa.Index("messages_sent", messages.c.sent_at)
_partial("messages_out", messages, "sent_at", where=messages.c.direction == "out")

# Customers as sinks and the status view see them. kind: 'person' or 'group'.
conversations = _table(
    "conversations",
    sa.Column("key", TEXT, primary_key=True),
    sa.Column("contact_name", Escaped),
    sa.Column("account", TEXT),
    sa.Column("last_message_at", REAL),
    sa.Column("message_count", INT, nullable=False, server_default=sa.text("0")),
    sa.Column("kind", TEXT, nullable=False, server_default="person"),
    sa.Column("phone", TEXT),
    sa.Column("bsuid", TEXT),
    sa.Column("parent_bsuid", TEXT),
    sa.Column("username", TEXT),
    sa.Column("group_id", TEXT))
sa.Index("conversations_recent", conversations.c.last_message_at)
_partial("conversations_kind", conversations, "kind", "last_message_at",
         where=conversations.c.kind != "person")

# Per sink, per message delivery state (fan-out: every enabled sink gets a row).
#   pending  -> done     the sink delivered it (done_at set)
#   pending  -> skipped  a filter dropped it for this sink
#   pending  -> dead     rejected, or out of attempts; reason says why; requeue -> pending
# batch_id is NULL until a claim groups the message into a batch of its conversation.
deliveries = _table(
    "deliveries",
    sa.Column("sink", TEXT, primary_key=True),
    sa.Column("message_id", INT, primary_key=True),
    sa.Column("state", TEXT, nullable=False, server_default="pending"),
    sa.Column("batch_id", INT),
    sa.Column("backfill", INT, nullable=False, server_default=sa.text("0")),
    sa.Column("reason", Escaped),
    sa.Column("done_at", REAL),
    sa.CheckConstraint("state IN ('pending', 'done', 'skipped', 'dead')"),
    sa.CheckConstraint("state != 'dead' OR (reason IS NOT NULL AND done_at IS NOT NULL)"))
# backfill after batch_id: a claim reads unbatched rows in (backfill, message_id) order
# from the index and stops at its limit
_partial("deliveries_pending", deliveries, "sink", "batch_id", "backfill",
         where=deliveries.c.state == "pending")
_partial("deliveries_dead", deliveries, "sink", where=deliveries.c.state == "dead")
_partial("deliveries_backfill", deliveries, "sink", "state", where=deliveries.c.backfill == 1)

# A batch: pending messages of one conversation with one business account, fixed when
# first formed, so a retry re-sends the same messages under the same key (made from its
# content). account NULL: formed before schema 13, when a batch held every account's
# messages of the customer; such a batch keeps its messages and key.
#   ready  -> leased  claimed (attempts + 1, lease_token, lease_until)
#   leased -> ready   retry/held outcome, or lease expired (uncertain = 1)
#   leased -> done    no pending message left
# released_at: when last put back (a claim reading an earlier clock moves the wait back);
# not_before: the earliest retry the sink asked for ("sync now" never hurries it).
# failing_since: when its first failed try was recorded (transient failures retry until
# the sink's retry_for has passed since); outage_tries: tries that failed only
# transiently (max_attempts counts attempts less these). Both start again when a dead
# target re-opens the batch. aside: every message it waits with is in the CRM's main
# record, only other targets wait (Outcome.aside): the conversation's later batches may
# pass it while it is ready (schema 18).
batches = _table(
    "batches",
    sa.Column("id", INT, sa.Identity(), primary_key=True),
    sa.Column("sink", TEXT, nullable=False),
    sa.Column("conversation", TEXT, nullable=False),
    sa.Column("key", TEXT, nullable=False),
    sa.Column("state", TEXT, nullable=False, server_default="ready"),
    sa.Column("attempts", INT, nullable=False, server_default=sa.text("0")),
    sa.Column("next_attempt_at", REAL, nullable=False, server_default=sa.text("0")),
    sa.Column("lease_token", TEXT),
    sa.Column("lease_until", REAL),
    sa.Column("uncertain", INT, nullable=False, server_default=sa.text("0")),
    sa.Column("held", INT, nullable=False, server_default=sa.text("0")),
    sa.Column("last_error", Escaped),
    sa.Column("created_at", REAL, nullable=False),
    sa.Column("backfill", INT, nullable=False, server_default=sa.text("0")),
    sa.Column("released_at", REAL),
    sa.Column("not_before", REAL),
    sa.Column("failing_since", REAL),
    sa.Column("outage_tries", INT, nullable=False, server_default=sa.text("0")),
    sa.Column("account", TEXT),
    sa.Column("aside", INT, nullable=False, server_default=sa.text("0")),
    sa.CheckConstraint("state IN ('ready', 'leased', 'done')"),
    sa.CheckConstraint(
        "(state = 'leased') = (lease_token IS NOT NULL AND lease_until IS NOT NULL)"),
    rowid=True)
_partial("batches_ready", batches, "sink", "next_attempt_at", where=batches.c.state == "ready")
_partial("batches_leased", batches, "sink", "lease_until", where=batches.c.state == "leased")
# an older unfinished batch of the same conversation goes first
_partial("batches_open", batches, "sink", "conversation", "id", where=batches.c.state != "done")
sa.Index("batches_conversation", batches.c.conversation)

# What a sink posted: idempotency key -> CRM object id, written with the ack.
ledger = _table(
    "ledger",
    sa.Column("sink", TEXT, primary_key=True),
    sa.Column("key", TEXT, primary_key=True),
    sa.Column("external_id", TEXT, nullable=False),
    sa.Column("created_at", REAL, nullable=False))

sink_state = _table(
    "sink_state",
    sa.Column("sink", TEXT, primary_key=True),
    sa.Column("installed_at", REAL, nullable=False),
    sa.Column("enabled", INT, nullable=False, server_default=sa.text("1")),
    sa.Column("disabled_at", REAL),
    sa.Column("last_sync_at", REAL),
    sa.Column("next_sync_at", REAL),
    sa.Column("last_error", Escaped),
    sa.Column("last_error_at", REAL),
    sa.Column("backfill_since", REAL),
    sa.Column("backfill_done_at", REAL),
    sa.Column("backfill_total", INT),
    sa.Column("backfill_started_at", REAL))

# Per sink, per conversation: the CRM record it maps to and when it was last synced.
sink_conversations = _table(
    "sink_conversations",
    sa.Column("sink", TEXT, primary_key=True),
    sa.Column("conversation", TEXT, primary_key=True),
    sa.Column("record_id", TEXT),
    sa.Column("last_synced_at", REAL),
    sa.Column("last_error", Escaped),
    sa.Column("held_reason", Escaped))
sa.Index("sink_conversations_synced", sink_conversations.c.sink,
         sink_conversations.c.last_synced_at)
_partial("sink_conversations_held", sink_conversations, "sink",
         where=sink_conversations.c.held_reason.isnot(None))

# Delivery status of outbound messages: status only moves up sent < delivered < read <
# played (rank); failed is recorded apart (failed_at) and never erases progress.
statuses = _table(
    "statuses",
    sa.Column("source", TEXT, primary_key=True),
    sa.Column("provider_id", TEXT, primary_key=True),
    sa.Column("status", TEXT),
    sa.Column("rank", INT, nullable=False, server_default=sa.text("0")),
    sa.Column("at", REAL),
    sa.Column("recipient", TEXT),
    sa.Column("failed_at", REAL),
    sa.Column("errors", TEXT))  # Meta's errors as JSON text (ASCII escapes)
# the failed sends, newest first, and their count (the status page, needs attention): the
# table holds a row per outbound message; only failures enter the index (schema 14)
_partial("statuses_failed", statuses, "failed_at", where=statuses.c.failed_at.isnot(None))

heartbeat = _table(
    "heartbeat",
    sa.Column("id", INT, primary_key=True, autoincrement=False),
    sa.Column("at", REAL, nullable=False),
    sa.CheckConstraint("id = 1"), rowid=True)

# The contact map: every phone (E.164) and BSUID a webhook showed, and the conversation
# key of the person it belongs to (a phone when one is known).
identities = _table(
    "identities",
    sa.Column("key", TEXT, primary_key=True),  # '+919876543210' or a BSUID
    sa.Column("person", TEXT, nullable=False),  # conversations.key of the person
    sa.Column("seen_at", REAL, nullable=False))  # first seen: the oldest wins a merge
sa.Index("identities_person", identities.c.person)

# Delivery targets: a post that landed is in the ledger; one that failed is here, with its
# own attempts, last error and dead letter. outages: of the attempts, those that failed only
# transiently (not counted to max_attempts; schema 18); transient: whether the last did.
#   failing -> dead     refused, or out of attempts (reason says why)
#   failing -> (gone)   it landed later: the ledger has it
#   dead    -> (gone)   requeued: its messages and batch are re-opened, the target retried
targets = _table(
    "targets",
    sa.Column("sink", TEXT, primary_key=True),
    sa.Column("key", TEXT, primary_key=True),  # the post's idempotency key
    sa.Column("label", Escaped, nullable=False),  # the target as a person reads it
    sa.Column("batch_id", INT, nullable=False),
    sa.Column("message_ids", TEXT, nullable=False),  # ",12,13,"
    sa.Column("state", TEXT, nullable=False),
    sa.Column("attempts", INT, nullable=False),
    sa.Column("reason", Escaped, nullable=False),
    sa.Column("updated_at", REAL, nullable=False),
    sa.Column("outages", INT, nullable=False, server_default=sa.text("0")),
    sa.Column("transient", INT, nullable=False, server_default=sa.text("0")),
    sa.CheckConstraint("state IN ('failing', 'dead')"))
_partial("targets_dead", targets, "sink", "updated_at", where=targets.c.state == "dead")

# Media: one fetch job per media message of a source that fetches media.
#   pending -> fetched  stored as its sha256 (path, size, sha256)
#   pending -> pending  a failed try: attempts + 1, next_attempt_at backs off
#   pending -> dead     gone at the provider, or out of attempts (reason)
#   held                the source will not fetch (reason); pending again when one can
#                       (a buffer of one process: on a shared one a process that cannot
#                       fetch queues jobs pending, with its reason, and holds none)
# lease_until: a fetch in progress (a killed one is taken again once it passes);
# lease_owner: on a shared buffer, the process fetching it (its id in the registry, as a
# batch's lease_token starts with it): a gone one's lease is freed (release_dead_leases).
media = _table(
    "media",
    sa.Column("message_id", INT, primary_key=True, autoincrement=False),
    sa.Column("source", TEXT, nullable=False),
    sa.Column("media_id", TEXT, nullable=False),
    sa.Column("expected_sha256", TEXT),  # as the webhook sent it (opaque)
    sa.Column("mime_type", TEXT),
    sa.Column("state", TEXT, nullable=False, server_default="pending"),
    sa.Column("attempts", INT, nullable=False, server_default=sa.text("0")),
    sa.Column("next_attempt_at", REAL, nullable=False, server_default=sa.text("0")),
    sa.Column("lease_until", REAL),
    sa.Column("reason", Escaped),
    sa.Column("path", TEXT),
    sa.Column("size", INT),
    sa.Column("sha256", TEXT),
    sa.Column("updated_at", REAL, nullable=False),
    sa.Column("lease_owner", TEXT),  # added by schema version 16
    sa.CheckConstraint("state IN ('pending', 'fetched', 'dead', 'held')"),
    sa.CheckConstraint("state != 'fetched' OR (path IS NOT NULL AND sha256 IS NOT NULL)"),
    sa.CheckConstraint("state NOT IN ('dead', 'held') OR reason IS NOT NULL"),
    rowid=True)
_partial("media_due", media, "source", "next_attempt_at", where=media.c.state == "pending")
_partial("media_sha256", media, "sha256", where=media.c.sha256.isnot(None))
# the registry's heartbeat frees a gone process's media leases (shared.RELEASE_DEAD_MEDIA):
# it finds them here, not by walking every pending job (a backlog of a million: ~0.35 s a
# heartbeat, each process); only a fetch under way has an owner (schema 17)
_partial("media_leased", media, "lease_owner", where=media.c.lease_owner.isnot(None))

# A sink's copy of its CRM's record directory: phone key -> record. generation marks the
# rows a full fill saw, so a fill drops records that vanished.
directory = _table(
    "directory",
    sa.Column("sink", TEXT, primary_key=True),
    sa.Column("key", TEXT, primary_key=True),
    sa.Column("record_id", TEXT, primary_key=True),
    sa.Column("name", Escaped),
    sa.Column("generation", INT, nullable=False))
sa.Index("directory_record", directory.c.sink, directory.c.record_id)
directory_state = _table(
    "directory_state",
    sa.Column("sink", TEXT, primary_key=True),
    sa.Column("enabled", INT, nullable=False),  # 0: too large (auto) or off
    sa.Column("generation", INT, nullable=False),
    sa.Column("filled_at", REAL),
    sa.Column("refreshed_at", REAL),
    sa.Column("watermark", TEXT),  # ToDate of the last refresh (CRM time, UTC)
    sa.Column("records", INT))
# Numbers that matched no record: not searched again before checked_at + recheck.
unknown_numbers = _table(
    "unknown_numbers",
    sa.Column("sink", TEXT, primary_key=True),
    sa.Column("number", TEXT, primary_key=True),
    sa.Column("checked_at", REAL, nullable=False))

# -- what several processes on one buffer share (used on PostgreSQL; portable types) ----

# One CRM budget per sink and budget name: the starts of its last calls (JSON array of
# epoch seconds, server clock) and a pause nobody starts a call before.
rate_budgets = _table(
    "rate_budgets",
    sa.Column("sink", TEXT, primary_key=True),
    sa.Column("budget", TEXT, primary_key=True),
    sa.Column("starts", TEXT, nullable=False, server_default="[]"),
    sa.Column("paused_until", REAL, nullable=False, server_default=sa.text("0")))

# The process registry: one row per running process (a uuid per start), its heartbeat,
# the sinks it runs (JSON array) and when it last delivered to each (JSON object).
processes = _table(
    "processes",
    sa.Column("id", TEXT, primary_key=True),
    sa.Column("hostname", TEXT, nullable=False),
    sa.Column("pid", INT, nullable=False),
    sa.Column("version", TEXT, nullable=False),
    sa.Column("started_at", REAL, nullable=False),
    sa.Column("heartbeat_at", REAL, nullable=False),
    sa.Column("sinks", TEXT, nullable=False, server_default="[]"),
    sa.Column("drained", TEXT, nullable=False, server_default="{}"))

# `bridge buffer migrate`: the SQLite file a PostgreSQL buffer was copied from.
buffer_imports = _table(
    "buffer_imports",
    sa.Column("source", TEXT, primary_key=True),
    sa.Column("started_at", REAL, nullable=False),
    sa.Column("finished_at", REAL))

# A one-off sync a source asked its provider for, per business account and kind (WhatsApp
# coexistence: `history` and `contacts`, requested once within 24 hours of onboarding).
# state: requested -> arriving -> done, or declined / failed (detail says why). progress:
# the provider's 0-100; phase: the latest phase seen; chunks: JSON array of "phase:order"
# seen (chunks arrive out of order and may be retried); messages: new messages they held.
# Per sink, per business number (phone_number_id; a rep's number): when a chat of it last
# reached the sink (the status's per-number view; written with each completion).
sink_numbers = _table(
    "sink_numbers",
    sa.Column("sink", TEXT, primary_key=True),
    sa.Column("account", TEXT, primary_key=True),
    sa.Column("last_synced_at", REAL, nullable=False))

source_syncs = _table(
    "source_syncs",
    sa.Column("source", TEXT, primary_key=True),
    sa.Column("account", TEXT, primary_key=True),
    sa.Column("kind", TEXT, primary_key=True),
    sa.Column("state", TEXT, nullable=False),
    sa.Column("requested_at", REAL),
    sa.Column("request_id", Escaped),
    sa.Column("progress", INT),
    sa.Column("phase", INT),
    sa.Column("chunks", TEXT, nullable=False, server_default="[]"),
    sa.Column("messages", INT, nullable=False, server_default=sa.text("0")),
    sa.Column("detail", Escaped),
    sa.Column("updated_at", REAL, nullable=False))
