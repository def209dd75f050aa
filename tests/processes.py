"""Real processes for end-to-end tests: the bridge and the LeadSquared simulator."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from tests.helpers import free_port


def log_file(what: str):
    """A file for a child's stderr: a pipe nobody reads fills up and blocks the child."""
    return tempfile.NamedTemporaryFile(prefix=f"chatbridge-{what}-", suffix=".log",
                                       delete=False)


def tail(log) -> str:
    """The last lines a child wrote to its log file."""
    return Path(log.name).read_text(errors="replace")[-2000:]


def wait_http(url: str, proc: subprocess.Popen, what: str, log, timeout: float = 20) -> None:
    """Poll `url` until it answers 200; fail with the process's stderr if it died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited: " + tail(log))
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"{what} did not answer {url} within {timeout}s")


class SimulatorProcess:
    """`bridge leadsquared simulator` on a free loopback port, driven by its admin API."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log_file("simulator")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bridge", "leadsquared", "simulator", "--port",
             str(self.port), "--access-key", "e2e-access", "--secret-key", "e2e-secret"],
            stdout=subprocess.DEVNULL, stderr=self.log)
        wait_http(f"{self.url}/_sim/stats", self.proc, "simulator", self.log)

    def admin(self, method: str, what: str, **kw) -> object:
        response = httpx.request(method, f"{self.url}/_sim/{what}", timeout=10, **kw)
        response.raise_for_status()
        return response.json()

    def add_lead(self, **attributes: str) -> str:
        return self.admin("POST", "leads", json=attributes)["ProspectID"]

    def add_opportunity(self, lead_id: str, name: str, status: str = "Open") -> str:
        body = {"lead_id": lead_id, "name": name, "status": status}
        return self.admin("POST", "opportunities", json=body)["OpportunityId"]

    def activities(self, lead_id: str | None = None) -> list[dict]:
        return self.admin("GET", "activities", params={"leadId": lead_id} if lead_id else {})

    def configure(self, **knobs: object) -> None:
        self.admin("POST", "config", json=knobs)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


class BridgeProcess:
    """`bridge run -c <config>` as a child process; kill() is a SIGKILL."""

    def __init__(self, config: Path, port: int) -> None:
        self.config, self.port = config, port
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None
        self.log = log_file("bridge")

    def start(self) -> BridgeProcess:
        self.proc = subprocess.Popen([sys.executable, "-m", "bridge", "run", "-c",
                                      str(self.config)],
                                     stdout=subprocess.DEVNULL, stderr=self.log,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        wait_http(f"{self.url}/healthz", self.proc, "bridge", self.log)
        return self

    def status(self) -> dict:
        return httpx.get(f"{self.url}/status", timeout=10).json()

    def sync_now(self) -> None:
        httpx.post(f"{self.url}/sync-now", timeout=10).raise_for_status()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        """SIGTERM, as a service manager would; SIGKILL if it does not exit in 15 s."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
