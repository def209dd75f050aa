"""The one error LeadSquared calls raise, sorted into kinds the sink acts on."""

from __future__ import annotations

from typing import Literal

Kind = Literal["rate_limited", "transient", "rejected", "auth", "unknown_outcome"]


class LeadSquaredError(Exception):
    """A failed LeadSquared call; the sink maps `kind` to retry, dead-letter or stop."""

    def __init__(self, kind: Kind, message: str, *, exception_type: str | None = None,
                 status: int | None = None, in_flight: bool = False,
                 not_created: bool = False) -> None:
        origin = ", ".join(filter(None, [exception_type, status and f"HTTP {status}"]))
        super().__init__(f"{kind}: {message}" + (f" ({origin})" if origin else ""))
        self.kind = kind
        self.message = message
        self.exception_type = exception_type
        self.status = status
        # an unknown outcome where the request may still be on its way (we or a gateway
        # stopped waiting for it): it can commit later, so look for it only after a while
        self.in_flight = in_flight
        # an unknown outcome whose answer said the write was not made (a bulk row without an
        # id): when the key check then finds nothing, the write is sent again at once
        self.not_created = not_created
