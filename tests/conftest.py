"""Fixtures: real SQLite buffers in tmp dirs, fresh plugin managers, real servers."""

from __future__ import annotations

import compileall
import os
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp import web

from bridge.buffer import Buffer
from bridge.plugins import get_plugin_manager
from plugins.leadsquared.simulator import Simulator
from tests.backends import BACKENDS, fresh_schema_url
from tests.helpers import COUNT_STARTS, NO_TLS_CA, WITHOUT_DEV_TOOLS
from tests.processes import MEDIA_GRAPH_TOKEN, GraphProcess, SimulatorProcess

# The longest tests (20-70 s each on CI's 2 cores), run first, dealt out among the workers
# (pytest_collection_modifyitems): with `--dist worksteal` (pyproject addopts) a worker that
# runs out of tests takes half of another's queue from its end, so with these at the front
# of each queue the workers end together on short tests instead of one waiting a minute for
# another's last long one. Order only: a name missing here, or no longer slow, costs a
# little wall time and nothing else.
LONGEST_FIRST = (
    # 31-42 s each in the session-9 CI run (--durations), added after speed46's list
    "tests/leadsquared/test_migrate_late_commit.py",
    "tests/cluster/test_media_killed_holder.py::test_a_killed_processs",
    "tests/cluster/test_media_second_start.py::test_a_second_process",  # ~27 s (lease53)
    "tests/whatsapp/test_media_e2e.py::test_sigkill_during_an_upload",
    "tests/test_bench_smoke.py::test_benchmark_runs_in_smoke_mode[cluster.py]",
    "tests/test_bench_smoke.py::test_benchmark_runs_in_smoke_mode[footprint.py]",
    "tests/test_bench_smoke.py::test_benchmark_runs_in_smoke_mode[drain.py]",
    "tests/test_bench_smoke.py",
    "tests/reliability/test_crash_loop.py",
    "tests/whatsapp/test_import_encodings.py::test_memory_stays_flat",
    "tests/core/test_crash.py",
    "tests/leadsquared/test_end_to_end.py::test_sigkill",
    "tests/reliability/test_crm_chaos.py",
    # 14-36 s each (speed46's base run, --durations): added since speed4's list, they ran in
    # collection order, some of them last
    "tests/leadsquared/test_sales_team_crash.py::test_two_reps",
    "tests/leadsquared/test_crash_settle.py::test_a_killed_processs",
    "tests/leadsquared/test_outage_health.py::test_status_says_failing",
    "tests/core/test_cli.py::test_status_finds_run_port",
    "tests/leadsquared/test_owners_end_to_end.py::test_owned_activities_land_once",
    "tests/web/test_browser.py",
    "tests/leadsquared/test_backfill.py::test_sigkill",
    "tests/leadsquared/test_end_to_end.py::test_one_opportunity_refusing_posts",
    "tests/core/test_buffer_migrate.py::test_a_copy_killed_midway",
    "tests/cluster/test_three_bridges.py",
    "tests/reliability/test_bad_input.py",
    "tests/whatsapp/test_webhook_robust.py::test_sigkill",
    "tests/leadsquared/test_sink.py::test_429_storm",
    "tests/whatsapp/test_coexistence_e2e.py",
    "tests/test_example_sink.py",
    "tests/whatsapp/test_media_e2e.py",
    "tests/leadsquared/test_phone_variants_end_to_end.py",
    "tests/leadsquared/test_sales_team_crash.py",
    "tests/leadsquared/test_backfill.py::test_backfill_command",
    "tests/leadsquared/test_outage_health.py",
    "tests/leadsquared/test_crash_settle.py",
    "tests/leadsquared/test_paging_crash.py",
    "tests/core/test_purge.py::test_bridge_purge_command",
    "tests/security/test_hostile_params.py::test_every_route",
    "tests/leadsquared/test_numbers_status.py",
    "tests/leadsquared/test_check_command.py::test_opportunity_types",
    # 9.5-15 s each (base run of speed4, --durations): the whatsapp ones sat last in the
    # collection order, where a worker could wait ~10 s for the other's last test
    "tests/leadsquared/test_business_numbers.py::test_history_older_than_backfill_days",
    "tests/leadsquared/test_end_to_end.py::test_webhooks_become_one_activity_on_the_lead",
    "tests/leadsquared/test_file_handover.py::test_an_attach_cut_off_before_its_answer",
    "tests/leadsquared/test_resplit.py::test_a_note_whose_lead_post_failed_is_not_joined",
    "tests/whatsapp/test_import.py::test_cli_defaults_and_refusals",
    "tests/core/test_erasure.py::test_a_reader_holding_the_wal_gets_the_purge_repeated",
    "tests/core/test_conversation_page.py::test_the_page_purge_says_when_deleted_bytes",
    "tests/leadsquared/test_end_to_end.py::test_unknown_number_is_held_visibly",
    "tests/leadsquared/test_bulk.py::test_bulk_calls_keep_their_own_budget",
)


