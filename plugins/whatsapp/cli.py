"""`bridge whatsapp ...`: check the WhatsApp setup; import chat exports into the buffer."""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from collections.abc import Iterable
from typing import Any

import click

from bridge import CONFIG_OPTION, friendly, load
from plugins.whatsapp.signature import sign


def sample_payload(phone_number_id: str, customer: str, text: str) -> dict:
    """A realistic `messages` notification with one inbound text message."""
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": "0", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550783881",
                         "phone_number_id": phone_number_id},
            "contacts": [{"profile": {"name": "Chatbridge test"}, "wa_id": customer}],
            "messages": [{"from": customer, "id": f"wamid.test-{uuid.uuid4().hex}",
                          "timestamp": str(int(time.time())), "type": "text",
                          "text": {"body": text}}],
        }}]}],
    }


@click.group("whatsapp")
def whatsapp() -> None:
    """WhatsApp source: test your webhook setup, import exported chats, start a rep's
    coexistence history."""


@whatsapp.command("graph-simulator")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8091, show_default=True, type=int)
@click.option("--token", default="sim-access-token", show_default=True,
              help="the access token it accepts (plugins.whatsapp.access_token)")
@click.option("--dir", "directory", default=None, type=click.Path(file_okay=False),
              help="where served media are kept (default: a new temp dir)")
def graph_simulator(host: str, port: int, token: str, directory: str | None) -> None:
    """Serve the Graph API media endpoints (lookup, expiring download) until Ctrl-C."""
    import contextlib

    from plugins.whatsapp.graph_simulator import serve

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(host, port, token, directory))


@whatsapp.command("send-test")
@CONFIG_OPTION
@click.option("--url", default=None,
              help="webhook URL (default: the running bridge's, found from the config)")
@click.option("--from", "customer", default="919876543210", show_default=True,
              help="customer number, digits only as WhatsApp sends it")
@click.option("--text", default="Hello from bridge whatsapp send-test", show_default=True)
@click.option("--wait", default=30.0, show_default=True, type=click.FloatRange(0, 600),
              help="seconds to wait for the sync's outcome (0: do not wait)")
@friendly
def send_test(config_path: str, url: str | None, customer: str, text: str,
              wait: float) -> None:
    """Post a correctly signed sample webhook to the running bridge, ask it to sync now,
    and say what each sink made of it."""
    import httpx

    from bridge import candidates

    config, _ = load(config_path)
    section = config.plugin("whatsapp")
    if section is None:
        raise click.ClickException("plugins.whatsapp is not in the config (add it first)")
    bases = [_origin(url)] if url else candidates(config)
    phone_id = (section.phone_number_ids or ["106540352242922"])[0]
    body = json.dumps(sample_payload(phone_id, customer, text)).encode()
    headers = {"Content-Type": "application/json",
               "X-Hub-Signature-256": sign(body, section.secrets[0])}
    response = None
    for base in bases:
        target = url or base + section.path
        try:
            response = httpx.post(target, content=body, headers=headers, timeout=10)
            break
        except httpx.ConnectError:
            continue
        except httpx.HTTPError as exc:
            raise click.ClickException(f"{target} did not answer ({exc})") from None
    if response is None:
        raise click.ClickException(f"no bridge answered at {' or '.join(bases)}; is it "
                                   "running? (`bridge run -c CONFIG`)")
    if response.status_code != 200:
        raise click.ClickException(f"{target} answered {response.status_code}: {response.text}")
    click.echo(f"{target} stored the test message (200).")
    from plugins.whatsapp.sendtest import follow

    for line in follow(config, base, f"+{customer}", time.time() - 1, wait):
        click.echo(line)


