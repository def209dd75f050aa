"""What the business itself sends, as echoes (`smb_message_echoes`) and history carry it:
template messages, and interactive messages (buttons, lists, links ...) it sent.

Shapes. Meta's smb_message_echoes reference [M-ECHO] says an echo's `<MESSAGE_TYPE>` object
"will vary based on the message type ... See Sending messages for examples of payloads for
each message type": the object is the one a send request carries. For a template that is
`{"name", "language": {"code", "policy"?}, "components": [{"type": "header"|"body"|"button",
"sub_type"?, "index"?, "parameters": [{"type": "text", "text", "parameter_name"?} |
{"type": "currency", "currency": {"fallback_value", "code", "amount_1000"}} |
{"type": "date_time", "date_time": {"fallback_value"}} | {"type": "image"|"video"|"document",
...} | {"type": "payload", "payload"} | {"type": "coupon_code", "coupon_code"} ...]}]}` (Meta's
WhatsApp Node.js SDK, "Template Object", whatsapp.github.io/WhatsApp-Nodejs-SDK; the same
shape in YCloud's `whatsapp.smb.message.echoes` reference, docs.ycloud.com, whose echo
carries `template.language`, `template.components[].parameters[]` with image, gif, video,
document, limited_time_offer and action parameters). An interactive message the business
sent is the send request's `interactive` object: `{"type": "button"|"list"|"cta_url"|
"flow"|..., "header"?, "body": {"text"}, "footer"?, "action": {"buttons" | "button" +
"sections" | "name" + "parameters"}}` (YCloud's echo reference lists
`interactive.action.sections[].rows[]`, `action.parameters`).

UNSURE: Meta shows no template or interactive echo; the shape above is inferred from the
"see Sending messages" sentence and one provider's relay. So these are read leniently and
also in the shapes a relay or a later Graph version might plausibly use: `language` as a
plain string; component types in capitals with the template's own `text` (the Message
Templates API's shape: `{"type": "BODY", "text": "Hi {{1}}"}`, `{"type": "BUTTONS",
"buttons": [{"type": "QUICK_REPLY", "text": "Yes"}]}`); a resolved body at the top
(`template.text` / `template.body`); a top-level `language_code` (Zoom's relay of the send
object, developers.zoom.us "Extended API schema - WhatsApp template"); a named parameter's
name as `parameter_name` (the send request) or `parameterName` (Kapso's SDK, docs.kapso.ai
"Simple text", should a relay pass its spelling on). Nothing here raises: an odd part
reads as less detail and the message keeps its whole object in `raw`.
"""

from __future__ import annotations

from typing import Any

from plugins.whatsapp.readers import dicts, text_or_none

MEDIA = ("image", "video", "document", "gif", "location")
VALUE_LIMIT = 20  # parameters kept per template: a rep reads a few, raw keeps them all


def read_template(data: object) -> dict[str, Any]:
    """name, language, body (the text when the object carries it), header, values (the
    body's parameters: [name or None, value]), footer, buttons (labels or kinds), cards."""
    data = data if isinstance(data, dict) else {}
    info: dict[str, Any] = {"name": _scalar(data.get("name")),
                            "language": _language(data.get("language")
                                                  or data.get("language_code")),
                            "body": _scalar(data.get("text")) or _body_text(data.get("body")),
                            "header": None, "values": [], "footer": None, "buttons": []}
    for component in dicts(data.get("components")):
        _component(component, info)
    info["values"] = info["values"][:VALUE_LIMIT]
    return info


def _language(value: object) -> str | None:
    """`{"code": "en_US"}` as the send request has it, or a plain "en_US"."""
    if isinstance(value, dict):
        return _scalar(value.get("code"))
    return _scalar(value)


def _body_text(value: object) -> str | None:
    return _scalar(value.get("text")) if isinstance(value, dict) else _scalar(value)


def _component(component: dict[str, Any], info: dict[str, Any]) -> None:
    kind = (_scalar(component.get("type")) or "").lower()
    params = dicts(component.get("parameters"))
    own = _scalar(component.get("text"))  # the Templates API's shape: the template's own text
    if kind == "header":
        info["header"] = _header(component, params, own)
    elif kind == "body":
        info["body"] = info["body"] or own
        info["values"].extend(v for v in (_value(p) for p in params) if v[1])
    elif kind == "footer":
        info["footer"] = own
    elif kind in ("button", "buttons"):
        info["buttons"].extend(_buttons(component, params))
    elif kind == "carousel":
        info["cards"] = len(dicts(component.get("cards")))
    elif kind == "limited_time_offer":
        info["offer"] = True


