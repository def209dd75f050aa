"""Serving the app for `bridge run`: open-file limit, connection cap, signals.

A flood of slow clients must not take the webhook down. Each open connection costs a file
descriptor; at the open-file limit `accept()` fails, asyncio logs the failure in a tight
loop, and the buffer cannot open a file. So `bridge run` raises the soft limit to the hard
one and keeps connections below it, with room left for the buffer, the CRM client and the
listening backlog. At the cap, the connection that has waited longest on its client (idle,
still sending headers, or still sending a body) is closed to make room; when every one is
busy with a request, the newcomer gets a 503.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import signal
import socket
import time
from collections.abc import Callable
from contextlib import suppress

from aiohttp import web
from aiohttp.web_runner import GracefulExit

from bridge.errors import ConfigError, ListenError

logger = logging.getLogger(__name__)

BACKLOG = 128  # connections the kernel queues; each may become a descriptor before we see it
OWN_FILES = 64  # the buffer, its WAL and journal, the CRM client's sockets, logs, imports
SHUTDOWN_TIMEOUT = 30.0
FRESH = 1.0  # seconds an accepted connection may take to be handed its transport
KEEPALIVE_TIMEOUT = 75.0  # also bounds a client that never finishes its headers
REFUSAL = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
           b"Content-Length: 40\r\nConnection: close\r\n\r\n"
           b"too many open connections; retry later\r\n")


def raise_open_file_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft != hard:
        with suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def connection_cap(open_files: int) -> int:
    """How many client connections fit under `open_files` with room for everything else."""
    return max(16, min(open_files - BACKLOG - OWN_FILES, open_files * 9 // 10))


def _waiting_on_client(handler: web.RequestHandler) -> bool:
    """Idle, still sending headers, or still sending its body: closing it loses nothing."""
    request = getattr(handler, "_current_request", None)  # aiohttp: the request in hand
    return request is None or not request.content.is_eof()


class _Refuse(asyncio.Protocol):
    """Answers 503 and closes: the connection past the cap when nothing can be closed."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(REFUSAL)  # type: ignore[attr-defined]
        transport.close()


class ConnectionCap:
    """The protocol factory for the listening socket: aiohttp's, under a connection cap.
    `server` may be set after the socket is bound (before it accepts anything)."""

    def __init__(self, server: web.Server | None, cap: int) -> None:
        self.server, self.cap = server, cap
        self._open: dict[web.RequestHandler, float] = {}  # accept time, oldest first
        self.evicted = self.refused = 0

    def __call__(self) -> asyncio.BaseProtocol:
        now = time.monotonic()
        if len(self._open) >= self.cap:
            self._forget_closed(now)
            if len(self._open) >= self.cap and not self._evict():
                self.refused += 1
                logger.warning("connection cap (%d) reached and every connection is busy: "
                               "answered 503", self.cap)
                return _Refuse()
        handler = self.server()
        self._open[handler] = now
        return handler

    def _forget_closed(self, now: float) -> None:
        """Drop closed connections; one accepted a moment ago may not be connected yet."""
        self._open = {h: at for h, at in self._open.items()
                      if h.transport is not None or now - at < FRESH}

    def _evict(self) -> bool:
        """Close the oldest connection waiting on its client; False if none is."""
        oldest = next((h for h in self._open
                       if h.transport is not None and _waiting_on_client(h)), None)
        if oldest is None:
            return False
        del self._open[oldest]
        oldest.force_close()
        self.evicted += 1
        logger.warning("connection cap (%d) reached: closed the oldest connection waiting "
                       "on its client", self.cap)
        return True


class CappedSite(web.BaseSite):
    """A TCP site on sockets bound before the app started, connections through a cap."""

    def __init__(self, runner: web.AppRunner, listening: asyncio.Server,
                 factory: ConnectionCap) -> None:
        super().__init__(runner, backlog=BACKLOG)
        self._listening, self._factory = listening, factory

    @property
    def name(self) -> str:
        return ", ".join(f"http://{a[0]}:{a[1]}" for a in bound(self._listening))

    async def start(self) -> None:
        await super().start()
        self._factory.server = self._runner.server
        self._server = self._listening
        await self._listening.start_serving()


def bound(listening: asyncio.Server) -> list[tuple[str, int]]:
    """(host, port) of each listening socket (the real port when 0 was asked for)."""
    return [sock.getsockname()[:2] for sock in listening.sockets]


def listen_error(host: str, port: int, exc: OSError,
                 other: str = "choose another with `bridge run --port N` or server.port"
                 ) -> str:
    """One line: why the bridge cannot listen, and what to do (`other`: how to pick
    another port)."""
    where = f"{host or '*'}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return (f"{where} is already in use (another bridge or program listens there): stop "
                f"it, or {other}")
    if exc.errno == errno.EACCES:
        return f"no permission to listen on {where} (ports below 1024 need privileges): {other}"
    reason = exc.strerror or str(exc)
    return (f"cannot listen on {where}: {reason} (server.host must be an address of this "
            "machine, e.g. 127.0.0.1, or 0.0.0.0 for every interface)")


