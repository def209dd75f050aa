"""`bridge demo`: the LeadSquared simulator, the bridge, and a stream of signed webhooks."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import signal
import tempfile
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

import httpx

from plugins.leadsquared.activity_type import FIELDS
from plugins.leadsquared.simulator import Simulator, add_demo_data

PHONE_ID = "106540352242922"
BUSINESS = "15550783881"
ACCESS, SECRET = "demo-access-key", "demo-secret-key"
# The sales team: two reps, each with a WhatsApp number of the business account
# (phone_number_id, display number, first name, last name, LeadSquared login).
REPS = [(PHONE_ID, BUSINESS, "Priya", "Rao", "priya.rao@demo.invalid"),
        ("106540352242923", "15550783882", "Arjun", "Mehta", "arjun.mehta@demo.invalid")]

# (delay s, customer wa_id, name, kind, content, direction, rep): a morning of sales chats;
# Asha writes to Priya's number, Ravi and Meera to Arjun's.
SCRIPT: list[tuple[float, str, str, str, Any, str, int]] = [
    (0.0, "919876543210", "Asha Patil", "text", "Hi! Is the annual plan still 20% off?", "in",
     0),
    (0.3, "919876543210", "Asha Patil", "image", "my current bill", "in", 0),  # a real photo
    (0.6, "919876543210", "Asha Patil", "text", "Yes, until Friday. Want the link?", "out", 0),
    (0.9, "919123456780", "Ravi Kumar", "text", "Can you send the quote for 12 seats?", "in",
     1),
    (1.2, "919123456780", "Ravi Kumar", "document", "quote-12-seats.pdf", "out", 1),
    (1.5, "919123456780", "Ravi Kumar", "button", "Looks good", "in", 1),
    (1.8, "919988776655", "Meera Shah", "location", "Koramangala office", "in", 1),
    (2.1, "14155550100", "Sam Lee", "text", "Do you ship to San Francisco?", "in", 0),
    (2.4, "919876543210", "Asha Patil", "text", "Please send it, thanks!", "in", 0),
]


def _photo() -> bytes:
    """A small PNG (a warm gradient) made here, so the demo needs no image file."""
    import struct
    import zlib

    width, height = 96, 64
    rows = b"".join(b"\x00" + bytes(c for x in range(width)
                                    for c in (255, 120 + x, 60 + 2 * y)) for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0,
                                                                0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


PDF = (b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj 2 0 obj<</Type/Pages/Kids[]"
       b"/Count 0>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n")
HISTORY_MESSAGES = 11  # the stand-in's rep history (whatsapp.history_script): 9, 2 media follow-ups
# The files the Graph stand-in serves, by script line: (media id, MIME type, bytes, the
# rep whose number it belongs to).
FILES: dict[str, tuple[str, str, bytes, int]] = {
    "image": ("media-demo-photo", "image/png", _photo(), 0),
    "document": ("media-demo-quote", "application/pdf", PDF, 1),
}


def _message(n: int, wa_id: str, kind: str, content: Any, ts: int) -> dict[str, Any]:
    """One Cloud API message object of `kind`."""
    base: dict[str, Any] = {"from": wa_id, "id": f"wamid.demo-{n}-{secrets.token_hex(6)}",
                            "timestamp": str(ts), "type": kind}
    if kind == "text":
        base["text"] = {"body": content}
    elif kind == "image":
        media_id, mime, data, _ = FILES["image"]
        base["image"] = {"id": media_id, "mime_type": mime, "caption": content,
                         "sha256": hashlib.sha256(data).hexdigest()}
    elif kind == "document":
        media_id, mime, data, _ = FILES["document"]
        base["document"] = {"id": media_id, "mime_type": mime, "filename": content,
                            "sha256": hashlib.sha256(data).hexdigest()}
    elif kind == "button":
        base["button"] = {"text": content, "payload": content.upper().replace(" ", "_")}
    elif kind == "location":
        base["location"] = {"latitude": 12.9352, "longitude": 77.6245, "name": content}
    return base


def webhook(n: int, wa_id: str, name: str, kind: str, content: Any, direction: str,
            ts: int, rep: int = 0) -> dict[str, Any]:
    """A signed-ready notification: an inbound message, or an echo of one the team sent,
    on the number of REPS[rep]."""
    message = _message(n, wa_id, kind, content, ts)
    phone_id, business = REPS[rep][:2]
    meta = {"display_phone_number": business, "phone_number_id": phone_id}
    if direction == "out":
        message.update({"from": business, "to": wa_id})
        value = {"messaging_product": "whatsapp", "metadata": meta, "message_echoes": [message]}
        field = "smb_message_echoes"
    else:
        value = {"messaging_product": "whatsapp", "metadata": meta, "messages": [message],
                 "contacts": [{"profile": {"name": name}, "wa_id": wa_id}]}
        field = "messages"
    return {"object": "whatsapp_business_account",
            "entry": [{"id": "102290129340398", "changes": [{"field": field, "value": value}]}]}


def write_config(workdir: Path, port: int, sim_url: str, token: str, interval: str,
                 graph_url: str = "", graph_token: str = "") -> Path:
    """The demo's config file, reusable with `bridge status -c` while the demo runs."""
    config = {
        "server": {"host": "127.0.0.1", "port": port, "admin_token": token},
        "buffer": {"path": str(workdir / "demo.db")},
        "plugins": {
            "whatsapp": {"verify_token": secrets.token_urlsafe(16),
                         "app_secret": secrets.token_urlsafe(24),
                         **({"access_token": graph_token, "graph_url": graph_url}
                            if graph_url else {})},
            "leadsquared": {"host": sim_url, "access_key": ACCESS, "secret_key": SECRET,
                            "sync_interval": interval, "activity_type": "WhatsApp Chats",
                            "create_leads": False, "rate_limit": "25/5s",
                            "owners": {f"+{business}" if n == 0 else phone_id: email
                                       for n, (phone_id, business, _, _, email)
                                       in enumerate(REPS)}},
        },
    }
    path = workdir / "config.yaml"
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    path.chmod(0o600)
    return path


