"""Imports run downward: each area of rollout/ imports only areas of a lower layer, never one above
it or beside it, so no two areas depend on each other. Read from the source (every import
statement, also those inside functions), not from what happens to be loaded; imports under
``if TYPE_CHECKING:`` are for annotations only and never run, so they are not counted."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from .conftest import REPO

PACKAGE = REPO / "rollout"

# Lowest first. An area (a top-level module, or a subpackage with everything in it) may import
# only areas of a lower layer. A new module or package goes into the lowest layer that is above
# everything it imports.
LAYERS: list[set[str]] = [
    {"errors", "clock", "buckets", "rules", "synthetic"},
    {"addresses", "resources", "config", "locks"},
    {"logs", "models", "db"},
    {"enforcement", "audit", "runtime"},
    {"notify"},  # campaign, notices, delivery tracking, the sending workers, mailer
    {
        "scan",
        "plan",
    },  # scan: logs → sightings, inventory; plan: cohorts, plans, gates, steps. Neither imports the other.
    {"support"},  # status, lookup, accounts, the support web
    {"scheduler"},
    {"demo"},
    {"cli"},
    {"__main__"},
]
LAYER_OF = {area: n for n, areas in enumerate(LAYERS) for area in areas}

# Upward imports tolerated for now: none (logs/join.py builds what logs/blocks.py once took from detection).
KNOWN_UPWARD: set[tuple[str, str]] = set()


# Circles between modules tolerated for now: none (enforcement's backends import base.py, not the package).
KNOWN_RINGS: set[str] = set()


def area_of(module: str) -> str:
    """``rollout.logs.blocks`` → ``logs``; ``rollout.support.status`` → ``status``."""
    return module.split(".")[1]


def module_name(path: Path, root: Path = REPO) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, root: Path = REPO) -> Iterator[str]:
    """Every ``rollout.…`` name an import statement in ``path`` names, relative imports resolved."""
    for statement in import_statements(path, root):
        yield from statement


def import_statements(path: Path, root: Path = REPO) -> Iterator[list[str]]:
    """Per import statement: the module it imports from, then each name (``from . import a``: also rollout.a)."""
    module = module_name(path, root)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield [target, *(f"{target}.{alias.name}" for alias in node.names)]


def runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node, but not the bodies of ``if TYPE_CHECKING:``: an import only for annotations runs never."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from (n for orelse in node.orelse for n in (orelse, *runtime_nodes(orelse)))
            continue
        yield node
        yield from runtime_nodes(node)


def is_area(name: str, package: Path) -> bool:
    relative = Path(*name.split(".")[1:2])
    return (package / relative).with_suffix(".py").exists() or (package / relative).is_dir()


def area_imports(root: Path = REPO) -> set[tuple[str, str, str]]:
    """(importing area, imported area, file) for every import in ``root``/rollout that crosses areas."""
    package = root / "rollout"
    found = set()
    for path in package.rglob("*.py"):
        if path == package / "__init__.py":
            continue
        here = area_of(module_name(path, root))
        for name in imported_modules(path, root):
            if name.startswith("rollout.") and is_area(name, package) and area_of(name) != here:
                found.add((here, area_of(name), str(path.relative_to(root))))
    return found


def test_every_area_has_a_layer() -> None:
    """A new module or package is placed in LAYERS, so the rule below covers it."""
    areas = {area_of(module_name(p)) for p in PACKAGE.rglob("*.py") if p != PACKAGE / "__init__.py"}
    assert sorted(areas - set(LAYER_OF)) == [], "add these to LAYERS in tests/test_imports.py"


def test_imports_run_downward() -> None:
    """No area imports one of its own layer or above (cohorts ↔ plans, logs ↔ detection were such circles)."""
    upward = sorted(
        f"{file}: {here} (layer {LAYER_OF.get(here)}) imports {there} (layer {LAYER_OF.get(there)})"
        for here, there, file in area_imports()
        if (here, there) not in KNOWN_UPWARD and LAYER_OF.get(there, 99) >= LAYER_OF.get(here, -1)
    )
    assert upward == []


def test_no_circle_between_areas() -> None:
    """Following imports from any area never leads back to it."""
    graph: dict[str, set[str]] = {}
    for here, there, _file in area_imports():
        if (here, there) not in KNOWN_UPWARD:
            graph.setdefault(here, set()).add(there)

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, ()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    assert sorted(a for a in graph if reaches(a, a, {a})) == []


def test_logs_never_imports_detection() -> None:
    """The log parsers know nothing of detection: events flow up, never the other way."""
    assert not [file for here, there, file in area_imports() if (here, there) == ("logs", "scan")]


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    """An import inside a function, relative, from scan up to support is found, and so is the circle it closes."""
    for area in ("scan", "support"):
        (tmp_path / "rollout" / area).mkdir(parents=True)
        (tmp_path / "rollout" / area / "__init__.py").write_text("")
    (tmp_path / "rollout" / "__init__.py").write_text("")
    (tmp_path / "rollout" / "support" / "status.py").write_text("from ..scan.detection import Finding\n")
    (tmp_path / "rollout" / "scan" / "detection.py").write_text("def f():\n    from ..support import status\n")
    found = {(here, there) for here, there, _file in area_imports(tmp_path)}
    assert found == {("support", "scan"), ("scan", "support")}
    assert LAYER_OF["scan"] < LAYER_OF["support"]  # so test_imports_run_downward names scan → support


def module_imports(root: Path = REPO) -> dict[str, set[str]]:
    """Module → the modules of rollout it imports (``from . import x`` names module x, not the package)."""
    package = root / "rollout"
    modules = {module_name(path, root) for path in package.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for path in package.rglob("*.py"):
        here = module_name(path, root)
        for target, *names in import_statements(path, root):
            found = [name for name in names if name in modules] or ([target] if target in modules else [])
            graph.setdefault(here, set()).update(name for name in found if name != here)
    return graph


def rings(graph: dict[str, set[str]]) -> list[str]:
    """The circles of imports, each once, from its first module: ``a → b`` when a imports b and b imports a."""

    def ring_from(start: str) -> list[str] | None:
        stack, seen = [(start, [start])], {start}
        while stack:
            node, path = stack.pop()
            for nxt in sorted(graph.get(node, ())):
                if nxt == start:
                    return path
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*path, nxt]))
        return None

    found = set()
    for module in graph:
        if ring := ring_from(module):
            first = ring.index(min(ring))
            found.add(" → ".join(ring[first:] + ring[:first]))  # the same ring from each of its modules: once
    return sorted(found)


def test_no_circle_between_modules() -> None:
    """Inside an area too, no two modules import each other, directly or around a ring (cohorts ↔ plans was one)."""
    assert rings(module_imports()) == sorted(KNOWN_RINGS)


def test_the_check_sees_a_circle_inside_an_area(tmp_path: Path) -> None:
    """plans importing cohorts and cohorts importing plans inside a function, both in plan/, is a ring."""
    (tmp_path / "rollout" / "plan").mkdir(parents=True)
    (tmp_path / "rollout" / "__init__.py").write_text("")
    (tmp_path / "rollout" / "plan" / "__init__.py").write_text("")
    (tmp_path / "rollout" / "plan" / "plans.py").write_text("from .cohorts import partition\n")
    (tmp_path / "rollout" / "plan" / "cohorts.py").write_text("def schedule_for():\n    from . import plans\n")
    assert area_imports(tmp_path) == set()
    assert rings(module_imports(tmp_path)) == ["rollout.plan.cohorts → rollout.plan.plans"]


def area_graph(root: Path = REPO) -> str:
    """The picture the rules above check: each area's layer, and which areas it imports (how many files do)."""
    files: dict[tuple[str, str], set[str]] = {}
    for here, there, file in area_imports(root):
        files.setdefault((here, there), set()).add(file)
    lines = []
    for layer, areas in enumerate(LAYERS):
        for area in sorted(areas):
            out = sorted((there, len(f)) for (here, there), f in files.items() if here == area)
            targets = ", ".join(f"{there} {n}" for there, n in out) or "-"
            lines.append(f"{layer:2} {area:<16} -> {targets}")
    return "\n".join(lines)


if __name__ == "__main__":  # `python -m tests.test_imports`: print the area graph
    print(area_graph())