def _rank(nodeid: str) -> int:
    return next((i for i, prefix in enumerate(LONGEST_FIRST) if nodeid.startswith(prefix)),
                len(LONGEST_FIRST))


def pytest_configure(config: pytest.Config) -> None:
    """With PYTHONDONTWRITEBYTECODE set (as on this project's machines), no child process
    (`bridge run`, the CLI, the simulators: several hundred in a run) leaves its bytecode
    behind, so each compiled bridge/ and plugins/ (and the helpers it runs from tests/ and
    bench/) from source again (~0.1 s of CPU of a ~0.65 s `bridge run` start). Compile
    them once, before any test (the controller only; pytest's rewritten test modules keep
    their own cache names): the .pyc files go where Python itself would write them
    (__pycache__, git-ignored) and are checked against their source's mtime and size on
    import, as always, so an edited module is compiled afresh; nothing the children run
    changes."""
    if sys.dont_write_bytecode and not hasattr(config, "workerinput"):
        root = Path(__file__).resolve().parent.parent
        for package in ("bridge", "plugins", "tests", "bench"):
            compileall.compile_dir(root / package, quiet=2)
        if config.getoption("numprocesses", None):
            rewrite_tests_once(config, root / "tests")


def rewrite_tests_once(config: pytest.Config, tests: Path) -> None:
    """Rewrite the test modules' asserts once, in the controller, and keep each in the
    pyc pytest itself would write (__pycache__, name ending -pytest-X.Y.pyc). With
    PYTHONDONTWRITEBYTECODE set, pytest writes none, so every xdist worker rewrote all
    ~170 modules while collecting (~5 s of CPU each, 6 at once on two cores); a worker
    reads a pyc that is there, checked against its source's hash, as pytest always does.
    Speed only: on any change in pytest's internals this does nothing."""
    try:
        from _pytest.assertion.rewrite import (
            PYC_TAIL,
            _read_pyc,
            _rewrite_test,
            _write_pyc,
            assertstate_key,
            get_cache_dir,
            try_makedirs,
        )

        state = config.stash[assertstate_key]
        for path in [*tests.rglob("test_*.py"), *tests.rglob("conftest.py")]:
            pyc = get_cache_dir(path) / (path.name[:-3] + PYC_TAIL)
            if _read_pyc(path, pyc) is None and try_makedirs(pyc.parent):
                source_hash, code = _rewrite_test(path, config)
                _write_pyc(state, code, source_hash, pyc)
    except Exception:  # noqa: BLE001 — speed only: the workers rewrite as before
        return


