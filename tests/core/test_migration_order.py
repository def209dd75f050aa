"""migrations.upgrade runs the steps above the current version in order, numbers with gaps
(each branch of work takes its own number; issue 25's is 11)."""

from __future__ import annotations

import bridge.buffer.migrations as migrations


async def test_upgrade_runs_the_steps_above_the_version_in_order_across_gaps(monkeypatch):
    ran: list[int] = []

    def step(number: int):
        async def run(db) -> None:  # noqa: ANN001 - no database needed
            ran.append(number)
        return run

    monkeypatch.setattr(migrations, "STEPS", {13: step(13), 10: step(10), 11: step(11)})
    await migrations.upgrade(None, 10)
    assert ran == [11, 13]


def test_issue_25s_step_is_number_11():
    assert migrations.STEPS[11] is migrations.m011_failing_since
    assert migrations.VERSION == max(migrations.STEPS)
