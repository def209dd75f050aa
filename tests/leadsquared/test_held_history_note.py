"""A chat whose only messages are history older than the backfill window (an import or a
coexistence history 20 days old) shows nothing synced and nothing pending: the status
page and `bridge status` say why, and which command syncs it."""

from __future__ import annotations

import html
import subprocess
import sys
import time

from tests import oneshot
from tests.leadsquared.test_business_numbers import ASHA, REP_A, start  # noqa: F401
from tests.leadsquared.test_end_to_end import eventually, post
from tests.whatsapp import payloads as p

DAY = 86400
WHY = ("1 message is history older than the backfill window: stored, not synced; "
       "`bridge backfill --sink leadsquared --days 21` syncs it")


def test_an_old_history_chat_says_why_nothing_is_synced_nor_pending(
        start, simulator, tmp_path):  # noqa: F811
    simulator.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    bridge = start(backfill_days=3)
    post(bridge, p.history_change([p.thread(ASHA, [
        p.text_message("wamid.o1", ASHA, "twenty days ago", ts=int(time.time()) - 20 * DAY)])],
        phone_id=REP_A))
    bridge.sync_now()

    def row() -> str | None:  # the chat's row of the status page's conversation list
        page = html.unescape(oneshot.get(f"{bridge.url}/", timeout=10).text)
        start_at = page.find(f'<tr data-key="+{ASHA}">')
        return page[start_at:page.find("</tr>", start_at)] if start_at >= 0 else None

    found = eventually(lambda: (r := row()) and "backfill" in r and r)
    assert 'class="pending">0<' in found and 'class="last-synced">never<' in found
    assert WHY in found

    shown = subprocess.run([sys.executable, "-m", "bridge", "status", "-c",
                            str(tmp_path / "config.yaml")], capture_output=True, text=True,
                           timeout=60, stdin=subprocess.DEVNULL)
    assert shown.returncode == 0, shown.stderr
    (line,) = [x for x in shown.stdout.splitlines() if f"+{ASHA}" in x and "pending" in x]
    assert "last synced never" in line and "pending 0" in line
    assert WHY in line
