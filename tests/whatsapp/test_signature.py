"""X-Hub-Signature-256 checks over the raw body, with secret rotation, and the verify token."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from plugins.whatsapp.signature import sign, verify_signature, verify_token
from tests.whatsapp import payloads as p

SECRET, OLD = "3f1c0a9e8b7d6c5e4f3a2b1c0d9e8f7a", "old-secret"
BODY = p.escaped_body(p.envelope(p.message_change([p.text_message("wamid.s",
                                                                  body="नमस्ते 😀")])))


def test_sign_is_hmac_sha256_hex_of_the_body():
    expected = hmac.new(SECRET.encode(), BODY, hashlib.sha256).hexdigest()
    assert sign(BODY, SECRET) == "sha256=" + expected
    assert len(expected) == 64


def test_valid_signature():
    assert verify_signature(BODY, sign(BODY, SECRET), [SECRET])


def test_uppercase_hex_is_accepted():
    header = sign(BODY, SECRET)
    assert verify_signature(BODY, "sha256=" + header[7:].upper(), [SECRET])


def test_wrong_secret():
    assert not verify_signature(BODY, sign(BODY, "guess"), [SECRET])


@pytest.mark.parametrize("header", [None, ""])
def test_missing_header(header):
    assert not verify_signature(BODY, header, [SECRET])


def test_one_altered_body_byte():
    altered = bytearray(BODY)
    altered[len(BODY) // 2] ^= 0x01
    assert not verify_signature(bytes(altered), sign(BODY, SECRET), [SECRET])


def test_signature_over_reserialised_json_fails():
    assert b"\\u0928" in BODY  # non-ASCII arrives escaped, as Meta sends it
    reserialised = json.dumps(json.loads(BODY)).encode()
    assert json.loads(reserialised) == json.loads(BODY) and reserialised != BODY
    assert not verify_signature(BODY, sign(reserialised, SECRET), [SECRET])


def test_signature_over_unescaped_unicode_fails():
    unescaped = json.dumps(json.loads(BODY), ensure_ascii=False, separators=(",", ":")).encode()
    assert "नमस्ते".encode() in unescaped
    assert not verify_signature(BODY, sign(unescaped, SECRET), [SECRET])


def test_rotated_second_secret_is_accepted():
    assert verify_signature(BODY, sign(BODY, OLD), [SECRET, OLD])
    assert verify_signature(BODY, sign(BODY, SECRET), (SECRET, OLD))


def test_no_secrets_never_verifies():
    assert not verify_signature(BODY, sign(BODY, SECRET), [])


@pytest.mark.parametrize("mangle", [
    lambda h: "sha1=" + h[7:],                 # wrong prefix
    lambda h: "SHA256=" + h[7:],
    lambda h: h[7:],                            # no prefix
    lambda h: h[:-1],                           # 63 hex
    lambda h: h + "0",                          # 65 hex
    lambda h: h + "\n",
    lambda h: " " + h,
    lambda h: h[:-1] + "g",                     # not hex
    lambda h: "sha256=" + "é" * 64,
], ids=["sha1", "upper-prefix", "bare", "short", "long", "newline", "space", "non-hex",
        "non-ascii"])
def test_malformed_headers_are_refused(mangle):
    assert not verify_signature(BODY, mangle(sign(BODY, SECRET)), [SECRET])


def test_verify_token():
    assert verify_token("verify-me", "verify-me")
    assert verify_token("ümlaut", "ümlaut")
    assert not verify_token("verify-me ", "verify-me")
    assert not verify_token(None, "verify-me")
    assert not verify_token("", "")
    assert not verify_token("ü", "u")
