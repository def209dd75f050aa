"""`bridge whatsapp import`: chat exports of every style into a real buffer file."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bridge.buffer import Buffer
from bridge.model import Direction
from plugins.whatsapp.export import (
    MARKS,
    Dated,
    detect_order,
    match_header,
    parse_export,
    to_messages,
)
from plugins.whatsapp.importer import ExportError, read_export, store
from tests.backends import query
from tests.helpers import child_path, message

EXPORTS = Path(__file__).parent / "exports"
ROOT = Path(__file__).resolve().parents[2]
PHONE = "+919876543210"


def at(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


async def import_file(db: Path, source: Path, *, me: str | None = None, tz: str = "UTC",
                      order: str | None = None, phone: str = PHONE):
    """The importer's own steps, in process, into the buffer file `db`."""
    text, _ = read_export(source)
    export = parse_export(text, order)
    messages = to_messages(export.records, phone, me=me, zone=ZoneInfo(tz))
    stored = await store(str(db), messages)
    buffer = await Buffer.open(db)
    try:
        kept = await buffer.messages(phone)
    finally:
        await buffer.close()
    return export, stored, kept


def bridge(*args: str, cwd: Path | None = None, env: dict | None = None):
    return subprocess.run([sys.executable, "-m", "bridge", *args], capture_output=True,
                          text=True, timeout=120, cwd=cwd,
                          env={**os.environ, "PYTHONPATH": child_path(ROOT), **(env or {})})


def write_config(tmp_path: Path, db: Path, timezone: str | None = None) -> Path:
    config = tmp_path / "config.yaml"
    server = f"server: {{timezone: {timezone}}}\n" if timezone else ""
    config.write_text(f"{server}buffer: {{path: {db}}}\n")
    return config


# -- the formats ------------------------------------------------------------------------

async def test_android_24h_day_first(tmp_path):
    export, stored, kept = await import_file(tmp_path / "b.db", EXPORTS / "android_24h_dmy.txt",
                                             me="Ravi (Acme Homes)", tz="Asia/Kolkata")
    assert export.style == "Android" and export.order.order == "dmy"
    assert export.order.reason == "detected: line 9 reads 13/01/24 only as d/m/y"
    assert (stored.new, stored.present, len(kept)) == (9, 0, 9)
    assert all(m.source == "whatsapp" and m.history and m.conversation == PHONE for m in kept)
    assert all(m.provider_id.startswith("import:") for m in kept)

    notice, hello, rent, placeholder, photo, edited, deleted, repeat1, repeat2 = kept
    assert notice.kind == "system" and notice.text.startswith("Messages and calls are end-to-end")
    assert notice.sent_at == at(2024, 1, 12, 4, 28)  # 09:58 in Kolkata (UTC+05:30)
    assert (hello.direction, hello.kind, hello.contact_name) == (Direction.IN, "text", "Asha Rao")
    assert rent.direction == Direction.OUT and rent.contact_name is None
    assert rent.text == "Yes! It is.\nRent is 25,000/month\nDeposit: 2 months"
    assert placeholder.kind == "media_placeholder" and placeholder.media is None
    assert photo.kind == "image" and photo.media.filename == "IMG-20240112-WA0003.jpg"
    assert photo.text == photo.media.caption == "Living room"
    assert edited.text == "Can I visit on Sunday?" and edited.extra["edited"] is True
    assert deleted.kind == "revoke" and deleted.text == ""
    # identical repeats in the same minute are two messages, with two stable ids
    assert repeat1.text == repeat2.text and repeat1.provider_id != repeat2.provider_id
    assert repeat1.sent_at == at(2024, 1, 14, 5, 30)


async def test_corrupt_line_is_reported_with_its_number_and_skipped(tmp_path):
    export, _, kept = await import_file(tmp_path / "b.db", EXPORTS / "android_24h_dmy.txt")
    (problem,) = export.problems
    assert str(problem) == ('line 11: "31/02/24, 09:00" is not a valid date and time as d/m/y '
                            "(day is out of range for month); skipped with the 1 line after it")
    assert export.skipped_lines == 2
    assert not any("impossible" in m.text or "continuation" in m.text for m in kept)
    # the line after the skipped ones is read normally
    assert kept[-1].text == "Sunday 11 am works. See you!"


