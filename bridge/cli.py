"""The `bridge` command: run, check, status, sync-now, backfill, dead-letter, purge, plugins."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import re
import time
from collections.abc import Callable
from decimal import Decimal
from functools import wraps
from typing import TYPE_CHECKING, Any

import click

from bridge.errors import BridgeError
from bridge.plugins import describe_plugins, get_plugin_manager, load_config

if TYPE_CHECKING:
    from bridge.buffer import Buffer

CONFIG_OPTION = click.option(
    "-c", "--config", "config_path", default="config.yaml", envvar="BRIDGE_CONFIG",
    show_default=True, type=click.Path(dir_okay=False), help="YAML config file ($BRIDGE_CONFIG)",
)


def friendly(func: Callable[..., Any]) -> Callable[..., Any]:
    """Show domain errors as one clean line and exit 1, never a traceback."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except BridgeError as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper


def load(config_path: str) -> tuple[Any, Any]:
    """(config, plugin manager) for a config file."""
    pm = get_plugin_manager()
    return load_config(config_path, pm), pm


@click.group()
@click.version_option(package_name="chatbridge-crm")
@click.option("--log-level", default="INFO", show_default=True, envvar="BRIDGE_LOG_LEVEL",
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
              help="least severe level logged ($BRIDGE_LOG_LEVEL)")
@click.option("--log-format", default="text", show_default=True, envvar="BRIDGE_LOG_FORMAT",
              type=click.Choice(["text", "json"], case_sensitive=False),
              help="text lines, or one JSON object per line with ts, level, logger, msg "
                   "($BRIDGE_LOG_FORMAT)")
def cli(log_level: str, log_format: str) -> None:
    """Chatbridge: WhatsApp Business conversations into your CRM."""
    from bridge.logs import setup_logging

    setup_logging(log_level, log_format.lower())


GC_YOUNG_THRESHOLD = 10_000  # Python's default is 700


def settle_heap() -> None:
    """Tune the cyclic GC for a long-running server (`bridge run` only; tests keep defaults).

    At 64 webhooks in flight their parsed bodies alone are ~3,000 live containers, so at
    the default threshold the young collection ran ~140 times a second, each finding
    nothing to free, and the older passes it set off swept the ~56,000 objects imports
    leave behind: 8 us of CPU per webhook (gc.callbacks, wrk at c=64). gc.freeze() takes
    those out of every later collection, and a 10,000 young threshold leaves the
    collector for real garbage: a collection every few thousand requests, not every few
    dozen.
    """
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


@cli.command()
@CONFIG_OPTION
@click.option("--port", type=click.IntRange(0, 65535), default=None,
              help="listen on this port instead of server.port (0: any free port); the "
                   "client commands find it (it is recorded beside the buffer)")
@click.option("--access-log/--no-access-log", default=False, show_default=True,
              help="one log line per HTTP request (costs ingest throughput)")
@friendly
def run(config_path: str, port: int | None, access_log: bool) -> None:
    """Serve webhooks and sync sinks until Ctrl-C or SIGTERM."""
    config, pm = load(config_path)  # a config refused costs no more imports
    from bridge import address
    from bridge.app import create_app
    from bridge.logs import register_secrets, secrets_in
    from bridge.serve import serve

    if port is not None:
        config.server.port = port
    from bridge.buffer.pgurl import secrets_of

    url_secrets = secrets_of(config.buffer.url) if config.buffer.postgres else []
    register_secrets([*secrets_in(config), *url_secrets])  # the log filter masks them too
    app = create_app(config, pm)
    settle_heap()

    def ready(host: str, bound: int) -> None:
        url = address.url_of(config.server.host, bound)
        address.record(config, url)
        # one write: a reader that sees the address sees the simulator lines with it
        click.echo("\n".join([f"Chatbridge listening on {url} (status page: {url}/)",
                               *(f"{sink}: simulator — nothing reaches {name}"
                                 for sink, name in simulated_sinks(app))]))

    try:
        serve(app, config.server.host, config.server.port,
              access_log=logging.getLogger("aiohttp.access") if access_log else None,
              ready=ready, event_loop=config.server.event_loop)
    finally:
        address.forget(config)


