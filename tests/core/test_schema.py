"""One schema on both engines, and buffers made by the code before it upgrade in place.

The catalogue of each engine (tables, columns, types, defaults, keys, indexes with their
predicates, constraints) is read back and compared: a fresh SQLite file, a fresh
PostgreSQL schema, and buffers of both engines created by the last release before the
schema had one source (schema version 9), each opened by this code."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import tarfile
from io import BytesIO
from pathlib import Path

import asyncpg
import pytest

from bridge.buffer import Buffer, Policy
from bridge.buffer.migrations import VERSION
from bridge.buffer.postgres import split_schema
from bridge.contracts import Outcome
from tests.backends import POSTGRES, fresh_schema_url, needs_postgres, rows

ROOT = Path(__file__).resolve().parents[2]
# The last commit whose buffer had two hand-kept schemas (version 9 on both engines).
BEFORE = "4909cbafdf235b1abd44588054abd19f935f83fc"
_TYPES = {"integer": "int", "bigint": "int", "real": "real", "double precision": "real",
          "text": "text"}


def _norm(sql: str | None) -> str | None:
    """An expression as both catalogues can be compared: no casts, quotes, parentheses."""
    if sql is None:
        return None
    sql = re.sub(r"::(double precision|\w+)(\[\])?", "", sql).replace("<>", "!=")
    sql = re.sub(r"[()\"]", "", sql).replace("ANY ARRAY[", "IN [").lower()
    return " ".join(sql.split())


def sqlite_catalogue(path: Path) -> dict:
    with sqlite3.connect(path) as db:
        tables = [r[0] for r in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
        found = {}
        for table in sorted(tables):
            columns = {name: (_TYPES[kind.lower()], bool(notnull or pk), _norm(default), pk)
                       for _, name, kind, notnull, default, pk
                       in db.execute(f"PRAGMA table_info({table})")}
            indexes = {}
            for _, name, unique, origin, partial in db.execute(f"PRAGMA index_list({table})"):
                cols = [r[2] for r in db.execute(f"PRAGMA index_info({name})")]
                if origin == "pk":
                    continue
                sql = db.execute("SELECT sql FROM sqlite_master WHERE name = ?",
                                 (name,)).fetchone()[0]
                where = sql.split(" WHERE ", 1)[1] if sql and partial else None
                key = name if origin == "c" else f"unique {','.join(cols)}"
                indexes[key] = (tuple(cols), bool(unique), _norm(where))
            create = db.execute("SELECT sql FROM sqlite_master WHERE name = ?",
                                (table,)).fetchone()[0]
            found[table] = {"columns": columns, "indexes": indexes,
                            "checks": create.upper().count("CHECK (")}
    return found


async def postgres_catalogue(url: str) -> dict:
    dsn, schema = split_schema(url)
    conn = await asyncpg.connect(dsn)
    try:
        found: dict = {}
        for table, name, kind, nullable, default, _identity in await conn.fetch(
                "SELECT table_name, column_name, data_type, is_nullable, column_default,"
                " is_identity FROM information_schema.columns WHERE table_schema = $1",
                schema):
            if table == "schema_version":
                continue
            found.setdefault(table, {"columns": {}, "indexes": {}, "checks": 0})
            found[table]["columns"][name] = [_TYPES[kind], nullable == "NO", _norm(default), 0]
        for table, columns in (await conn.fetch(
                "SELECT t.relname, array_agg(a.attname ORDER BY k.n)"
                " FROM pg_constraint c CROSS JOIN unnest(c.conkey) WITH ORDINALITY k(attnum, n)"
                " JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum"
                " JOIN pg_class t ON t.oid = c.conrelid"
                " WHERE c.contype = 'p' AND c.connamespace = $1::regnamespace"
                " GROUP BY t.relname, c.oid", schema)):
            for position, column in enumerate(columns, start=1):
                found[table]["columns"][column][3] = position
        for table, name, definition, unique, primary in await conn.fetch(
                "SELECT t.relname, i.relname, pg_get_indexdef(i.oid), x.indisunique,"
                " x.indisprimary FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid"
                " JOIN pg_class t ON t.oid = x.indrelid WHERE t.relnamespace = $1::regnamespace",
                schema):
            if primary or table == "schema_version":
                continue
            cols = re.search(r"\((.*?)\)( WHERE|$)", definition)[1]
            cols = tuple(c.strip().split(" ")[0].strip('"') for c in cols.split(","))
            where = definition.split(" WHERE ", 1)[1] if " WHERE " in definition else None
            key = f"unique {','.join(cols)}" if unique and name.endswith("_key") else name
            found[table]["indexes"][key] = (cols, unique, _norm(where))
        for (table,) in await conn.fetch(
                "SELECT t.relname FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid"
                " WHERE c.contype = 'c' AND c.connamespace = $1::regnamespace", schema):
            found[table]["checks"] += 1
        for entry in found.values():
            entry["columns"] = {k: tuple(v) for k, v in entry["columns"].items()}
        return dict(sorted(found.items()))
    finally:
        await conn.close()


def _comparable(catalogue: dict) -> dict:
    """Defaults of identity columns differ by nature (a sequence vs the rowid)."""
    out = {}
    for table, entry in catalogue.items():
        columns = {name: (kind, notnull, None if name == "id" else default, pk)
                   for name, (kind, notnull, default, pk) in entry["columns"].items()}
        out[table] = {**entry, "columns": columns}
    return out


async def _fresh_sqlite(tmp_path: Path) -> dict:
    buffer = await Buffer.open(tmp_path / "fresh.db")
    await buffer.close()
    return _comparable(sqlite_catalogue(tmp_path / "fresh.db"))


async def _fresh_postgres() -> dict:
    """The catalogue of a new PostgreSQL buffer (in a schema of its own, dropped after):
    what an upgraded one must equal."""
    async with fresh_schema_url() as url:
        fresh = await Buffer.open(url)
        await fresh.close()
        return _comparable(await postgres_catalogue(url))


@needs_postgres
async def test_both_engines_have_the_same_schema(tmp_path):
    lite = await _fresh_sqlite(tmp_path)
    async with fresh_schema_url() as url:
        buffer = await Buffer.open(url)
        await buffer.close()
        pg = _comparable(await postgres_catalogue(url))
    assert "messages" in lite and "rate_budgets" in lite and "processes" in lite
    assert lite["deliveries"]["indexes"]["deliveries_pending"] == (
        ("sink", "batch_id", "backfill"), False, "state = 'pending'")
    assert sorted(pg) == sorted(lite)
    for table in lite:
        assert pg[table] == lite[table], table


# -- buffers made by the code before ---------------------------------------------------------

OLD_SCRIPT = """
import asyncio, sys
from datetime import UTC, datetime
from bridge.buffer import Buffer, Policy
from bridge.contracts import Outcome
from bridge.model import Direction, Identity, Media, Message

