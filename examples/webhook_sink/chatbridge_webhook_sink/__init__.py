"""Chatbridge sink plugin: each conversation batch as a signed JSON POST to your endpoint."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bridge import hookimpl

if TYPE_CHECKING:
    import click
    from bridge import Filter, PluginContext, Sink
    from pydantic import BaseModel

NAME = "webhook"  # the entry-point name: config section, sink name and CLI group


# Hooks import their modules lazily: every `bridge` command loads every installed plugin.
@hookimpl
def register_config_sections() -> dict[str, type[BaseModel]]:
    from chatbridge_webhook_sink.config import WebhookConfig

    return {NAME: WebhookConfig}


@hookimpl
def register_sinks(context: PluginContext) -> list[Sink]:
    from chatbridge_webhook_sink.sink import WebhookSink

    return [WebhookSink(context.plugin_config(NAME))]


@hookimpl
def register_filters(context: PluginContext) -> list[Filter]:
    from chatbridge_webhook_sink.filters import ExcludeNumbers

    numbers = context.plugin_config(NAME).exclude
    return [ExcludeNumbers(NAME, numbers)] if numbers else []


@hookimpl
def register_commands() -> list[click.Command]:
    from chatbridge_webhook_sink.cli import webhook

    return [webhook]
