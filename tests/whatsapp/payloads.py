"""Builders of WhatsApp Cloud API webhook payloads, shaped as in Meta's webhook reference.

One builder per message type and per change field; tests compose them, e.g.
`envelope(message_change([text_message("wamid.1")]))`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

OBJECT = "whatsapp_business_account"
PHONE_ID = "106540352242922"
BUSINESS = "15550783881"  # display_phone_number: digits, no '+'
CUSTOMER = "16505551234"
TS = "1739230955"
BSUID = "US.13491208655302741918"

Json = dict[str, Any]


# -- envelope and changes ------------------------------------------------------------------

def envelope(*changes: Json, waba: str = "102290129340398", time: int | None = None) -> Json:
    """One notification with one entry holding `changes`."""
    return payload(entry(*changes, waba=waba, time=time))


def entry(*changes: Json, waba: str = "102290129340398", time: int | None = None) -> Json:
    item: Json = {"id": waba, "changes": list(changes)}
    if time is not None:
        item["time"] = time
    return item


def payload(*entries: Json) -> Json:
    return {"object": OBJECT, "entry": list(entries)}


def metadata(phone_id: str = PHONE_ID, display: str = BUSINESS) -> Json:
    return {"display_phone_number": display, "phone_number_id": phone_id}


def value(phone_id: str = PHONE_ID, **arrays: Any) -> Json:
    """A change value with metadata plus the given arrays (messages=..., statuses=...)."""
    return {"messaging_product": "whatsapp", "metadata": metadata(phone_id),
            **{k: v for k, v in arrays.items() if v is not None}}


def message_change(messages: Sequence[Json] = (), *, contacts: list[Json] | None = None,
                   statuses: Sequence[Json] = (), errors: list[Json] | None = None,
                   phone_id: str = PHONE_ID) -> Json:
    """field `messages`; contacts default to one profile per distinct sender."""
    if contacts is None and messages:
        senders = dict.fromkeys(m["from"] for m in messages if "from" in m)
        contacts = [contact(s, "Sheena Nelson") for s in senders]
    return {"field": "messages", "value": value(
        phone_id, contacts=contacts, messages=list(messages) or None,
        statuses=list(statuses) or None, errors=errors)}


def echo_change(echoes: list[Json], *, contacts: list[Json] | None = None,
                phone_id: str = PHONE_ID) -> Json:
    return {"field": "smb_message_echoes",
            "value": value(phone_id, message_echoes=list(echoes), contacts=contacts)}


def history_change(threads: Sequence[Json] = (), *, phase: int = 0, chunk_order: int = 1,
                   progress: int = 55, phone_id: str = PHONE_ID) -> Json:
    chunk = {"metadata": {"phase": phase, "chunk_order": chunk_order, "progress": progress},
             "threads": list(threads)}
    return {"field": "history", "value": value(phone_id, history=[chunk])}


def history_media_change(messages: list[Json], phone_id: str = PHONE_ID) -> Json:
    """The follow-up history webhook describing media of earlier placeholders."""
    return {"field": "history", "value": value(phone_id, messages=list(messages))}


def history_declined_change(phone_id: str = PHONE_ID) -> Json:
    error = {"code": 2593109, "title": "History sync is turned off by the business from the "
             "WhatsApp Business App", "message": "History sync is turned off",
             "error_data": {"details": "History sync is turned off"}}
    return {"field": "history", "value": value(phone_id, history=[{"errors": [error]}])}


def thread(customer: str, messages: list[Json]) -> Json:
    return {"id": customer, "messages": list(messages)}


def state_sync_change(items: list[Json], phone_id: str = PHONE_ID) -> Json:
    return {"field": "smb_app_state_sync", "value": value(phone_id, state_sync=list(items))}


def state_contact(phone: str, full_name: str | None = None, first_name: str | None = None,
                  action: str = "add") -> Json:
    person: Json = {"phone_number": phone}
    if full_name is not None:
        person["full_name"] = full_name
    if first_name is not None:
        person["first_name"] = first_name
    return {"type": "contact", "contact": person, "action": action,
            "metadata": {"timestamp": TS}}


def other_change(field: str, content: Json | None = None) -> Json:
    """A field this source only acknowledges (account_update, templates ...)."""
    return {"field": field, "value": content or {"event": "VERIFIED_ACCOUNT"}}


# -- contacts[] and statuses[] -------------------------------------------------------------

def contact(wa_id: str | None, name: str | None, user_id: str | None = None,
            parent_user_id: str | None = None, username: str | None = None) -> Json:
    """A contacts[] entry (reference §3): wa_id and profile.name; since 2026 also the BSUID
    keys user_id, parent_user_id and profile.username (§9). A username-only user may come
    without wa_id and without a profile name."""
    profile: Json = {}
    if name is not None:
        profile["name"] = name
    if username is not None:
        profile["username"] = username
    item: Json = {"profile": profile}
    if wa_id is not None:
        item["wa_id"] = wa_id
    if user_id is not None:
        item["user_id"] = user_id
    if parent_user_id is not None:
        item["parent_user_id"] = parent_user_id
    return item


def status(mid: str, state: str = "delivered", recipient: str = CUSTOMER, ts: str = TS,
           errors: list[Json] | None = None, **more: Any) -> Json:
    item: Json = {"id": mid, "status": state, "timestamp": ts, "recipient_id": recipient, **more}
    if errors is not None:
        item["errors"] = errors
    return item


# -- messages, one builder per type ----------------------------------------------------------

def base(mid: str, from_: str | None, kind: str, ts: str | int | None = TS, **more: Any) -> Json:
    item: Json = {"id": mid, "type": kind, **more}
    if from_ is not None:
        item["from"] = from_
    if ts is not None:
        item["timestamp"] = ts
    return item


def text_message(mid: str, from_: str = CUSTOMER, body: str = "hello",
                 ts: str | int | None = TS, **more: Any) -> Json:
    return base(mid, from_, "text", ts, text={"body": body}, **more)


def media(media_id: str, mime: str, **fields: Any) -> Json:
    return {"mime_type": mime, "sha256": "a4f3c8e1b2d9", "id": media_id,
            **{k: v for k, v in fields.items() if v is not None}}


def image_message(mid: str, from_: str = CUSTOMER, caption: str | None = "look",
                  media_id: str = "1234", url: str | None = None) -> Json:
    return base(mid, from_, "image",
                image=media(media_id, "image/jpeg", caption=caption, url=url))


def video_message(mid: str, from_: str = CUSTOMER, caption: str | None = None) -> Json:
    return base(mid, from_, "video", video=media("777", "video/mp4", caption=caption))


def audio_message(mid: str, from_: str = CUSTOMER, voice: bool = True) -> Json:
    return base(mid, from_, "audio",
                audio=media("555", "audio/ogg; codecs=opus", voice=voice))


def document_message(mid: str, from_: str = CUSTOMER, filename: str = "invoice.pdf",
                     caption: str | None = "March") -> Json:
    return base(mid, from_, "document", document=media(
        "888", "application/pdf", filename=filename, caption=caption))


def sticker_message(mid: str, from_: str = CUSTOMER, animated: bool = False) -> Json:
    return base(mid, from_, "sticker",
                sticker=media("999", "image/webp", animated=animated))


def location_message(mid: str, from_: str = CUSTOMER, name: str | None = "Cubbon Park",
                     address: str | None = "Kasturba Road, Bengaluru") -> Json:
    place = {"latitude": 12.9763, "longitude": 77.5929, "name": name, "address": address,
             "url": "https://maps.example/cubbon"}
    return base(mid, from_, "location", location={k: v for k, v in place.items() if v})


def contacts_message(mid: str, from_: str = CUSTOMER) -> Json:
    card = {"name": {"formatted_name": "Ravi Kumar", "first_name": "Ravi", "last_name": "Kumar"},
            "phones": [{"phone": "+91 98765 43210", "wa_id": "919876543210", "type": "CELL"}],
            "emails": [{"email": "ravi@example.com", "type": "WORK"}]}
    return base(mid, from_, "contacts", contacts=[card])


def button_reply_message(mid: str, from_: str = CUSTOMER, reply_id: str = "yes-1",
                         title: str = "Yes") -> Json:
    return base(mid, from_, "interactive", context={"from": BUSINESS, "id": "wamid.question"},
                interactive={"type": "button_reply",
                             "button_reply": {"id": reply_id, "title": title}})


def list_reply_message(mid: str, from_: str = CUSTOMER) -> Json:
    row = {"id": "slot-2", "title": "Tuesday 10:00", "description": "Dr. Rao"}
    return base(mid, from_, "interactive",
                interactive={"type": "list_reply", "list_reply": row})


def nfm_reply_message(mid: str, from_: str = CUSTOMER,
                      response_json: str = '{"name": "Asha", "flow_token": "t1"}') -> Json:
    reply = {"response_json": response_json, "body": "Sent", "name": "flow"}
    return base(mid, from_, "interactive", interactive={"type": "nfm_reply", "nfm_reply": reply})


def call_permission_message(mid: str, from_: str = CUSTOMER) -> Json:
    reply = {"response": "accept", "expiration_timestamp": 1753186982,
             "response_source": "user_action"}
    return base(mid, from_, "interactive", interactive={
        "type": "call_permission_reply", "call_permission_reply": reply})


def button_message(mid: str, from_: str = CUSTOMER, text: str = "Stop promotions") -> Json:
    return base(mid, from_, "button", context={"from": BUSINESS, "id": "wamid.template"},
                button={"payload": "STOP", "text": text})


def reaction_message(mid: str, target: str, emoji: str | None = "😮",
                     from_: str = CUSTOMER) -> Json:
    reaction = {"message_id": target}
    if emoji is not None:
        reaction["emoji"] = emoji
    return base(mid, from_, "reaction", reaction=reaction)


def order_message(mid: str, from_: str = CUSTOMER) -> Json:
    items = [{"product_retailer_id": "SKU-1", "quantity": 2, "item_price": 100,
              "currency": "INR"},
             {"product_retailer_id": "SKU-2", "quantity": 1, "item_price": 50, "currency": "INR"}]
    return base(mid, from_, "order", order={"catalog_id": "cat-9", "text": "Deliver by 6",
                                            "product_items": items})


def system_message(mid: str, from_: str = CUSTOMER, new_wa_id: str = "16505550000") -> Json:
    body = f"User {from_} changed from {from_} to {new_wa_id}"
    return base(mid, from_, "system",
                system={"body": body, "type": "user_changed_number", "wa_id": new_wa_id})


def edit_message(mid: str, original: str, inner: Json, from_: str = CUSTOMER) -> Json:
    """`inner` is a message body such as {"type": "text", "text": {...}}."""
    return base(mid, from_, "edit", edit={"original_message_id": original, "message": inner})


def revoke_message(mid: str, original: str, from_: str = CUSTOMER) -> Json:
    return base(mid, from_, "revoke", revoke={"original_message_id": original})


def unsupported_message(mid: str, from_: str = CUSTOMER, inner_type: str | None = "poll") -> Json:
    error = {"code": 131051, "title": "Message type unknown", "message": "Message type unknown",
             "error_data": {"details": "Message type is currently not supported."}}
    more: Json = {"errors": [error]}
    if inner_type is not None:
        more["unsupported"] = {"type": inner_type}
    return base(mid, from_, "unsupported", **more)


def placeholder_message(mid: str, from_: str = CUSTOMER) -> Json:
    return base(mid, from_, "media_placeholder", history_context={"status": "READ"})


def echo(mid: str, to: str | None, body: str = "On our way", from_: str = BUSINESS,
         **more: Any) -> Json:
    """A message the business typed in the Business app (smb_message_echoes, §6a); with
    to=None only `to_user_id` (a BSUID, §9) names the customer."""
    item: Json = {"from": from_, "id": mid, "timestamp": TS, "type": "text",
                  "text": {"body": body}, **more}
    if to is not None:
        item["to"] = to
    return item


# -- what the business sends from a template or as an interactive message (echoes, §6a) ----
# Meta's smb_message_echoes reference [M-ECHO]: the `<MESSAGE_TYPE>` object "will vary based on
# the message type ... See Sending messages for examples": an echo carries the send request's
# object. Meta shows no template or interactive echo: these follow the send request (sources
# on each) and the shapes plugins.whatsapp.outbound also accepts (UNSURE ones marked).

# The send request's template object: Meta's WhatsApp Node.js SDK "Template Object"
# (whatsapp.github.io/WhatsApp-Nodejs-SDK/api-reference/types/TemplateObject): image header,
# body text/currency/date_time parameters, quick-reply and URL buttons; YCloud's
# whatsapp.smb.message.echoes reference relays the same `template` (docs.ycloud.com).
TEMPLATE_SENT: Json = {
    "name": "order_confirmation", "language": {"policy": "deterministic", "code": "en_US"},
    "components": [
        {"type": "header", "parameters": [{"type": "image",
                                           "image": {"link": "https://example.com/sofa.jpg"}}]},
        {"type": "body", "parameters": [
            {"type": "text", "text": "Asha"},
            {"type": "currency", "currency": {"fallback_value": "₹24,999", "code": "INR",
                                              "amount_1000": 24999000}},
            {"type": "date_time", "date_time": {"fallback_value": "Friday 12 December"}}]},
        {"type": "button", "sub_type": "quick_reply", "index": "0",
         "parameters": [{"type": "payload", "payload": "CONFIRM"}]},
        {"type": "button", "sub_type": "url", "index": "1",
         "parameters": [{"type": "text", "text": "track/8812"}]}]}
# Named parameters (`parameter_name`, Meta's send request for NAMED templates; Kapso's
# "Simple text" example, docs.kapso.ai) and a document header with its file name.
TEMPLATE_NAMED: Json = {
    "name": "quote_ready", "language": {"code": "en"},
    "components": [
        {"type": "header", "parameters": [{"type": "document", "document": {
            "link": "https://example.com/q.pdf", "filename": "quote-8812.pdf"}}]},
        {"type": "body", "parameters": [
            {"type": "text", "parameter_name": "customer_name", "text": "Asha"},
            {"type": "text", "parameter_name": "order_number", "text": "Q-8812"}]}]}
# UNSURE: the Message Templates API's own shape (capital types, the template's text, button
# labels; AWS End User Messaging "CreateWhatsAppMessageTemplate" examples) with `language`
# as a plain string, should an echo carry the template as defined rather than as sent.
TEMPLATE_AS_DEFINED: Json = {
    "name": "welcome_back", "language": "en_US",
    "components": [
        {"type": "HEADER", "format": "TEXT", "text": "Welcome back"},
        {"type": "BODY", "text": "Hi Asha,\nyour annual plan renews on Friday."},
        {"type": "FOOTER", "text": "Reply STOP to opt out"},
        {"type": "BUTTONS", "buttons": [{"type": "QUICK_REPLY", "text": "Renew now"},
                                        {"type": "URL", "text": "See plans",
                                         "url": "https://example.com/plans"}]}]}


def template_echo(mid: str, to: str | None, template: Json | None = None,
                  **more: Any) -> Json:
    """A template the business sent (smb_message_echoes); template=None leaves the object
    out (UNSURE: a type with no object, as the 131000 interactive fixture shows for
    inbound, reference §3)."""
    item = echo(mid, to, **more)
    item.pop("text")
    item["type"] = "template"
    if template is not None:
        item["template"] = template
    return item


# The send request's interactive objects (Meta's "Interactive reply buttons", "Interactive
# list" and "Interactive CTA URL button" messages; YCloud's echo reference lists
# interactive.action.sections[].rows[] and action.parameters).
SENT_BUTTONS: Json = {
    "type": "button", "body": {"text": "Which day suits you for the demo?"},
    "action": {"buttons": [{"type": "reply", "reply": {"id": "tue", "title": "Tuesday"}},
                           {"type": "reply", "reply": {"id": "wed", "title": "Wednesday"}}]}}
SENT_LIST: Json = {
    "type": "list", "header": {"type": "text", "text": "Demo slots"},
    "body": {"text": "Pick a time"}, "footer": {"text": "All times IST"},
    "action": {"button": "See slots", "sections": [
        {"title": "Tuesday", "rows": [{"id": "t10", "title": "Tue 10:00"},
                                      {"id": "t15", "title": "Tue 15:00",
                                       "description": "with Priya"}]}]}}
SENT_LINK: Json = {
    "type": "cta_url", "header": {"type": "image", "image": {"link": "https://example.com/o.jpg"}},
    "body": {"text": "Our Friday offer"},
    "action": {"name": "cta_url", "parameters": {"display_text": "See offer",
                                                 "url": "https://example.com/offer"}}}


def interactive_echo(mid: str, to: str | None, interactive: Json, **more: Any) -> Json:
    """An interactive message the business sent (smb_message_echoes)."""
    item = echo(mid, to, **more)
    item.pop("text")
    item.update(type="interactive", interactive=interactive)
    return item


def historical(mid: str, from_: str, body: str, status: str = "READ") -> Json:
    return text_message(mid, from_, body, history_context={"status": status})


def escaped_body(data: Json) -> bytes:
    """Compact JSON bytes with non-ASCII escaped as \\uXXXX and '/' as '\\/', as Meta sends."""
    return json.dumps(data, ensure_ascii=True, separators=(",", ":")).replace("/", "\\/").encode()


# -- identity (reference §9), groups and failures ------------------------------------------

PARENT_BSUID = "US.ENT.11815799212886844830"
GROUP = "120363024862513401"  # an opaque group id, as Meta's group webhook reference shows


def bsuid_text_message(mid: str, user_id: str = BSUID, body: str = "hello",
                       parent_user_id: str | None = None, from_: str | None = None,
                       **more: Any) -> Json:
    """A text from a user known by BSUID (§4 `from_user_id` / `from_parent_user_id`, §9):
    `from` (the phone) is left out unless given, as for username users once live."""
    extra: Json = {"from_user_id": user_id}
    if parent_user_id is not None:
        extra["from_parent_user_id"] = parent_user_id
    return base(mid, from_, "text", text={"body": body}, **extra, **more)


def changed_number_message(mid: str, old: str, new: str, user_id: str | None = None,
                           previous_user_id: str | None = None) -> Json:
    """System `user_changed_number` (§4 system row; M-SYS, M-CHG): sent from the old
    number, `system.wa_id` the new one, and since 2026-08-11 `previous_user_id`."""
    system: Json = {"body": f"User {old} changed from {old} to {new}",
                    "type": "user_changed_number", "wa_id": new}
    if previous_user_id is not None:
        system["previous_user_id"] = previous_user_id
    more: Json = {"from_user_id": user_id} if user_id is not None else {}
    return base(mid, old, "system", system=system, **more)


def changed_user_id_message(mid: str, from_: str | None, user_id: str,
                            previous_user_id: str) -> Json:
    """System `user_changed_user_id` (§4 system row, M-CHG 2026-08-11): the new BSUID in
    `from_user_id`, the old one in `system.previous_user_id`."""
    system = {"body": "User changed their user id", "type": "user_changed_user_id",
              "previous_user_id": previous_user_id}
    return base(mid, from_, "system", system=system, from_user_id=user_id)


def group_text_message(mid: str, group_id: str = GROUP, from_: str | None = CUSTOMER,
                       body: str = "hi all", **more: Any) -> Json:
    """A text a member sent to a group: `group_id` beside `from` (Meta's "Group messages
    webhook reference", webhooks/reference/messages/group)."""
    return base(mid, from_, "text", text={"body": body}, group_id=group_id, **more)


def group_status(mid: str, state: str = "delivered", group_id: str = GROUP,
                 participant: str = CUSTOMER, participant_user_id: str | None = None) -> Json:
    """A status of our message to a group (§5): recipient_type "group", recipient_id the
    group, recipient_participant_id / recipient_participant_user_id the member (LIB)."""
    more: Json = {"recipient_type": "group", "recipient_participant_id": participant}
    if participant_user_id is not None:
        more["recipient_participant_user_id"] = participant_user_id
    return status(mid, state, recipient=group_id, **more)


RE_ENGAGEMENT = {"code": 131047, "title": "Re-engagement message",
                 "message": "Re-engagement message",
                 "error_data": {"details": "Message failed to send because more than 24 hours "
                                           "have passed since the customer last replied."},
                 "href": "https://developers.facebook.com/docs/whatsapp/cloud-api/support/"
                         "error-codes/"}


def failed_status(mid: str, recipient: str = CUSTOMER, error: Json | None = None,
                  ts: str = TS, **more: Any) -> Json:
    """status `failed` with Meta's error object (§5 statuses[].errors)."""
    return status(mid, "failed", recipient=recipient, ts=ts,
                  errors=[error or RE_ENGAGEMENT], **more)


def referral(headline: str = "Spring sale", url: str = "https://fb.me/2ZulEu42P",
             clid: str = "ARAkLkA8rmlFeiCktEJQ-QTwRiyYHAFDLMNDBH0CD3qpjd0HR4irJ6LEkR7JwFF4"
             ) -> Json:
    """A click-to-WhatsApp ad referral (§4 `referral`, LIB message.json#referral)."""
    return {"source_url": url, "source_id": "120201234567890", "source_type": "ad",
            "headline": headline, "body": "Two for one", "media_type": "image",
            "image_url": "https://scontent.xx.fbcdn.net/ad.jpg", "ctwa_clid": clid}