def message(i, **more):
    return Message(source="whatsapp", provider_id=f"m{i}",
                   conversation=f"+91900000000{i % 3}", account="acc",
                   direction=Direction.OUT if i == 4 else Direction.IN,
                   sent_at=datetime.fromtimestamp(1_700_000_000 + 60 * i, UTC),
                   kind=more.pop("kind", "text"), text=f"text {i}",
                   contact_name="\\x01odd name" if i % 3 == 2 else f"Name {i % 3}", **more)

async def main(target):
    buffer = await Buffer.open(target, runner=True)
    await buffer.install_sinks(["crm"])
    buffer.media_sources = {"whatsapp": None}
    await buffer.append([message(i) for i in range(5)] + [message(
        9, kind="image", media=Media(id="55", mime_type="image/png", filename="a.png"))],
        identities=[Identity(phone="+919000000001", user_id="IN.1")])
    first, second, third = await buffer.claim("crm", 3, 3600, now=1_800_000_000)
    first.batch.new_ledger[first.batch.key] = "ACT-1"
    policy = Policy(max_attempts=3, retry_delay=lambda attempt: 60.0, held_delay=60.0)
    await buffer.complete(first, [Outcome.delivered()] * len(first.messages), policy,
                          now=1_800_000_001)
    await buffer.complete(second, [Outcome.rejected("no")] * len(second.messages), policy,
                          now=1_800_000_002)
    await buffer.append([message(i) for i in range(5, 8)])  # waiting; `third` stays leased
    await buffer.close()

