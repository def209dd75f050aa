"""Failed sign-ins per client address: a few free tries, then an exponential lockout.

While a client is locked out every attempt is refused unchecked, the right token too, so
parallel guesses learn nothing. Clients are keyed by peer address (an IPv6 client by its
/64, which one host usually owns whole). Behind a reverse proxy every client shares the
proxy's address, so they share one lockout. Memory is bounded: at most MAX_CLIENTS are
remembered, the least recently failing dropped first, and a client with no failure for
FORGET_AFTER starts afresh.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

FREE_FAILURES = 5  # wrong tokens a client may send before it is locked out
FIRST_LOCK = 1.0  # seconds of the first lockout; each further failure doubles it
LONGEST_LOCK = 900.0
FORGET_AFTER = 86400.0
MAX_CLIENTS = 4096


@dataclass
class _Record:
    failures: int
    last: float


class LoginThrottle:
    """Counts failed sign-ins per client; `clock` is a test seam."""

    def __init__(self, free: int = FREE_FAILURES, first: float = FIRST_LOCK,
                 longest: float = LONGEST_LOCK, limit: int = MAX_CLIENTS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._free, self._first, self._longest = free, first, longest
        self._limit = limit
        self._clock = clock
        self._records: OrderedDict[str, _Record] = OrderedDict()

    def wait(self, client: str) -> float:
        """Seconds until `client` may try again (0: now)."""
        record = self._records.get(client)
        if record is None:
            return 0.0
        now = self._clock()
        if now - record.last > FORGET_AFTER:
            del self._records[client]
            return 0.0
        return max(0.0, record.last + self._lock(record.failures) - now)

    def failed(self, client: str) -> None:
        """Record a wrong token from `client`."""
        record = self._records.pop(client, None) or _Record(0, 0.0)
        record.failures += 1
        record.last = self._clock()
        self._records[client] = record  # most recent last
        while len(self._records) > self._limit:
            self._records.popitem(last=False)

    def succeeded(self, client: str) -> None:
        """The right token: forget this client's failures."""
        self._records.pop(client, None)

    def __len__(self) -> int:
        return len(self._records)

    def _lock(self, failures: int) -> float:
        if failures < self._free:
            return 0.0
        return min(self._longest, self._first * 2.0 ** min(failures - self._free, 32))


def client_key(address: str | None) -> str:
    """The throttle key of a peer address: IPv4 as is, IPv6 by its /64."""
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return address or "unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return str(ip)
