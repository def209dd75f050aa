"""`bridge whatsapp import` of exports in other encodings, and of long ones, as a stream."""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from bridge.buffer import Buffer
from plugins.whatsapp.export import Record, Revisited, provider_ids, revisited_times, stable_id
from plugins.whatsapp.importer import ExportFile
from tests.whatsapp.test_import import PHONE, ROOT, bridge, write_config

CHAT = ("12/01/24, 10:00 - Asha: Hola, café para el señor?\n"
        "12/01/24, 10:01 - Ravi: Sí, crème brûlée también\n"
        "continues: naïve façade\n")


def stored_texts(db: Path) -> list[str]:
    async def read() -> list[str]:
        buffer = await Buffer.open(db)
        try:
            return [m.text for m in await buffer.messages(PHONE)]
        finally:
            await buffer.close()
    return asyncio.run(read())


def run_import(tmp_path: Path, data: bytes, *extra: str, name: str = "chat.txt"):
    source = tmp_path / name
    source.write_bytes(data)
    db = tmp_path / "b.db"
    done = bridge("whatsapp", "import", str(source), "--phone", PHONE, "--tz", "UTC",
                  "-c", str(write_config(tmp_path, db)), *extra)
    return done, db


EXPECTED = ["Hola, café para el señor?", "Sí, crème brûlée también\ncontinues: naïve façade"]


def test_cp1252_export_is_read_as_cp1252_with_a_warning(tmp_path):
    done, db = run_import(tmp_path, CHAT.encode("cp1252"))
    assert done.returncode == 0, done.stderr
    assert "encoding: Windows-1252 (cp1252), as the file is not UTF-8" in done.stdout
    assert done.stderr.startswith("warning: line 1 holds byte 0xe9, which is not UTF-8, so "
                                  "the file is read as Windows-1252 (cp1252)")
    assert "could not be read" not in done.stderr
    assert stored_texts(db) == EXPECTED


@pytest.mark.parametrize(("codec", "label"), [("utf-16-le", "UTF-16LE"),
                                              ("utf-16-be", "UTF-16BE")])
def test_utf16_without_a_byte_order_mark_is_told_by_its_zero_bytes(tmp_path, codec, label):
    done, db = run_import(tmp_path, CHAT.encode(codec))
    assert done.returncode == 0, done.stderr
    assert f"encoding: {label} (no byte order mark; told by its zero bytes)" in done.stdout
    assert stored_texts(db) == EXPECTED


@pytest.mark.parametrize(("data", "label"), [
    (CHAT.encode("utf-16"), "UTF-16 (byte order mark)"),
    (b"\xef\xbb\xbf" + CHAT.encode(), "UTF-8 (byte order mark)"),
    (CHAT.encode(), "UTF-8"),
], ids=["utf-16-bom", "utf-8-bom", "utf-8"])
def test_byte_order_marks_and_plain_utf8(tmp_path, data, label):
    done, db = run_import(tmp_path, data)
    assert done.returncode == 0, done.stderr
    assert f"encoding: {label}\n" in done.stdout and done.stderr == ""
    assert stored_texts(db) == EXPECTED


def test_encoding_option_and_replacement_warning(tmp_path):
    data = CHAT.encode("cp1252")
    done, db = run_import(tmp_path, data, "--encoding", "latin-1")
    assert "encoding: latin-1 (from --encoding)" in done.stdout and done.stderr == ""
    assert stored_texts(db) == EXPECTED

    forced = tmp_path / "forced"
    forced.mkdir()
    done, db = run_import(forced, data, "--encoding", "utf-8")
    assert done.returncode == 0, done.stderr
    assert ("warning: 9 characters could not be read as utf-8 and show as \ufffd (the first on"
            " line 1); if the file has another encoding, pass --encoding") in done.stderr
    assert stored_texts(db)[0] == "Hola, caf\ufffd para el se\ufffdor?"

    done, _ = run_import(tmp_path, data, "--encoding", "klingon")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "--encoding 'klingon' is not an encoding Python knows" in done.stderr


