"""Child process for the history crash test: `bridge run -c <config>` whose buffer stalls
(prints "stalled", then waits forever, nothing committed) on the first append holding
history of phone_number_id <account>; the test SIGKILLs it there."""

import asyncio
import sys

from bridge.buffer.sqlite import SQLiteBuffer
from bridge.cli import main

_append = SQLiteBuffer.append
STALL_ON = sys.argv[2] if __name__ == "__main__" else ""


async def stalling(self, messages, *args, **kwargs):
    messages = list(messages)
    if any(m.history and m.account == STALL_ON for m in messages):
        sys.stdout.write("stalled\n")
        sys.stdout.flush()
        await asyncio.Event().wait()
    return await _append(self, messages, *args, **kwargs)


if __name__ == "__main__":
    SQLiteBuffer.append = stalling
    sys.argv = [sys.argv[0], "run", "-c", sys.argv[1]]
    main()
