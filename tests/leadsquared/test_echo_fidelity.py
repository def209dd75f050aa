"""What a rep reads of the business's own outbound messages and of replies to messages the
bridge never stored: Meta-shaped webhooks through a real `bridge run` into the LeadSquared
simulator process, then the activity notes as LeadSquared holds them.

1. A template (or buttons, a list, a link) the business sent arrives as an
   `smb_message_echoes` echo (reference §6a; shapes and sources in tests/whatsapp/payloads.py
   and plugins/whatsapp/outbound.py). It used to read "⚠️ Unsupported message (template)",
   or, for buttons the business sent, as if the customer had replied.
2. A reply or reaction to a message the buffer never held (sent before the install, from
   another system through the API, or on another number) used to show the id's tail
   ("↩️ reply to …2OTg0RgA"), which names nothing a rep can find in LeadSquared.
"""

from __future__ import annotations

import time

import pytest

from tests.backends import BACKENDS
from tests.leadsquared.test_end_to_end import eventually, post

# the bridge (drained only when asked) and its buffer section, as the transcript tests have them
from tests.leadsquared.test_transcript_fidelity import bridge, buffer  # noqa: F401
from tests.processes import BridgeProcess
from tests.whatsapp import payloads as p

ASHA = "919876543210"
BUSINESS = "➡️ Business (+15550783881): "
# ids of messages the buffer never holds, shaped as real ones are
BEFORE_INSTALL = "wamid.HBgMOTE5ODc2NTQzMjEwFQIAERgSNUQ3RTlCQkY2QTFEOUY0RkQ2AA"
API_TEMPLATE = "wamid.HBgMOTE5ODc2NTQzMjEwFQIAERgSRjQ4QjI5QzY3RTA0M0U1NEI3AA"


# (what the business sent, what its line says after `<time> ➡️ Business (+1555…): `)
SENT = [
    (p.template_echo("wamid.t1", ASHA, p.TEMPLATE_SENT),
     '📋 Template "order_confirmation" (en_US) · 📷 image header · values: Asha | ₹24,999 | '
     'Friday 12 December · buttons: quick reply, link'),
    (p.template_echo("wamid.t2", ASHA, p.TEMPLATE_NAMED),
     '📋 Template "quote_ready" (en) · 📄 document header quote-8812.pdf · values: '
     'customer_name: Asha | order_number: Q-8812'),
    (p.template_echo("wamid.t3", ASHA, p.TEMPLATE_AS_DEFINED),  # UNSURE shape
     '📋 Template "welcome_back" (en_US): "Hi Asha, ⏎ your annual plan renews on Friday." · '
     'header "Welcome back" · footer "Reply STOP to opt out" · buttons: Renew now, See plans'),
    (p.template_echo("wamid.t4", ASHA, None), "📋 Template message"),  # no object at all
    (p.interactive_echo("wamid.i1", ASHA, p.SENT_BUTTONS),
     '🔘 Sent buttons: "Which day suits you for the demo?" [Tuesday | Wednesday]'),
    (p.interactive_echo("wamid.i2", ASHA, p.SENT_LIST),
     '🔘 Sent a list "See slots": "Demo slots" — "Pick a time" [Tue 10:00 | Tue 15:00]'),
    (p.interactive_echo("wamid.i3", ASHA, p.SENT_LINK),
     '🔘 Sent a link: "Our Friday offer" [See offer | https://example.com/offer] · '
     '📷 image header'),
]


def test_a_template_or_buttons_the_business_sent_read_as_what_the_customer_got(
        bridge, simulator):  # noqa: F811
    lead = simulator.add_lead(FirstName="Asha", LastName="Rao", Mobile="+91-9876543210")
    bridge.start()
    now = int(time.time())
    post(bridge, p.echo_change([m | {"timestamp": str(now - 60 + i)}
                                for i, (m, _) in enumerate(SENT)],
                               contacts=[p.contact(ASHA, "Asha Rao")]))
    bridge.sync_now()
    lines = eventually(lambda: _lines(bridge, simulator, lead, len(SENT)), every=1.0)
    got = [line.split("] ", 1)[1] for line in lines]
    assert sorted(got) == sorted(BUSINESS + want for _, want in SENT)


