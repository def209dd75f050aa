"""Nothing gets in without Meta's signature; the verify token cannot be guessed or timed.

Decided behaviour (Meta sends `sha256=` + 64 lowercase hex digits): the prefix must be
exactly `sha256=`; the hex digits are compared case-insensitively (uppercase hex of the
right digest is the same signature, so it is accepted, consistently); anything else -
another prefix, another length, a signature of other bytes - is a 401 and stores nothing.
(Whitespace around the header value is not part of it in HTTP; aiohttp strips it.)
"""

from __future__ import annotations

import ast
import hashlib
import hmac
import inspect
import json
import secrets
import string
import textwrap

import aiohttp
import pytest

from bridge.app import BRIDGE, create_app
from bridge.plugins import get_plugin_manager, load_config
from plugins.whatsapp import signature
from plugins.whatsapp.signature import sign
from tests.whatsapp import payloads as p

SECRET, OLD_SECRET, TOKEN = "sec-app-secret", "sec-old-secret", "sec-verify-token-0123456789"
PATH = "/webhooks/whatsapp"


@pytest.fixture
async def bridge(tmp_path, serve):
    config = tmp_path / "config.yaml"
    config.write_text(f"buffer: {{path: {tmp_path}/b.db}}\nplugins:\n  whatsapp:\n"
                      f"    verify_token: {TOKEN}\n    app_secret: [{SECRET}, {OLD_SECRET}]\n")
    pm = get_plugin_manager()
    app = create_app(load_config(config, pm), pm)
    url = await serve(app)
    async with aiohttp.ClientSession() as http:
        yield url, app, http


async def post(bridge, body: bytes, signature_header: str | None) -> tuple[int, str]:
    url, _, http = bridge
    headers = {"Content-Type": "application/json"}
    if signature_header is not None:
        headers["X-Hub-Signature-256"] = signature_header
    async with http.post(url + PATH, data=body, headers=headers) as response:
        return response.status, await response.text()


async def stored(bridge) -> list[str]:
    return sorted(m.provider_id for m in await bridge[1][BRIDGE].buffer.messages())


def body_of(mid: str, text: str = "héllo नमस्ते") -> bytes:
    # Meta escapes non-ASCII as \uXXXX: re-serialising without escapes changes the bytes.
    return json.dumps(p.envelope(p.message_change([p.text_message(mid, body=text)])),
                      ensure_ascii=True).encode()


def bypass_attempts(body: bytes) -> dict[str, tuple[bytes, str | None]]:
    good = sign(body, SECRET)
    digest = good[len("sha256="):]
    reserialised = json.dumps(json.loads(body), ensure_ascii=False).encode()
    compact = json.dumps(json.loads(body), separators=(",", ":")).encode()
    return {
        "missing header": (body, None),
        "empty header": (body, ""),
        "prefix only": (body, "sha256="),
        "sha1= prefix, right digest": (body, "sha1=" + digest),
        "sha1= prefix, sha1 digest": (body, "sha1=" + hmac.new(
            SECRET.encode(), body, hashlib.sha1).hexdigest()),
        "no prefix": (body, digest),
        "uppercase prefix": (body, "SHA256=" + digest),
        "space after =": (body, "sha256= " + digest),
        "trailing garbage": (body, good + "00"),
        "two signatures": (body, good + "," + good),
        "63 hex digits": (body, good[:-1]),
        "65 hex digits": (body, good + "0"),
        "128 hex digits (sha512 length)": (body, good + digest),
        "non-hex digit": (body, good[:-1] + "g"),
        "all zeros": (body, "sha256=" + "0" * 64),
        "wrong secret": (body, sign(body, "not-the-secret")),
        "empty secret": (body, sign(body, "")),
        "signature of another body": (body, sign(body_of("wamid.other"), SECRET)),
        "signature of the body plus a space": (body, sign(body + b" ", SECRET)),
        "signature of the re-serialised body": (body, sign(reserialised, SECRET)),
        "signature of the compacted body": (body, sign(compact, SECRET)),
        "plain SHA-256 of the body": (body, "sha256=" + hashlib.sha256(body).hexdigest()),
        "HMAC keyed with the body": (body, "sha256=" + hmac.new(
            body, SECRET.encode(), hashlib.sha256).hexdigest()),
        "right signature, body changed after signing": (body.replace(b"wamid", b"wamiD"), good),
        "right signature, body cut short": (body[:-1], good),
    }


async def test_every_bypass_attempt_gets_401_and_stores_nothing(bridge):
    body = body_of("wamid.bypass")
    assert reserialised_differs(body)
    for case, (data, header) in bypass_attempts(body).items():
        status, text = await post(bridge, data, header)
        assert status == 401, case
        assert "X-Hub-Signature-256" in text, case
    assert await stored(bridge) == []
    status, _ = await post(bridge, body, sign(body, SECRET))  # the control: it does work
    assert status == 200
    assert await stored(bridge) == ["wamid.bypass"]


