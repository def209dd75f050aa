"""Shared test parts: small real plugins, message factories, a server runner."""

from __future__ import annotations

import asyncio
import fcntl
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict

from bridge import Batch, Direction, Message, Outcome, SinkSettings, hookimpl
from bridge.sync import SinkRunner

# Child processes (`bridge run`, the simulators, the CLI: several hundred a run) import
# httpx, which imports trio when it is installed (httpcore) and its command line's rich
# (httpx._main): ~0.14 s of CPU a start, over 10 % of a `bridge run` start, for packages
# only the dev tools bring (selenium, import-linter) and no child uses. (pygments stays:
# pytest imports it, and the bench scripts a test runs import tests modules, so pytest.)
# Children see this directory first on PYTHONPATH: those imports fail as they do in an
# install of Chatbridge alone, which httpx and httpcore expect (both catch ImportError).
# A child that needs the dev tools (import-linter) gets `with_dev_tools(env)`.
WITHOUT_DEV_TOOLS = str(Path(__file__).resolve().parent / "fixtures" / "without_dev_tools")

# Every process that imports aiohttp (each `bridge run`, simulator and CLI command) built
# two TLS contexts at import (aiohttp.connector), each parsing the system's whole CA bundle
# (~140 certificates), and each httpx client a third from certifi's: under valgrind, 15 %
# of the instructions a bridge start spends importing. No process of the suite speaks TLS
# (every server is plain HTTP on 127.0.0.1), so the tests and their children trust one
# certificate made for them (SSL_CERT_FILE, which OpenSSL and httpx read): a context
# costs a file of one certificate. A test that needed TLS would have to bring its own CA.
NO_TLS_CA = str(Path(__file__).resolve().parent / "fixtures" / "no_tls_ca.pem")
# a sitecustomize noting each child's start and CPU, on PYTHONPATH only with
# CHATBRIDGE_COUNT_STARTS=FILE set (tests/conftest.py); summed by `python -m tests.starts`
COUNT_STARTS = str(Path(__file__).resolve().parent / "fixtures" / "count_starts")


def child_path(*entries: object) -> str:
    """A PYTHONPATH for a child: `entries`, then WITHOUT_DEV_TOOLS."""
    return os.pathsep.join([*map(str, entries), WITHOUT_DEV_TOOLS])


def with_dev_tools(env: dict[str, str]) -> dict[str, str]:
    """`env` with WITHOUT_DEV_TOOLS taken off PYTHONPATH."""
    kept = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != WITHOUT_DEV_TOOLS]
    return {**{k: v for k, v in env.items() if k != "PYTHONPATH"},
            **({"PYTHONPATH": os.pathsep.join(kept)} if kept else {})}


def message(n: int, conversation: str = "+919876543210", *, source: str = "test",
            minutes_ago: float = 0, text: str | None = None, account: str = "acct",
            **extra: object) -> Message:
    """A text message with a predictable provider id (`account`: the business number)."""
    return Message(
        source=source, provider_id=f"m{n}", conversation=conversation, account=account,
        direction=Direction.IN, sent_at=datetime.now(UTC) - timedelta(minutes=minutes_ago),
        kind="text", text=text if text is not None else f"hello {n}", contact_name="Asha",
        **extra,
    )


class RecordingSink:
    """A sink that keeps what it received; `behaviour` may change any outcome."""

    def __init__(self, name: str = "memory", behaviour: Callable[[Message], Outcome] | None = None,
                 delay: float = 0.0, **settings: object) -> None:
        self.name = name
        self.settings = SinkSettings(**{"sync_interval": 0.05, "retry_base": 0.01,
                                        "retry_cap": 0.05, **settings})
        self.behaviour = behaviour
        self.delay = delay
        self.batches: list[Batch] = []
        self.delivered: list[str] = []
        self.started = self.closed = False

    async def start(self) -> None:
        self.started = True

    async def deliver(self, batch: Batch) -> list[Outcome]:
        if self.delay:
            await asyncio.sleep(self.delay)
        self.batches.append(batch)
        outcomes = []
        for m in batch.messages:
            outcome = self.behaviour(m) if self.behaviour else Outcome.delivered()
            if outcome.kind == "delivered":
                self.delivered.append(m.provider_id)
            outcomes.append(outcome)
        return outcomes

    async def close(self) -> None:
        self.closed = True


class TestSourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: str
    path: str = "/ingest"


class PostSource:
    """POST a JSON list of {"id", "conversation", "text"[, "name"]} to store it."""

    name = "test"

    def __init__(self, path: str = "/ingest", history: list[Message] | None = None) -> None:
        self.path = path
        self.history = history or []

    def routes(self, ingest: object) -> list[web.RouteDef]:
        async def handle(request: web.Request) -> web.Response:
            items = await request.json()
            stored = await ingest.append([_from_item(item) for item in items])
            return web.json_response({"stored": stored})
        return [web.post(self.path, handle)]

    def backfill(self, since: datetime) -> list[Message]:
        return [m for m in self.history if m.sent_at >= since]


def _from_item(item: dict) -> Message:
    return Message(source="test", provider_id=item["id"], conversation=item["conversation"],
                   account="acct", direction=Direction.IN, sent_at=datetime.now(UTC),
                   kind="text", text=item["text"], contact_name=item.get("name"))


class CorePlugin:
    """Registers a PostSource and given sinks/filters, like a third-party plugin would."""

    def __init__(self, sinks: list = (), filters: list = (), source: object = "default"):
        self.sinks = list(sinks)
        self.filters = list(filters)
        self.source = PostSource() if source == "default" else source

    @hookimpl
    def register_config_sections(self) -> dict:
        return {"testsource": TestSourceConfig}

    @hookimpl
    def register_sources(self, context: object) -> list:
        return [self.source] if self.source else []

    @hookimpl
    def register_sinks(self, context: object) -> list:
        return self.sinks

    @hookimpl
    def register_filters(self, context: object) -> list:
        return self.filters


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def wait_until(predicate: Callable[[], object], timeout: float = 10.0,
                     every: float = 0.02) -> Any:
    """Poll `predicate` (sync or async) until truthy, or fail the test; return its value."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(every)


@asynccontextmanager
async def running(buffer, sinks, filters=(), sources=()) -> AsyncIterator[list]:
    """Install and run a drain loop per sink until the block ends."""
    await buffer.install_sinks([s.name for s in sinks])
    stop = asyncio.Event()
    runners = [SinkRunner(s, buffer, filters, sources) for s in sinks]
    tasks = [asyncio.create_task(r.run(stop)) for r in runners]
    try:
        yield runners
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 15)


def pip_install_into(target: Path, source: Path) -> Path:
    """pip-install the distribution at `source` into the directory `target` (no network,
    no build isolation, no dependencies), as a user's `pip install` would lay it out."""
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "--target", str(target), str(source)],
        check=True, capture_output=True, timeout=300)
    return target


def installed_once(tmp_path_factory: Any, name: str,
                   source: Path | Callable[[Path], Path]) -> Path:
    """pip_install_into a directory of this run that every xdist worker shares, once: the
    first worker to ask installs (`source`, or the tree `source(empty dir)` makes), under a
    lock; the others wait for it and take the same directory. A pip install is three
    processes (pip, then the build backend twice: ~1 s of CPU); per worker and module,
    each worker that ran a plugin test installed them all again. Read-only once made."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the run's directory, above each worker's own
    target, done = root / f"installed-{name}", root / f"installed-{name}.done"
    with _locked(root / f"installed-{name}.lock"):
        if not done.exists():  # (what a failed try left is made again)
            tree = source
            if not isinstance(source, Path):
                tree = root / f"source-{name}"
                shutil.rmtree(tree, ignore_errors=True)
                tree.mkdir()
                tree = source(tree)
            shutil.rmtree(target, ignore_errors=True)
            pip_install_into(target, tree)
            done.touch()
    return target


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on `path` (created) while the block runs, across processes."""
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