def simulated_sinks(app: Any) -> list[tuple[str, str]]:
    """(sink, the real service it stands in for) for each sink that runs on a simulator."""
    from bridge.state import BRIDGE
    from bridge.status import simulated

    return [(sink.name, name) for sink in app[BRIDGE].sinks if (name := simulated(sink))]


@cli.command()
@CONFIG_OPTION
@friendly
def check(config_path: str) -> None:
    """Validate the config and list the plugins it enables."""
    config, pm = load(config_path)  # a config refused costs no more imports
    from bridge.app import create_app
    from bridge.buffer.probe import probe_buffer

    app = create_app(config, pm)  # what the plugins build from it (routes, sinks) must hold
    click.echo(f"config OK: {config_path}")
    for info in describe_plugins(pm):
        state = "enabled" if info.name in config.plugins else "installed"
        click.echo(f"  {info.name} {info.version or '?'} ({state}): {', '.join(info.hooks)}")
    for sink, name in simulated_sinks(app):
        click.echo(f"  sink {sink}: simulator — nothing reaches {name}")
    click.echo(asyncio.run(probe_buffer(config.buffer.target)))


@cli.group("buffer")
def buffer_group() -> None:
    """Move or inspect the buffer itself."""


@buffer_group.command("migrate")
@CONFIG_OPTION
@click.option("--to", "url", required=True, help="postgresql://user:password@host:5432/db")
@click.option("--from", "source", default=None,
              help="the SQLite file (default: the config's buffer.path)")
@friendly
def buffer_migrate(config_path: str, url: str, source: str | None) -> None:
    """Copy the SQLite buffer into PostgreSQL: nothing lost, nothing doubled; safe to
    re-run, and a copy that stopped resumes. Stop the bridge first."""
    from bridge.buffer.location import is_postgres
    from bridge.buffer.postgres import redact
    from bridge.buffer.transfer import copy_buffer

    if not is_postgres(url):
        raise click.UsageError("--to must be a postgresql:// URL")
    config, pm = load(config_path)
    path = source or config.buffer.path
    copied = asyncio.run(copy_buffer(path, url, lambda t, n: click.echo(
        f"  {t}: {n} rows read", err=True) if n % 100_000 == 0 else None,
        after_lease=settle_waits(config, pm)))
    for table, count in copied.source.items():
        click.echo(f"{table:20} {count:>9} in the file, {copied.written[table]:>9} copied now,"
                   f" {copied.target[table]:>9} in PostgreSQL")
    if copied.finished_at is not None:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(copied.finished_at))
        click.echo(f"nothing copied: the copy of {path} finished at {when}; the bridges "
                   "own the data since (a row they delivered, pruned or erased stays gone)")
        return
    if not copied.complete:
        raise click.ClickException("some rows are missing in PostgreSQL; run the copy again")
    click.echo(f"done: every row of {path} is in {redact(url)}. Set buffer.url to it, "
               "then start the bridges.")


def settle_waits(config: Any, pm: Any) -> dict[str, float]:
    """Per configured sink, how long past a killed run's lease its batch waits before a
    retry checks its key (bridge.sync.settle_after_lease), as `bridge run` opens the file."""
    from bridge.app import create_app
    from bridge.state import BRIDGE
    from bridge.sync import settle_after_lease

    return {sink.name: settle_after_lease(sink) for sink in create_app(config, pm)[BRIDGE].sinks}


EXIT_CODES = {"healthy": 0, "behind": 1, "failing": 2, "stopped": 2}
UNKNOWN = 3  # the bridge answered, but its health could not be read (e.g. a wrong token)


