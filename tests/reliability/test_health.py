"""Issue 13, item 3: /healthz tells the truth about durability, on a real `bridge run`.

(a) The buffer files deleted under a running bridge: webhooks used to get 200 (their rows
went to an unlinked file) and were gone after a restart. Now the first commit after the
deletion, and /healthz, see that the path no longer leads to the file: 503, until a
restart opens a new buffer. (b) Damaged pages: webhooks got 503 while /healthz said 200.
Now /healthz rehearses an append and answers 503 too.
"""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from pathlib import Path

from bridge.buffer import Buffer
from tests import oneshot
from tests.helpers import free_port, message
from tests.processes import BridgeProcess
from tests.reliability.support import (
    PATH,
    signed_headers,
    stored_ids,
    webhook_body,
    whatsapp_config,
)

ASHA = "919876543210"


def _bridge(tmp_path: Path, db: Path) -> BridgeProcess:
    port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(whatsapp_config(db, port=port))
    return BridgeProcess(config, port)


def _post(bridge: BridgeProcess) -> tuple[int, str]:
    """One signed webhook with a fresh message: (status, message id)."""
    mid = f"wamid.health-{uuid.uuid4().hex}"
    body = webhook_body([(mid, ASHA, "hello")])
    response = oneshot.post(bridge.url + PATH, content=body, headers=signed_headers(body),
                            timeout=30)
    return response.status_code, mid


def _health(bridge: BridgeProcess) -> int:
    return oneshot.get(bridge.url + "/healthz", timeout=30).status_code


def test_deleted_buffer_files_get_503_not_a_200_that_a_restart_loses(tmp_path):
    db = tmp_path / "buffer.db"
    bridge = _bridge(tmp_path, db).start()
    try:
        status, before = _post(bridge)
        assert status == 200
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink()
        assert _health(bridge) == 503, "healthz says OK with the buffer deleted"
        after = [_post(bridge) for _ in range(3)]
        assert [status for status, _ in after] == [503] * 3, after
        assert _health(bridge) == 503
    finally:
        bridge.stop()
    bridge.start()  # a restart opens a new buffer at the path: healthy again
    try:
        status, fresh = _post(bridge)
        assert status == 200 and _health(bridge) == 200
    finally:
        bridge.stop()
    assert stored_ids(db) == {fresh}  # what was deleted is gone; nothing 200'd went with it


async def _buffer_with_messages(db: Path) -> None:
    buffer = await Buffer.open(db, runner=True)
    await buffer.append([message(n, text="x" * 100) for n in range(500)])
    await buffer.close()


def _damage_index(db: Path) -> None:
    """Overwrite the root page of the messages' unique index: every append passes it."""
    with sqlite3.connect(db) as conn:
        (root,) = conn.execute("SELECT rootpage FROM sqlite_master"
                               " WHERE name = 'sqlite_autoindex_messages_1'").fetchone()
        (page_size,) = conn.execute("PRAGMA page_size").fetchone()
    conn.close()
    with open(db, "r+b") as out:
        out.seek((root - 1) * page_size)
        out.write(b"\xa5" * page_size)


def test_damaged_pages_make_healthz_503_like_the_webhooks(tmp_path):
    db = tmp_path / "buffer.db"
    asyncio.run(_buffer_with_messages(db))
    _damage_index(db)
    bridge = _bridge(tmp_path, db).start(accept=(200, 503))  # serving, healthy or not
    try:
        assert _health(bridge) == 503, "healthz says OK on a damaged buffer"
        assert _post(bridge)[0] == 503
        assert _health(bridge) == 503
    finally:
        bridge.stop()

