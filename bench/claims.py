"""Statements per claim and per completion on PostgreSQL: 500 one-message conversations.

    python bench/claims.py                     # this tree ($CHATBRIDGE_TEST_POSTGRES)
    python bench/claims.py --against 4909cba   # and another commit, side by side
    python bench/claims.py --smoke             # 20 conversations; CI runs this

Every statement the buffer sends to PostgreSQL is counted at the driver (asyncpg's
Connection.execute/fetch/fetchrow/fetchval, and each parameter set of executemany), so
the count does not depend on how a commit's code is written. One sink; 500 conversations
with one message each are appended, then claimed in one claim (limit 500), then the 500
batches are completed: one by one (as a sink with concurrency 1 does), and, on a second
buffer, all at once (as a sink that takes several batches at once hands its outcomes
back together). Wall time per step is printed too (one run: indicative only).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

MEASURE = textwrap.dedent("""
    import asyncio, json, sys, time, uuid
    from datetime import UTC, datetime
    import asyncpg
    counted = {"n": 0}
    def counting(name, per_call=lambda args: 1):
        original = getattr(asyncpg.connection.Connection, name)
        async def wrapper(self, *args, **kwargs):
            counted["n"] += per_call(args)
            return await original(self, *args, **kwargs)
        setattr(asyncpg.connection.Connection, name, wrapper)
    for name in ("execute", "fetch", "fetchrow", "fetchval"):
        counting(name)
    counting("executemany", lambda args: len(args[1]) if len(args) > 1 else 1)
    from bridge.buffer import Buffer, Policy
    from bridge.contracts import Outcome
    from bridge.model import Direction, Message

    POLICY = Policy(max_attempts=3, retry_delay=lambda attempt: 60.0, held_delay=60.0)

    def message(i):
        return Message(source="whatsapp", provider_id=f"m{i}", conversation=f"+9190{i:08d}",
                       account="acc", direction=Direction.IN,
                       sent_at=datetime.fromtimestamp(1_700_000_000 + i, UTC), kind="text",
                       text=f"text {i}")

    async def step(what, work, out):
        before, started = counted["n"], time.perf_counter()
        result = await work()
        out[what] = {"statements": counted["n"] - before,
                     "ms": round((time.perf_counter() - started) * 1000, 1)}
        return result

    async def run(url, n, together):
        buffer = await Buffer.open(url)
        out = {}
        try:
            await buffer.install_sinks(["crm"])
            await buffer.append([message(i) for i in range(n)])
            claims = await step("claim", lambda: buffer.claim("crm", n, 60), out)
            assert len(claims) == n, len(claims)
            outcomes = [[Outcome.delivered()] * len(c.messages) for c in claims]
            if together:
                async def work():
                    return await asyncio.gather(*(buffer.complete(c, o, POLICY)
                                                  for c, o in zip(claims, outcomes)))
            else:
                async def work():
                    return [await buffer.complete(c, o, POLICY)
                            for c, o in zip(claims, outcomes)]
            await step("complete", work, out)
            assert (await buffer.sinks())[0]["backlog"] == 0
        finally:
            await buffer.close()
        return out

    async def main(base, n):
        import asyncpg as pg
        found = {}
        for together in (False, True):
            schema = "bench_claims_" + uuid.uuid4().hex[:10]
            url = f"{base}{'&' if '?' in base else '?'}schema={schema}"
            try:
                found["together" if together else "one by one"] = await run(url, n, together)
            finally:
                conn = await pg.connect(base)
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
                await conn.close()
        print(json.dumps(found))

    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
""")


def measure(python: str, cwd: Path, url: str, n: int) -> dict:
    done = subprocess.run([python, "-c", MEASURE, url, str(n)], cwd=cwd, capture_output=True,
                          text=True, timeout=600)
    if done.returncode:
        raise SystemExit(f"the measurement failed in {cwd}:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="20 conversations, for CI")
    parser.add_argument("--postgres", default=os.environ.get("CHATBRIDGE_TEST_POSTGRES"))
    parser.add_argument("--against", metavar="REV", help="also count commit REV's statements")
    parser.add_argument("-n", type=int, default=500, help="one-message conversations")
    args = parser.parse_args()
    if not args.postgres:
        print("claims: skipped (no PostgreSQL: set $CHATBRIDGE_TEST_POSTGRES or --postgres)")
        print("summary: skipped, no PostgreSQL")
        return
    n = 20 if args.smoke else args.n
    runs = [("this tree", sys.executable, ROOT)]
    with tempfile.TemporaryDirectory() as tmp:
        if args.against:
            sys.path.insert(0, str(ROOT / "bench"))
            from ingest import checkout, remove_checkout

            tree, python = checkout(args.against, Path(tmp))
            runs.append((args.against, python, tree))
        try:
            print(f"claims: {n} one-message conversations, one sink, PostgreSQL")
            print(f"{'code':<12} | {'completion':<10} | {'claim: stmts':>12} | {'ms':>7} |"
                  f" {'complete: stmts':>15} | {'ms':>7}")
            for name, python, cwd in runs:
                for how, figures in measure(python, cwd, args.postgres, n).items():
                    print(f"{name:<12} | {how:<10} | {figures['claim']['statements']:>12,} |"
                          f" {figures['claim']['ms']:>7} | "
                          f"{figures['complete']['statements']:>15,} |"
                          f" {figures['complete']['ms']:>7}")
        finally:
            if args.against:
                remove_checkout(tree)
    print("summary: statements counted at the driver (see the table)")


if __name__ == "__main__":
    main()
