"""The code's shape, as a newcomer reads it: short functions in the core, plugins that import
only the SDK, every imported library declared, project metadata that builds without warnings."""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 450


def _python_files(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (REPO / folder).rglob("*.py"))


def _imports(path: Path) -> list[str]:
    """Every module a file imports (top level and inside functions); relative imports excluded."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


def test_no_function_in_the_core_or_a_plugin_is_longer_than_a_reader_can_hold():
    long = []
    for path in _python_files("peftbench", "plugins"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({length} lines)")
    assert not long, long


def test_no_core_or_plugin_module_is_longer_than_a_room():
    long = [f"{p.relative_to(REPO)} ({n} lines)" for p in _python_files("peftbench", "plugins")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES]
    assert not long, long


def plugin_sources() -> list[Path]:
    return [*_python_files("plugins"), REPO / "examples" / "peftbench-plugin-embedding-tuning" / "peftbench_embedding_tuning.py"]


@pytest.mark.parametrize("path", plugin_sources(), ids=lambda p: str(p.relative_to(REPO)))
def test_plugins_import_only_the_sdk(path):
    core = {name for name in _imports(path) if name == "peftbench" or name.startswith("peftbench.")}
    assert core <= {"peftbench.sdk"}, f"{path.name} imports {sorted(core - {'peftbench.sdk'})}"


def _plugin_imports(path: Path) -> set[str]:
    """The plugin modules a plugin file imports: absolute (peftbench_plugins.x) or relative (.x, ..x.y)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level > 0:
            package = path.parent.relative_to(REPO / "plugins").parts[: len(path.parent.relative_to(REPO / "plugins").parts)
                                                                         - node.level + 1]
            base = ".".join(("plugins", *package, *([node.module] if node.module else [])))
            found |= {base} if node.module else {f"{base}.{alias.name}" for alias in node.names}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            found |= {n.replace("peftbench_plugins", "plugins", 1) for n in names if n.startswith("peftbench_plugins")}
    return found


@pytest.mark.parametrize("path", _python_files("plugins"), ids=lambda p: str(p.relative_to(REPO)))
def test_no_plugin_imports_another_plugin(path):
    """Shared pieces go through the SDK or a module of their own (a name starting with _ or ending in
    _shared is a helper, not a plugin: it registers nothing)."""
    others = {name for name in _plugin_imports(path)
              if not _is_helper(REPO / Path(*name.split("."))) and name != ".".join(path.with_suffix("").relative_to(REPO).parts)}
    assert not others, f"{path.relative_to(REPO)} imports the plugin(s) {sorted(others)}"


def _is_helper(module: Path) -> bool:
    """A helper module registers no component: it has no @hookimpl."""
    file = module.with_suffix(".py") if module.with_suffix(".py").exists() else module / "__init__.py"
    return not file.exists() or "@hookimpl" not in file.read_text(encoding="utf-8")


def _declared() -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    requirements = [*project["dependencies"], *(r for extra in project["optional-dependencies"].values()
                                                for r in extra)]
    return {re.split(r"[\s<>=~!\[;]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements}


def test_every_imported_library_is_declared():
    """A library the code imports but pyproject.toml does not declare works only by accident
    (another package pulled it in) and breaks on the next clean install."""
    providers = importlib.metadata.packages_distributions()
    local = {"peftbench", "peftbench_plugins"}
    missing = {}
    for path in _python_files("peftbench", "plugins"):
        for name in _imports(path):
            top = name.split(".")[0]
            if top in sys.stdlib_module_names or top in local:
                continue
            dists = {d.lower().replace("_", "-") for d in providers.get(top, [top])}
            if not dists & _declared():
                missing.setdefault(top, str(path.relative_to(REPO)))
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def test_project_metadata_builds_without_warnings(tmp_path):
    """`make setup` builds this metadata; a deprecation warning there is the first thing a user sees."""
    script = ("import warnings, setuptools.build_meta as b; warnings.simplefilter('always'); "
              f"b.prepare_metadata_for_build_wheel({str(tmp_path)!r})")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONWARNINGS="always"))
    assert done.returncode == 0, done.stderr
    assert "deprecat" not in (done.stdout + done.stderr).lower(), done.stderr


