"""`bridge status` and `bridge dead-letter` against a real buffer file."""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from bridge.buffer import Buffer, Policy
from bridge.contracts import Outcome
from tests.helpers import message
from tests.processes import failed_start, log_file, tail

POLICY = Policy(max_attempts=3, retry_delay=lambda attempt: 0.0, held_delay=0.0)


def bridge(*args):
    return subprocess.run([sys.executable, "-m", "bridge", *args], capture_output=True,
                          text=True, timeout=60)


# what a CRM's error (or a customer's name) may hold: a terminal escape, a line of its own
HOSTILE = "\x1b]0;pwned\x07\x1b[2J\nChatbridge: HEALTHY"


async def seed(path):
    buffer = await Buffer.open(path)
    await buffer.install_sinks(["crm"])
    await buffer.append([message(1), message(2, "+14155550100")])
    for claim in await buffer.claim("crm", 100, 60):
        outcome = (Outcome.rejected("MXInvalidInputException: Invalid phone" + HOSTILE)
                   if claim.batch.conversation.key == "+14155550100" else Outcome.delivered())
        await buffer.complete(claim, [outcome], POLICY)
    await buffer.close()


def test_status_and_dead_letter_commands(tmp_path):
    db = tmp_path / "b.db"
    asyncio.run(seed(db))
    config = tmp_path / "config.yaml"
    config.write_text(f"buffer: {{path: {db}}}\n")

    report = json.loads(bridge("status", "-c", str(config), "--json").stdout)
    (sink,) = report["sinks"]
    assert (sink["sink"], sink["backlog"], sink["dead_letters"]) == ("crm", 0, 1)
    synced = {c["key"]: c["last_synced_at"] for c in sink["conversations"]}
    assert synced["+919876543210"] is not None and synced["+14155550100"] is None

    text = bridge("status", "-c", str(config)).stdout
    assert "sink crm" in text and "dead letter 1" in text

    listed = bridge("dead-letter", "list", "-c", str(config)).stdout
    assert "+14155550100" in listed and "MXInvalidInputException: Invalid phone" in listed
    for shown in (text, listed):  # as a terminal would get them: nothing it would obey
        assert "\x1b" not in shown and "\x07" not in shown
        assert "\nChatbridge: HEALTHY" not in shown and "pwned" in shown

    requeued = bridge("dead-letter", "requeue", "-c", str(config), "--sink", "crm")
    assert "requeued 1 message(s)" in requeued.stdout
    report = json.loads(bridge("status", "-c", str(config), "--json").stdout)
    assert (report["sinks"][0]["backlog"], report["sinks"][0]["dead_letters"]) == (1, 0)


def test_a_sink_name_the_buffer_never_had_is_refused_not_answered_with_nothing(tmp_path):
    """`--sink CRM` (a typo of `crm`) said "no dead letters" and "requeued 0 message(s);
    nothing to send" while one waited; `--limit 0` listed nothing either."""
    db = tmp_path / "b.db"
    asyncio.run(seed(db))
    config = tmp_path / "config.yaml"
    config.write_text(f"buffer: {{path: {db}}}\n")
    for command in (("list",), ("requeue",)):
        done = bridge("dead-letter", *command, "-c", str(config), "--sink", "CRM")
        assert done.returncode == 2, done.stdout
        assert "no sink named 'CRM' in the buffer (sinks: crm)" in done.stderr
    done = bridge("dead-letter", "list", "-c", str(config), "--limit", "0")
    assert done.returncode == 2 and "--limit" in done.stderr, done.stdout
    listed = bridge("dead-letter", "list", "-c", str(config), "--sink", "crm", "--limit", "1")
    assert "+14155550100" in listed.stdout
    report = json.loads(bridge("status", "-c", str(config), "--json").stdout)
    assert report["sinks"][0]["dead_letters"] == 1  # nothing was requeued by the typo


def test_settle_heap_freezes_startup_objects_and_raises_the_young_threshold():
    import gc

    from bridge.cli import GC_YOUNG_THRESHOLD, settle_heap

    before = gc.get_threshold()
    try:
        settle_heap()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, *before[1:])
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


# -- the first run: health, finding the running bridge, a busy port, no credentials ----------

ROOT = Path(__file__).resolve().parents[2]
IST = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d IST"


def simulator_config(tmp_path, token: str = "cli-token") -> Path:
    config = tmp_path / "config.yaml"
    config.write_text(
        f"server: {{host: 127.0.0.1, port: 1, admin_token: {token}, timezone: Asia/Kolkata}}\n"
        f"buffer: {{path: {tmp_path}/bridge.db}}\nplugins:\n"
        "  whatsapp: {verify_token: cli-verify, app_secret: cli-app-secret}\n"
        "  leadsquared: {host: simulator, access_key: k, secret_key: s, sync_interval: 30s}\n")
    return config


