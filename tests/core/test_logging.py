"""--log-format json, and what the logs must never hold: secrets, message text, full numbers."""

from __future__ import annotations

import io
import json
import logging
import re
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime

import aiohttp
import httpx
import pytest

from bridge.app import BRIDGE, create_app
from bridge.logs import (
    make_handler,
    mask_phone,
    redact,
    register_secrets,
    secrets_in,
    setup_logging,
)
from bridge.plugins import get_plugin_manager, load_config
from plugins.leadsquared.simulator import Simulator
from plugins.whatsapp.signature import sign
from tests import oneshot
from tests.helpers import free_port, wait_until
from tests.processes import log_file
from tests.whatsapp.test_webhook import change, envelope, text_message

APP_SECRET = "meta-app-secret-5f3a9c"
VERIFY_TOKEN = "verify-token-e81b2d"
ACCESS_KEY = "usr-access-key-77a1c0"
SECRET_KEY = "lsq-secret-key-0c4d9e"
NUMBER = "+919812345678"
TEXT = "please call me about invoice 4417 zebra"
PATH = "/webhooks/whatsapp"


def forbidden(output: str, *, token: bool = True) -> list[str]:
    """The secrets, message text and full phone number forms that appear in `output`."""
    values = [APP_SECRET, ACCESS_KEY, SECRET_KEY, TEXT, "invoice 4417", NUMBER, NUMBER[1:],
              NUMBER[3:], "%2B" + NUMBER[1:], "+91-" + NUMBER[3:]]
    if token:
        values.append(VERIFY_TOKEN)
    return [value for value in values if value in output]


def webhook(i: int, text: str = TEXT) -> tuple[bytes, str]:
    payload = envelope([change([text_message(f"wamid.log{i}", NUMBER[1:], text)],
                               contacts=[{"profile": {"name": "Zed"}, "wa_id": NUMBER[1:]}])])
    body = json.dumps(payload).encode()
    return body, sign(body, APP_SECRET)


def assert_json_lines(output: str) -> list[dict]:
    entries = []
    for line in output.splitlines():
        if not line.strip():
            continue
        entry = json.loads(line)  # every line is one JSON object
        assert {"ts", "level", "logger", "msg"} <= set(entry), line
        ts = datetime.fromisoformat(entry["ts"])
        assert ts.utcoffset().total_seconds() == 0 and entry["ts"].endswith("Z")
        assert abs((datetime.now(UTC) - ts).total_seconds()) < 600
        entries.append(entry)
    return entries


# -- the formatter and the redaction safety net -------------------------------------------


@pytest.fixture
def captured():
    """setup_logging(json) into a buffer; the root logger restored afterwards."""
    root = logging.getLogger()
    level, httpx_level = root.level, logging.getLogger("httpx").level
    stream = io.StringIO()
    handler = setup_logging("INFO", "json", stream)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        logging.getLogger("httpx").setLevel(httpx_level)
        logging.captureWarnings(False)


def test_json_lines_carry_ts_level_logger_msg_and_extras(captured):
    log = logging.getLogger("bridge.test")
    log.info("drained %d messages", 3, extra={"sink": "crm", "took_s": 0.25})
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("it failed")
    first, second = assert_json_lines(captured.getvalue())
    assert first["level"] == "INFO" and first["logger"] == "bridge.test"
    assert (first["msg"], first["sink"], first["took_s"]) == ("drained 3 messages", "crm", 0.25)
    assert second["level"] == "ERROR" and "ValueError: boom" in second["exc"]


def test_the_formatter_masks_what_slipped_into_a_log_call(captured):
    register_secrets([APP_SECRET])
    log = logging.getLogger("bridge.test")
    log.warning("lead %s / %s / %s", NUMBER, "+91-9812345678", "phone=%2B919812345678")
    log.warning("GET /hook?hub.verify_token=%s&hub.challenge=1", "abc123")
    log.warning("headers: x-LSQ-SecretKey: %s, X-Hub-Signature-256: sha256=%s", SECRET_KEY,
                "ab" * 32)
    log.warning("secret %s in a message", APP_SECRET, extra={"number": NUMBER})
    output = captured.getvalue()
    assert forbidden(output) == [] and "abc123" not in output and "ab" * 32 not in output
    assert output.count("+91******5678") == 4
    assert mask_phone(NUMBER) == "+91******5678"