@cli.command()
@CONFIG_OPTION
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.option("-q", "--search", default=None, help="only conversations matching number or name")
@friendly
def status(config_path: str, as_json: bool, search: str | None) -> None:
    """Each sink's health first (healthy, behind, failing, stopped), what needs attention,
    then the details. Asks the running bridge (found from the config); with none running,
    reads the buffer and says stopped.

    Exit status, for cron and monitoring checks: 0 every sink healthy, 1 one is behind,
    2 one is failing or stopped, 3 unknown (the bridge answered but refused the token).
    """
    from bridge.remote import Unanswered, bridge_status
    from bridge.textreport import zone

    config, pm = load(config_path)
    try:
        report = bridge_status(config, pm, search)
    except Unanswered as exc:
        click.echo(f"Chatbridge: UNKNOWN — {exc}", err=True)
        raise SystemExit(UNKNOWN) from None
    if as_json:
        click.echo(json.dumps(report, default=str, indent=2))
    else:
        from bridge.textreport import render_status

        click.echo(render_status(report, zone(config.server.timezone)))
    raise SystemExit(EXIT_CODES.get(report["health"]["state"], UNKNOWN))


@cli.command("sync-now")
@CONFIG_OPTION
@click.option("--sink", default=None, help="only this sink")
@friendly
def sync_now(config_path: str, sink: str | None) -> None:
    """Ask the running bridge to drain now instead of at its next interval."""

    config, _ = load(config_path)
    response = admin_call(config, "POST", "/sync-now", params={"sink": sink} if sink else None)
    click.echo(f"woken: {', '.join(response.json()['woken']) or 'no sinks'}")


def admin_call(config: Any, method: str, path: str, **kwargs: Any) -> Any:
    """A request to the running bridge's admin API, found from the config (the address it
    recorded, else server.port); 200, or a clean one-line error."""
    from bridge.remote import call

    return call(config, method, path, **kwargs)


@cli.command()
@CONFIG_OPTION
@click.option("--sink", required=True, help="the sink to backfill, e.g. leadsquared")
@click.option("--days", type=click.FloatRange(min=0, min_open=True, max=3650), default=None,
              help="how many days back (default: the sink's backfill_days)")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="show progress until the backfill is done")
@friendly
def backfill(config_path: str, sink: str, days: float | None, wait: bool) -> None:
    """Sync the past N days into a sink again; what it already has is not posted twice."""
    config, _ = load(config_path)
    # plain decimal digits: str(0.00001) is '1e-05', which the bridge does not read
    params = {"sink": sink, **({"days": format(Decimal(repr(days)), "f")} if days else {})}
    answer = admin_call(config, "POST", "/backfill", params=params).json()
    click.echo(f"{sink}: {answer['queued']} messages of the last {answer['days']:g} days "
               "to sync (already synced ones are skipped)")
    if wait and answer["queued"]:
        _follow_backfill(config, sink, answer["queued"])


def _follow_backfill(config: Any, sink: str, total: int) -> None:
    """A progress bar fed by the running bridge's /status; Ctrl-C stops watching only."""
    import time

    held = dead = 0
    with click.progressbar(length=total, label="backfill", show_eta=True) as bar:
        shown = 0
        while shown < total:
            report = admin_call(config, "GET", "/status").json()
            state = next((s for s in report["sinks"] if s["sink"] == sink), None)
            progress = (state or {}).get("backfill") or {}
            done = min(total, progress.get("messages_done", 0))
            bar.update(done - shown)
            shown = done
            held, dead = progress.get("messages_held", 0), progress.get("messages_dead", 0)
            # held messages wait for someone to act (a lead created, a setting): watching
            # would never end
            if state and done + held >= progress.get("messages_total", 0):
                break
            time.sleep(1)
    # dead letters are settled, not in the CRM: "done" alone would say they were synced
    lost = (f"; {dead} message(s) went to dead letters: see `bridge dead-letter list`"
            if dead else "")
    if held:
        click.echo(f"{sink}: backfill done except {held} held message(s), which wait for "
                   f"you to act: see `bridge status`{lost}")
    else:
        click.echo(f"{sink}: backfill done{lost}")


@cli.group("dead-letter")
def dead_letter() -> None:
    """Messages a sink could not deliver, with the reason."""


async def _check_sink(buffer: Buffer, sink: str | None) -> None:
    """A usage error for a --sink the buffer never had: a typo ('LeadSquared') listed
    nothing and requeued nothing, as if no dead letter waited."""
    if sink is None:
        return
    names = [row["sink"] for row in await buffer.sinks()]
    if sink not in names:
        known = ", ".join(names) or "none installed yet"
        raise click.BadParameter(f"no sink named {sink!r} in the buffer (sinks: {known})",
                                 param_hint="--sink")