def start_on_any_port(config: Path) -> tuple[subprocess.Popen, str, object]:
    """`bridge run --port 0`; (process, the URL it printed, its log)."""
    log = log_file("cli-bridge")
    out = log_file("cli-bridge-out")
    proc = subprocess.Popen([sys.executable, "-m", "bridge", "run", "-c", str(config),
                             "--port", "0"], stdout=out, stderr=log, stdin=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + 30
    while not (found := re.search(r"listening on (http://\S+)", Path(out.name).read_text())):
        assert proc.poll() is None and time.monotonic() < deadline, tail(log)
        time.sleep(0.05)
    return proc, found[1], Path(out.name)


def test_status_finds_run_port_says_healthy_and_send_test_reports_each_outcome(tmp_path):
    config = simulator_config(tmp_path)
    checked = bridge("check", "-c", str(config))
    assert "sink leadsquared: simulator — nothing reaches LeadSquared" in checked.stdout
    proc, url, printed = start_on_any_port(config)
    try:
        assert "leadsquared: simulator — nothing reaches LeadSquared" in printed.read_text()
        recorded = json.loads((tmp_path / "bridge.db.address").read_text())
        assert recorded == {"url": url, "pid": proc.pid}  # the config says port 1: not there

        def healthy():
            done = bridge("status", "-c", str(config))
            return done if done.returncode == 0 else None
        done = eventually(healthy)
        assert done.stdout.startswith("Chatbridge: HEALTHY — leadsquared: synced")
        assert "simulator — nothing reaches LeadSquared" in done.stdout
        assert re.search(rf"last sync (now|\d+ s ago) \({IST}\)", done.stdout)
        assert "Times are in Asia/Kolkata (IST)." in done.stdout
        report = json.loads(bridge("status", "-c", str(config), "--json").stdout)
        assert report["reached"] == url and report["sinks"][0]["health"]["state"] == "healthy"

        sent = bridge("whatsapp", "send-test", "-c", str(config), "--text", "setup check")
        assert sent.returncode == 0, sent.stderr
        assert "Asked leadsquared to sync now." in sent.stdout
        assert re.search(rf"leadsquared: synced at {IST}", sent.stdout), sent.stdout
        unknown = bridge("whatsapp", "send-test", "-c", str(config), "--from", "14155550100")
        assert "leadsquared: held: no lead with this number in LeadSquared" in unknown.stdout
        assert bridge("sync-now", "-c", str(config)).stdout == "woken: leadsquared\n"

        wrong = tmp_path / "wrong.yaml"  # the same bridge, another token
        wrong.write_text(config.read_text().replace("cli-token", "not-the-token"))
        refused = bridge("status", "-c", str(wrong))
        assert refused.returncode == 3  # unknown, never "stopped"
        assert "UNKNOWN — the bridge at" in refused.stderr and "refused the admin token" \
            in refused.stderr

        # another config's bridge on the port this config names is not taken for its own,
        # whether it answers (same token) or refuses the token: this config's is stopped
        stranger = tmp_path / "stranger.yaml"
        port = url.rsplit(":", 1)[1]
        stranger.write_text(config.read_text().replace("port: 1,", f"port: {port},")
                            .replace("bridge.db", "stranger.db"))
        for token in ("cli-token", "another-token"):
            stranger.write_text(re.sub(r"admin_token: [\w-]+", f"admin_token: {token}",
                                       stranger.read_text()))
            other = bridge("status", "-c", str(stranger))
            assert other.returncode == 2, other.stderr
            assert other.stdout.startswith(
                f"Chatbridge: STOPPED — the bridge is not running ({url}: another bridge "
                "or program answers there)"), other.stdout
        # a killed bridge's address whose pid now names another program, on a port that
        # another program took: not this config's bridge either
        with http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             http.server.BaseHTTPRequestHandler) as squatter:
            threading.Thread(target=squatter.serve_forever, daemon=True).start()
            squat = f"http://127.0.0.1:{squatter.server_address[1]}"
            (tmp_path / "stranger.db.address").write_text(json.dumps({"url": squat,
                                                                        "pid": os.getpid()}))
            reused = bridge("status", "-c", str(stranger))
            squatter.shutdown()
        assert reused.returncode == 2 and f"({squat} or {url}: another" in reused.stdout
        # an address left by a killed bridge (its process gone) is not tried
        gone = subprocess.Popen([sys.executable, "-c", "pass"])
        gone.wait()
        (tmp_path / "stranger.db.address").write_text(json.dumps({"url": url,
                                                                    "pid": gone.pid}))
        stranger.write_text(stranger.read_text().replace(f"port: {port},", "port: 1,"))
        assert bridge("status", "-c", str(stranger)).returncode == 2  # stopped: none there
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
    assert not (tmp_path / "bridge.db.address").exists()  # a clean stop removes it
    stopped = bridge("status", "-c", str(config))
    assert stopped.returncode == 2
    first = stopped.stdout.splitlines()[0]
    assert first == "Chatbridge: STOPPED — the bridge is not running (nothing answers at " \
                    "http://127.0.0.1:1)"
    assert "next sync" not in stopped.stdout


