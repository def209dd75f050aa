"""The example webhook sink, pip-installed as a third party would, next to LeadSquared.

Real processes only: the simulator, the example's reference receiver and `bridge run`, all
on 127.0.0.1, fed signed WhatsApp webhooks. Also covers `bridge plugins` and the example's
own test suite, which runs the contract kit.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from plugins.whatsapp.signature import sign
from tests import oneshot
from tests.helpers import child_path, free_port, installed_once
from tests.processes import BridgeProcess, SimulatorProcess, eventually, log_file, wait_http
from tests.whatsapp import payloads as p

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "webhook_sink"
APP_SECRET, VERIFY_TOKEN = "example-app-secret", "example-verify"
WEBHOOK_SECRET = "example-webhook-secret-0123456789"
ASHA, RAVI, STAFF = "919876543210", "919812345678", "919800011122"  # as WhatsApp sends them
HOOKS = ["register_commands", "register_config_sections", "register_filters", "register_sinks"]


@pytest.fixture(scope="session")
def site(tmp_path_factory) -> Path:
    """The example distribution pip-installed (no network, no build isolation) into a dir,
    once in a run (tests/helpers.py installed_once)."""
    target = installed_once(tmp_path_factory, "chatbridge-webhook-sink", EXAMPLE)
    assert list(target.glob("chatbridge_webhook_sink-0.1.0.dist-info"))
    return target


@pytest.fixture
def installed(site, monkeypatch) -> Path:
    """Child processes (bridge, simulator, receiver) see the installed example."""
    monkeypatch.setenv("PYTHONPATH", child_path(site))
    return site


def bridge_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bridge", *args], capture_output=True,
                          text=True, timeout=60, cwd=cwd)


class ReceiverProcess:
    """`bridge webhook receive`: the example's reference endpoint as a real process."""

    def __init__(self) -> None:
        port = free_port()
        self.base, self.url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}/chatbridge"
        self.log = log_file("receiver")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bridge", "webhook", "receive", "--port", str(port),
             "--secret", WEBHOOK_SECRET], stdout=self.log, stderr=subprocess.STDOUT)
        wait_http(f"{self.base}/_received", self.proc, "receiver", self.log)

    def posts(self) -> dict[str, dict]:
        return oneshot.get(f"{self.base}/_received", timeout=10).json()

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def simulator(installed):
    sim = SimulatorProcess()
    yield sim
    sim.stop()


@pytest.fixture
def receiver(installed):
    process = ReceiverProcess()
    yield process
    process.stop()


def write_config(path: Path, port: int, sim: SimulatorProcess | None, url: str,
                 secret: str = WEBHOOK_SECRET) -> Path:
    fast = {"sync_interval": "1s", "retry_base": 0.2, "retry_cap": 1}
    plugins = {"whatsapp": {"verify_token": VERIFY_TOKEN, "app_secret": APP_SECRET},
               "webhook": {"url": url, "secret": secret, "timeout": 5, "exclude": [f"+{STAFF}"],
                           **fast}}
    if sim is not None:
        plugins["leadsquared"] = {"host": sim.url, "access_key": "e2e-access",
                                  "secret_key": "e2e-secret", **fast}
    path.write_text(json.dumps({"server": {"port": port},
                                "buffer": {"path": str(path.parent / "bridge.db")},
                                "plugins": plugins}))  # JSON is YAML
    return path


def post_webhook(bridge: BridgeProcess, change: dict) -> None:
    body = json.dumps(p.envelope(change)).encode()
    response = oneshot.post(f"{bridge.url}/webhooks/whatsapp", content=body, timeout=10, headers={
        "Content-Type": "application/json", "X-Hub-Signature-256": sign(body, APP_SECRET)})
    assert response.status_code == 200, response.text


def settled(bridge: BridgeProcess) -> bool:
    sinks = {s["sink"]: s for s in bridge.status()["sinks"]}
    return set(sinks) == {"leadsquared", "webhook"} and all(
        s["backlog"] == 0 and s["last_sync_at"] for s in sinks.values())


