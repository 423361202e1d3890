"""Imports run one way (DESIGN.md, "Directions of dependency"), checked on the source with `ast`.

Every import statement counts, at the top of a module, inside a function or under
TYPE_CHECKING, so a lazy import cannot hide an upward dependency that a test run happens not
to load.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# Floors of cg_assets, lowest first. A module belongs to the longest prefix that names it and
# may import its own unit and any lower floor; never a sibling on its floor or one above.
FLOORS_LOWEST_FIRST: list[tuple[str, ...]] = [
    # The plan table and time units, which settings validates CG_PLAN against. It imports
    # nothing from cg_assets, so it is the bottom floor although it sits in coinglass/.
    # `state_location` likewise: settings validates CG_STATE_DSN, the stores above read it.
    ("cg_assets.coinglass.plans", "cg_assets.state_location"),
    ("cg_assets.settings", "cg_assets.partitions", "cg_assets.tables", "cg_assets.automation"),
    ("cg_assets.coinglass", "cg_assets.storage", "cg_assets.telegram"),
    ("cg_assets.resources",),
    ("cg_assets.market", "cg_assets.liquidations"),
    ("cg_assets.heatmaps",),
    ("cg_assets.signals",),
    ("cg_assets.alerts",),
    ("cg_assets.definitions",),
]
FLOORS = {unit: floor for floor, units in enumerate(FLOORS_LOWEST_FIRST) for unit in units}
# Outside the floors, and alone allowed to import the simulator: the package entry
# (`cg_assets.defs`), the programs that start processes, and the simulator itself.
ENTRY_POINTS = {"cg_assets", "cg_assets.demo", "cg_assets.run", "cg_assets.launcher"}
SIMULATOR = "cg_assets.sim"

# DESIGN.md: pure maths and message formatting import no Dagster; so does Telegram delivery,
# which is why it is a package of its own rather than part of `resources`.
DAGSTER_FREE = (
    "cg_assets.heatmaps.buckets",
    "cg_assets.signals.rules",
    "cg_assets.signals.percentiles",
    "cg_assets.signals.backtest",
    "cg_assets.alerts.messages",
    "cg_assets.alerts.hygiene",
    "cg_assets.alerts.keys",
    "cg_assets.alerts.record",
    "cg_assets.telegram",
)


@dataclass(frozen=True)
class Import:
    importer: str
    target: str  # the module imported, resolved to a submodule where a name is one
    name: str  # the name taken from it ("" for `import x`)
    line: int

    def __str__(self) -> str:
        name = f" ({self.name})" if self.name else ""
        return f"{self.importer}:{self.line} imports {self.target}{name}"


@cache
def modules(package: str, root: Path = REPO) -> dict[str, Path]:
    """Every module of `package` by dotted name (a package by its `__init__`)."""
    found = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


@cache
def imports(package: str, root: Path = REPO) -> tuple[Import, ...]:
    known = modules(package, root)
    found = []
    for module, path in known.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found += [Import(module, a.name, "", node.lineno) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _absolute(module, is_package, node.module, node.level)
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    target = sub if sub in known else base
                    found.append(Import(module, target, alias.name, node.lineno))
    return tuple(found)


def _absolute(module: str, is_package: bool, name: str | None, level: int) -> str:
    if not level:
        return name or ""
    parts = module.split(".")
    anchor = parts if is_package else parts[:-1]
    anchor = anchor[: len(anchor) - (level - 1)]
    return ".".join([*anchor, name] if name else anchor)


def within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def unit(module: str) -> str | None:
    """The FLOORS key a module belongs to (None: outside the floors)."""
    keys = [key for key in FLOORS if within(module, key)]
    return max(keys, key=len) if keys else None


def test_every_module_has_a_place():
    homeless = [
        module
        for module in modules("cg_assets")
        if unit(module) is None and module not in ENTRY_POINTS and not within(module, SIMULATOR)
    ]
    assert homeless == [], "put each on a floor, or in ENTRY_POINTS if it starts processes"


def test_each_floor_imports_only_the_floors_below_it():
    upward = []
    for imp in imports("cg_assets"):
        here, there = unit(imp.importer), unit(imp.target)
        if here is None or not within(imp.target, "cg_assets") or here == there:
            continue
        if there is None or FLOORS[there] >= FLOORS[here]:
            where = "outside the floors" if there is None else f"floor {FLOORS[there]}"
            upward.append(f"{imp} [floor {FLOORS[here]} -> {where}]")
    assert not upward, "\n".join(upward)


def test_assets_and_resources_never_import_the_simulator():
    offenders = [
        str(imp)
        for imp in imports("cg_assets")
        if within(imp.target, SIMULATOR) and unit(imp.importer) is not None
    ]
    assert not offenders, "\n".join(offenders)


@pytest.mark.parametrize("prefix", DAGSTER_FREE)
def test_pure_modules_import_no_dagster(prefix: str):
    dagster = [
        str(imp)
        for imp in imports("cg_assets")
        if within(imp.importer, prefix) and imp.target.split(".")[0].startswith("dagster")
    ]
    assert not dagster, "\n".join(dagster)


def test_ws_sidecar_imports_neither_dagster_nor_cg_assets():
    assert modules("ws_sidecar"), "no ws_sidecar modules found"
    heavy = [
        str(imp)
        for imp in imports("ws_sidecar")
        if imp.target.split(".")[0].startswith("dagster") or within(imp.target, "cg_assets")
    ]
    assert not heavy, "\n".join(heavy)


def test_the_checker_sees_lazy_relative_and_submodule_imports(tmp_path: Path):
    """The rules above are only as good as the import finder: prove it on a planted package."""
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("from pkg import leaf\n")
    (package / "sub" / "mod.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from ..leaf import Thing\n"
        "def later():\n    import pkg.other\n    from . import sibling\n"
    )
    for name in ("leaf", "other", "sub/sibling"):
        (package / f"{name}.py").write_text("")
    found = {(i.importer, i.target, i.name) for i in imports("pkg", tmp_path)}
    assert found == {
        ("pkg.sub", "pkg.leaf", "leaf"),
        ("pkg.sub.mod", "typing", "TYPE_CHECKING"),
        ("pkg.sub.mod", "pkg.leaf", "Thing"),
        ("pkg.sub.mod", "pkg.other", ""),
        ("pkg.sub.mod", "pkg.sub.sibling", "sibling"),
    }
