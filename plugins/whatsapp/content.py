"""The type-specific part of a WhatsApp message (text, media, location, ...)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bridge import Media
from plugins.whatsapp.outbound import is_sent_interactive, read_sent_interactive, read_template
from plugins.whatsapp.readers import (
    BadField,
    as_dict,
    opt_bool,
    opt_dict,
    opt_list,
    opt_number,
    opt_scalar,
    opt_str,
    req_dict,
    text_or_none,
)

MEDIA_KINDS = ("image", "video", "document", "sticker", "audio")


@dataclass
class Content:
    """The type-specific part of a message."""

    kind: str
    text: str = ""
    media: Media | None = None
    reply_to: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# -- content by type -----------------------------------------------------------------------

def read_content(obj: dict[str, Any]) -> Content:
    """Kind, text, media, reply-to and extras; a broken known type becomes "unsupported"."""
    kind = obj.get("type")
    reader = _TYPES.get(kind) if isinstance(kind, str) else None
    try:
        content = reader(obj, kind) if reader else unsupported(obj)
        _apply_context(content, obj.get("context"))
    except BadField:
        return unsupported(obj, malformed=True)
    return content


def unsupported(obj: dict[str, Any], *, malformed: bool = False) -> Content:
    """Unknown or broken type; `type: unsupported` may name the real one (e.g. "poll"),
    else its type is not known (None: "unsupported" is no type a reader can act on)."""
    kind, inner = obj.get("type"), obj.get("unsupported")
    if kind == "unsupported" and not malformed:
        found = inner.get("type") if isinstance(inner, dict) else None
        kind = found if text_or_none(found) else None
    extra: dict[str, Any] = {"unsupported_type": kind if isinstance(kind, str) else None}
    if malformed:
        extra["malformed"] = True
    return Content("unsupported", extra=extra)


def _apply_context(content: Content, context: object) -> None:
    """Quoted message, forwarding flags and product inquiries."""
    if context is None:
        return
    if not isinstance(context, dict):
        raise BadField("context")
    quoted = opt_str(context, "id")
    if content.reply_to is None and quoted:
        content.reply_to = quoted
    for flag in ("forwarded", "frequently_forwarded"):
        if context.get(flag) is True:
            content.extra[flag] = True
    product = opt_dict(context, "referred_product")
    if product is not None:
        content.extra["referred_product"] = product


def _text(obj: dict[str, Any], kind: str) -> Content:
    body = opt_str(req_dict(obj, "text"), "body")
    if body is None:
        raise BadField("text.body")
    return Content("text", text=body)


def _media(obj: dict[str, Any], kind: str) -> Content:
    data = req_dict(obj, kind)
    media = Media(
        id=opt_str(data, "id"), mime_type=opt_str(data, "mime_type"),
        sha256=opt_str(data, "sha256"),  # opaque: hex or base64 depending on the payload
        url=opt_str(data, "url"), filename=opt_str(data, "filename"),
        caption=opt_str(data, "caption"), voice=opt_bool(data, "voice"),
        animated=opt_bool(data, "animated"),
    )
    return Content(kind, text=media.caption or "", media=media)


def _location(obj: dict[str, Any], kind: str) -> Content:
    data = req_dict(obj, "location")
    place = {key: opt_number(data, key) for key in ("latitude", "longitude")}
    if None in place.values():
        raise BadField("location")
    place.update({key: opt_str(data, key) for key in ("name", "address", "url")})
    return Content("location", extra={"location": place})


def _contacts(obj: dict[str, Any], kind: str) -> Content:
    cards = obj.get("contacts")
    if not isinstance(cards, list):
        raise BadField("contacts")
    return Content("contacts", extra={"contacts": [_card(as_dict(c)) for c in cards]})


def _card(card: dict[str, Any]) -> dict[str, Any]:
    # Doubt: only name and phones appear in fixtures; emails are read as Meta documented
    # them from memory ({"email": ..., "type": ...}).
    name = opt_dict(card, "name") or {}
    phones = [opt_str(as_dict(p), "phone") for p in opt_list(card, "phones")]
    emails = [opt_str(as_dict(e), "email") for e in opt_list(card, "emails")]
    return {"name": opt_str(name, "formatted_name"),
            "phones": [p for p in phones if p], "emails": [e for e in emails if e]}


def _interactive(obj: dict[str, Any], kind: str) -> Content:
    """A reply to buttons, a list, a Flow or a call-permission request; or, in an echo or
    history, the buttons, list or link the business sent (plugins.whatsapp.outbound)."""
    data = opt_dict(obj, "interactive")
    if data is None:  # seen beside a 131000 "Unsupported webhook payload" error
        return Content("interactive", extra={"interactive": {"type": None, "id": None,
                                                              "title": None}})
    if is_sent_interactive(data):
        info = read_sent_interactive(data)
        return Content("interactive", text=info["body"] or "", extra={"interactive": info})
    subtype = opt_str(data, "type")
    info = {"type": subtype, **_REPLIES.get(subtype or "", _other_reply)(data, subtype)}
    body = info.pop("body", None)  # a Flow reply has a body ("Sent") instead of a title
    text = info.get("title") or body or ""
    return Content("interactive", text=text, extra={"interactive": info})


def _choice(data: dict[str, Any], subtype: str | None) -> dict[str, Any]:
    reply = req_dict(data, subtype or "")
    info = {"id": opt_str(reply, "id"), "title": opt_str(reply, "title")}
    description = opt_str(reply, "description")
    if description is not None:
        info["description"] = description
    return info


def _flow(data: dict[str, Any], subtype: str | None) -> dict[str, Any]:
    reply = req_dict(data, "nfm_reply")
    return {"id": None, "title": None, "name": opt_str(reply, "name"),
            "body": opt_str(reply, "body"), "response": _json(opt_str(reply, "response_json"))}


def _other_reply(data: dict[str, Any], subtype: str | None) -> dict[str, Any]:
    """Unknown subtypes (and call_permission_reply): take what fits, raw keeps the rest."""
    reply = data.get(subtype) if subtype else None
    reply = reply if isinstance(reply, dict) else {}
    info: dict[str, Any] = {"id": text_or_none(reply.get("id")),
                            "title": text_or_none(reply.get("title"))}
    if text_or_none(reply.get("response")):
        info["response"] = reply["response"]
    return info


_REPLIES: dict[str, Callable[[dict[str, Any], str | None], dict[str, Any]]] = {
    "button_reply": _choice, "list_reply": _choice, "nfm_reply": _flow,
}


def _json(text: str | None) -> dict[str, Any] | str | None:
    """A Flow's response_json as a dict, or the string itself when it is not a JSON object."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return text
    return value if isinstance(value, dict) else text


