"""Invariant 1: an acknowledged append survives kill -9 at any instant."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KILLS = 20


def run_and_kill(db: Path, prefix: str, rng: random.Random) -> set[str]:
    """Start an appender, SIGKILL it at a random moment; return the ids it acknowledged."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.core.appender", str(db), prefix],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    acknowledged: set[str] = set()
    deadline = time.monotonic() + rng.uniform(0.05, 0.6)
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("ok ") and line.endswith("\n"):
            acknowledged.update(line.split()[1:])
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # Lines already written before the kill were acknowledged too.
    for line in proc.stdout.read().splitlines(keepends=True):
        if line.startswith("ok ") and line.endswith("\n"):
            acknowledged.update(line.split()[1:])
    assert proc.returncode == -signal.SIGKILL
    return acknowledged


def test_kill_9_during_concurrent_appends_loses_no_acknowledged_message(tmp_path):
    db = tmp_path / "crash.db"
    rng = random.Random(1234)
    acknowledged: set[str] = set()
    for round_no in range(KILLS):
        acknowledged |= run_and_kill(db, f"r{round_no}", rng)
        with sqlite3.connect(db) as conn:
            stored = {row[0] for row in conn.execute("SELECT provider_id FROM messages")}
            deliveries = conn.execute(
                "SELECT count(*) FROM messages m LEFT JOIN deliveries d"
                " ON d.message_id = m.id AND d.sink = 'crm' WHERE d.message_id IS NULL"
            ).fetchone()[0]
        missing = acknowledged - stored
        assert not missing, f"round {round_no}: {len(missing)} acknowledged messages lost"
        assert deliveries == 0, "a stored message has no delivery row for the sink"
    assert len(acknowledged) > KILLS * 10  # the children really were appending
    print(f"{KILLS} kills survived, {len(acknowledged)} acknowledged messages all present")