@dead_letter.command("list")
@CONFIG_OPTION
@click.option("--sink", default=None)
@click.option("--limit", default=100, show_default=True, type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True)
@friendly
def dead_letter_list(config_path: str, sink: str | None, limit: int, as_json: bool) -> None:
    """List dead letters, newest first."""
    config, _ = load(config_path)

    async def both(buffer: Buffer) -> tuple[list, list]:
        await _check_sink(buffer, sink)
        return await buffer.dead_letters(sink, limit), await buffer.dead_targets(sink, limit)

    rows, targets = asyncio.run(_with_buffer(config, both))
    from bridge.textreport import Clock, shown, zone

    at = Clock(zone(config.server.timezone)).at
    if as_json:
        listed = [{"kind": "message", **r} for r in rows] + [
            {"kind": "target", **r} for r in targets]
        click.echo(json.dumps(listed, default=str, indent=2))
        return
    if not rows and not targets:
        click.echo("no dead letters")
    rows, targets = shown(rows), shown(targets)  # reasons quote the CRM, names customers
    for row in rows:
        click.echo(f"{row['sink']}  #{row['message_id']}  {row['conversation']}  "
                   f"{at(row['dead_at'])}  {row['reason']}")
    for row in targets:  # one target of a message given up; its other targets landed
        ids = ",".join(f"#{i}" for i in row["message_ids"])
        click.echo(f"{row['sink']}  {ids}  {row['conversation']}  "
                   f"{at(row['dead_at'])}  target {row['target']}: {row['reason']}")


@dead_letter.command("requeue")
@CONFIG_OPTION
@click.option("--sink", default=None)
@click.option("--media", is_flag=True,
              help="fetch dead media files again instead (all, or the given message ids)")
@click.argument("message_ids", nargs=-1, type=int)
@friendly
def dead_letter_requeue(config_path: str, sink: str | None, media: bool,
                        message_ids: tuple[int, ...]) -> None:
    """Send dead letters again (all, one sink's, or the given message ids)."""
    config, _ = load(config_path)
    if media:
        n = asyncio.run(_with_buffer(config, lambda b: b.media_requeue(list(message_ids)
                                                                        or None)))
        click.echo(f"requeued {n} media file(s); a running bridge fetches them at its next "
                   "media pass, and sinks attach them once fetched")
        return
    from bridge.cluster import tell_cluster

    async def requeue(buffer: Buffer) -> tuple[int, bool, list[dict[str, Any]]]:
        await _check_sink(buffer, sink)
        n = await buffer.requeue(sink, list(message_ids) or None)
        kept = _kept_dead(await buffer.dead_targets(sink, limit=1000), message_ids)
        if n and config.buffer.postgres:  # every process drains now (LISTEN/NOTIFY)
            await tell_cluster(buffer, "sync", sink)
            return n, True, kept
        return n, False, kept
    n, woken, kept = asyncio.run(_with_buffer(config, requeue))
    if woken:
        click.echo(f"requeued {n} message(s); the running bridges were told to sync now")
    else:
        click.echo(f"requeued {n} message(s); "
                   + (_wake(config, sink) if n else "nothing to send"))
    if kept:
        from bridge.textreport import shown

        click.echo(f"{len(kept)} dead target(s) left as they are: "
                   + ", ".join(f"{t['sink']} {','.join(f'#{i}' for i in t['message_ids'])} "
                             f"({t['target']})" for t in shown(kept))
                   + "; a file target waits while another part of its batch retries "
                   "(requeue it once that batch is done), and one whose messages were pruned "
                   "stays listed for a person (bridge dead-letter list)")


def _kept_dead(targets: list[dict[str, Any]], wanted: tuple[int, ...]) -> list[dict[str, Any]]:
    """The dead targets a requeue of `wanted` (all, when empty) left dead."""
    return [t for t in targets if not wanted or set(wanted).intersection(t["message_ids"])]