async def test_android_12h_month_first_us(tmp_path):
    export, _, kept = await import_file(tmp_path / "b.db", EXPORTS / "android_12h_mdy.txt",
                                        me="Sam Dealer", tz="America/New_York")
    assert export.order.order == "mdy" and export.problems == []
    notice, hello, voice, quote, video, number, july = kept
    assert notice.kind == "system" and hello.kind == "text"
    assert hello.sent_at == at(2024, 1, 16, 2, 5)  # 9:05 PM (narrow no-break space), EST
    assert voice.direction == Direction.OUT and voice.kind == "audio" and voice.media.voice
    assert voice.media.filename == "PTT-20240115-WA0004.opus"
    assert quote.sent_at == at(2024, 1, 16, 5, 5)  # 12:05 AM is just after midnight
    assert (quote.kind, quote.media.filename, quote.text) == ("document", "Quote.pdf",
                                                             "Quote for the Civic")
    assert video.kind == "video" and video.sent_at == at(2024, 1, 16, 17, 30)  # 12:30 PM
    assert number.kind == "system" and "changed their phone number" in number.text
    assert july.sent_at == at(2024, 7, 4, 19, 0)  # lowercase pm, summer time (EDT)


async def test_ios_brackets_seconds_narrow_spaces_and_direction_marks(tmp_path):
    export, _, kept = await import_file(tmp_path / "b.db", EXPORTS / "ios_12h_marks.txt",
                                        me="Ravi Kumar", tz="Europe/Berlin")
    assert export.style == "iOS" and export.order.order == "mdy" and export.problems == []
    notice, morning, yes, photo, omitted, arabic, call, invoice, edited = kept
    assert notice.kind == "system" and notice.direction == Direction.IN
    assert morning.sent_at == at(2024, 1, 15, 8, 1, 15)  # seconds kept; CET is UTC+1
    assert yes.text == "Yes\nIt's the 3-seater, grey." and yes.direction == Direction.OUT
    assert photo.kind == "image"
    assert photo.media.filename == "00000012-PHOTO-2024-01-15-09-03-05.jpg"
    assert omitted.kind == "media_placeholder" and omitted.extra["media_type"] == "image"
    assert arabic.text == "مرحبا can you deliver on the 20th?"
    assert arabic.sent_at == at(2024, 1, 15, 12, 30)  # 1:30 PM
    assert call.kind == "system" and call.text == "Missed voice call"
    assert invoice.kind == "media_placeholder" and invoice.media.filename == "Invoice.pdf"
    # isolates around the sender's name do not stop --me from matching it
    assert edited.direction == Direction.OUT and edited.extra == {
        "imported": True, "sender": "Ravi Kumar", "edited": True}
    for m in kept:
        shown = m.text + (m.extra.get("sender") or "") + (m.contact_name or "")
        assert not set(shown) & set(MARKS), m


async def test_german_dots(tmp_path):
    export, _, kept = await import_file(tmp_path / "b.db", EXPORTS / "android_de_dots.txt",
                                        tz="Europe/Berlin")
    assert export.order.order == "dmy"
    assert [m.kind for m in kept] == ["system", "text", "text", "media_placeholder", "text"]
    assert kept[2].text == "Ja. Besichtigung am 20.01.24 um 18:00?"
    assert kept[4].text == "Passt!\nBis dann"
    assert kept[1].sent_at == at(2024, 1, 15, 20, 6)
    # without --me and with two senders, no name becomes the customer's name
    assert all(m.direction == Direction.IN and m.contact_name is None for m in kept)


async def test_year_first_without_comma(tmp_path):
    export, _, kept = await import_file(tmp_path / "b.db", EXPORTS / "ymd.txt", me="Bike Shop")
    assert export.order.order == "ymd"
    assert [(m.sent_at, m.direction, m.kind) for m in kept] == [
        (at(2024, 1, 15, 21, 5), Direction.IN, "text"),
        (at(2024, 1, 15, 21, 7), Direction.OUT, "text"),
        (at(2024, 1, 16, 9, 30), Direction.IN, "media_placeholder")]


# -- date order -------------------------------------------------------------------------

def test_ambiguous_dates_default_to_day_first_unless_told():
    text = (EXPORTS / "ambiguous.txt").read_text()
    export = parse_export(text)
    assert export.order.order == "dmy" and export.order.reason.startswith("assumed")
    assert export.records[0].local == datetime(2024, 2, 1, 10, 0)
    told = parse_export(text, "mdy")
    assert told.order.order == "mdy" and told.order.reason.startswith("from --date-order")
    assert told.records[0].local == datetime(2024, 1, 2, 10, 0)


