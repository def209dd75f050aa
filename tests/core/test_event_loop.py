"""server.event_loop: `bridge run` on uvloop or on asyncio's own loop stores a signed
webhook before its 200 and stops cleanly on SIGTERM (and SIGHUP); a value it cannot use is
a config error naming the key."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from bridge.buffer import Buffer
from plugins.whatsapp.signature import sign
from tests.helpers import free_port
from tests.processes import BridgeProcess, buffered_ids, failed_start, wait_http
from tests.whatsapp import payloads as p

SECRET = "loop-secret"


def _config(tmp_path: Path, port: int, event_loop: str) -> Path:
    config = {"server": {"port": port, "event_loop": event_loop},
              "buffer": {"path": str(tmp_path / "bridge.db")},
              "plugins": {"whatsapp": {"verify_token": "v", "app_secret": SECRET}}}
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(config))
    return path


def _post(bridge: BridgeProcess, message_id: str) -> int:
    """A signed webhook with one text message; the answer's status."""
    body = json.dumps(p.envelope({"field": "messages", "value": p.value(
        messages=[p.text_message(message_id, "919812345670", "hello")])})).encode()
    return httpx.post(f"{bridge.url}/webhooks/whatsapp", content=body, timeout=10,
                      headers={"Content-Type": "application/json",
                               "X-Hub-Signature-256": sign(body, SECRET)}).status_code


@pytest.mark.parametrize(("event_loop", "runs_on"), [
    ("asyncio", "asyncio"), ("uvloop", "uvloop"), ("auto", "uvloop")])
def test_a_webhook_is_stored_and_the_bridge_stops_cleanly_on_each_loop(
        tmp_path, event_loop, runs_on):
    pytest.importorskip("uvloop")
    port = free_port()
    bridge = BridgeProcess(_config(tmp_path, port, event_loop), port).start()
    try:
        assert _post(bridge, "loop-1") == 200
        assert buffered_ids({"path": str(tmp_path / "bridge.db")}) == {"loop-1"}
    finally:
        bridge.stop()
    assert bridge.proc.returncode == 0
    assert f"serving on the {runs_on} event loop" in Path(bridge.log.name).read_text()


def test_an_unknown_event_loop_is_a_config_error_naming_the_key(tmp_path):
    line = failed_start(_config(tmp_path, free_port(), "trio"))
    assert "server.event_loop" in line


@pytest.mark.parametrize("event_loop", ["asyncio", "uvloop"])
def test_sighup_stops_the_bridge_as_sigterm_does(tmp_path, event_loop):
    """A closed terminal's SIGHUP: exit 0 with the buffer closed (SQLite removes the -wal
    file when its last connection closes), not the abrupt end Python's default gives."""
    if event_loop == "uvloop":
        pytest.importorskip("uvloop")
    port = free_port()
    bridge = BridgeProcess(_config(tmp_path, port, event_loop), port).start()
    try:
        assert _post(bridge, "hup-1") == 200
        assert Path(f"{tmp_path / 'bridge.db'}-wal").exists()  # open: the WAL is in use
        bridge.proc.send_signal(signal.SIGHUP)
        bridge.proc.wait(15)
    finally:
        bridge.stop()
    assert bridge.proc.returncode == 0
    assert "SIGHUP: stopping as on SIGTERM" in Path(bridge.log.name).read_text()
    assert not Path(f"{tmp_path / 'bridge.db'}-wal").exists()
    assert buffered_ids({"path": str(tmp_path / "bridge.db")}) == {"hup-1"}


