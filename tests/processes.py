"""Real processes for end-to-end tests: the bridge and the LeadSquared simulator."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from tests import oneshot
from tests.backends import POSTGRES, drop_schema, new_schema, postgres_url
from tests.helpers import free_port


@contextlib.contextmanager
def buffer_section(backend: str, directory: Path) -> Iterator[dict[str, str]]:
    """A bridge config's `buffer` section on `backend` ("sqlite": bridge.db in `directory`;
    "postgresql": a fresh schema on $CHATBRIDGE_TEST_POSTGRES, dropped afterwards)."""
    if backend == "sqlite":
        yield {"path": str(directory / "bridge.db")}
        return
    assert POSTGRES, "CHATBRIDGE_TEST_POSTGRES is not set"
    schema = new_schema()
    try:
        yield {"url": postgres_url(schema)}
    finally:
        asyncio.run(drop_schema(schema))


def buffered_ids(section: dict[str, str]) -> set[str]:
    """Provider ids committed to a bridge's buffer (read on a connection of its own)."""
    if "url" not in section:
        with sqlite3.connect(section["path"], timeout=30) as conn:
            return {row[0] for row in conn.execute("SELECT provider_id FROM messages")}
    return asyncio.run(_postgres_ids(section["url"]))


async def _postgres_ids(url: str) -> set[str]:
    import asyncpg

    from bridge.buffer.postgres import split_schema

    dsn, schema = split_schema(url)
    conn = await asyncpg.connect(dsn, server_settings={"search_path": schema})
    try:
        return {row[0] for row in await conn.fetch("SELECT provider_id FROM messages")}
    finally:
        await conn.close()


def log_file(what: str):
    """A file for a child's stderr: a pipe nobody reads fills up and blocks the child."""
    return tempfile.NamedTemporaryFile(prefix=f"chatbridge-{what}-", suffix=".log",
                                       delete=False)


def tail(log) -> str:
    """The last lines a child wrote to its log file."""
    return Path(log.name).read_text(errors="replace")[-2000:]


def wait_http(url: str, proc: subprocess.Popen, what: str, log, timeout: float = 20,
              accept: tuple[int, ...] = (200,)) -> None:
    """Poll `url` until it answers a status in `accept`; fail with stderr if it died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited: " + tail(log))
        try:
            if oneshot.get(url, timeout=1).status_code in accept:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"{what} did not answer {url} within {timeout}s")


class SimulatorProcess:
    """`bridge leadsquared simulator` on a free loopback port, driven by its admin API."""

    def __init__(self) -> None:
        self._spawn()

    def _spawn(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log_file("simulator")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bridge", "leadsquared", "simulator", "--port",
             str(self.port), "--access-key", "e2e-access", "--secret-key", "e2e-secret"],
            stdout=subprocess.DEVNULL, stderr=self.log)
        wait_http(f"{self.url}/_sim/stats", self.proc, "simulator", self.log)

    def fresh(self) -> SimulatorProcess:
        """This process with the account as a new one has it (POST /_sim/reset: no leads,
        calls, faults, knobs or switches left from an earlier test); a new process if it
        exited."""
        if self.proc.poll() is not None:
            self._spawn()
        self.admin("POST", "reset")
        return self

    def admin(self, method: str, what: str, **kw) -> object:
        response = oneshot.request(method, f"{self.url}/_sim/{what}", timeout=10, **kw)
        response.raise_for_status()
        return response.json()

    def add_lead(self, **attributes: str) -> str:
        return self.admin("POST", "leads", json=attributes)["ProspectID"]

    def add_opportunity(self, lead_id: str, name: str, status: str = "Open") -> str:
        body = {"lead_id": lead_id, "name": name, "status": status}
        return self.admin("POST", "opportunities", json=body)["OpportunityId"]

    def add_user(self, first: str, email: str, **more: object) -> str:
        """A user of the account (last, phones, mobile, active); its user id."""
        return self.admin("POST", "users", json={"first": first, "email": email,
                                                  **more})["UserId"]

    def activities(self, lead_id: str | None = None) -> list[dict]:
        return self.admin("GET", "activities", params={"leadId": lead_id} if lead_id else {})

    def attachments(self, activity_id: str) -> list[dict]:
        """An activity's attachments, each with its file's bytes under "Data"."""
        rows = self.admin("GET", "attachments", params={"activity": activity_id})
        for row in rows:
            row["Data"] = oneshot.get(row["AttachmentFile"], timeout=10).content
        return rows

    def configure(self, **knobs: object) -> None:
        self.admin("POST", "config", json=knobs)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


class BridgeProcess:
    """`bridge run -c <config>` as a child process; kill() is a SIGKILL."""

    def __init__(self, config: Path, port: int) -> None:
        self.config, self.port = config, port
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None
        self.log = log_file("bridge")

    def start(self, accept: tuple[int, ...] = (200,)) -> BridgeProcess:
        """Start it and wait until /healthz answers a status in `accept` (healthy: 200)."""
        self.proc = subprocess.Popen([sys.executable, "-m", "bridge", "run", "-c",
                                      str(self.config)],
                                     stdout=subprocess.DEVNULL, stderr=self.log,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        wait_http(f"{self.url}/healthz", self.proc, "bridge", self.log, accept=accept)
        return self

    def status(self) -> dict:
        return oneshot.get(f"{self.url}/status", timeout=10).json()

    def sync_now(self) -> None:
        oneshot.post(f"{self.url}/sync-now", timeout=10).raise_for_status()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        """SIGTERM, as a service manager would; SIGKILL if it does not exit in 15 s."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


