"""Invariant 1 when the disk says no: a full or read-only filesystem under the buffer.

Webhooks get 503 (Meta retries), never a 200 for a message that is not stored; /healthz
answers 503 while the buffer cannot commit; when space (or write access) returns, the same
process answers 200 again, without a restart. Every message that got a 200 is in the
buffer at the end.

Variants: a real 2 MB tmpfs that fills up (needs `mount`, so root; skipped with the
reason otherwise), the live buffer's files made immutable with `chattr +i` (Linux refuses
a read-only remount while the buffer holds its files open for writing; the immutable flag
fails writes through open descriptors), and at the SQLite layer, which always runs:
SQLITE_FULL via `PRAGMA max_page_count` and SQLITE_READONLY via
`PRAGMA query_only` on the writer connection (real SQLite errors, not mocks).
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx

from tests.reliability.disks import chattr, fill, mount
from tests.reliability.support import (
    PATH,
    ThreadedApp,
    report,
    signed_headers,
    stored_ids,
    webhook_body,
    whatsapp_config,
)

ASHA = "919876543210"


class Poster:
    """Posts signed webhooks; remembers which ids were acknowledged and every status."""

    def __init__(self, app: ThreadedApp) -> None:
        self.client = httpx.Client(base_url=app.url, timeout=60)
        self.acked: set[str] = set()
        self.statuses: Counter[int] = Counter()

    def post(self, text_size: int = 200, count: int = 2) -> int:
        ids = [f"wamid.disk-{uuid.uuid4().hex}" for _ in range(count)]
        body = webhook_body([(mid, ASHA, "x" * text_size) for mid in ids])
        response = self.client.post(PATH, content=body, headers=signed_headers(body))
        self.statuses[response.status_code] += 1
        assert response.status_code in (200, 503), response.text
        if response.status_code == 200:
            self.acked.update(ids)
        else:
            assert response.text == "could not store the webhook; retry later"
        return response.status_code

    def health(self) -> int:
        return self.client.get("/healthz").status_code

    def fill_until_refused(self, limit: int = 400) -> None:
        """Post ever smaller webhooks until even a small one is refused."""
        for text_size in (50_000, 5_000, 200):
            for _ in range(limit):
                if self.post(text_size) == 503:
                    break
        assert self.post(200) == 503, "the buffer never filled up"

    def recovered(self, timeout: float = 60) -> bool:
        """Meta's retries: post until one is stored again; healthz then answers 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.post() == 200:
                return self.health() == 200
            time.sleep(0.2)
        return False

    def close(self) -> None:
        self.client.close()


def _serve(db: Path, tmp_path: Path) -> ThreadedApp:
    return ThreadedApp(whatsapp_config(db), tmp_path / "config.yaml")


def test_full_tmpfs_gets_503_and_recovers_when_space_returns(tmpfs, tmp_path):
    db = tmpfs / "buffer.db"
    with _serve(db, tmp_path) as app:
        poster = Poster(app)
        try:
            assert poster.post() == 200
            poster.fill_until_refused()
            filler = fill(tmpfs)  # and leave no byte for anything else either
            assert poster.post(10) == 503
            assert poster.health() == 503, "healthz says OK while nothing can be stored"
            filler.unlink()
            done = mount("-o", "remount,size=64m", str(tmpfs))
            assert done.returncode == 0, done.stderr
            assert poster.recovered(), "still refusing after space came back"
            for _ in range(20):
                assert poster.post(5_000) == 200
        finally:
            poster.close()
    _check_acknowledged(poster, db, "disk full (tmpfs)")


def test_immutable_buffer_files_get_503_and_recover_when_writable(tmp_path):
    """The buffer's files made read-only under the live bridge, even to root (chattr +i).

    (A `mount -o remount,ro` is refused with EBUSY while the buffer holds its files open
    for writing; the immutable flag is the real way to take write access from an open
    file: every write through its descriptor then fails with EPERM.)
    """
    db = tmp_path / "buffer.db"
    files = [db, Path(f"{db}-wal")]
    with _serve(db, tmp_path) as app:
        poster = Poster(app)
        try:
            for _ in range(5):
                assert poster.post() == 200
            for path in files:
                chattr("+i", path)
            try:
                _read_only_then_writable(
                    poster, lambda: [chattr("-i", path) for path in files])
            finally:
                for path in files:
                    subprocess.run(["chattr", "-i", str(path)], capture_output=True)
        finally:
            poster.close()
    _check_acknowledged(poster, db, "immutable buffer files")


def test_sqlite_read_only_gets_503_and_recovers(tmp_path):
    """SQLITE_READONLY from SQLite itself (PRAGMA query_only on the writer connection)."""
    db = tmp_path / "buffer.db"
    with _serve(db, tmp_path) as app:
        poster = Poster(app)
        try:
            for _ in range(5):
                assert poster.post() == 200
            app.call(app.bridge.buffer.limit_writes(read_only=True))
            _read_only_then_writable(
                poster, lambda: app.call(app.bridge.buffer.limit_writes(read_only=False)))
        finally:
            poster.close()
    _check_acknowledged(poster, db, "SQLITE_READONLY")


def _read_only_then_writable(poster: Poster, make_writable) -> None:
    for _ in range(5):
        assert poster.post() == 503
    assert poster.health() == 503
    make_writable()
    assert poster.recovered(), "still refusing after the buffer became writable"
    for _ in range(5):
        assert poster.post() == 200


def _check_acknowledged(poster: Poster, db: Path, what: str) -> None:
    missing = poster.acked - stored_ids(db)
    report(f"{what}: statuses {dict(poster.statuses)}, "
           f"{len(poster.acked)} acknowledged messages checked, {len(missing)} missing")
    assert not missing, f"a 200 for unstored messages: {sorted(missing)[:5]}"


def test_sqlite_full_gets_503_and_recovers_without_restart(tmp_path):
    """SQLITE_FULL from SQLite itself: the database may not grow by a single page."""
    db = tmp_path / "buffer.db"
    with _serve(db, tmp_path) as app:
        poster = Poster(app)
        try:
            for _ in range(3):
                assert poster.post() == 200
            app.call(app.bridge.buffer.limit_writes(size_cap=True))
            poster.fill_until_refused()
            assert poster.health() == 503, "healthz says OK while nothing can be stored"
            app.call(app.bridge.buffer.limit_writes(size_cap=False))
            assert poster.recovered(), "still refusing after the cap was lifted"
            for _ in range(10):
                assert poster.post(5_000) == 200
        finally:
            poster.close()
    _check_acknowledged(poster, db, "SQLITE_FULL")
