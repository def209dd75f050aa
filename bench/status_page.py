"""Status page server time at scale: list, sort, filter, search, one conversation, charts.

    python bench/status_page.py            # 100,000 conversations, 1,000,000 messages
    python bench/status_page.py --smoke    # 2,000 / 20,000 in seconds (CI runs this)

The buffer is migrated by Buffer.open, then filled in bulk with sqlite3 (appending 1M
messages one webhook at a time would take the benchmark's whole budget); the figures are
the reads the page handlers await (bridge.status.page_data / conversation_data), timed
as the median and worst of several runs each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bridge.attention import attention  # noqa: E402
from bridge.buffer import Buffer  # noqa: E402
from bridge.status import page_data  # noqa: E402

SINK = "crm"
NAMES = ("Asha", "Ravi", "Meera", "Arjun", "Priya", "Kiran", "Sanjay", "Divya", "Tara", "Vikram")


def number(c: int) -> str:
    return f"+9198{c:08d}"


def fill(path: Path, conversations: int, per_conversation: int, now: float) -> None:
    """Messages over the last 30 days; most delivered, some pending, dead and held."""
    rnd = random.Random(19)
    db = sqlite3.connect(path)
    db.execute("PRAGMA synchronous = OFF")
    db.execute("INSERT INTO sink_state (sink, installed_at, last_sync_at) VALUES (?, ?, ?)",
               (SINK, now - 40 * 86400, now - 60))
    mid = 0
    for start in range(0, conversations, 1000):
        convs, msgs, dels, batches, ledger, mapped = [], [], [], [], [], []
        for c in range(start, min(start + 1000, conversations)):
            key, name = number(c), f"{NAMES[c % 10]} {c}"
            last = now - rnd.random() * 30 * 86400
            fate = rnd.random()  # 2 % pending, 0.5 % dead, 0.3 % held
            state = ("pending" if fate < 0.02 else "dead" if fate < 0.025 else "done")
            held = "no lead for this number" if 0.025 <= fate < 0.028 else None
            convs.append((key, name, "106540352242922", last, per_conversation,
                          "group" if c % 100 == 99 else "person"))
            batches.append((c + 1, SINK, key, f"b{c:024x}", "done", 1, last))
            for n in range(per_conversation):
                mid += 1
                at = last - (per_conversation - n) * 600
                body = json.dumps({"direction": "in" if n % 2 == 0 else "out", "kind": "text",
                                   "text": f"message {n} of {name}", "contact_name": name})
                msgs.append((mid, "whatsapp", f"wamid.{mid}", key, at, at, body))
                last_one = n == per_conversation - 1
                st = state if last_one else "done"
                dels.append((SINK, mid, st, None if st == "pending" else c + 1,
                             "rejected: too long" if st == "dead" else None,
                             None if st == "pending" else at))
            ledger.append((SINK, f"b{c:024x}", f"act-{c}", last))
            mapped.append((SINK, key, f"lead-{c}", last if state == "done" else None, held))
        db.executemany("INSERT INTO conversations (key, contact_name, account, last_message_at,"
                       " message_count, kind) VALUES (?,?,?,?,?,?)", convs)
        db.executemany("INSERT INTO messages (id, source, provider_id, conversation, sent_at,"
                       " stored_at, body) VALUES (?,?,?,?,?,?,?)", msgs)
        db.executemany("INSERT INTO deliveries (sink, message_id, state, batch_id, reason,"
                       " done_at) VALUES (?,?,?,?,?,?)", dels)
        db.executemany("INSERT INTO batches (id, sink, conversation, key, state, attempts,"
                       " created_at) VALUES (?,?,?,?,?,?,?)", batches)
        db.executemany("INSERT INTO ledger VALUES (?,?,?,?)", ledger)
        db.executemany("INSERT INTO sink_conversations (sink, conversation, record_id,"
                       " last_synced_at, held_reason) VALUES (?,?,?,?,?)", mapped)
        db.commit()
    db.close()


async def timed(label: str, runs: int, work) -> tuple[str, float, float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        await work()
        times.append((time.perf_counter() - started) * 1000)
    return label, statistics.median(times), max(times)


async def measure(buffer: Buffer, conversations: int, runs: int) -> list[tuple[str, float, float]]:
    probe = number(conversations // 2)
    cases = [
        ("list, newest first, page 1", {}),
        ("list, newest first, page 1000" if conversations >= 50_000 else "list, last page",
         {"page": min(1000, conversations // 50)}),
        ("list by last synced", {"sort": "last_synced"}),
        ("list by pending", {"sort": "pending"}),
        ("filter held", {"show": "held"}),
        ("filter dead", {"show": "dead"}),
        ("filter groups", {"show": "groups"}),
        ("search by number (8 digits)", {"search": probe[-8:]}),
        ("search by name", {"search": f"Meera {conversations // 2 + 2}"}),
        ("search, no match", {"search": "nobody-here"}),
    ]
    figures = []
    for label, kwargs in cases:
        figures.append(await timed(label, runs, lambda k=kwargs: page_data(buffer, SINK, **k)))
    sinks = await buffer.sinks()
    figures.append(await timed("needs attention: lists and previews", runs,
                               lambda: attention(buffer, sinks, SINK)))
    figures.append(await timed("health verdict reads", runs,
                               lambda: buffer.sync_health(SINK)))
    figures.append(await timed("one conversation (its page)", runs,
                               lambda: buffer.conversation(probe)))
    figures.append(await timed("chart: messages per hour, 48 h", runs,
                               lambda: buffer.hourly(time.time() - 48 * 3600)))
    return figures


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny run for CI")
    parser.add_argument("--conversations", type=int, default=100_000)
    parser.add_argument("--per-conversation", type=int, default=10)
    args = parser.parse_args()
    conversations = 2_000 if args.smoke else args.conversations
    runs = 3 if args.smoke else 7
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "page.db"
        await (await Buffer.open(path)).close()  # creates and migrates
        now = time.time()
        started = time.perf_counter()
        fill(path, conversations, args.per_conversation, now)
        print(f"filled {conversations:,} conversations, "
              f"{conversations * args.per_conversation:,} messages in "
              f"{time.perf_counter() - started:.0f} s")
        buffer = await Buffer.open(path)
        try:
            figures = await measure(buffer, conversations, runs)
        finally:
            await buffer.close()
    print(f"{'read':40} {'median ms':>10} {'worst ms':>10}")
    for label, median, worst in figures:
        print(f"{label:40} {median:10.1f} {worst:10.1f}")
    slowest = max(figures, key=lambda f: f[1])
    print(f"summary: {conversations:,} conversations; slowest median {slowest[1]:.0f} ms "
          f"({slowest[0]}); every page read under 200 ms: "
          f"{'yes' if all(f[2] <= 200 for f in figures) else 'NO'}")


if __name__ == "__main__":
    asyncio.run(main())
