"""LeadSquared CRM sink plugin (and a faithful LeadSquared simulator)."""

from __future__ import annotations

from typing import Any

from bridge import hookimpl


@hookimpl
def register_config_sections() -> dict[str, Any]:
    from plugins.leadsquared.config import LeadSquaredConfig

    return {"leadsquared": LeadSquaredConfig}


@hookimpl
def register_sinks(context: Any) -> list[Any]:
    from plugins.leadsquared.sink import LeadSquaredSink

    section = context.plugin_config("leadsquared")
    return [LeadSquaredSink(section, context.metrics)] if section is not None else []


@hookimpl
def register_commands() -> list[Any]:
    from plugins.leadsquared.cli import demo, leadsquared

    return [leadsquared, demo]