def _module_name(path: Path) -> str:
    """The dotted name a file imports as: plugins/ installs as peftbench_plugins."""
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    parts[0] = {"plugins": "peftbench_plugins"}.get(parts[0], parts[0])
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _internal_imports(path: Path, modules: set[str]) -> set[str]:
    """The repository's modules a file imports, anywhere in it (top level, in functions, under
    TYPE_CHECKING), relative imports resolved; `from pkg import mod` counts as importing pkg.mod."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        found |= {t for t in targets if t in modules and t != name}
    return found


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return circles


def test_no_import_circles():
    """Two modules that import each other (directly or round a longer loop) cannot be read, tested or
    moved apart: the shared piece belongs on the floor below both."""
    files = _python_files("peftbench", "plugins", "benchmarks")
    modules = {_module_name(p) for p in files}
    graph = {_module_name(p): _internal_imports(p, modules) for p in files}
    assert _circles(graph) == []


def test_the_circle_check_sees_a_circle():
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


# The core's floors: the top-level contracts everything stands on, then the rooms in the order a run
# flows. A room imports the contracts, its own modules and the rooms before it, never one after it;
# the facades (the package's __init__, __main__, the SDK) are imported by no core module.
CONTRACTS = {"api", "errors", "config", "hookspecs", "stages", "executor", "collector"}
FACADES = {"__init__", "__main__", "sdk"}
ROOMS = ("records", "components", "run", "suite", "results", "cli")
MAX_TOP_LEVEL_MODULES = 12


def _core_graph() -> dict[str, set[str]]:
    files = _python_files("peftbench")
    modules = {_module_name(p) for p in files}
    return {_module_name(p): _internal_imports(p, modules) for p in files}


def _floor(module: str) -> tuple[int, str]:
    """(floor, room) of a core module: 0 for a contract, 1.. for the rooms in flow order, 99 for a facade."""
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in FACADES:
        return 99, "facade"
    if parts[1] in CONTRACTS:
        return 0, "contracts"
    return ROOMS.index(parts[1]) + 1, parts[1]


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    found = []
    for module, imported in sorted(graph.items()):
        floor, room = _floor(module)
        if room == "facade":
            continue
        found += [f"{module} -> {other}" for other in sorted(imported)
                  if _floor(other)[0] > floor or (floor == 0 and _floor(other)[0] != 0)]
    return found


def test_the_core_top_level_is_a_few_contracts_beside_its_rooms():
    top = sorted(p.stem for p in (REPO / "peftbench").glob("*.py"))
    rooms = sorted(p.name for p in (REPO / "peftbench").iterdir() if (p / "__init__.py").exists())
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top
    assert set(top) == CONTRACTS | FACADES, "a new top-level module: a contract, or a module of a room?"
    assert rooms == sorted(ROOMS)


def test_no_room_imports_a_room_after_it_nor_the_package_facades():
    assert upward_imports(_core_graph()) == []


def test_the_floor_check_sees_an_upward_import():
    graph = {"peftbench.run.runner": {"peftbench.suite.tuning"}, "peftbench.suite.plan": {"peftbench.run.spec"},
             "peftbench.api": {"peftbench.records.record"}, "peftbench.records.files": {"peftbench.sdk"}}
    assert upward_imports(graph) == ["peftbench.api -> peftbench.records.record",
                                     "peftbench.records.files -> peftbench.sdk",
                                     "peftbench.run.runner -> peftbench.suite.tuning"]


def _layout() -> str:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = readme.split("## Layout", 1)[1].split("```", 2)[1]
    return block.split("\nplugins/", 1)[0]


def test_readme_layout_names_every_core_module_in_its_room():
    """Each room's paragraph (from `  room/` to the next room) names each of its files."""
    layout = _layout()
    paragraphs = {room: _paragraph(layout, room) for room in ROOMS}
    unnamed = []
    for path in _python_files("peftbench"):
        parts = path.relative_to(REPO / "peftbench").parts
        if len(parts) > 1 and path.name == "__init__.py" and _only_a_docstring(path):
            continue
        where = paragraphs[parts[0]] if len(parts) > 1 else _paragraph(layout, None)
        if path.name not in where:
            unnamed.append(str(path.relative_to(REPO)))
    assert not unnamed, f"README's Layout does not name {unnamed}"


def _paragraph(layout: str, room: str | None) -> str:
    """The lines of one room (`  room/` up to the next line indented by two spaces and naming a
    room), or for None the top-level lines before the first room."""
    lines = layout.splitlines()
    starts = {r: next(i for i, line in enumerate(lines) if line.startswith(f"  {r}/")) for r in ROOMS}
    if room is None:
        return "\n".join(lines[: min(starts.values())])
    after = sorted(i for i in starts.values() if i > starts[room])
    return "\n".join(lines[starts[room]: after[0] if after else len(lines)])


def _only_a_docstring(path: Path) -> bool:
    body = ast.parse(path.read_text(encoding="utf-8")).body
    return all(isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) for node in body)