def _wake(config: Any, sink: str | None) -> str:
    """Ask the running bridge (found from the config) to sync now; what happened, in words."""
    from bridge.remote import NoBridge, Unanswered, call

    try:
        call(config, "POST", "/sync-now", params={"sink": sink} if sink else None, timeout=10)
    except NoBridge:
        return "no bridge is running: they go out once it runs (`bridge run`)"
    except Unanswered as exc:
        return f"they go out at the next sync (the running bridge was not woken: {exc})"
    return "the running bridge syncs them now"


@cli.command()
@CONFIG_OPTION
@click.option("--phone", default=None, help="the person's number in E.164, e.g. +919876543210")
@click.option("--user-id", default=None, help="the person's WhatsApp business-scoped user id "
                                              "(BSUID), e.g. US.13491208655302741918")
@click.option("--dry-run", is_flag=True, help="only say what would be removed")
@friendly
def purge(config_path: str, phone: str | None, user_id: str | None, dry_run: bool) -> None:
    """Erase one person from the buffer (messages, identities, media, CRM mappings).

    The CRM keeps what was posted: erase the lead or its activities there (README).
    """
    key = _person_key(phone, user_id)
    config, _ = load(config_path)
    found = asyncio.run(_with_buffer(
        config, lambda b: b.purge_person(phone=key if phone else None,
                                         user_id=None if phone else key, dry_run=dry_run)))
    verb = "would remove" if dry_run else "removed"
    click.echo(f"{verb} from the buffer for {', '.join(found['keys'])}: "
               f"{found['messages']} message(s), {found['media']} media reference(s), "
               f"{found['conversations']} conversation(s), {found['statuses']} status(es), "
               f"{found['identities']} identity record(s), {found['crm_mappings']} CRM "
               f"mapping(s), {found['dead_letters']} dead letter(s), {found['dead_targets']} "
               f"dead target(s), {found['directory']} lead-directory record(s), "
               f"{found['unknown']} unknown-number mark(s)")
    if not dry_run:
        click.echo(_scrubbed(found))
    click.echo("the CRM was not changed: erase the person there too (see README, Erasure)")


def _scrubbed(found: dict[str, Any]) -> str:
    """What the backend did so that no deleted byte stays in its files, in words."""
    if not found.get("overwritten"):
        return ("PostgreSQL: the touched tables were vacuumed, which frees the deleted rows "
                "but does not overwrite them: the tables' files keep their bytes until new "
                "rows reuse the space, and WAL segments and backups until they are recycled "
                "(README, Erasure)")
    said = "the deleted rows were overwritten with zeros"
    if found.get("vacuumed"):
        said += "; older copies left in free space were found, so the file was rewritten"
    if found.get("vacuum_error"):
        return (f"{said}, but older copies remain in free space and VACUUM failed "
                f"({found['vacuum_error']}): free disk space (as much as the buffer "
                "takes) and run the purge again")
    if found.get("stale_copies"):
        return f"{said}, but older copies remain in free space: run the purge again"
    if not found.get("wal_emptied"):
        return (f"{said}, but the WAL file could not be emptied (another process was "
                "reading the buffer): run the purge again")
    return f"{said}, and the WAL file emptied"


def _person_key(phone: str | None, user_id: str | None) -> str:
    """The E.164 number or BSUID to purge; a usage error names the option and the form."""
    if bool(phone) == bool(user_id):
        raise click.UsageError("give exactly one of --phone or --user-id")
    if user_id:
        if not re.fullmatch(r"[A-Z]{2}\.[A-Za-z0-9.]{1,140}", user_id.strip()):
            raise click.BadParameter("expected a BSUID like US.13491208655302741918",
                                     param_hint="--user-id")
        return user_id.strip()
    import phonenumbers

    typed = phone.strip()
    digits = re.sub(r"\D", "", typed)
    if typed.startswith("+") and len(digits) == 13 and digits.startswith("521"):
        typed = "+52" + digits[3:]  # a Mexican mobile as WhatsApp shows it (its wa_id)
    try:
        number = phonenumbers.parse(typed, None)
    except phonenumbers.NumberParseException:
        number = None
    if number is None or not typed.startswith("+") \
            or not phonenumbers.is_possible_number(number):
        raise click.BadParameter("expected E.164 with country code, e.g. +919876543210",
                                 param_hint="--phone")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


