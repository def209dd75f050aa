"""Three `bridge run` processes on one PostgreSQL buffer and one LeadSquared account (issue 18).

Every part runs as a real process on 127.0.0.1: a private, throwaway PostgreSQL server
(initdb into a temporary directory, on a free port, so that it can be stopped and started
without touching the machine's own server), the LeadSquared simulator, and three bridges
sharing one schema. Signed webhooks go round-robin to the three (to the next one when one
does not answer 200, as a load balancer and the provider's retries would).

(a) drain: a backlog posted to the three while the simulator enforces `--rate` (10/5s):
    the most calls in any window (sliding, and the simulator's fixed slices), the share
    of the budget used while the backlog lasted, duplicates and dead letters.
(b) faults: webhooks flow for `--fault-seconds` while one of the three is SIGKILLed every
    `--kill-every` seconds and started again; then PostgreSQL is stopped (immediate mode)
    for `--pg-down` seconds mid-run: webhook answers and /healthz while it is down, and
    whether every acknowledged message reaches the CRM once after it returns.

    python bench/cluster.py              # both parts: ~4 minutes
    python bench/cluster.py --smoke      # a short drain and a short fault run (CI)
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._support import (  # noqa: E402
    ACCESS_KEY,
    SECRET_KEY,
    TLS,
    BridgeProcess,
    SimulatorProcess,
    budget_share,
    free_port,
    max_in_fixed_window,
    max_in_window,
)
from plugins.leadsquared.ratelimit import parse_rate  # noqa: E402
from tests.reliability.support import CrmCount, post_webhook, webhook_body  # noqa: E402

SECRET, TOKEN = "e2e-app-secret", "e2e-verify"  # what tests.reliability.support signs with
PG_BIN = Path("/usr/lib/postgresql/15/bin")
PATTERN = r"cb-\d{6}"


class PrivatePostgres:
    """A throwaway PostgreSQL server of this run's own (trust auth, a free port)."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="bench-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self._as_owner:
            shutil.chown(self.dir, "postgres")
        self._run(PG_BIN / "initdb", "-D", self.data, "-U", "postgres", "-A", "trust",
                  "--no-sync")
        self.start()

    def _run(self, *command: object) -> None:
        subprocess.run([*self._as_owner, *map(str, command)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def start(self) -> None:
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir} "
                   "-c fsync=on -c max_connections=200")
        self._run(PG_BIN / "pg_ctl", "-D", self.data, "-l", self.dir / "log", "-w",
                  "-o", options, "start")

    def stop(self) -> None:
        """Stop at once, as a crash or a failover would (pg_ctl -m immediate)."""
        self._run(PG_BIN / "pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")

    def remove(self) -> None:
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass  # already stopped
        shutil.rmtree(self.dir, ignore_errors=True)


class Cluster:
    """Three bridges on one buffer, started, killed and restarted by index."""

    def __init__(self, url: str, sim: SimulatorProcess, workdir: Path,
                 sink: dict[str, Any], size: int = 3) -> None:
        self.configs = []
        for _ in range(size):
            settings = {"host": sim.url, "access_key": ACCESS_KEY, "secret_key": SECRET_KEY,
                        **sink}
            self.configs.append({"server": {"port": free_port()}, "buffer": {"url": url},
                                 "plugins": {"whatsapp": {"verify_token": TOKEN,
                                                          "app_secret": SECRET},
                                             "leadsquared": settings}})
        self.workdir = workdir
        self.bridges: list[BridgeProcess | None] = [None] * size
        self.urls = [f"http://127.0.0.1:{c['server']['port']}" for c in self.configs]

    def start(self, i: int) -> None:
        self.bridges[i] = BridgeProcess(self.configs[i], self.workdir, name=f"bridge{i}")

    def kill(self, i: int) -> None:
        bridge = self.bridges[i]
        if bridge is not None and bridge.proc.poll() is None:
            bridge.proc.kill()
            bridge.proc.wait()

    def status(self) -> dict:
        return httpx.get(f"{self.urls[0]}/status", timeout=10, verify=TLS).json()

    def stop(self) -> None:
        """SIGTERM to all at once, then wait for each (one by one, each shutdown waited
        for the one before it)."""
        running = [b for b in self.bridges if b is not None and b.proc.poll() is None]
        for bridge in running:
            bridge.proc.terminate()
        for bridge in running:
            bridge.stop()  # waits; SIGKILL if it does not exit in time


