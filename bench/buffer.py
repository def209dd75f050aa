"""Durable appends per second: group commit vs one commit per append, on this machine.

    python bench/buffer.py            # full run (~1 min)
    python bench/buffer.py --smoke    # seconds; CI runs this so the script cannot rot
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bridge.buffer import Buffer  # noqa: E402
from bridge.model import Direction, Message  # noqa: E402

RAW = json.loads(json.dumps({"from": "919876543210", "id": "x", "timestamp": "1739230955",
                             "type": "text", "text": {"body": "namaste " * 40}}))


def make(n: int, prefix: str) -> Message:
    return Message("whatsapp", f"{prefix}-{n}", f"+9198765{n % 1000:05d}", "106540352242922",
                   Direction.IN, datetime.now(UTC), "text", "namaste " * 40,
                   contact_name="Asha", raw=RAW)


async def run(group_limit: int, concurrency: int, total: int, synchronous: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        buffer = await Buffer.open(Path(tmp) / "bench.db", synchronous, group_limit=group_limit)
        await buffer.install_sinks(["crm"])
        counter = iter(range(total))
        latencies: list[float] = []

        async def worker() -> None:
            for n in counter:
                started = time.perf_counter()
                await buffer.append([make(n, "b")])
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*[worker() for _ in range(concurrency)])
        elapsed = time.perf_counter() - started
        stats = buffer.stats
        await buffer.close()
    latencies.sort()
    return {"rate": total / elapsed, "commits": stats["commits"],
            "p50": latencies[len(latencies) // 2] * 1000,
            "p99": latencies[int(len(latencies) * 0.99)] * 1000}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny run for CI")
    parser.add_argument("--synchronous", default="full", choices=["full", "normal"])
    args = parser.parse_args()
    total = 300 if args.smoke else 20000
    levels = [1, 16] if args.smoke else [1, 4, 16, 64]
    print(f"durable appends (1 message, ~1.5 KB raw) synchronous={args.synchronous}, "
          f"{total} per cell")
    print(f"{'concurrency':>11} | {'mode':<22} | {'appends/s':>9} | {'commits':>7} | "
          f"{'p50 ms':>6} | {'p99 ms':>6}")
    ratios = []
    for concurrency in levels:
        single = await run(1, concurrency, total, args.synchronous)
        grouped = await run(1000, concurrency, total, args.synchronous)
        for mode, r in (("one commit per append", single), ("group commit", grouped)):
            print(f"{concurrency:>11} | {mode:<22} | {r['rate']:>9,.0f} | {r['commits']:>7} | "
                  f"{r['p50']:>6.2f} | {r['p99']:>6.2f}")
        ratios.append((concurrency, grouped["rate"] / single["rate"]))
    print("summary: group commit speed-up " +
          ", ".join(f"x{ratio:.1f} at {c}" for c, ratio in ratios))


if __name__ == "__main__":
    asyncio.run(main())