def test_zip_entry_in_cp1252_is_streamed_and_detected(tmp_path):
    import zipfile

    source = tmp_path / "chat.zip"
    with zipfile.ZipFile(source, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("_chat.txt", CHAT.encode("cp1252"))
    export = ExportFile(source)
    assert export.name == "_chat.txt" and export.encoding.codec == "cp1252"
    assert list(export.lines())[0] == "12/01/24, 10:00 - Asha: Hola, café para el señor?"


@pytest.mark.parametrize("spans", [None, 1, 2])
def test_ids_of_repeats_match_a_whole_file_count_in_any_time_order(monkeypatch, spans):
    """The streaming numbering (latest time + revisited times) gives the ids a count over
    the whole file gave, so a re-import finds every message already present; also when
    the revisited times are kept in so few spans that they cover times never revisited."""
    if spans is not None:
        monkeypatch.setattr(Revisited, "MAX_SPANS", spans)
        monkeypatch.setattr(Revisited, "JOIN", timedelta(0))
    spans = Revisited.MAX_SPANS

    def whole_file(records):
        seen: Counter = Counter()
        ids = []
        for r in records:
            key = (r.local, r.sender, r.body)
            ids.append(stable_id("c", r.local, r.sender, r.body, seen[key]))
            seen[key] += 1
        return ids

    base = datetime(2024, 1, 1)
    for trial in range(500):
        rnd = random.Random(trial)
        minute, records = 0, []
        for n in range(rnd.randint(0, 30)):
            minute += rnd.choice([0, 0, 1, 2, -1, -3])
            records.append(Record(n, base + timedelta(minutes=minute), rnd.choice("AB"),
                                  rnd.choice("xy"), "text", "", ""))
        assert provider_ids(records, "c") == whole_file(records), trial
        assert len(revisited_times(r.local for r in records)) <= spans


def test_revisited_times_are_kept_in_few_spans_however_many_there_are():
    base = datetime(2023, 1, 1)
    lap = [base + timedelta(minutes=n) for n in range(50_000)]
    found = revisited_times(lap + lap)  # the dates run through twice: all revisited
    assert len(found) == 1 and all(t in found for t in lap[::997])
    scattered = [base + timedelta(days=n) for n in range(1000)]  # back 2 days, 1,000 times
    found = revisited_times(t for day in scattered for t in (day + timedelta(days=2), day))
    assert len(found) <= Revisited.MAX_SPANS
    assert all(day in found for day in scattered[1:])


# -- memory ------------------------------------------------------------------------------

PEAK = ("import resource, subprocess, sys\n"
        "done = subprocess.run(sys.argv[1:], capture_output=True)\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
        "sys.exit(done.returncode)\n")


def write_export(path: Path, megabytes: float, lap: int | None = None) -> int:
    """A generated two-person export of about `megabytes` MB; returns its message count.

    One message a minute through 336 days of 2023, then the same dates again; `lap`
    messages a lap instead makes the dates come back that often (every later record is
    at a time the file already went past)."""
    words = "hello price visit tomorrow flat rent deposit okay thanks café señor 👍".split()
    rnd = random.Random(7)
    size = count = 0
    with path.open("w", encoding="utf-8") as out:
        while size < megabytes * 2**20:
            day, minute = divmod(count % lap if lap else count, 1440)
            line = (f"{day % 28 + 1:02d}/{day // 28 % 12 + 1:02d}/23, {minute // 60:02d}:"
                    f"{minute % 60:02d} - {'Asha' if count % 3 else 'Ravi'}: "
                    + " ".join(rnd.choices(words, k=rnd.randint(2, 12))) + "\n")
            out.write(line)
            size += len(line.encode())
            count += 1
    return count


def peak_kb(tmp_path: Path, source: Path, *extra: str) -> int:
    """Peak resident memory (KB) of a real `bridge whatsapp import` process."""
    db = tmp_path / f"{source.stem}.db"
    config = tmp_path / f"{source.stem}.yaml"
    config.write_text(f"buffer: {{path: {db}}}\n")
    done = subprocess.run(
        [sys.executable, "-c", PEAK, sys.executable, "-m", "bridge", "whatsapp", "import",
         str(source), "--phone", PHONE, "--tz", "UTC", "-c", str(config), *extra],
        capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.strip())


def test_memory_stays_flat_as_the_export_grows(tmp_path):
    small, large = tmp_path / "small.txt", tmp_path / "large.txt"
    write_export(small, 0.25)
    write_export(large, 5)
    growth = peak_kb(tmp_path, large, "--dry-run") - peak_kb(tmp_path, small, "--dry-run")
    # reading the whole file at once took ~30 times its size (5 MB: ~150 MB more)
    assert growth < 15 * 1024, f"peak memory grew by {growth} KB for 4.75 MB more chat"


def test_memory_stays_flat_storing_an_export_whose_dates_come_back(tmp_path):
    """The store numbers repeated records (time, sender, body); counting those at times
    the file comes back to used to keep every such record in memory: an export whose dates
    run through the year twice (44 MB: 281 MB peak) grew by ~300 bytes a record. Dates
    coming back every 2,000 records make nearly every record one, so small files show it
    (before: 0.5 MB -> 96 MB, 5 MB -> 122 MB; now flat)."""
    small, large = tmp_path / "small.txt", tmp_path / "large.txt"
    write_export(small, 0.5, lap=2000)
    count = write_export(large, 5, lap=2000)
    growth = peak_kb(tmp_path, large) - peak_kb(tmp_path, small)
    assert growth < 10 * 1024, f"peak memory grew by {growth} KB for 4.5 MB more chat"

    async def counted() -> int:
        buffer = await Buffer.open(tmp_path / "large.db")
        try:
            return await buffer.count_messages()
        finally:
            await buffer.close()
    assert asyncio.run(counted()) == count  # every record stored, none taken for a repeat


@pytest.mark.soak
def test_memory_stays_flat_storing_a_30_mb_export(tmp_path):
    source = tmp_path / "large.txt"
    count = write_export(source, 30)
    peak = peak_kb(tmp_path, source)
    assert peak < 120 * 1024, f"peak memory {peak} KB storing a 30 MB export"
    async def counted() -> int:
        buffer = await Buffer.open(tmp_path / "large.db")
        try:
            return await buffer.count_messages()
        finally:
            await buffer.close()
    assert asyncio.run(counted()) == count
