"""The retry policy is a pure function: exponential, capped, jittered."""

import random

import pytest

from bridge.retry import backoff_delay, gives_up


def test_delay_doubles_per_attempt_without_jitter():
    assert [backoff_delay(n, base=10, cap=1000, jitter=0) for n in range(1, 6)] == [
        10, 20, 40, 80, 160]


def test_delay_is_capped_even_for_huge_attempt_counts():
    assert backoff_delay(500, base=10, cap=3600, jitter=0) == 3600


def test_jitter_spreads_within_bounds_and_varies():
    rng = random.Random(7)
    delays = [backoff_delay(3, base=10, cap=1000, jitter=0.2, rng=rng) for _ in range(200)]
    assert all(32 <= d <= 48 for d in delays)
    assert len({round(d, 3) for d in delays}) > 100


def test_attempt_counts_from_one():
    with pytest.raises(ValueError):
        backoff_delay(0)


def test_gives_up_at_max_attempts():
    assert [gives_up(n, 3) for n in (1, 2, 3, 4)] == [False, False, True, True]
