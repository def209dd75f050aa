"""`bridge status` and the status page during a CRM outage, on a real `bridge run` against
the simulator process: once a chat's first try failed, every look says "failing" until the
CRM answers again, never "healthy" while nothing reaches it.

Found by adv36: a batch being retried is leased while the sink's client retries each call
inside the try (4 retries with backoff, each call up to `timeout`); the health read counted
only batches waiting between tries, so an outage read "healthy" for most of each cycle
(nearly all of it with a short sync_interval, half of it at the defaults with a CRM that
times out).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from plugins.whatsapp.signature import sign
from tests import oneshot
from tests.helpers import free_port
from tests.leadsquared.test_end_to_end import (
    ASHA,
    SECRET,
    on_both_backends,
    post,
    write_config,
)
from tests.processes import BridgeProcess, buffer_section, eventually
from tests.whatsapp import payloads as p

RAVI = "919123456780"
# every call waits, then fails: each try holds the batch (leased) for seconds
OUTAGE = {"error_rate": 1.0, "latency": 0.6}


@pytest.fixture
def buffer(request, tmp_path):
    """SQLite, or PostgreSQL (a schema of its own) under `@on_both_backends`."""
    with buffer_section(getattr(request, "param", "sqlite"), tmp_path) as section:
        yield section


@contextmanager
def healthy_bridge(tmp_path: Path, simulator, buffer: str | None = None
                   ) -> Iterator[tuple[BridgeProcess, Path]]:
    """A `bridge run` on the simulator (with `buffer`: that buffer, 100 calls/s), once it
    reads healthy with its sink's start done (a start under way reads healthy too, and an
    outage the test begins then fails the start, not a try); stopped after."""
    port = free_port()
    config = tmp_path / "config.yaml"
    settings = {"rate_limit": "100/1s"} if buffer is not None else {}
    write_config(config, simulator, port, *([buffer] if buffer is not None else []), **settings)
    bridge = BridgeProcess(config, port).start()
    try:
        eventually(lambda: (health := bridge.status()["health"])["state"] == "healthy"
                   and "starting" not in health["reason"], timeout=30)
        yield bridge, config
    finally:
        bridge.stop()


def _state(bridge: BridgeProcess) -> tuple[str, dict]:
    report = bridge.status()
    (sink,) = report["sinks"]
    assert report["health"]["state"] == sink["health"]["state"]
    return sink["health"]["state"], sink


@on_both_backends
def test_status_says_failing_through_an_outage_while_a_try_is_under_way(
        tmp_path, simulator, buffer):
    lead = simulator.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    with healthy_bridge(tmp_path, simulator, buffer) as (bridge, _):
        simulator.configure(**OUTAGE)
        post(bridge, p.message_change([p.text_message("wamid.outage-1", ASHA, "hello")]))
        first = eventually(lambda: (s := _state(bridge))[0] == "failing" and s, timeout=60)
        assert "waiting to retry" in first[1]["health"]["reason"]
        seen = []
        until = time.monotonic() + 12  # a few of the sink's retry cycles
        while time.monotonic() < until:
            state, sink = _state(bridge)
            seen.append((state, sink["retrying"]))
            time.sleep(0.25)
        assert {state for state, _ in seen} == {"failing"}, seen
        assert all(retrying == 1 for _, retrying in seen), seen
        assert simulator.activities(lead) == []
        simulator.configure(error_rate=0.0, latency=0.0)  # the CRM is back
        eventually(lambda: _state(bridge)[0] == "healthy", timeout=60)
        eventually(lambda: len(simulator.activities(lead)) == 1, timeout=30)
    assert len(simulator.activities(lead)) == 1


def _requeue(config) -> str:
    done = subprocess.run([sys.executable, "-m", "bridge", "dead-letter", "requeue", "-c",
                           str(config)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


@on_both_backends
def test_a_crm_refusing_every_chat_is_failing_until_they_are_requeued_and_land(
        tmp_path, simulator, buffer):
    """Every post refused (here: a note limit the account enforces below the bridge's; in
    life a broken activity type, or a revoked key past max_attempts): each chat goes to
    dead letter and nothing is waiting to retry, which read "healthy" (exit 0) while
    nothing reached the CRM. One chat's dead letter while others land stays healthy."""
    asha = simulator.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    ravi = simulator.add_lead(FirstName="Ravi", Mobile="+91-9123456780")
    with healthy_bridge(tmp_path, simulator, buffer) as (bridge, config):
        simulator.configure(note_limit=50)  # every transcript is longer: MX refusal
        post(bridge, p.message_change([p.text_message("wamid.refused-1", ASHA, "hello")]))
        eventually(lambda: _state(bridge)[1]["dead_letters"] == 1, timeout=30)
        assert _state(bridge)[0] == "healthy"  # one chat's bad message: needs attention
        post(bridge, p.message_change([p.text_message("wamid.refused-2", RAVI, "hi")]))
        state, sink = eventually(lambda: (s := _state(bridge))[1]["dead_letters"] == 2 and s,
                                 timeout=30)
        assert state == "failing", sink["health"]
        assert "gave up on 2 chats" in sink["health"]["reason"]
        assert "ActivityNote" in sink["health"]["reason"]
        status = subprocess.run([sys.executable, "-m", "bridge", "status", "-c", str(config)],
                                capture_output=True, text=True, timeout=60)
        assert status.returncode == 2 and "FAILING" in status.stdout, status.stdout
        simulator.configure(note_limit=2000)  # fixed in the CRM: requeue
        assert "requeued 2 message(s)" in _requeue(config)
        eventually(lambda: _state(bridge)[0] == "healthy", timeout=30)
        eventually(lambda: len(simulator.activities()) == 2, timeout=30)
    assert [len(simulator.activities(lead)) for lead in (asha, ravi)] == [1, 1]


