"""The package's import structure: the contracts of ``[tool.importlinter]`` in pyproject.toml,
and no import cycle between any two ``speechnas`` modules.

Every import counts: module-level, in-function (lazy) and ``if TYPE_CHECKING:`` ones alike.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    """This checkout's ``src`` first on the path, so the contracts judge this code and not an
    installed copy of the package."""
    paths = [str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}


def test_import_contracts_are_kept() -> None:
    exe = Path(sys.executable).with_name("lint-imports")
    assert exe.is_file(), f"{exe} not found; install the dev extra: bash scripts/install.sh --dev"
    proc = subprocess.run(
        [str(exe), "--no-cache", "--no-logo"],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"lint-imports failed:\n{proc.stdout}\n{proc.stderr}"


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    imports = {m: sorted(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in sorted(imports):
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            if i < len(imports[node]):
                work.append((node, i + 1))
                nxt = imports[node][i]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if work:  # report back to the importer
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    component.append(m)
                    if m == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return sorted(found)


def _describe(graph: grimp.ImportGraph, component: list[str]) -> str:
    """One cycle through the component's first module, each import with its line."""
    first = component[0]
    members = set(component)
    nxt = next(m for m in sorted(graph.find_modules_directly_imported_by(first)) if m in members)
    chain = (first, *(graph.find_shortest_chain(nxt, first) or ()))
    lines = [f"cycle among {', '.join(component)}:"]
    for importer, imported in itertools.pairwise(chain):
        d = graph.get_import_details(importer=importer, imported=imported)[0]
        lines.append(f"  {importer} -> {imported} (l.{d['line_number']}: {d['line_contents']})")
    return "\n".join(lines)


def test_cycle_finder_finds_a_planted_cycle() -> None:
    graph = grimp.ImportGraph()
    for a, b in [("p.a", "p.b"), ("p.b", "p.c"), ("p.c", "p.a"), ("p.c", "p.d"), ("p.d", "p.d")]:
        graph.add_import(importer=a, imported=b, line_number=1, line_contents=f"import {b}")
    assert _cycles(graph) == [["p.a", "p.b", "p.c"]]
    assert "p.a -> p.b (l.1: import p.b)" in _describe(graph, ["p.a", "p.b", "p.c"])


def test_no_import_cycles() -> None:
    graph = grimp.build_graph("speechnas", cache_dir=None)
    assert "speechnas.versions" in graph.modules
    cycles = _cycles(graph)
    assert not cycles, "\n".join(_describe(graph, c) for c in cycles)
