"""Contract tests for sink plugins: subclass SinkContract in your test suite and run pytest.

The kit drives your sink as the bridge does, through a real buffer file and the real
SinkRunner: conversations, webhook duplicates, a batch replayed after a crash, and (when
you let it break your backend) outages, rate limits and lost answers. It needs pytest and
pytest-asyncio; docs/plugins.md ("Testing a sink") shows a complete subclass.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import BaseModel

from bridge.buffer import Buffer
from bridge.config import validate
from bridge.contracts import Batch, Outcome, Sink, SinkSettings
from bridge.model import Direction, Media, Message
from bridge.sync import SinkRunner

Breakage = Literal["error", "rate_limit", "lost_answer"]
CONVERSATIONS = ("+919800000001", "+919800000002", "+919800000003")
_ID = re.compile(r"kit[a-z]+-\d-\d{3}")
# The kit's clock: retries come back within a drain or two, nothing is dead-lettered.
_FAST = {"sync_interval": 0.05, "retry_base": 0.01, "retry_cap": 0.05, "max_attempts": 10_000,
         "lease": 60.0}


@dataclass(frozen=True)
class Received:
    """One post your CRM holds: the idempotency key it came with and the kit message ids in it."""

    key: str
    message_ids: tuple[str, ...]


def message_ids_in(text: str) -> tuple[str, ...]:
    """The kit's message ids in a rendered text (a note, a transcript), each once, in order."""
    return tuple(dict.fromkeys(_ID.findall(text)))


def kit_messages(tag: str, sizes: Sequence[int],
                 conversations: Sequence[str] = CONVERSATIONS) -> list[Message]:
    """`sizes[i]` messages in conversation i, oldest first, of varied kinds and directions."""
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    return [_kit_message(f"kit{tag}-{c}-{n:03d}", conversations[c], c, n,
                         start + timedelta(seconds=10 * n + c))
            for c, size in enumerate(sizes) for n in range(size)]


def _kit_message(mid: str, conversation: str, c: int, n: int, at: datetime) -> Message:
    kind, text, media, direction = "text", f"Hello, this is {mid}", None, Direction.IN
    if n % 5 == 1:
        text = f"Price for 2 🍕 and a café au lait?\nThanks — {mid}"
    elif n % 5 == 2:
        kind, text = "image", f"photo of the bill {mid}"
        media = Media(id=f"media-{mid}", mime_type="image/jpeg", caption=text)
    elif n % 5 == 3:
        text, direction = f"Sure, noted ({mid}). Anything else?", Direction.OUT
    elif n % 5 == 4:
        kind, text = "document", f"invoice {mid}"
        media = Media(id=f"media-{mid}", mime_type="application/pdf", filename="invoice.pdf",
                      caption=text)
    return Message(source="kit", provider_id=mid, conversation=conversation,
                   account="+911100000000", direction=direction, sent_at=at, kind=kind,
                   text=text, media=media, contact_name=f"Kit Customer {c}")


@dataclass
class Delivery:
    """One deliver() call as the kit saw it: a snapshot of the batch, and what came back."""

    batch: Batch
    outcomes: Any = None
    error: BaseException | None = None
    cancelled: bool = False


class _Watched:
    """The author's sink behind a window: fast settings, every deliver() call logged."""

    def __init__(self, sink: Sink, log: list[Delivery]) -> None:
        assert isinstance(getattr(sink, "name", None), str) and sink.name, \
            "a sink needs a non-empty str `name`"
        assert isinstance(sink.settings, SinkSettings), \
            "sink.settings must be a SinkSettings (let your config model extend it)"
        self.sink, self.log, self.name = sink, log, sink.name
        self.settings = sink.settings.model_copy(update=_FAST)

    async def start(self) -> None:
        await self.sink.start()

    async def close(self) -> None:
        await self.sink.close()

    async def deliver(self, batch: Batch) -> Any:
        seen = Delivery(replace(batch, messages=list(batch.messages), ledger=dict(batch.ledger),
                                new_ledger={}))
        self.log.append(seen)
        try:
            result = await self.sink.deliver(batch)
        except asyncio.CancelledError:  # the runner's deliver_timeout; not the sink's doing
            seen.cancelled = True
            raise
        except Exception as exc:
            seen.error = exc
            raise
        seen.outcomes = list(result) if isinstance(result, Iterable) else result
        return seen.outcomes