def _origin(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


@whatsapp.command("coexistence")
@click.option("--phone-number-id", "phone_id", default=None,
              help="the business number onboarded with coexistence (its phone_number_id)")
@click.option("--status", "status_only", is_flag=True,
              help="only show how far each number's history and contacts sync got")
@click.option("--wait", default=120.0, show_default=True, type=click.FloatRange(0, 86400),
              help="seconds to follow the history as it arrives (0: do not wait)")
@CONFIG_OPTION
@friendly
def coexistence(phone_id: str | None, status_only: bool, wait: float,
                config_path: str) -> None:
    """Start a coexistence number's history and contacts sync (once, within 24 hours of
    onboarding) and report the history as it arrives."""
    config, _ = load(config_path)
    section = config.plugin("whatsapp")
    if section is None:
        raise click.ClickException("plugins.whatsapp is not in the config (add it first)")
    if not status_only and not phone_id:
        raise click.ClickException("--phone-number-id is required (the number's id in WhatsApp"
                                   " Manager › Phone numbers), or pass --status")
    if not status_only and section.phone_number_ids and phone_id not in \
            section.phone_number_ids:
        raise click.ClickException(
            f"plugins.whatsapp.phone_number_ids does not list {phone_id}: its history would "
            "be acknowledged and dropped, and it can be asked for only once; add the number "
            "there (and restart the bridge) first")
    asyncio.run(_coexistence(config, section, phone_id, status_only, wait))


async def _coexistence(config: Any, section: Any, phone_id: str | None, status_only: bool,
                       wait: float) -> None:
    import plugins.whatsapp.coexistence as coex
    from bridge import Buffer, candidates

    buffer = await Buffer.open(config.buffer.target, config.buffer.synchronous)
    try:
        known = await coex.syncs_of(buffer, phone_id)
        if status_only:
            for sync in known:
                click.echo(coex.describe(sync))
            if not known:
                click.echo("no coexistence sync requested yet" + (
                    f" for {phone_id}" if phone_id else "") + " (run `bridge whatsapp "
                    "coexistence --phone-number-id ID`)")
            return
        history = next((s for s in known if s["kind"] == "history"), None)
        if history is not None:
            click.echo(f"The history of {phone_id} was already requested (it can be, once):")
        else:
            for line in coex.EXPLAIN:
                click.echo(line)
            if not await coex.bridge_answers(candidates(config)):
                click.echo("note: no bridge answers for this config yet; start it (`bridge run`)"
                           " to store the history as it comes (Meta retries for 7 days)")
            asked = frozenset(s["kind"] for s in known if s["state"] != "failed")
            await _request(buffer, section, phone_id, coex, asked)
        await _follow(buffer, phone_id, wait, coex)
    finally:
        await buffer.close()


async def _request(buffer: Any, section: Any, phone_id: str, coex: Any,
                   asked: frozenset[str]) -> None:
    try:
        accepted = await coex.request_syncs(section, phone_id, skip=asked)
    except coex.CoexistenceError as exc:
        await coex.note_requested(buffer, phone_id, getattr(exc, "accepted", []))
        raise click.ClickException(str(exc)) from None
    await coex.note_requested(buffer, phone_id, accepted)
    ids = ", ".join(f"{r.kind}: request {r.request_id}" for r in accepted if r.request_id)
    click.echo(f"Requested the {' and '.join(r.kind for r in accepted)} sync of {phone_id}"
               f"{f' ({ids})' if ids else ''}. "
               "Ask the rep to open the WhatsApp Business app and accept sharing the chat "
               "history.")


async def _follow(buffer: Any, phone_id: str, wait: float, coex: Any) -> None:
    if wait <= 0:
        click.echo("Follow it with `bridge whatsapp coexistence --status`.")
        return
    click.echo(f"Following the history for up to {wait:g} s (the bridge must be running "
               "to receive it):")
    last = await coex.follow(buffer, phone_id, wait, click.echo)
    state = last["state"] if last else None
    if state == "declined":
        raise click.ClickException(f"the rep declined sharing the chat history of {phone_id}"
                                   ": no past chats will arrive (new ones still do)")
    if state == "done":
        click.echo(f"History complete: {last['messages']} messages stored; they reach the "
                   "CRM over the next syncs (`bridge status`).")
    else:
        click.echo("Not complete yet: the rep may not have accepted, or history is still "
                   "coming; check with `bridge whatsapp coexistence --status`.")


MAX_REPORTED = 100  # malformed lines listed one by one; the rest are counted
PROGRESS_FROM = 2000  # messages; smaller imports finish before a bar would be useful


@whatsapp.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--phone", required=True,
              help="the customer's number, like +919876543210: the conversation to file it in")
@click.option("--me", default=None,
              help="your name as the export shows it: its messages are stored as sent by "
                   "the business (out); without it every message is stored as inbound")
@click.option("--tz", default=None,
              help="time zone of the export's times, e.g. Asia/Kolkata (default: "
                   "server.timezone, else this computer's)")
@click.option("--date-order", type=click.Choice(["dmy", "mdy", "ymd"]), default=None,
              help="for files whose dates read either way (default: detect, else day first)")
@click.option("--encoding", default=None,
              help="the file's text encoding, e.g. cp1252 or utf-16 (default: detect; "
                   "UTF-8 unless a byte order mark or the bytes say otherwise)")
