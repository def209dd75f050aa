"""A strict LeadSquared v2 API simulator on 127.0.0.1 for tests, benchmarks and the demo.

Not a mock: no LeadSquared account is reachable, so this serves the documented request and
answer shapes (shared/reference/leadsquared-api.md §2-3, §8) over real HTTP and refuses what
LeadSquared would refuse, in its error shape. Every behaviour, with its source, is a row of
the table in docs/leadsquared-simulator.md, and a test pins each row. Where the reference
leaves a behaviour unknown there is a switch (`switches.SWITCHES`, default the
strictest reading). Faults (rate limits, 5xx, latency, dropped connections after a commit,
an opportunity refusing posts) are knobs; see `Knobs`. State lives in
`state.Store`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field, fields
from hmac import compare_digest
from typing import Any

from aiohttp import web

import plugins.leadsquared.simulator.files as simulator_files
from plugins.leadsquared.simulator.bulk import BULK_PATHS
from plugins.leadsquared.simulator.bulk import routes as bulk_routes
from plugins.leadsquared.simulator.directory import recently_modified
from plugins.leadsquared.simulator.key import SIM_KEY
from plugins.leadsquared.simulator.leads import routes as lead_routes
from plugins.leadsquared.simulator.pages import LEAD_PAGE, lead_page
from plugins.leadsquared.simulator.state import (
    INVALID,
    ActivityType,
    ApiError,
    Store,
    as_int,
    as_object,
    index_slice,
    missing,
)
from plugins.leadsquared.simulator.switches import SWITCH_NAMES, check_switch
from plugins.leadsquared.simulator.users import ADMIN_EMAIL, User

API_PREFIX = "/v2/"
ADMIN_PREFIX = "/_sim/"
RATE_LIMIT_EXCEPTION = "MXAPIRateLimitExceededException"
DEFAULT_PAGE = 25  # Retrieve and the opportunity lists answer 25 rows unless paged
SIGNALS = ("429", "200", "both")
USER_EMAIL = ADMIN_EMAIL  # the keys' user's login
# GUESS: the reference gives no exception types for 401/404/405; these keep the error shape.
UNAUTHORISED = "MXUnAuthorizedAccessException"
NOT_FOUND = "MXEndpointNotFoundException"
NOT_ALLOWED = "MXMethodNotAllowedException"
# GUESS: the .NET type name; [LIVE] gotcha 15 says only "non-MX .NET exception types (e.g. a
# JSON parse error)".
BAD_JSON = "System.Runtime.Serialization.SerializationException"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
KEPT_WINDOWS = 64  # rate-limit windows whose counts are kept (a late-counted call's window)


@dataclass
class Call:
    """One /v2 API call as the simulator saw it.

    `at` is time.monotonic() on arrival; `status` is None when the connection was dropped
    without an answer. Access and secret keys in the query are masked. `held`: a write
    whose whole body arrived and which write_hold keeps (it commits at the hold's end even
    if the client is gone; one the client cut off mid-body never commits).
    """

    method: str
    path: str
    query: dict[str, str]
    at: float
    body: Any = None
    status: int | None = None
    held: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Knobs:
    """Faults and limits, set in the constructor or with Simulator.configure().

    rate_limit: calls per 5-second window (int), "N/Ws" for another window (e.g. "3/0.5s"),
        or None for no limit. Every API call counts, refused ones too. Windows are fixed
        slices of time.monotonic() (floor(t / W)); the docs do not say fixed or sliding.
    bulk_rate_limit: the same for the bulk calls (BULK_PATHS), counted apart from the
        ordinary ones (reference §3: "All Bulk APIs" have their own, lower limit); None
        for no limit. Bulk calls never count against rate_limit.
    rate_limit_signal: "429" (HTTP 429), "200" (the same error body on HTTP 200, as seen in
        the wild) or "both" (alternating, starting with 429).
    error_rate: share of calls answered 500/502/503 before anything else happens.
    latency: seconds added to every call.
    drop_after_commit_rate: share of successful writes whose connection is closed after the
        commit, without an answer.
    write_hold: seconds each write (WRITE_PATHS) is held before it reaches the account, as
        a slow network or proxy holds a request; it commits at the end of the hold even if
        the client gave up meanwhile (so a hold longer than the client's timeout is a
        write that commits late). Issue 13 item 7: a 70 s hold posted an activity twice.
        The rate limit counts a held write when it arrives; one past the limit is refused
        at once, not held.
    gateway_errors: one-off error pages from a proxy or gateway in front of the API, as
        [status, endpoint] pairs (endpoint: the path's last segment, e.g. "Lead.Create",
        or "*"): each answers the next matching call once, with an HTML page of that
        status, before the account sees it (nothing commits). Issue 13: a one-off HTML
        404/400 on a lookup, or 403/408/413 on a create, from such a proxy dead-lettered
        messages; LeadSquared's own errors are JSON (reference §3), these pages are not.
    note_limit: longest ActivityNote accepted (GUESS: about 2000, reference §7.3).
    upload_limit: the largest file (bytes) File Upload takes; a larger one is answered
        413 with aiohttp's plain-text page naming the limit. UNSURE: no source found for
        the files host's limit or its answer (searched the docs, pages, issues and code
        corpora for LeadSquared File Upload size / 413, December 2026: the upload page
        [DOC:file-upload-to-leads] names no size); 200 MiB is a stand-in.
    upload_rate: bytes a second File Upload reads the file part at (0: as fast as it comes).
        Not an API behaviour: a slow uplink between the bridge and the files host (a 16 MB
        video over a 1 Mbit/s line takes over two minutes), as `latency` is a slow answer.
    timezone: the keys' user's `TimeZone` as UserByAccessKey.Get answers it (reference §1:
        an IANA name, e.g. the documented Asia/Kolkata): an account in another zone (a DST
        one: America/New_York, Europe/London), or any answer a client may not know (a
        Windows name, a number: undocumented, as given).
    seed: seeds fault decisions (and, at construction, the generated ids).
    """

    rate_limit: int | str | None = None
    bulk_rate_limit: int | str | None = None
    rate_limit_signal: str = "429"
    error_rate: float = 0.0
    latency: float = 0.0
    drop_after_commit_rate: float = 0.0
    write_hold: float = 0.0
    gateway_errors: list = field(default_factory=list)
    note_limit: int = 2000
    upload_limit: int = simulator_files.MAX_UPLOAD
    upload_rate: int = 0
    timezone: str = "Asia/Kolkata"
    seed: int | None = None


KNOB_NAMES = tuple(f.name for f in fields(Knobs))


def parse_rate(value: Any) -> tuple[int, float] | None:
    """rate_limit -> (calls, window seconds), or None for no limit."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value, 5.0
    match = re.fullmatch(r"\s*(\d+)\s*(?:/\s*(\d+(?:\.\d+)?)\s*s?)?\s*", str(value))
    if match and int(match[1]) > 0 and float(match[2] or 5) > 0:
        return int(match[1]), float(match[2] or 5)
    raise ValueError(f"rate_limit {value!r}: use a positive int (per 5 s), 'N/Ws' or None")


