"""A webhook's media object with odd content, through a real `bridge run`, the Graph
stand-in and the LeadSquared simulator over HTTP (adv67): the chat's text always lands, a
file lands once and only the file the message names."""

from __future__ import annotations

import os
import time

import pytest

from tests import oneshot
from tests.processes import eventually
from tests.whatsapp import payloads as p
from tests.whatsapp.test_media_e2e import (
    ASHA,
    PHONE_ID,
    all_attachments,
    media_rows,
    media_webhook,
    post,
    start_bridge,
)


@pytest.fixture
def graph(module_graph):
    return module_graph.fresh()


def graph_stats(graph) -> dict:
    return oneshot.get(f"{graph.url}/_sim/stats", timeout=10).json()


def test_a_media_id_that_is_no_plain_id_is_a_dead_letter_and_fetches_no_other_file(
    tmp_path, graph, lsq
):
    """'?' or '#' in the id cut it short at the lookup, '/../' walked to another path: the
    message got another media's file (here: a stranger's photo attached to this lead); a
    trailing '/' was retried for days as a wrong graph_url. Each is now a dead letter saying
    why, with no call to Graph, and the text lands."""
    lead = lsq.add_lead(FirstName="Asha", LastName="Rao", Mobile="+91-9876543210")
    other = graph.upload(os.urandom(5_000), "image/jpeg", PHONE_ID)  # someone else's photo
    odd = {
        "wamid.q": f"{other}?x=1",
        "wamid.h": f"{other}#x",
        "wamid.d": f"x/../{other}",
        "wamid.s": f"{other}/",
    }
    bridge = start_bridge(tmp_path, graph, lsq)
    try:
        post(
            bridge,
            p.text_message("wamid.t", ASHA, "sent you my id card", ts=int(time.time())),
            *[media_webhook(mid, "image", media_id, "image/jpeg") for mid, media_id in odd.items()],
        )
        rows = eventually(
            lambda: (
                (r := media_rows(tmp_path))
                and len(r) == 4
                and all(v[0] == "dead" for v in r.values())
                and r
            ),
            timeout=30,
        )
        for mid in odd:
            assert "is not one the Graph API can look up" in rows[mid][3], rows[mid]
        eventually(
            lambda: any("sent you my id card" in a["ActivityNote"] for a in lsq.activities(lead))
        )
        assert graph_stats(graph)["lookups"] == 0
        assert all_attachments(lsq, lead) == []
    finally:
        bridge.stop()


def test_a_sent_file_name_with_folders_or_300_characters_reaches_the_crm_as_a_file_name(
    tmp_path, graph, lsq
):
    """The document's filename went to File Upload and Attachment/Add as it came: folders
    ('../../etc/', 'C:\\Users\\') in the attachment's name, and a 300-character name cut to
    200 with an ellipsis and no '.pdf' (a file the rep could not open by its type). Now the
    last path part, cut before its extension; the transcript line names it the same."""
    lead = lsq.add_lead(FirstName="Asha", LastName="Rao", Mobile="+91-9876543210")
    long_stem = "a" * 300
    names = {"wamid.long": f"../../etc/{long_stem}.pdf", "wamid.win": "C:\\Users\\x\\report.pdf"}
    bridge = start_bridge(tmp_path, graph, lsq)
    try:
        for mid, name in names.items():
            data = os.urandom(2_000)
            media_id = graph.upload(data, "application/pdf", PHONE_ID)
            post(
                bridge,
                media_webhook(mid, "document", media_id, "application/pdf", data, filename=name),
            )
        attached = eventually(lambda: (a := all_attachments(lsq, lead)) and len(a) == 2 and a)
        by_message = {a["Description"].rsplit(" ", 1)[-1]: a["AttachmentName"] for a in attached}
        assert by_message["wamid.win"] == "report.pdf"
        long_name = by_message["wamid.long"]
        assert long_name.endswith("….pdf") and long_name.startswith("aaa")
        assert len(long_name) <= 200
        notes = " ".join(a["ActivityNote"] for a in lsq.activities(lead))
        for name in by_message.values():
            assert f"[file {name}" in notes  # ", <size>]" or " follows]"
    finally:
        bridge.stop()


def test_a_file_whose_lookup_names_another_type_is_attached_under_the_name_its_line_gave(
    tmp_path, graph, lsq
):
    """The webhook said image/jpeg, Graph's lookup image/png. The text went out first
    ('[file image-….jpg follows]'), and the photo followed as 'image-….png': the line named
    a file the activity does not have. The name now comes from the webhook's type, as the
    line had it before the fetch."""
    lead = lsq.add_lead(FirstName="Asha", LastName="Rao", Mobile="+91-9876543210")
    data = os.urandom(40_000)
    media_id = graph.upload(data, "image/png", PHONE_ID)  # what the lookup will say
    graph.faults(slow_bytes_per_s=20_000)  # ~2 s: the text lands before the file
    bridge = start_bridge(tmp_path, graph, lsq)
    try:
        post(bridge, media_webhook("wamid.px", "image", media_id, "image/jpeg", data))
        (activity,) = eventually(lambda: lsq.activities(lead))
        assert "follows]" in activity["ActivityNote"]
        (attached,) = eventually(lambda: all_attachments(lsq, lead))
        assert attached["Data"] == data
        assert f"[file {attached['AttachmentName']} follows]" in activity["ActivityNote"]
    finally:
        bridge.stop()
