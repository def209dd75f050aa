"""No value is ever formatted into SQL: a static scan of bridge/ and plugins/.

Every `execute`/`executemany`/`executescript` call (and every call of a helper that hands
its SQL on to one) must get SQL that is a constant string, or an f-string / concatenation
whose interpolations are only the explicitly allowed ones below: placeholder builders
(`?,?,?`), column-list constants, and local names that are themselves assigned only such
SQL. Values travel as parameters. Names are resolved in the function that holds the call,
then at module level; anything else fails the test with its file and line.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

from bridge.buffer import Buffer
from tests.backends import query

ROOT = Path(__file__).resolve().parents[2]
SCANNED = [ROOT / "bridge", ROOT / "plugins"]
EXECUTORS = {"execute", "executemany", "executescript", "execute_fetchall"}

# Helpers that receive SQL in a parameter and pass it to an executor: the parameter is
# trusted inside them, and the SQL argument of each call to them is checked instead.
# name -> index of the SQL among the positional arguments (none left: the buffer's SQL is
# SQLAlchemy constructs, compiled by bridge.buffer.compiler).
SQL_FORWARDERS: dict[str, int] = {}
# The connectors *are* executors: they run `compiled.sql`, the text SQLAlchemy compiled
# from a construct (whose values are parameters); nothing else reaches the drivers.
ADAPTERS = {"bridge/buffer/connectors.py"}

# The only things allowed inside {...} of SQL, each with why it cannot carry a value:
PLACEHOLDER_BUILDERS: set[str] = set()
FRAGMENT_BUILDERS = {"legacy_step"}  # a frozen legacy step of SQLite (constant scripts)
IDENTIFIER_GUARDS: set[str] = set()
PLACEHOLDER_NAMES: set[str] = set()
COLUMN_CONSTANTS = {"VERSION", "MESSAGE_COLUMNS"}  # module-level constants (an int version)
SQL_FRAGMENT_NAMES = {"where", "script"}  # locals assigned only constant SQL (verified)
COUNTER_NAMES = {"number"}  # `for number in range(...)`: a schema version (verified)


@dataclass
class Scope:
    path: Path
    module: dict[str, list[ast.expr]]  # module-level name -> assigned values
    function: ast.FunctionDef | ast.AsyncFunctionDef | None
    local: dict[str, list[ast.AST]]  # name -> its Assign values / AugAssign / For nodes
    params: set[str]

    def where(self, node: ast.AST) -> str:
        return f"{self.path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)[:90]}"


def _module_names(tree: ast.Module, follow_imports: bool = True) -> dict[str, list[ast.expr]]:
    """Module-level name -> assigned values, including names imported from our packages."""
    names: dict[str, list[ast.expr]] = {}
    for node in tree.body:
        if follow_imports and isinstance(node, ast.ImportFrom) and node.module and \
                node.module.split(".")[0] in ("bridge", "plugins"):
            source = _module_file(node.module)
            if source is not None:
                theirs = _module_names(ast.parse(source.read_text(encoding="utf-8")), False)
                for alias in node.names:
                    if alias.name in theirs:
                        names[alias.asname or alias.name] = theirs[alias.name]
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    names.setdefault(target.id, []).append(node.value)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value:
            names.setdefault(node.target.id, []).append(node.value)
    return names


def _module_file(dotted: str) -> Path | None:
    base = ROOT.joinpath(*dotted.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _local_names(function: ast.AST) -> dict[str, list[ast.AST]]:
    names: dict[str, list[ast.AST]] = {}
    for node in ast.walk(function):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                pairs = [(target, node.value)]
                if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple) \
                        and len(target.elts) == len(node.value.elts):  # a, b = x, y
                    pairs = list(zip(target.elts, node.value.elts, strict=True))
                for one, value in pairs:
                    for name in ast.walk(one):
                        if isinstance(name, ast.Name):  # unpacked from elsewhere: unknown
                            names.setdefault(name.id, []).append(
                                value if isinstance(one, ast.Name) else node)
        elif isinstance(node, ast.AugAssign | ast.AnnAssign) and isinstance(node.target,
                                                                            ast.Name):
            names.setdefault(node.target.id, []).append(node)
        elif isinstance(node, ast.For | ast.AsyncFor | ast.comprehension):
            for name in ast.walk(node.target):
                if isinstance(name, ast.Name):
                    names.setdefault(name.id, []).append(node)
    return names


def _params(function: ast.AST | None) -> set[str]:
    if function is None:
        return set()
    args = function.args
    return {a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs]}


def _constant_strings(node: ast.AST, scope: Scope, seen: frozenset[str]) -> bool:
    """A tuple/list/dict literal (or a module name bound to one) of constant SQL only."""
    if isinstance(node, ast.Name) and node.id in scope.module and node.id not in seen:
        return all(_constant_strings(v, scope, seen | {node.id}) for v in scope.module[node.id])
    if isinstance(node, ast.Tuple | ast.List):
        return all(_safe_sql(e, scope, seen) for e in node.elts)
    if isinstance(node, ast.Dict):
        return all(_safe_sql(v, scope, seen) for v in node.values)
    return False


def _safe_sql(node: ast.AST, scope: Scope, seen: frozenset[str] = frozenset()) -> bool:
    """`node` evaluates to SQL text built from constants and allowed fragments only."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    if isinstance(node, ast.JoinedStr):
        return all(_allowed_interpolation(v.value, scope, seen) for v in node.values
                   if isinstance(v, ast.FormattedValue))
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _safe_sql(node.left, scope, seen) and _safe_sql(node.right, scope, seen)
    if isinstance(node, ast.IfExp):
        return _safe_sql(node.body, scope, seen) and _safe_sql(node.orelse, scope, seen)
    if isinstance(node, ast.Subscript):  # CONSTANT_TABLE[key]: the key selects, never inserts
        return _constant_strings(node.value, scope, seen)
    if isinstance(node, ast.Name):
        return _safe_name(node.id, scope, seen)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        return node.func.id in FRAGMENT_BUILDERS
    return False