def _signed_with(bridge: BridgeProcess, secret: str | None, mid: str) -> int:
    body = json.dumps(p.envelope(p.message_change([p.text_message(mid, ASHA, "hi")]))).encode()
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers["X-Hub-Signature-256"] = sign(body, secret)
    return oneshot.post(f"{bridge.url}/webhooks/whatsapp", content=body, headers=headers,
                        timeout=10).status_code


def _cli_status(config) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bridge", "status", "-c", str(config)],
                          capture_output=True, text=True, timeout=60)


def test_webhooks_refused_for_a_wrong_app_secret_make_the_bridge_failing(tmp_path, simulator):
    """Meta signs with a secret the config does not hold (rotated in the App Dashboard):
    every webhook is refused (401), nothing is stored, every sink is idle and healthy, and
    the bridge read "healthy" (exit 0) while no message reached the CRM."""
    lead = simulator.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    with healthy_bridge(tmp_path, simulator) as (bridge, config):
        assert [_signed_with(bridge, None, f"wamid.scan-{n}") for n in range(3)] == [401] * 3
        assert bridge.status()["health"]["state"] == "healthy"  # unsigned: a scanner
        assert [_signed_with(bridge, "rotated-secret", f"wamid.meta-{n}")
                for n in range(2)] == [401, 401]
        health = bridge.status()["health"]
        assert health["state"] == "failing", health
        assert "2 webhooks refused for a wrong signature" in health["reason"]
        assert "plugins.whatsapp.app_secret" in health["reason"]
        done = _cli_status(config)
        assert done.returncode == 2 and "FAILING" in done.stdout, done.stdout
        page = oneshot.get(f"{bridge.url}/", timeout=10).text
        headline = page.split('id="verdict-headline"', 1)[1].split("</h2>", 1)[0]
        assert "Failing" in headline and "wrong signature" in headline, headline
        assert _signed_with(bridge, SECRET, "wamid.meta-0") == 200  # the secret fixed
        assert bridge.status()["health"]["state"] == "healthy"
        assert _cli_status(config).returncode == 0
        eventually(lambda: len(simulator.activities(lead)) == 1, timeout=30)