def test_date_order_from_the_sequence_and_an_overruled_option():
    lines = ["05/01/24, 10:00 - A: x", "06/01/24, 10:00 - A: y", "01/02/24, 10:00 - A: z"]
    export = parse_export("\n".join(lines))
    assert export.order.order == "dmy" and "order of the messages" in export.order.reason
    # the file's own evidence beats a contradicting --date-order, and says so
    choice = detect_order([Dated(1, ("31", "01", "24"), "31/01/24")], "mdy")
    assert choice.order == "dmy"
    assert choice.overruled == "--date-order mdy ignored: line 1 reads 31/01/24 only as d/m/y"


def test_twelve_hour_edges_and_invalid_times():
    text = "\n".join(["1/15/24, 12:00 AM - A: midnight", "1/15/24, 12:00 PM - A: noon",
                      "1/15/24, 13:00 PM - A: no such hour", "1/15/24, 24:30 - A: nor this"])
    export = parse_export(text)
    assert [r.local.hour for r in export.records] == [0, 12]
    assert [p.line for p in export.problems] == [3, 4]
    assert "12-hour clock" in export.problems[0].reason


def test_times_that_cannot_be_real_are_skipped_with_their_line_numbers():
    now = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
    text = "\n".join(["1/6/24, 10:00 - A: today", "2/6/24, 11:59 - A: within a day ahead",
                      "2/6/24, 12:01 - A: more than a day ahead", "continues it",
                      "31/12/9999 23:30 - A: year 9999", "31/12/1969, 23:59 - A: before 1970",
                      "1/1/1970, 00:00 - A: first possible"])
    export = parse_export(text, "dmy", now=now)
    assert [r.text for r in export.records] == ["today", "within a day ahead", "first possible"]
    assert [str(p) for p in export.problems] == [
        'line 3: "2/6/24, 12:01" cannot be the time of a message (later than 2024-06-02: no '
        "message is sent in the future); skipped with the 1 line after it",
        'line 5: "31/12/9999 23:30" cannot be the time of a message (later than 2024-06-02: '
        "no message is sent in the future); skipped",
        'line 6: "31/12/1969, 23:59" cannot be the time of a message (before 1970: no phone '
        "dates a message that early); skipped"]
    assert export.skipped_lines == 4


def test_text_before_the_first_message_is_reported_once():
    export = parse_export("Chat with Asha\nexported 2024\n\n12/01/24, 10:00 - Asha: hi\n")
    (problem,) = export.problems
    assert str(problem).startswith("line 1: not part of a message")
    assert str(problem).endswith("skipped with the 2 lines after it")
    assert [r.text for r in export.records] == ["hi"]


def test_header_shapes():
    ios = match_header("\u200e[31.12.23, 23:59:59] Asha: \u200e<attached: 1-STICKER-x.webp>")
    assert (ios.fields, ios.second, ios.sender, ios.marked) == (
        ("31", "12", "23"), 59, "Asha", True)
    spanish = match_header("31/12/23, 11:59 p.\u00a0m. - Asha: hola")
    assert (spanish.hour, spanish.meridiem, spanish.text) == (11, "pm", "hola")
    subject = match_header('1/1/24, 10:00 - Asha changed the subject from "Sales: Q1" to "Q2"')
    assert subject.sender is None  # a system line, though it holds ": "
    assert match_header("see you at 10:00 - ok?") is None


# -- storing ----------------------------------------------------------------------------

async def test_same_file_twice_stores_each_message_once(tmp_path):
    db = tmp_path / "b.db"
    source = EXPORTS / "android_24h_dmy.txt"
    await import_file(db, source, tz="Asia/Kolkata")
    _, again, kept = await import_file(db, source, tz="Asia/Kolkata")
    assert (again.new, again.present, len(kept)) == (0, 9, 9)
    # a later --me or another --tz does not make the same chat new again
    _, other, kept = await import_file(db, source, me="Asha Rao", tz="Europe/London")
    assert (other.new, len(kept)) == (0, 9)


async def test_imported_history_reaches_installed_sinks_as_backfill(tmp_path):
    db = tmp_path / "b.db"
    buffer = await Buffer.open(db)
    await buffer.install_sinks(["crm"])
    await buffer.close()
    _, stored, _ = await import_file(db, EXPORTS / "ymd.txt")
    assert stored.sinks == ("crm",)
    buffer = await Buffer.open(db)
    try:
        (claim,) = await buffer.claim("crm", 10, 60, backfill=True)
        assert [m.text for m in claim.batch.messages][:2] == [
            "Hej! Is the bike still available?", "Yes, come by tomorrow"]
    finally:
        await buffer.close()


