"""`bridge leadsquared check` against a simulator process: plain words, nothing changed."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.processes import SimulatorProcess


@pytest.fixture(scope="module")
def simulator():
    sim = SimulatorProcess()
    yield sim
    sim.stop()


def check(tmp_path, sim: SimulatorProcess, **settings) -> subprocess.CompletedProcess:
    section = {"host": sim.url, "access_key": "e2e-access", "secret_key": "e2e-secret",
               **settings}
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({"plugins": {"leadsquared": section}}))
    return subprocess.run([sys.executable, "-m", "bridge", "leadsquared", "check", "-c",
                           str(config)], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


def test_good_keys_say_what_the_first_sync_would_create_and_change_nothing(tmp_path, simulator):
    before = len(simulator.admin("GET", "calls"))
    result = check(tmp_path, simulator)
    assert result.returncode == 0, result.stderr
    assert "ok   keys accepted" in result.stdout
    assert "activity type 'WhatsApp Chats' not found: the first sync would create it" in (
        result.stdout)
    assert "mx_Custom_1" in result.stdout
    assert "held until a lead exists (create_leads: false)" in result.stdout
    calls = simulator.admin("GET", "calls")[before:]
    assert calls and all(call["method"] == "GET" for call in calls)  # read-only


def test_wrong_keys_fail_with_the_reason(tmp_path, simulator):
    result = check(tmp_path, simulator, secret_key="not-the-secret")
    assert result.returncode == 1
    assert "FAIL auth: Invalid access key or secret key" in result.stdout  # LeadSquared's words
    assert "plugins.leadsquared.access_key and secret_key" in result.stdout  # and the fix
    assert "not-the-secret" not in result.stdout + result.stderr


def test_a_missing_fixed_activity_event_fails(tmp_path, simulator):
    result = check(tmp_path, simulator, activity_event=4242)
    assert result.returncode == 1
    assert "FAIL activity_event 4242 does not exist in this account" in result.stdout


def test_an_existing_fixed_activity_event_passes(tmp_path, simulator):
    result = check(tmp_path, simulator, activity_event=21)  # a system type every account has
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok   activity event 21 (Inbound Phone Call Activity)" in result.stdout