def failed_start(config: Path, timeout: float = 30) -> str:
    """Run `bridge run -c config`, which must exit 1 within `timeout` s with one line on
    stderr (no traceback); return that line."""
    try:
        done = subprocess.run([sys.executable, "-m", "bridge", "run", "-c", str(config)],
                              capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"bridge run did not exit within {timeout} s (hung, or serving): "
                             f"{exc.stderr!r}") from None
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1, done.stderr
    return lines[0]


class DemoProcess:
    """`bridge demo` as a child process, its stdout lines collected from a log file."""

    def __init__(self, workdir: Path, token: str = "demo-token", interval: str = "1s") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workdir, self.token = workdir, token
        self.out = log_file("demo-out")
        self.log = log_file("demo")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bridge", "demo", "--port", str(self.port), "--admin-token",
             token, "--interval", interval, "--workdir", str(workdir)],
            stdout=self.out, stderr=self.log, stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def output(self) -> str:
        return Path(self.out.name).read_text(errors="replace")

    def wait_for(self, text: str, timeout: float = 60) -> str:
        """Block until the demo printed `text`; return everything printed so far."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in (printed := self.output()):
                return printed
            if self.proc.poll() is not None:
                raise AssertionError(f"demo exited: {printed}\n{tail(self.log)}")
            time.sleep(0.1)
        raise AssertionError(f"demo did not print {text!r}: {self.output()}")

    def status(self) -> dict:
        return oneshot.get(f"{self.url}/status", timeout=10,
                           headers={"Authorization": f"Bearer {self.token}"}).json()

    def interrupt(self, timeout: float = 20) -> int:
        """Ctrl-C, as a person would; the exit code."""
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# the access token of the media tests' Graph stand-in (tests/conftest.py module_graph)
MEDIA_GRAPH_TOKEN = "media-graph-token"


class GraphProcess:
    """`bridge whatsapp graph-simulator` on a free loopback port, driven by its admin API."""

    def __init__(self, token: str, directory: Path) -> None:
        self.token, self.directory = token, directory
        self._spawn()

    def _spawn(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log_file("graph")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bridge", "whatsapp", "graph-simulator", "--port",
             str(self.port), "--token", self.token, "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL, stderr=self.log)
        wait_http(f"{self.url}/_sim/stats", self.proc, "graph simulator", self.log)

    def fresh(self) -> GraphProcess:
        """This process as a new one is (POST /_sim/reset: no media, faults, coexistence
        settings or webhooks to send left from an earlier test); a new process if it
        exited."""
        if self.proc.poll() is not None:
            self._spawn()
        oneshot.post(f"{self.url}/_sim/reset", timeout=10).raise_for_status()
        return self

    def upload(self, data: bytes | Path, mime: str, phone_number_id: str = "") -> str:
        """Serve these bytes (or a file's, streamed) as a new media id; the id."""
        content = data.open("rb") if isinstance(data, Path) else data
        try:
            response = oneshot.post(f"{self.url}/_sim/media", content=content, timeout=120,
                                    params={"mime_type": mime,
                                            "phone_number_id": phone_number_id})
        finally:
            if isinstance(data, Path):
                content.close()
        response.raise_for_status()
        return response.json()["id"]

    def faults(self, **knobs: object) -> dict:
        response = oneshot.post(f"{self.url}/_sim/faults", json=knobs, timeout=10)
        response.raise_for_status()
        return response.json()

    def delete(self, media_id: str) -> None:
        oneshot.delete(f"{self.url}/_sim/media/{media_id}", timeout=10).raise_for_status()

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def eventually(check: Callable[[], Any], timeout: float = 60.0, every: float = 0.1) -> Any:
    """Poll `check` until it returns something truthy (an HTTP error counts as not yet);
    return it, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except httpx.HTTPError:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout}s: {value!r}")
        time.sleep(every)