@pytest.fixture(scope="session", autouse=True)
def _children_without_dev_tools() -> Iterator[None]:
    """WITHOUT_DEV_TOOLS first on PYTHONPATH for every child a test starts (set in the
    process that runs the tests, an xdist worker, never before a worker starts: the worker
    itself keeps selenium's trio), and NO_TLS_CA as the CA bundle (SSL_CERT_FILE) of the
    children and the worker, unless one is set already. With CHATBRIDGE_COUNT_STARTS=FILE,
    COUNT_STARTS first: each child notes its start and CPU in FILE (python -m tests.starts
    FILE sums them; its sitecustomize hides any other, e.g. Debian's, meanwhile)."""
    before = {name: os.environ.get(name) for name in ("PYTHONPATH", "SSL_CERT_FILE")}
    counting = COUNT_STARTS if os.environ.get("CHATBRIDGE_COUNT_STARTS") else None
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (counting, WITHOUT_DEV_TOOLS, before["PYTHONPATH"]) if p)
    os.environ["SSL_CERT_FILE"] = before["SSL_CERT_FILE"] or NO_TLS_CA
    yield
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def first_shares(total: int, workers: int) -> list[int]:
    """How many tests each worker is handed first under `--dist worksteal`: xdist's
    scheduler gives the collection out in `workers` consecutive slices, each
    remaining // workers left (xdist.scheduler.worksteal.check_schedule)."""
    shares = []
    for i in range(workers):
        shares.append((total - sum(shares)) // (workers - i))
    return shares


def dealt(items: list[pytest.Item], workers: int) -> list[pytest.Item]:
    """LONGEST_FIRST's tests dealt out in its order at the head of each worker's first
    slice (0, 1 .. n-1, n-1 .. 0, ...), the rest after them in collection order."""
    ranked = sorted(items, key=lambda item: _rank(item.nodeid))  # stable
    long = [item for item in ranked if _rank(item.nodeid) < len(LONGEST_FIRST)]
    rest = iter(ranked[len(long):])
    slices: list[list[pytest.Item]] = [[] for _ in range(workers)]
    shares = first_shares(len(items), workers)
    snake = [*range(workers), *reversed(range(workers))]
    turn = 0
    for item in long:
        while len(slices[snake[turn % len(snake)]]) >= shares[snake[turn % len(snake)]]:
            turn += 1
        slices[snake[turn % len(snake)]].append(item)
        turn += 1
    for share, head in zip(shares, slices, strict=True):
        head.extend(next(rest) for _ in range(share - len(head)))
    return [item for head in slices for item in head]


@pytest.hookimpl(trylast=True)  # after -m / -k deselect: the slices are of what runs
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """LONGEST_FIRST's tests first on every worker: xdist hands each worker a consecutive
    slice of the collection, so sorted to the front they all went to the first worker,
    one after another, and the others took some only by stealing from the end of its
    queue, last (the run ended on a few of them). The order is the same on every worker,
    as xdist requires (it depends on the collection and the worker count only)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    items[:] = dealt(items, max(1, workers))


@pytest.fixture
def pm():
    """A fresh plugin manager with no installed plugins loaded."""
    return get_plugin_manager(load_entrypoints=False)


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    """The LeadSquared simulator, in-process on a loopback port."""
    simulator = Simulator(seed=7)
    await simulator.start()
    yield simulator
    await simulator.stop()


# The simulator and Graph stand-in processes below live as long as the process running the
# tests (an xdist worker), not a module: each test takes the process reset (fresh(): POST
# /_sim/reset, the state a new process has), so no test sees another's. Module-scoped,
# each worker started one per module it ran tests of, and again each time it came back to
# a module (LONGEST_FIRST deals a module's long tests apart from its others; worksteal
# splits modules between workers): ~30 modules use one, on 6 workers. The names stay.
@pytest.fixture(scope="session")
def module_simulator() -> Iterator[SimulatorProcess]:
    """One `bridge leadsquared simulator` process for the tests this worker runs: the
    `simulator` and `lsq` fixtures hand each test `module_simulator.fresh()`, the account
    reset as a new process has it (a process start costs ~0.7 s of CPU; a reset, a
    millisecond); a test that stopped it gets a new one."""
    sim = SimulatorProcess()
    yield sim
    sim.stop()


@pytest.fixture
def lsq(module_simulator: SimulatorProcess) -> SimulatorProcess:
    """The module's LeadSquared simulator process, reset: each test starts clean."""
    return module_simulator.fresh()


@pytest.fixture
def simulator(module_simulator: SimulatorProcess) -> SimulatorProcess:
    """`lsq` under the name the end-to-end modules use (a module may define its own)."""
    return module_simulator.fresh()


@pytest.fixture(scope="session")
def module_graph(tmp_path_factory) -> Iterator[GraphProcess]:
    """One Graph stand-in process for the tests this worker runs, taking MEDIA_GRAPH_TOKEN:
    a module's `graph` fixture hands each test `module_graph.fresh()` (reset, as a new
    process has it; a start costs ~0.5 s of CPU)."""
    process = GraphProcess(MEDIA_GRAPH_TOKEN, tmp_path_factory.mktemp("graph"))
    yield process
    process.stop()


@pytest.fixture(params=BACKENDS)
async def buffer_target(request, tmp_path) -> AsyncIterator[str]:
    """A fresh buffer of each backend: an SQLite file, or a PostgreSQL schema of its own."""
    if request.param == "sqlite":
        yield str(tmp_path / "buffer.db")
        return
    async with fresh_schema_url() as url:
        yield url


@pytest.fixture
async def buffer(buffer_target) -> AsyncIterator[Buffer]:
    buf = await Buffer.open(buffer_target)
    try:
        yield buf
    finally:
        await buf.close()


@pytest.fixture
async def serve():
    """serve(app) -> base URL of the app running on 127.0.0.1 (stopped after the test)."""
    runners: list[web.AppRunner] = []

    async def start(app: web.Application) -> str:
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = site._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    yield start
    for runner in reversed(runners):
        await runner.cleanup()