def eventually(check, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, "not reached in time"
        time.sleep(0.2)
    return found


async def unfinished_backfill(path):
    """A sink whose last run ended with a backfill half done and a next sync scheduled."""
    buffer = await Buffer.open(path)
    now = time.time()
    await buffer.append([message(i, minutes_ago=60 + i) for i in range(1, 5)])
    await buffer.install_sinks(["crm"])  # stored before it: backfill material
    await buffer.backfill("crm", now - 86400)
    (claim,) = (await buffer.claim("crm", 2, 60, backfill=True, batch_size=2))[:1]
    await buffer.complete(claim, [Outcome.delivered()] * len(claim.messages), POLICY)
    await buffer.record_sync("crm", now - 600, now - 420, None)  # "next sync" 7 min ago
    await buffer.close()


def test_status_of_a_stopped_bridge_promises_no_next_sync_and_no_time_left(tmp_path):
    db = tmp_path / "b.db"
    asyncio.run(unfinished_backfill(db))
    config = tmp_path / "config.yaml"
    config.write_text(f"server: {{port: {free_port_number()}, timezone: Asia/Kolkata}}\n"
                      f"buffer: {{path: {db}}}\n")
    done = bridge("status", "-c", str(config))
    assert done.returncode == 2
    assert done.stdout.startswith("Chatbridge: STOPPED — the bridge is not running")
    assert "next sync" not in done.stdout and "left" not in done.stdout
    assert re.search(r"backfill    \d/\d messages, .* \(paused: the sink is not running\)",
                     done.stdout), done.stdout
    assert re.search(rf"last sync 10 min ago \({IST}\)", done.stdout)
    report = json.loads(bridge("status", "-c", str(config), "--json").stdout)
    assert report["health"]["state"] == "stopped" and report["reached"] is None
    assert report["sinks"][0]["health"]["last_sync_age_s"] >= 600


def free_port_number() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_busy_port_is_one_line_and_nothing_starts(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = tmp_path / "config.yaml"
        config.write_text(f"server: {{port: {port}}}\nbuffer: {{path: {tmp_path}/b.db}}\n")
        line = failed_start(config)
    assert line == (f"Error: 127.0.0.1:{port} is already in use (another bridge or program "
                    "listens there): stop it, or choose another with `bridge run --port N` "
                    "or server.port")
    assert not (tmp_path / "b.db").exists()  # nothing ran: not even the buffer was opened


def test_the_sample_config_without_credentials_fails_in_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEADSQUARED_")}
    env["BRIDGE_BUFFER"] = str(tmp_path / "b.db")
    done = subprocess.run([sys.executable, "-m", "bridge", "run", "-c",
                           str(ROOT / "config.yaml")], capture_output=True, text=True,
                          timeout=30, env=env, stdin=subprocess.DEVNULL)
    assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.strip() == (
        "Error: set LEADSQUARED_ACCESS_KEY and LEADSQUARED_SECRET_KEY "
        "(plugins.leadsquared.access_key, plugins.leadsquared.secret_key): your LeadSquared "
        "API keys (or run `bridge demo` to try Chatbridge with no account)")
    assert not (tmp_path / "b.db").exists()
    real = {**env, "LEADSQUARED_ACCESS_KEY": "a", "LEADSQUARED_SECRET_KEY": "s"}
    checked = subprocess.run([sys.executable, "-m", "bridge", "check", "-c",
                              str(ROOT / "config.yaml")], capture_output=True, text=True,
                             timeout=30, env=real, stdin=subprocess.DEVNULL)
    assert checked.returncode == 0 and "simulator" not in checked.stdout  # host: auto


def test_a_recorded_address_is_tried_only_on_this_configs_host_and_while_its_process_lives(
        tmp_path):
    """The admin token goes with the call: an address file naming another host (or a
    path) is ignored, as is one left by a process that is gone."""
    from types import SimpleNamespace

    from bridge import address

    config = SimpleNamespace(server=SimpleNamespace(host="0.0.0.0", port=8080),
                             buffer=SimpleNamespace(path=str(tmp_path / "b.db"),
                                                    postgres=False))
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    cases = {("http://127.0.0.1:9000", os.getpid()): ["http://127.0.0.1:9000",
                                                      "http://127.0.0.1:8080"],
             ("http://evil.example:9000", os.getpid()): ["http://127.0.0.1:8080"],
             ("http://127.0.0.1:9000/x", os.getpid()): ["http://127.0.0.1:8080"],
             ("http://127.0.0.1:9000", gone.pid): ["http://127.0.0.1:8080"]}
    for (url, pid), expected in cases.items():
        address.address_file(config).write_text(json.dumps({"url": url, "pid": pid}))
        assert address.candidates(config) == expected, url
    # "::" listens on IPv6 only (asyncio binds it V6ONLY): 127.0.0.1 does not reach it
    assert address.url_of("::", 8080) == "http://[::1]:8080"
    assert address.url_of("0.0.0.0", 8080) == "http://127.0.0.1:8080"
    address.record(config, "http://127.0.0.1:9001")
    assert address.candidates(config)[0] == "http://127.0.0.1:9001"
    address.forget(config)
    assert not address.address_file(config).exists()
