"""Every string a valid webhook can carry is stored and delivered, on both engines.

U+0000 in a text, a profile name and a file name (valid JSON; PostgreSQL's text and jsonb
refuse the character itself), a lone surrogate escaped in JSON (no UTF-8 encoder takes
one), a 100,000-character body and text in every script go through a real bridge process
to the LeadSquared simulator. Each webhook gets 200; the buffer hands sinks each string as
it came from the source (the WhatsApp plugin reads a lone surrogate as U+FFFD, RFC 8259
§8.2, and U+0000 too: PostgreSQL's text cannot hold it in an id or a username, which made
a whole notification answer 503; the buffer itself keeps both as they are:
tests/core/test_parity.py); the CRM gets each
message in the transcript's safe form (controls fold to a space, a long line goes out in
consecutive parts)."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from bridge.buffer import Buffer
from plugins.whatsapp.signature import sign
from tests import oneshot
from tests.backends import BACKENDS
from tests.helpers import free_port
from tests.processes import BridgeProcess, SimulatorProcess, buffer_section, eventually
from tests.whatsapp import payloads as p

SECRET, TOKEN = "odd-app-secret", "odd-verify"
ASHA = "919876543210"
NUL_TEXT = "before\x00after"
NUL_NAME = "Asha\x00Rao"
NUL_FILE = "in\x00voice.pdf"
LONE = "half \ud83d of a pair, and \udc00 alone"
SCRIPTS = ("Latin é ñ ß · Ελληνικά · Кириллица · Հայերեն · עברית · العربية · ދިވެހި · "
           "हिन्दी · বাংলা · ਪੰਜਾਬੀ · ગુજરાતી · ଓଡ଼ିଆ · தமிழ் · తెలుగు · ಕನ್ನಡ · മലയാളം · "
           "සිංහල · ไทย · ລາວ · བོད་ · မြန်မာ · ខ្មែរ · ქართული · አማርኛ · ᏣᎳᎩ · 中文 · 日本語 · "
           "한국어 · 𠀀𪚥 · 👩🏽‍💻🏳️‍🌈 · e\u0301 · ﷺ · ᠮᠣᠩᠭᠣᠯ")
LONG = "".join(f"<{n:05d}>" for n in range(14_286))[:100_000]


@pytest.fixture(params=BACKENDS)
def section(request, tmp_path):
    with buffer_section(request.param, tmp_path) as found:
        yield found


def _post(bridge: BridgeProcess, changes: list) -> int:
    body = json.dumps(p.envelope(*changes)).encode()  # ASCII: "\u0000", "\ud83d" escapes
    response = oneshot.post(f"{bridge.url}/webhooks/whatsapp", content=body, timeout=30, headers={
        "Content-Type": "application/json", "X-Hub-Signature-256": sign(body, SECRET)})
    return response.status_code


def test_every_string_a_webhook_carries_is_stored_and_reaches_the_crm(section, tmp_path):
    simulator = SimulatorProcess()
    port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({
        "server": {"port": port}, "buffer": section,
        "plugins": {"whatsapp": {"verify_token": TOKEN, "app_secret": SECRET},
                    "leadsquared": {"host": simulator.url, "access_key": "e2e-access",
                                    "secret_key": "e2e-secret", "sync_interval": "1s",
                                    "retry_base": 0.2, "retry_cap": 1}}}))
    bridge = BridgeProcess(config, port)
    try:
        lead = simulator.add_lead(FirstName="Asha", Mobile="+91-9876543210")
        bridge.start()
        eventually(lambda: bridge.status()["sinks"][0]["last_sync_at"])
        now = int(time.time())
        sent = {"wamid.nul": NUL_TEXT, "wamid.lone": LONE, "wamid.scripts": SCRIPTS,
                "wamid.long": LONG}
        answers = [_post(bridge, [p.message_change(
            [p.text_message(mid, ASHA, text, ts=now - 60 + n)],
            contacts=[p.contact(ASHA, NUL_NAME)])]) for n, (mid, text) in enumerate(sent.items())]
        answers.append(_post(bridge, [p.message_change(
            [p.document_message("wamid.file", ASHA, filename=NUL_FILE, caption=SCRIPTS)
             | {"timestamp": str(now - 10)}], contacts=[p.contact(ASHA, NUL_NAME)])]))
        assert answers == [200] * 5
        bridge.sync_now()
        notes = eventually(lambda: _all_posted(simulator, lead), timeout=60)
        bridge.stop()
    finally:
        bridge.stop()
        simulator.stop()
    assert "before\ufffdafter" in notes  # U+0000 read as U+FFFD by the WhatsApp plugin
    assert "half \ufffd of a pair, and \ufffd alone" in notes
    assert SCRIPTS in notes
    assert "in\ufffdvoice.pdf" in notes
    tokens = [f"<{n:05d}>" for n in range(14_285)]  # the last one is cut at 100,000
    # a long line goes out in consecutive parts: at most one token per cut is split
    assert sum(t in notes for t in tokens) >= len(tokens) - notes.count("WhatsApp chat with")
    stored = asyncio.run(_stored(section))
    parsed = {**sent, "wamid.lone": "half \ufffd of a pair, and \ufffd alone",
              "wamid.nul": "before\ufffdafter"}
    assert {m.provider_id: m.text for m in stored if m.kind == "text"} == parsed
    (document,) = [m for m in stored if m.kind == "document"]
    assert (document.media.filename, document.text) == ("in\ufffdvoice.pdf", SCRIPTS)
    assert {m.contact_name for m in stored} == {"Asha\ufffdRao"}


def _all_posted(simulator: SimulatorProcess, lead: str) -> str | None:
    notes = "\n".join(a["ActivityNote"] for a in simulator.activities(lead))
    done = all(marker in notes for marker in ("before\ufffdafter", "of a pair", "<14284>",
                                              "in\ufffdvoice.pdf", "हिन्दी"))
    return notes if done else None


async def _stored(section: dict) -> list:
    buffer = await Buffer.open(section.get("url") or section["path"])
    try:
        found = await buffer.messages()
        assert {c["contact_name"] for c in await buffer.conversations()} == {"Asha\ufffdRao"}
        return found
    finally:
        await buffer.close()
