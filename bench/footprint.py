"""Footprint: the memory of a running bridge and the disk its buffer takes per message.

`bridge run` (WhatsApp source, LeadSquared sink pointed at a simulator process) is measured
from outside, through /proc/<pid>/status (VmRSS sampled every 50 ms; VmHWM, the kernel's
peak): idle after start; under signed webhooks posted from this process at concurrency 64;
with 1,000,000 messages buffered (written with the real Buffer.append before the bridge
starts, the sink installed so every message has its delivery row), draining at
LeadSquared's documented 25/5s; and draining backlogs of 10k, 100k and 1M messages
unthrottled for a fixed time, where RSS must stay flat (the drain streams the backlog).
Then the buffer's bytes per message, in all and by table (SQLite's dbstat).

    python bench/footprint.py                    # full: 1,000,000 buffered, ~4 minutes
    python bench/footprint.py --messages 200000  # a smaller buffered backlog
    python bench/footprint.py --smoke            # 2,000 messages, tiny load, one drain (CI)

Target (issue 8): RSS <= 100 MB with 1,000,000 messages buffered. bench/README.md explains
each figure.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._support import (  # noqa: E402
    ACCESS_KEY,
    SECRET_KEY,
    BridgeProcess,
    SimulatorProcess,
    free_port,
    memory_kib,
    numbers_for,
    percentile,
    seed_crm,
    sim_rate,
)
from bridge.buffer import Buffer  # noqa: E402
from bridge.model import Message  # noqa: E402
from plugins.leadsquared.ratelimit import parse_rate  # noqa: E402
from plugins.whatsapp.parse import parse_payload  # noqa: E402
from plugins.whatsapp.signature import sign  # noqa: E402

SINK = "leadsquared"
APP_SECRET, VERIFY_TOKEN = "bench-app-secret", "bench-verify-token"
PHONE_ID, BUSINESS, WABA = "106540352242922", "15550783881", "102290129340398"
# the ~1.5 KB Cloud API body of bench/ingest.py and the performance notes
TEXT = "Namaste, I would like to know the price of the annual plan for my team of twelve. " * 8
TARGET_MB = 100  # issue 8: RSS <= 100 MB (10^6 bytes) with 1,000,000 messages buffered
MIB = 1024 * 1024
REAL_RATE = "25/5s"  # LeadSquared's documented budget
# "Rate off": the sink always has a limiter, and it keeps the start times of its last
# `calls` calls, so 1000000/1s (bench/drain.py) would add ~32 bytes of RSS per call up
# to 32 MB. 5,000/1s never waits (the bridge makes ~1,000 calls/s) and holds <= 160 KB.
UNTHROTTLED = "5000/1s"
SHIPPED_INTERVAL = 180.0  # the default sync_interval: no drain during the ingest load
CHUNK = 5000  # messages per Buffer.append when building a backlog
PROBE_EVERY = 0.2  # seconds between webhooks that time the 200 while a backlog drains


# --- webhooks and messages -----------------------------------------------------------------


def webhook(provider_id: str, number: str, sent: float) -> bytes:
    """A signed-to-be Cloud API notification with one ~650-character text message."""
    wa_id = number.lstrip("+")
    message = {"from": wa_id, "id": provider_id, "timestamp": str(int(sent)), "type": "text",
               "text": {"body": TEXT}}
    value = {"messaging_product": "whatsapp",
             "metadata": {"display_phone_number": BUSINESS, "phone_number_id": PHONE_ID},
             "contacts": [{"profile": {"name": f"Customer {wa_id[-4:]}"}, "wa_id": wa_id}],
             "messages": [message]}
    return json.dumps({"object": "whatsapp_business_account", "entry": [
        {"id": WABA, "changes": [{"field": "messages", "value": value}]}]}).encode()


def parsed(provider_id: str, number: str, sent: float) -> Message:
    """The message the WhatsApp plugin makes of that webhook (what a POST would store)."""
    return parse_payload(json.loads(webhook(provider_id, number, sent))).messages[0]


def backlog_chunk(template: Message, first: int, count: int, numbers: list[str],
                  start: float, step: float) -> list[Message]:
    """Messages first..first+count-1: conversations take turns, oldest first."""
    out = []
    for n in range(first, first + count):
        number = numbers[n % len(numbers)]
        provider_id = f"wamid.fp{n:09d}"
        sent = start + n * step
        out.append(dataclasses.replace(
            template, provider_id=provider_id, conversation=number,
            sent_at=datetime.fromtimestamp(sent, UTC),
            contact_name=f"Customer {number[-4:]}",
            raw={**template.raw, "id": provider_id, "from": number[1:],
                 "timestamp": str(int(sent))}))
    return out


async def build_buffer(path: Path, count: int, numbers: list[str]) -> float:
    """Append `count` live messages with the real Buffer.append; seconds it took."""
    template = parsed("wamid.template", numbers[0], time.time())
    buffer = await Buffer.open(path)
    try:
        await buffer.install_sinks([SINK])
        await buffer.backfill(SINK, time.time())  # nothing older: the backlog is live
        start = time.time() - 6 * 3600
        step = 5 * 3600 / max(1, count)
        started = time.perf_counter()
        for first in range(0, count, CHUNK):
            await buffer.append(backlog_chunk(template, first, min(CHUNK, count - first),
                                              numbers, start, step))
        return time.perf_counter() - started
    finally:
        await buffer.close()


# --- measuring -----------------------------------------------------------------------------


class Rss(threading.Thread):
    """Samples a process's VmRSS every `every` seconds until stopped (MiB, monotonic time)."""

    def __init__(self, pid: int, every: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.samples: list[tuple[float, float]] = []
        self.hwm = 0.0
        self.last: dict[str, int] = {}
        self._done = threading.Event()
        self.start()

    def run(self) -> None:
        while not self._done.is_set():
            try:
                memory = memory_kib(self.pid)
            except (FileNotFoundError, ProcessLookupError):
                return
            self.hwm = memory["VmHWM"] / 1024
            self.samples.append((time.monotonic(), memory["VmRSS"] / 1024))
            self._done.wait(self.every)

    def now(self) -> float:
        self.last = memory_kib(self.pid)
        self.hwm = self.last["VmHWM"] / 1024
        return self.last["VmRSS"] / 1024

    def split(self) -> str:
        """Anonymous (heap, SQLite caches) and file-backed (code, libraries) parts of the
        last reading."""
        return (f"anon {self.last.get('RssAnon', 0) / 1024:.1f} + file "
                f"{self.last.get('RssFile', 0) / 1024:.1f} MiB")

    def peak(self, since: float, until: float | None = None) -> float:
        until = time.monotonic() if until is None else until
        return max((rss for at, rss in self.samples if since <= at <= until), default=self.now())

    def stop(self) -> None:
        self._done.set()
        self.join(2)


class Poster:
    """Signed webhooks from this process; unique message ids; 200 latencies."""

    def __init__(self, url: str, numbers: list[str], prefix: str) -> None:
        self.url = f"{url}/webhooks/whatsapp"
        self.numbers, self.prefix = numbers, prefix
        self.sent = 0
        self.latencies: list[float] = []
        self.errors = 0
        self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

    async def post(self) -> None:
        n = self.sent
        self.sent += 1
        body = webhook(f"wamid.{self.prefix}{n:09d}", self.numbers[n % len(self.numbers)],
                       time.time())
        started = time.perf_counter()
        async with self.http.post(self.url, data=body, headers={
                "Content-Type": "application/json",
                "X-Hub-Signature-256": sign(body, APP_SECRET)}) as response:
            await response.read()
            self.errors += response.status != 200
        self.latencies.append(time.perf_counter() - started)

    async def load(self, concurrency: int, seconds: float) -> float:
        """`concurrency` posters back to back for `seconds`; wall seconds taken."""
        deadline = time.monotonic() + seconds

        async def worker() -> None:
            while time.monotonic() < deadline:
                await self.post()

        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.monotonic() - started

    async def pace(self, seconds: float, every: float = PROBE_EVERY) -> None:
        """One webhook every `every` seconds for `seconds`."""
        started = time.monotonic()
        n = 0
        while time.monotonic() - started < seconds:
            await asyncio.sleep(max(0.0, started + n * every - time.monotonic()))
            await self.post()
            n += 1

    def ms(self, q: float) -> float:
        return percentile(self.latencies, q) * 1000 if self.latencies else float("nan")

    async def close(self) -> None:
        await self.http.close()


def bridge_config(sim: SimulatorProcess, db: Path, rate: str, interval: float) -> dict:
    sink = {"host": sim.url, "access_key": ACCESS_KEY, "secret_key": SECRET_KEY,
            "sync_interval": interval, "rate_limit": rate}
    return {"server": {"port": free_port()}, "buffer": {"path": str(db)},
            "plugins": {"whatsapp": {"verify_token": VERIFY_TOKEN, "app_secret": APP_SECRET},
                        "leadsquared": sink}}


def start_bridge(sim: SimulatorProcess, db: Path, rate: str, interval: float,
                 name: str) -> BridgeProcess:
    sim.configure(rate_limit=None if rate == UNTHROTTLED else sim_rate(parse_rate(rate)))
    return BridgeProcess(bridge_config(sim, db, rate, interval), db.parent, name, timeout=300)


def counts(db: Path) -> dict[str, int]:
    """Messages and delivery rows by state (read after the bridge stopped)."""
    with sqlite3.connect(db) as con:
        out = dict(con.execute("SELECT state, count(*) FROM deliveries WHERE sink = ?"
                               " GROUP BY state", (SINK,)).fetchall())
        out["messages"] = con.execute("SELECT count(*) FROM messages").fetchone()[0]
    con.close()
    return out


def disk(db: Path) -> dict[str, Any]:
    """File + WAL after a checkpoint; bytes by table: (rows, its indexes), from dbstat."""
    con = sqlite3.connect(db)
    try:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        messages = con.execute("SELECT count(*) FROM messages").fetchone()[0]
        owner = {name: (table, kind == "index") for kind, name, table in con.execute(
            "SELECT type, name, tbl_name FROM sqlite_schema WHERE type IN ('table', 'index')")}
        tables: dict[str, list[int]] = {}
        try:
            for name, size in con.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name"):
                table, index = owner.get(name, (name, False))
                tables.setdefault(table, [0, 0])[index] += size
        except sqlite3.OperationalError:  # SQLite built without the dbstat table
            tables = {}
        freelist = con.execute("PRAGMA freelist_count").fetchone()[0] * \
            con.execute("PRAGMA page_size").fetchone()[0]
    finally:
        con.close()
    wal = Path(f"{db}-wal")
    size = db.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
    return {"messages": messages, "bytes": size, "tables": tables, "free": freelist}


# --- the runs ------------------------------------------------------------------------------


async def stop_run(poster: Poster, rss: Rss, bridge: BridgeProcess) -> None:
    """End a measured run; whatever else fails, no bridge outlives it."""
    try:
        await poster.close()
        rss.stop()
    finally:
        bridge.stop()


async def ingest_run(args: argparse.Namespace, sim: SimulatorProcess, work: Path,
                     numbers: list[str]) -> dict[str, Any]:
    """Empty buffer: idle after start, then webhooks at `concurrency`, then idle again."""
    db = work / "ingest" / "bridge.db"
    db.parent.mkdir()
    bridge = start_bridge(sim, db, REAL_RATE, SHIPPED_INTERVAL, "ingest")
    rss = Rss(bridge.pid)
    poster = Poster(bridge.url, numbers, "load")
    try:
        await asyncio.sleep(args.settle)
        idle = rss.now()
        idle_split = rss.split()
        started = time.monotonic()
        wall = await poster.load(args.concurrency, args.load_seconds)
        ended = time.monotonic()
        peak = rss.peak(started, ended)
        await asyncio.sleep(args.settle)
        after = rss.now()
        result = {"startup": bridge.startup, "idle": idle, "idle_split": idle_split,
                  "peak": peak, "after": after,
                  "hwm": rss.hwm, "requests": poster.sent, "rate": poster.sent / wall,
                  "errors": poster.errors, "p50": poster.ms(50), "p99": poster.ms(99)}
    finally:
        await stop_run(poster, rss, bridge)
    result["disk"] = disk(db)
    return result


async def backlog_run(sim: SimulatorProcess, db: Path, numbers: list[str], rate: str,
                      interval: float, settle: float, seconds: float,
                      name: str) -> dict[str, Any]:
    """A bridge on an existing backlog: RSS after start, peak and at the end of `seconds`
    while it drains (a paced webhook every 0.2 s times the 200 meanwhile)."""
    before = counts(db)
    calls = sim.admin("GET", "stats")["calls"]
    bridge = start_bridge(sim, db, rate, interval, name)
    rss = Rss(bridge.pid)
    poster = Poster(bridge.url, numbers, f"probe-{name}-")
    try:
        at_start = rss.now()
        started = time.monotonic()
        await poster.pace(settle + seconds)
        result = {"startup": bridge.startup, "start": at_start, "settled": None,
                  "peak": rss.peak(started), "end": rss.now(), "hwm": rss.hwm,
                  "seconds": time.monotonic() - started, "p50": poster.ms(50),
                  "max": max(poster.latencies, default=float("nan")) * 1000,
                  "probes": poster.sent, "probe_errors": poster.errors,
                  "split": rss.split()}
        result["calls"] = sim.admin("GET", "stats")["calls"] - calls
        settled = [r for at, r in rss.samples if started + settle <= at]
        result["settled"] = statistics.median(settled) if settled else result["end"]
    finally:
        await stop_run(poster, rss, bridge)
    after = counts(db)
    result["pending"] = before.get("pending", 0)
    result["delivered"] = after.get("done", 0) - before.get("done", 0)
    result["dead"] = after.get("dead", 0) - before.get("dead", 0)
    return result


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    sim = SimulatorProcess()
    try:
        numbers = numbers_for(args.conversations)
        seed_crm(sim, numbers, 0.2, 7)
        with tempfile.TemporaryDirectory(prefix="bench-footprint-") as tmp:
            work = Path(tmp)
            print("idle and under ingest load ...", flush=True)
            result: dict[str, Any] = {"ingest": await ingest_run(args, sim, work, numbers)}

            big = work / "big" / "bridge.db"
            big.parent.mkdir()
            print(f"building a buffer of {args.messages:,} messages ...", flush=True)
            result["build"] = await build_buffer(big, args.messages, numbers)
            print(f"built in {result['build']:.1f} s; bytes by table ...", flush=True)
            result["big_disk"] = disk(big)
            print(f"bridge with {args.messages:,} buffered, draining at {REAL_RATE} ...",
                  flush=True)
            result["buffered"] = await backlog_run(
                sim, big, numbers, REAL_RATE, SHIPPED_INTERVAL, args.settle, args.hold,
                "buffered")

            drains = {}
            for size in args.drain_sizes:
                if size == args.messages:
                    db = big
                else:
                    db = work / f"drain-{size}" / "bridge.db"
                    db.parent.mkdir()
                    await build_buffer(db, size, numbers)
                print(f"draining a backlog of {size:,} unthrottled for "
                      f"{args.drain_seconds:g} s ...", flush=True)
                drains[size] = await backlog_run(sim, db, numbers, UNTHROTTLED, 1.0,
                                                 args.settle, args.drain_seconds,
                                                 f"drain-{size}")
            result["drains"] = drains
    finally:
        sim.stop()
    return result


# --- printing ------------------------------------------------------------------------------


def mib(value: float) -> str:
    return f"{value:.1f}"


def report(args: argparse.Namespace, r: dict[str, Any]) -> None:
    ingest, buffered, n = r["ingest"], r["buffered"], args.messages
    rows = [
        ("idle after start (empty buffer)", mib(ingest["idle"]),
         f"{args.settle:g} s after /healthz ({ingest['idle_split']}); start -> /healthz "
         f"{ingest['startup']:.1f} s"),
        (f"ingest c={args.concurrency} for {args.load_seconds:g} s: peak", mib(ingest["peak"]),
         f"{ingest['requests']:,} webhooks, {ingest['rate']:,.0f}/s, {ingest['errors']} "
         f"non-200, 200 p50 {ingest['p50']:.1f} ms / p99 {ingest['p99']:.1f} ms"),
        (f"after load (+{args.settle:g} s); VmHWM",
         f"{mib(ingest['after'])}; {mib(ingest['hwm'])}", "VmHWM: the process's peak"),
        (f"{n:,} buffered: at /healthz", mib(buffered["start"]),
         f"start -> /healthz {buffered['startup']:.1f} s; buffer built in {r['build']:.1f} s"),
        (f"{n:,} buffered: settled; end", f"{mib(buffered['settled'])}; {mib(buffered['end'])}",
         f"median after {args.settle:g} s; at {buffered['seconds']:.0f} s ({buffered['split']})"),
        (f"{n:,} buffered: peak; VmHWM", f"{mib(buffered['peak'])}; {mib(buffered['hwm'])}",
         f"draining at {REAL_RATE}: {buffered['calls']:,} CRM calls, {buffered['delivered']:,} "
         f"delivered, {buffered['dead']} dead; webhook 200 p50 {buffered['p50']:.1f} ms, max "
         f"{buffered['max']:.0f} ms, {buffered['probe_errors']} non-200"),
    ]
    width = max(len(name) for name, _, _ in rows)
    print(f"{'RSS of `bridge run`, MiB':<{width}} | {'MiB':>11} | notes")
    for name, value, note in rows:
        print(f"{name:<{width}} | {value:>11} | {note}")

    print()
    drains = r["drains"]
    sizes = list(drains)
    drain_rows = [
        ("pending at start", [f"{drains[s]['pending']:,}" for s in sizes]),
        ("RSS at /healthz", [mib(drains[s]["start"]) for s in sizes]),
        (f"RSS settled (median after {args.settle:g} s)",
         [mib(drains[s]["settled"]) for s in sizes]),
        ("RSS peak (sampled); VmHWM",
         [f"{mib(drains[s]['peak'])}; {mib(drains[s]['hwm'])}" for s in sizes]),
        ("RSS at the end", [mib(drains[s]["end"]) for s in sizes]),
        ("CRM calls (per s)", [f"{drains[s]['calls']:,} "
                               f"({drains[s]['calls'] / drains[s]['seconds']:,.0f})"
                               for s in sizes]),
        ("delivered (msg/s)", [f"{drains[s]['delivered']:,} "
                               f"({drains[s]['delivered'] / drains[s]['seconds']:,.0f})"
                               for s in sizes]),
        ("webhook 200 p50 / max, ms", [f"{drains[s]['p50']:.1f} / {drains[s]['max']:.0f}"
                                       for s in sizes]),
        ("dead letters; webhook non-200", [f"{drains[s]['dead']}; {drains[s]['probe_errors']}"
                                           for s in sizes]),
    ]
    width = max(len(name) for name, _ in drain_rows)
    cell = max(14, *(len(v) for _, values in drain_rows for v in values))
    print(f"{f'drain, rate off, {args.drain_seconds:g} s':<{width}} | "
          + " | ".join(f"{f'{s:,} backlog':>{cell}}" for s in sizes))
    for name, values in drain_rows:
        print(f"{name:<{width}} | " + " | ".join(f"{v:>{cell}}" for v in values))

    print()
    disks = {"webhooks (ingest run)": ingest["disk"], f"bulk {n:,}": r["big_disk"]}
    big = r["big_disk"]
    tables = sorted(big["tables"], key=lambda t: -sum(big["tables"][t]))
    shown = [t for t in tables if sum(big["tables"][t]) >= 0.01 * big["bytes"]]
    others = [t for t in tables if t not in shown]
    disk_rows = [
        ("messages", [f"{d['messages']:,}" for d in disks.values()]),
        ("file + WAL after checkpoint, MB", [f"{d['bytes'] / 1e6:,.1f}" for d in disks.values()]),
        ("bytes per message", [per(d["bytes"], d) for d in disks.values()]),
    ]
    for table in shown:
        disk_rows.append((f"  {table}: rows + indexes", [
            f"{per(d['tables'].get(table, [0, 0])[0], d)} + "
            f"{per(d['tables'].get(table, [0, 0])[1], d)}" for d in disks.values()]))
    if others:
        disk_rows.append((f"  {len(others)} other tables", [
            per(sum(sum(d["tables"].get(t, [0, 0])) for t in others), d)
            for d in disks.values()]))
    disk_rows.append(("  free pages", [per(d["free"], d) for d in disks.values()]))
    width = max(len(name) for name, _ in disk_rows)
    cell = max(len(k) for k in disks)
    print(f"{'buffer on disk':<{width}} | " + " | ".join(f"{k:>{cell}}" for k in disks))
    for name, values in disk_rows:
        print(f"{name:<{width}} | " + " | ".join(f"{v:>{cell}}" for v in values))

    print()
    worst = max(buffered["hwm"], drains[n]["hwm"]) if n in drains else buffered["hwm"]
    met = worst * MIB <= TARGET_MB * 1e6
    scope = "" if n == 1_000_000 else f" (measured with {n:,}; the target is for 1,000,000)"
    low, high = drains[sizes[0]], drains[sizes[-1]]
    growth = high["settled"] - low["settled"]
    flat = growth <= max(5.0, 0.1 * low["settled"])
    print(f"summary: RSS idle {mib(ingest['idle'])} MiB, {ingest['rate']:,.0f} webhooks/s at "
          f"c={args.concurrency} peak {mib(ingest['peak'])} MiB, after {mib(ingest['after'])} "
          f"MiB; {n:,} buffered: peak {mib(worst)} MiB (VmHWM, buffered and draining), target "
          f"<= {TARGET_MB} MB ({TARGET_MB * 1e6 / MIB:.1f} MiB) "
          f"{'met' if met else 'MISSED'}{scope}; draining {sizes[0]:,} -> {sizes[-1]:,}: "
          f"settled RSS {mib(low['settled'])} -> {mib(high['settled'])} MiB "
          f"({'flat' if flat else 'GROWS'}); "
          f"{r['big_disk']['bytes'] / max(1, r['big_disk']['messages']):,.0f} bytes/message "
          f"on disk; {n:,} buffered in {r['build']:.0f} s")


def per(size: int, d: dict[str, Any]) -> str:
    return f"{size / max(1, d['messages']):,.0f}"


# --- main ----------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny run for CI")
    parser.add_argument("--messages", type=int, default=1_000_000,
                        help="messages buffered for the 'buffered' rows and the largest "
                             "drain (default 1,000,000)")
    parser.add_argument("--conversations", type=int, default=1_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--load-seconds", type=float, default=20.0)
    parser.add_argument("--hold", type=float, default=30.0,
                        help="seconds the bridge runs with the big backlog buffered")
    parser.add_argument("--drain-sizes", default="10000,100000",
                        help="smaller backlogs to drain besides --messages (comma-separated)")
    parser.add_argument("--drain-seconds", type=float, default=30.0)
    parser.add_argument("--settle", type=float, default=5.0,
                        help="seconds after start (or after the load) before RSS counts")
    args = parser.parse_args()
    if args.smoke:
        args.messages, args.conversations, args.concurrency = 2_000, 20, 8
        args.load_seconds, args.hold, args.drain_seconds, args.settle = 1.0, 1.0, 1.0, 0.5
        # one drain, of the buffered backlog: each drain is a bridge started and stopped
        # (~10 s of a smoke run on a 2-core machine); the table prints the same either way
        args.drain_sizes = ""
    sizes = {int(s) for s in args.drain_sizes.split(",") if s.strip()}
    args.drain_sizes = sorted(s for s in sizes | {args.messages} if 0 < s <= args.messages)
    return args


def main() -> None:
    args = parse_args()
    print(f"footprint: `bridge run` (WhatsApp + LeadSquared -> simulator process), "
          f"{args.conversations:,} conversations, ~1.5 KB webhooks, {args.messages:,} "
          "messages buffered", flush=True)
    started = time.monotonic()
    result = asyncio.run(measure(args))
    print(f"(measured in {time.monotonic() - started:.0f} s)")
    print()
    report(args, result)


if __name__ == "__main__":
    main()
