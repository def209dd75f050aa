"""The plugin host: entry points, enabling by config, duplicates, a real third-party dist."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.app import create_app
from bridge.buffer import Buffer
from bridge.config import BridgeConfig
from bridge.errors import PluginError
from bridge.plugins import describe_plugins, enable_only, get_plugin_manager
from tests.helpers import (
    CorePlugin,
    RecordingSink,
    child_path,
    free_port,
    installed_once,
    message,
)

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "echo_sink"


def test_unknown_plugin_name_lists_installed_ones(pm):
    pm.register(CorePlugin(), name="testsource")
    with pytest.raises(PluginError, match=r"plugins.nosuch: .*installed: testsource"):
        enable_only(pm, ["nosuch"])


def test_plugins_not_named_in_config_do_not_run(pm):
    pm.register(CorePlugin(sinks=[RecordingSink("a")]), name="one")
    pm.register(CorePlugin(sinks=[RecordingSink("b")]), name="two")
    enable_only(pm, ["two"])
    sinks = [s.name for result in pm.hook.register_sinks(context=None) for s in result]
    assert sinks == ["b"]


def test_duplicate_sink_names_refuse_to_start(pm):
    pm.register(CorePlugin(sinks=[RecordingSink("crm")], source=None), name="one")
    pm.register(CorePlugin(sinks=[RecordingSink("crm")], source=None), name="two")
    with pytest.raises(PluginError, match="two plugins register a sink named 'crm'"):
        create_app(BridgeConfig(), pm)


TYPO_PLUGIN = """from bridge import hookimpl


@hookimpl
def register_sink(context):  # the hook is register_sinks
    return []
"""


def typo_source(source: Path) -> Path:
    """The source tree of a distribution whose plugin misspells a hook."""
    (source / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "bridge-typo-hook"\nversion = "0.4.1"\n'
        '[project.entry-points.bridge]\ntypo = "bridge_typo_hook"\n')
    (source / "bridge_typo_hook").mkdir()
    (source / "bridge_typo_hook" / "__init__.py").write_text(TYPO_PLUGIN)
    return source


@pytest.fixture(scope="session")
def typo_dist(tmp_path_factory) -> Path:
    """A distribution whose plugin misspells a hook, pip-installed into its own directory."""
    return installed_once(tmp_path_factory, "bridge-typo-hook", typo_source)


@pytest.mark.parametrize("command", [["plugins"], ["check"], ["run"]])
def test_an_installed_plugin_with_a_misspelled_hook_stops_the_bridge_with_one_line(
        typo_dist, tmp_path, command):
    config = tmp_path / "config.yaml"
    config.write_text(f"server: {{port: {free_port()}}}\nbuffer: {{path: {tmp_path}/b.db}}\n"
                      "plugins:\n  whatsapp: {verify_token: t, app_secret: s}\n")
    args = command if command == ["plugins"] else [*command, "-c", str(config)]
    result = bridge_cmd(args, typo_dist)  # `run` would serve forever if the typo went unseen
    assert result.returncode == 1, result.stdout + result.stderr
    assert ("Error: plugin 'typo' (bridge-typo-hook 0.4.1): register_sink is not a bridge hook "
            "(did you mean register_sinks?)") in result.stderr
    assert "Traceback" not in result.stderr


def test_builtin_plugins_are_found_through_entry_points():
    names = {info.name for info in describe_plugins(get_plugin_manager())}
    assert {"whatsapp", "leadsquared"} <= names


@pytest.fixture(scope="session")
def echo_dist(tmp_path_factory) -> Path:
    """pip-install the separate fixture distribution into its own directory."""
    target = installed_once(tmp_path_factory, "bridge-echo-sink", FIXTURE)
    assert list(target.glob("bridge_echo_sink-1.2.3.dist-info"))
    return target


def bridge_cmd(args, site: Path, **kwargs):
    env = {**os.environ, "PYTHONPATH": child_path(site)}
    return subprocess.run([sys.executable, "-m", "bridge", *args], env=env,
                          capture_output=True, text=True, timeout=60, **kwargs)


def test_third_party_distribution_is_listed_with_its_version(echo_dist):
    result = bridge_cmd(["plugins", "--json"], echo_dist)
    plugins = {p["name"]: p for p in json.loads(result.stdout)}
    assert plugins["echo"]["version"] == "1.2.3"
    assert plugins["echo"]["hooks"] == ["register_config_sections", "register_sinks"]


def test_third_party_sink_receives_messages_with_no_core_change(echo_dist, tmp_path):
    out, db = tmp_path / "echo.jsonl", tmp_path / "buffer.db"

    async def seed():
        buffer = await Buffer.open(db)
        await buffer.append([message(i, minutes_ago=10) for i in range(5)])
        await buffer.close()

    asyncio.run(seed())
    config = tmp_path / "config.yaml"
    config.write_text(f"server: {{port: {free_port()}}}\nbuffer: {{path: {db}}}\n"
                      f"plugins:\n  echo:\n    file: {out}\n    sync_interval: 0.1\n")
    env = {**os.environ, "PYTHONPATH": child_path(echo_dist)}
    proc = subprocess.Popen([sys.executable, "-m", "bridge", "run", "-c", str(config)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(200):
            if out.exists() and len(out.read_text().splitlines()) >= 5:
                break
            asyncio.run(asyncio.sleep(0.05))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(line["id"] for line in lines) == [f"m{i}" for i in range(5)]  # backfilled
    assert proc.returncode == 0


def test_third_party_config_error_names_the_key(echo_dist, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("plugins:\n  echo:\n    sync_interval: 10\n")
    result = bridge_cmd(["check", "-c", str(config)], echo_dist)
    assert result.returncode != 0
    assert "plugins.echo.file: required key is missing" in result.stderr


def make_dist(root: Path, dist: str, version: str, package: str, entry_points: dict[str, str],
              files: dict[str, str]) -> Path:
    """A distribution's source tree: pyproject.toml with `bridge` entry points, and files."""
    points = "".join(f'{name} = "{target}"\n' for name, target in entry_points.items())
    (root / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = "setuptools.build_meta"\n'
        f'[project]\nname = "{dist}"\nversion = "{version}"\n'
        f'[project.entry-points.bridge]\n{points}'
        f'[tool.setuptools]\npackages = ["{package}"]\n')
    (root / package).mkdir()
    for name, text in files.items():
        (root / package / name).write_text(text)
    return root