class Driver(threading.Thread):
    """Posts webhooks round-robin (one message each) until stopped; counts answers per
    phase and remembers which texts were acknowledged."""

    def __init__(self, urls: list[str], numbers: list[str], pace: float,
                 limit: int | None = None) -> None:
        super().__init__(name="driver", daemon=True)
        self.urls, self.numbers, self.pace, self.limit = urls, numbers, pace, limit
        self.stop = threading.Event()
        self.phase = "run"
        self.acked: set[str] = set()
        self.answers: Counter[tuple[str, int | None]] = Counter()

    def run(self) -> None:
        turn = itertools.count()
        base = int(time.time()) - 3600
        with httpx.Client(timeout=10) as client:
            for n in itertools.count():
                if self.stop.is_set() or (self.limit is not None and n >= self.limit):
                    return
                body = webhook_body([(f"wamid.cb{n}", self.numbers[n % len(self.numbers)],
                                      f"cb-{n:06d}")], ts=base + n)
                for _ in self.urls:
                    phase = self.phase
                    status, _ = post_webhook(client, self.urls[next(turn) % len(self.urls)],
                                             body)
                    if phase != self.phase:  # asked in one phase, answered in the next (a
                        phase = f"{phase} -> {self.phase}"  # commit once PostgreSQL is back)
                    self.answers[(phase, status)] += 1
                    if status == 200:
                        self.acked.add(f"cb-{n:06d}")
                        break
                time.sleep(self.pace)


def seed(sim: SimulatorProcess, conversations: int) -> list[str]:
    """One lead per conversation; the senders' numbers as WhatsApp writes them."""
    numbers = [f"91987330{n:04d}" for n in range(conversations)]
    for i, number in enumerate(numbers):
        sim.add_lead(FirstName=f"Bench{i}", Mobile=f"+91-{number[2:]}")
    return numbers


