"""SQLite buffers made before the schema had one source for both engines (versions 1-9).

Frozen history: a file at an older version walks these steps to 9, then the shared steps
of bridge.buffer.migrations. PostgreSQL buffers started at 9 and never need them. The
comments say why each step was taken; bridge.buffer.tables is the schema today.
"""

from __future__ import annotations

M001_INITIAL = """
-- One row per provider message. UNIQUE (source, provider_id) makes webhook retries,
-- replays and backfill overlaps store once. body: the rest of the neutral Message, JSON.
CREATE TABLE messages (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,  -- monotonic: append finds its new rows by id
    source       TEXT NOT NULL,
    provider_id  TEXT NOT NULL,
    conversation TEXT NOT NULL,
    sent_at      REAL NOT NULL,                      -- unix seconds, UTC
    stored_at    REAL NOT NULL,
    body         TEXT NOT NULL,
    UNIQUE (source, provider_id)
);

-- Customers as sinks and the status view see them.
CREATE TABLE conversations (
    key             TEXT PRIMARY KEY,
    contact_name    TEXT,
    account         TEXT,
    last_message_at REAL,
    message_count   INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

-- Per sink, per message delivery state (fan-out: every enabled sink gets a row).
--   pending  -> done     the sink delivered it (done_at set)
--   pending  -> skipped  a filter dropped it for this sink
--   pending  -> dead     rejected, or out of attempts; reason says why; requeue -> pending
-- batch_id is NULL until a claim groups the message into a batch of its conversation.
CREATE TABLE deliveries (
    sink       TEXT NOT NULL,
    message_id INTEGER NOT NULL,
    state      TEXT NOT NULL DEFAULT 'pending'
               CHECK (state IN ('pending', 'done', 'skipped', 'dead')),
    batch_id   INTEGER,
    backfill   INTEGER NOT NULL DEFAULT 0,
    reason     TEXT,
    done_at    REAL,
    PRIMARY KEY (sink, message_id),
    CHECK (state != 'dead' OR (reason IS NOT NULL AND done_at IS NOT NULL))  -- a reason to act on
) WITHOUT ROWID;
CREATE INDEX deliveries_pending ON deliveries (sink, batch_id) WHERE state = 'pending';
CREATE INDEX deliveries_dead ON deliveries (sink) WHERE state = 'dead';

-- A batch: pending messages of one conversation, fixed when first claimed, so that a
-- retry re-sends the same messages under the same key.
--   ready  -> leased  claimed (attempts + 1, lease_token, lease_until)
--   leased -> ready   retry/held outcome, or lease expired (uncertain = 1)
--   leased -> done    no pending message left
CREATE TABLE batches (
    id              INTEGER PRIMARY KEY,
    sink            TEXT NOT NULL,
    conversation    TEXT NOT NULL,
    key             TEXT NOT NULL,  -- from content: a requeued set gets its old key back
    state           TEXT NOT NULL DEFAULT 'ready' CHECK (state IN ('ready', 'leased', 'done')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    lease_token     TEXT,
    lease_until     REAL,
    uncertain       INTEGER NOT NULL DEFAULT 0,
    held            INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    created_at      REAL NOT NULL,
    CHECK ((state = 'leased') = (lease_token IS NOT NULL AND lease_until IS NOT NULL))
);
CREATE INDEX batches_ready ON batches (sink, next_attempt_at) WHERE state = 'ready';
CREATE INDEX batches_leased ON batches (sink, lease_until) WHERE state = 'leased';

-- What a sink posted: idempotency key -> CRM object id, written with the ack.
CREATE TABLE ledger (
    sink        TEXT NOT NULL,
    key         TEXT NOT NULL,
    external_id TEXT NOT NULL,
    created_at  REAL NOT NULL,
    PRIMARY KEY (sink, key)
) WITHOUT ROWID;

CREATE TABLE sink_state (
    sink             TEXT PRIMARY KEY,
    installed_at     REAL NOT NULL,
    enabled          INTEGER NOT NULL DEFAULT 1,
    disabled_at      REAL,
    last_sync_at     REAL,
    next_sync_at     REAL,
    last_error       TEXT,
    last_error_at    REAL,
    backfill_since   REAL,
    backfill_done_at REAL,
    backfill_total   INTEGER
) WITHOUT ROWID;

-- Per sink, per conversation: the CRM record it maps to and when it was last synced.
CREATE TABLE sink_conversations (
    sink           TEXT NOT NULL,
    conversation   TEXT NOT NULL,
    record_id      TEXT,
    last_synced_at REAL,
    last_error     TEXT,
    held_reason    TEXT,
    PRIMARY KEY (sink, conversation)
) WITHOUT ROWID;

-- Delivery status of outbound messages: status only moves up sent < delivered < read <
-- played (rank); failed is recorded apart (failed_at) and never erases progress.
CREATE TABLE statuses (
    source      TEXT NOT NULL,
    provider_id TEXT NOT NULL,
    status      TEXT,
    rank        INTEGER NOT NULL DEFAULT 0,
    at          REAL,
    recipient   TEXT,
    failed_at   REAL,
    errors      TEXT,
    PRIMARY KEY (source, provider_id)
) WITHOUT ROWID;

CREATE TABLE heartbeat (id INTEGER PRIMARY KEY CHECK (id = 1), at REAL NOT NULL);
"""

