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
from tests.helpers import CorePlugin, RecordingSink, free_port, message, pip_install_into

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


@pytest.fixture(scope="module")
def typo_dist(tmp_path_factory) -> Path:
    """A distribution whose plugin misspells a hook, pip-installed into its own directory."""
    source = tmp_path_factory.mktemp("typo-src")
    (source / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "bridge-typo-hook"\nversion = "0.4.1"\n'
        '[project.entry-points.bridge]\ntypo = "bridge_typo_hook"\n')
    (source / "bridge_typo_hook").mkdir()
    (source / "bridge_typo_hook" / "__init__.py").write_text(TYPO_PLUGIN)
    return pip_install_into(tmp_path_factory.mktemp("typo-site"), source)


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


@pytest.fixture(scope="module")
def echo_dist(tmp_path_factory) -> Path:
    """pip-install the separate fixture distribution into its own directory."""
    target = pip_install_into(tmp_path_factory.mktemp("site"), FIXTURE)
    assert list(target.glob("bridge_echo_sink-1.2.3.dist-info"))
    return target


def bridge_cmd(args, site: Path, **kwargs):
    env = {**os.environ, "PYTHONPATH": str(site)}
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
    env = {**os.environ, "PYTHONPATH": str(echo_dist)}
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
