"""Chatbridge: WhatsApp Business webhooks to CRM activities, durably buffered."""

from bridge.contracts import (
    Batch,
    Filter,
    Ingest,
    Outcome,
    Sink,
    SinkSettings,
    Source,
    TargetFailure,
)
from bridge.hookspecs import hookimpl
from bridge.model import Conversation, Direction, Media, Message, StatusUpdate

__all__ = [
    "Batch", "Conversation", "Direction", "Filter", "Ingest", "Media", "Message", "Outcome",
    "Sink", "SinkSettings", "Source", "StatusUpdate", "TargetFailure", "hookimpl",
]