def wait_for(check: Any, timeout: float, every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if value := check():
                return value
        except httpx.HTTPError:
            pass
        time.sleep(every)
    return None


def landed(sim: SimulatorProcess, texts: set[str]) -> bool:
    seen = {t for a in sim.activities() for t in re.findall(PATTERN, a["ActivityNote"])}
    return texts <= seen


def dead_letters(cluster: Cluster) -> int:
    return sum(s["dead_letters"] for s in cluster.status()["sinks"])


def drain(pg: PrivatePostgres, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    calls, per = parse_rate(args.rate)
    sim = SimulatorProcess()
    cluster = Cluster(pg.url + "?schema=drain",
                      sim, workdir, {"rate_limit": args.rate, "bulk": False,
                                     "opportunities": False, "sync_interval": "1s"})
    # default lease and deliver_timeout: with 25 s, claims queued behind the shared budget
    # timed out and were retried as uncertain, each retry reading the lead's keys first
    try:
        numbers = seed(sim, args.conversations)
        sim.configure(rate_limit=args.rate)
        for i in range(3):
            cluster.start(i)
        wait_for(lambda: cluster.status()["sinks"][0]["last_sync_at"], 60)
        started = time.monotonic()
        driver = Driver(cluster.urls, numbers, 0.0, limit=args.messages)
        driver.run()  # in this thread: the whole backlog, as fast as the bridges take it
        posted = time.monotonic() - started
        if not wait_for(lambda: landed(sim, driver.acked), args.messages * 10):
            print("  the backlog did not drain in time")
        log = sim.calls()
        times = [c["at"] for c in log]
        posts = [c["at"] for c in log if c["path"].endswith("ProspectActivity.svc/Create")]
        backlog = [t for t in times if started <= t <= max(posts)]  # while a backlog existed
        crm = CrmCount(sim.activities(), PATTERN)
        lost = len(driver.acked - set(crm.on_leads))
        statuses = Counter(c["status"] for c in log)
        print(f"(a) drain: 3 processes, simulator and bridges at {args.rate}, "
              f"{len(driver.acked)} messages in {args.conversations} conversations "
              f"(posted in {posted:.1f} s)")
        print(f"  CRM calls:                       {len(log)} "
              f"({dict(Counter(c['path'].rsplit('/', 1)[-1] for c in log))})")
        print(f"  most in any {per:g}-s window:        {max_in_window(times, per)} "
              f"(limit {calls}); in one fixed slice: {max_in_fixed_window(times, per)}")
        print(f"  budget used while backlog:       {budget_share(backlog, calls, per):.1%} "
              f"over {(backlog[-1] - backlog[0]):.0f} s")
        print(f"  answers:                         {dict(statuses)}")
        print(f"  lost {lost}, duplicates {crm.duplicates()}, dead letters "
              f"{dead_letters(cluster)}")
        return {"most": max_in_window(times, per), "limit": calls,
                "used": budget_share(backlog, calls, per)}
    finally:
        cluster.stop()
        sim.stop()


def faults(pg: PrivatePostgres, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    sim = SimulatorProcess()
    url = pg.url + "?schema=faults"
    # a killed bridge's batches are retried once a write it had in flight can no longer
    # land: the lease's start + deliver_timeout + 3 x the call timeout (bridge.sync.
    # settle_after_lease); at the sink's default timeout (30 s) that is ~95 s after a kill
    timeout = {} if args.timeout is None else {"timeout": args.timeout}
    cluster = Cluster(url, sim, workdir, {"rate_limit": "20/1s", "bulk": False,
                                          "opportunities": False, "sync_interval": "1s",
                                          "lease": "6s", "deliver_timeout": "5s",
                                          "max_attempts": 10_000, "retry_base": 0.2,
                                          "retry_cap": 1, **timeout})
    rng = random.Random(7)
    try:
        numbers = seed(sim, 12)
        sim.configure(rate_limit="20/1s", latency=0.02, drop_after_commit_rate=0.1, seed=7)
        for i in range(3):
            cluster.start(i)
        wait_for(lambda: cluster.status()["sinks"][0]["last_sync_at"], 60)
        driver = Driver(cluster.urls, numbers, 0.02)
        driver.start()
        kills = 0
        until = time.monotonic() + args.fault_seconds
        while time.monotonic() < until:
            time.sleep(args.kill_every * rng.uniform(0.5, 1.5))
            victim = rng.randrange(3)
            cluster.kill(victim)
            kills += 1
            time.sleep(rng.uniform(0.1, 0.5))
            cluster.start(victim)
        health = pg_outage(pg, cluster, driver, args.pg_down)
        time.sleep(args.after)  # webhooks keep coming after it returned
        driver.stop.set()
        driver.join(30)
        drained = wait_for(lambda: landed(sim, driver.acked), 180)
        crm = CrmCount(sim.activities(), PATTERN)
        lost = driver.acked - set(crm.on_leads)
        by_phase: dict[str, Counter] = {}
        for (phase, status), n in driver.answers.items():
            by_phase.setdefault(phase, Counter())[status] += n
        print(f"(b) faults: 3 processes, {kills} SIGKILLs over {args.fault_seconds:g} s "
              f"(one every ~{args.kill_every:g} s), then PostgreSQL down {args.pg_down:g} s")
        for phase, counts in by_phase.items():
            print(f"  webhook answers, {phase + ':':13} {dict(counts)}")
        print(f"  /healthz while down:             {health}")
        print(f"  acknowledged {len(driver.acked)}, lost {len(lost)}, duplicates "
              f"{crm.duplicates()}, dead letters {dead_letters(cluster)}, "
              f"{'all delivered' if drained else 'NOT all delivered'} after it returned")
        return {"lost": len(lost), "duplicates": crm.duplicates(),
                "ok_while_down": by_phase.get("PG down", Counter())[200], "resumed": drained}
    finally:
        cluster.stop()
        sim.stop()


def pg_outage(pg: PrivatePostgres, cluster: Cluster, driver: Driver, seconds: float) -> str:
    """Stop PostgreSQL for `seconds` while the driver posts; /healthz answers meanwhile."""
    pg.stop()  # returns once the server is gone: answers from here on are "down"
    driver.phase = "PG down"
    answers: Counter[str] = Counter()
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        for url in cluster.urls:
            try:
                r = httpx.get(f"{url}/healthz", timeout=6, verify=TLS)
                answers[f"{r.status_code} {r.json().get('reason', '')}".strip()] += 1
            except httpx.HTTPError as exc:
                answers[type(exc).__name__] += 1
        time.sleep(0.5)
    # pg_ctl -w start returns a poll interval (~0.1 s) after the server first accepts
    # connections: answers asked in that gap may be 200s, rightly, and are not "down".
    driver.phase = "PG starting"
    pg.start()
    driver.phase = "after"
    return ", ".join(f"{k}: {n}" for k, n in answers.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--rate", default="10/5s")
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--conversations", type=int, default=150,
                        help="a post per conversation at least: 150 at 10/5s is ~75 s")
    parser.add_argument("--fault-seconds", type=float, default=30)
    parser.add_argument("--kill-every", type=float, default=3)
    parser.add_argument("--pg-down", type=float, default=10)
    parser.add_argument("--after", type=float, default=5,
                        help="seconds webhooks keep coming after PostgreSQL returned")
    parser.add_argument("--timeout", type=float, default=None,
                        help="the sink's call timeout in the fault run, seconds (default: "
                             "the sink's own, 30 s)")
    args = parser.parse_args()
    if args.smoke:  # one SIGKILL or two, PostgreSQL down long enough for several 503s
        args.rate, args.messages, args.conversations = "10/1s", 40, 5
        args.fault_seconds, args.kill_every, args.pg_down, args.after = 2, 1.5, 2, 1
        args.timeout = 2.0  # a killed bridge's batches wait ~11 s, not ~95 s
    if not (PG_BIN / "initdb").exists():
        print(f"summary: skipped, no PostgreSQL 15 server binaries in {PG_BIN}")
        return
    pg = PrivatePostgres()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            a = drain(pg, args, Path(tmp))
            b = faults(pg, args, Path(tmp))
    finally:
        pg.remove()
    print(f"summary: drain most {a['most']} per window (limit {a['limit']}), "
          f"{a['used']:.1%} of the budget used while backlog; faults lost {b['lost']}, "
          f"duplicates {b['duplicates']}, {b['ok_while_down']} x 200 while PostgreSQL was "
          f"down, {'resumed' if b['resumed'] else 'did NOT resume'}")


if __name__ == "__main__":
    main()
