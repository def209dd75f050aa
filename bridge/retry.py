"""Retry policy: attempt count in, delay or give-up out (pure, no clock, no database)."""

from __future__ import annotations

import random


def backoff_delay(
    attempt: int, *, base: float = 30.0, cap: float = 3600.0, jitter: float = 0.2,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based).

    Exponential (base, 2*base, 4*base, ...) capped at `cap`, then spread by +-`jitter`
    (a fraction) so that many failing batches do not retry in lockstep.
    """
    if attempt < 1:
        raise ValueError("attempt counts from 1")
    raw = min(cap, base * 2 ** min(attempt - 1, 62))
    spread = raw * jitter
    return max(0.0, raw + (rng or random).uniform(-spread, spread))


def gives_up(attempt: int, max_attempts: int) -> bool:
    """True when `attempt` failed attempts mean the message goes to dead letter."""
    return attempt >= max_attempts
