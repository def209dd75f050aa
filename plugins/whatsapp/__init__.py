"""WhatsApp Business Platform (Cloud API) source plugin."""

from __future__ import annotations

from typing import Any

from bridge import hookimpl


@hookimpl
def register_config_sections() -> dict[str, Any]:
    from plugins.whatsapp.config import WhatsAppConfig

    return {"whatsapp": WhatsAppConfig}


@hookimpl
def register_sources(context: Any) -> list[Any]:
    from plugins.whatsapp.webhook import WhatsAppSource

    section = context.plugin_config("whatsapp")
    return [WhatsAppSource(section, context.metrics)] if section is not None else []


@hookimpl
def register_commands() -> list[Any]:
    from plugins.whatsapp.cli import whatsapp

    return [whatsapp]
