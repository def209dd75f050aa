"""A process SIGKILLed before its first heartbeat had no row in the registry, so the
registry never saw it gone: the media (and batch) leases it had claimed were freed only
when they ran out (media: 900 s, a photo ~15 minutes late). Freeing leases whose owner has
no row would race a live process that claims before its first heartbeat; instead a process
on a shared buffer registers (one heartbeat) when its buffer opens, before any runner
starts: every lease it takes names a process the registry can see go silent."""

from __future__ import annotations

import json

import pytest

from bridge.app import create_app
from bridge.plugins import get_plugin_manager, load_config
from bridge.state import BRIDGE
from tests.backends import NO_POSTGRES, POSTGRES, query
from tests.whatsapp.test_media_e2e import SECRET, VERIFY

pytestmark = pytest.mark.skipif(not POSTGRES, reason=NO_POSTGRES)


async def test_a_process_is_in_the_registry_before_its_runners_start(pg_url, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({
        "buffer": {"url": pg_url, "media_path": str(tmp_path / "media")},
        "plugins": {"whatsapp": {"verify_token": VERIFY, "app_secret": SECRET,
                                 "access_token": "t"},
                    "leadsquared": {"host": "http://127.0.0.1:9", "access_key": "a",
                                    "secret_key": "s"}}}))
    pm = get_plugin_manager()
    app = create_app(load_config(config, pm), pm)
    bridge = app[BRIDGE]
    opened = app.cleanup_ctx[0](app)  # the buffer's context: the runners' come after it
    await anext(opened)
    try:
        assert not bridge.runners and not bridge.media_runners  # none has started
        rows = await query(bridge.buffer, "SELECT id, sinks FROM processes")
        assert [(row[0], json.loads(row[1])) for row in rows] == \
            [(bridge.buffer.owner, ["leadsquared"])]
    finally:
        with pytest.raises(StopAsyncIteration):
            await anext(opened)
