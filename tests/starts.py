"""`python -m tests.starts FILE`: the processes the suite started (a run with
CHATBRIDGE_COUNT_STARTS=FILE, see tests/fixtures/count_starts), per test module: how many,
of which command, and the CPU seconds of those that exited (SIGKILLed ones say nothing)."""

from __future__ import annotations

import json
import sys
from collections import Counter, defaultdict


def command(argv: list[str]) -> str:
    """A short name for a child's command: `-m bridge run -c`, `-c <code>`, a script."""
    if argv[:1] == ["-c"]:
        return "-c <code>"
    return " ".join(a for a in argv if not a.startswith("/"))[:40] or argv[0][-40:]


def summary(path: str) -> str:
    """One line per test module, most starts first, then the totals."""
    starts: Counter[str] = Counter()
    cpu: defaultdict[str, float] = defaultdict(float)
    commands: defaultdict[str, Counter[str]] = defaultdict(Counter)
    module_of: dict[int, str] = {}
    with open(path, encoding="utf-8") as lines:
        for row in map(json.loads, lines):
            module = row["test"].split("::", 1)[0]
            if row["kind"] == "start":
                starts[module] += 1
                module_of[row["pid"]] = module
                commands[module][command(row["argv"])] += 1
            else:
                cpu[module_of.get(row["pid"], module)] += row["cpu"]
    out = []
    for module, n in starts.most_common():
        most = ", ".join(f"{command} x{k}" for command, k in commands[module].most_common(3))
        out.append(f"{n:5d} starts {cpu[module]:7.1f} s CPU  {module}  ({most})")
    out.append(f"{sum(starts.values()):5d} starts {sum(cpu.values()):7.1f} s CPU  in all")
    return "\n".join(out)


if __name__ == "__main__":
    print(summary(sys.argv[1]))