def _check_knob(name: str, value: Any) -> Any:
    """The value to store for a knob, or ValueError."""
    if name in ("rate_limit", "bulk_rate_limit"):
        parse_rate(value)
    elif name == "rate_limit_signal":
        value = str(value)
        if value not in SIGNALS:
            raise ValueError(f"rate_limit_signal {value!r}: use one of {', '.join(SIGNALS)}")
    elif name in ("error_rate", "drop_after_commit_rate", "latency", "write_hold"):
        value = float(value)
        if value < 0 or (name not in ("latency", "write_hold") and value > 1):
            raise ValueError(f"{name} {value}: out of range")
    elif name in ("note_limit", "upload_limit"):
        value = int(value)
        if value < 1:
            raise ValueError(f"{name} {value}: must be positive")
    elif name == "upload_rate":
        value = int(value)
        if value < 0:
            raise ValueError(f"upload_rate {value}: must be 0 (no limit) or positive")
    elif name == "gateway_errors":
        value = [_gateway_error(item) for item in value or []]
    elif name == "seed" and value is not None:
        value = int(value)
    return value


def _gateway_error(item: Any) -> tuple[int, str]:
    status, endpoint = item if isinstance(item, list | tuple) and len(item) == 2 else (None, "")
    if not isinstance(status, int) or not 400 <= status <= 599 or not isinstance(endpoint, str):
        raise ValueError(f"gateway_errors item {item!r}: use [status 400-599, endpoint or '*']")
    return status, endpoint


