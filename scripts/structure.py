"""The house's plan, checked: no import cycle among Rig's modules, no module importing one
of a higher layer, no module over 1,000 lines without a reason at its top, and no module
but actors/runtime/settings.py reading a `RIG_*` variable from the environment (the
examples, users' code, may read their own).

The layers, lowest first (docs/design/architecture.md says why):

    0  protocols                               the wire contract: pure, no I/O
    1  actors.runtime                          one process's machinery
    2  actors.jobs, actors.tools, actors.models the actor kinds and what they stand on
    3  actors.gateway, actors.evals, actors.deploy  what serves, measures and starts them
    4  actors.cli, actors.testing              the command and the test kit
    5  actors (the package's own modules)      the public facade
    6  actors.examples                         users' code: anything public

A module may import from its own layer or below. Imports under `if TYPE_CHECKING:` are
not counted (they never run); imports inside functions are (they run when called).

    python scripts/structure.py        # prints each problem; exit 1 if there is one
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS = {
    "protocols": 0,
    "actors.runtime": 1,
    "actors.jobs": 2,
    "actors.tools": 2,
    "actors.models": 2,
    "actors.gateway": 3,
    "actors.evals": 3,
    "actors.deploy": 3,
    "actors.cli": 4,
    "actors.testing": 4,
    "actors": 5,
    "actors.examples": 6,
}
SETTINGS = "actors.runtime.settings"  # the one reader of RIG_* variables
MAX_LINES = 1000
REASON = "# Long:"  # a module over MAX_LINES says why in a comment starting so


def modules(root: Path) -> dict[str, Path]:
    found = {}
    for package in ("actors", "protocols"):
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def layer(module: str) -> int:
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return LAYERS[best]


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    skipped = {
        id(node)
        for top in ast.walk(tree)
        if isinstance(top, ast.If) and "TYPE_CHECKING" in ast.unparse(top.test)
        for body in top.body
        for node in ast.walk(body)
    }
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def reads_settings(path: Path) -> list[str]:
    """The `RIG_*` names `path` reads from `os.environ` or `os.getenv` itself."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        key: ast.expr | None = None
        if isinstance(node, ast.Call) and ast.unparse(node.func) in (
            "os.environ.get",
            "os.getenv",
            "environ.get",
        ):
            key = node.args[0] if node.args else None
        elif isinstance(node, ast.Subscript) and ast.unparse(node.value) in (
            "os.environ",
            "environ",
        ):
            key = node.slice if isinstance(node.ctx, ast.Load) else None
        elif isinstance(node, ast.Compare) and any(
            ast.unparse(c) in ("os.environ", "environ") for c in node.comparators
        ):
            key = node.left
        if isinstance(key, ast.Constant) and str(key.value).startswith("RIG_"):
            found.append(f"{key.value} (line {node.lineno})")
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def problems(root: Path = ROOT) -> list[str]:
    """Each breach of the plan under `root`, a sentence each."""
    known = modules(root)
    graph: dict[str, set[str]] = defaultdict(set)
    said: list[str] = []
    for module, path in known.items():
        for target in imports(path, known):
            if target == module or module.startswith(target + "."):
                continue  # a package's own __init__, run first anyway
            graph[module].add(target)
            if layer(target) > layer(module):
                said.append(
                    f"{module} (layer {layer(module)}) imports {target} (layer {layer(target)})"
                )
        if module != SETTINGS and layer(module) < LAYERS["actors.examples"]:
            for read in reads_settings(path):
                said.append(f"{module} reads {read}: settings come from {SETTINGS}")
        lines = path.read_text().count("\n")
        if lines > MAX_LINES and REASON not in path.read_text()[:4000]:
            said.append(f"{path.relative_to(root)} has {lines} lines and no `{REASON}` reason")
    for component in cycles(graph):
        said.append("an import cycle: " + " -> ".join(component))
    return said


if __name__ == "__main__":
    found = problems()
    for line in found:
        print(f"structure: {line}")
    sys.exit(1 if found else 0)