def bound_socket(host: str, port: int, other: str) -> socket.socket:
    """A listening TCP socket on host:port, bound before anything starts (for the demo's
    web.SockSite); a busy port is a ListenError whose line says `other` (how to choose
    another port)."""
    try:
        return socket.create_server((host, port), backlog=BACKLOG)
    except OSError as exc:
        raise ListenError(listen_error(host, port, exc, other)) from None


async def listen(host: str, port: int, cap: int) -> tuple[asyncio.Server, ConnectionCap]:
    """Sockets bound on host:port, not yet accepting (CappedSite.start() opens them), and
    the cap their connections go through; a busy port is a ListenError."""
    factory = ConnectionCap(None, cap)
    try:
        listening = await asyncio.get_running_loop().create_server(
            factory, host, port, backlog=BACKLOG, reuse_address=True, start_serving=False)
    except (OSError, socket.gaierror) as exc:
        raise ListenError(listen_error(host, port, exc)) from None
    return listening, factory


async def _serve(app: web.Application, host: str, port: int, cap: int,
                 access_log: logging.Logger | None, ready: Callable[[str, int], None]) -> None:
    listening, factory = await listen(host, port, cap)  # before the app starts: nothing ran
    runner = web.AppRunner(app, handle_signals=True, access_log=access_log,
                           keepalive_timeout=KEEPALIVE_TIMEOUT,
                           shutdown_timeout=SHUTDOWN_TIMEOUT)
    stop_on_hang_up()  # before the app starts, as setup() sets SIGINT's and SIGTERM's
    try:
        await runner.setup()  # SIGINT and SIGTERM: a graceful stop
    except BaseException:
        listening.close()
        raise
    try:
        await CappedSite(runner, listening, factory).start()
        logger.info("serving on the %s event loop", "uvloop" if type(
            asyncio.get_running_loop()).__module__.startswith("uvloop") else "asyncio")
        ready(*bound(listening)[0])
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def stop_on_hang_up() -> None:
    """SIGHUP (the terminal that started the bridge closed, or `kill -HUP`) stops the bridge
    as SIGTERM does: requests in flight are answered and the buffer is closed. Python's
    default would end the process on the spot, as a SIGKILL does. A SIGHUP the bridge was
    started ignoring (`nohup bridge run`, a supervisor's choice) stays ignored."""
    hang_up = getattr(signal, "SIGHUP", None)  # not on Windows
    if hang_up is None or signal.getsignal(hang_up) is signal.SIG_IGN:
        return
    with suppress(NotImplementedError, RuntimeError):  # a loop without signal handlers
        asyncio.get_running_loop().add_signal_handler(hang_up, _hung_up)


def _hung_up() -> None:
    """Begin the stop; a later SIGHUP is ignored, so it cannot cut the stop short (a closed
    terminal can send two: the shell's to its jobs, the kernel's as the shell exits)."""
    asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # after it: removing set the default
    logger.info("SIGHUP: stopping as on SIGTERM")
    raise GracefulExit()


def new_loop(kind: str = "asyncio") -> asyncio.AbstractEventLoop:
    """The event loop server.event_loop names: uvloop (libuv; ~6 % less CPU per webhook,
    bench/README.md), asyncio's own, or auto: uvloop where it is installed."""
    if kind == "asyncio":
        return asyncio.new_event_loop()
    try:
        import uvloop
    except ImportError:
        if kind == "uvloop":
            raise ConfigError("server.event_loop: uvloop is not installed (pip install uvloop, "
                              "or set it to auto or asyncio)") from None
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def serve(app: web.Application, host: str, port: int, *,
          access_log: logging.Logger | None = None,
          ready: Callable[[str, int], None] = lambda host, port: None,
          event_loop: str = "asyncio") -> None:
    """Serve `app` until SIGINT, SIGTERM or SIGHUP, connections capped under the open-file limit."""
    cap = connection_cap(raise_open_file_limit())
    logger.debug("serving at most %d connections at a time", cap)
    loop = new_loop(event_loop)
    asyncio.set_event_loop(loop)
    main = loop.create_task(_serve(app, host, port, cap, access_log, ready))
    try:
        loop.run_until_complete(main)
    except (GracefulExit, KeyboardInterrupt):
        pass
    finally:
        try:
            if not main.done():
                main.cancel()
                with suppress(asyncio.CancelledError):
                    loop.run_until_complete(main)
        finally:
            _cancel_rest(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()


def _cancel_rest(loop: asyncio.AbstractEventLoop) -> None:
    tasks = asyncio.all_tasks(loop)
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