def test_extra_fields_are_masked_by_name_and_content(captured):
    logging.getLogger("bridge.test").info("call", extra={
        "request_header": {"Authorization": "Basic dXNlcjpwYXNz", "X-Customer": NUMBER},
        "verify_token": VERIFY_TOKEN, "batch_key": "b0123456789abcdef", "numbers": [NUMBER]})
    (entry,) = assert_json_lines(captured.getvalue())
    assert entry["request_header"] == {"Authorization": "***", "X-Customer": "+91******5678"}
    assert (entry["verify_token"], entry["batch_key"]) == ("***", "b0123456789abcdef")
    assert entry["numbers"] == ["+91******5678"]


def test_redaction_leaves_ordinary_log_text_alone():
    for text in ("webhook stored: 3 new, 0 duplicate messages, 1 statuses",
                 "sink leadsquared: backfill queued 120 messages",
                 "LeadSquared post_activity failed (rate_limited: API rate limit exceeded), "
                 "retry 2 in 1.50s", "pruned 5000 delivered messages past retention",
                 "at 2025-02-11 06:02:35 took 1739253755.5 s"):
        assert redact(text) == text


def test_secrets_in_a_config_are_found_by_key_name(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(
        f"server: {{admin_token: admin-token-1234}}\nbuffer: {{path: {tmp_path}/b.db}}\n"
        f"plugins:\n  whatsapp:\n    verify_token: {VERIFY_TOKEN}\n"
        f"    app_secret: [{APP_SECRET}, old-secret-999]\n  leadsquared:\n"
        f"    host: simulator\n    access_key: {ACCESS_KEY}\n    secret_key: {SECRET_KEY}\n")
    found = secrets_in(load_config(config, get_plugin_manager()))
    assert set(found) >= {"admin-token-1234", VERIFY_TOKEN, APP_SECRET, "old-secret-999",
                          ACCESS_KEY, SECRET_KEY}
    assert f"{tmp_path}/b.db" not in found and "simulator" not in found


# -- what ingest and drain log at INFO ----------------------------------------------------


async def test_ingest_and_drain_log_no_secrets_text_or_numbers(tmp_path, serve, captured):
    # The raw capture (no redaction) proves the log calls themselves are clean; the JSON
    # output (the real handler) must be clean as well, the handshake's token included.
    raw = io.StringIO()
    raw_handler = logging.StreamHandler(raw)
    raw_handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.handlers.insert(0, raw_handler)
    sim = Simulator(ACCESS_KEY, SECRET_KEY, seed=3, error_rate=0.3, drop_after_commit_rate=0.2)
    await sim.start()
    try:
        sim.add_opportunity(sim.add_lead(FirstName="Zed", Mobile="+91-9812345678"))
        config = tmp_path / "config.yaml"
        config.write_text(
            f"buffer: {{path: {tmp_path}/b.db}}\nplugins:\n  whatsapp:\n"
            f"    verify_token: {VERIFY_TOKEN}\n    app_secret: {APP_SECRET}\n"
            f"  leadsquared:\n    host: {sim.base_url}\n    access_key: '{ACCESS_KEY}'\n"
            f"    secret_key: {SECRET_KEY}\n    sync_interval: 0.1\n    retry_base: 0.05\n"
            "    retry_cap: 0.2\n    rate_limit: 50/1s\n    max_attempts: 50\n")
        pm = get_plugin_manager()
        app = create_app(load_config(config, pm), pm)
        url = await serve(app)
        async with aiohttp.ClientSession() as http:
            params = {"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN,
                      "hub.challenge": "5"}
            async with http.get(url + PATH, params=params) as resp:
                assert resp.status == 200
            for i in range(3):
                body, signature = webhook(i, f"{TEXT} #{i}")
                async with http.post(url + PATH, data=body, headers={
                        "Content-Type": "application/json",
                        "X-Hub-Signature-256": signature}) as resp:
                    assert resp.status == 200
            async with http.post(url + PATH, data=body, headers={
                    "Content-Type": "application/json",
                    "X-Hub-Signature-256": sign(body, "wrong")}) as resp:
                assert resp.status == 401
        registry = app[BRIDGE].metrics.registry
        await wait_until(lambda: registry.get_sample_value(
            "chatbridge_deliveries_total", {"sink": "leadsquared", "outcome": "delivered"}) == 3,
            timeout=60)
        assert any(TEXT in a["ActivityNote"] for a in sim.activities())  # it did go out
        # the drain's "synced" line is written once its step returns, after the metric; an
        # earlier run's line (a retry, nothing done) must not end the wait
        await wait_until(lambda: re.search(r'"sink leadsquared synced: [^"]* done',
                                           captured.getvalue()), timeout=30)
    finally:
        root.removeHandler(raw_handler)
        await sim.stop()

    output = captured.getvalue()
    entries = assert_json_lines(output)
    messages = [e["msg"] for e in entries]
    assert any(m.startswith("sink leadsquared synced: ") and " done" in m
               for m in messages)
    assert any(m == "webhook refused: bad_signature" for m in messages)
    assert any(e["logger"] == "aiohttp.access" for e in entries)
    assert any(e["level"] == "WARNING" and "LeadSquared" in e["msg"] for e in entries), \
        "the faults should have logged retries"
    assert forbidden(output) == []
    assert forbidden(raw.getvalue(), token=False) == []
    assert VERIFY_TOKEN in raw.getvalue()  # aiohttp's access log: masked only by the formatter


# -- the real command ---------------------------------------------------------------------


def test_bridge_run_with_log_format_json_writes_only_json_lines(tmp_path):
    port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(
        f"server: {{host: 127.0.0.1, port: {port}}}\nbuffer: {{path: {tmp_path}/b.db}}\n"
        f"plugins:\n  whatsapp:\n    verify_token: {VERIFY_TOKEN}\n"
        f"    app_secret: {APP_SECRET}\n  leadsquared:\n    host: simulator\n"
        f"    access_key: '{ACCESS_KEY}'\n    secret_key: {SECRET_KEY}\n    sync_interval: 1h\n"
        "    create_leads: true\n")
    err = log_file("json")
    proc = subprocess.Popen([sys.executable, "-m", "bridge", "--log-format", "json", "run",
                             "--access-log", "-c", str(config)],
                            stdout=subprocess.DEVNULL, stderr=err)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for(lambda: oneshot.get(base + "/healthz", timeout=1).status_code == 200, proc)
        params = {"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "9"}
        assert oneshot.get(base + PATH, params=params).text == "9"
        body, signature = webhook(1)
        assert oneshot.post(base + PATH, content=body, headers={
            "Content-Type": "application/json", "X-Hub-Signature-256": signature}).status_code \
            == 200
        assert oneshot.post(base + "/sync-now").status_code == 200

        def delivered() -> bool:
            text = oneshot.get(base + "/metrics", timeout=2).text
            return ('chatbridge_deliveries_total{outcome="delivered",sink="leadsquared"} 1.0'
                    in text)
        _wait_for(delivered, proc)
    finally:
        _interrupt(proc)
    output = open(err.name, encoding="utf-8").read()
    entries = assert_json_lines(output)
    loggers = {e["logger"] for e in entries}
    assert {"aiohttp.access", "bridge.sync", "plugins.leadsquared.sink"} <= loggers
    assert forbidden(output) == [], output


def _interrupt(proc: subprocess.Popen) -> None:
    """Ctrl-C the bridge as a person would; kill it if it does not stop within 30 s."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"bridge exited with {proc.returncode}")
        try:
            if predicate():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


async def test_access_log_of_a_handshake_hides_the_token(captured, tmp_path, serve):
    config = tmp_path / "config.yaml"
    config.write_text(f"buffer: {{path: {tmp_path}/b.db}}\nplugins:\n  whatsapp:\n"
                      f"    verify_token: {VERIFY_TOKEN}\n    app_secret: {APP_SECRET}\n")
    pm = get_plugin_manager()
    url = await serve(create_app(load_config(config, pm), pm))
    async with aiohttp.ClientSession() as http, http.get(url + PATH, params={
            "hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN,
            "hub.challenge": "1"}) as resp:
        assert resp.status == 200
    # aiohttp writes the access line after the response: wait for it, with a deadline
    await wait_until(lambda: "aiohttp.access" in captured.getvalue(), timeout=5)
    (entry,) = [e for e in assert_json_lines(captured.getvalue())
                if e["logger"] == "aiohttp.access"]
    assert "hub.verify_token=***" in entry["msg"] and VERIFY_TOKEN not in entry["msg"]


# -- repeats and noise ----------------------------------------------------------------------


def _record(msg: str, at: float, *args: object) -> logging.LogRecord:
    record = logging.makeLogRecord({"name": "asyncio", "levelno": logging.ERROR,
                                    "levelname": "ERROR", "msg": msg, "args": args})
    record.created = at  # the seam: the filter reads the record's time, not the clock
    return record


def test_a_line_repeated_in_a_tight_loop_is_collapsed_with_a_count():
    stream = io.StringIO()
    handler = make_handler("text", stream)
    for i in range(5000):  # what accept() out of descriptors did: thousands a second
        handler.handle(_record("socket.accept() out of system resource (fd %d)", 100 + i / 5000,
                               i))
    handler.handle(_record("another line", 100.5))
    handler.handle(_record("socket.accept() out of system resource (fd %d)", 111, 0))
    lines = stream.getvalue().splitlines()
    assert len(lines) == 12, lines[:3]  # 10 in the burst, the other line, one summary
    assert lines[10].endswith("another line")
    assert lines[11].endswith("(fd 0) (repeated 4990 more times in 10 s)"), lines[11]


def test_a_hang_up_mid_body_is_one_debug_line_and_debug_has_no_sqlite_statements(tmp_path):
    port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(
        f"server: {{host: 127.0.0.1, port: {port}, admin_token: hangup-admin-token}}\n"
        f"buffer: {{path: {tmp_path}/b.db}}\n"
        f"plugins:\n  whatsapp:\n    verify_token: {VERIFY_TOKEN}\n"
        f"    app_secret: {APP_SECRET}\n")
    err = log_file("hangup")
    proc = subprocess.Popen([sys.executable, "-m", "bridge", "--log-level", "DEBUG", "run",
                             "-c", str(config)], stdout=subprocess.DEVNULL, stderr=err)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for(lambda: oneshot.get(base + "/healthz", timeout=1).status_code == 200, proc)
        body, signature = webhook(1)
        assert oneshot.post(base + PATH, content=body, headers={
            "Content-Type": "application/json", "X-Hub-Signature-256": signature}).status_code \
            == 200
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         "Expect: 100-continue\r\nContent-Length: 1000\r\n\r\n".encode())
            assert sock.recv(100).startswith(b"HTTP/1.1 100")  # the handler is reading
            sock.sendall(b"{")
        _wait_for(lambda: "hung up" in open(err.name, encoding="utf-8").read(), proc)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:  # any route
            sock.sendall(b"POST /login HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                         b"Content-Type: application/x-www-form-urlencoded\r\n"
                         b"Content-Length: 1000\r\n\r\n")
            assert sock.recv(100).startswith(b"HTTP/1.1 100")
            sock.sendall(b"token=")
        _wait_for(lambda: "hung up during" in open(err.name, encoding="utf-8").read(), proc)
    finally:
        _interrupt(proc)
    output = open(err.name, encoding="utf-8").read()
    assert "webhook stored" in output  # DEBUG was on
    assert "aiosqlite" not in output and "invoice 4417" not in output, output[-2000:]
    assert "Traceback" not in output and " ERROR " not in output, output[-2000:]
    webhook_line, login_line = [x for x in output.splitlines() if "hung up" in x]
    assert " DEBUG plugins.whatsapp.webhook: " in webhook_line
    assert " DEBUG bridge.security: client hung up during POST /login" in login_line