@cli.command()
@click.option("-c", "--config", "config_path", default=None, envvar="BRIDGE_CONFIG",
              type=click.Path(dir_okay=False),
              help="show which plugins it enables (default: ./config.yaml if there is one)")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@friendly
def plugins(config_path: str | None, as_json: bool) -> None:
    """List installed plugins: version, hooks, and whether the config enables each."""
    from pathlib import Path

    from bridge import config as config_mod

    if config_path is None and Path("config.yaml").is_file():
        config_path = "config.yaml"
    named = None
    if config_path:
        section = config_mod.read_yaml(config_path).get("plugins")
        named = set(section) if isinstance(section, dict) else set()
    rows = _plugin_rows(describe_plugins(get_plugin_manager()), named)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(_plugin_table(rows))
    click.echo(f"(enabled: named in the plugins: section of {config_path})" if config_path
               else "(enabled: unknown; no ./config.yaml, pass -c PATH)")


def _plugin_rows(infos: list[Any], named: set[str] | None) -> list[dict[str, Any]]:
    """One row per installed plugin, plus any the config names that are not installed."""
    rows = [{"name": i.name, "version": i.version, "hooks": i.hooks, "installed": True,
             "enabled": None if named is None else i.name in named} for i in infos]
    missing = sorted((named or set()) - {i.name for i in infos})
    return rows + [{"name": n, "version": None, "hooks": [], "installed": False,
                    "enabled": True} for n in missing]


def _plugin_table(rows: list[dict[str, Any]]) -> str:
    """Aligned columns: plugin, version, enabled (yes, no or -), hooks."""
    enabled = {True: "yes", False: "no", None: "-"}
    lines = [("PLUGIN", "VERSION", "ENABLED", "HOOKS")] + [
        (r["name"], r["version"] or "-", enabled[r["enabled"]],
         ", ".join(r["hooks"]) if r["installed"] else "NOT INSTALLED (pip install it)")
        for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(3)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line[:3], widths, strict=True))
                     + "  " + line[3] for line in lines)


async def _with_buffer(config: Any, work: Callable[[Buffer], Any]) -> Any:
    from bridge.buffer import Buffer

    buffer = await Buffer.open(config.buffer.target, config.buffer.synchronous)
    try:
        return await work(buffer)
    finally:
        await buffer.close()


def _add_plugin_commands(group: click.Group) -> None:
    def warn(problem: str) -> None:
        click.echo(f"warning: {problem}", err=True)

    try:  # a plugin that cannot be imported is skipped: the others' commands stay
        pm = get_plugin_manager(on_broken=warn)
    except Exception as exc:  # a broken plugin must not take the core commands down
        click.echo(f"warning: plugins could not be loaded: {exc}", err=True)
        return
    for impl in reversed(pm.hook.register_commands.get_hookimpls()):  # pluggy's order
        for command in _plugin_commands(impl.plugin_name, impl.function, warn):
            if command.name in group.commands:
                click.echo(f"warning: plugin command {command.name!r} clashes; ignored", err=True)
                continue
            group.add_command(command)


def _plugin_commands(plugin: str, hook: Callable[[], Any],
                     warn: Callable[[str], None]) -> list[click.Command]:
    """One plugin's register_commands(), or none with a warning: a plugin's mistake here
    must not take `bridge run` and the other commands down."""
    where = f"plugin {plugin!r}: register_commands"
    try:
        commands = hook()
    except Exception as exc:
        warn(f"{where} raised {type(exc).__name__}: {exc}; its commands are left out")
        return []
    if commands is None:
        return []
    if not isinstance(commands, list | tuple) or not all(
            isinstance(command, click.Command) for command in commands):
        warn(f"{where} returned {type(commands).__name__}, not a list of click commands "
             "(return [group]); its commands are left out")
        return []
    return list(commands)


def main() -> None:
    """Console-script entry point."""
    _add_plugin_commands(cli)
    cli()
