"""Media that cannot stop ingest (issue 25, point 2): buffer.media_max_total caps the bytes
stored in all, buffer.media_min_free keeps room on the disk; a download that would pass
either is refused before its bytes are written, a dead letter naming the key to raise.

In-process against the Graph stand-in, with the free-space seam (MediaPolicy.free_space,
statvfs in production); tests/reliability/test_media_disk.py runs the same through real
processes, webhooks and /healthz included.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bridge.config import BufferConfig
from bridge.limits import problems
from bridge.sizes import parse_size
from tests.whatsapp.test_media import file_of, media_message, runner_for, sim_stats, upload

MB = 1024 * 1024


def held_on_disk(root: Path) -> int:
    """Bytes under the media directory now (partial downloads included)."""
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


async def test_the_total_cap_refuses_the_file_that_would_pass_it_and_says_which_key(
        media_buffer, graph, tmp_path):
    first, second = os.urandom(600_000), os.urandom(600_000)
    await media_buffer.append([media_message(1, await upload(graph, first))])
    runner = runner_for(media_buffer, graph, tmp_path, max_total=MB)
    await runner.prepare()
    await runner.step()
    assert (await file_of(media_buffer, "wamid.1")).state == "fetched"
    await media_buffer.append([media_message(2, await upload(graph, second))])
    await runner.step()
    refused = await file_of(media_buffer, "wamid.2")
    assert refused.state == "dead"
    assert "buffer.media_max_total (1 MB)" in refused.reason and "raise" in refused.reason
    assert held_on_disk(tmp_path / "media") == len(first)  # nothing of the second kept
    # a file that still fits is fetched: the cap counts what is stored
    await media_buffer.append([media_message(3, await upload(graph, b"small" * 1000))])
    await runner.step()
    assert (await file_of(media_buffer, "wamid.3")).state == "fetched"


async def test_a_full_cap_refuses_before_the_download_starts(media_buffer, graph, tmp_path):
    await media_buffer.append([media_message(1, await upload(graph, os.urandom(MB)))])
    runner = runner_for(media_buffer, graph, tmp_path, max_total=MB)
    await runner.prepare()
    await runner.step()
    await media_buffer.append([media_message(2, await upload(graph, b"one more"))])
    before = (await sim_stats(graph))["lookups"]
    await runner.step()
    assert (await file_of(media_buffer, "wamid.2")).state == "dead"
    assert (await sim_stats(graph))["lookups"] == before  # not even looked up


async def test_the_free_space_floor_stops_a_download_before_it_takes_the_disk(
        media_buffer, graph, tmp_path):
    """The seam stands in for statvfs: the disk has `floor + 100 KB` free less what the
    media directory holds, so a 400 KB download reaches the floor part way."""
    floor = 64 * MB
    root = tmp_path / "media"
    free = lambda directory: floor + 100_000 - held_on_disk(root)  # noqa: E731
    await media_buffer.append([media_message(1, await upload(graph, os.urandom(400_000)))])
    runner = runner_for(media_buffer, graph, tmp_path, min_free=floor, free_space=free)
    await runner.prepare()
    await runner.step()
    refused = await file_of(media_buffer, "wamid.1")
    assert refused.state == "dead"
    assert "under buffer.media_min_free (64 MB)" in refused.reason
    assert "lower buffer.media_min_free" in refused.reason
    assert held_on_disk(root) == 0
    # a file that fits above the floor is fetched
    await media_buffer.append([media_message(2, await upload(graph, b"p" * 20_000))])
    await runner.step()
    assert (await file_of(media_buffer, "wamid.2")).state == "fetched"


async def test_under_the_floor_nothing_is_written_at_all(media_buffer, graph, tmp_path):
    writes = []
    root = tmp_path / "media"

    def free(directory: str) -> int:
        writes.append(held_on_disk(root))
        return 10 * MB

    await media_buffer.append([media_message(1, await upload(graph, b"photo" * 100))])
    runner = runner_for(media_buffer, graph, tmp_path, min_free=64 * MB, free_space=free)
    await runner.prepare()
    await runner.step()
    assert (await file_of(media_buffer, "wamid.1")).state == "dead"
    assert writes and set(writes) == {0}
    assert not list((root / "tmp").glob("whatsapp-1-*.part"))


@pytest.mark.parametrize(("text", "size"), [
    (1048576, MB), ("500MB", 500 * MB), ("2 GB", 2048 * MB), ("1.5GiB", 1536 * MB),
    ("64kb", 65536)])
def test_sizes_read_as_bytes_or_with_a_unit(text, size):
    assert parse_size(text) == size


def test_the_media_limits_have_defaults_minimums_and_a_rule_between_them():
    config = BufferConfig()
    assert (config.media_max_total, config.media_min_free) == (2048 * MB, 1024 * MB)
    assert problems(config, "buffer") == []
    low = problems(BufferConfig(media_max_total="100KB", media_min_free="1MB"), "buffer")
    assert any(p.startswith("buffer.media_max_total: 102,400 is too small") for p in low)
    assert any(p.startswith("buffer.media_min_free: 1,048,576 is too small") for p in low)
    (rule,) = problems(BufferConfig(media_max_total="50MB"), "buffer")
    assert rule.startswith("buffer.media_max_total: 50 MB is smaller than media_max_bytes")
    with pytest.raises(ValueError, match="is not a size"):
        BufferConfig(media_min_free="lots")


def test_a_fetch_failing_past_1025_attempts_still_backs_off(tmp_path):
    """media_max_attempts may be up to 100000; the backoff of the 1026th try computed
    retry_base * 2 ** 1025, which overflows a float: _retry raised OverflowError, so the
    failure was never recorded and the download came back after each lease, forever,
    never a dead letter. (adv45)"""
    from bridge.media import MediaPolicy

    policy = MediaPolicy(str(tmp_path), max_attempts=5000)
    assert 0.8 * policy.retry_cap <= policy.backoff(2000) <= policy.retry_cap
