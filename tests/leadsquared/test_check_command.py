"""`bridge leadsquared check` against a simulator process: plain words, nothing changed."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests import oneshot
from tests.processes import SimulatorProcess

WRITES = ("Lead.Create", "Lead.CreateOrUpdate", "Lead.Update", "CreateType",
          "ProspectActivity.svc/Create", "Bulk/", "Attachment/Add", "Capture", "/File/Upload")


def writes(calls: list[dict]) -> list[str]:
    """The calls that change an account (read-only means none)."""
    return [c["path"] for c in calls if any(w in c["path"] for w in WRITES)]


def check(tmp_path, sim: SimulatorProcess, *options: str,
          **settings) -> subprocess.CompletedProcess:
    section = {"host": sim.url, "access_key": "e2e-access", "secret_key": "e2e-secret",
               **settings}
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({"plugins": {"leadsquared": section}}))
    return subprocess.run([sys.executable, "-m", "bridge", "leadsquared", "check", "-c",
                           str(config), *options], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


def create_type(sim: SimulatorProcess, name: str, fields: list[str], attachments: int) -> int:
    body = {"ActivityEventName": name, "AllowAttachments": attachments, "Fields": [
        {"SchemaName": f, "DisplayName": f"F {f}", "DataType": "String"} for f in fields]}
    answer = oneshot.post(f"{sim.url}/v2/ProspectActivity.svc/CreateType", json=body,
                          headers={"x-LSQ-AccessKey": "e2e-access",
                                   "x-LSQ-SecretKey": "e2e-secret"})
    return answer.json()["Message"]["Id"]


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
    assert calls and writes(calls) == []  # read-only


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


def test_an_existing_type_is_reported_with_its_fields_and_attachments(tmp_path, simulator):
    simulator.configure(activity_setting="attachments_key")  # the account says AllowAttachments
    create_type(simulator, "Chats Ready", [f"mx_Custom_{i}" for i in range(1, 6)], 1)
    create_type(simulator, "Chats Bare", ["mx_Custom_1"], 0)
    ready = check(tmp_path, simulator, activity_type="Chats Ready")
    assert ready.returncode == 0, ready.stdout + ready.stderr
    assert "info fields: mx_Custom_1 F mx_Custom_1 (String)" in ready.stdout
    assert "ok   attachments allowed on this type" in ready.stdout
    assert "lacks" not in ready.stdout
    bare = check(tmp_path, simulator, activity_type="Chats Bare")
    assert "warn the type lacks mx_Custom_2, mx_Custom_3, mx_Custom_4, mx_Custom_5" in bare.stdout
    assert "warn attachments are not allowed on this type" in bare.stdout
    simulator.configure(activity_setting="documented")
    silent = check(tmp_path, simulator, activity_type="Chats Ready")
    assert "info attachments: the account did not say whether this type allows them" in (
        silent.stdout)


def test_opportunity_types_found_or_configured_are_reported(tmp_path, simulator):
    found = check(tmp_path, simulator)
    assert "ok   opportunity types found: 12000 (Opportunity)" in found.stdout
    configured = check(tmp_path, simulator, opportunities={"types": [12000, 12999]})
    assert "ok   opportunity types from config: 12000 (Opportunity), 12999 (?)" in (
        configured.stdout)
    assert "warn opportunity type(s) [12999] are not among" in configured.stdout
    off = check(tmp_path, simulator, opportunities=False)
    assert "info opportunities: off" in off.stdout


def test_phone_probe_finds_a_lead_and_the_negative_control_finds_none(tmp_path, simulator):
    lead = simulator.add_lead(FirstName="Probe", Mobile="+91-9811122233")
    before = len(simulator.admin("GET", "calls"))
    result = check(tmp_path, simulator, "--phone", "+919811122233")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"ok   phone lookup: +919811122233 is lead {lead}" in result.stdout
    assert "ok   negative control: 910000000000 matches no lead" in result.stdout
    calls = simulator.admin("GET", "calls")[before:]
    assert writes(calls) == []  # still read-only
    missing = check(tmp_path, simulator, "--phone", "+919811122299")
    assert "info phone lookup: no lead has +919811122299" in missing.stdout


def test_a_lookup_that_ignores_the_number_fails_the_negative_control(tmp_path, lsq):
    """A lookup that answers a lead for a number no lead can have is not filtering."""
    own = lsq  # reset for this test (as `simulator` is): no later test sees this lead
    own.add_lead(FirstName="Zero", Phone="910000000000")  # stands in for such a lookup
    result = check(tmp_path, own)
    assert result.returncode == 1
    assert "FAIL phone lookup of 910000000000, a number no lead can have" in result.stdout


@pytest.mark.parametrize("key", ["access_key", "secret_key"])
def test_a_key_of_only_spaces_is_refused_before_any_call(tmp_path, simulator, key):
    before = len(simulator.admin("GET", "calls"))
    result = check(tmp_path, simulator, **{key: "    "})
    assert result.returncode == 1
    assert f"plugins.leadsquared.{key}: is only spaces" in result.stderr
    assert len(simulator.admin("GET", "calls")) == before  # refused by the config


def test_owners_are_checked_user_by_user_and_each_number_says_whom_it_maps_to(tmp_path, lsq):
    sim = lsq  # an account as new (tests/conftest.py module_simulator, reset)
    sim.add_user("Priya", "priya@example.com", last="Rao")
    sim.add_user("Old", "old@example.com", active=False)
    good = check(tmp_path, sim, owners={"+919800000001": "priya@example.com"})
    assert good.returncode == 0, good.stdout + good.stderr
    assert "ok   owners: +919800000001 -> Priya Rao <priya@example.com>" in good.stdout
    assert "owner_fallback lead_owner" in good.stdout
    bad = check(tmp_path, sim, owners={"+919800000001": "priya@example.com",
                                       "220000000000002": "old@example.com",
                                       "+919800000003": "ghost@example.com"})
    assert bad.returncode == 1
    assert "FAIL owners: 220000000000002 -> old@example.com is inactive" in bad.stdout
    assert ("FAIL owners: +919800000003 -> ghost@example.com is no user of this account"
            in bad.stdout)
    assert writes(sim.admin("GET", "calls")) == []


def test_owners_auto_says_which_numbers_it_matched_and_which_users_hold_none(tmp_path, lsq):
    sim = lsq  # an account as new (tests/conftest.py module_simulator, reset)
    sim.add_user("Priya", "priya@example.com", last="Rao", phones="+91-9800000001")
    sim.add_user("Arjun", "arjun@example.com", mobile="+91 98000 00002")
    sim.add_user("Kiran", "kiran@example.com")
    run = check(tmp_path, sim, owners="auto")
    assert run.returncode == 0, run.stdout + run.stderr
    assert ("ok   owners: +919800000001 -> Priya Rao <priya@example.com> (the user's "
            "phone number)") in run.stdout
    assert "+919800000002 -> Arjun <arjun@example.com>" in run.stdout
    assert "no phone number held for 2 user(s)" in run.stdout  # Kiran and the admin
    assert "kiran@example.com" in run.stdout


def test_owners_auto_says_when_two_users_hold_one_number_and_picks_one_steadily(tmp_path, lsq):
    """Two users holding one number (the same form, or Brazil's with and without the
    ninth digit): check fails naming both, and the number goes to the same one whatever
    order the account lists them in (the first by email), not to both."""
    sim = lsq  # an account as new (tests/conftest.py module_simulator, reset)
    sim.add_user("Zed", "zed@example.com", phones="+91 98000 00001")
    sim.add_user("Priya", "priya@example.com", phones="+91-9800000001")
    sim.add_user("Caio", "caio@example.com", mobile="+55 11 98765-4321")
    sim.add_user("Bia", "bia@example.com", phones="+551187654321")
    run = check(tmp_path, sim, owners="auto")
    assert run.returncode == 1, run.stdout + run.stderr
    lines = [line for line in run.stdout.splitlines() if "owners:" in line]
    held = [line for line in lines if "held by" in line]
    assert len(held) == 2, run.stdout
    assert any("priya@example.com" in line and "zed@example.com" in line
               and line.startswith("FAIL") for line in held), run.stdout
    assert any("bia@example.com" in line and "caio@example.com" in line
               for line in held), run.stdout
    assert not any("-> Zed" in line or "-> Caio" in line for line in lines), run.stdout
    assert any("+919800000001 -> Priya" in line for line in lines), run.stdout