class _Bench:
    """One scenario's buffer file, the watched sink and its SinkRunner."""

    def __init__(self, path: Path, log: list[Delivery]) -> None:
        self.path, self.log = path, log
        self.buffer: Buffer | None = None
        self.sink: _Watched | None = None
        self.runner: SinkRunner | None = None

    async def open(self, sink: Sink) -> _Bench:
        self.sink = _Watched(sink, self.log)
        try:
            self.buffer = await Buffer.open(self.path, runner=True)
            await self.buffer.install_sinks([self.sink.name])
            self.runner = SinkRunner(self.sink, self.buffer)
            await self.sink.start()
        except BaseException:
            with suppress(Exception):
                await self.close()
            raise
        return self

    async def close(self) -> None:
        try:
            if self.sink is not None:
                await self.sink.close()
        finally:
            if self.buffer is not None:
                await self.buffer.close()

    async def one_pass(self) -> None:
        """Hand every due batch to the sink once (a drain would retry it while it fails)."""
        for claim in await self.buffer.claim(self.sink.name, 500, 60.0):
            await self.runner.deliver(claim)

    async def state(self) -> dict[str, Any]:
        return next(s for s in await self.buffer.sinks() if s["sink"] == self.sink.name)


async def _maybe(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


def check_calls(log: Sequence[Delivery]) -> None:
    """Every deliver() returned exactly one Outcome per message and raised nothing."""
    for seen in log:
        key, n = seen.batch.key, len(seen.batch.messages)
        if seen.error is not None:
            raise AssertionError(
                f"deliver() raised {type(seen.error).__name__}: {seen.error} on batch {key}; "
                "return Outcome.retry(...) for failures you expect instead of raising")
        if seen.cancelled:
            continue
        outcomes = seen.outcomes
        if not (isinstance(outcomes, list) and len(outcomes) == n
                and all(isinstance(o, Outcome) for o in outcomes)):
            got = f"{len(outcomes)} item(s)" if isinstance(outcomes, list) else repr(outcomes)
            raise AssertionError(f"deliver() of batch {key} returned {got} for {n} message(s); "
                                 "return exactly one Outcome per message, in batch order")


def validate_section(name: str, model: type[BaseModel], section: dict[str, Any] | None
                     ) -> Any:
    """`plugins.<name>: section` validated by `model` as `bridge check` and `bridge run` do
    (${VAR} expanded, limits checked): the validated section, or a bridge.BridgeError whose
    message is the one the person running the bridge reads (key path and fix)."""
    return validate({"plugins": {name: section}}, {name: model}).plugin(name)


def outcome_kinds(log: Sequence[Delivery]) -> Counter[str]:
    """How many outcomes of each kind the logged calls returned."""
    return Counter(o.kind for seen in log if isinstance(seen.outcomes, list)
                   for o in seen.outcomes if isinstance(o, Outcome))


class SinkContract:
    """Subclass as `TestMySink(SinkContract)`; implement make_sink and received.

    make_sink() builds a new sink against your test backend (called again to simulate a
    restart). received() reads, from the backend itself, every post it holds. Optional:
    break_backend(how) makes every call fail ("error": 5xx, "rate_limit": 429) or lose its
    answer after storing ("lost_answer") until mend_backend(); return False for a way you
    cannot simulate and that check is skipped. Each may be sync or async. Set the backend
    up in your own (autouse) fixture; it must know the numbers in `conversations`.
    """

    conversations: tuple[str, ...] = CONVERSATIONS
    settle_timeout: float = 30.0

    def make_sink(self) -> Any:
        """Return a new, unstarted sink talking to your test backend."""
        raise NotImplementedError("implement make_sink() in your SinkContract subclass")

    def received(self) -> Any:
        """Return a Received for every post your backend holds."""
        raise NotImplementedError("implement received() in your SinkContract subclass")

    def break_backend(self, how: Breakage) -> Any:
        """Make the backend fail in the way `how`; False when that cannot be simulated."""
        return False

    def mend_backend(self) -> Any:
        """Undo break_backend."""

    # -- pytest entry points ---------------------------------------------------------------

    @pytest.mark.asyncio
    async def test_delivers_every_message_once(self, tmp_path: Path) -> None:
        await self.check_conversations(tmp_path)

    @pytest.mark.asyncio
    async def test_duplicates_reach_the_crm_once(self, tmp_path: Path) -> None:
        await self.check_duplicates(tmp_path)

    @pytest.mark.asyncio
    async def test_batch_replayed_after_a_crash_is_posted_once(self, tmp_path: Path) -> None:
        await self.check_crash_replay(tmp_path)

    @pytest.mark.asyncio
    async def test_backend_error_gives_retry(self, tmp_path: Path) -> None:
        await self.check_backend_failure(tmp_path, "error")

    @pytest.mark.asyncio
    async def test_rate_limit_gives_retry(self, tmp_path: Path) -> None:
        await self.check_backend_failure(tmp_path, "rate_limit")

    @pytest.mark.asyncio
    async def test_lost_answer_is_not_posted_twice(self, tmp_path: Path) -> None:
        await self.check_lost_answer(tmp_path)

    # -- the checks, callable on their own -------------------------------------------------

    async def check_conversations(self, workdir: Path) -> None:
        """Conversations of 1 to 30 messages of varied kinds all arrive, once, in order."""
        messages = kit_messages("a", (4, 1, 30), self.conversations)
        bench = await self._bench(workdir / "conversations.db")
        try:
            await bench.buffer.append(reversed(messages))  # arrival order must not matter
            await self.settle(bench)
            await self.assert_exactly_once(messages)
        finally:
            await bench.close()

    async def check_duplicates(self, workdir: Path) -> None:
        """A webhook stored twice, then every batch handed again (its ack lost): posted once."""
        messages = kit_messages("b", (3, 2), self.conversations)
        bench = await self._bench(workdir / "duplicates.db")
        try:
            await bench.buffer.append(messages)
            await bench.buffer.append(messages)  # the provider retried the webhook
            await self.settle(bench)
            delivered = {s.batch.key: s.batch for s in reversed(bench.log)}.values()
        finally:
            await bench.close()
        again: list[Delivery] = []
        replayer = _Watched(await _maybe(self.make_sink()), again)
        await replayer.start()
        try:
            for batch in delivered:
                await replayer.deliver(replace(batch, attempt=batch.attempt + 1, uncertain=True,
                                               ledger={}, new_ledger={}))
        finally:
            await replayer.close()
        check_calls(again)
        kinds = outcome_kinds(again)
        assert set(kinds) <= {"delivered", "skipped"}, (
            f"a batch the CRM already holds came back as {dict(kinds)}; recognise it by its "
            "idempotency key and answer delivered")
        await self.assert_exactly_once(messages)

    async def check_crash_replay(self, workdir: Path) -> None:
        """Posted, then the bridge died before recording it: the replay posts nothing twice."""
        messages = kit_messages("c", (3, 5), self.conversations)
        log: list[Delivery] = []
        first = await _Bench(workdir / "crash.db", log).open(await _maybe(self.make_sink()))
        try:
            await first.buffer.append(messages)
            claims = await first.buffer.claim(first.sink.name, 100, 60.0)
            for claim in claims:  # delivered, but the outcome is never recorded
                await first.sink.deliver(claim.batch)
        finally:
            await first.close()
        check_calls(log)
        keys = {claim.batch.key for claim in claims}
        bench = await _Bench(workdir / "crash.db", log).open(await _maybe(self.make_sink()))
        try:
            replays = len(log)
            await self.settle(bench)
            again = log[replays:]
        finally:
            await bench.close()
        assert {seen.batch.key for seen in again} == keys and all(
            seen.batch.uncertain for seen in again), "the buffer did not replay the same batches"
        await self.assert_exactly_once(messages)

    async def check_backend_failure(self, workdir: Path, how: Breakage) -> None:
        """While the backend fails: retry outcomes, never rejected; after it heals: all once."""
        messages = kit_messages("d" if how == "error" else "e", (3, 2), self.conversations)
        bench = await self._bench(workdir / f"{how}.db")
        try:
            if not await _maybe(self.break_backend(how)):
                pytest.skip(f"break_backend({how!r}) is not supported by this backend")
            try:
                await bench.buffer.append(messages)
                await bench.one_pass()
                check_calls(bench.log)
                await self.assert_delivered_are_received(bench.log)
            finally:
                await _maybe(self.mend_backend())
            kinds = outcome_kinds(bench.log)
            assert not kinds["rejected"], (
                f"a backend {how} was answered with rejected ({dict(kinds)}); rejected goes "
                "straight to dead letter: return Outcome.retry for a failure that may pass")
            assert kinds["retry"], (
                f"break_backend({how!r}) made no delivery fail ({dict(kinds)}); is the sink "
                "talking to the backend the test broke?")
            await self.settle(bench)
            await self.assert_exactly_once(messages)
        finally:
            await bench.close()

    async def check_lost_answer(self, workdir: Path) -> None:
        """The backend stores the post but the answer is lost: the retry must not duplicate."""
        messages = kit_messages("f", (3, 2), self.conversations)
        bench = await self._bench(workdir / "lost_answer.db")
        try:
            if not await _maybe(self.break_backend("lost_answer")):
                pytest.skip("break_backend('lost_answer') is not supported by this backend")
            try:
                await bench.buffer.append(messages)
                await bench.one_pass()
                check_calls(bench.log)
            finally:
                await _maybe(self.mend_backend())
            kinds = outcome_kinds(bench.log)
            assert not kinds["rejected"], (
                f"a lost answer was answered with rejected ({dict(kinds)}); the post may have "
                "landed: return Outcome.retry and let the idempotency key dedupe the retry")
            await self.settle(bench)
            await self.assert_exactly_once(messages)
        finally:
            await bench.close()

    # -- building blocks -------------------------------------------------------------------

    async def _bench(self, path: Path) -> _Bench:
        return await _Bench(path, []).open(await _maybe(self.make_sink()))

    async def _received(self) -> list[Received]:
        received = list(await _maybe(self.received()) or [])
        assert all(isinstance(r, Received) for r in received), \
            "received() must return bridge.testing.Received items"
        return received

    async def settle(self, bench: _Bench) -> None:
        """Drain until no message is pending; fail on dead letters, holds or a timeout."""
        deadline = time.monotonic() + self.settle_timeout
        while True:
            before = len(bench.log)
            try:
                await asyncio.wait_for(bench.runner.drain(), max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                raise AssertionError(f"messages still pending after {self.settle_timeout:g}s; "
                                     f"last: {_last_reason(bench.log)}") from None
            fresh = bench.log[before:]
            check_calls(bench.log)
            await self.assert_delivered_are_received(bench.log)
            state = await bench.state()
            if state["dead_letters"]:
                (letter, *_) = await bench.buffer.dead_letters(bench.sink.name, 1)
                raise AssertionError(f"{state['dead_letters']} message(s) went to dead letter "
                                     f"on a healthy backend, e.g.: {letter['reason']}")
            if not state["backlog"]:
                return
            kinds = outcome_kinds(fresh)
            if kinds and set(kinds) == {"held"}:
                reason = next(o.reason for s in fresh for o in s.outcomes if o.kind == "held")
                raise AssertionError(f"the sink held the kit's messages ({reason}); make the "
                                     "numbers in `conversations` known to your test backend")
            if time.monotonic() > deadline:
                raise AssertionError(f"{state['backlog']} message(s) still pending after "
                                     f"{self.settle_timeout:g}s; last: {_last_reason(bench.log)}")
            await asyncio.sleep(0.05)

    async def assert_delivered_are_received(self, log: Sequence[Delivery]) -> None:
        """A message the sink called delivered is in the CRM."""
        have = {mid for r in await self._received() for mid in r.message_ids}
        claimed = {m.provider_id for seen in log if isinstance(seen.outcomes, list)
                   for m, o in zip(seen.batch.messages, seen.outcomes, strict=False)
                   if isinstance(o, Outcome) and o.kind == "delivered"}
        lost = sorted(claimed - have)
        assert not lost, f"the sink answered delivered, but the CRM does not hold: {lost}"

    async def assert_exactly_once(self, messages: Sequence[Message]) -> None:
        """Each message is in the CRM once, in one keyed post, in oldest-first order."""
        order = {m.provider_id: (m.sent_at, i) for i, m in enumerate(messages)}
        posts = [r for r in await self._received() if set(r.message_ids) & set(order)]
        counts = Counter(mid for r in posts for mid in r.message_ids if mid in order)
        twice = sorted(mid for mid, n in counts.items() if n > 1)
        assert not twice, f"posted more than once: {twice}" + _keys_of(posts, twice)
        missing = [mid for mid in order if not counts[mid]]
        assert not missing, f"never reached the CRM: {missing}"
        keys = Counter(r.key for r in posts)
        assert all(isinstance(k, str) and k for k in keys), "every post needs an idempotency key"
        assert max(keys.values()) == 1, f"one key, several posts: {keys.most_common(1)}"
        for r in posts:
            mine = [order[mid] for mid in r.message_ids if mid in order]
            assert mine == sorted(mine), f"post {r.key} has its messages out of order"


def _keys_of(posts: Sequence[Received], ids: Sequence[str]) -> str:
    keys = sorted({r.key for r in posts if set(r.message_ids) & set(ids)})
    return f" (under keys {keys[:4]})"


def _last_reason(log: Sequence[Delivery]) -> str:
    for seen in reversed(log):
        for outcome in seen.outcomes if isinstance(seen.outcomes, list) else []:
            if isinstance(outcome, Outcome) and outcome.kind != "delivered":
                return f"{outcome.kind}: {outcome.reason}"
    return "no outcome other than delivered"
