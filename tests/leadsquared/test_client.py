"""The LeadSquared client against the real simulator (and its pure answer classification)."""

from __future__ import annotations

import asyncio
import logging
import socket
from datetime import UTC, datetime, timedelta, timezone

import httpx
import pytest

from plugins.leadsquared.api import activity_item
from plugins.leadsquared.client import (
    LeadSquaredClient,
    LeadSquaredError,
    _classify,
    lsq_datetime,
    retry_delay,
)
from plugins.leadsquared.phones import lookup_candidates
from plugins.leadsquared.ratelimit import RateLimiter

ACCESS, SECRET = "sim-access-key", "sim-secret-key"
WHEN = datetime(2025, 1, 31, 9, 15, tzinfo=UTC)


@pytest.fixture
async def sim():
    simulator_module = pytest.importorskip("plugins.leadsquared.simulator")
    simulator = simulator_module.Simulator(ACCESS, SECRET, seed=7)
    await simulator.start("127.0.0.1", 0)
    try:
        yield simulator
    finally:
        await simulator.stop()


@pytest.fixture
async def connect(sim):
    """connect(**options) -> a client of the simulator with fast retries (closed afterwards)."""
    clients: list[LeadSquaredClient] = []

    def make(access: str = ACCESS, secret: str = SECRET, **options) -> LeadSquaredClient:
        options.setdefault("limiter", RateLimiter(1000, 1.0))
        options.setdefault("backoff_base", 0.01)
        client = LeadSquaredClient(sim.base_url, access, secret, **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
def client(connect) -> LeadSquaredClient:
    return connect()


def calls_to(sim, fragment: str) -> int:
    return sum(1 for call in sim.calls if fragment in str(call))


# --- answer classification and retry policy (pure) ---------------------------------------

def answer(status: int, body: object = None, text: str | None = None) -> httpx.Response:
    if text is not None:
        return httpx.Response(status, text=text)
    return httpx.Response(status, json=body)


def kind_of(response: httpx.Response, write: bool = False) -> str:
    with pytest.raises(LeadSquaredError) as caught:
        _classify(response, write)
    return caught.value.kind


def test_rate_limit_body_on_http_200_is_rate_limited():
    body = {"Status": "Error", "ExceptionType": "MXAPIRateLimitExceededException",
            "ExceptionMessage": "API calls exceeded the limit of 20 in 5 second(s)"}
    assert kind_of(answer(200, body)) == "rate_limited"
    assert kind_of(answer(429, text="Too Many Requests")) == "rate_limited"


def test_mx_exception_is_rejected_with_leadsquareds_own_message_whatever_the_status():
    body = {"Status": "Error", "ExceptionType": "MXInvalidInputException",
            "ExceptionMessage": "Invalid Input! Parameter Name: activity"}
    for status in (200, 400, 500, 503):
        with pytest.raises(LeadSquaredError) as caught:
            _classify(answer(status, body), False)
        error = caught.value
        assert (error.kind, error.exception_type, error.status) == (
            "rejected", "MXInvalidInputException", status)
        assert error.message == "Invalid Input! Parameter Name: activity"


def test_status_error_on_2xx_is_an_error():
    """An error, never a success; untyped (no MX type: undocumented on a 2xx, reference
    §3) it is no refusal either: a read is tried again, as on a 500 (a key check answered
    so dead-lettered a chat that had landed: test_unread_key_checks)."""
    assert kind_of(answer(200, {"Status": "Error", "ExceptionMessage": "no"})) == "transient"
    assert kind_of(answer(500, {"Status": "Error", "ExceptionMessage": "no"})) == "transient"


def test_a_non_mx_status_error_on_2xx_is_an_unknown_outcome_for_a_write():
    """Undocumented (errors are 4xx/5xx): a write may have landed, as on a 500."""
    for body in ({"Status": "Error", "ExceptionMessage": "no"},
                 {"Status": "Error", "ExceptionType": "NullReferenceException"}):
        assert kind_of(answer(200, body), write=True) == "unknown_outcome"
    mx = {"Status": "Error", "ExceptionType": "MXInvalidInputException"}
    assert kind_of(answer(200, mx), write=True) == "rejected"  # LeadSquared's own refusal


def test_a_server_exception_on_2xx_is_retried_on_a_read_as_on_a_500():
    body = {"Status": "Error", "ExceptionType": "NullReferenceException", "ExceptionMessage": "x"}
    assert kind_of(answer(200, body)) == kind_of(answer(500, body)) == "transient"
    shape = {"Status": "Error", "ExceptionType": "System.FormatException",
             "ExceptionMessage": "Input string was not in a correct format."}
    for write in (False, True):  # a refused body shape fails every time
        assert kind_of(answer(200, shape), write=write) == "rejected"


def test_plain_5xx_is_transient_on_a_read_but_unknown_on_a_write():
    for status in (500, 502, 503, 504):
        assert kind_of(answer(status, text="<html>oops</html>")) == "transient"
        # the write may have committed before the failure: check before posting again
        assert kind_of(answer(status, text="busy"), write=True) == "unknown_outcome"


def test_a_write_a_gateway_stopped_waiting_for_may_still_commit_other_5xx_not():
    def in_flight(status: int, write: bool = True) -> bool:
        with pytest.raises(LeadSquaredError) as caught:
            _classify(answer(status, text="<html>gateway</html>"), write)
        return caught.value.in_flight

    assert in_flight(504)  # 504 Gateway Timeout: LeadSquared may still be working on it
    assert not any(in_flight(status) for status in (500, 502, 503))
    assert not in_flight(504, write=False)


def test_non_mx_exception_on_500_is_transient():
    body = {"Status": "Error", "ExceptionType": "NullReferenceException", "ExceptionMessage": "x"}
    assert kind_of(answer(500, body)) == "transient"


def test_a_body_shape_500_is_rejected_with_leadsquareds_message_not_retried():
    body = {"Status": "Error",
            "ExceptionType": "System.Runtime.Serialization.SerializationException",
            "ExceptionMessage": "There was an error deserializing the object of type body"}
    for write in (False, True):
        with pytest.raises(LeadSquaredError) as caught:
            _classify(answer(500, body), write)
        assert caught.value.kind == "rejected"
        assert caught.value.message == body["ExceptionMessage"]


def test_401_is_auth_and_leadsquareds_own_4xx_are_rejected():
    assert kind_of(answer(401, text="Unauthorized")) == "auth"
    for status in (400, 404, 405):
        body = {"Status": "Error", "ExceptionType": "SomeException", "ExceptionMessage": "no"}
        assert kind_of(answer(status, body)) == "rejected"
        assert kind_of(answer(status, {"Status": "Error", "Message": "no"})) == "rejected"


def test_a_gateway_error_page_is_transient_for_reads_and_writes():
    for status in (400, 403, 404, 405, 408, 413):
        for write in (False, True):  # refused at the gateway: it never reached the API
            assert kind_of(answer(status, text="<html><h1>proxy</h1></html>"), write) == \
                "transient"
        assert kind_of(answer(status, {"message": "Forbidden"})) == "transient"  # not LSQ's


def test_a_2xx_that_is_not_json_is_unknown_for_a_write_and_transient_for_a_read():
    assert kind_of(answer(200, text="<html>"), write=True) == "unknown_outcome"
    assert kind_of(answer(200, text="<html>")) == "transient"


def test_successful_answers_come_back_as_json():
    assert _classify(answer(200, []), False) == []
    assert _classify(answer(200, {"Status": "Success", "Message": {"Id": "x"}}), True) == {
        "Status": "Success", "Message": {"Id": "x"}}


def test_a_rate_limit_answer_waits_one_window_every_time():
    for attempt in (1, 2, 5, 9):
        delays = [retry_delay("rate_limited", attempt) for _ in range(50)]
        assert all(5.0 <= d <= 6.0 for d in delays)  # never back inside the refused window
        assert len(set(delays)) > 1  # jittered
    assert 0.5 <= retry_delay("rate_limited", 3, base=0.1) <= 0.6


def test_transient_backoff_doubles_from_the_base_and_scales_with_it():
    assert 0.8 <= retry_delay("transient", 1) <= 1.2
    assert 3.2 <= retry_delay("transient", 3) <= 4.8
    assert 0.032 <= retry_delay("transient", 3, base=0.01) <= 0.048


def test_datetimes_are_sent_as_utc_without_zone():
    ist = timezone(timedelta(hours=5, minutes=30))
    assert lsq_datetime(datetime(2025, 1, 31, 14, 45, 7, 123456, tzinfo=ist)) == (
        "2025-01-31 09:15:07")
    assert lsq_datetime(datetime(2025, 1, 31, 9, 15)) == "2025-01-31 09:15:00"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_connect_errors_are_retried_even_for_writes_then_transient():
    client = LeadSquaredClient(f"http://127.0.0.1:{free_port()}", ACCESS, SECRET,
                               limiter=RateLimiter(1000, 1.0), backoff_base=0.001,
                               max_retries=3)
    try:
        with pytest.raises(LeadSquaredError) as caught:
            await client.leads.create({"FirstName": "Asha"})
    finally:
        await client.close()
    assert caught.value.kind == "transient"
    assert client.calls["create_lead"] == 4


# --- against the simulator ------------------------------------------------------------------

async def event_code(client: LeadSquaredClient, name: str = "WhatsApp Chats") -> int:
    fields = [{"SchemaName": "mx_Custom_1", "DisplayName": "Key", "DataType": "String"}]
    return await client.activities.create_type(name, fields, "chat windows")


async def test_user_by_access_key_answers_with_the_keys_user(client):
    user = await client.users.by_access_key()
    assert isinstance(user, dict) and user
    assert client.calls["user_by_access_key"] == 1


async def test_lookup_candidates_are_digits_only_and_find_leads_stored_as_digits(sim, client):
    national = sim.add_lead(FirstName="Asha", Phone="9876543210")  # the doc sample's form
    coded = sim.add_lead(FirstName="Ravi", Mobile="919123456780")
    assert lookup_candidates("+919876543210") == ["919876543210", "9876543210", "09876543210"]
    found = {c: await client.leads.by_phone(c) for c in lookup_candidates("+919876543210")}
    assert [row["ProspectID"] for row in found["9876543210"]] == [national]
    assert found["919876543210"] == [] and found["09876543210"] == []  # exact matching
    (first,) = await client.leads.by_phone(lookup_candidates("+919123456780")[0])
    assert first["ProspectID"] == coded
    assert await client.leads.by_phone("919999999999") == []


async def test_create_lead_returns_a_prospect_id_that_reads_back(client):
    lead = await client.leads.create({"FirstName": "Ravi", "Phone": "9123456780"})
    stored = await client.leads.get(lead)
    assert stored is not None and stored["ProspectID"] == lead
    assert [row["ProspectID"] for row in await client.leads.by_phone("9123456780")] == [lead]


async def test_lead_by_id_of_an_unknown_lead_is_none_or_rejected(client):
    try:
        assert await client.leads.get("00000000-0000-0000-0000-000000000000") is None
    except LeadSquaredError as error:
        assert error.kind == "rejected"


async def test_duplicate_lead_is_rejected_with_leadsquareds_message_and_not_retried(sim, client):
    sim.add_lead(FirstName="Asha", Phone="+91-9876543210")
    with pytest.raises(LeadSquaredError) as caught:
        await client.leads.create({"FirstName": "Asha", "Phone": "+91-9876543210"})
    error = caught.value
    assert (error.kind, error.exception_type) == ("rejected", "MXDuplicateEntryException")
    assert "already exists" in error.message
    assert client.calls["create_lead"] == 1


@pytest.mark.parametrize("signal", ["429", "200", "both"])
async def test_rate_limiting_by_either_signal_is_retried_and_succeeds(sim, connect, signal):
    sim.configure(rate_limit="3/0.5s", rate_limit_signal=signal)
    client = connect(backoff_base=0.02, max_retries=6)
    for _ in range(7):
        assert await client.leads.by_phone("919999999999") == []
    assert client.calls["leads_by_phone"] > 7  # some calls were refused and sent again


async def test_rate_limited_past_max_retries_raises_rate_limited(sim, connect):
    sim.configure(rate_limit="1/10s", rate_limit_signal="200")
    client = connect(backoff_base=0.001, max_retries=2)
    await client.leads.by_phone("919999999999")
    with pytest.raises(LeadSquaredError) as caught:
        await client.leads.by_phone("919999999999")
    assert caught.value.kind == "rate_limited"
    assert client.calls["leads_by_phone"] == 4


async def test_every_call_goes_through_the_limiter(sim, connect):
    # margin absorbs the jitter between a request leaving the client and reaching the server
    client = connect(limiter=RateLimiter(3, 0.3, margin=0.1))
    await asyncio.gather(*(client.leads.by_phone("919999999999") for _ in range(9)))
    assert sim.max_calls_in_window(0.3) <= 3


async def test_error_rate_with_retries_gets_reads_through(sim, connect):
    lead = sim.add_lead(FirstName="Asha", Phone="9876543210")
    sim.configure(error_rate=0.3)
    client = connect(max_retries=10, backoff_base=0.001)
    for _ in range(20):
        rows = await client.leads.by_phone("9876543210")
        assert [row["ProspectID"] for row in rows] == [lead]
    assert client.calls["leads_by_phone"] > 20


async def test_drop_after_commit_on_post_activity_is_unknown_outcome_and_not_reposted(
        sim, connect):
    client = connect(timeout=5.0)
    lead = sim.add_lead(FirstName="Asha", Phone="+91-9876543210")
    event = await event_code(client)
    sim.configure(drop_after_commit_rate=1.0)
    with pytest.raises(LeadSquaredError) as caught:
        await client.activities.post(activity_item(lead, event, "hello", WHEN,
                                                   {"mx_Custom_1": "k1"}))
    assert caught.value.kind == "unknown_outcome"
    assert client.calls["post_activity"] == 1
    assert len(sim.activities(lead_id=lead)) == 1  # it did land: the caller must check


async def test_wrong_keys_are_an_auth_error(connect):
    client = connect(secret="not-the-secret")
    with pytest.raises(LeadSquaredError) as caught:
        await client.users.by_access_key()
    assert (caught.value.kind, caught.value.status) == ("auth", 401)
    assert client.calls["user_by_access_key"] == 1


async def test_keys_never_reach_logs_or_errors(sim, connect, caplog):
    caplog.set_level(logging.DEBUG)
    sim.configure(error_rate=0.5)
    client = connect(max_retries=10, backoff_base=0.001)
    await client.leads.by_phone("919876543210")
    with pytest.raises(LeadSquaredError) as caught:
        await connect(secret="wrong-secret").users.by_access_key()
    text = caplog.text + str(caught.value)
    assert SECRET not in text and ACCESS not in text and "wrong-secret" not in text


async def test_activity_types_list_the_created_type(client):
    event = await event_code(client, "WhatsApp Chats")
    types = await client.activities.types()
    assert {"ActivityEventName": "WhatsApp Chats", "ActivityEvent": event}.items() <= next(
        t for t in types if t["ActivityEventName"] == "WhatsApp Chats").items()


async def test_post_activity_returns_its_id_and_stores_note_time_and_fields(sim, client):
    lead = sim.add_lead(FirstName="Asha", Phone="+91-9876543210")
    event = await event_code(client)
    ist = timezone(timedelta(hours=5, minutes=30))
    activity = await client.activities.post(activity_item(
        lead, event, "hello there", datetime(2025, 1, 31, 14, 45, tzinfo=ist),
        {"mx_Custom_1": "wamid.X"}))
    stored = sim.activities(lead_id=lead)
    assert len(stored) == 1 and activity in str(stored[0])
    assert "hello there" in str(stored[0]) and "wamid.X" in str(stored[0])
    assert "2025-01-31 09:15:00" in str(stored[0])


async def test_lead_activities_walks_every_page(sim, client):
    lead = sim.add_lead(FirstName="Asha", Phone="+91-9876543210")
    event, other = await event_code(client, "Chats"), await event_code(client, "Other")
    posted = {await client.activities.post(activity_item(
        lead, event, f"n{i}", WHEN + timedelta(minutes=i), {"mx_Custom_1": f"k{i}"}))
        for i in range(7)}
    await client.activities.post(activity_item(lead, other, "elsewhere", WHEN, {}))
    rows = await client.activities.of_lead(lead, event, page_size=3)
    assert {row["Id"] for row in rows} == posted and len(rows) == 7
    assert client.calls["lead_activities"] == 3
    assert len(await client.activities.of_lead(lead)) == 8


async def test_opportunities_of_lead_walks_every_page(sim, client):
    lead = sim.add_lead(FirstName="Asha", Phone="+91-9876543210")
    for i in range(5):
        sim.add_opportunity(lead, name=f"Deal {i}")
    rows = await client.opportunities.of_lead(lead, 12000, page_size=2)
    assert len(rows) == 5
    assert client.calls["opportunities_of_lead"] == 3


async def test_opportunity_activities_walks_every_page(sim, client):
    lead = sim.add_lead(FirstName="Asha", Phone="+91-9876543210")
    opportunity = sim.add_opportunity(lead, name="Deal")
    event = await event_code(client)
    for i in range(5):
        await client.activities.post(activity_item(lead, event, f"n{i}", WHEN,
                                                   {"mx_Custom_1": f"k{i}"},
                                                   opportunity_id=opportunity))
    rows = await client.opportunities.activities(opportunity, event, page_size=2)
    assert len(rows) == 5
    assert client.calls["opportunity_activities"] == 3
    assert len(sim.activities(opportunity_id=opportunity)) == 5


async def test_a_read_whose_answer_trickles_in_past_the_timeout_is_cut_off_and_noted():
    """A host that answers headers, then a byte every 0.3 s (each read well inside httpx's
    per-read timeout) held a read for as long as it trickled: a sink start on such a host
    never ended. The whole answer now has `timeout`; the call fails as a transient timeout
    and the client notes the trouble (what a starting sink shows on the status page)."""
    from aiohttp import web

    async def trickle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        for _ in range(200):  # a minute
            await response.write(b" ")
            await asyncio.sleep(0.3)
        await response.write(b"{}")
        return response

    app = web.Application()
    app.router.add_get("/v2/Authentication.svc/UserByAccessKey.Get", trickle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    client = LeadSquaredClient(f"http://127.0.0.1:{port}", ACCESS, SECRET, timeout=1.0,
                               max_retries=1, backoff_base=0.01)
    try:
        with pytest.raises(LeadSquaredError) as caught:
            await asyncio.wait_for(client.users.by_access_key(), 15)
        assert caught.value.kind == "transient"
        assert "no whole answer within 1s" in str(caught.value)
        assert client.trouble.startswith("user_by_access_key failed 2 time(s)")
        assert client.host == f"http://127.0.0.1:{port}"
    finally:
        await client.close()
        await runner.cleanup()
