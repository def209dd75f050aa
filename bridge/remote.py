"""The client commands' side: the running bridge, found from the config (bridge.address),
or the buffer itself when no bridge answers."""

from __future__ import annotations

from typing import Any

import httpx

from bridge import address
from bridge.errors import BridgeError


class NoBridge(BridgeError):
    """No bridge answered at any address the config leads to (`tried`); `strangers`: those
    where something else answered (another buffer's bridge, another program)."""

    def __init__(self, message: str, tried: list[str],
                 strangers: list[str] | None = None) -> None:
        super().__init__(message)
        self.tried, self.strangers = tried, strangers or []


class Unanswered(BridgeError):
    """Something answered but not as a bridge does (a refused token, an error, a timeout)."""


def call(config: Any, method: str, path: str, *, timeout: float = 30,
         bases: list[str] | None = None, **kwargs: Any) -> httpx.Response:
    """A request to the running bridge's admin API (token from the config) at the first of
    `bases` (default: found from the config) that answers: the 200 answer, NoBridge when
    nothing listens, Unanswered for any other answer."""
    headers = {"Authorization": f"Bearer {config.server.admin_token}"} \
        if config.server.admin_token else {}
    recorded = None if bases else address.recorded(config)
    tried, strangers = [], []
    for base in bases or address.candidates(config):
        try:
            response = httpx.request(method, base + path, headers=headers, timeout=timeout,
                                     **kwargs)
        except (httpx.ConnectError, httpx.ConnectTimeout):
            tried.append(base)
            continue
        except httpx.HTTPError as exc:
            raise Unanswered(f"{base}{path} did not answer ({type(exc).__name__}): the bridge "
                             "may still be starting (it listens before its buffer is open) "
                             "or be overloaded; try again") from None
        theirs = response.headers.get(address.HEADER)
        if theirs != address.buffer_id(config) and (theirs is not None or base == recorded):
            # another bridge took this port, or a killed bridge's pid (in its address
            # file) now belongs to another program: not this config's bridge
            strangers.append(base)
            continue
        return _checked(response, base)
    if strangers:
        where = " or ".join(strangers)
        raise NoBridge(f"this config's bridge is not running: {where} answers, but not "
                       "as the bridge on this config's buffer (another bridge or program "
                       "took the port); start it with `bridge run -c CONFIG`",
                       tried + strangers, strangers)
    raise NoBridge(f"no bridge answered at {' or '.join(tried) or 'server.port 0'}; is it "
                   "running? (start it with `bridge run -c CONFIG`)", tried)


def _checked(response: httpx.Response, base: str) -> httpx.Response:
    if response.status_code in (401, 403):
        raise Unanswered(f"the bridge at {base} refused the admin token "
                         f"({response.text.strip()[:120]}): server.admin_token in this config "
                         "must be the running bridge's")
    if response.status_code != 200:
        said = " ".join(response.text.split())[:200] \
            if response.headers.get("Content-Type", "").startswith("text/plain") else ""
        raise Unanswered(f"{response.request.url} answered {response.status_code}"
                         + (f": {said}" if said else " (is another program listening there?)"))
    return response


def bridge_status(config: Any, pm: Any, search: str | None = None) -> dict[str, Any]:
    """The running bridge's /status report; with no bridge answering, the buffer's report
    with every sink judged from the buffer (stopped, unless a live process of a shared
    buffer's registry runs it)."""
    import asyncio

    try:
        response = call(config, "GET", "/status", params={"q": search} if search else None,
                        timeout=20)
    except NoBridge as exc:
        return asyncio.run(_offline(config, pm, search, exc.tried, exc.strangers))
    try:
        report = response.json()
        report["sinks"]  # noqa: B018 - a bridge's report has them
    except (ValueError, KeyError, TypeError):
        raise Unanswered(f"{response.request.url} answered, but not with a bridge's status "
                         "report (is another program listening there?)") from None
    report["reached"] = str(response.request.url).removesuffix("/status").split("?")[0]
    return report


async def _offline(config: Any, pm: Any, search: str | None, tried: list[str],
                   strangers: list[str]) -> dict[str, Any]:
    from bridge.app import create_app
    from bridge.buffer import Buffer
    from bridge.health import overall
    from bridge.state import BRIDGE
    from bridge.status import buffer_report, offline_health, simulated

    sinks = create_app(config, pm)[BRIDGE].sinks  # intervals and simulators; nothing started
    buffer = await Buffer.open(config.buffer.target, config.buffer.synchronous)
    try:
        report = await buffer_report(buffer, search)
        alive = await _alive_elsewhere(buffer)
        silent = [base for base in tried if base not in strangers]
        said = [f"nothing answers at {' or '.join(silent)}"] if silent else []
        said += [f"{' or '.join(strangers)}: another bridge or program answers there"] \
            if strangers else []
        stopped = ("the bridge is not running ("
                   f"{'; '.join(said) or 'nothing answers at a recorded address'})")
        offline_health(report["sinks"], stopped, alive,
                       {s.name: s.settings.sync_interval for s in sinks})
    finally:
        await buffer.close()
    by_name = {s.name: s for s in sinks}
    for entry in report["sinks"]:
        entry["simulated"] = simulated(by_name.get(entry["sink"]))
    report["health"] = overall(report["sinks"], running=bool(alive), why=stopped)
    report["reached"] = None
    return report


async def _alive_elsewhere(buffer: Any) -> set[str]:
    """Sinks a live process of a shared (PostgreSQL) buffer's registry runs; none on SQLite."""
    if not hasattr(buffer, "listener"):
        return set()
    from bridge.cluster import Member

    try:
        report = await Member(buffer, {}).report()
    except Exception:  # noqa: BLE001 - no registry yet: nobody has run on this buffer
        return set()
    return {name for p in report["processes"] if p["alive"] for name in p["sinks"]}
