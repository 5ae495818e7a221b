"""`make lint`'s layout check (`python -m e2e.layout`): the product packages hold product
code, and no modules import each other in a circle.

- Nothing in `workloads/`, `operator/` or `contracts/` imports `e2e` (the test launchers,
  benchmarks and drills, which the image does not contain), except their `tests/`.
- The import graph of the project's modules has no cycle. Every `import` counts, also one
  inside a function (a lazy import hides a circle, it does not remove it), except under
  `if TYPE_CHECKING:` (annotations only, never executed).

Written here, not taken from a linter: ruff has no cycle rule, and import-linter needs a
contract per layer; the whole check is an AST walk and Tarjan's algorithm.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

from e2e.env.paths import REPO_ROOT

ROOTS = {"contracts": REPO_ROOT, "workloads": REPO_ROOT, "e2e": REPO_ROOT,
         "exchange_operator": REPO_ROOT / "operator"}  # fmt: skip
"""Top-level package -> the directory it lives in."""
PRODUCT = ("contracts", "workloads", "exchange_operator")


def modules() -> dict[str, Path]:
    """Every first-party module by dotted name (a package by its own name)."""
    found: dict[str, Path] = {}
    for package, base in ROOTS.items():
        for path in sorted((base / package).rglob("*.py")):
            parts = path.relative_to(base).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _type_checking(node):
            yield from (n for child in node.orelse for n in _imports(child))
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        yield from _imports(node)


def imported(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The first-party modules `name` imports (a `from m import x` names m.x when x is a
    module, else m)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in _imports(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
            continue
        base = node.module or ""
        if node.level:
            anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join([*anchor, *([base] if base else [])])
        for alias in node.names:
            targets.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {t for t in targets if t in known and t != name}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            step = next(edges, None)
            if step is not None:
                if step not in index:
                    index[step] = low[step] = len(index)
                    stack.append(step)
                    on_stack.add(step)
                    work.append((step, iter(sorted(graph[step]))))
                elif step in on_stack:
                    low[node] = min(low[node], index[step])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def problems() -> list[str]:
    known = modules()
    graph = {name: imported(name, path, known) for name, path in known.items()}
    found = [
        f"{name} imports {', '.join(sorted(t for t in targets if t.split('.')[0] == 'e2e'))}: "
        "product code may not import the test launchers, benchmarks or drills"
        for name, targets in sorted(graph.items())
        if name.split(".")[0] in PRODUCT
        and ".tests" not in f".{name}"
        and any(t.split(".")[0] == "e2e" for t in targets)
    ]
    found += [f"import cycle: {' <-> '.join(component)}" for component in cycles(graph)]
    return found


def main() -> int:
    found = problems()
    for line in found:
        print(line, file=sys.stderr)
    if not found:
        print(f"layout: {len(modules())} modules, no product module imports e2e, no import cycle")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
