"""Three bridge processes, one CRM budget: the shared rate limiter in PostgreSQL (issue 18).

N real OS processes each open their own PostgresBuffer (their own pool) on one schema and
run the LeadSquared sink's RateLimiter shared through it (RateLimiter.share); each has
several workers with endless work that acquire a slot and note the start time
(CLOCK_MONOTONIC, one clock for every process on this machine). Printed: the calls, the
most started in any window (sliding, and in fixed slices as the simulator counts), and
the share of the budget used over the whole windows from the first call.

    CHATBRIDGE_TEST_POSTGRES=postgresql://postgres@127.0.0.1:5432/test \\
        python bench/cluster_budget.py                    # 3 processes at 10/5s for 30 s
    python bench/cluster_budget.py --rate 10/1s --seconds 10 --processes 3
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._support import budget_share, max_in_fixed_window, max_in_window  # noqa: E402
from bridge.buffer import Buffer  # noqa: E402
from plugins.leadsquared.ratelimit import RateLimiter, parse_rate  # noqa: E402


async def _process(url: str, rate: str, workers: int, start_at: float,
                   until: float) -> list[float]:
    buffer = await Buffer.open(url, pool_size=2)
    limiter = RateLimiter.from_text(rate)
    limiter.share(buffer.shared_budget("leadsquared", "ordinary"))
    starts: list[float] = []

    async def work() -> None:
        while time.monotonic() < until:
            await limiter.acquire()
            starts.append(time.monotonic())

    await asyncio.sleep(max(0.0, start_at - time.monotonic()))
    await asyncio.gather(*(work() for _ in range(workers)))
    await buffer.close()
    return [t for t in starts if t < until]


def _child(url: str, rate: str, workers: int, start_at: float, until: float,
           out: multiprocessing.Queue) -> None:
    out.put((os.getpid(), asyncio.run(_process(url, rate, workers, start_at, until))))


async def _prepare(url: str) -> None:
    buffer = await Buffer.open(url)  # migrate once before the processes start
    await buffer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", default="10/5s")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--processes", type=int, default=3)
    parser.add_argument("--workers", type=int, default=4, help="callers in each process")
    parser.add_argument("--smoke", action="store_true", help="a few seconds, for CI")
    args = parser.parse_args()
    if args.smoke:
        args.rate, args.seconds = "5/1s", 2.0
    server = os.environ.get("CHATBRIDGE_TEST_POSTGRES")
    if not server:
        if args.smoke:
            print("summary: skipped (CHATBRIDGE_TEST_POSTGRES is not set)")
            return
        sys.exit("set CHATBRIDGE_TEST_POSTGRES, e.g. postgresql://postgres@127.0.0.1:5432/test")
    from tests.backends import drop_schema, new_schema, postgres_url

    schema = new_schema()
    url = postgres_url(schema)
    asyncio.run(_prepare(url))
    try:
        context = multiprocessing.get_context("spawn")
        out = context.Queue()
        start_at = time.monotonic() + 2.0  # every process connected and waiting
        until = start_at + args.seconds
        children = [context.Process(target=_child, args=(url, args.rate, args.workers,
                                                         start_at, until, out))
                    for _ in range(args.processes)]
        for child in children:
            child.start()
        results = [out.get(timeout=args.seconds + 60) for _ in children]
        for child in children:
            child.join()
    finally:
        asyncio.run(drop_schema(schema))
    calls, per = parse_rate(args.rate)
    every = sorted(t for _, starts in results for t in starts)
    print(f"{args.processes} processes x {args.workers} workers, rate {args.rate}, "
          f"{args.seconds:g} s, shared budget in PostgreSQL")
    print(f"  calls started:                 {len(every)} "
          f"({', '.join(str(len(s)) for _, s in results)} per process)")
    print(f"  most in any {per:g}-s window:      {max_in_window(every, per)} (limit {calls})")
    print(f"  most in one fixed {per:g}-s slice: {max_in_fixed_window(every, per)}")
    print(f"  budget used (whole windows):   {budget_share(every, calls, per):.1%}")
    print(f"summary: {len(every)} calls from {args.processes} processes, at most "
          f"{max_in_window(every, per)} in any {per:g}-s window (limit {calls}), "
          f"{budget_share(every, calls, per):.0%} of the budget used")
    if len(every) > calls:  # the rate after the first window's burst, as a share of the limit
        steady = (len(every) - calls) / (every[-1] - every[0]) * per / calls
        print(f"  steady rate after the burst:   {steady:.1%} of the limit")


if __name__ == "__main__":
    main()
