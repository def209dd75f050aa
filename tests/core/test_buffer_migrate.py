"""`buffer.url`, `bridge check` on the buffer, and `bridge buffer migrate --to postgresql://`."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bridge.buffer import Buffer, Policy
from bridge.buffer.migrations import VERSION
from bridge.contracts import Outcome
from bridge.errors import ConfigError
from tests.backends import drop_schema, needs_postgres, new_schema, postgres_url, query
from tests.helpers import message

POLICY = Policy(max_attempts=1, retry_delay=lambda attempt: 0.0, held_delay=0.0)


def bridge(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bridge", *args], capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL, **kwargs)


def write_config(tmp_path, buffer_yaml: str):
    config = tmp_path / "config.yaml"
    config.write_text(f"buffer:\n{buffer_yaml}")
    return config


@pytest.fixture
async def schema():
    name = new_schema()
    yield name
    await drop_schema(name)


async def seed(path, count: int = 40) -> None:
    """Delivered, dead, pending and leased messages in an SQLite buffer."""
    buffer = await Buffer.open(path)
    await buffer.install_sinks(["crm"])
    await buffer.append([message(n, f"+9198765{n % 8:05d}") for n in range(count)])
    claims = await buffer.claim("crm", 4, 60)
    for claim in claims[:2]:
        await buffer.complete(claim, [Outcome.delivered()] * len(claim.messages), POLICY)
    if len(claims) > 2:
        await buffer.complete(claims[2], [Outcome.rejected("Invalid phone")]
                              * len(claims[2].messages), POLICY)
    # claims[3] stays leased: the copy must hand it over as an uncertain retry
    await buffer.close()


async def snapshot(target: str) -> dict:
    buffer = await Buffer.open(target)
    try:
        rows = {t: (await query(buffer, f"SELECT count(*) FROM {t}"))[0][0]
                for t in ("messages", "deliveries", "batches", "ledger", "identities")}
        states = await query(buffer, "SELECT state, count(*) FROM deliveries GROUP BY state"
                                    " ORDER BY state")
        rows["states"] = [tuple(r) for r in states]
        rows["dead"] = sorted(d["message_id"] for d in await buffer.dead_letters("crm"))
        rows["ids"] = [r[0] for r in await query(
            buffer, "SELECT source || '/' || provider_id FROM messages ORDER BY id")]
        return rows
    finally:
        await buffer.close()


# -- buffer.url in the config ------------------------------------------------------------

def load_config_at(path):
    from bridge.cli import load

    return load(str(path))[0]


def test_sqlite_url_names_the_file_relative_to_the_config(tmp_path):
    config = load_config_at(write_config(tmp_path, "  url: sqlite:///data/chat.db\n"))
    assert config.buffer.path == str(tmp_path / "data" / "chat.db")
    assert config.buffer.target == config.buffer.path and not config.buffer.postgres


def test_url_and_path_that_disagree_are_refused_naming_both(tmp_path):
    with pytest.raises(ConfigError, match=r"buffer.url names 'a.db' but buffer.path says"):
        load_config_at(write_config(tmp_path, "  url: sqlite:///a.db\n  path: b.db\n"))


def test_an_unknown_scheme_is_refused_with_the_two_forms(tmp_path):
    with pytest.raises(ConfigError, match=r"^buffer.url: use sqlite:///.*postgresql://"):
        load_config_at(write_config(tmp_path, "  url: mysql://x@h/db\n"))


def test_a_postgres_url_takes_variables_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CB_TEST_PGPASS", "s3cret")
    config = load_config_at(write_config(
        tmp_path, "  url: postgresql://bridge:${CB_TEST_PGPASS}@db.internal:5432/chat\n"))
    assert config.buffer.postgres
    assert config.buffer.target == "postgresql://bridge:s3cret@db.internal:5432/chat"


# -- bridge check -------------------------------------------------------------------------

def test_check_reports_the_sqlite_schema_version(tmp_path):
    db = tmp_path / "b.db"
    config = write_config(tmp_path, f"  path: {db}\n")
    assert "empty: `bridge run` creates schema version" in bridge("check", "-c", str(config)).stdout
    asyncio.run(seed(db, 2))
    out = bridge("check", "-c", str(config)).stdout
    assert f"buffer OK: {db} (schema version {VERSION})" in out


def test_check_says_when_postgres_cannot_be_reached_without_the_password(tmp_path):
    config = write_config(tmp_path, "  url: postgresql://u:hunter2@127.0.0.1:1/db\n")
    result = bridge("check", "-c", str(config))
    assert result.returncode != 0
    assert "buffer.url postgresql://u:***@127.0.0.1:1/db: cannot connect" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout


@needs_postgres
def test_check_reports_the_postgres_schema_version(tmp_path, schema):
    url = postgres_url(schema)
    config = write_config(tmp_path, f"  url: '{url}'\n")
    assert f"(empty: `bridge run` creates schema version {VERSION})" in bridge(
        "check", "-c", str(config)).stdout

    async def create():
        await (await Buffer.open(url)).close()
    asyncio.run(create())
    assert f"(schema version {VERSION})" in bridge("check", "-c", str(config)).stdout


# -- bridge buffer migrate ----------------------------------------------------------------

@needs_postgres
def test_migrate_copies_everything_once_and_a_rerun_copies_nothing(tmp_path, schema):
    db = tmp_path / "b.db"
    asyncio.run(seed(db))
    config = write_config(tmp_path, f"  path: {db}\n")
    url = postgres_url(schema)
    first = bridge("buffer", "migrate", "-c", str(config), "--to", url)
    assert first.returncode == 0, first.stderr
    assert "messages                    40 in the file,        40 copied now" in first.stdout
    before = asyncio.run(snapshot(str(db)))
    after = asyncio.run(snapshot(url))
    assert after == before
    assert before["dead"] and ("done", 0) not in before["states"]  # every state was there

    again = bridge("buffer", "migrate", "-c", str(config), "--to", url)
    assert again.returncode == 0, again.stderr
    assert "messages                    40 in the file,         0 copied now" in again.stdout
    assert asyncio.run(snapshot(url)) == before


@needs_postgres
def test_a_migrated_buffer_delivers_what_was_pending_and_nothing_twice(tmp_path, schema):
    db = tmp_path / "b.db"
    asyncio.run(seed(db))
    url = postgres_url(schema)
    config = write_config(tmp_path, f"  path: {db}\n")
    assert bridge("buffer", "migrate", "-c", str(config), "--to", url).returncode == 0

    async def drain() -> tuple[set, set, list]:
        source = await Buffer.open(str(db))
        pending = {r[0] for r in await query(
            source, "SELECT message_id FROM deliveries WHERE state = 'pending'")}
        await source.close()
        buffer = await Buffer.open(url)
        try:
            claimed = [m.provider_id for c in await buffer.claim("crm", 100, 60)
                       for m in c.messages]
            uncertain = [c.uncertain for c in await buffer.claim("crm", 100, 60)]
            ids = {r[0] for r in await query(
                buffer, "SELECT id FROM messages WHERE provider_id = ANY(:claimed)",
                {"claimed": claimed})}
            new = await buffer.append([message(999)])
            return pending, ids, [new, uncertain]
        finally:
            await buffer.close()
    pending, claimed, (new, _) = asyncio.run(drain())
    assert claimed == pending  # the leased batch too (its lease was handed over)
    assert new == 1  # new ids start after the copied ones


@needs_postgres
def test_migrate_refuses_a_database_that_holds_another_bridges_messages(tmp_path, schema):
    url = postgres_url(schema)

    async def live():
        buffer = await Buffer.open(url)
        await buffer.append([message(1)])
        await buffer.close()
    asyncio.run(live())
    db = tmp_path / "b.db"
    asyncio.run(seed(db, 3))
    config = write_config(tmp_path, f"  path: {db}\n")
    result = bridge("buffer", "migrate", "-c", str(config), "--to", url)
    assert result.returncode != 0
    assert "already holds messages of a running bridge" in result.stderr


def _copy_of_a_big_buffer(tmp_path, url: str) -> tuple[subprocess.Popen, Path, Path]:
    """An SQLite buffer of 60,000 messages (500 customers), and `bridge buffer migrate`
    of it to `url` started (it runs for seconds): the process, the file, its config."""
    db = tmp_path / "big.db"

    async def big():
        buffer = await Buffer.open(db)
        await buffer.install_sinks(["crm"])
        for start in range(0, 60_000, 5000):
            await buffer.append([message(n, f"+9198765{n % 500:05d}")
                                 for n in range(start, start + 5000)])
        await buffer.close()
    asyncio.run(big())
    config = write_config(tmp_path, f"  path: {db}\n")
    command = [sys.executable, "-m", "bridge", "buffer", "migrate", "-c", str(config), "--to", url]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, env=os.environ.copy()), db, config


@needs_postgres
def test_a_copy_killed_midway_resumes_with_nothing_lost_or_doubled(tmp_path, schema):
    url = postgres_url(schema)
    copy, db, config = _copy_of_a_big_buffer(tmp_path, url)
    copied = asyncio.run(_wait_for_rows(url, "messages", 4000, copy))
    os.kill(copy.pid, signal.SIGKILL)
    copy.wait()
    assert 0 < copied < 60_000  # killed mid-copy
    again = bridge("buffer", "migrate", "-c", str(config), "--to", url)
    assert again.returncode == 0, again.stderr
    assert asyncio.run(snapshot(url)) == asyncio.run(snapshot(str(db)))


async def _wait_for_rows(url: str, table: str, rows: int, process: subprocess.Popen) -> int:
    import asyncpg

    from bridge.buffer.postgres import split_schema

    dsn, name = split_schema(url)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        try:
            conn = await asyncpg.connect(dsn, server_settings={"search_path": name})
            try:
                count = await conn.fetchval(f"SELECT count(*) FROM {table}")
            finally:
                await conn.close()
            if count >= rows:
                return count
        except asyncpg.UndefinedTableError:
            pass
        await asyncio.sleep(0.02)
    raise AssertionError(f"the copy never reached {rows} rows of {table}")


ODD = ["nul\x00inside", "lone \ud800 high", "lone \udfff low", "\x01marked", "x" * 100_000,
       "हिन्दी தமிழ் العربية 中文 日本語 한국어 ไทย עברית Ελληνικά кириллица 🙂‍↔️ 𝕏",
       "\x00", "\ud83d", "\u0001\u0000\ud800"]


async def odd_seed(path) -> None:
    """Every kind of row `bridge buffer migrate` copies, holding strings PostgreSQL text
    cannot (U+0000, lone surrogates, the escape's own mark), long and in every script."""
    from bridge.buffer import SyncNote

    buffer = await Buffer.open(path)
    await buffer.install_sinks(["crm"])
    await buffer.append([message(n, f"+9198765{n:05d}", text=text)
                         for n, text in enumerate(ODD)])
    claims = await buffer.claim("crm", 100, 60)
    for n, claim in enumerate(claims):
        claim.batch.new_ledger[f"{claim.batch.key}:0"] = f"activity-{n}"
        outcome = (Outcome.delivered() if n % 2 else Outcome.rejected(ODD[n % len(ODD)]))
        await buffer.complete(claim, [outcome] * len(claim.messages), POLICY)
    await buffer.note_source_sync("whatsapp", "1065", "history", SyncNote(
        state="arriving", requested_at=time.time(), request_id="req\x00\ud800", phase=1,
        chunk=3, progress=40, messages=12, detail=ODD[1]))
    await buffer.close()


LIVE = {"heartbeat", "processes", "rate_budgets", "buffer_imports"}  # not the buffer's data


async def every_row(target: str) -> dict:
    """Each table's rows but the cluster's live state, read back as the buffer reads
    them (decoded), in key order."""
    import sqlalchemy as sa

    from bridge.buffer.compiler import Query
    from bridge.buffer.tables import metadata

    buffer = await Buffer.open(target)
    try:
        return {name: [tuple(r) for r in await buffer.read(lambda db, t=table: db.rows(Query(
            sa.select(*t.columns).order_by(*t.primary_key.columns))))]
            for name, table in metadata.tables.items() if name not in LIVE}
    finally:
        await buffer.close()


@needs_postgres
def test_migrate_copies_odd_strings_and_every_table_losslessly(tmp_path, schema):
    db = tmp_path / "odd.db"
    asyncio.run(odd_seed(db))
    url = postgres_url(schema)
    config = write_config(tmp_path, f"  path: {db}\n")
    result = bridge("buffer", "migrate", "-c", str(config), "--to", url)
    assert result.returncode == 0, result.stderr
    before, after = asyncio.run(every_row(str(db))), asyncio.run(every_row(url))
    assert before["source_syncs"] and before["ledger"] and before["sink_conversations"]
    assert {t for t in before if before[t]} == {t for t in after if after[t]}
    for table in before:
        assert after[table] == before[table], table


@needs_postgres
def test_a_rerun_after_the_bridges_started_brings_nothing_back(tmp_path, schema):
    """`safe to re-run`: after a finished copy the bridges ran on PostgreSQL, delivered the
    pending messages, erased a person (`bridge purge`) and pruned; a second `bridge buffer
    migrate` (a deploy script, an operator unsure the first one finished) copied back
    every row missing from PostgreSQL: the erased person's messages, and the delivered
    ones as pending again, to be posted to the CRM a second time."""
    db = tmp_path / "b.db"

    async def pending_file() -> None:
        buffer = await Buffer.open(db)
        await buffer.install_sinks(["crm"])
        await buffer.append([message(1, "+919876500001"), message(2, "+919876500002")])
        await buffer.close()
    asyncio.run(pending_file())
    url = postgres_url(schema)
    config = write_config(tmp_path, f"  path: {db}\n")
    assert bridge("buffer", "migrate", "-c", str(config), "--to", url).returncode == 0

    async def bridges_run() -> None:
        buffer = await Buffer.open(url)
        try:
            for claim in await buffer.claim("crm", 10, 60):
                await buffer.complete(claim, [Outcome.delivered()] * len(claim.messages),
                                      POLICY)
            assert await buffer.purge("+919876500001") == 1
            assert await buffer.prune(time.time() + 1) == 1  # the other, delivered
        finally:
            await buffer.close()
    asyncio.run(bridges_run())
    again = bridge("buffer", "migrate", "-c", str(config), "--to", url)
    assert again.returncode == 0, again.stderr
    assert "messages                     2 in the file,         0 copied now" in again.stdout
    assert "nothing copied: the copy of" in again.stdout

    async def left() -> list:
        buffer = await Buffer.open(url)
        try:
            return await query(buffer, "SELECT provider_id FROM messages")
        finally:
            await buffer.close()
    assert asyncio.run(left()) == []


def _pg_bridge_config(tmp_path, url: str):
    """A bridge (WhatsApp in, no sink) on the PostgreSQL buffer at `url`; (config, port)."""
    import json

    from tests.helpers import free_port
    from tests.reliability.support import whatsapp_config

    port = free_port()
    config = json.loads(whatsapp_config(tmp_path / "unused.db"))
    config.update(buffer={"url": url}, server={"port": port})
    path = tmp_path / "pg.yaml"
    path.write_text(json.dumps(config))
    return path, port


@needs_postgres
def test_a_bridge_cannot_start_on_a_database_a_copy_is_still_filling(tmp_path, schema):
    """adv49: a bridge started on the PostgreSQL URL while `bridge buffer migrate` ran took
    message ids the copy was about to insert; 40 webhooks it answered 200 were in no table
    once the copy finished. It now refuses to start with one line until the copy ended."""
    from tests.processes import BridgeProcess, failed_start

    url = postgres_url(schema)
    copy, _, _ = _copy_of_a_big_buffer(tmp_path, url)
    pg_config, port = _pg_bridge_config(tmp_path, url)
    try:
        asyncio.run(_wait_for_rows(url, "messages", 2000, copy))
        line = failed_start(pg_config)
        assert "has not finished" in line and "bridge buffer migrate" in line, line
    finally:
        copy.communicate(timeout=300)
    assert copy.returncode == 0
    bridge_process = BridgeProcess(pg_config, port).start()  # finished: it starts
    bridge_process.stop()


@needs_postgres
def test_a_copy_refuses_a_database_bridges_run_on(tmp_path, schema):
    """adv49: bridges started on the (empty) database before the copy would write into
    the ids it fills in: the copy refuses to start, naming a process."""
    from tests.processes import BridgeProcess

    db = tmp_path / "b.db"
    asyncio.run(seed(db))
    url = postgres_url(schema)
    pg_config, port = _pg_bridge_config(tmp_path, url)
    running = BridgeProcess(pg_config, port).start()
    try:
        config = write_config(tmp_path, f"  path: {db}\n")
        result = bridge("buffer", "migrate", "-c", str(config), "--to", url)
    finally:
        running.stop()
    assert result.returncode != 0
    assert "bridge process(es) run on this database" in result.stderr, result.stderr
    again = bridge("buffer", "migrate", "-c", str(config), "--to", url)  # stopped: copies
    assert again.returncode == 0, again.stderr