asyncio.run(main(sys.argv[1]))
"""


def _old_code(tmp_path: Path, commit: str = BEFORE) -> Path:
    """bridge/ and plugins/ as they were at `commit`, in a directory of their own."""
    try:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "bridge", "plugins"],
                                 capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip(f"the commit {commit[:10]} is not in this clone")
    where = tmp_path / "old"
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(where, filter="data")
    return where


def _make_old(tmp_path: Path, target: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(_old_code(tmp_path))}
    done = subprocess.run([sys.executable, "-c", OLD_SCRIPT, target], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


async def _check_upgraded(buffer: Buffer) -> None:
    """Nothing lost: every message, state, mapping and ledger entry; it works on."""
    assert await buffer.count_messages() == 9
    dead = await buffer.dead_letters("crm")
    assert dead and {d["reason"] for d in dead} == {"no"}
    hours = await buffer.hourly(0)
    assert sum(n for (_, direction), n in hours.items() if direction == "out") == 1
    assert (await buffer.media_counts())["whatsapp"]["pending"] == 1
    # a name written before free text was escaped, starting with the escape's mark
    assert (await buffer.conversation("+919000000002"))["person"]["contact_name"] == \
        "\x01odd name"
    person = await buffer.conversation("+919000000001")
    assert person["person"]["bsuid"] == "IN.1"
    assert [m["message"].text for m in person["messages"]] == ["text 1", "text 4", "text 7"]
    delivered = [m for key in ("+919000000000", "+919000000001", "+919000000002")
                 for m in (await buffer.conversation(key))["messages"]
                 if m["deliveries"][0]["activities"]]
    assert [a["external_id"] for m in delivered for a in m["deliveries"][0]["activities"]]
    policy = Policy(max_attempts=3, retry_delay=lambda attempt: 60.0, held_delay=60.0)
    # the batch left leased (its lease over), then new ones; a conversation's newer batch
    # waits for its older one
    for now, texts in ((1_900_000_000, ["text 2", "text 6", "text 7"]),
                       (1_900_000_010, ["text 5"])):
        claimed = await buffer.claim("crm", 10, 60, now=now)
        assert sorted(m.text for c in claimed for m in c.messages) == texts
        for claim in claimed:
            await buffer.complete(claim, [Outcome.delivered()] * len(claim.messages), policy,
                                  now=now + 1)
    assert await buffer.append([_new_message()]) == 1
    assert (await buffer.messages(limit=100))[-1].id > 9


def _new_message():
    from datetime import UTC, datetime

    from bridge.model import Direction, Message
    return Message(source="whatsapp", provider_id="new", conversation="+919000000009",
                   account="acc", direction=Direction.IN, sent_at=datetime.now(UTC),
                   kind="text", text="after the upgrade")


async def test_an_sqlite_buffer_of_schema_9_upgrades_in_place(tmp_path):
    path = tmp_path / "old.db"
    _make_old(tmp_path, str(path))
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone() == (9,)
    buffer = await Buffer.open(path, runner=True)
    try:
        await _check_upgraded(buffer)
    finally:
        await buffer.close()
    assert await rows(buffer, "SELECT count(*) FROM messages WHERE direction = 'out'") == [(1,)]
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone() == (VERSION,)
    assert _comparable(sqlite_catalogue(path)) == await _fresh_sqlite(tmp_path)


@pytest.mark.skipif(not POSTGRES, reason="needs PostgreSQL")
async def test_a_postgres_buffer_of_schema_9_upgrades_in_place(tmp_path):
    async with fresh_schema_url() as url:
        _make_old(tmp_path, url)
        buffer = await Buffer.open(url)
        try:
            await _check_upgraded(buffer)
        finally:
            await buffer.close()
        assert await rows(buffer, "SELECT version FROM schema_version") == [(VERSION,)]
        upgraded = _comparable(await postgres_catalogue(url))
    assert upgraded == await _fresh_postgres()
