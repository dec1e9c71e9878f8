"""The package's architecture, checked from its source: layers, no upward imports, no cycles, short files.

The layers (lowest first) are the ones the README's "Architecture" section draws. A
module may import its own package's modules and any module of a lower layer; imports
under ``if TYPE_CHECKING:`` are annotations only and do not count for layers (the cycle
check counts them). Function-level imports count: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "dsn"
LAYERS = [
    ["dsn.precision"],  # which device and number format: no dsn imports at all
    ["dsn.model"],
    ["dsn.data"],
    ["dsn.loading"],  # the one loader and the one description of a loaded model
    ["dsn.inference", "dsn.hub"],
    ["dsn.evaluation"],
    ["dsn.training", "dsn.inspect"],
    ["dsn.checks"],  # checks of the explanations the per-pair views show
    ["dsn.ui"],
    ["dsn.tools"],  # benchmarks and screenshots drive the app
    ["dsn"],  # the public API (dsn/__init__.py), the command line (dsn.cli) and ``python -m dsn``
]
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def unit_of(module: str) -> str:
    """The layer entry a module belongs to: its top-level sub-package, or itself."""
    for layer in LAYERS:
        for unit in sorted(layer, key=len, reverse=True):
            if unit != "dsn" and (module == unit or module.startswith(unit + ".")):
                return unit
    return "dsn" if module.count(".") <= 1 else module  # other top-level modules: the top layer


def layer_of(unit: str) -> int:
    for index, layer in enumerate(LAYERS):
        if unit in layer:
            return index
    raise AssertionError(f"{unit} is in no layer: add it to LAYERS and to the README's architecture section")


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(path: Path, source: str | None = None, type_only: bool = False) -> set[str]:
    """Every dsn module that ``path`` (or ``source`` as if it were there) imports at run time, at any depth
    (with ``type_only``, also those imported only for type checking)."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node) and not type_only:
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "dsn")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target.split(".")[0] == "dsn":
                folder = PACKAGE.parent / Path(*target.split("."))
                # ``from dsn.model import weights`` imports the module dsn.model.weights; other names come from target
                modules = {a.name for a in node.names if (folder / f"{a.name}.py").is_file() or (folder / a.name).is_dir()}
                found.update(f"{target}.{name}" for name in modules)
                if len(modules) < len(node.names):
                    found.add(target)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8") if source is None else source))
    found.discard(module)
    return found


def graph(type_only: bool = False) -> dict[str, set[str]]:
    return {module_name(p): imports_of(p, type_only=type_only) for p in sorted(PACKAGE.rglob("*.py"))}


def test_no_module_imports_a_layer_above_it_or_a_sibling_package() -> None:
    violations = []
    for module, imported in graph().items():
        unit = unit_of(module)
        for target in sorted(imported):
            other = unit_of(target)
            if other == unit:
                continue
            if layer_of(other) >= layer_of(unit):
                violations.append(f"{module} (layer {layer_of(unit)}) imports {target} (layer {layer_of(other)})")
    assert violations == []


def test_the_import_graph_has_no_cycle() -> None:
    """Imports made only for type checking count too: a type-only cycle still ties two modules together."""
    full = graph(type_only=True)
    edges = {m: {t for t in targets if t in full} for m, targets in full.items()}
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(node: str, path: list[str]) -> bool:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycle.extend([*path[path.index(nxt) :], nxt] if nxt in path else [node, nxt])
                return True
            if state.get(nxt) is None and visit(nxt, [*path, nxt]):
                return True
        state[node] = 2
        return False

    for start in sorted(edges):
        if state.get(start) is None and visit(start, [start]):
            break
    assert cycle == [], " -> ".join(cycle)


def test_every_module_is_in_a_layer_and_short() -> None:
    for path in PACKAGE.rglob("*.py"):
        layer_of(unit_of(module_name(path)))
        lines = len(path.read_text(encoding="utf-8").splitlines())
        assert lines <= MAX_LINES, f"{path.relative_to(PACKAGE.parent)} has {lines} lines (at most {MAX_LINES})"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from dsn.model import weights\n", {"dsn.model.weights"}),
        ("from dsn.model import DetailSemNet, weights\n", {"dsn.model", "dsn.model.weights"}),
        ("from ..model.config import X\n", {"dsn.model.config"}),
        ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from dsn.ui import app\n", set()),
        ("def f():\n    from dsn.inspect import figures\n", {"dsn.inspect.figures"}),
    ],
)
def test_the_import_reader_sees_what_python_imports(source: str, expected: set[str]) -> None:
    assert imports_of(PACKAGE / "evaluation" / "_probe.py", source) == expected


def test_the_readme_architecture_map_names_every_module() -> None:
    """Each module file appears, by name, in the README's map block of its package (or on a line of its own)."""
    import re

    readme = (PACKAGE.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Architecture", 1)[1]
    block = section.split("```", 2)[1]
    names_by_package: dict[str, set[str]] = {}
    package = "dsn"
    for line in block.splitlines():
        start = re.match(r"(dsn/[\w/]*?)(\w+\.py)?[ ,]", line)
        if start:
            package = start.group(1).rstrip("/").replace("/", ".") if not start.group(2) else "dsn"
        words = set(re.findall(r"[a-z_]+", line))
        names_by_package.setdefault(package, set()).update(words)
        names_by_package.setdefault("dsn", set()).update(re.findall(r"dsn/(\w+)\.py", line) + re.findall(r"(\w+)\.py", line))
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.stem in ("__init__", "__main__"):
            continue
        module = module_name(path)
        parent = module.rpartition(".")[0]
        top = ".".join(module.split(".")[:2]) if module.count(".") >= 2 else "dsn"
        known = names_by_package.get(parent, set()) | names_by_package.get(top, set())
        if path.stem not in known:
            missing.append(module)
    assert missing == [], f"modules the README's architecture map does not name: {missing}"


def test_the_accept_rule_is_written_once() -> None:
    """``distance <= threshold`` lives in ``dsn.model.detailsemnet.accepts``; every other module calls it."""
    written = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Compare) and any(isinstance(op, (ast.LtE, ast.Gt)) for op in node.ops):
                text = ast.unparse(node)
                if "threshold" in text and "distance" in text:
                    written.append(f"{module_name(path)}: {text}")
    assert written == ["dsn.model.detailsemnet: distance <= threshold"], written


def test_one_public_way_to_name_weights() -> None:
    """One ``source_label`` in the package: two functions of one name gave visitors two different names."""
    defined = [
        module_name(path)
        for path in sorted(PACKAGE.rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == "source_label"
    ]
    assert defined == ["dsn.loading"], defined


def test_one_public_way_to_load_a_model() -> None:
    """``dsn.load`` (``dsn.loading.load``) is the loader: a second function that loads a model would drift from it."""
    loaders = [
        f"{module_name(path)}.{node.name}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for node in ast.parse(path.read_text(encoding="utf-8")).body
        if isinstance(node, ast.FunctionDef)
        and node.name.startswith("load")
        and node.returns is not None
        and "DetailSemNet" in ast.unparse(node.returns)
    ]
    assert loaders == ["dsn.load", "dsn.loading.load"], loaders