def _header(component: dict[str, Any], params: list[dict[str, Any]],
            own: str | None) -> dict[str, Any] | None:
    """{"kind": text|image|video|document|gif|location, "text", "filename"}."""
    for param in params:
        kind = _scalar(param.get("type"))
        if kind == "text":
            return {"kind": "text", "text": _scalar(param.get("text"))}
        if kind in MEDIA:
            inner = param.get(kind) if isinstance(param.get(kind), dict) else {}
            return {"kind": kind, "filename": _scalar(inner.get("filename")),
                    "text": _scalar(inner.get("name"))}  # a location header's place name
    fmt = (_scalar(component.get("format")) or "").lower()
    if own or fmt:
        return {"kind": fmt if fmt in MEDIA else "text", "text": own}
    return None


def _value(param: dict[str, Any]) -> tuple[str | None, str | None]:
    """(its name for a named parameter, what the customer reads in its place)."""
    kind = _scalar(param.get("type"))
    name = _scalar(param.get("parameter_name")) or _scalar(param.get("parameterName"))
    inner = param.get(kind) if kind else None
    if kind in ("currency", "date_time") and isinstance(inner, dict):
        return name, _scalar(inner.get("fallback_value"))
    if kind in MEDIA:
        return name, None  # media is the header's, never a body's words
    return name, _scalar(inner) if kind else None


def _buttons(component: dict[str, Any], params: list[dict[str, Any]]) -> list[str]:
    """A button's label where the object has one (Templates API shape), else its kind
    (`quick_reply` → "quick reply", `url` → "link"); a copy-code button's code."""
    labels = [_scalar(b.get("text")) or _words(b.get("type"))
              for b in dicts(component.get("buttons"))]
    if labels:
        return [label for label in labels if label]
    kind = _words(component.get("sub_type")) or "button"
    code = next((_scalar(p.get("coupon_code")) for p in params
                 if _scalar(p.get("coupon_code"))), None)
    return [f"{kind} {code}" if code else kind]


_KIND_WORDS = {"url": "link", "quick_reply": "quick reply", "copy_code": "copy code",
               "voice_call": "call", "phone_number": "call", "mpm": "products",
               "flow": "form"}


def _words(value: object) -> str | None:
    text = _scalar(value)
    if not text:
        return None
    return _KIND_WORDS.get(text.lower(), text.lower().replace("_", " "))


# -- interactive messages the business sent ----------------------------------------------

def is_sent_interactive(data: dict[str, Any]) -> bool:
    """A send request's interactive object (the business's own), not a customer's reply:
    replies carry `<type>_reply` objects, never `action` or a `body` object."""
    return "action" in data or isinstance(data.get("body"), dict)


def read_sent_interactive(data: dict[str, Any]) -> dict[str, Any]:
    """type, body, header (its text) and header_kind (text, image ...), footer, options
    (button titles, list rows, a link's text and URL, a form's button), button (a list's
    button label), sent: True."""
    action = data.get("action") if isinstance(data.get("action"), dict) else {}
    header = data.get("header") if isinstance(data.get("header"), dict) else {}
    return {"type": _scalar(data.get("type")), "sent": True,
            "body": _body_text(data.get("body")), "footer": _body_text(data.get("footer")),
            "header": _scalar(header.get("text")), "header_kind": _scalar(header.get("type")),
            "button": _scalar(action.get("button")), "options": _options(action)}


def _options(action: dict[str, Any]) -> list[str]:
    buttons = [_scalar((b.get("reply") if isinstance(b.get("reply"), dict) else b).get("title"))
               for b in dicts(action.get("buttons"))]
    rows = [_scalar(r.get("title")) for s in dicts(action.get("sections"))
            for r in dicts(s.get("rows"))]
    params = action.get("parameters") if isinstance(action.get("parameters"), dict) else {}
    link = [_scalar(params.get(k)) for k in ("display_text", "url", "flow_cta")]
    return [o for o in buttons + rows + link if o][:VALUE_LIMIT]


def _scalar(value: object) -> str | None:
    """A string or number as text; None for anything else or an empty string."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return str(value)
    return text_or_none(value)
