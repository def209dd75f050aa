"""A message stamped by a wrong clock at the edge of what a datetime holds (adv38): late in
year 9999 UTC it has no local time in a zone ahead of UTC. The status page, the
conversation page and `bridge status` show it in UTC instead of failing."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import aiohttp

from bridge.app import create_app
from bridge.buffer import Buffer
from bridge.config import BridgeConfig, BufferConfig, ServerConfig
from bridge.textreport import Clock
from tests.helpers import CorePlugin, RecordingSink, message

LAST_HOUR = datetime(9999, 12, 31, 23, 0, tzinfo=UTC)  # 9999-12-31 23:59:59 is the last


async def test_a_message_stamped_late_in_year_9999_leaves_the_pages_readable(pm, tmp_path,
                                                                             serve):
    path = tmp_path / "app.db"
    buffer = await Buffer.open(str(path))
    await buffer.install_sinks(["memory"])
    await buffer.append([dataclasses.replace(message(1), sent_at=LAST_HOUR)])
    await buffer.close()
    pm.register(CorePlugin(sinks=[RecordingSink()]), name="testsource")
    config = BridgeConfig(server=ServerConfig(timezone="Asia/Kolkata"),
                          buffer=BufferConfig(path=str(path)))
    base = await serve(create_app(config, pm))
    async with aiohttp.ClientSession() as http:
        for url in ("/", "/conversation?key=%2B919876543210"):
            async with http.get(base + url) as resp:
                assert resp.status == 200, (url, await resp.text())
                assert "9999-12-31 23:00:00 UTC" in await resp.text()


def test_the_terminal_report_shows_such_a_time_in_utc():
    clock = Clock(ZoneInfo("Pacific/Kiritimati"))  # UTC+14
    assert clock.at(LAST_HOUR) == "9999-12-31 23:00:00 UTC"
    assert clock.at(datetime(2026, 1, 1, tzinfo=UTC)) == "2026-01-01 14:00:00 +14"


async def test_the_hourly_chart_names_each_hour_by_its_start_in_a_half_hour_zone(buffer):
    """Its hours are UTC hours: in Asia/Kolkata (UTC+05:30) the one holding a message
    sent at 13:10 began at 12:30, and was labelled '12:00'."""
    from bridge.page_charts import traffic

    now = datetime(2026, 11, 24, 9, 0, tzinfo=UTC).timestamp()
    sent = datetime(2026, 11, 24, 7, 40, tzinfo=UTC)  # 13:10 in Kolkata
    await buffer.append([dataclasses.replace(message(1), sent_at=sent)])
    chart = await traffic(buffer, ZoneInfo("Asia/Kolkata"), now)
    assert chart["table"]["rows"] == [("12:30", 1, 0)]
    assert "12:30" in str(chart["svg"])
