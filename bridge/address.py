"""Where the running bridge listens, for the client commands on the same config.

`bridge run` records its address in a small file beside the buffer (`<buffer>.address`,
JSON: url, pid) once it listens, and removes it when it stops; `bridge status`,
`sync-now`, `backfill`, `dead-letter requeue` and `whatsapp send-test` try that address
first, then the one the config names. So `bridge run --port 9000` is found without
repeating the port, and a file left by a killed bridge costs one refused connection.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

ANY_ADDRESS = ("0.0.0.0", "")
ANY_IPV6 = ("::", "0:0:0:0:0:0:0:0")  # IPv6 only (asyncio binds it V6ONLY): ::1 reaches it
HEADER = "X-Chatbridge-Buffer"  # on every answer: which buffer this bridge runs on (hashed)


def buffer_id(config: Any) -> str:
    """A short fingerprint of the config's buffer (the SQLite file's real path, or the
    PostgreSQL URL without its password): a client checks that the bridge it reached is
    the one on its own buffer, not another bridge that took the port."""
    if config.buffer.postgres:
        from bridge.buffer.postgres import redact

        where = redact(config.buffer.url)
    else:
        where = os.path.realpath(config.buffer.path)
    return hashlib.sha256(where.encode()).hexdigest()[:16]


def url_of(host: str, port: int) -> str:
    """The URL a client on this machine uses for a bridge listening on host:port."""
    if host in ANY_ADDRESS:
        host = "127.0.0.1"
    elif host in ANY_IPV6:
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def address_file(config: Any) -> Path:
    """The file beside the buffer that holds the running bridge's address."""
    path = Path(config.buffer.path)
    return path.with_name(path.name + ".address")


def record(config: Any, url: str) -> None:
    """Note that this process serves `url` (written whole, then renamed into place)."""
    target = address_file(config)
    partial = target.with_name(target.name + f".{os.getpid()}")
    try:
        partial.write_text(json.dumps({"url": url, "pid": os.getpid()}))
        partial.replace(target)
    except OSError:  # only the client's convenience is lost: it tries the config's port
        partial.unlink(missing_ok=True)


def forget(config: Any) -> None:
    """Remove the file at a clean stop, if it is still this process's."""
    target = address_file(config)
    try:
        if json.loads(target.read_text()).get("pid") == os.getpid():
            target.unlink()
    except (OSError, ValueError, AttributeError):
        pass


def recorded(config: Any) -> str | None:
    """The address a running bridge recorded, if it is on this config's host (a port of
    its own: the admin token goes with the call) and its process lives. A live pid may
    be another program's by now (reused): a client trusts only an answer that says it
    runs on this config's buffer (HEADER)."""
    try:
        found = json.loads(address_file(config).read_text())
        url, pid = found.get("url"), found.get("pid")
    except (OSError, ValueError, AttributeError):
        return None
    ours = url_of(config.server.host, 0).rsplit(":", 1)[0] + ":"
    if isinstance(url, str) and url.startswith(ours) and url[len(ours):].isdigit() \
            and _alive(pid):
        return url
    return None


def candidates(config: Any) -> list[str]:
    """Base URLs to try, in order: the recorded address, then the config's."""
    found = [url] if (url := recorded(config)) else []
    if config.server.port:  # port 0: the recorded address is the only way to know it
        configured = url_of(config.server.host, config.server.port)
        found += [configured] if configured not in found else []
    return found


def _alive(pid: Any) -> bool:
    """Whether process `pid` exists here (a file left by a killed bridge names none)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    return True