# Backfill pacing: a batch holds live messages or backfill messages, never both, so the
# runner can give backfill only its share of the sink's budget.
M002_BACKFILL_BATCHES = """
ALTER TABLE batches ADD COLUMN backfill INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sink_state ADD COLUMN backfill_started_at REAL;
CREATE INDEX deliveries_backfill ON deliveries (sink, state) WHERE backfill = 1;
-- the status view counts a conversation's messages per sink
CREATE INDEX messages_conversation ON messages (conversation);
"""

# A claim reads the oldest unbatched pending rows ORDER BY backfill, message_id. On
# (sink, batch_id) that joined and sorted every pending row: ~0.5 s per claim at 1M
# pending, all of it holding the writer (so webhook acks). With backfill after batch_id
# the rows come out of the index in that order and the claim stops at its limit (< 1 ms).
M003_PENDING_IN_CLAIM_ORDER = """
DROP INDEX deliveries_pending;
CREATE INDEX deliveries_pending ON deliveries (sink, batch_id, backfill) WHERE state = 'pending';
"""

# Retry timing that survives wall-clock steps, and per-conversation order:
#   released_at  when the batch was last put back to wait (its clock reading): a claim
#                that reads an earlier time knows the clock went back, and moves the
#                wait back by as much (an hour's step no longer adds an hour's wait)
#   not_before   the earliest retry a sink asked for (Outcome.not_before): "sync now"
#                hurries other waits, never this one (e.g. a write that may still commit)
# batches_open finds an older unfinished batch of the same conversation, which goes first.
M004_RETRY_CLOCK_AND_ORDER = """
ALTER TABLE batches ADD COLUMN released_at REAL;
ALTER TABLE batches ADD COLUMN not_before REAL;
CREATE INDEX batches_open ON batches (sink, conversation, id) WHERE state != 'done';
"""

# The status page at scale (100,000 conversations, 1M messages): each list order and filter
# reads an index and stops at its page instead of sorting every conversation.
#   kind            'person' or 'group' (a group chat is its own conversation); appends set
#                   it from Message.extra["conversation_kind"]
#   messages_sent, messages_out  the in/out per hour chart counts all and outbound messages
#                   per hour from these indexes alone (SQLite 3.40 reads the table for an
#                   indexed expression, so a (sent_at, direction) index would not do)
M005_STATUS_PAGE_AT_SCALE = """
ALTER TABLE conversations ADD COLUMN kind TEXT NOT NULL DEFAULT 'person';
CREATE INDEX conversations_recent ON conversations (last_message_at);
CREATE INDEX conversations_kind ON conversations (kind, last_message_at) WHERE kind != 'person';
CREATE INDEX sink_conversations_synced ON sink_conversations (sink, last_synced_at);
CREATE INDEX sink_conversations_held ON sink_conversations (sink) WHERE held_reason IS NOT NULL;
CREATE INDEX messages_sent ON messages (sent_at);
CREATE INDEX messages_out ON messages (sent_at) WHERE json_extract(body, '$.direction') = 'out';
"""

# The contact map (issue 16): every phone number (E.164) and BSUID a webhook showed,
# and the conversation key of the person it belongs to (a phone when one is known).
# conversations gains what the map knows of its person, and group_id for group chats.
M006_IDENTITIES = """
CREATE TABLE identities (
    key     TEXT PRIMARY KEY,   -- '+919876543210' or a BSUID ('US.1349…', 'US.ENT.…')
    person  TEXT NOT NULL,      -- conversations.key of the person
    seen_at REAL NOT NULL       -- first seen: the oldest conversation wins a merge
) WITHOUT ROWID;
CREATE INDEX identities_person ON identities (person);
CREATE INDEX batches_conversation ON batches (conversation);
ALTER TABLE conversations ADD COLUMN phone TEXT;
ALTER TABLE conversations ADD COLUMN bsuid TEXT;
ALTER TABLE conversations ADD COLUMN parent_bsuid TEXT;
ALTER TABLE conversations ADD COLUMN username TEXT;
ALTER TABLE conversations ADD COLUMN group_id TEXT;
"""

