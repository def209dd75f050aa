"""`bridge whatsapp ...`: check the WhatsApp setup; import chat exports into the buffer."""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from typing import Any

import click

from bridge.cli import CONFIG_OPTION, friendly, load
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
    """WhatsApp source: test your webhook setup, import exported chats."""


@whatsapp.command("send-test")
@CONFIG_OPTION
@click.option("--url", default=None, help="webhook URL (default: from the config)")
@click.option("--from", "customer", default="919876543210", show_default=True,
              help="customer number, digits only as WhatsApp sends it")
@click.option("--text", default="Hello from bridge whatsapp send-test", show_default=True)
@friendly
def send_test(config_path: str, url: str | None, customer: str, text: str) -> None:
    """Post a correctly signed sample webhook to a running bridge."""
    import httpx

    config, _ = load(config_path)
    section = config.plugin("whatsapp")
    if section is None:
        raise click.ClickException("plugins.whatsapp is not in the config (add it first)")
    if url is None:
        host = config.server.host if config.server.host not in ("0.0.0.0", "::") else "127.0.0.1"
        url = f"http://{host}:{config.server.port}{section.path}"
    phone_id = (section.phone_number_ids or ["106540352242922"])[0]
    body = json.dumps(sample_payload(phone_id, customer, text)).encode()
    headers = {"Content-Type": "application/json",
               "X-Hub-Signature-256": sign(body, section.secrets[0])}
    try:
        response = httpx.post(url, content=body, headers=headers, timeout=10)
    except httpx.HTTPError as exc:
        raise click.ClickException(f"no bridge answered at {url} ({exc})") from None
    if response.status_code != 200:
        raise click.ClickException(f"{url} answered {response.status_code}: {response.text}")
    click.echo(f"{url} stored the test message (200). Check `bridge status`.")


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
@click.option("--dry-run", is_flag=True, help="read and report only; store nothing")
@CONFIG_OPTION
@friendly
def import_chat(file: str, phone: str, me: str | None, tz: str | None,
                date_order: str | None, dry_run: bool, config_path: str) -> None:
    """Store a chat from WhatsApp's "Export chat" (.txt or .zip) as history."""
    from plugins.whatsapp.export import ORDER_LABEL, parse_export, same_person, to_messages
    from plugins.whatsapp.importer import read_export, resolve_zone, store
    from plugins.whatsapp.parse import normalise_number

    config, _ = load(config_path)
    section = config.plugin("whatsapp")
    conversation = normalise_number(phone, getattr(section, "default_region", None))
    if conversation is None:
        raise click.ClickException(f"--phone {phone!r} is not a phone number (write it with "
                                   "its country code, like +919876543210)")
    zone, zone_label = resolve_zone(tz, config.server.timezone)
    text, name = read_export(file)
    export = parse_export(text, date_order)
    if not export.records:
        raise click.ClickException(
            f"{name}: no WhatsApp messages found in {export.lines} lines (chat exports have "
            "lines like `31/12/23, 23:59 - Name: text` or `[31/12/23, 23:59:59] Name: text`)")
    senders = export.senders()
    if me is not None and not any(same_person(s, me) for s in senders):
        raise click.ClickException(f"--me {me!r} sent nothing in this export (senders: "
                                   f"{_names(senders)}); check the spelling")

    click.echo(f"{name}: {export.style} export, {export.lines} lines, conversation "
               f"{conversation}")
    click.echo(f"date order: {ORDER_LABEL[export.order.order]} ({export.order.reason})")
    if export.order.overruled:
        click.echo(f"warning: {export.order.overruled}", err=True)
    click.echo(f"time zone: {zone_label}")
    _describe_direction(me, senders)
    _report_problems(export.problems)

    messages = to_messages(export.records, conversation, me=me, zone=zone)
    if dry_run:
        click.echo(f"messages read: {len(messages)}, lines skipped: {export.skipped_lines} "
                   "(dry run: nothing stored)")
        return
    stored = _store(config, messages, store)
    click.echo(f"messages read: {len(messages)}, stored new: {stored.new}, already present: "
               f"{stored.present}, lines skipped: {export.skipped_lines}")
    if stored.new and stored.sinks:
        click.echo(f"{', '.join(stored.sinks)} get the new messages as history at the next "
                   "sync (or run `bridge sync-now`)")
    elif stored.new:
        click.echo("note: no sink is installed in this buffer yet; a sink installed later only "
                   "backfills its backfill_days, so start the bridge first, then run "
                   "`bridge backfill --sink NAME --days N` to reach back this far")


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


def _report_problems(problems: list[Any]) -> None:
    for problem in problems[:MAX_REPORTED]:
        click.echo(str(problem), err=True)
    if len(problems) > MAX_REPORTED:
        click.echo(f"... and {len(problems) - MAX_REPORTED} more (all counted in lines skipped)",
                   err=True)


def _store(config: Any, messages: list[Any], store: Any) -> Any:
    """Write in chunks, with a progress bar for large imports on a terminal."""
    path, synchronous = config.buffer.path, config.buffer.synchronous
    if not (sys.stdout.isatty() and len(messages) >= PROGRESS_FROM):
        return asyncio.run(store(path, messages, synchronous=synchronous))
    with click.progressbar(length=len(messages), label="storing") as bar:
        return asyncio.run(store(path, messages, synchronous=synchronous, progress=bar.update))
