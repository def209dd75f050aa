"""A NUL character (`\\u0000`, valid JSON) in a webhook's names, usernames or ids: PostgreSQL
cannot store it in text, so the whole notification answered 503 and Meta retried it for
days, the other messages with it never stored. The body reader makes it U+FFFD, as it does
lone surrogates; both backends, through a real bridge."""

from __future__ import annotations

import json

import httpx
import pytest

from plugins.whatsapp.body import load_body
from plugins.whatsapp.signature import sign
from tests import oneshot
from tests.backends import BACKENDS
from tests.helpers import free_port
from tests.processes import BridgeProcess, buffer_section, buffered_ids
from tests.whatsapp import payloads as p

SECRET = "nul-secret"


def post(bridge: BridgeProcess, field: str, value: dict) -> httpx.Response:
    body = json.dumps(p.envelope({"field": field, "value": value})).encode()
    return oneshot.post(f"{bridge.url}/webhooks/whatsapp", content=body, timeout=10, headers={
        "Content-Type": "application/json", "X-Hub-Signature-256": sign(body, SECRET)})


@pytest.mark.parametrize("backend", BACKENDS)
def test_nul_in_names_usernames_and_ids_is_stored_with_the_rest(tmp_path, backend):
    with buffer_section(backend, tmp_path) as section:
        port = free_port()
        config = {"server": {"port": port}, "buffer": section,
                  "plugins": {"whatsapp": {"verify_token": "v", "app_secret": SECRET}}}
        (tmp_path / "config.yaml").write_text(json.dumps(config))
        bridge = BridgeProcess(tmp_path / "config.yaml", port).start()
        try:
            contacts = [{"wa_id": "919812345670", "user_id": "IN.1\x00x",
                         "profile": {"name": "Asha\x00", "username": "@asha\x00"}},
                        {"user_id": "IN.22", "profile": {"username": "@\x00"}}]
            live = [p.text_message("nul-1", "919812345670", "hi"),
                    {"id": "nul-2", "from_user_id": "IN.22", "timestamp": p.TS,
                     "type": "text", "text": {"body": "x\x00y"}}]
            assert post(bridge, "messages", p.value(messages=live, contacts=contacts)) \
                .status_code == 200
            history = p.value(contacts=[{"user_id": "IN.33", "profile": {"username": "@q\x00"}}],
                              history=[{"metadata": {"phase": 0, "chunk_order": 1},
                                        "threads": [{"id": "", "messages": [
                                            {"id": "nul-3\x00", "timestamp": p.TS,
                                             "type": "text", "text": {"body": "z"}}]}]}])
            assert post(bridge, "history", history).status_code == 200
            assert {"nul-1", "nul-2", "nul-3\ufffd"} <= buffered_ids(section)
        finally:
            bridge.stop()


def test_the_body_reader_makes_nul_a_replacement_character():
    assert load_body(b'{"a\\u0000": ["x\\u0000y", {"k": "\\u0000"}], "n": 1}') == {
        "a\ufffd": ["x\ufffdy", {"k": "\ufffd"}], "n": 1}
    assert load_body(b'{"a": "\\\\u0000"}') == {"a": "\\u0000"}  # an escaped backslash