def test_a_bridge_started_ignoring_sighup_keeps_serving_through_one(tmp_path):
    """`nohup bridge run`: SIGHUP is ignored from the start, so a closed terminal must not
    stop the bridge (it did before `bridge run` handled SIGHUP, and must still)."""
    port = free_port()
    bridge = BridgeProcess(_config(tmp_path, port, "asyncio"), port)
    bridge.proc = subprocess.Popen(
        [sys.executable, "-m", "bridge", "run", "-c", str(bridge.config)],
        stdout=subprocess.DEVNULL, stderr=bridge.log,
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))
    try:
        wait_http(f"{bridge.url}/healthz", bridge.proc, "bridge", bridge.log)
        bridge.proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        assert httpx.get(f"{bridge.url}/healthz", timeout=10).status_code == 200
        assert bridge.proc.poll() is None
    finally:
        bridge.stop()
    assert bridge.proc.returncode == 0
    assert "SIGHUP" not in Path(bridge.log.name).read_text()


@pytest.mark.parametrize("event_loop", ["asyncio", "uvloop"])
def test_a_second_sighup_does_not_cut_the_graceful_stop_short(tmp_path, event_loop):
    """A closed terminal can send SIGHUP twice (the shell passes its own on to its jobs,
    the kernel signals the foreground group as the shell exits): the stop the first began
    goes on, answering the webhook in flight (its body stalled: the 408 after
    body_timeout) and closing the buffer, exit 0; the second raised out of the shutdown
    (exit 1, the request cut off unanswered, tracebacks in the log)."""
    if event_loop == "uvloop":
        pytest.importorskip("uvloop")
    port = free_port()
    config = _config(tmp_path, port, event_loop)
    settings = json.loads(config.read_text())
    settings["plugins"]["whatsapp"]["body_timeout"] = 1.5
    config.write_text(json.dumps(settings))
    bridge = BridgeProcess(config, port).start()
    head = (b"POST /webhooks/whatsapp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n"
            b"Content-Type: application/json\r\n\r\n{")
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            client.sendall(head)
            time.sleep(0.3)  # the request is in flight, its body not all there
            bridge.proc.send_signal(signal.SIGHUP)
            time.sleep(0.1)
            bridge.proc.send_signal(signal.SIGHUP)
            answer = client.recv(4096)
        bridge.proc.wait(15)
    finally:
        bridge.stop()
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert bridge.proc.returncode == 0
    assert "Traceback" not in Path(bridge.log.name).read_text()
    assert not Path(f"{tmp_path / 'bridge.db'}-wal").exists()


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="waits on /proc/<pid>/fd")
def test_sighup_while_the_bridge_starts_stops_it_as_sigterm_does(tmp_path):
    """SIGHUP before the app serves (here: its start waits for the buffer's write lock,
    which another connection holds) stops it as SIGTERM then does: exit 0, not the
    abrupt end of a handler installed only once the app had started."""
    bridge = BridgeProcess(_config(tmp_path, free_port(), "asyncio"), 0)
    db = tmp_path / "bridge.db"
    asyncio.run(_create(db))
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # the bridge's start writes: it waits (busy_timeout)
    try:
        bridge.proc = subprocess.Popen(
            [sys.executable, "-m", "bridge", "run", "-c", str(bridge.config)],
            stdout=subprocess.DEVNULL, stderr=bridge.log)
        _wait_opened(bridge.proc, db)  # the app is starting, waiting for the lock
        time.sleep(0.2)
        assert bridge.proc.poll() is None
        bridge.proc.send_signal(signal.SIGHUP)
        time.sleep(0.3)
        holder.execute("ROLLBACK")
        bridge.proc.wait(15)
    finally:
        holder.close()
        bridge.stop()
    log = Path(bridge.log.name).read_text()
    assert "serving on" not in log
    assert bridge.proc.returncode == 0, log
    assert "SIGHUP: stopping as on SIGTERM" in log


async def _create(path: Path) -> None:
    buffer = await Buffer.open(str(path))
    await buffer.close()


def _wait_opened(proc: subprocess.Popen, path: Path, timeout: float = 20) -> None:
    """Until `proc` has `path` open (Linux: /proc/<pid>/fd)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(OSError):
            if any(os.readlink(fd) == str(path) for fd in Path(f"/proc/{proc.pid}/fd").iterdir()):
                return
        time.sleep(0.01)
    raise AssertionError(f"the bridge did not open {path} within {timeout} s")