@click.option("--dry-run", is_flag=True, help="read and report only; store nothing")
@CONFIG_OPTION
@friendly
def import_chat(file: str, phone: str, me: str | None, tz: str | None,
                date_order: str | None, encoding: str | None, dry_run: bool,
                config_path: str) -> None:
    """Store a chat from WhatsApp's "Export chat" (.txt or .zip) as history.

    The file is read as a stream, three times (date order; senders and problems; storing),
    so memory stays flat however long the chat is.
    """
    from plugins.whatsapp.export import ORDER_LABEL, Assembler, Messages, same_person
    from plugins.whatsapp.importer import ExportFile, resolve_zone, store
    from plugins.whatsapp.parse import normalise_number

    config, _ = load(config_path)
    section = config.plugin("whatsapp")
    conversation = normalise_number(phone, getattr(section, "default_region", None))
    if conversation is None:
        raise click.ClickException(f"--phone {phone!r} is not a phone number (write it with "
                                   "its country code, like +919876543210)")
    zone, zone_label = resolve_zone(tz, config.server.timezone)
    source = ExportFile(file, encoding)
    name = source.name
    found, read, census = _first_reads(source, date_order)
    count, senders = census.count, census.senders
    if not count:
        raise click.ClickException(
            f"{name}: no WhatsApp messages found in {found.lines} lines (chat exports have "
            "lines like `31/12/23, 23:59 - Name: text` or `[31/12/23, 23:59:59] Name: text`)")
    if me is not None and not any(same_person(s, me) for s in senders):
        raise click.ClickException(f"--me {me!r} sent nothing in this export (senders: "
                                   f"{_names(senders)}); check the spelling")

    click.echo(f"{name}: {found.style} export, {found.lines} lines, conversation "
               f"{conversation}")
    click.echo(f"encoding: {source.encoding.label}")
    _report_decoding(source)
    click.echo(f"date order: {ORDER_LABEL[found.order.order]} ({found.order.reason})")
    if found.order.overruled:
        click.echo(f"warning: {found.order.overruled}", err=True)
    click.echo(f"time zone: {zone_label}")
    _describe_direction(me, senders)
    _report_problems(read.problems, read.problem_count)

    if dry_run:
        click.echo(f"messages read: {count}, lines skipped: {read.skipped_lines} "
                   "(dry run: nothing stored)")
        return
    maker = Messages(conversation, me=me, zone=zone, senders=len(senders),
                     revisited=census.revisited)
    again = Assembler(found.order.order, read.last, keep=0)
    messages = (maker.message(r) for r in again.records(source.lines()))
    stored = _store(config, messages, count, store)
    click.echo(f"messages read: {count}, stored new: {stored.new}, already present: "
               f"{stored.present}, lines skipped: {read.skipped_lines}")
    if stored.new and stored.sinks:
        click.echo(f"{', '.join(stored.sinks)} get the new messages as history at the next "
                   "sync (or run `bridge sync-now`)")
    elif stored.new:
        click.echo("note: no sink is installed in this buffer yet; a sink installed later only "
                   "backfills its backfill_days, so start the bridge first, then run "
                   "`bridge backfill --sink NAME --days N` to reach back this far")


def _first_reads(source: Any, date_order: str | None) -> tuple[Any, Any, Any]:
    """Read the file for its date order, then for its records (counted, not kept) and the
    lines it skips."""
    from plugins.whatsapp.export import Assembler, Census, latest, scan

    found = scan(source.lines(), date_order)
    read = Assembler(found.order.order, latest(), keep=MAX_REPORTED)
    census = Census()
    for record in read.records(source.lines()):
        census.add(record)
    return found, read, census


def _names(senders: Any) -> str:
    return ", ".join(f"{n} ({c})" for n, c in senders.most_common()) or "none"


def _describe_direction(me: str | None, senders: Any) -> None:
    """Say who counts as the business, so a wrong guess is seen before anything is stored."""
    if me is not None:
        click.echo(f"direction: {me} is the business (out); everyone else is the customer (in)")
    elif len(senders) > 1:
        click.echo(f"direction: no --me given, so every message is stored as inbound (senders: "
                   f"{_names(senders)}). Pass --me NAME to store yours as sent by the business; "
                   "messages already stored keep the direction they were stored with.")
    else:
        click.echo("direction: no --me given, so every message is stored as inbound")


def _report_problems(problems: list[Any], count: int) -> None:
    for problem in problems[:MAX_REPORTED]:
        click.echo(str(problem), err=True)
    if count > MAX_REPORTED:
        click.echo(f"... and {count - MAX_REPORTED} more (all counted in lines skipped)",
                   err=True)


def _report_decoding(source: Any) -> None:
    """Warn when the encoding was a guess, or when some bytes could not be decoded."""
    if source.encoding.warning:
        click.echo(f"warning: {source.encoding.warning}", err=True)
    if source.replaced:
        click.echo(f"warning: {source.replaced} character{'s' * (source.replaced != 1)} could "
                   f"not be read as {source.encoding.codec} and show as \ufffd (the first on "
                   f"line {source.first_replaced}); if the file has another encoding, pass "
                   "--encoding", err=True)


def _store(config: Any, messages: Iterable[Any], count: int, store: Any) -> Any:
    """Write in chunks as the file is read, with a progress bar for large imports on a
    terminal."""
    path, synchronous = config.buffer.target, config.buffer.synchronous
    if not (sys.stdout.isatty() and count >= PROGRESS_FROM):
        return asyncio.run(store(path, messages, synchronous=synchronous, total=count))
    with click.progressbar(length=count, label="storing") as bar:
        return asyncio.run(store(path, messages, synchronous=synchronous, progress=bar.update,
                                 total=count))