def _safe_name(name: str, scope: Scope, seen: frozenset[str]) -> bool:
    if name in seen:
        return True  # `sql += ...` refers to itself: the other assignments decide
    seen = seen | {name}
    if name in scope.local:
        return all(_safe_binding(node, name, scope, seen) for node in scope.local[name])
    if name in scope.params:  # only a forwarder may take SQL as a parameter
        return scope.function is not None and scope.function.name in SQL_FORWARDERS
    if name in scope.module:
        return all(_safe_sql(value, scope, seen) for value in scope.module[name])
    return False


def _safe_binding(node: ast.AST, name: str, scope: Scope, seen: frozenset[str]) -> bool:
    if isinstance(node, ast.AugAssign):
        return isinstance(node.op, ast.Add) and _safe_sql(node.value, scope, seen)
    if isinstance(node, ast.AnnAssign):
        return node.value is not None and _safe_sql(node.value, scope, seen)
    if isinstance(node, ast.For | ast.AsyncFor | ast.comprehension):
        return _constant_strings(node.iter, scope, seen)
    if isinstance(node, ast.expr):
        return _safe_sql(node, scope, seen)
    return False


def _is_range_counter(name: str, scope: Scope) -> bool:
    bindings = scope.local.get(name, [])
    return bool(bindings) and all(
        isinstance(b, ast.For) and isinstance(b.iter, ast.Call)
        and ast.unparse(b.iter.func) == "range" for b in bindings)


def _allowed_interpolation(node: ast.expr, scope: Scope, seen: frozenset[str]) -> bool:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "int":
        return True  # a number carries no SQL
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        return node.func.id in PLACEHOLDER_BUILDERS | FRAGMENT_BUILDERS | IDENTIFIER_GUARDS
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        # ", ".join(COLUMNS)
        return (node.func.attr == "join" and isinstance(node.func.value, ast.Constant)
                and len(node.args) == 1 and isinstance(node.args[0], ast.Name)
                and node.args[0].id in COLUMN_CONSTANTS)
    if isinstance(node, ast.Name):
        if node.id in PLACEHOLDER_NAMES:
            bindings = scope.local.get(node.id, [])
            return bool(bindings) and all(
                isinstance(b, ast.Call) and isinstance(b.func, ast.Name)
                and b.func.id in PLACEHOLDER_BUILDERS for b in bindings)
        if node.id in COLUMN_CONSTANTS:
            return _safe_name(node.id, scope, seen) or _constant_strings(node, scope, seen)
        if node.id in SQL_FRAGMENT_NAMES:
            return _safe_name(node.id, scope, seen)
        if node.id in COUNTER_NAMES:
            return _is_range_counter(node.id, scope)
    return False


def _sql_argument(call: ast.Call, params: set[str] = frozenset()) -> ast.expr | None:
    """The SQL a call passes to an executor or a forwarder, else None.

    A bare `query(...)` counts only where `query` is a parameter (reads.py's Query
    callable); elsewhere, e.g. the simulator's own `query(request, name)`, it is not SQL.
    """
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    if name in EXECUTORS:
        index = 0
    elif name == "query" and isinstance(func, ast.Name) and name not in params:
        return None
    elif name in SQL_FORWARDERS:
        index = SQL_FORWARDERS[name]
    else:
        return None
    if len(call.args) > index:
        return call.args[index]
    keyword = next((k.value for k in call.keywords if k.arg in ("sql", "sql_script")), None)
    return keyword