# (what the customer sent about a message the buffer never held, what its line says)
ABOUT_UNSTORED = [
    (p.text_message("wamid.u1", ASHA, "Is the offer still on?",
                    context={"from": p.BUSINESS, "id": BEFORE_INSTALL}),
     "↩️ reply to an earlier message: Is the offer still on?"),
    (p.reaction_message("wamid.u2", BEFORE_INSTALL, "👍", ASHA),
     "👍 reacted to an earlier message"),
    (p.reaction_message("wamid.u3", BEFORE_INSTALL, None, ASHA),
     "Removed a reaction from an earlier message"),
    # a quick-reply press on a template another system sent through the API: only its
    # statuses ever reach a webhook, never the message (reference §5)
    (p.button_message("wamid.u4", ASHA, "Stop promotions")
     | {"context": {"from": p.BUSINESS, "id": API_TEMPLATE}},
     '↩️ reply to an earlier message: 🔘 Pressed "Stop promotions"'),
    (p.edit_message("wamid.u5", BEFORE_INSTALL, {"type": "text", "text": {"body": "Friday"}},
                    ASHA), "✏️ Edited an earlier message: Friday"),
    (p.revoke_message("wamid.u6", BEFORE_INSTALL, ASHA), "🗑️ Deleted an earlier message"),
]


@pytest.mark.parametrize("buffer", BACKENDS, indirect=True)  # the claim looks targets up
def test_a_reply_or_reaction_to_a_message_never_stored_reads_as_words_not_an_id(
        bridge, simulator):  # noqa: F811
    lead = simulator.add_lead(FirstName="Asha", LastName="Rao", Mobile="+91-9876543210")
    bridge.start()
    now = int(time.time())
    post(bridge, p.message_change([m | {"timestamp": str(now - 60 + i)}
                                   for i, (m, _) in enumerate(ABOUT_UNSTORED)],
                                  contacts=[p.contact(ASHA, "Asha Rao")]))
    bridge.sync_now()
    lines = eventually(lambda: _lines(bridge, simulator, lead, len(ABOUT_UNSTORED)), every=1.0)
    got = [line.split("] ", 1)[1] for line in lines]
    assert sorted(got) == sorted("⬅️ Asha Rao: " + want for _, want in ABOUT_UNSTORED)
    for line in lines:
        assert "wamid" not in line and "…" not in line, line


def test_a_reply_to_a_template_sent_in_an_earlier_window_names_the_template(
        bridge, simulator):  # noqa: F811
    """The customer presses a template's quick-reply button a sync after the template went
    out: the press names the template, not an anonymous "📋 Template" (a template's
    send request carries no text to quote)."""
    lead = simulator.add_lead(FirstName="Asha", LastName="Rao", Mobile="+91-9876543210")
    bridge.start()
    now = int(time.time())
    template = "wamid.HBgMOTE5ODc2NTQzMjEwFQIAERgSQUI3QjI5QzY3RTA0M0U1NEI3AA"
    post(bridge, p.echo_change([p.template_echo(template, ASHA, p.TEMPLATE_SENT)
                                | {"timestamp": str(now - 60)}],
                               contacts=[p.contact(ASHA, "Asha Rao")]))
    bridge.sync_now()
    eventually(lambda: _lines(bridge, simulator, lead, 1), every=1.0)
    press = p.button_message("wamid.press", ASHA, "Confirm") | {
        "context": {"from": p.BUSINESS, "id": template}, "timestamp": str(now - 10)}
    post(bridge, p.message_change([press], contacts=[p.contact(ASHA, "Asha Rao")]))
    bridge.sync_now()
    lines = eventually(lambda: _lines(bridge, simulator, lead, 2), every=1.0)
    assert any(line.endswith('⬅️ Asha Rao: ↩️ reply to “📋 Template order_confirmation”: '
                             '🔘 Pressed "Confirm"') for line in lines), lines


def _lines(process: BridgeProcess, simulator, lead: str, count: int) -> list[str] | None:
    """The transcript lines of the lead's notes once there are `count`; else asks for a
    sync again (a try cut off by deliver_timeout is retried when asked)."""
    lines = [line for a in simulator.activities(lead)
             for line in a["ActivityNote"].splitlines()[1:]]
    if len(lines) >= count:
        return lines
    process.sync_now()
    return None
