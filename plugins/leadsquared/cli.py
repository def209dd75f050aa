"""`bridge leadsquared ...`: run the simulator, check an account before syncing."""

from __future__ import annotations

import asyncio
import contextlib

import click

from bridge import CONFIG_OPTION, friendly, load
from plugins.leadsquared.simulator.switches import SWITCHES


def switch_options(command):  # noqa: ANN001, ANN201 - a click decorator
    """One --<switch> option per simulator switch; the default is the documented reading
    (else the strictest)."""
    for name, choices in reversed(SWITCHES.items()):
        command = click.option(f"--{name.replace('_', '-')}", name, type=click.Choice(choices),
                               default=choices[0], show_default=True,
                               help="see docs/leadsquared-simulator.md")(command)
    return command


@click.group("leadsquared")
def leadsquared() -> None:
    """LeadSquared sink: simulator and account check."""


@leadsquared.command("simulator")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8090, show_default=True, type=int)
@click.option("--access-key", default="sim-access-key", show_default=True)
@click.option("--secret-key", default="sim-secret-key", show_default=True)
@click.option("--seed-demo", is_flag=True, help="start with demo leads and opportunities")
@switch_options
def simulator(host: str, port: int, access_key: str, secret_key: str, seed_demo: bool,
              **switches: str) -> None:
    """Serve the LeadSquared API subset Chatbridge uses, in memory, until Ctrl-C."""
    from plugins.leadsquared.simulator import serve

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(host, port, access_key, secret_key, seed_demo=seed_demo, **switches))


@leadsquared.command("check")
@CONFIG_OPTION
@click.option("--phone", default=None, help="a lead's number (E.164) to test the phone lookup")
@click.option("--probe", is_flag=True,
              help="also tell, for each guess the sink depends on, which reading this account "
                   "shows (read-only; see docs/leadsquared-simulator.md)")
@friendly
def check(config_path: str, phone: str | None, probe: bool) -> None:
    """Verify keys, host, activity type, opportunity types and the phone lookup; say what
    the first sync would create. Changes nothing."""
    from plugins.leadsquared.checkup import run_check

    config, _ = load(config_path)
    section = config.plugin("leadsquared")
    if section is None:
        raise click.ClickException("plugins.leadsquared is not in the config (add it first)")
    ok = asyncio.run(run_check(section, click.echo, phone, probe))
    if not ok:
        raise SystemExit(1)


@click.command("demo")
@click.option("--port", default=8080, show_default=True, type=int, help="bridge port")
@click.option("--admin-token", default=None, help="status page token (default: a new one)")
@click.option("--interval", default="10s", show_default=True, help="sync interval")
@click.option("--workdir", default=None, type=click.Path(file_okay=False),
              help="where the demo's config and buffer go (default: a new temp dir)")
@friendly
def demo(port: int, admin_token: str | None, interval: str, workdir: str | None) -> None:
    """Try Chatbridge with no accounts: simulator, bridge and a stream of chats."""
    from pathlib import Path

    from plugins.leadsquared.demo import run_demo

    say = lambda line: click.echo(line)  # noqa: E731 - flush per line for pipes
    asyncio.run(run_demo(port, admin_token, interval, Path(workdir) if workdir else None, say))