def scan() -> tuple[list[str], list[str]]:
    """(every SQL call site, the unsafe ones) in the scanned packages."""
    checked, unsafe = [], []
    for path in sorted(p for root in SCANNED for p in root.rglob("*.py")):
        if str(path.relative_to(ROOT)) in ADAPTERS:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        module = _module_names(tree)
        functions = [n for n in ast.walk(tree)
                     if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
        owner: dict[ast.AST, ast.AST] = {}
        for function in functions:  # innermost function wins: walk outer ones first
            for node in ast.walk(function):
                owner[node] = function
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            function = owner.get(node)
            sql = _sql_argument(node, _params(function))
            if sql is None:
                continue
            scope = Scope(path, module, function,
                          _local_names(function) if function else {}, _params(function))
            checked.append(scope.where(node))
            if not _safe_sql(sql, scope):
                unsafe.append(scope.where(node))
    return checked, unsafe


def test_no_value_is_ever_formatted_into_sql():
    checked, unsafe = scan()
    # what is left as text: PRAGMAs, transaction control and SQLite's frozen legacy steps
    assert len(checked) >= 10, f"the scan found too few SQL calls to be looking: {checked}"
    assert unsafe == [], "SQL built from something other than constants:\n" + "\n".join(unsafe)


def test_the_scan_catches_formatted_values(tmp_path):
    """The checker itself: each of these must be flagged."""
    bad = '''
async def f(db, name, ids):
    await db.execute(f"SELECT * FROM t WHERE name = '{name}'")
    await db.execute("SELECT * FROM t WHERE name = '%s'" % name)
    await db.execute("SELECT * FROM t WHERE name = " + name)
    await db.execute("SELECT * FROM t WHERE name = '{}'".format(name))
    sql = "SELECT 1"
    sql += name
    await db.execute(sql)
    for pragma in ("journal_mode = WAL", f"synchronous = {name.upper()}"):
        await db.execute(f"PRAGMA {pragma}")
    where = f" WHERE x = {ids[0]}"
    await db.execute(f"SELECT 1{where}")
    await db.executemany(f"INSERT INTO t VALUES ({_placeholders(len(ids))}, {name})", [])
'''
    good = '''
MESSAGE_COLUMNS = "a, b"
TABLE = {"full": "PRAGMA synchronous = FULL"}
async def f(db, ids, mode):
    await db.execute(f"SELECT {MESSAGE_COLUMNS} FROM t")
    await db.execute(TABLE[mode])
'''
    for source, expect_unsafe in ((bad, 8), (good, 0)):
        tree = ast.parse(source)
        function = next(n for n in ast.walk(tree) if isinstance(n, ast.AsyncFunctionDef))
        scope = Scope(tmp_path / "x.py", _module_names(tree), function,
                      _local_names(function), _params(function))
        flagged = [ast.unparse(c) for c in ast.walk(function) if isinstance(c, ast.Call)
                   and _sql_argument(c) is not None and not _safe_sql(_sql_argument(c), scope)]
        assert len(flagged) == expect_unsafe, flagged


async def test_an_unknown_synchronous_mode_is_refused_not_formatted(tmp_path):
    """PRAGMA takes no parameters; the mode picks one of the constant statements."""
    with pytest.raises(ValueError, match="use one of full, normal"):
        await Buffer.open(tmp_path / "b.db", "OFF; DROP TABLE messages")
    buffer = await Buffer.open(tmp_path / "b.db", "NORMAL")
    try:
        assert await query(buffer, "PRAGMA synchronous") == [(1,)]
    finally:
        await buffer.close()


def test_no_module_under_bridge_buffer_rewrites_sql_text():
    """SQL is compiled from constructs, never rewritten: the rewriter and its adapters are
    gone, no buffer module runs regular expressions or string edits on anything named
    like SQL, and the drivers only ever get `compiled.sql` (or a constant)."""
    buffer = ROOT / "bridge" / "buffer"
    for gone in ("dialect.py", "pgdb.py", "syncdb.py", "pgschema.py"):
        assert not (buffer / gone).exists(), gone
    edits = {"sub", "subn", "replace", "format", "translate"}
    for path in buffer.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr in edits:
                text = ast.unparse(node).lower()
                assert "sql" not in text and "statement" not in text, \
                    f"{path.name}:{node.lineno}: {ast.unparse(node)}"
    connectors = ast.parse((buffer / "connectors.py").read_text(encoding="utf-8"))
    driver_calls = [n for n in ast.walk(connectors) if isinstance(n, ast.Call)
                    and isinstance(n.func, ast.Attribute)
                    and n.func.attr in ("execute", "executemany", "fetch")]
    assert driver_calls and all(ast.unparse(c.args[0]) == "compiled.sql" for c in driver_calls)
