"""The LeadSquared sink keeps the sink contract (bridge.testing) against the simulator."""

from __future__ import annotations

import pytest

from bridge.testing import Received, SinkContract, message_ids_in
from plugins.leadsquared.activity_type import FIELDS
from plugins.leadsquared.simulator import Simulator
from plugins.leadsquared.sink import LeadSquaredSink
from tests.leadsquared.test_sink import sink_for

FAULTS = {"error": {"error_rate": 1.0}, "rate_limit": {"rate_limit": "1/60s"},
          "lost_answer": {"drop_after_commit_rate": 1.0}}


class TestLeadSquaredContract(SinkContract):
    """Activities land on leads of the kit's numbers; faults come from the simulator's knobs."""

    sim: Simulator

    @pytest.fixture(autouse=True)
    def account(self, sim: Simulator) -> None:
        self.sim = sim
        for n, number in enumerate(self.conversations):
            sim.add_lead(FirstName=f"Kit{n}", Mobile=f"+91-{number[3:]}")

    def make_sink(self) -> LeadSquaredSink:
        # A fast rate window keeps the client's own backoff (a fifth of it) short.
        return sink_for(self.sim, rate_limit="1000/0.02s", opportunities=False)

    def received(self) -> list[Received]:
        return [Received(_key(a), message_ids_in(a["ActivityNote"]))
                for a in self.sim.activities()]

    def break_backend(self, how: str) -> bool:
        self.sim.configure(**FAULTS[how])
        return True

    def mend_backend(self) -> None:
        self.sim.configure(error_rate=0.0, rate_limit=None, drop_after_commit_rate=0.0)


def _key(activity: dict) -> str:
    return next((f["Value"] for f in activity["Fields"] if f["SchemaName"] == FIELDS["key"]), "")
