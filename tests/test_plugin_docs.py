"""docs/plugins.md stays in step: every hook documented and tested, the example mirrored."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from bridge import hookspecs as specs

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "plugins.md"
EXAMPLE = ROOT / "examples" / "webhook_sink"
# <!-- mirror: path --> then a fenced block holding that file, byte for byte
MIRROR = re.compile(r"^<!-- mirror: (\S+) -->\n```\w*\n(.*?)^```$", re.S | re.M)


def hooks() -> dict[str, Callable]:
    """Every hookspec in bridge/hookspecs.py, by name."""
    return {name: f for name, f in vars(specs).items() if hasattr(f, "bridge_spec")}


def signature(spec: Callable) -> str:
    """`name(arg: Type) -> Return`, as the annotations are written in hookspecs.py."""
    notes = spec.__annotations__
    params = ", ".join(f"{p}: {notes[p]}" for p in inspect.signature(spec).parameters)
    return f"{spec.__name__}({params}) -> {notes['return']}"


def undocumented(doc: str) -> list[str]:
    """Hooks with no section headed by their exact signature."""
    return [name for name, spec in hooks().items() if f"### `{signature(spec)}`\n" not in doc]


def untested(test_sources: Sequence[str]) -> list[str]:
    """Hooks whose name no test module or test helper mentions."""
    return [name for name in hooks() if not any(name in text for text in test_sources)]


def code_in_tests() -> list[str]:
    this = Path(__file__).resolve()
    return [path.read_text(encoding="utf-8") for path in (ROOT / "tests").rglob("*.py")
            if path.resolve() != this and "build" not in path.parts]


def test_every_hook_has_a_section_headed_by_its_exact_signature():
    assert hooks(), "no hookspecs found"
    assert undocumented(DOC.read_text(encoding="utf-8")) == []


def test_every_documented_hook_exists():
    headed = re.findall(r"^### `(register_\w+)\(", DOC.read_text(encoding="utf-8"), re.M)
    assert sorted(headed) == sorted(hooks())


def test_every_hook_is_exercised_by_a_test():
    assert untested(code_in_tests()) == []


def test_the_meta_checks_catch_a_missing_section_or_test():
    doc = DOC.read_text(encoding="utf-8")
    gone = doc.replace(f"### `{signature(specs.register_filters)}`\n", "### Filters\n")
    assert undocumented(gone) == ["register_filters"]
    assert "register_commands" in untested(["register_sinks register_sources"])


def test_doc_code_blocks_are_the_example_files_byte_for_byte():
    blocks = MIRROR.findall(DOC.read_text(encoding="utf-8"))
    assert blocks, "docs/plugins.md mirrors no file"
    for path, code in blocks:
        actual = (ROOT / path).read_text(encoding="utf-8")
        assert code == actual, f"docs/plugins.md's copy of {path} differs from the file"


def test_every_file_of_the_example_is_in_the_doc():
    mirrored = {path for path, _ in MIRROR.findall(DOC.read_text(encoding="utf-8"))}
    files = [EXAMPLE / "pyproject.toml", EXAMPLE / "tests" / "test_contract.py",
             *sorted((EXAMPLE / "chatbridge_webhook_sink").glob("*.py"))]
    missing = [str(f.relative_to(ROOT)) for f in files if str(f.relative_to(ROOT)) not in mirrored]
    assert missing == [], "add these files to docs/plugins.md as mirrored code blocks"


def test_the_example_plugin_requires_this_distribution_and_pip_resolves_it():
    """The example's `chatbridge-crm>=0.1` is met by this checkout (installed), with no
    index at all: the name is ours, not the unrelated `chatbridge` on PyPI."""
    import json
    import subprocess
    import sys
    import tomllib

    from packaging.requirements import Requirement

    ours = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert ours["name"] == "chatbridge-crm"
    wanted = [Requirement(r) for r in tomllib.loads((EXAMPLE / "pyproject.toml").read_text())[
        "project"]["dependencies"]]
    (core,) = [r for r in wanted if r.name == ours["name"]]
    assert core.specifier.contains(ours["version"])
    plan = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--no-index",
         "--no-build-isolation", "--disable-pip-version-check", "--quiet", "--report", "-",
         str(EXAMPLE)], capture_output=True, text=True, timeout=120)
    assert plan.returncode == 0, plan.stderr  # every requirement met by what is installed
    assert [i["metadata"]["name"] for i in json.loads(plan.stdout)["install"]] == [
        "chatbridge-webhook-sink"]
    guide = DOC.read_text(encoding="utf-8")
    assert "chatbridge-crm[testing] @ git+" in guide and "pip install -e" in guide


# `bridge.name` in the guide's prose or code (not chatbridge.git, not a path)
CORE_NAME = re.compile(r"(?<![\w/.-])bridge\.([A-Za-z_][\w.]*[A-Za-z_\d])")


def non_public(text: str) -> list[str]:
    """The core names `text` mentions that a plugin may not import (bridge.testing aside)."""
    import bridge

    return sorted({f"bridge.{name}" for name in CORE_NAME.findall(text)
                   if name.split(".")[0] != "testing" and name not in bridge.__all__})


def non_public_imports(source: str) -> list[str]:
    """`bridge.x` modules and names that `source` imports beyond bridge and bridge.testing."""
    import ast

    import bridge

    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "bridge":
            if node.module not in ("bridge", "bridge.testing"):
                found.append(node.module)
            elif node.module == "bridge":
                found += [f"bridge.{a.name}" for a in node.names if a.name not in bridge.__all__]
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names
                      if a.name.startswith("bridge.") and a.name != "bridge.testing"]
    return found


def test_every_core_name_the_guide_names_is_public():
    """The guide promises plugins import only `bridge` and `bridge.testing`: every core name
    it tells a plugin author to use (PluginContext in the hook signatures, Duration ...)
    must be importable from there."""
    assert non_public(DOC.read_text(encoding="utf-8")) == []
    assert non_public("use `bridge.is_group(key)` or `bridge.context.PluginContext`") == [
        "bridge.context.PluginContext"]  # the check itself sees a module path
    assert non_public("git+https://host/chatbridge.git, bridge/hookspecs.py and "
                      "bridge.testing.validate_section") == []


def test_the_example_imports_only_the_public_surface():
    """What the example imports, type-checking imports too, is what a third party may."""
    sources = {path.relative_to(EXAMPLE).as_posix(): path.read_text(encoding="utf-8")
               for path in EXAMPLE.rglob("*.py") if "build" not in path.parts}
    assert sources
    assert {name: bad for name, text in sources.items()
            if (bad := non_public_imports(text))} == {}
    assert non_public_imports("if X:\n    from bridge.context import PluginContext\n") == [
        "bridge.context"]