# -- zip files --------------------------------------------------------------------------

def make_zip(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return path


async def test_zip_export_is_read_in_memory(tmp_path):
    chat = (EXPORTS / "android_24h_dmy.txt").read_bytes()
    source = make_zip(tmp_path / "WhatsApp Chat with Asha Rao.zip", {
        "WhatsApp Chat with Asha Rao.txt": chat, "notes.txt": b"a customer's document",
        "IMG-20240112-WA0003.jpg": b"\xff\xd8\xff fake jpeg"})
    text, name = read_export(source)
    assert name == "WhatsApp Chat with Asha Rao.txt" and text == chat.decode()
    db = tmp_path / "b.db"
    await import_file(db, EXPORTS / "android_24h_dmy.txt")
    _, stored, _ = await import_file(db, source)
    assert (stored.new, stored.present) == (0, 9)  # the same chat as the plain text file


def test_zip_entry_with_path_traversal_is_never_extracted(tmp_path):
    work = tmp_path / "work" / "deep"
    work.mkdir(parents=True)
    source = make_zip(tmp_path / "evil.zip", {
        "../../../escaped/_chat.txt": (EXPORTS / "ymd.txt").read_bytes(),
        "/abs/IMG-1.jpg": b"x"})
    db = tmp_path / "b.db"
    done = bridge("whatsapp", "import", str(source), "--phone", PHONE, "-c",
                  str(write_config(tmp_path, db)), cwd=work)
    assert done.returncode == 0, done.stderr
    assert "_chat.txt: Android export" in done.stdout
    assert "stored new: 3" in done.stdout
    assert {p.name for p in tmp_path.iterdir()} - {"b.db-shm", "b.db-wal"} == {
        "b.db", "config.yaml", "evil.zip", "work"}
    assert list(work.iterdir()) == [] and not Path("/abs/IMG-1.jpg").exists()


def test_zip_bomb_is_refused_before_anything_is_stored(tmp_path):
    source = make_zip(tmp_path / "bomb.zip", {"_chat.txt": b"\0" * (20 * 2**20)})
    with pytest.raises(ExportError, match="zip bombs do"):
        read_export(source)
    with pytest.raises(ExportError, match="unpacks to more than 1 MB"):
        read_export(make_zip(tmp_path / "big.zip", {"_chat.txt": os.urandom(2 * 2**20)}),
                    max_size=2**20)
    db = tmp_path / "b.db"
    done = bridge("whatsapp", "import", str(source), "--phone", PHONE, "-c",
                  str(write_config(tmp_path, db)))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "zip bombs do (refused without unpacking it)" in done.stderr
    assert not db.exists()


def test_zip_without_a_clear_chat_file_is_refused(tmp_path):
    source = make_zip(tmp_path / "two.zip", {"a.txt": b"x", "b.txt": b"y"})
    with pytest.raises(ExportError, match=r"several \.txt files \(a\.txt, b\.txt\)"):
        read_export(source)
    with pytest.raises(ExportError, match="holds no .txt file"):
        read_export(make_zip(tmp_path / "none.zip", {"IMG-1.jpg": b"x"}))


# -- the command ------------------------------------------------------------------------

def test_cli_imports_twice_and_reports(tmp_path):
    db = tmp_path / "b.db"
    config = write_config(tmp_path, db, timezone="Asia/Kolkata")
    args = ["whatsapp", "import", str(EXPORTS / "android_24h_dmy.txt"), "--phone",
            "+91 98765 43210", "--me", "ravi (acme homes)", "-c", str(config)]
    first = bridge(*args)
    assert first.returncode == 0, first.stderr
    assert "android_24h_dmy.txt: Android export, 14 lines, conversation +919876543210" \
        in first.stdout
    assert "date order: d/m/y (detected: line 9 reads 13/01/24 only as d/m/y)" in first.stdout
    assert "time zone: Asia/Kolkata (from server.timezone)" in first.stdout
    assert "direction: ravi (acme homes) is the business (out)" in first.stdout
    assert ("messages read: 9, stored new: 9, already present: 0, lines skipped: 2"
            in first.stdout)
    assert first.stderr.startswith('line 11: "31/02/24, 09:00" is not a valid date')
    second = bridge(*args)
    assert ("messages read: 9, stored new: 0, already present: 9, lines skipped: 2"
            in second.stdout)

    async def check() -> None:
        buffer = await Buffer.open(db)
        try:
            kept = await buffer.messages(PHONE)
        finally:
            await buffer.close()
        assert len(kept) == 9 and kept[0].sent_at == at(2024, 1, 12, 4, 28)
        assert [m.direction for m in kept].count(Direction.OUT) == 4

    asyncio.run(check())


def test_cli_skips_a_line_dated_9999_and_stores_the_40_good_ones(tmp_path):
    lines = [f"{n % 28 + 1}/03/24, 10:{n:02d} - Asha: good {n}" for n in range(40)]
    lines.insert(20, "31/12/9999 23:30 - Asha: from the far future")
    source = tmp_path / "chat.txt"
    source.write_text("\n".join(lines) + "\n")
    db = tmp_path / "b.db"
    done = bridge("whatsapp", "import", str(source), "--phone", PHONE, "--tz", "Asia/Kolkata",
                  "-c", str(write_config(tmp_path, db)))
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith('line 21: "31/12/9999 23:30" cannot be the time of a message')
    assert "messages read: 40, stored new: 40, already present: 0, lines skipped: 1" \
        in done.stdout

    async def stored() -> list:
        buffer = await Buffer.open(db)
        try:
            return await buffer.messages(PHONE)
        finally:
            await buffer.close()

    kept = asyncio.run(stored())
    assert sorted(m.text for m in kept) == sorted(f"good {n}" for n in range(40))
    assert max(m.sent_at for m in kept).year == 2024


def test_cli_defaults_and_refusals(tmp_path):
    db = tmp_path / "b.db"
    config = str(write_config(tmp_path, db))
    source = str(EXPORTS / "android_12h_mdy.txt")
    dry = bridge("whatsapp", "import", source, "--phone", PHONE, "-c", config, "--dry-run",
                 env={"TZ": "America/New_York"})
    assert dry.returncode == 0, dry.stderr
    assert "time zone: America/New_York (this computer's time zone" in dry.stdout
    assert "no --me given, so every message is stored as inbound (senders: John Miller (3)," \
        " Sam Dealer (2))" in dry.stdout
    assert "dry run: nothing stored" in dry.stdout and not db.exists()

    for extra, error in [(["--phone", "12"], "--phone '12' is not a phone number"),
                         (["--phone", PHONE, "--me", "Sam"], "--me 'Sam' sent nothing"),
                         (["--phone", PHONE, "--tz", "Mars/Olympus"], "not a known time zone")]:
        done = bridge("whatsapp", "import", source, "-c", config, *extra)
        assert done.returncode == 1 and error in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
    empty = tmp_path / "empty.txt"
    empty.write_text("hello\nthis is not a chat\n")
    done = bridge("whatsapp", "import", str(empty), "--phone", PHONE, "-c", config)
    assert done.returncode == 1 and "no WhatsApp messages found in 2 lines" in done.stderr
    assert not db.exists()


async def test_import_while_a_bridge_holds_the_buffer(tmp_path):
    """A runner (lock held, both connections open, appending) and the importer share it."""
    db = tmp_path / "b.db"
    lines = [f"{d % 28 + 1}/{d // 28 % 12 + 1}/23, 10:{m:02d} - Asha: message {d}-{m}"
             for d in range(300) for m in range(60)]
    big = tmp_path / "big.txt"
    big.write_text("\n".join(lines) + "\n")
    runner = await Buffer.open(db, runner=True)
    try:
        await runner.install_sinks(["crm"])
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bridge", "whatsapp", "import", str(big), "--phone", PHONE,
            "--tz", "UTC", "-c", str(write_config(tmp_path, db)),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        live = 0
        while proc.returncode is None:
            live += await runner.append([message(live, "+14155550100")])
            try:
                await asyncio.wait_for(proc.wait(), 0.005)
            except TimeoutError:
                pass
        out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        assert "messages read: 18000, stored new: 18000" in out.decode()
        assert await runner.count_messages() == 18000 + live
        (sink,) = await runner.sinks()
        assert sink["backlog"] == 18000 + live
        # the runner's appends went on between the importer's chunks
        (first, last), = await query(runner, "SELECT min(id), max(id) FROM messages"
                                            " WHERE provider_id LIKE 'import:%'")
        assert last - first + 1 > 18000
    finally:
        await runner.close()
