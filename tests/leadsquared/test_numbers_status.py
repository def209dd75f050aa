"""A manager's view per business number (a rep's): `/status` and `bridge status` say, per
number, what is in flight, held and failing, through a real `bridge run` and the
simulator process."""

from __future__ import annotations

import subprocess
import sys

from tests.leadsquared.test_end_to_end import eventually, post
from tests.leadsquared.test_identity_end_to_end import simulator, start  # noqa: F401
from tests.leadsquared.test_owners_end_to_end import ARJUN_NUMBER, OWNERS, PRIYA_NUMBER, change


def numbers(bridge) -> dict[str, dict]:
    (sink,) = bridge.status()["sinks"]
    return {row["account"]: row for row in sink["numbers"]}


def test_status_says_per_business_number_what_is_held_and_what_is_failing(
        start, simulator, tmp_path):  # noqa: F811
    """Asha (Priya's number) has a lead, Ravi (Arjun's) none: Arjun's chat is held while
    Priya's goes through; then the account fails every call and Priya's next chat is
    failing. Was: the status had one row per customer naming one number, and nothing per
    number: which rep's chats were stuck could not be told."""
    simulator.add_user("Priya", "priya@example.com", last="Rao")
    simulator.add_user("Arjun", "arjun@example.com", last="Mehta")
    simulator.add_lead(FirstName="Asha", Mobile="919876543210")
    bridge = start(owners=OWNERS)
    post(bridge, change(PRIYA_NUMBER, "919876543210", "Asha", "wamid.s1", "hello priya"),
         change(ARJUN_NUMBER, "919123456780", "Ravi", "wamid.s2", "hello arjun"))
    bridge.sync_now()
    held = eventually(lambda: (rows := numbers(bridge)).get(ARJUN_NUMBER[0], {}).get("held")
                      and PRIYA_NUMBER[0] not in rows and rows, timeout=60)
    arjun = held[ARJUN_NUMBER[0]]
    assert (arjun["failing"], arjun["dead"]) == (0, 0) and "no lead" in arjun["held_reason"]

    simulator.configure(error_rate=1.0)
    post(bridge, change(PRIYA_NUMBER, "919876543210", "Asha", "wamid.s3", "still there?"))
    bridge.sync_now()
    rows = eventually(lambda: (rows := numbers(bridge)).get(PRIYA_NUMBER[0], {}).get(
        "failing") and rows, timeout=60)
    priya = rows[PRIYA_NUMBER[0]]
    assert priya["held"] == 0 and priya["failing_since"] and priya["last_error"]
    assert rows[ARJUN_NUMBER[0]]["held"] == 1

    config = tmp_path / "config.yaml"
    text = subprocess.run([sys.executable, "-m", "bridge", "status", "-c", str(config)],
                          capture_output=True, text=True, timeout=60).stdout
    assert "by number" in text
    line = next(t for t in text.splitlines() if PRIYA_NUMBER[0] in t and "failing" in t)
    assert "1 failing since" in line
    assert any(ARJUN_NUMBER[0] in t and "1 held (no lead" in t for t in text.splitlines())
    assert "owners      +919800000001 → priya@example.com" in text
    simulator.configure(error_rate=0.0)
    bridge.sync_now()
    eventually(lambda: PRIYA_NUMBER[0] not in numbers(bridge), timeout=60)