def installed_dist(factory, dist: str, package: str, entry_points: dict[str, str],
                   files: dict[str, str], version: str = "0.2.0") -> Path:
    """The distribution pip-installed into a directory of its own (put it on PYTHONPATH),
    once in a run (tests/helpers.py installed_once)."""
    return installed_once(factory, dist, lambda root: make_dist(
        root, dist, version, package, entry_points, files))


def run_config(tmp_path: Path, plugins: str) -> Path:
    config = tmp_path / "config.yaml"
    config.write_text(f"server: {{port: {free_port()}}}\nbuffer: {{path: {tmp_path}/b.db}}\n"
                      f"plugins:\n  whatsapp: {{verify_token: t, app_secret: s}}\n{plugins}")
    return config


def bridge_on(args: list[str], *sites: Path, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": child_path(*sites)}
    return subprocess.run([sys.executable, "-m", "bridge", *args], env=env,
                          capture_output=True, text=True, timeout=60, **kwargs)


@pytest.fixture(scope="session")
def unimportable_dist(tmp_path_factory) -> Path:
    """A plugin whose module fails to import (a dependency its author forgot to declare)."""
    return installed_dist(tmp_path_factory, "bridge-crm-broken", "bridge_crm_broken",
                          {"brokencrm": "bridge_crm_broken"},
                          {"__init__.py": "import a_dependency_nobody_installed\n"})


@pytest.mark.parametrize("command", [["plugins"], ["check"], ["run"]])
def test_a_plugin_that_cannot_be_imported_stops_the_bridge_with_one_line(
        unimportable_dist, tmp_path, command):
    args = command if command == ["plugins"] else [*command, "-c", str(run_config(tmp_path, ""))]
    result = bridge_on(args, unimportable_dist)  # `run` would serve forever if unseen
    assert result.returncode == 1, result.stdout + result.stderr
    assert ("Error: plugin 'brokencrm' (bridge-crm-broken 0.2.0) cannot be imported "
            "(bridge_crm_broken): ModuleNotFoundError: No module named "
            "'a_dependency_nobody_installed'; fix the plugin or uninstall it") in result.stderr
    assert "Traceback" not in result.stderr


def test_a_plugin_that_cannot_be_imported_leaves_the_other_plugins_commands(
        unimportable_dist):
    result = bridge_on(["--help"], unimportable_dist)
    assert result.returncode == 0, result.stderr
    assert "warning: plugin 'brokencrm' (bridge-crm-broken 0.2.0) cannot be imported" \
        in result.stderr
    assert "whatsapp " in result.stdout and "leadsquared " in result.stdout


@pytest.fixture(scope="session")
def echo_fork(tmp_path_factory) -> Path:
    """A second distribution that also names its plugin `echo` (a fork, a rename gone wrong)."""
    return installed_dist(tmp_path_factory, "bridge-echo-fork", "bridge_echo_fork",
                          {"echo": "bridge_echo_fork"}, {"__init__.py": ""}, version="9.0.0")


@pytest.mark.parametrize("first", ["fork", "original"])
def test_two_distributions_claiming_one_plugin_name_stop_the_bridge(
        echo_dist, echo_fork, tmp_path, first):
    """pluggy keeps whichever it meets first and drops the other without a word: the
    config's `plugins.echo` would silently run a different plugin, or none."""
    sites = (echo_fork, echo_dist) if first == "fork" else (echo_dist, echo_fork)
    config = run_config(tmp_path, f"  echo: {{file: {tmp_path}/out.jsonl}}\n")
    for args in (["run", "-c", str(config)], ["plugins"]):
        result = bridge_on(args, *sites)
        assert result.returncode == 1, result.stdout + result.stderr
        assert "Error: plugin 'echo' is installed twice, by " in result.stderr
        assert "bridge-echo-sink 1.2.3 (bridge_echo_sink)" in result.stderr
        assert "bridge-echo-fork 9.0.0 (bridge_echo_fork)" in result.stderr
        assert "pip uninstall one of them" in result.stderr and "Traceback" not in result.stderr


# Hooks a plugin author may get wrong; each module is one plugin of one distribution.
BAD_HOOKS = {
    "__init__.py": "",
    "common.py": """from bridge import Outcome, SinkSettings


class Sink:
    name = "bad"
    settings = SinkSettings()

    async def start(self):
        pass

    async def deliver(self, batch):
        return [Outcome.delivered() for _ in batch.messages]

    async def close(self):
        pass
""",
    "argname.py": "from bridge import hookimpl\n\n\n@hookimpl\n"
                  "def register_sinks(ctx):\n    return []\n",
    "asynchook.py": "from bridge import hookimpl\nfrom bridge_bad_hooks.common import Sink\n\n\n"
                    "@hookimpl\nasync def register_sinks(context):\n    return [Sink()]\n",
    "single.py": "from bridge import hookimpl\nfrom bridge_bad_hooks.common import Sink\n\n\n"
                 "@hookimpl\ndef register_sinks(context):\n    return Sink()\n",
    "syncdeliver.py": "from bridge import Outcome, hookimpl\n"
                      "from bridge_bad_hooks.common import Sink\n\n\nclass Plain(Sink):\n"
                      "    def deliver(self, batch):\n        return []\n\n\n"
                      "@hookimpl\ndef register_sinks(context):\n    return [Plain()]\n",
    "nosettings.py": "from bridge import hookimpl\nfrom bridge_bad_hooks.common import Sink\n\n\n"
                     "class Bare(Sink):\n    settings = None\n\n\n"
                     "@hookimpl\ndef register_sinks(context):\n    return [Bare()]\n",
}
BAD_HOOK_ERRORS = {
    "asynchook": "Error: plugin 'asynchook': register_sinks is async; hooks are synchronous "
                 "factories (make it a plain def returning a list",
    "single": "Error: plugin 'single': register_sinks returned Sink, not a list of sinks "
              "(return [sink] or [])",
    "syncdeliver": "Error: plugin 'syncdeliver': register_sinks: sink 'bad' (Plain) needs "
                   "`async def deliver`",
    "nosettings": "Error: plugin 'nosettings': register_sinks: sink 'bad' (Bare) needs "
                  "`settings`, its validated config section",
}


@pytest.fixture(scope="session")
def bad_hooks(tmp_path_factory) -> Path:
    return installed_dist(tmp_path_factory, "bridge-bad-hooks", "bridge_bad_hooks",
                          {name: f"bridge_bad_hooks.{name}" for name in BAD_HOOK_ERRORS},
                          BAD_HOOKS)


@pytest.mark.parametrize("plugin", sorted(BAD_HOOK_ERRORS))
def test_a_sink_hook_returning_the_wrong_thing_stops_the_bridge_naming_the_plugin(
        bad_hooks, tmp_path, plugin):
    """Each used to be a traceback at `bridge run`, or a sink that failed every drain."""
    result = bridge_on(["run", "-c", str(run_config(tmp_path, f"  {plugin}:\n"))], bad_hooks)
    assert result.returncode == 1, result.stdout + result.stderr
    assert BAD_HOOK_ERRORS[plugin] in result.stderr
    assert "Traceback" not in result.stderr and "never awaited" not in result.stderr


@pytest.fixture(scope="session")
def argname_dist(tmp_path_factory) -> Path:
    return installed_dist(tmp_path_factory, "bridge-argname", "bridge_bad_hooks",
                          {"argname": "bridge_bad_hooks.argname"}, BAD_HOOKS)


def test_a_hook_asking_for_an_argument_the_hook_does_not_pass_names_the_signature(
        argname_dist, tmp_path):
    result = bridge_on(["check", "-c", str(run_config(tmp_path, ""))], argname_dist)
    assert result.returncode == 1, result.stdout + result.stderr
    assert ("Error: plugin 'argname' (bridge-argname 0.2.0): register_sinks(ctx) asks for "
            "{'ctx'}, which the hook does not pass; its signature is register_sinks(context); "
            "fix the plugin or uninstall it") in result.stderr
    lines = result.stderr.strip().splitlines()  # pluggy's own message has three lines
    assert [line.split(":")[0] for line in lines] in (["Error"], ["warning", "Error"])


BAD_COMMANDS = {
    "__init__.py": "",
    "group.py": "import click\nfrom bridge import hookimpl\n\n\n@click.group('crmtool')\n"
                "def crmtool():\n    pass\n\n\n@hookimpl\ndef register_commands():\n"
                "    return crmtool  # the guide says: a list\n",
    "raising.py": "from bridge import hookimpl\n\n\n@hookimpl\ndef register_commands():\n"
                  "    raise RuntimeError('no click here')\n",
}


@pytest.fixture(scope="session")
def bad_commands(tmp_path_factory) -> Path:
    return installed_dist(tmp_path_factory, "bridge-bad-commands", "bridge_bad_commands",
                          {"crmtool": "bridge_bad_commands.group",
                           "raising": "bridge_bad_commands.raising"}, BAD_COMMANDS)


def test_a_plugin_command_hook_gone_wrong_leaves_every_other_command_working(
        bad_commands, tmp_path):
    """It used to be a traceback from every `bridge` invocation, `bridge run` included."""
    result = bridge_on(["plugins", "--json"], bad_commands, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert {"crmtool", "raising", "whatsapp"} <= {p["name"] for p in json.loads(result.stdout)}
    assert ("warning: plugin 'crmtool': register_commands returned Group, not a list of "
            "click commands (return [group]); its commands are left out") in result.stderr
    assert ("warning: plugin 'raising': register_commands raised RuntimeError: no click here; "
            "its commands are left out") in result.stderr
    assert "Traceback" not in result.stderr
    assert "whatsapp " in bridge_on(["--help"], bad_commands).stdout


UNMARKED = {"__init__.py": "from pydantic import BaseModel\n\n\nclass Settings(BaseModel):\n"
                           "    url: str\n\n\ndef register_config_sections():  # no @hookimpl\n"
                           "    return {'unmarked': Settings}\n\n\n"
                           "def register_sinks(context):\n    return []\n"}


@pytest.fixture(scope="session")
def unmarked_dist(tmp_path_factory) -> Path:
    return installed_dist(tmp_path_factory, "bridge-unmarked", "bridge_unmarked",
                          {"unmarked": "bridge_unmarked"}, UNMARKED)


@pytest.mark.parametrize("section", ["", "    url: https://crm.example.com\n"])
def test_hooks_without_hookimpl_stop_the_bridge_instead_of_doing_nothing(
        unmarked_dist, tmp_path, section):
    """pluggy ignores an unmarked function: the plugin ran with no sink at all (empty
    section), or its settings were refused as 'this plugin takes no settings'."""
    config = run_config(tmp_path, f"  unmarked:\n{section}")
    result = bridge_on(["run", "-c", str(config)], unmarked_dist)
    assert result.returncode == 1, result.stdout + result.stderr
    assert ("Error: plugin 'unmarked' (bridge-unmarked 0.2.0): register_config_sections is not "
            "marked @hookimpl, so it would never be called") in result.stderr
    assert "takes no settings" not in result.stderr


BAD_SECTIONS = {
    "__init__.py": "",
    "listed.py": "from bridge import SinkSettings, hookimpl\n\n\n@hookimpl\n"
                 "def register_config_sections():\n    return [SinkSettings]\n",
    "instance.py": "from bridge import SinkSettings, hookimpl\n\n\n@hookimpl\n"
                   "def register_config_sections():\n    return {'instance': SinkSettings()}\n",
}


@pytest.fixture(scope="session")
def bad_sections(tmp_path_factory) -> Path:
    return installed_dist(tmp_path_factory, "bridge-bad-sections", "bridge_bad_sections",
                          {"listed": "bridge_bad_sections.listed",
                           "instance": "bridge_bad_sections.instance"}, BAD_SECTIONS)


@pytest.mark.parametrize(("plugin", "error"), [
    ("listed", "register_config_sections returned list, not a dict of section name to "
               "pydantic model"),
    ("instance", "register_config_sections: section 'instance' is SinkSettings("),
])
def test_a_config_section_hook_returning_the_wrong_thing_names_the_plugin(
        bad_sections, tmp_path, plugin, error):
    result = bridge_on(["check", "-c", str(run_config(tmp_path, f"  {plugin}:\n"))],
                       bad_sections)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"Error: plugin {plugin!r}: {error}" in result.stderr
    assert "Traceback" not in result.stderr