def _signature(body: bytes, app_secret: str) -> str:
    """X-Hub-Signature-256 as Meta computes it (HMAC-SHA256 of the body, hex)."""
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


async def send_stream(url: str, app_secret: str, say: Callable[[str], None],
                      pace: float = 1.0) -> int:
    """Post SCRIPT as signed webhooks; return how many the bridge stored (200)."""
    stored, start = 0, time.monotonic()
    async with httpx.AsyncClient(timeout=10) as client:
        for n, (delay, wa_id, name, kind, content, direction, rep) in enumerate(SCRIPT):
            await asyncio.sleep(max(0.0, start + delay * pace - time.monotonic()))
            body = json.dumps(webhook(n, wa_id, name, kind, content, direction,
                                      int(time.time()), rep)).encode()
            response = await client.post(url, content=body, headers={
                "Content-Type": "application/json",
                "X-Hub-Signature-256": _signature(body, app_secret)})
            stored += response.status_code == 200
            who = REPS[rep][2]
            arrow = f"→ {who}" if direction == "in" else f"← {who}"
            say(f"  webhook {n + 1}/{len(SCRIPT)}: {kind:<8} {arrow} +{wa_id} "
                f"({response.status_code})")
    return stored


class Demo:
    """Everything `bridge demo` starts, stopped together."""

    def __init__(self, port: int, token: str | None, interval: str,
                 workdir: Path | None, say: Callable[[str], None]) -> None:
        self.port, self.interval, self.say = port, interval, say
        self.token = token or secrets.token_urlsafe(12)
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="chatbridge-demo-"))
        self.sim = Simulator(ACCESS, SECRET)
        self._runner: Any = None
        self._graph: Any = None
        self.graph_url = ""
        self.graph_token = ""

    async def start(self) -> Any:
        """Simulator with demo leads, then the bridge on its config; returns the config."""
        from aiohttp import web

        from bridge import BRIDGE, bound_socket, create_app, get_plugin_manager, load_config

        listening = bound_socket("127.0.0.1", self.port, "choose another with `bridge demo "
                                 "--port N`")  # a busy port: one line, before anything starts
        add_demo_data(self.sim)
        for _, business, first, last, email in REPS:  # the reps, with their numbers
            self.sim.add_user(first, email, last=last, mobile=f"+{business}")
        await self.sim.start("127.0.0.1", 0)
        self.workdir.mkdir(parents=True, exist_ok=True)
        graph_token = self.graph_token = secrets.token_urlsafe(16)
        await self._start_graph(graph_token)
        path = write_config(self.workdir, self.port, self.sim.base_url, self.token,
                            self.interval, self.graph_url, graph_token)
        self.config_path = path
        pm = get_plugin_manager()
        config = load_config(path, pm)
        app = create_app(config, pm)
        for sink in app[BRIDGE].sinks:  # posts to the demo's simulator: the page says so
            sink.simulated = "LeadSquared"
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.SockSite(self._runner, listening).start()
        return config

    async def _start_graph(self, token: str) -> None:
        """The Graph API stand-in, in-process, serving the script's photo and PDF."""
        from aiohttp import web

        from plugins.whatsapp.graph_simulator import STATE, StoredMedia, create_graph_app

        folder = self.workdir / "graph"
        folder.mkdir(exist_ok=True)
        app = create_graph_app(token, folder)
        for media_id, mime, data, rep in FILES.values():
            (folder / media_id).write_bytes(data)
            app[STATE].media[media_id] = StoredMedia(media_id, folder / media_id, mime,
                                                     hashlib.sha256(data).hexdigest(),
                                                     len(data), REPS[rep][0])
        self._graph = web.AppRunner(app, access_log=None)
        await self._graph.setup()
        site = web.TCPSite(self._graph, "127.0.0.1", 0)
        await site.start()
        self.graph_url = f"http://127.0.0.1:{self._graph.addresses[0][1]}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._graph is not None:
            await self._graph.cleanup()
        await self.sim.stop()

    async def drained(self, stop: asyncio.Event) -> None:
        """Until every sink's backlog is only held chats (the unknown number)."""
        from bridge import BRIDGE

        buffer = self._runner.app[BRIDGE].buffer
        while not stop.is_set():
            if buffer is not None and all(s["backlog"] == s["held"]
                                          for s in await buffer.sinks()):
                return
            await asyncio.sleep(0.2)

    def landed(self) -> list[str]:
        """One line per activity in the simulator: lead, target, messages."""
        lines = []
        for activity in self.sim.activities():
            lead = self.sim.store.lead(activity["RelatedProspectId"]) or {}
            target = "opportunity" if activity["RelatedOpportunityId"] else "lead"
            count = next((f["Value"] for f in activity["Fields"]
                          if f["SchemaName"] == FIELDS["count"]), "?")
            files = [a["AttachmentName"] for a in self.sim.attachments(activity["Id"])]
            attached = f", attached: {', '.join(files)}" if files else ""
            plural = "" if str(count) == "1" else "s"
            lines.append(f"  {lead.get('FirstName', '?')} {lead.get('LastName', '')}".rstrip()
                         + f": activity on the {target} ({count} message{plural}{attached}) "
                         f"{self.sim.base_url}/LeadManagement/LeadDetails?LeadID="
                         f"{activity['RelatedProspectId']} · owned by {activity['Owner']}")
        return lines


