"""Transcript lines in the account's local time (the keys' user's TimeZone, reference §1),
on any host and in any zone (adv38): a host without a system time zone database (a slim
or distroless container, Windows), a DST change inside one note, and a zone name this
machine does not know."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from tests.helpers import running, wait_until
from tests.leadsquared.test_sink import chat, settled, sink_for

ROOT = Path(__file__).resolve().parents[2]

NO_TZ_DATABASE = """
import asyncio, dataclasses, json, sys
from datetime import UTC, datetime
from bridge.buffer import Buffer
from bridge.config import ServerConfig
from plugins.leadsquared.simulator.server import Simulator
from tests.helpers import running, wait_until
from tests.leadsquared.test_sink import chat, settled, sink_for

async def main(path):
    ServerConfig(timezone="Asia/Kolkata")  # the status page's zone is taken as well
    sim = Simulator(seed=7)
    await sim.start()
    lead = sim.add_lead(FirstName="Asha", Phone="9876543210")
    buffer = await Buffer.open(path)
    try:
        at = datetime(2026, 11, 24, 8, 35, tzinfo=UTC)
        await buffer.install_sinks(["leadsquared"])  # live, whenever it was sent
        await buffer.append([dataclasses.replace(chat(1), sent_at=at)])
        async with running(buffer, [sink_for(sim, opportunities=False)]):
            await wait_until(lambda: sim.activities(lead))
            await wait_until(lambda: settled(buffer))
        print(json.dumps([a["ActivityNote"] for a in sim.activities(lead)]))
    finally:
        await buffer.close()
        await sim.stop()

asyncio.run(main(sys.argv[1]))
"""


def _at(n: int, when: datetime):
    return dataclasses.replace(chat(n), sent_at=when)


def test_a_host_without_a_time_zone_database_writes_the_accounts_local_times(tmp_path):
    env = {**os.environ, "PYTHONTZPATH": "", "PYTHONPATH": str(ROOT)}  # no system zones
    done = subprocess.run([sys.executable, "-c", NO_TZ_DATABASE, str(tmp_path / "b.db")],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    (note,) = json.loads(done.stdout.strip().splitlines()[-1])
    assert "[2026-11-24 14:05] ⬅️" in note  # 08:35 UTC is 14:05 in Asia/Kolkata


async def test_a_chat_across_the_end_of_dst_shows_each_line_in_its_local_time(sim, buffer):
    sim.configure(timezone="America/New_York")  # EDT (-4) until 2026-11-01 06:00 UTC
    lead = sim.add_lead(FirstName="Asha", Phone="9876543210")
    times = [datetime(2026, 11, 1, h, m, tzinfo=UTC) for h, m in ((5, 10), (5, 59), (6, 0),
                                                                  (6, 50))]
    await buffer.install_sinks(["leadsquared"])  # live, whenever it was sent
    await buffer.append([_at(n, when) for n, when in enumerate(times)])
    async with running(buffer, [sink_for(sim, opportunities=False)]):
        await wait_until(lambda: sim.activities(lead))
        await wait_until(lambda: settled(buffer))
    (activity,) = sim.activities(lead)
    stamps = [line[1:17] for line in activity["ActivityNote"].split("\n")[1:]]
    assert stamps == ["2026-11-01 01:10", "2026-11-01 01:59", "2026-11-01 01:00",
                      "2026-11-01 01:50"]  # the hour 01:00-02:00 comes twice, in order
    assert activity["ActivityDateTime"] == "2026-11-01 06:50:00"  # UTC, as the API takes it


async def _note_in_zone(sim, buffer, answer: object) -> str:
    """The note of one message sent at 08:35 UTC, the user's TimeZone being `answer`."""
    sim.configure(timezone=answer)
    lead = sim.add_lead(FirstName="Asha", Phone="9876543210")
    await buffer.install_sinks(["leadsquared"])
    await buffer.append([_at(1, datetime(2026, 11, 24, 8, 35, tzinfo=UTC))])
    async with running(buffer, [sink_for(sim, opportunities=False)]):
        await wait_until(lambda: sim.activities(lead))
        await wait_until(lambda: settled(buffer))
    (activity,) = sim.activities(lead)
    return activity["ActivityNote"]


async def test_a_zone_named_in_other_letter_case_or_with_spaces_is_still_that_zone(sim, buffer):
    assert "[2026-11-24 14:05] ⬅️" in await _note_in_zone(sim, buffer, " asia/kolkata")


async def test_a_time_zone_answer_that_is_no_name_still_lets_the_chat_through(sim, buffer,
                                                                           caplog):
    # undocumented shapes (an offset in minutes): the sink starts, times are UTC and said so
    assert "[2026-11-24 08:35] ⬅️" in await _note_in_zone(sim, buffer, 330)
    assert "time zone 330, which is no time zone this machine knows" in caplog.text


async def test_a_zone_name_this_machine_does_not_know_is_named_in_a_warning(sim, buffer,
                                                                          caplog):
    assert "[2026-11-24 08:35] ⬅️" in await _note_in_zone(sim, buffer, "India Standard Time")
    assert "'India Standard Time', which is no time zone this machine knows: transcript " \
           "lines show UTC times" in caplog.text
