"""The sink contract kit passes a correct sink and catches each kind of broken one."""

from __future__ import annotations

import uuid

import pytest

from bridge import Batch, Outcome, SinkSettings
from bridge.testing import Received, SinkContract, kit_messages, message_ids_in


class CRMDown(Exception):
    """The in-memory CRM failing on purpose."""


class MemoryCRM:
    """An idempotent CRM in memory: one post per key; `mode` makes it fail like a real one."""

    def __init__(self) -> None:
        self.posts: dict[str, tuple[str, ...]] = {}
        self.mode: str | None = None

    def post(self, key: str, ids: tuple[str, ...]) -> None:
        if self.mode in ("error", "rate_limit"):
            raise CRMDown("503" if self.mode == "error" else "429")
        self.posts.setdefault(key, ids)
        if self.mode == "lost_answer":
            raise CRMDown("connection reset after the write")


class MemorySink:
    """Correct: one post per batch under the batch key; failures become retry outcomes."""

    name = "memory"

    def __init__(self, crm: MemoryCRM) -> None:
        self.crm = crm
        self.settings = SinkSettings()

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def deliver(self, batch: Batch) -> list[Outcome]:
        try:
            self.crm.post(self.key(batch), self.ids(batch))
        except CRMDown as exc:
            return [self.on_failure(str(exc))] * len(batch.messages)
        return [Outcome.delivered()] * len(batch.messages)

    def key(self, batch: Batch) -> str:
        return batch.key

    def ids(self, batch: Batch) -> tuple[str, ...]:
        return tuple(m.provider_id for m in batch.messages)

    def on_failure(self, reason: str) -> Outcome:
        return Outcome.retry(reason)


class PostsTwiceOnReplay(MemorySink):
    """A fresh key per attempt: a replayed batch is a new post."""

    def key(self, batch: Batch) -> str:
        return uuid.uuid4().hex


class FewerOutcomes(MemorySink):
    async def deliver(self, batch: Batch) -> list[Outcome]:
        return (await super().deliver(batch))[:-1]


class DeliveredWithoutSending(MemorySink):
    """Sends all but the last message and calls every one delivered."""

    def ids(self, batch: Batch) -> tuple[str, ...]:
        return super().ids(batch)[:-1]


class RaisesOnOutage(MemorySink):
    def on_failure(self, reason: str) -> Outcome:
        raise CRMDown(reason)


class RejectsOnOutage(MemorySink):
    def on_failure(self, reason: str) -> Outcome:
        return Outcome.rejected(reason)


class Reorders(MemorySink):
    def ids(self, batch: Batch) -> tuple[str, ...]:
        return tuple(reversed(super().ids(batch)))


class MemoryContract(SinkContract):
    """The kit wired to MemoryCRM; sink_class picks the sink under test."""

    sink_class: type[MemorySink] = MemorySink
    crm: MemoryCRM

    @pytest.fixture(autouse=True)
    def fresh_crm(self) -> None:
        self.crm = MemoryCRM()

    def make_sink(self) -> MemorySink:
        return self.sink_class(self.crm)

    def received(self) -> list[Received]:
        return [Received(key, ids) for key, ids in self.crm.posts.items()]

    def break_backend(self, how: str) -> bool:
        self.crm.mode = how
        return True

    def mend_backend(self) -> None:
        self.crm.mode = None


class TestCorrectMemorySinkPassesTheKit(MemoryContract):
    """Every kit test, run by pytest as a sink author would run it."""


def kit(sink_class: type[MemorySink]) -> MemoryContract:
    contract = MemoryContract()
    contract.sink_class, contract.crm = sink_class, MemoryCRM()
    return contract


async def test_sink_posting_twice_on_replay_fails_replay_and_duplicates(tmp_path):
    with pytest.raises(AssertionError, match="posted more than once"):
        await kit(PostsTwiceOnReplay).check_crash_replay(tmp_path)
    with pytest.raises(AssertionError, match="posted more than once"):
        await kit(PostsTwiceOnReplay).check_duplicates(tmp_path)
    with pytest.raises(AssertionError, match="posted more than once"):
        await kit(PostsTwiceOnReplay).check_lost_answer(tmp_path)


async def test_sink_returning_fewer_outcomes_fails(tmp_path):
    with pytest.raises(AssertionError, match=r"returned \d+ item.* message.*one Outcome per"):
        await kit(FewerOutcomes).check_conversations(tmp_path)


async def test_sink_calling_unsent_messages_delivered_fails(tmp_path):
    with pytest.raises(AssertionError, match="answered delivered, but the CRM does not hold"):
        await kit(DeliveredWithoutSending).check_conversations(tmp_path)


async def test_sink_raising_on_an_outage_fails(tmp_path):
    with pytest.raises(AssertionError, match="deliver.. raised CRMDown: 503"):
        await kit(RaisesOnOutage).check_backend_failure(tmp_path, "error")


async def test_sink_rejecting_on_an_outage_or_rate_limit_fails(tmp_path):
    for how in ("error", "rate_limit"):
        with pytest.raises(AssertionError, match="answered with rejected"):
            await kit(RejectsOnOutage).check_backend_failure(tmp_path / how, how)


async def test_sink_reordering_a_conversation_fails(tmp_path):
    with pytest.raises(AssertionError, match="out of order"):
        await kit(Reorders).check_conversations(tmp_path)


async def test_break_that_does_not_bite_fails(tmp_path):
    contract = kit(MemorySink)
    contract.break_backend = lambda how: True  # claims to break, changes nothing
    with pytest.raises(AssertionError, match="made no delivery fail"):
        await contract.check_backend_failure(tmp_path, "error")


async def test_unsupported_breakage_is_skipped(tmp_path):
    contract = kit(MemorySink)
    contract.break_backend = lambda how: False
    with pytest.raises(pytest.skip.Exception, match="not supported"):
        await contract.check_backend_failure(tmp_path, "rate_limit")


def test_kit_messages_carry_findable_ids_oldest_first():
    messages = kit_messages("z", (3, 6))
    assert [m.conversation for m in messages] == ["+919800000001"] * 3 + ["+919800000002"] * 6
    for m in messages:
        assert message_ids_in(f"[10:00] {m.text} / {m.text}") == (m.provider_id,)
    second = [m.sent_at for m in messages[3:]]
    assert second == sorted(second) and len({m.kind for m in messages}) == 3
