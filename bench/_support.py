"""Shared parts of the drain, freshness and footprint benchmarks (not a benchmark itself).

A LeadSquared simulator and `bridge run` as real processes on 127.0.0.1, the simulator
driven through its admin routes, and the arithmetic on the calls it recorded.
"""

from __future__ import annotations

import json
import os
import random
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import certifi
import httpx

ROOT = Path(__file__).resolve().parents[1]
ACCESS_KEY, SECRET_KEY = "bench-access", "bench-secret"

# /v2 path (less the prefix) -> what the figures call it
ENDPOINTS = {
    "LeadManagement.svc/RetrieveLeadByPhoneNumber": "lead lookups",
    "ProspectActivity.svc/Create": "activity posts",
    "OpportunityManagement.svc/GetOpportunitiesOfLead": "opportunity lookups",
    "ProspectActivity.svc/ActivityTypes.Get": "type lookups",
    "ProspectActivity.svc/CreateType": "type creates",
    "Authentication.svc/UserByAccessKey.Get": "user lookups",
    "ProspectActivity.svc/Bulk/CustomActivity/Add/ByLeadId": "bulk posts",
    "ProspectActivity.svc/Bulk/CustomActivity/Add/ByOpportunityId": "bulk opportunity posts",
    "LeadManagement.svc/Leads.RecentlyModified": "directory pages",
}
KINDS = ("lead lookups", "activity posts", "bulk posts", "bulk opportunity posts",
         "directory pages",
         "opportunity lookups", "type lookups", "type creates", "user lookups", "other")
BULK_KINDS = frozenset({"bulk posts", "bulk opportunity posts"})


# httpx's verify=True context, built once: a one-shot httpx.get builds it per call (~20 ms
# of CPU), which at a 50 ms poll took a good part of a core from the processes measured
TLS = ssl.create_default_context(cafile=certifi.where())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env() -> dict[str, str]:
    """The environment for a child: this checkout first on the import path."""
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": str(ROOT) + (os.pathsep + path if path else "")}


def wait_http(url: str, proc: subprocess.Popen, what: str, log: Path,
              timeout: float = 30) -> None:
    """Poll `url` until it answers 200; raise with the child's stderr if it died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited: {log.read_text(errors='replace')[-2000:]}")
        try:
            if httpx.get(url, timeout=1, verify=TLS).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"{what} did not answer {url} within {timeout}s")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class SimulatorProcess:
    """`bridge leadsquared simulator` as a child process on a free loopback port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = Path(tempfile.mkstemp(prefix="bench-simulator-", suffix=".log")[1])
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bridge", "leadsquared", "simulator", "--port",
                 str(self.port), "--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY],
                stdout=subprocess.DEVNULL, stderr=log, cwd=ROOT, env=child_env())
        self.http = httpx.Client(base_url=f"{self.url}/_sim/", timeout=60)
        wait_http(f"{self.url}/_sim/stats", self.proc, "simulator", self.log)

    def admin(self, method: str, what: str, **kw: Any) -> Any:
        response = self.http.request(method, what, **kw)
        response.raise_for_status()
        return response.json()

    def add_lead(self, **attributes: str) -> str:
        return self.admin("POST", "leads", json=attributes)["ProspectID"]

    def add_opportunity(self, lead_id: str, name: str = "Deal") -> str:
        body = {"lead_id": lead_id, "name": name, "status": "Open"}
        return self.admin("POST", "opportunities", json=body)["OpportunityId"]

    def configure(self, **knobs: Any) -> None:
        self.admin("POST", "config", json=knobs)

    def calls(self) -> list[dict]:
        return self.admin("GET", "calls")

    def activities(self) -> list[dict]:
        return self.admin("GET", "activities")

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        self.http.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.unlink(missing_ok=True)


class BridgeProcess:
    """`bridge run -c <config>` as a child process; answers /healthz when this returns."""

    def __init__(self, config: dict[str, Any], workdir: Path, name: str = "bridge",
                 timeout: float = 30) -> None:
        self.port = config["server"]["port"]
        self.url = f"http://127.0.0.1:{self.port}"
        path = workdir / f"{name}.yaml"
        path.write_text(json.dumps(config))  # JSON is YAML
        self.log = workdir / f"{name}.log"
        started = time.monotonic()
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bridge", "run", "-c", str(path)],
                stdout=subprocess.DEVNULL, stderr=log, cwd=ROOT, env=child_env())
        wait_http(f"{self.url}/healthz", self.proc, "bridge", self.log, timeout)
        self.startup = time.monotonic() - started  # Popen to the first healthy /healthz

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def memory_kib(pid: int) -> dict[str, int]:
    """The Vm*/Rss* lines of /proc/<pid>/status, in KiB (VmRSS now, VmHWM its peak)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name.startswith(("Vm", "Rss")) and value.strip().endswith("kB"):
            fields[name] = int(value.split()[0])
    return fields


def kind_of(call: dict) -> str:
    path = call["path"].removeprefix("/v2/")
    return ENDPOINTS.get(path, "other")


def count_kinds(calls: Iterable[dict]) -> Counter[str]:
    return Counter(kind_of(c) for c in calls)


def max_in_window(times: Sequence[float], seconds: float) -> int:
    """Most of `times` that fall within any span shorter than `seconds` (sliding)."""
    times = sorted(times)
    most = first = 0
    for last, at in enumerate(times):
        while at - times[first] >= seconds:
            first += 1
        most = max(most, last - first + 1)
    return most


def max_in_fixed_window(times: Iterable[float], seconds: float) -> int:
    """Most `times` in one fixed slice floor(t / seconds), as the simulator counts."""
    counts = Counter(int(t // seconds) for t in times)
    return max(counts.values(), default=0)


def budget_share(times: Sequence[float], calls: int, per: float) -> float:
    """Share of the budget used over the whole `per`-second windows from the first call.

    Windows start at the first call and tile the span up to the last one; a final
    partial window is left out, so a backlog that ends mid-window does not count as idle.
    """
    times = sorted(times)
    if len(times) < 2:
        return 0.0
    whole = int((times[-1] - times[0]) // per)
    if whole == 0:
        return 0.0
    end = times[0] + whole * per
    used = sum(1 for t in times if t < end)
    return used / (whole * calls)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def sim_rate(rate: tuple[int, float] | None) -> str | None:
    """The simulator's rate_limit knob for a (calls, seconds) budget."""
    return None if rate is None else f"{rate[0]}/{rate[1]:g}s"


def numbers_for(conversations: int) -> list[str]:
    """E.164 Indian mobile numbers, one per conversation."""
    return [f"+9198{n:08d}" for n in range(conversations)]


def seed_crm(sim: SimulatorProcess, numbers: list[str], share: float,
             seed: int) -> dict[str, int]:
    """A lead per number (stored '+91-national', as LeadSquared does); number -> opportunities."""
    linked = set(random.Random(seed).sample(numbers, round(len(numbers) * share)))
    opportunities = {}
    for i, number in enumerate(numbers):
        lead = sim.add_lead(FirstName=f"Customer{i}", Mobile=f"+91-{number[3:]}")
        if number in linked:
            sim.add_opportunity(lead, f"Plan {i}")
        opportunities[number] = int(number in linked)
    return opportunities
