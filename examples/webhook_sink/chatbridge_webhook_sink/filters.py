"""Keep chosen conversations (e.g. staff or personal numbers) out of the webhook only."""

from __future__ import annotations

from collections.abc import Iterable

from bridge import Message


class ExcludeNumbers:
    """Skips the listed conversations for one sink; other sinks still get them."""

    def __init__(self, sink: str, numbers: Iterable[str]) -> None:
        self.name = f"{sink}-exclude"
        self.sink = sink
        self.numbers = frozenset(numbers)

    def apply(self, message: Message, sink: str) -> Message | None:
        """None (skip) for an excluded conversation on our sink, else the message."""
        if sink == self.sink and message.conversation in self.numbers:
            return None
        return message