# Delivery targets: a sink may post one message to several targets (a CRM lead and each of
# its opportunities), each under its own idempotency key. A post that landed is in the
# ledger; one that failed is here, with its own attempts, last error and dead letter, so a
# failing target never holds back or dead-letters the message's other targets.
#   failing -> dead     refused, or out of attempts (reason says why)
#   failing -> (gone)   it landed later: the ledger has it
#   dead    -> (gone)   requeued: its messages and batch are re-opened, the target retried
# A message's delivery is done once each of its targets is in the ledger or dead here.
M007_TARGETS = """
CREATE TABLE targets (
    sink        TEXT NOT NULL,
    key         TEXT NOT NULL,    -- the post's idempotency key (starts with the batch key)
    label       TEXT NOT NULL,    -- the target as a person reads it
    batch_id    INTEGER NOT NULL,
    message_ids TEXT NOT NULL,    -- ",12,13," (the messages the post covers)
    state       TEXT NOT NULL CHECK (state IN ('failing', 'dead')),
    attempts    INTEGER NOT NULL,
    reason      TEXT NOT NULL,
    updated_at  REAL NOT NULL,
    PRIMARY KEY (sink, key)
) WITHOUT ROWID;
CREATE INDEX targets_dead ON targets (sink, updated_at) WHERE state = 'dead';
"""

# Media (issue 17): one fetch job per media message of a source that fetches media,
# inserted in the commit that stores the message.
#   pending -> fetched  stored under buffer.media_path as its sha256 (path, size, sha256)
#   pending -> pending  a failed try: attempts + 1, next_attempt_at backs off, reason says why
#   pending -> dead     the provider says it is gone, or out of attempts (reason)
#   held                the source will not fetch (e.g. no access token): reason says why;
#                       back to pending when a runner that can fetch starts
# lease_until: a fetch in progress (a killed one is taken again once it passes).
M008_MEDIA = """
CREATE TABLE media (
    message_id      INTEGER PRIMARY KEY,
    source          TEXT NOT NULL,
    media_id        TEXT NOT NULL,
    expected_sha256 TEXT,              -- as the webhook sent it (opaque: hex or base64)
    mime_type       TEXT,
    state           TEXT NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'fetched', 'dead', 'held')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    lease_until     REAL,
    reason          TEXT,
    path            TEXT,
    size            INTEGER,
    sha256          TEXT,
    updated_at      REAL NOT NULL,
    CHECK (state != 'fetched' OR (path IS NOT NULL AND sha256 IS NOT NULL)),
    CHECK (state NOT IN ('dead', 'held') OR reason IS NOT NULL)
);
CREATE INDEX media_due ON media (source, next_attempt_at) WHERE state = 'pending';
CREATE INDEX media_sha256 ON media (sha256) WHERE sha256 IS NOT NULL;
"""

# A sink's local copy of its CRM's record directory (issue 15): phone key -> record, so a
# chat finds its lead without a remote lookup. key: E.164 ("+9198...") or "nsn:<digits>"
# for a number stored without a country code. generation marks the rows a full fill saw,
# so a fill drops the records that vanished (deleted, merged).
M009_DIRECTORY = """
CREATE TABLE directory (
    sink       TEXT NOT NULL,
    key        TEXT NOT NULL,
    record_id  TEXT NOT NULL,
    name       TEXT,
    generation INTEGER NOT NULL,
    PRIMARY KEY (sink, key, record_id)
) WITHOUT ROWID;
CREATE INDEX directory_record ON directory (sink, record_id);
CREATE TABLE directory_state (
    sink         TEXT PRIMARY KEY,
    enabled      INTEGER NOT NULL,      -- 0: the account is too large (auto) or it is off
    generation   INTEGER NOT NULL,
    filled_at    REAL,                  -- last full fill finished
    refreshed_at REAL,                  -- last refresh (full or incremental) finished
    watermark    TEXT,                  -- ToDate of the last refresh (CRM time, UTC)
    records      INTEGER                -- the account's record count at the last fill
) WITHOUT ROWID;
-- Numbers that matched no record: not searched again before checked_at + unknown_recheck
-- or the directory's next refresh.
CREATE TABLE unknown_numbers (
    sink       TEXT NOT NULL,
    number     TEXT NOT NULL,
    checked_at REAL NOT NULL,
    PRIMARY KEY (sink, number)
) WITHOUT ROWID;
"""

STEPS: list[str] = [M001_INITIAL, M002_BACKFILL_BATCHES, M003_PENDING_IN_CLAIM_ORDER,
                     M004_RETRY_CLOCK_AND_ORDER, M005_STATUS_PAGE_AT_SCALE, M006_IDENTITIES,
                     M007_TARGETS, M008_MEDIA, M009_DIRECTORY]
LAST = len(STEPS)  # 9: where the shared migrations take over


def step(number: int) -> str:
    """The script taking a file from version number - 1 to number, in one transaction."""
    return (f"BEGIN IMMEDIATE;\n{STEPS[number - 1]}\n"
            f"PRAGMA user_version = {int(number)};\nCOMMIT;")
