"""Webhooks against adversity: kill -9 right after a 200, and fuzzed signed payloads."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from plugins.whatsapp.body import load_body
from plugins.whatsapp.parse import parse_payload
from plugins.whatsapp.signature import sign
from tests import oneshot
from tests.helpers import free_port
from tests.whatsapp.test_webhook import PATH, SECRET, TOKEN, change, envelope, text_message


def write_config(tmp_path, port: int) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(f"server: {{port: {port}}}\nbuffer: {{path: {tmp_path}/b.db}}\n"
                    f"plugins:\n  whatsapp:\n    verify_token: {TOKEN}\n"
                    f"    app_secret: {SECRET}\n")
    return str(path)


def start_bridge(config: str, port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "bridge", "run", "-c", config],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if oneshot.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.kill()
    raise AssertionError("bridge did not start: " + proc.stderr.read().decode())


def test_sigkill_right_after_200_loses_nothing(tmp_path):
    port = free_port()
    config = write_config(tmp_path, port)
    expected: set[str] = set()
    for round_no in range(5):
        proc = start_bridge(config, port)
        ids = [f"wamid.k{round_no}-{i}" for i in range(25)]
        body = json.dumps(envelope([change([text_message(i, f"91987654{n:04d}")
                                            for n, i in enumerate(ids)])])).encode()
        response = oneshot.post(f"http://127.0.0.1:{port}{PATH}", content=body, headers={
            "Content-Type": "application/json", "X-Hub-Signature-256": sign(body, SECRET)})
        os.kill(proc.pid, signal.SIGKILL)  # the instant the 200 is in our hands
        proc.wait()
        assert response.status_code == 200
        expected.update(ids)
        with sqlite3.connect(tmp_path / "b.db") as db:
            stored = {r[0] for r in db.execute("SELECT provider_id FROM messages")}
        assert expected <= stored, f"lost after kill: {sorted(expected - stored)[:5]}"


# -- fuzzing ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def live_bridge(tmp_path_factory):
    """The real app on 127.0.0.1 in a background thread (hypothesis drives it synchronously)."""
    from bridge.app import create_app
    from bridge.plugins import get_plugin_manager, load_config

    tmp = tmp_path_factory.mktemp("fuzz")
    port = free_port()
    pm = get_plugin_manager()
    app = create_app(load_config(write_config(tmp, port), pm), pm)
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    async def serve():
        from aiohttp import web

        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        ready.set()
        while not stop.is_set():
            await asyncio.sleep(0.05)
        await runner.cleanup()

    stop = threading.Event()
    thread = threading.Thread(target=lambda: loop.run_until_complete(serve()), daemon=True)
    thread.start()
    assert ready.wait(20)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
        yield client, tmp / "b.db"
    stop.set()
    thread.join(20)


# JSON has no NaN or Infinity: bodies with them get a 400 (test_webhook.py covers that)
json_leaf = st.one_of(st.none(), st.booleans(), st.integers(),
                      st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))
json_value = st.recursive(json_leaf, lambda children: st.one_of(
    st.lists(children, max_size=4), st.dictionaries(st.text(max_size=10), children, max_size=4)),
    max_leaves=20)

TYPES = ["text", "image", "audio", "video", "document", "sticker", "location", "contacts",
         "interactive", "button", "reaction", "order", "system", "edit", "revoke", "poll", ""]


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, (*prefix, index))


@st.composite
def mutated_payloads(draw):
    messages = [dict(text_message(f"fz-{draw(st.integers(0, 10**9))}-{i}"),
                     type=draw(st.sampled_from(TYPES))) for i in range(draw(st.integers(1, 3)))]
    return mutate(draw, envelope([change(messages)]), json_value)


def mutate(draw, payload, values):
    """`payload` with 0-4 values anywhere in it (the root excepted) replaced by `values`."""
    for _ in range(draw(st.integers(0, 4))):
        path = draw(st.sampled_from(list(_paths(payload))[1:]))
        parent = payload
        for step in path[:-1]:
            parent = parent[step]
        parent[path[-1]] = draw(values)
    return payload


def _stored(db) -> set[str]:
    with sqlite3.connect(db) as conn:
        return {r[0] for r in conn.execute("SELECT provider_id FROM messages")}


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(payload=st.one_of(mutated_payloads(), json_value))
@example(payload=envelope([change([{"\x00": None}], contacts=[  # no id, a NUL key
    {"profile": {"name": "Asha Rao"}, "wa_id": "919876543210"}])]))
def test_signed_random_and_mutated_payloads_never_5xx_never_half_stored(live_bridge, payload):
    client, db = live_bridge
    body = json.dumps(payload).encode()
    before = _stored(db)
    response = client.post(PATH, content=body, headers={
        "Content-Type": "application/json", "X-Hub-Signature-256": sign(body, SECRET)})
    assert response.status_code in (200, 400), response.text
    after = _stored(db)
    if response.status_code == 400:
        assert after == before
        return
    # read as the bridge reads the body (NUL and lone surrogates made U+FFFD: ids derived
    # from a message's content follow that reading)
    expected = {m.provider_id for m in parse_payload(load_body(body)).messages}
    assert expected <= after  # every message of an acknowledged POST is stored
    assert after - before <= expected  # and nothing else