def test_both_sinks_receive_every_signed_webhook_message(tmp_path, simulator, receiver):
    for number, name in ((ASHA, "Asha"), (RAVI, "Ravi"), (STAFF, "Staff")):
        simulator.add_lead(FirstName=name, Mobile=f"+91-{number[2:]}")
    port = free_port()
    bridge = BridgeProcess(write_config(tmp_path / "config.yaml", port, simulator, receiver.url),
                           port).start()
    try:
        now = int(time.time())
        chats = {f"wamid.ex{n}": (ASHA if n < 3 else RAVI, f"msg-{n:04d}") for n in range(5)}
        first = p.message_change([p.text_message(mid, who, text, ts=now - 60 + n)
                                  for n, (mid, (who, text)) in enumerate(chats.items())])
        post_webhook(bridge, first)
        post_webhook(bridge, first)  # Meta retries a webhook: stored and delivered once
        post_webhook(bridge, p.message_change([p.text_message("wamid.staff", STAFF, "msg-9999",
                                                              ts=now - 10)]))
        bridge.sync_now()
        eventually(lambda: settled(bridge))
        sinks = {s["sink"]: s for s in bridge.status()["sinks"]}
    finally:
        bridge.stop()

    assert sinks["webhook"]["dead_letters"] == sinks["leadsquared"]["dead_letters"] == 0
    notes = Counter(text for activity in simulator.activities()
                    for text in set(activity["ActivityNote"].split()) if text.startswith("msg-"))
    assert notes == Counter([text for _, text in chats.values()] + ["msg-9999"])
    posts = receiver.posts()
    ids = Counter(m["id"] for post in posts.values() for m in post["messages"])
    assert ids == Counter(list(chats))  # every message once; the excluded staff chat never sent
    by_number = {post["conversation"]: [m["text"] for m in post["messages"]]
                 for post in posts.values()}
    assert by_number == {f"+{ASHA}": ["msg-0000", "msg-0001", "msg-0002"],
                         f"+{RAVI}": ["msg-0003", "msg-0004"]}  # whole chats, oldest first
    assert all(key.startswith("b") for key in posts)  # the Idempotency-Key is the batch key


def test_bridge_plugins_lists_the_example_with_version_hooks_and_enabled(installed, tmp_path):
    config = write_config(tmp_path / "config.yaml", free_port(), None, "http://127.0.0.1:9/x")
    rows = {r["name"]: r for r in json.loads(bridge_cli("plugins", "-c", str(config),
                                                        "--json").stdout)}
    assert rows["webhook"] == {"name": "webhook", "version": "0.1.0", "hooks": HOOKS,
                               "installed": True, "enabled": True}
    assert rows["leadsquared"]["enabled"] is False and rows["whatsapp"]["enabled"] is True

    table = bridge_cli("plugins", cwd=tmp_path).stdout  # ./config.yaml is found
    assert "webhook      0.1.0    yes      register_commands, " in table
    assert "leadsquared  0.1.0    no       " in table
    elsewhere = bridge_cli("plugins", "--json", cwd=tmp_path.parent)
    assert {r["enabled"] for r in json.loads(elsewhere.stdout)} == {None}
    table = bridge_cli("plugins", cwd=tmp_path.parent).stdout
    assert "(enabled: unknown; no ./config.yaml" in table


def test_hook_register_commands_adds_bridge_webhook_ping(installed, tmp_path, receiver):
    good = write_config(tmp_path / "good.yaml", free_port(), None, receiver.url)
    result = bridge_cli("webhook", "ping", "-c", str(good))
    assert result.returncode == 0, result.stderr
    assert f"{receiver.url} accepted a signed test batch" in result.stdout
    wrong = write_config(tmp_path / "wrong.yaml", free_port(), None, receiver.url,
                         secret="not-the-receiver-secret")
    result = bridge_cli("webhook", "ping", "-c", str(wrong))
    assert result.returncode == 1 and "endpoint answered 401" in result.stderr
    assert "not-the-receiver-secret" not in result.stderr + result.stdout


def test_hook_register_config_sections_validates_plugins_webhook(installed, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("plugins:\n  webhook:\n    url: crm.example.com\n")
    result = bridge_cli("check", "-c", str(config))
    assert result.returncode == 1
    assert "plugins.webhook.url: 'crm.example.com' is not an http:// or https:// URL" \
        in result.stderr
    assert "plugins.webhook.secret: required key is missing" in result.stderr


def test_the_examples_own_suite_passes_with_the_contract_kit():
    # run as its author would: not with this run's PYTEST_ADDOPTS (--durations once listed
    # a test named "..._skipped_for_this_sink_only", read as a skip)
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"} | {"PYTHONPATH": ""}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             "-p", "no:benchmark"],
                            cwd=EXAMPLE, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout[-3000:]
    summary = result.stdout.strip().splitlines()[-1]  # e.g. "15 passed in 8.27s"
    assert re.fullmatch(r"\d+ passed in [\d.]+s( \(.*\))?", summary), summary
