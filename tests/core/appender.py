"""Child process for the crash test: appends concurrently, prints each acknowledged id."""

import asyncio
import sys
from datetime import UTC, datetime

from bridge.buffer import Buffer
from bridge.model import Direction, Message


async def worker(buffer: Buffer, prefix: str, worker_id: int) -> None:
    n = 0
    while True:
        ids = [f"{prefix}-{worker_id}-{n}-{k}" for k in range(3)]
        await buffer.append([
            Message("crash", pid, f"+9198765{worker_id:05d}", "acct", Direction.IN,
                    datetime.now(UTC), "text", "x" * 200) for pid in ids])
        sys.stdout.write("ok " + " ".join(ids) + "\n")
        sys.stdout.flush()
        n += 1


async def main(path: str, prefix: str) -> None:
    buffer = await Buffer.open(path, runner=True)
    await buffer.install_sinks(["crm"])
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    await asyncio.gather(*[worker(buffer, prefix, i) for i in range(16)])


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
