"""Durable ingest against the bare aiohttp ceiling, from a second process on loopback.

    python bench/ingest.py            # full run: wrk, c=16 and c=64, 6 x 5 s each (~2.5 min)
    python bench/ingest.py --smoke    # seconds; CI runs this so the script cannot rot
    python bench/ingest.py --postgres postgresql://postgres@127.0.0.1:5432/test
                                      # adds PostgreSQL rows: 1 and 2 bridge processes
                                      # (default: $CHATBRIDGE_TEST_POSTGRES when set)
    python bench/ingest.py --against 4909cba
                                      # adds the bridge of another commit, side by side
    python bench/ingest.py --levels 64 --repeats 3
                                      # c=64 only, median of 3 turns per server

Every server first gets one unrecorded turn at the highest level (warm-up: a bridge
compiles a multi-row INSERT the first time it meets a group of that size, and fills its
caches), so the rows compare steady states. Each row also gives the server's CPU
microseconds per request during its turns (event loop, i.e. the main thread, and the
other threads: the SQLite writer, reads), read from /proc/<pid>/stat: on a shared
machine a rate moves with the load by +-40 %, the CPU per request much less, so it is
the figure to compare two commits by.

(a) a bare aiohttp server that reads the body and answers 200; (b) `bridge run` with the
WhatsApp plugin: signature check, parse, group-committed durable append, then 200. The
load generator is wrk (Debian's package); the bare server gets 1,000 distinct signed
Cloud API bodies round-robin, a bridge gets every POST a new message (bench/fresh.lua
puts a new id into each body and signs it, so every request is a new row, never a
replay); without wrk, an aiohttp client in a second process. Server and load generator
are pinned to different cores when taskset exists. All servers run at once and take
turns under load, so the ratio (b)/(a) compares runs seconds apart.

--against REV checks REV out in a temporary worktree with a venv of its own and runs its
bridge beside this one (and on PostgreSQL beside this one's, with --postgres): each row's
ratio to the ceiling comes from the same run, the machine's slow spells landing on all.

With PostgreSQL: (c) one `bridge run` on a PostgreSQL buffer, (d) two of them on the same
schema, the load split evenly between them (two load generators at c/2 each, as a load
balancer would; req/s summed, p50/p99 the worse of the two). The PostgreSQL server is not
pinned: it competes with the bridges and the load for this machine's cores.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from plugins.whatsapp.signature import sign  # noqa: E402

SECRET = "bench-app-secret"
BARE_SERVER = textwrap.dedent("""
    import sys
    from aiohttp import web
    async def ok(request):
        await request.read()
        return web.Response(text="ok")
    app = web.Application(client_max_size=4 * 1024 * 1024)
    app.router.add_post("/webhooks/whatsapp", ok)
    app.router.add_get("/healthz", ok)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
