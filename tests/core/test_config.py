"""Config: interpolation, validation, and errors that name the key path and the fix."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bridge.config import interpolate
from bridge.errors import ConfigError
from bridge.plugins import load_config
from tests.helpers import CorePlugin


@pytest.fixture
def write(tmp_path):
    def write(text: str):
        path = tmp_path / "config.yaml"
        path.write_text(text)
        return path
    return write


def load(pm, path):
    pm.register(CorePlugin(), name="testsource")
    return load_config(path, pm)


def bridge_check(path):
    return subprocess.run([sys.executable, "-m", "bridge", "check", "-c", str(path)],
                          capture_output=True, text=True, timeout=60)


def test_defaults_and_plugin_section(pm, write, tmp_path):
    config = load(pm, write("plugins:\n  testsource:\n    token: abc\n"))
    assert (config.server.host, config.server.port) == ("127.0.0.1", 8080)
    assert config.buffer.retention == 30 * 86400
    assert config.buffer.path == str(tmp_path / "chatbridge.db")  # relative to the file
    assert config.plugin("testsource").token == "abc"


def test_env_interpolation_with_and_without_default(monkeypatch):
    monkeypatch.setenv("WA_SECRET", "s3cret")
    monkeypatch.delenv("UNSET_VAR", raising=False)
    data = {"a": "${WA_SECRET}", "b": ["x-${UNSET_VAR:-fallback}"], "c": 5}
    assert interpolate(data) == {"a": "s3cret", "b": ["x-fallback"], "c": 5}


def test_missing_required_key_names_the_path(pm, write):
    with pytest.raises(ConfigError) as err:
        load(pm, write("plugins:\n  testsource: {}\n"))
    assert str(err.value) == ("plugins.testsource.token: required key is missing "
                              "(add it to the config file)")


def test_unknown_key_names_the_path_and_allowed_keys(pm, write):
    with pytest.raises(ConfigError) as err:
        load(pm, write("server:\n  prot: 80\n"))
    assert str(err.value) == ("server.prot: unknown key (check the spelling; allowed: "
                              "admin_token, host, port, timezone)")


def test_bad_duration_names_the_path_and_the_forms(pm, write):
    with pytest.raises(ConfigError) as err:
        load(pm, write('buffer:\n  retention: "3 minutes"\n'))
    assert str(err.value) == ('buffer.retention: "3 minutes" is not a duration '
                              "(use 180, 180s, 3m or 1h)")


def test_unset_variable_names_the_path_and_variable(pm, write, monkeypatch):
    monkeypatch.delenv("NO_SUCH_TOKEN", raising=False)
    with pytest.raises(ConfigError) as err:
        load(pm, write("plugins:\n  testsource:\n    token: ${NO_SUCH_TOKEN}\n"))
    assert str(err.value).startswith(
        "plugins.testsource.token: environment variable NO_SUCH_TOKEN is not set")


def test_unknown_plugin_is_an_error(pm, write):
    with pytest.raises(Exception, match="no installed plugin is called 'nope'"):
        load(pm, write("plugins:\n  nope: {}\n"))


def test_invalid_yaml_says_where(pm, write):
    with pytest.raises(ConfigError, match="line 2: not valid YAML .*'\\\\t'"):
        load(pm, write("server:\n\tport: 80\n"))


@pytest.mark.parametrize(("text", "expected"), [
    ("server:\n  prot: 80\n", "server.prot: unknown key"),
    ('buffer:\n  retention: "3 minutes"\n', 'buffer.retention: "3 minutes" is not a duration'),
    ("server:\n  admin_token: ${CHATBRIDGE_TEST_UNSET}\n",
     "server.admin_token: environment variable CHATBRIDGE_TEST_UNSET is not set"),
    ("server:\n  port: 99999\n", "server.port: 99999 is not valid"),
])
def test_bridge_check_exits_non_zero_with_the_key_path(write, text, expected):
    result = bridge_check(write(text))
    assert result.returncode == 1
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_bridge_check_accepts_a_valid_config(write, tmp_path):
    result = bridge_check(write(f"buffer:\n  path: {tmp_path}/b.db\n"))
    assert result.returncode == 0, result.stderr
    assert "config OK" in result.stdout
