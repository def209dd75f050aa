"""SQLite's secure_delete on the buffer's write connection: what it costs, side by side.

    python bench/secure_delete.py            # ~2 minutes
    python bench/secure_delete.py --smoke    # seconds (CI)

The same code runs each round twice, the write connection's secure_delete ON (as the
buffer opens it since issue 25) and OFF (before), in alternating order: appends (group
commit, 64 concurrent webhooks, 1 message each, ~1.5 KB raw), then a drain of the lot
(claims of 500, every message delivered: the updates of deliveries and batches), then a
prune of everything (the deletes, where secure delete overwrites freed cells and pages).
Medians of the rounds; the WAL size shows the extra pages written.

Measured 2026-12-06 on the shared 2-core machine (10,000 messages, median of 3): appends/s
OFF 5,074, ON 4,773 (0.94); drain 116 s / 101 s (noise: 0.87); prune 0.24 s / 0.30 s
(1.23); WAL 5.2 / 8.0 MB. Cheap, but it would not be enough: a page split or a moved row
leaves copies secure delete never sees (bridge/buffer/sqlite.py, erase), so the buffer
keeps the build's default and a purge turns it on for its own transaction, then searches
the file and vacuums when a copy is left.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.buffer import make  # noqa: E402
from bridge.buffer import Buffer, Policy  # noqa: E402
from bridge.contracts import Outcome  # noqa: E402

POLICY = Policy(max_attempts=8, retry_delay=lambda attempt: 1.0, held_delay=1.0)
SETTING = {True: "PRAGMA secure_delete = ON", False: "PRAGMA secure_delete = OFF"}


async def one(secure: bool, total: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.db"
        buffer = await Buffer.open(path)
        await buffer._writer.run(buffer._write.execute, SETTING[secure])
        await buffer.install_sinks(["crm"])
        counter = iter(range(total))

        async def webhook() -> None:
            for n in counter:
                await buffer.append([make(n, "s")])

        started = time.perf_counter()
        await asyncio.gather(*[webhook() for _ in range(64)])
        appended = time.perf_counter()
        while claims := await buffer.claim("crm", 500, 60):
            for claim in claims:
                await buffer.complete(claim, [Outcome.delivered()] * len(claim.messages),
                                      POLICY)
        drained = time.perf_counter()
        await buffer.prune(older_than=time.time() + 60)
        pruned = time.perf_counter()
        wal = Path(str(path) + "-wal").stat().st_size
        await buffer.close()
        return {"appends/s": total / (appended - started), "drain s": drained - appended,
                "prune s": pruned - drained, "WAL MB": wal / 1e6}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny run for CI")
    args = parser.parse_args()
    total, rounds = (300, 1) if args.smoke else (10_000, 3)
    found: dict[bool, list[dict[str, float]]] = {True: [], False: []}
    for n in range(rounds):
        for secure in ((True, False) if n % 2 == 0 else (False, True)):
            found[secure].append(await one(secure, total))
    print(f"secure_delete on the write connection: {total} messages, median of {rounds}")
    print(f"{'secure_delete':<13} | {'appends/s':>9} | {'drain s':>7} | {'prune s':>7} | "
          f"{'WAL MB':>6}")
    medians = {}
    for secure in (False, True):
        medians[secure] = {k: statistics.median(r[k] for r in found[secure])
                           for k in found[secure][0]}
        m = medians[secure]
        print(f"{'ON' if secure else 'OFF':<13} | {m['appends/s']:>9,.0f} | "
              f"{m['drain s']:>7.2f} | {m['prune s']:>7.2f} | {m['WAL MB']:>6.1f}")
    on, off = medians[True], medians[False]
    print(f"summary: appends/s ON/OFF {on['appends/s'] / off['appends/s']:.2f}, drain "
          f"{on['drain s'] / off['drain s']:.2f}, prune {on['prune s'] / off['prune s']:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
