"""LeadSquared CRM sink plugin (and, in its own package, a faithful LeadSquared simulator)."""

from __future__ import annotations

from typing import Any

from bridge import hookimpl


@hookimpl
def register_config_sections() -> dict[str, Any]:
    from plugins.leadsquared.config import LeadSquaredConfig

    return {"leadsquared": LeadSquaredConfig}


@hookimpl
def register_sinks(context: Any) -> list[Any]:
    section = context.plugin_config("leadsquared")
    return [make_sink(section, context.metrics)] if section is not None else []


@hookimpl
def register_commands() -> list[Any]:
    from plugins.leadsquared.cli import demo, leadsquared

    return [leadsquared, demo]


def make_sink(section: Any, metrics: Any = None) -> Any:
    """The sink for a config section; `host: simulator` gets the bundled simulator as its
    endpoint (started and stopped with the sink), so the sink never imports it."""
    from plugins.leadsquared.config import SIMULATOR
    from plugins.leadsquared.sink import LeadSquaredSink

    endpoint = None
    if section.host == SIMULATOR:
        from plugins.leadsquared.simulator.bundled import BundledSimulator

        endpoint = BundledSimulator(section.access_key, section.secret_key)
    return LeadSquaredSink(section, metrics, endpoint=endpoint)