async def run_demo(port: int, token: str | None, interval: str, workdir: Path | None,
                   say: Callable[[str], None]) -> None:
    """Start everything, send the stream, report what landed, run until Ctrl-C/SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    demo = Demo(port, token, interval, workdir, say)
    try:
        config = await demo.start()
        base = f"http://127.0.0.1:{port}"
        section = config.plugin("whatsapp")
        say(f"LeadSquared simulator: {demo.sim.base_url} (3 demo leads, 2 opportunities)")
        for _, business, first, last, email in REPS:
            say(f"Rep {first} {last} <{email}> owns the chats of WhatsApp number +{business}")
        say(f"Graph API stand-in: {demo.graph_url} (serves Asha's photo and Ravi's quote, "
            "and a rep's phone history)")
        say(f"Bridge: {base} · config {demo.config_path}")
        say(f"Status page: {base}/  (admin token: {demo.token})")
        say("Sending a morning of WhatsApp chats as signed webhooks:")
        await send_stream(base + section.path, section.secrets[0], say)
        await show_coexistence(demo, base + section.path, section.secrets[0], say)
        await _report_when_synced(demo, stop, say)
        say("Running until Ctrl-C.")
        await stop.wait()
    finally:
        say("Stopping the demo...")
        await demo.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def show_coexistence(demo: Demo, webhook_url: str, app_secret: str,
                           say: Callable[[str], None], wait: float = 30.0) -> None:
    """A rep's number joins with coexistence: the demo asks the Graph stand-in for its
    contacts and chat history (as `bridge whatsapp coexistence` does), the stand-in posts
    the history webhooks to the bridge, and each step of their progress is shown."""
    from bridge import BRIDGE, SyncNote

    say("A rep's phone joins (coexistence): asking WhatsApp for its contacts and chat "
        "history (`bridge whatsapp coexistence --phone-number-id " + PHONE_ID + "`)...")
    buffer = demo._runner.app[BRIDGE].buffer
    async with httpx.AsyncClient(timeout=10) as client:
        await client.post(f"{demo.graph_url}/_sim/webhook",
                          json={"url": webhook_url, "app_secret": app_secret})
        for kind, sync_type in (("contacts", "smb_app_state_sync"), ("history", "history")):
            response = await client.post(
                f"{demo.graph_url}/v25.0/{PHONE_ID}/smb_app_data",
                json={"messaging_product": "whatsapp", "sync_type": sync_type},
                headers={"Authorization": f"Bearer {demo.graph_token}"})
            if response.status_code != 200:
                say(f"  the {kind} request was refused: {response.text}")
                return
            await buffer.note_source_sync("whatsapp", PHONE_ID, kind, SyncNote(
                state="requested", requested_at=time.time(),
                request_id=response.json().get("request_id")))
    say("  the rep accepted sharing on the phone; history arriving:")
    deadline, seen = time.monotonic() + wait, ""
    while time.monotonic() < deadline:
        history = next((s for s in await buffer.source_syncs("whatsapp")
                        if s["kind"] == "history"), None)
        line = (f"  history: {history['state']}, {history['progress'] or 0} %, "
                f"{history['chunks']} chunks, {history['messages']} new messages"
                if history else "")
        if line and line != seen:
            say(line)
            seen = line
        if history and history["state"] == "done" and history["messages"] >= HISTORY_MESSAGES:
            return
        await asyncio.sleep(0.2)


async def _report_when_synced(demo: Demo, stop: asyncio.Event,
                              say: Callable[[str], None]) -> None:
    """Wait for the first activities, then list them with links to the lead pages."""
    say(f"Waiting for the sync (interval {demo.interval})...")
    with suppress(TimeoutError):
        await asyncio.wait_for(_until(lambda: len(demo.sim.activities()) > 0, stop), 600)
    with suppress(TimeoutError):  # the photo follows its text (fetched, uploaded, attached)
        await asyncio.wait_for(_until(lambda: bool(demo.sim.store.attachments), stop), 30)
    with suppress(TimeoutError):  # and the rest of the script lands (held chats aside)
        await asyncio.wait_for(demo.drained(stop), 30)
    lines = demo.landed()
    say(f"Activities landed in the simulator: {len(lines)}")
    for line in lines:
        say(line)
    say("The unknown number (+14155550100) is held as 'no lead', and so are the rep's "
        "history chats with people who have no lead yet: see the status page.")


async def _until(check: Callable[[], bool], stop: asyncio.Event) -> None:
    while not check() and not stop.is_set():
        await asyncio.sleep(0.2)
