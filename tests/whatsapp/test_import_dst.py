"""An exported chat across the end of summer time (adv38): the hour from 01:00 to 02:00
shows twice in the file, and each message keeps its real time and its place."""

from __future__ import annotations

from datetime import UTC, datetime

from tests.whatsapp.test_import import import_file

EXPORT = """01/11/26, 01:40 - Asha Rao: before the clocks go back
01/11/26, 01:55 - Ravi (Acme Homes): still summer time
01/11/26, 01:05 - Asha Rao: after the clocks went back
01/11/26, 01:30 - Ravi (Acme Homes): winter now
01/11/26, 02:10 - Asha Rao: later
"""


async def test_messages_after_the_clocks_go_back_keep_their_times_and_order(tmp_path):
    source = tmp_path / "WhatsApp Chat with Asha Rao.txt"
    source.write_text(EXPORT, encoding="utf-8")
    _, stored, kept = await import_file(tmp_path / "b.db", source, me="Ravi (Acme Homes)",
                                        tz="America/New_York", order="dmy")
    assert stored.new == 5
    assert [(m.sent_at, m.text) for m in kept] == [  # EDT is UTC-4 until 06:00 UTC, EST -5
        (datetime(2026, 11, 1, 5, 40, tzinfo=UTC), "before the clocks go back"),
        (datetime(2026, 11, 1, 5, 55, tzinfo=UTC), "still summer time"),
        (datetime(2026, 11, 1, 6, 5, tzinfo=UTC), "after the clocks went back"),
        (datetime(2026, 11, 1, 6, 30, tzinfo=UTC), "winter now"),
        (datetime(2026, 11, 1, 7, 10, tzinfo=UTC), "later")]
