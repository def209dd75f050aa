"""`bridge whatsapp coexistence` against Graph answers the simulator does not give: a 200
whose body is not the documented JSON, server errors and timeouts. A 200 is Graph taking
the request (it can be made once: calling it refused would send the operator to ask again
and be refused); a 5xx or no answer is not a refusal and says to run the command again."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from plugins.whatsapp.coexistence import CoexistenceError, request_syncs
from plugins.whatsapp.config import WhatsAppConfig


def graph_answering(status: int, body: str, content_type: str = "text/html",
                    delay: float = 0.0) -> web.Application:
    async def smb_app_data(request: web.Request) -> web.Response:
        await asyncio.sleep(delay)
        return web.Response(status=status, text=body, content_type=content_type)

    app = web.Application()
    app.router.add_post("/v25.0/{phone}/smb_app_data", smb_app_data)
    return app


def config(url: str) -> WhatsAppConfig:
    return WhatsAppConfig(verify_token="v", app_secret="s", access_token="t", graph_url=url)


@pytest.mark.parametrize("body,content_type", [
    ("<html>OK</html>", "text/html"), ("[1, 2]", "application/json"),
    ('{"success": true}', "application/json")])
async def test_a_200_without_the_documented_body_is_taken_as_accepted(serve, body,
                                                                      content_type):
    url = await serve(graph_answering(200, body, content_type))
    accepted = await request_syncs(config(url), "123")
    assert [(r.kind, r.request_id) for r in accepted] == [("contacts", None), ("history", None)]


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_a_server_error_is_not_called_a_refusal(serve, status):
    url = await serve(graph_answering(status, "<html>Bad gateway</html>"))
    with pytest.raises(CoexistenceError) as caught:
        await request_syncs(config(url), "123")
    line = str(caught.value)
    assert "refused" not in line and "offboard" not in line
    assert f"HTTP {status}" in line and "run the command again" in line
    assert caught.value.accepted == []


async def test_no_answer_in_time_is_not_called_a_refusal(serve):
    import httpx

    url = await serve(graph_answering(200, "{}", delay=5))
    async with httpx.AsyncClient(timeout=0.3) as client:
        with pytest.raises(CoexistenceError) as caught:
            await request_syncs(config(url), "123", client=client)
    line = str(caught.value)
    assert "refused" not in line and "offboard" not in line
    assert "did not answer" in line and "run the command again" in line


async def test_a_refusal_still_says_it_can_be_asked_once(serve):
    url = await serve(graph_answering(
        400, '{"error": {"message": "Sync already requested", "code": 100}}',
        "application/json"))
    with pytest.raises(CoexistenceError) as caught:
        await request_syncs(config(url), "123")
    line = str(caught.value)
    assert "Graph refused the contacts and history requests for 123" in line
    assert "Sync already requested (code 100, HTTP 400)" in line and "offboard" in line