""")


def bodies(n: int) -> list[bytes]:
    """Distinct ~1.5 KB Cloud API notifications, one inbound text message each."""
    out = []
    for i in range(n):
        wa_id = f"9198{i:08d}"
        out.append(json.dumps({"object": "whatsapp_business_account", "entry": [{
            "id": "102290129340398", "changes": [{"field": "messages", "value": {
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": "15550783881",
                             "phone_number_id": "106540352242922"},
                "contacts": [{"profile": {"name": f"Customer {i}"}, "wa_id": wa_id}],
                "messages": [{"from": wa_id, "id": f"wamid.bench-{os.getpid()}-{i}-"
                              + "A" * 40, "timestamp": str(int(time.time())),
                              "type": "text", "text": {"body": "Namaste, I would like to "
                                                       "know the price of the annual plan "
                                                       "for my team of twelve. " * 8}}]}}]}],
        }).encode())
    return out


def lua_script(path: Path, payloads: list[bytes]) -> None:
    """A wrk script that posts the payloads round-robin with their signatures."""
    rows = ",\n".join(f'{{[==[{p.decode()}]==], "{sign(p, SECRET)}"}}' for p in payloads)
    path.write_text(f"local bodies = {{\n{rows}\n}}\nlocal i = 0\n"
                    "request = function()\n  i = i % #bodies + 1\n"
                    '  return wrk.format("POST", "/webhooks/whatsapp", {["Content-Type"] = '
                    '"application/json", ["X-Hub-Signature-256"] = bodies[i][2]}, '
                    "bodies[i][1])\nend\n")


def fresh_script(path: Path, payloads: list[bytes]) -> None:
    """A wrk script whose every request is a new message (bench/fresh.lua), over `payloads`
    as templates."""
    rows = ",\n".join(f"[==[{p.decode()}]==]" for p in payloads)
    path.write_text(f"SECRET = [==[{SECRET}]==]\nTEMPLATES = {{\n{rows}\n}}\n"
                    + (ROOT / "bench" / "fresh.lua").read_text())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pinned(cpu: int, argv: list[str]) -> list[str]:
    return ["taskset", "-c", str(cpu), *argv] if shutil.which("taskset") and \
        os.cpu_count() and os.cpu_count() > 1 else argv


def start(argv: list[str], port: int, workdir: Path, cwd: Path = ROOT) -> subprocess.Popen:
    log = open(workdir / f"server-{port}.log", "wb")  # noqa: SIM115 - lives with the process
    proc = subprocess.Popen(pinned(0, argv), stdout=subprocess.DEVNULL, stderr=log, cwd=cwd)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"server did not start: {(workdir / f'server-{port}.log').read_text()}")


def bridge_argv(port: int, workdir: Path, url: str | None = None,
                python: str = sys.executable) -> list[str]:
    config = workdir / f"bridge-{port}.yaml"
    buffer = {"url": url} if url else {"path": str(workdir / f"b-{port}.db")}
    config.write_text(json.dumps({
        "server": {"port": port}, "buffer": buffer,
        "plugins": {"whatsapp": {"verify_token": "bench", "app_secret": SECRET}}}))
    return [python, "-m", "bridge", "run", "-c", str(config)]  # INFO logs, as deployed


def checkout(rev: str, workdir: Path) -> tuple[Path, str]:
    """REV in a worktree of its own with a venv of its own: (its tree, its python)."""
    tree = workdir / "against"
    workdir.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), rev],
                   check=True, capture_output=True)
    subprocess.run([sys.executable, "-m", "venv", str(tree / ".venv")], check=True)
    python = str(tree / ".venv" / "bin" / "python")
    subprocess.run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    "-e", str(tree)], check=True, capture_output=True)
    return tree, python


def remove_checkout(tree: Path) -> None:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                   capture_output=True)


def run_wrk(url: str, script: Path, concurrency: int, seconds: float) -> dict[str, float]:
    """One wrk run: req/s, p50 and p99 in ms, non-2xx count."""
    duration = f"-d{max(1, round(seconds))}s"  # wrk takes whole seconds only
    out = subprocess.run(pinned(1, ["wrk", "-t1", f"-c{concurrency}", duration,
                                    "--latency", "-s", str(script), url]),
                         capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rate": rate, "p50": _ms(re.search(r"50%\s+([\d.]+\w+)", out)[1]),
            "p99": _ms(re.search(r"99%\s+([\d.]+\w+)", out)[1]),
            "errors": int(errors[1]) if errors else 0,
            "requests": int(re.search(r"(\d+) requests in", out)[1])}


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(\w+)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


PY_LOADGEN = textwrap.dedent("""
    import asyncio, json, sys, time
    import aiohttp
    import hashlib, hmac
    url, concurrency, seconds, path = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    secret = sys.argv[5].encode() if len(sys.argv) > 5 else None  # fresh ids, signed here
    pairs = json.load(open(path))
    serial = iter(range(10**9))
    tag = __import__("os").getpid()  # two generators at once never send one id twice

    def fresh(body):
        body = body.replace("wamid.bench-", f"wamid.fresh{tag}x{next(serial)}-", 1).encode()
        return body, "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
    async def main():
        latencies, errors, i = [], 0, 0
        deadline = time.perf_counter() + seconds
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            async def worker():
                nonlocal errors, i
                while time.perf_counter() < deadline:
                    body, signature = pairs[i % len(pairs)]; i += 1
                    if secret:
                        body, signature = fresh(body)
                    started = time.perf_counter()
                    async with http.post(url, data=body if secret else body.encode(), headers={
                            "Content-Type": "application/json",
                            "X-Hub-Signature-256": signature}) as resp:
                        await resp.read()
                        errors += resp.status != 200
                    latencies.append(time.perf_counter() - started)
            started = time.perf_counter()
            await asyncio.gather(*[worker() for _ in range(concurrency)])
            elapsed = time.perf_counter() - started
        latencies.sort()
        print(json.dumps({"rate": len(latencies) / elapsed, "errors": errors,
                          "requests": len(latencies),
                          "p50": latencies[len(latencies) // 2] * 1000,
                          "p99": latencies[int(len(latencies) * 0.99)] * 1000}))
    asyncio.run(main())
""")


def run_python(url: str, pairs: Path, concurrency: int, seconds: float,
               fresh: bool = False) -> dict[str, float]:
    """The aiohttp load generator; `fresh`: every POST a new message id (signed per POST)."""
    out = subprocess.run(pinned(1, [sys.executable, "-c", PY_LOADGEN, url, str(concurrency),
                                    str(seconds), str(pairs), *([SECRET] if fresh else [])]),
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)


TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> tuple[float, float]:
    """CPU seconds (user + system) of process `pid` so far: (its main thread, which runs
    the event loop; every other thread, ended ones included: the SQLite writer, reads)."""
    def ticks(stat: str) -> int:
        fields = stat[stat.rindex(")") + 2:].split()  # fields from the 3rd (state) on
        return int(fields[11]) + int(fields[12])  # utime, stime: the 14th and 15th
    try:
        total = ticks(Path(f"/proc/{pid}/stat").read_text())
        loop = ticks(Path(f"/proc/{pid}/task/{pid}/stat").read_text())
    except OSError:  # no /proc (not Linux): no CPU columns
        return (float("nan"), float("nan"))
    return (loop / TICK, (total - loop) / TICK)


def report(name: str, concurrency: int, r: dict[str, float]) -> dict[str, float]:
    """Print one table row; return the figures."""
    print(f"{name:<40} | {concurrency:>5} | {r['rate']:>8,.0f} | {r['p50']:>6.2f} | "
          f"{r['p99']:>6.2f} | {r['errors']:>7.0f} | {r['cpu']:>7.0f} | {r['loop']:>6.0f} | "
          f"{r['other']:>6.0f}")
    return r


def medians(runs: list[dict[str, float]]) -> dict[str, float]:
    """Medians over repeated runs (these machines are noisy)."""
    return {key: statistics.median(r[key] for r in runs) for key in runs[0]}


BARE, BRIDGE = "bare aiohttp (ceiling)", "bridge (durable)"
PG1, PG2 = "bridge, PostgreSQL, 1 process", "bridge, PostgreSQL, 2 processes"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny run for CI")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--levels", default="16,64",
                        help="concurrency levels, comma-separated (default 16,64)")
    parser.add_argument("--loadgen", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--postgres", default=os.environ.get("CHATBRIDGE_TEST_POSTGRES"),
                        help="a PostgreSQL server for the PostgreSQL rows (a schema of its "
                             "own is created and dropped)")
    parser.add_argument("--against", metavar="REV", action="append", default=[],
                        help="also run the bridge of commit REV, side by side (repeatable)")
    args = parser.parse_args()
    seconds, repeats = (1.0, 1) if args.smoke else (args.seconds, args.repeats)
    levels = [16] if args.smoke else [int(c) for c in args.levels.split(",")]
    use_wrk = args.loadgen == "wrk" or (args.loadgen == "auto" and shutil.which("wrk"))
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        payloads = bodies(50 if args.smoke else 1000)
        lua_script(workdir / "post.lua", payloads)
        fresh_script(workdir / "fresh.lua", payloads)
        (workdir / "pairs.json").write_text(json.dumps(
            [[p.decode(), sign(p, SECRET)] for p in payloads]))
        print(f"ingest: {len(payloads)} distinct signed bodies of ~{len(payloads[0])} bytes, "
              f"load from {'wrk' if use_wrk else 'an aiohttp client'} in a second process "
              "(every POST to a bridge a new message), "
              f"median of {repeats} x {seconds:g} s, the servers taking turns")
        servers = _servers(args, workdir)
        try:
            results = measure(servers.ports, servers.pids, levels, repeats, seconds, workdir,
                              use_wrk)
        finally:
            servers.stop()
        _summary(results, levels, servers.names)


class _Servers:
    """Every server of a run: name -> ports; stopped (and REV's tree removed) at the end."""

    def __init__(self) -> None:
        self.ports: dict[str, list[int]] = {}
        self.pids: dict[int, int] = {}  # port -> the server's process id
        self.procs: list[subprocess.Popen] = []
        self.names: list[str] = []  # the bridges, in report order
        self.cleanup: list = []

    def add(self, name: str, argvs: list[tuple[list[str], int]], workdir: Path,
            cwd: Path = ROOT) -> None:
        self.ports[name] = [port for _, port in argvs]
        for argv, port in argvs:
            self.start(argv, port, workdir, cwd)
        if name != BARE:
            self.names.append(name)

    def start(self, argv: list[str], port: int, workdir: Path, cwd: Path) -> None:
        self.procs.append(start(argv, port, workdir, cwd))
        self.pids[port] = self.procs[-1].pid  # taskset execs: the server's own pid

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
            proc.wait(30)
        for step in self.cleanup:
            step()


def _servers(args: argparse.Namespace, workdir: Path) -> _Servers:
    servers = _Servers()
    try:
        port = free_port()
        servers.add(BARE, [([sys.executable, "-c", BARE_SERVER, str(port)], port)], workdir)
        port = free_port()
        servers.add(BRIDGE, [(bridge_argv(port, workdir), port)], workdir)
        others = []  # (label, tree, python) of each --against
        for number, rev in enumerate(args.against):
            tree, python = checkout(rev, workdir / f"rev{number}")
            servers.cleanup.append(lambda t=tree: remove_checkout(t))
            others.append((f" @ {rev}", tree, python))
            port = free_port()
            servers.add(f"{BRIDGE} @ {rev}", [(bridge_argv(port, workdir, python=python), port)],
                        workdir, tree)
        if args.postgres:
            # a commit from before the PostgreSQL buffer gets no PostgreSQL row
            for label, cwd, python in (("", ROOT, sys.executable),
                                       *(o for o in others
                                         if (o[1] / "bridge/buffer/postgres.py").exists())):
                schema = f"bench_ingest_{os.getpid()}_{len(servers.names)}"
                url = _with_schema(args.postgres, schema)
                servers.cleanup.append(lambda s=schema: _drop_schema(args.postgres, s))
                pg = [free_port(), free_port()]
                argvs = [(bridge_argv(p, workdir, url, python), p) for p in pg]
                servers.add(PG1 + label, argvs[:1], workdir, cwd)
                if not label:  # two processes on one schema: this tree only
                    servers.start(argvs[1][0], pg[1], workdir, cwd)
                    servers.ports[PG2] = pg
                    servers.names.append(PG2)
    except BaseException:
        servers.stop()
        raise
    return servers


def _summary(results: dict, levels: list[int], names: list[str]) -> None:
    top = max(levels)
    for name in names:
        ratios = [f"{results[name, c]['rate'] / results[BARE, c]['rate']:.0%} at c={c} "
                  f"({results[name, c]['paired']:.2f} paired)" for c in levels]
        line = f"summary: {name}: {', '.join(ratios)} of the bare aiohttp ceiling"
        line += f"; p99 {results[name, top]['p99']:.1f} ms at c={top}"
        line += (f"; CPU {results[name, top]['cpu']:.0f} us/request ("
                 f"{results[name, top]['loop']:.0f} event loop + "
                 f"{results[name, top]['other']:.0f} other threads) at c={top}")
        if name.startswith(PG1) or name == PG2:
            sqlite = BRIDGE + name[len(PG1):] if name.startswith(PG1) else BRIDGE
            if (sqlite, top) in results:
                line += f"; {results[name, top]['rate'] / results[sqlite, top]['rate']:.2f}"
                line += f" of {sqlite} at c={top}"
        print(line)
    print("summary: targets: bridge >= 0.37 of the ceiling (stretch 0.50), PostgreSQL one "
          "process >= 0.85 of SQLite, p99 <= 20 ms at c=64; paired: median of back-to-back "
          "ratios")


def _with_schema(url: str, schema: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}schema={schema}"


def _drop_schema(url: str, schema: str) -> None:
    import asyncio

    import asyncpg

    async def drop() -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()
    asyncio.run(drop())

def measure(ports: dict[str, list[int]], pids: dict[int, int], levels: list[int],
            repeats: int, seconds: float, workdir: Path, use_wrk: bool
            ) -> dict[tuple[str, int], dict[str, float]]:
    """The servers run side by side and take turns under load, so that a slow spell of
    this shared machine lands on all; print the table. results[name, c]["paired"] is the
    median of the ratios of back-to-back runs (bare, then each bridge, seconds apart).
    "cpu" is the servers' CPU microseconds per request answered during a turn (from
    /proc/<pid>/stat), "loop" its event loop's (main thread's) share, "other" the other
    threads' (SQLite writer, reads): steadier than req/s on a loaded machine, where a
    server's rate moves with what else runs but its CPU per request much less."""
    def url(port: int) -> str:
        return f"http://127.0.0.1:{port}/webhooks/whatsapp"

    def one(port: int, c: int, fresh: bool) -> dict[str, float]:
        if use_wrk:
            return run_wrk(url(port), workdir / ("fresh.lua" if fresh else "post.lua"), c,
                           seconds)
        return run_python(url(port), workdir / "pairs.json", c, seconds, fresh)

    def load(name: str, c: int) -> dict[str, float]:
        """Load on every port of `name` at once, c split between them; figures combined."""
        before = [cpu_seconds(pids[port]) for port in ports[name]]
        with ThreadPoolExecutor(len(ports[name])) as pool:
            parts = list(pool.map(lambda port: one(port, c // len(ports[name]), name != BARE),
                                  ports[name]))
        after = [cpu_seconds(pids[port]) for port in ports[name]]
        per = 1e6 / max(1, sum(p["requests"] for p in parts))
        loop = sum(a[0] - b[0] for a, b in zip(after, before, strict=True)) * per
        other = sum(a[1] - b[1] for a, b in zip(after, before, strict=True)) * per
        return {"rate": sum(p["rate"] for p in parts), "errors": sum(p["errors"] for p in parts),
                "p50": max(p["p50"] for p in parts), "p99": max(p["p99"] for p in parts),
                "cpu": loop + other, "loop": loop, "other": other}

    print(f"{'server':<40} | {'conc.':>5} | {'req/s':>8} | {'p50 ms':>6} | {'p99 ms':>6}"
          f" | {'non-200':>7} | {'CPU us/req':>7} | {'loop':>6} | {'other':>6}")
    results = {}
    for name in ports:  # one unrecorded turn each: statements compiled, caches filled, as
        load(name, max(levels))  # in a bridge that has run a while (steady state)
    for c in levels:
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in ports}
        for _ in range(repeats):
            for name in runs:
                runs[name].append(load(name, c))
        for name, figures in runs.items():
            results[name, c] = report(name, c, medians(figures))
            results[name, c]["paired"] = statistics.median(
                b["rate"] / a["rate"] for a, b in zip(runs[BARE], figures, strict=True))
            results[name, c]["spread"] = (min(f["rate"] for f in figures),
                                          max(f["rate"] for f in figures))
    return results


if __name__ == "__main__":
    main()
