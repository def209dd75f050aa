"""Freshness: how long after a webhook's 200 its message shows up in LeadSquared.

`bridge run` (WhatsApp source, LeadSquared sink) and the LeadSquared simulator run as
processes on 127.0.0.1. After a warm-up message per conversation (leads found and cached),
signed webhooks arrive at a steady pace, one text message each, round-robin over the
conversations, whose numbers are leads (a share with an opportunity). A message's latency
runs from its POST's 200 to the arrival at the simulator of the activity whose note holds
its text (the simulator's call log, on the same monotonic clock; polling the simulator's
activities confirms it). The sink syncs every --interval, so a latency is about uniform
over the interval plus the drain. Target: p95 <= interval + 5 s.

    python bench/freshness.py                  # interval 10s, 60 s of webhooks: ~1.5 min
    python bench/freshness.py --interval 3m    # the shipped interval, 7 min of webhooks: ~10 min
    python bench/freshness.py --smoke          # interval 1s, 10 webhooks: seconds (CI)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._support import (  # noqa: E402
    ACCESS_KEY,
    SECRET_KEY,
    BridgeProcess,
    SimulatorProcess,
    count_kinds,
    free_port,
    max_in_window,
    numbers_for,
    percentile,
    seed_crm,
    sim_rate,
)
from bridge.durations import parse_duration  # noqa: E402
from plugins.leadsquared.ratelimit import parse_rate  # noqa: E402
from plugins.whatsapp.signature import sign  # noqa: E402

APP_SECRET, VERIFY_TOKEN = "bench-app-secret", "bench-verify-token"
PHONE_ID, BUSINESS, WABA = "106540352242922", "15550783881", "102290129340398"
TOKEN = re.compile(r"\b(?:fresh|warm)-\d{5}\b")
POLL = 0.2  # seconds between looks at the simulator's activities
SLACK = 5.0  # the target: p95 <= interval + SLACK
DEFAULT_RATE = "25/5s"  # LeadSquared's documented budget


def bridge_config(sim: SimulatorProcess, workdir: Path, interval: float, rate: str) -> dict:
    sink = {"host": sim.url, "access_key": ACCESS_KEY, "secret_key": SECRET_KEY,
            "sync_interval": interval, "rate_limit": rate}
    return {"server": {"port": free_port()}, "buffer": {"path": str(workdir / "bridge.db")},
            "plugins": {"whatsapp": {"verify_token": VERIFY_TOKEN, "app_secret": APP_SECRET},
                        "leadsquared": sink}}


def webhook(token: str, number: str) -> bytes:
    """A Cloud API notification carrying one text message from `number` (E.164)."""
    wa_id = number.lstrip("+")
    message = {"from": wa_id, "id": f"wamid.{token}", "timestamp": str(int(time.time())),
               "type": "text", "text": {"body": f"{token} is the plan still on offer?"}}
    value = {"messaging_product": "whatsapp",
             "metadata": {"display_phone_number": BUSINESS, "phone_number_id": PHONE_ID},
             "contacts": [{"profile": {"name": f"Customer {wa_id[-4:]}"}, "wa_id": wa_id}],
             "messages": [message]}
    envelope = {"object": "whatsapp_business_account",
                "entry": [{"id": WABA, "changes": [{"field": "messages", "value": value}]}]}
    return json.dumps(envelope).encode()


class Run:
    """Posts webhooks, and watches the simulator for the activities that carry them."""

    def __init__(self, bridge: BridgeProcess, sim: SimulatorProcess) -> None:
        self.bridge, self.sim = bridge, sim
        self.http = httpx.AsyncClient(timeout=30)
        self.acked: dict[str, float] = {}  # token -> monotonic time of the 200
        self.ack_latency: list[float] = []
        self.seen: dict[str, float] = {}  # token -> monotonic time polling first saw it
        self._looked = 0

    async def post(self, token: str, number: str) -> None:
        body = webhook(token, number)
        started = time.monotonic()
        response = await self.http.post(
            f"{self.bridge.url}/webhooks/whatsapp", content=body,
            headers={"Content-Type": "application/json",
                     "X-Hub-Signature-256": sign(body, APP_SECRET)})
        now = time.monotonic()
        if response.status_code != 200:
            raise RuntimeError(f"webhook answered {response.status_code}: {response.text}")
        self.acked[token] = now
        self.ack_latency.append(now - started)

    async def look(self) -> None:
        """Note the tokens in lead activities posted since the last look."""
        response = await self.http.get(f"{self.sim.url}/_sim/activities")
        response.raise_for_status()
        now = time.monotonic()
        activities = response.json()
        for activity in activities[self._looked:]:
            if activity.get("RelatedOpportunityId"):
                continue
            for token in TOKEN.findall(activity.get("ActivityNote") or ""):
                self.seen.setdefault(token, now)
        self._looked = len(activities)

    async def until_seen(self, tokens: list[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not all(t in self.seen for t in tokens):
            if time.monotonic() > deadline:
                missing = [t for t in tokens if t not in self.seen]
                raise RuntimeError(f"{len(missing)} messages never reached the CRM within "
                                   f"{timeout:.0f}s, e.g. {missing[:3]}; bridge log: "
                                   + self.bridge.log.read_text(errors="replace")[-1500:])
            await asyncio.sleep(POLL)
            await self.look()

    async def watch(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.look()
            try:
                await asyncio.wait_for(stop.wait(), POLL)
            except TimeoutError:
                pass


async def measure(args: argparse.Namespace, bridge: BridgeProcess, sim: SimulatorProcess,
                  numbers: list[str]) -> dict[str, Any]:
    run = Run(bridge, sim)
    try:
        warm = [f"warm-{i:05d}" for i in range(len(numbers))]
        warm_started = time.monotonic()
        for token, number in zip(warm, numbers, strict=True):
            await run.post(token, number)
        (await run.http.post(f"{bridge.url}/sync-now")).raise_for_status()
        await run.until_seen(warm, args.interval + 120)
        warm_up = time.monotonic() - warm_started

        stop = asyncio.Event()
        watcher = asyncio.create_task(run.watch(stop))
        total = max(1, round(args.duration * args.pace))
        tokens = [f"fresh-{n:05d}" for n in range(total)]
        started = time.monotonic()
        for n, token in enumerate(tokens):
            await asyncio.sleep(max(0.0, started + n / args.pace - time.monotonic()))
            await run.post(token, numbers[n % len(numbers)])
        posted = time.monotonic()
        await run.until_seen(tokens, 2 * args.interval + 120)
        stop.set()
        await watcher
        return {"tokens": tokens, "acked": run.acked, "seen": run.seen, "warm_up": warm_up,
                "ack_latency": run.ack_latency, "started": started,
                "posting": posted - started}
    finally:
        await run.http.aclose()


def landed(calls: list[dict]) -> dict[str, float]:
    """token -> arrival time of the first successful activity post whose note holds it."""
    first: dict[str, float] = {}
    for call in calls:
        if not _is_post(call) or call["status"] != 200:
            continue
        body = call["body"] or {}
        for item in body if isinstance(body, list) else [body]:  # a bulk call: its rows
            for token in TOKEN.findall(item.get("ActivityNote") or ""):
                first[token] = min(first.get(token, call["at"]), call["at"])
    return first


def _is_post(call: dict) -> bool:
    """An activity post: Create, or a bulk call (issue 15)."""
    return call["path"].endswith(("ProspectActivity.svc/Create", "/Add/ByLeadId",
                                  "/Add/ByOpportunityId"))


def syncs(calls: list[dict], gap: float = 1.0) -> list[tuple[float, float]]:
    """Bursts of activity posts (a gap over `gap` s starts a new one): (start, end)."""
    times = sorted(c["at"] for c in calls if _is_post(c))
    bursts: list[tuple[float, float]] = []
    for at in times:
        if bursts and at - bursts[-1][1] <= gap:
            bursts[-1] = (bursts[-1][0], at)
        else:
            bursts.append((at, at))
    return bursts


def report(args: argparse.Namespace, result: dict[str, Any], calls: list[dict]) -> None:
    tokens, acked = result["tokens"], result["acked"]
    arrived = landed(calls)
    latency = [arrived[t] - acked[t] for t in tokens]
    polled = [result["seen"][t] - acked[t] for t in tokens]
    if min(latency) < 0:  # not one clock after all: fall back to polling
        latency = polled
    during = [c for c in calls if c["at"] >= result["started"]]
    bursts = syncs(during, gap=min(1.0, args.interval / 2))
    limit, per = parse_rate(args.rate)
    p95 = percentile(latency, 95)
    target = args.interval + SLACK
    rows = [
        ("webhooks (conversations)", f"{len(tokens)} ({args.conversations}) at "
                                     f"{args.pace:g}/s over {result['posting']:.0f} s"),
        ("sync interval; rate limit", f"{args.interval:g} s; {args.rate}"),
        ("warm-up (first message each)", f"{result['warm_up']:.1f} s"),
        ("webhook 200 p50 / p99, ms", f"{percentile(result['ack_latency'], 50) * 1000:.1f} / "
                                      f"{percentile(result['ack_latency'], 99) * 1000:.1f}"),
        ("200 -> CRM p50, s", f"{percentile(latency, 50):.2f}"),
        ("200 -> CRM p95, s", f"{p95:.2f}  (target <= {target:g})"),
        ("200 -> CRM max, s", f"{max(latency):.2f}"),
        ("polled p50 / p95 / max, s", f"{percentile(polled, 50):.2f} / "
                                      f"{percentile(polled, 95):.2f} / {max(polled):.2f}"),
        ("syncs seen; longest drain, s", f"{len(bursts)}; "
                                         f"{max((e - s for s, e in bursts), default=0):.2f}"),
        ("CRM calls after warm-up", ", ".join(f"{k} {n}" for k, n in sorted(
            count_kinds(during).items())) or "none"),
        ("max calls in any window vs limit",
         f"{max_in_window([c['at'] for c in calls], per)} / {limit} per {per:g}s"),
        ("429 answers", str(sum(1 for c in calls if c["status"] == 429))),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}} | {value}")
    met = p95 <= target
    print(f"summary: {len(tokens)} webhooks at {args.pace:g}/s, sync every {args.interval:g} s: "
          f"200 -> CRM p50 {percentile(latency, 50):.1f} s, p95 {p95:.1f} s, max "
          f"{max(latency):.1f} s; target p95 <= {target:g} s "
          f"{'met' if met else 'MISSED'}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny run for CI")
    parser.add_argument("--interval", default="10s",
                        help="the sink's sync_interval, e.g. 10s or 3m (default 10s)")
    parser.add_argument("--duration", default=None,
                        help="how long webhooks arrive (default max(60 s, 2.33 x interval))")
    parser.add_argument("--pace", type=float, default=2.0, help="webhooks per second")
    parser.add_argument("--conversations", type=int, default=20)
    parser.add_argument("--opportunities", type=float, default=0.2,
                        help="share of leads with one linked opportunity")
    parser.add_argument("--rate", default=DEFAULT_RATE,
                        help="the sink's rate limit, enforced by the simulator too "
                             "(default 25/5s, LeadSquared's documented budget)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    if args.smoke:
        args.interval, args.duration, args.conversations = "1s", "5s", 5
        args.rate = "100/5s" if args.rate == DEFAULT_RATE else args.rate
    args.interval = parse_duration(args.interval)
    args.duration = (max(60.0, round(2.33 * args.interval)) if args.duration is None
                     else parse_duration(args.duration))
    parse_rate(args.rate)
    return args


def main() -> None:
    args = parse_args()
    print(f"freshness: sync every {args.interval:g} s, {args.pace:g} webhooks/s for "
          f"{args.duration:g} s over {args.conversations} conversations ...", flush=True)
    sim = SimulatorProcess()
    bridge = None
    try:
        numbers = numbers_for(args.conversations)
        seed_crm(sim, numbers, args.opportunities, args.seed)
        sim.configure(rate_limit=sim_rate(parse_rate(args.rate)))
        with tempfile.TemporaryDirectory() as tmp:
            bridge = BridgeProcess(bridge_config(sim, Path(tmp), args.interval, args.rate),
                                   Path(tmp))
            try:
                result = asyncio.run(measure(args, bridge, sim, numbers))
            finally:
                bridge.stop()
        calls = sim.calls()
    finally:
        sim.stop()
    report(args, result, calls)  # a missed target is a figure, not a crash


if __name__ == "__main__":
    main()