def reserialised_differs(body: bytes) -> bool:
    return json.dumps(json.loads(body), ensure_ascii=False).encode() != body


async def test_hex_case_is_ignored_consistently(bridge):
    """Uppercase or mixed-case hex of the right digest is the same signature: accepted."""
    for n, transform in enumerate([str.upper, str.lower, lambda h: h[:32].upper() + h[32:]]):
        body = body_of(f"wamid.case{n}")
        digest = sign(body, SECRET)[len("sha256="):]
        status, _ = await post(bridge, body, "sha256=" + transform(digest))
        assert status == 200
    assert await stored(bridge) == ["wamid.case0", "wamid.case1", "wamid.case2"]


async def test_either_rotated_secret_signs_but_not_a_mix(bridge):
    body = body_of("wamid.rotated")
    assert (await post(bridge, body, sign(body, OLD_SECRET)))[0] == 200
    mixed = sign(body, SECRET)[:39] + sign(body, OLD_SECRET)[39:]
    assert (await post(bridge, body_of("wamid.mixed"), mixed))[0] == 401
    assert await stored(bridge) == ["wamid.rotated"]


async def handshake(bridge, token: str | None, mode: str = "subscribe") -> tuple[int, str]:
    url, _, http = bridge
    params = {"hub.mode": mode, "hub.challenge": "8472"}
    if token is not None:
        params["hub.verify_token"] = token
    async with http.get(url + PATH, params=params) as response:
        return response.status, await response.text()


async def test_verify_token_guessing_gets_403_and_the_right_token_still_works(bridge):
    guesses = ["", " ", TOKEN[:-1], TOKEN + "x", TOKEN.upper(), TOKEN[1:], " " + TOKEN,
               TOKEN + " ", TOKEN[::-1], TOKEN.replace("0", "O"), "null", "undefined",
               "*", "%", "' OR '1'='1", TOKEN + "\x00", "\u200b" + TOKEN]
    alphabet = string.ascii_letters + string.digits + "-_"
    guesses += ["".join(secrets.choice(alphabet) for _ in range(len(TOKEN))) for _ in range(200)]
    for guess in guesses:
        status, text = await handshake(bridge, guess)
        assert status == (400 if "\x00" in guess else 403), repr(guess)  # 400: a control char
        assert "8472" not in text
    assert (await handshake(bridge, None))[0] == 403
    assert (await handshake(bridge, TOKEN, mode="unsubscribe"))[0] == 403
    assert await handshake(bridge, TOKEN) == (200, "8472")  # not locked out by the guesses


# -- timing safety: a static check of how digests and tokens are compared --------------------

def _function(module, name: str) -> ast.FunctionDef | ast.AsyncFunctionDef:
    tree = ast.parse(textwrap.dedent(inspect.getsource(module)))
    return next(n for n in ast.walk(tree)
                if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == name)


def _calls(node: ast.AST) -> set[str]:
    return {ast.unparse(n.func) for n in ast.walk(node) if isinstance(n, ast.Call)}


def _equality_tests(node: ast.AST) -> list[str]:
    """`==`/`!=`/`in` tests (which stop at the first differing byte) in `node`."""
    return [ast.unparse(n) for n in ast.walk(node) if isinstance(n, ast.Compare)
            and any(isinstance(op, ast.Eq | ast.NotEq | ast.In | ast.NotIn | ast.Is | ast.IsNot)
                    for op in n.ops)]


@pytest.mark.parametrize(("module", "name"), [
    (signature, "verify_signature"),
    (signature, "verify_token"),
])
def test_secrets_are_compared_in_constant_time(module, name):
    function = _function(module, name)
    assert "hmac.compare_digest" in _calls(function), f"{name} must use hmac.compare_digest"
    assert _equality_tests(function) == [], f"{name} compares a secret with =="


def test_every_secret_comparison_in_the_code_is_constant_time():
    """Admin token, login form, CSRF token: compare_digest, never ==. (Session cookies are
    random ids looked up by their SHA-256 in bridge/sessions.py: nothing secret is compared.)"""
    from bridge import page, security

    for module, names in ((security, ("token_ok",)),
                          (page, ("login", "_check_form"))):
        for name in names:
            function = _function(module, name)
            assert {"hmac.compare_digest"} & _calls(function), name
            assert not [t for t in _equality_tests(function)
                        if any(w in t for w in ("token", "signature", "expected", "csrf"))], name
    for name in ("requeue", "requeue_conversation", "purge"):  # every form that changes state
        assert "_check_form" in _calls(_function(page, name)), f"{name} skips the CSRF check"


def test_every_secret_is_tried_even_after_a_match():
    """verify_signature must not return early on the first secret (which secret matched
    would leak through timing); it folds every comparison into one result."""
    function = _function(signature, "verify_signature")
    loop = next(n for n in ast.walk(function) if isinstance(n, ast.For))
    assert not [n for n in ast.walk(loop) if isinstance(n, ast.Return | ast.Break)]