class Simulator:
    """One LeadSquared account served over HTTP; see the module docstring."""

    def __init__(self, access_key: str = "sim-access-key",
                 secret_key: str = "sim-secret-key", *, rate_limit: int | str | None = None,
                 rate_limit_signal: str = "429", error_rate: float = 0.0,
                 latency: float = 0.0, drop_after_commit_rate: float = 0.0,
                 note_limit: int = 2000, seed: int | None = None, **switches: str) -> None:
        self.access_key = access_key
        self.secret_key = secret_key
        self.base_url = ""
        self._runner: web.AppRunner | None = None
        self.held_writes: set[asyncio.Future] = set()  # write_hold: writes not yet committed
        self.in_flight: set[asyncio.Task] = set()  # API calls being answered
        self.fill: Callable[[Simulator], None] | None = None  # what reset() puts back
        self._given = {"rate_limit": rate_limit, "rate_limit_signal": rate_limit_signal,
                       "error_rate": error_rate, "latency": latency, "note_limit": note_limit,
                       "drop_after_commit_rate": drop_after_commit_rate, "seed": seed,
                       **switches}
        self._fresh()

    def _fresh(self) -> None:
        """The account, knobs and switches as constructed: no leads, calls or faults."""
        self.knobs = Knobs()
        self.calls: list[Call] = []
        self.store = Store(self._given["seed"])
        self._rng = random.Random(self._given["seed"])
        self._limit: tuple[int, float] | None = None
        self._bulk_limit: tuple[int, float] | None = None
        # calls counted per fixed window, by budget (bulk or not): window number -> count
        self._counts: dict[bool, dict[int, int]] = {False: {}, True: {}}
        self._refusals = 0
        self.broken: dict[str, int] = {}  # endpoint (last path segment) -> status it answers
        self.refusing: dict[str, Refusal] = {}  # endpoint -> LeadSquared's own refusal
        self.garbled: dict[str, Any] = {}  # endpoint -> the body its 200 answers carry
        self.failing_posts: set[str] = set()  # opportunities whose posts get a gateway 503
        self.configure(**self._given)
        if self.fill is not None:
            self.fill(self)

    async def reset(self) -> None:
        """Back to the account as constructed (and `fill`ed), as a restarted simulator
        would be: calls in flight and held writes are dropped uncommitted, then every lead,
        activity, file, recorded call, fault, knob and switch set since is gone."""
        dropped = [*self.held_writes, *self.in_flight]
        for task in dropped:
            task.cancel()
        if dropped:
            await asyncio.wait(dropped, timeout=10)
        self._fresh()

    def configure(self, **knobs: Any) -> None:
        """Change knobs and switches at runtime; an unknown name or a bad value raises
        ValueError."""
        unknown = set(knobs) - set(KNOB_NAMES) - set(SWITCH_NAMES)
        if unknown:
            raise ValueError(f"unknown knob(s) {', '.join(sorted(unknown))}; knobs are "
                             f"{', '.join(KNOB_NAMES + SWITCH_NAMES)}")
        checked = {name: check_switch(name, value) if name in SWITCH_NAMES
                   else _check_knob(name, value) for name, value in knobs.items()}
        for name, value in checked.items():
            setattr(self.store.switches if name in SWITCH_NAMES else self.knobs, name, value)
        if "rate_limit" in checked:
            self._limit, self._counts[False] = parse_rate(checked["rate_limit"]), {}
        if "bulk_rate_limit" in checked:
            self._bulk_limit, self._counts[True] = parse_rate(checked["bulk_rate_limit"]), {}
        if checked.get("seed") is not None:
            self._rng.seed(checked["seed"])

    # --- server --------------------------------------------------------------------------

    def make_app(self) -> web.Application:
        app = web.Application(middlewares=[admin_guard, api_middleware])
        app[SIM_KEY] = self
        for method, path, handler in API_ROUTES:
            app.router.add_route(method, API_PREFIX + path, handler)
        for method, path, handler in ADMIN_ROUTES:
            app.router.add_route(method, ADMIN_PREFIX + path, handler)
        app.router.add_get(LEAD_PAGE, lead_page)
        app.router.add_post(simulator_files.UPLOAD_PATH, simulator_files.upload)
        app.router.add_get(simulator_files.FILE_PATH, simulator_files.serve_file)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Serve on host:port (0: any free port); returns the bound port."""
        self._runner = web.AppRunner(self.make_app(), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        bound = self._runner.addresses[0][1]
        self.base_url = f"http://{f'[{host}]' if ':' in host else host}:{bound}"
        return bound

    async def stop(self) -> None:
        for task in list(self.held_writes):  # write_hold: the account goes away uncommitted
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- Python API for tests ------------------------------------------------------------

    def add_lead(self, **attrs: Any) -> str:
        """Create a lead as Lead.Create would (same checks); returns its ProspectID."""
        return self.store.create_lead([{"Attribute": k, "Value": v} for k, v in attrs.items()])

    def add_opportunity(self, lead_id: str, name: str = "Deal", status: str = "Open",
                        event_code: int = 12000) -> str:
        """Add an opportunity to a lead; returns its id."""
        return self.store.add_opportunity(lead_id, name, status, event_code)

    def refuse_posts(self, opportunity_id: str,
                     reason: str = "Opportunity is closed for new activities (simulated)",
                     *, transient: bool = False, containing: str | None = None) -> None:
        """Fault: every activity post on this opportunity is refused (MXInvalidInputException
        with `reason`; with `containing`, only those whose note holds that text, so one row
        of a bulk call fails alone), or with `transient` answered by a gateway's 503 page;
        mend with refuse_posts(id, reason="")."""
        if opportunity_id not in self.store.opportunities:
            raise ValueError(f"no opportunity {opportunity_id!r}")
        self.store.refusing.pop(opportunity_id, None)
        self.store.refusing_notes.pop(opportunity_id, None)
        self.failing_posts.discard(opportunity_id)
        if reason and transient:
            self.failing_posts.add(opportunity_id)
        elif reason:
            self.store.refusing[opportunity_id] = reason
            if containing:
                self.store.refusing_notes[opportunity_id] = containing

    def break_endpoint(self, endpoint: str, status: int = 503) -> None:
        """Fault: every call to this endpoint (e.g. "GetOpportunitiesOfLead") gets a gateway's
        HTML error page with `status`, until mend_endpoint()."""
        self.broken[endpoint] = status

    def mend_endpoint(self, endpoint: str) -> None:
        self.broken.pop(endpoint, None)
        self.refusing.pop(endpoint, None)
        self.garbled.pop(endpoint, None)

    def garble_endpoint(self, endpoint: str, body: Any) -> None:
        """Fault: every call to this endpoint is answered HTTP 200 with `body` (any JSON
        value; a str is sent as an HTML page) before the account sees it, until
        mend_endpoint(): a success of a shape the docs do not show (an object where an
        array is documented, an array without the documented key, a gateway's page with
        200). [FAULT]: no source shows LeadSquared answering so; the sink must read each as
        an unknown, never as "nothing there"."""
        self.garbled[endpoint] = body

    def refuse_endpoint(self, endpoint: str,
                        exception_type: str = "MXUnAuthorizedAccessException",
                        message: str = "You do not have permission to do this (simulated)",
                        *, status: int = 500, after_commit: bool = False) -> None:
        """Fault: every call to this endpoint is answered with LeadSquared's own error
        shape (Status Error, `exception_type`, `message`) on HTTP `status` (200 too), until
        mend_endpoint(): a key whose user may not make this call, or with `after_commit`
        an answer that says Error although the call's writes were made."""
        self.refusing[endpoint] = Refusal(exception_type, message, status, after_commit)

    def add_opportunity_type(self, code: int, name: str) -> None:
        """An opportunity type of this account (codes 12000 and up, reference §2d)."""
        self.store.types[code] = ActivityType(code, name, opportunity=True)

    def attachments(self, activity_id: str) -> list[dict[str, Any]]:
        """Attachments of one activity, each with its file's bytes (`Data`) and sha256."""
        out = []
        for attachment in self.store.attachments.get(activity_id, []):
            stored = self.store.files[attachment["File"]]
            out.append({**attachment, "Data": stored.data, "Sha256": stored.sha256,
                        "ContentType": stored.content_type, "FileName": stored.filename})
        return out

    def activities(self, lead_id: str | None = None,
                   opportunity_id: str | None = None) -> list[dict]:
        """Stored activities in posting order (a lead's include those on its opportunities)."""
        return [a.as_record() for a in self.store.stored_activities(lead_id, opportunity_id)]

    def max_calls_in_window(self, seconds: float = 5.0, bulk: bool = False) -> int:
        """Most recorded calls of one budget (ordinary, or bulk) that arrived within any
        `seconds`-long span."""
        times = sorted(call.at for call in self.calls if (call.path in BULK_API_PATHS) == bulk)
        most, first = 0, 0
        for last, at in enumerate(times):
            while at - times[first] >= seconds:
                first += 1
            most = max(most, last - first + 1)
        return most

    def user(self, host: str) -> dict[str, Any]:
        """The keys' user, as Authentication.svc/UserByAccessKey.Get answers: the documented
        sample's keys, "EmailAddress": null and the login in PassPhrase (switch
        user_fields=email fills EmailAddress) [DOC:user-authentication]."""
        filled = self.store.switches.user_fields == "email"
        return {"Id": self.store.user_id, "Name": "Simulator Admin", "PassPhrase": USER_EMAIL,
                "Role": "Administrator", "EmailAddress": USER_EMAIL if filled else None,
                "TimeZone": self.knobs.timezone, "Type": "ApplicationUser",
                "OrgDisplayName": "Simulator", "DefaultCountryCode": "91",
                "MobileServiceURLs": {"FileUploadURL": f"http://{host}/File/Upload"},
                "LSQCommonServiceURLs": {"api": host, "app": host}}

    def user_record(self, user_id: str) -> list[dict[str, Any]]:
        """UserManagement.svc/User/Retrieve/ByUserId: the active user with EmailAddress, []
        for an inactive or unknown id [DOC:get-user-by-id]."""
        return self.store.users.retrieve(user_id=user_id)

    def add_user(self, first: str, email: str, last: str = "", phones: str = "",
                 mobile: str = "", active: bool = True) -> str:
        """A user of the account (a rep): AssociatedPhoneNumbers `phones` ("+91-98…"),
        PhoneMobile `mobile`; returns the user id."""
        user = User(self.store.new_id(), first, last, email, phones, mobile, active)
        return self.store.users.add(user).id

    # --- faults --------------------------------------------------------------------------

    def record(self, request: web.Request) -> Call:
        query = {k: ("***" if k in ("accessKey", "secretKey") else v)
                 for k, v in request.query.items()}
        call = Call(request.method, request.path, query, time.monotonic())
        self.calls.append(call)
        return call

    def roll(self, rate: float) -> bool:
        return rate > 0 and self._rng.random() < rate

    def over_limit(self, now: float, bulk: bool = False) -> bool:
        """Count a call in its budget's fixed window of `now` (its arrival); True when that
        window is past the limit. Each window keeps its own count: a call counted after
        later ones (held by `latency`) counts in the window it arrived in, and never sets
        the budget back to that window, which lost the current window's count (a held write
        did so until it was counted at arrival: _held_answer)."""
        budget = self._bulk_limit if bulk else self._limit
        if budget is None:
            return False
        limit, seconds = budget
        number = int(now // seconds)
        counts = self._counts[bulk]
        count = counts[number] = counts.get(number, 0) + 1
        if len(counts) > KEPT_WINDOWS:  # only the last windows can still fill
            for old in sorted(counts)[:-KEPT_WINDOWS]:
                del counts[old]
        return count > limit

    def rate_limit_answer(self, bulk: bool = False) -> web.Response:
        limit, seconds = (self._bulk_limit if bulk else self._limit) or (0, 5.0)
        error = ApiError(RATE_LIMIT_EXCEPTION,
                         f"API calls exceeded the limit of {limit} in {seconds:g} second(s)")
        signal = self.knobs.rate_limit_signal
        if signal == "both":
            signal = ("429", "200")[self._refusals % 2]
        self._refusals += 1
        return web.json_response(error.body(), status=int(signal))

    def fault_answer(self, status: int | None = None) -> web.Response:
        """A server-side failure: JSON from the API (500) or HTML from the gateway (502/503)."""
        status = status or self._rng.choice((500, 502, 503))
        if status == 500:
            body = {"Status": "Error", "ExceptionType": "System.Exception",
                    "ExceptionMessage": "An unexpected error occurred (simulated)"}
            return web.json_response(body, status=500)
        return web.Response(status=status, content_type="text/html",
                            text=f"<html><body><h1>{status}</h1></body></html>")

    def gateway_answer(self, path: str) -> web.Response | None:
        """The first queued gateway error page matching this call (used up), or None."""
        endpoint = path.rsplit("/", 1)[-1]
        for index, (status, wanted) in enumerate(self.knobs.gateway_errors):
            if wanted in ("*", endpoint):
                del self.knobs.gateway_errors[index]
                return web.Response(status=status, content_type="text/html",
                                    text=f"<html><body><h1>{status}</h1><hr>proxy</body></html>")
        return None

    def authorised(self, request: web.Request) -> bool:
        """Keys in the x-LSQ-* headers or in the accessKey/secretKey query."""
        access = request.headers.get("x-LSQ-AccessKey") or request.query.get("accessKey", "")
        secret = request.headers.get("x-LSQ-SecretKey") or request.query.get("secretKey", "")
        return (compare_digest(access.encode(), self.access_key.encode())
                and compare_digest(secret.encode(), self.secret_key.encode()))


@dataclass(frozen=True)
class Refusal:
    """An endpoint's simulated refusal (Simulator.refuse_endpoint)."""

    exception_type: str
    message: str
    status: int
    after_commit: bool

    def answer(self) -> web.Response:
        return error_response(ApiError(self.exception_type, self.message, self.status))


# web.RequestKey arrived in aiohttp 3.12; the project allows aiohttp >= 3.9.
CALL_KEY: Any = web.RequestKey("call", Call) if hasattr(web, "RequestKey") else "call"
# Successful POSTs to these paths have committed a write (drop_after_commit applies).
WRITE_PATHS = frozenset(API_PREFIX + path for path in (
    "LeadManagement.svc/Lead.Create", "LeadManagement.svc/Lead.CreateOrUpdate",
    "ProspectActivity.svc/CreateType", "ProspectActivity.svc/Create",
    "OpportunityManagement.svc/Capture", simulator_files.ATTACH_PATH, *BULK_PATHS))
BULK_API_PATHS = frozenset(API_PREFIX + path for path in BULK_PATHS)


# --- request plumbing ----------------------------------------------------------------------


def error_response(error: ApiError, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(error.body(), status=error.status, headers=headers)


def success(message: dict[str, Any], **extra: Any) -> web.Response:
    return web.json_response({"Status": "Success", "Message": message, **extra})


@web.middleware
async def api_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Record, delay, limit, fail, authenticate, answer, and maybe drop: /v2 calls only."""
    if not request.path.startswith(API_PREFIX):
        return await handler(request)
    sim = request.app[SIM_KEY]
    call = sim.record(request)
    request[CALL_KEY] = call
    task = asyncio.current_task()
    sim.in_flight.add(task)  # a reset drops it, as a restart would
    try:
        if sim.knobs.write_hold and request.method == "POST" and request.path in WRITE_PATHS:
            response = await _held_answer(sim, request, handler, call.at)
        else:
            response = await _answer(sim, request, handler, call.at)
    finally:
        sim.in_flight.discard(task)
    call.status = response.status
    if (request.method == "POST" and request.path in WRITE_PATHS and response.status == 200
            and sim.roll(sim.knobs.drop_after_commit_rate)):
        call.status = None
        request.transport.close()  # committed, but the client never hears back
    return response


async def _held_answer(sim: Simulator, request: web.Request, handler: Handler,
                       arrived: float) -> web.StreamResponse:
    """write_hold: answer after the hold, in a task of its own that a client hanging up
    does not cancel, so the write commits late rather than never. The rate limit counts
    it as it arrives, as a gateway does (a write past the limit is refused at once, never
    held): counted after the hold, it fell in a window later calls had moved past."""
    bulk = request.path in BULK_API_PATHS
    if sim.over_limit(arrived, bulk):
        return sim.rate_limit_answer(bulk)
    await request.read()  # the body arrived; only its effect is late
    request[CALL_KEY].held = True

    async def held() -> web.StreamResponse:
        await asyncio.sleep(sim.knobs.write_hold)
        return await _answer(sim, request, handler, arrived, counted=True)

    task = asyncio.ensure_future(held())
    sim.held_writes.add(task)
    task.add_done_callback(sim.held_writes.discard)
    return await asyncio.shield(task)


async def _answer(sim: Simulator, request: web.Request, handler: Handler,
                  arrived: float, counted: bool = False) -> web.StreamResponse:
    """The call's answer; `counted`: its rate limit was settled on arrival."""
    if sim.knobs.latency:
        await asyncio.sleep(sim.knobs.latency)
    if (page := sim.gateway_answer(request.path)) is not None:
        return page
    bulk = request.path in BULK_API_PATHS
    if not counted and sim.over_limit(arrived, bulk):
        return sim.rate_limit_answer(bulk)
    if sim.roll(sim.knobs.error_rate):
        return sim.fault_answer()
    if request.path.rsplit("/", 1)[-1] in sim.broken:
        return sim.fault_answer(sim.broken[request.path.rsplit("/", 1)[-1]] or 503)
    if (endpoint := request.path.rsplit("/", 1)[-1]) in sim.garbled:
        body = sim.garbled[endpoint]
        return web.Response(status=200, content_type="text/html", text=body) \
            if isinstance(body, str) else web.json_response(body)
    if not sim.authorised(request):
        return error_response(ApiError(UNAUTHORISED, "Invalid access key or secret key", 401))
    refusal = sim.refusing.get(request.path.rsplit("/", 1)[-1])
    if refusal is not None and not refusal.after_commit:
        return refusal.answer()
    try:
        answered = await handler(request)
        return answered if refusal is None else refusal.answer()
    except ApiError as error:
        return error_response(error)
    except web.HTTPMethodNotAllowed as exc:
        allowed = ", ".join(sorted(exc.allowed_methods))
        message = f"{request.method} is not allowed on {request.path}; use {allowed}"
        return error_response(ApiError(NOT_ALLOWED, message, 405), {"Allow": allowed})
    except web.HTTPNotFound:
        return error_response(ApiError(NOT_FOUND, f"No API at {request.path}", 404))


async def api_body(request: web.Request) -> Any:
    """The parsed JSON body (None when empty); 400 for another content type or bad JSON."""
    raw = await request.read()
    if not raw.strip():
        return None
    if request.content_type != "application/json":
        raise ApiError(INVALID, f"Content-Type {request.content_type!r} is not "
                                "application/json", 400)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:  # [LIVE] gotcha 5: mis-encoded bodies get a real 400
        raise ApiError(INVALID, f"The request body is not UTF-8 ({exc.reason})", 400) from None
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        status = int(request.app[SIM_KEY].store.switches.bad_json)
        raise ApiError(BAD_JSON, f"There was an error deserializing the object of type "
                                 f"request body: {exc}", status) from None
    request[CALL_KEY].body = body
    return body


async def optional_object(request: web.Request) -> dict[str, Any]:
    body = await api_body(request)
    return {} if body is None else as_object(body)


def query(request: web.Request, name: str) -> str:
    """A mandatory query parameter."""
    value = request.query.get(name, "")
    if not value:
        raise missing(name)
    return value


def optional_int_query(request: web.Request, name: str) -> int | None:
    value = request.query.get(name, "")
    return as_int(value, name) if value else None


def offset_paging(body: dict[str, Any], cap: int | None = None) -> slice:
    """Retrieve's {"Paging":{"Offset","RowCount"}} (strings in the docs) as a slice; at
    most `cap` rows (switch paging=capped)."""
    paging = as_object(body.get("Paging") or {}, "Paging")
    offset = as_int(paging.get("Offset", 0), "Offset", 0)
    count = as_int(paging.get("RowCount", DEFAULT_PAGE), "RowCount", 1)
    return slice(offset, offset + min(count, cap or count))


def index_paging(body: dict[str, Any], cap: int | None = None) -> slice:
    """The opportunity lists' {"Paging":{"PageIndex" (from 1),"PageSize"}} as a slice; pages
    of at most `cap` rows, PageIndex counted in them (switch paging=capped)."""
    page = index_slice(body, DEFAULT_PAGE)
    size = page.stop - page.start
    if cap is None or size <= cap:
        return page
    start = page.start // size * cap
    return slice(start, start + cap)


def page_cap(request: web.Request) -> int | None:
    """The most rows a read answers a call: DEFAULT_PAGE under switch paging=capped."""
    return DEFAULT_PAGE if store_of(request).switches.paging == "capped" else None


def columns(body: dict[str, Any]) -> set[str]:
    """The names in {"Columns":{"Include_CSV":"a,b"}}; a misshapen Columns names nothing."""
    value = (body.get("Columns") or {}) if isinstance(body.get("Columns"), dict) else {}
    csv = value.get("Include_CSV")
    return {n.strip() for n in csv.split(",") if n.strip()} if isinstance(csv, str) else set()


def listing(rows: list[dict], page: slice) -> web.Response:
    return web.json_response({"RecordCount": len(rows), "List": rows[page]})


def store_of(request: web.Request) -> Store:
    return request.app[SIM_KEY].store


# --- API handlers: one per endpoint --------------------------------------------------------


async def user_by_access_key(request: web.Request) -> web.Response:
    return web.json_response(request.app[SIM_KEY].user(request.host))


async def lead_by_phone(request: web.Request) -> web.Response:
    return web.json_response(store_of(request).leads_by_phone(query(request, "phone")))


async def user_by_id(request: web.Request) -> web.Response:
    return web.json_response(request.app[SIM_KEY].user_record(query(request, "userId")))


async def users_get(request: web.Request) -> web.Response:
    return web.json_response(store_of(request).users.listing())


async def user_by_email(request: web.Request) -> web.Response:
    return web.json_response(store_of(request).users.retrieve(
        email=query(request, "emailAddress")))


async def lead_by_id(request: web.Request) -> web.Response:
    lead = store_of(request).lead(query(request, "id"))
    return web.json_response([lead] if lead else [])


async def quick_search(request: web.Request) -> web.Response:
    return web.json_response(store_of(request).quick_search(query(request, "key")))


async def leads_get(request: web.Request) -> web.Response:
    return web.json_response(store_of(request).search(await api_body(request)))


async def lead_create(request: web.Request) -> web.Response:
    return success({"Id": store_of(request).create_lead(await api_body(request), api=True)})


async def lead_create_or_update(request: web.Request) -> web.Response:
    return success({"Id": store_of(request).upsert_lead(await api_body(request))})


async def activity_types(request: web.Request) -> web.Response:
    """Every type; opportunity types only under switch opportunity_types=listed."""
    store = store_of(request)
    listed = store.switches.opportunity_types == "listed"
    return web.json_response([t.as_row() for t in store.types.values()
                              if listed or not t.opportunity])


async def create_type(request: web.Request) -> web.Response:
    return success({"Id": store_of(request).create_type(await api_body(request))})


async def activity_setting(request: web.Request) -> web.Response:
    kind = store_of(request).types.get(as_int(query(request, "code"), "code"))
    if kind is None:
        raise ApiError(INVALID, f"Invalid Input! No activity type {request.query['code']}")
    return web.json_response(kind.setting(
        store_of(request).switches.activity_setting == "attachments_key"))


async def create_activity(request: web.Request) -> web.Response:
    body = await api_body(request)
    if isinstance(body, dict) and body.get("RelatedOpportunityId") in request.app[
            SIM_KEY].failing_posts:
        return request.app[SIM_KEY].fault_answer(503)
    activity = store_of(request).post_activity(body, request.app[SIM_KEY].knobs.note_limit)
    message = {"Id": activity.id}
    if activity.opportunity_id:
        message["RelatedId"] = activity.lead_id
    return success(message)


async def attachment_add(request: web.Request) -> web.Response:
    sim = request.app[SIM_KEY]
    return success(simulator_files.attach(sim.store, await api_body(request), sim.base_url))


async def retrieve_activities(request: web.Request) -> web.Response:
    """Lead-level history, newest first; an unknown lead has none (reads never refuse ids)."""
    lead_id = query(request, "leadId")
    body = await optional_object(request)
    parameter = as_object(body.get("Parameter") or {}, "Parameter")
    event = parameter.get("ActivityEvent")
    store = store_of(request)
    rows = store.lead_activities(lead_id, None if event is None else as_int(event, "ActivityEvent"))
    page, shape = offset_paging(body, page_cap(request)), store.switches.retrieve_shape
    return web.json_response({"RecordCount": len(rows), "ProspectActivities": [
        a.as_row(shape, store.types[a.event].custom) for a in rows[page]]})


async def capture_opportunity(request: web.Request) -> web.Response:
    opportunity_id, lead_id = store_of(request).capture(await api_body(request))
    # GUESS: the reference (§2e) names only AdditionalDetails[].ActivityId and
    # PostDeDupActionPerformed; Message.Id carries the opportunity id as other creates do.
    details = {"ActivityId": opportunity_id, "RelatedProspectId": lead_id}
    return success({"Id": opportunity_id, "RelatedId": lead_id},
                   AdditionalDetails=[details], PostDeDupActionPerformed="None")


async def opportunities_of_lead(request: web.Request) -> web.Response:
    lead_id = query(request, "leadId")
    kind = optional_int_query(request, "opportunityType")
    if kind is None and store_of(request).switches.opportunity_type == "required":
        raise missing("opportunityType")  # §8 [LIVE]: required in practice, HTTP 500
    if lead_id not in store_of(request).leads:  # GUESS: deleted or merged away, refused
        raise ApiError(INVALID, f"Invalid Input! Parameter Name: leadId (no lead {lead_id!r})")
    page = index_paging(await optional_object(request), page_cap(request))
    return listing(store_of(request).opportunities_of(lead_id, kind), page)


async def activities_of_opportunity(request: web.Request) -> web.Response:
    opportunity_id = query(request, "opportunityId")
    event = optional_int_query(request, "activityEventCode")
    body = await optional_object(request)
    rows = store_of(request).opportunity_activities(opportunity_id, event)
    wanted = columns(body)
    return listing([a.as_list_item(wanted) for a in rows],
                   index_paging(body, page_cap(request)))


API_ROUTES: list[tuple[str, str, Handler]] = [
    ("GET", "Authentication.svc/UserByAccessKey.Get", user_by_access_key),
    ("GET", "UserManagement.svc/User/Retrieve/ByUserId", user_by_id),
    ("GET", "UserManagement.svc/User/Retrieve/ByEmailAddress", user_by_email),
    ("GET", "UserManagement.svc/Users.Get", users_get),
    ("GET", "LeadManagement.svc/RetrieveLeadByPhoneNumber", lead_by_phone),
    ("GET", "LeadManagement.svc/Leads.GetById", lead_by_id),
    ("GET", "LeadManagement.svc/Leads.GetByQuickSearch", quick_search),
    ("POST", "LeadManagement.svc/Leads.Get", leads_get),
    ("POST", "LeadManagement.svc/Lead.Create", lead_create),
    ("POST", "LeadManagement.svc/Lead.CreateOrUpdate", lead_create_or_update),
    ("GET", "ProspectActivity.svc/ActivityTypes.Get", activity_types),
    ("POST", "ProspectActivity.svc/CreateType", create_type),
    ("GET", "ProspectActivity.svc/CustomActivity/GetActivitySetting", activity_setting),
    ("POST", "ProspectActivity.svc/Create", create_activity),
    ("POST", "ProspectActivity.svc/Retrieve", retrieve_activities),
    ("POST", simulator_files.ATTACH_PATH, attachment_add),
    ("POST", "OpportunityManagement.svc/Capture", capture_opportunity),
    ("POST", "OpportunityManagement.svc/GetOpportunitiesOfLead", opportunities_of_lead),
    ("POST", "OpportunityManagement.svc/GetActivitiesOfOpportunity", activities_of_opportunity),
]
async def leads_recently_modified(request: web.Request) -> web.Response:
    return web.json_response(recently_modified(store_of(request), await api_body(request)))


API_ROUTES += [("POST", "LeadManagement.svc/Leads.RecentlyModified", leads_recently_modified)]
API_ROUTES += bulk_routes(lambda request: request.app[SIM_KEY], store_of, api_body, query)
# Lead search by any field and Lead.Update (issue 16): their own module; a route this
# table already serves keeps its handler here.
API_ROUTES += [route for route in lead_routes(store_of, api_body, query, success)
               if route[:2] not in {(method, path) for method, path, _ in API_ROUTES}]


# --- admin routes (no auth; loopback callers only) -----------------------------------------


@web.middleware
async def admin_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Admin routes answer loopback callers only, and turn refusals into HTTP 400."""
    if not request.path.startswith(ADMIN_PREFIX):
        return await handler(request)
    if not ipaddress.ip_address(request.remote or "0.0.0.0").is_loopback:
        raise web.HTTPForbidden(text="simulator admin routes answer loopback callers only")
    try:
        return await handler(request)
    except ApiError as error:
        return web.json_response(error.body(), status=400)
    except (ValueError, TypeError) as exc:
        return web.json_response({"error": str(exc)}, status=400)


async def admin_json(request: web.Request) -> dict[str, Any]:
    try:
        return as_object(await request.json())
    except json.JSONDecodeError as exc:
        raise ValueError(f"the body is not JSON: {exc}") from None


async def admin_calls(request: web.Request) -> web.Response:
    return web.json_response([call.as_dict() for call in request.app[SIM_KEY].calls])


async def admin_activities(request: web.Request) -> web.Response:
    lead_id = request.query.get("leadId") or None
    opportunity_id = request.query.get("opportunityId") or None
    return web.json_response(request.app[SIM_KEY].activities(lead_id, opportunity_id))


async def admin_attachments(request: web.Request) -> web.Response:
    """Attachments of ?activity=<id> (their bytes at each AttachmentFile URL), with sha256."""
    rows = request.app[SIM_KEY].attachments(request.query.get("activity", ""))
    return web.json_response([{k: v for k, v in row.items() if k != "Data"} for row in rows])


async def admin_leads(request: web.Request) -> web.Response:
    return web.json_response(list(store_of(request).leads.values()))


async def admin_add_lead(request: web.Request) -> web.Response:
    lead_id = request.app[SIM_KEY].add_lead(**await admin_json(request))
    return web.json_response({"ProspectID": lead_id})


async def admin_add_user(request: web.Request) -> web.Response:
    body = await admin_json(request)
    user_id = request.app[SIM_KEY].add_user(
        str(body.get("first", "")), str(body.get("email", "")), str(body.get("last", "")),
        str(body.get("phones", "")), str(body.get("mobile", "")), bool(body.get("active", True)))
    return web.json_response({"UserId": user_id})


async def admin_change_user(request: web.Request) -> web.Response:
    """An admin's edit of a user while the bridge runs: {"id", and any of "email", "phones",
    "mobile", "active"} (a rep deactivated, their email changed, a number moved)."""
    body = await admin_json(request)
    user = store_of(request).users.by_id.get(str(body.get("id", "")))
    if user is None:
        raise ValueError(f"no user with id {body.get('id')!r}")
    for key in ("email", "phones", "mobile"):
        if key in body:
            setattr(user, key, str(body[key]))
    if "active" in body:
        user.active = bool(body["active"])
    return web.json_response(user.listed())


async def admin_users(request: web.Request) -> web.Response:
    return web.json_response(store_of(request).users.listing())


async def admin_add_opportunity(request: web.Request) -> web.Response:
    body = await admin_json(request)
    opportunity_id = request.app[SIM_KEY].add_opportunity(
        body.get("lead_id", ""), body.get("name", "Deal"),
        body.get("status", "Open"), int(body.get("event_code", 12000)))
    return web.json_response({"OpportunityId": opportunity_id})


async def admin_refuse(request: web.Request) -> web.Response:
    body = await admin_json(request)
    request.app[SIM_KEY].refuse_posts(
        str(body.get("opportunity_id", "")),
        body.get("reason", "Opportunity is closed for new activities (simulated)"),
        transient=bool(body.get("transient")), containing=body.get("containing"))
    return web.json_response({"refusing": body.get("opportunity_id")})


async def admin_break(request: web.Request) -> web.Response:
    """Simulator.break_endpoint over HTTP, for a simulator in a process of its own."""
    body = await admin_json(request)
    request.app[SIM_KEY].break_endpoint(str(body.get("endpoint", "")),
                                         int(body.get("status", 503)))
    return web.json_response({"broken": body.get("endpoint")})


async def admin_mend(request: web.Request) -> web.Response:
    """Simulator.mend_endpoint over HTTP."""
    body = await admin_json(request)
    request.app[SIM_KEY].mend_endpoint(str(body.get("endpoint", "")))
    return web.json_response({"mended": body.get("endpoint")})


async def admin_config(request: web.Request) -> web.Response:
    sim = request.app[SIM_KEY]
    sim.configure(**await admin_json(request))
    return web.json_response({**asdict(sim.knobs), **asdict(sim.store.switches)})


async def admin_reset(request: web.Request) -> web.Response:
    """The account as the simulator started with it (Simulator.reset)."""
    await request.app[SIM_KEY].reset()
    return web.json_response({"reset": True})


async def admin_stats(request: web.Request) -> web.Response:
    sim = request.app[SIM_KEY]
    seconds = float(request.query.get("seconds", 5))
    return web.json_response({"calls": len(sim.calls),
                              "max_calls_in_window": sim.max_calls_in_window(seconds)})


ADMIN_ROUTES: list[tuple[str, str, Handler]] = [
    ("GET", "calls", admin_calls),
    ("GET", "activities", admin_activities),
    ("GET", "leads", admin_leads),
    ("POST", "leads", admin_add_lead),
    ("POST", "opportunities", admin_add_opportunity),
    ("POST", "users", admin_add_user),
    ("GET", "users", admin_users),
    ("POST", "users/change", admin_change_user),
    ("POST", "refuse", admin_refuse),
    ("POST", "break", admin_break),
    ("POST", "mend", admin_mend),
    ("POST", "config", admin_config),
    ("GET", "stats", admin_stats),
    ("GET", "attachments", admin_attachments),
    ("POST", "reset", admin_reset),
]


# --- running it on its own -----------------------------------------------------------------


def add_demo_data(sim: Simulator) -> None:
    """A few leads (phones stored as +91-national) and opportunities for the demo."""
    sim.add_lead(FirstName="Asha", LastName="Patil", Phone="+91-9876543210", Source="Website")
    ravi = sim.add_lead(FirstName="Ravi", LastName="Kumar", Mobile="+91-9123456780",
                        EmailAddress="ravi.kumar@example.com")
    sim.add_opportunity(ravi, name="Annual plan", status="Open")
    meera = sim.add_lead(FirstName="Meera", LastName="Shah", Phone="+91-9988776655")
    sim.add_opportunity(meera, name="Starter pack", status="Won")


async def serve(host: str, port: int, access_key: str, secret_key: str,
                seed_demo: bool = False, **switches: str) -> None:
    """Run a simulator until cancelled, announcing its URL on one line."""
    sim = Simulator(access_key, secret_key, **switches)
    if seed_demo:
        sim.fill = add_demo_data  # and again on each reset
        add_demo_data(sim)
    bound = await sim.start(host, port)
    print(f"LeadSquared simulator listening on http://{host}:{bound}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await sim.stop()
