"""httpx's one-shot calls (get, post, request, delete) with the TLS context built once.

Each one-shot httpx call builds a Client, and with it a TLS context loading certifi's CA
bundle: ~20 ms of CPU per call, even to http://127.0.0.1. The end-to-end tests poll
processes every 50-100 ms, so those contexts were a good part of the suite's CPU. These
send the same requests (a fresh client each call: no connections or cookies shared), with
the context httpx would build for verify=True made once.
"""

from __future__ import annotations

import ssl
from typing import Any

import certifi
import httpx

TLS = ssl.create_default_context(cafile=certifi.where())  # httpx's default (verify=True)


def request(method: str, url: str, **kwargs: Any) -> httpx.Response:
    """httpx.request, with the shared TLS context."""
    kwargs.setdefault("verify", TLS)
    return httpx.request(method, url, **kwargs)


def get(url: str, **kwargs: Any) -> httpx.Response:
    return request("GET", url, **kwargs)


def post(url: str, **kwargs: Any) -> httpx.Response:
    return request("POST", url, **kwargs)


def delete(url: str, **kwargs: Any) -> httpx.Response:
    return request("DELETE", url, **kwargs)