def _button(obj: dict[str, Any], kind: str) -> Content:
    data = req_dict(obj, "button")
    text = opt_str(data, "text")
    return Content("button", text=text or "",
                    extra={"button": {"payload": opt_str(data, "payload"), "text": text}})


def _reaction(obj: dict[str, Any], kind: str) -> Content:
    """An empty or missing emoji means the reaction was removed."""
    data = req_dict(obj, "reaction")
    emoji = opt_str(data, "emoji") or None
    return Content("reaction", text=emoji or "", reply_to=opt_str(data, "message_id"),
                    extra={"reaction": {"emoji": emoji, "removed": emoji is None}})


def _order(obj: dict[str, Any], kind: str) -> Content:
    data = req_dict(obj, "order")
    items = [_order_item(as_dict(i)) for i in opt_list(data, "product_items")]
    return Content("order", text=opt_str(data, "text") or "",
                    extra={"order": {"catalog_id": opt_str(data, "catalog_id"), "items": items}})


def _order_item(item: dict[str, Any]) -> dict[str, Any]:
    return {"product_retailer_id": opt_str(item, "product_retailer_id"),
            "quantity": opt_scalar(item, "quantity"),
            "item_price": opt_scalar(item, "item_price"), "currency": opt_str(item, "currency")}


def _system(obj: dict[str, Any], kind: str) -> Content:
    """Number or user-id changes; every string key but the body is kept (wa_id, user ids)."""
    data = req_dict(obj, "system")
    info = {"type": opt_str(data, "type")}
    info.update({k: v for k, v in data.items() if k not in ("body", "type") and text_or_none(v)})
    content = Content("system", text=opt_str(data, "body") or "", extra={"system": info})
    if isinstance(obj.get("identity"), dict):  # customer_identity_changed
        content.extra["identity"] = obj["identity"]
    return content


def _edit(obj: dict[str, Any], kind: str) -> Content:
    """The edited message's new text and media; an edit of an edit is not followed."""
    data = req_dict(obj, "edit")
    original = opt_str(data, "original_message_id")
    inner = opt_dict(data, "message") or {}
    inner_kind = opt_str(inner, "type")
    reader = None if inner_kind in ("edit", "revoke") else _TYPES.get(inner_kind or "")
    new = reader(inner, inner_kind) if reader and inner_kind else Content("edit")
    return Content("edit", text=new.text, media=new.media, reply_to=original,
                    extra={"edit": {"original_id": original, "kind": inner_kind}})


def _revoke(obj: dict[str, Any], kind: str) -> Content:
    original = opt_str(req_dict(obj, "revoke"), "original_message_id")
    return Content("revoke", reply_to=original, extra={"revoke": {"original_id": original}})


def _template(obj: dict[str, Any], kind: str) -> Content:
    """A template the business sent (echo or history): never "unsupported", whatever the
    shape of its object (plugins.whatsapp.outbound; raw keeps the object)."""
    info = read_template(obj.get("template"))
    return Content("template", text=info["body"] or "", extra={"template": info})


def _placeholder(obj: dict[str, Any], kind: str) -> Content:
    """History sync media without content; a later history webhook may describe it."""
    return Content("media_placeholder")


_TYPES: dict[str, Callable[[dict[str, Any], str], Content]] = {
    "text": _text, **dict.fromkeys(MEDIA_KINDS, _media), "location": _location,
    "contacts": _contacts, "interactive": _interactive, "button": _button,
    "reaction": _reaction, "order": _order, "system": _system, "edit": _edit,
    "revoke": _revoke, "media_placeholder": _placeholder, "template": _template,
}
