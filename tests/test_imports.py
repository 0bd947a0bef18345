"""The package's import graph has no cycles and keeps the layer order (issue 23, item 6).

Dependencies point one way: ops <- layers <- models <- eval <- train <- experiments <- cli. Nothing imports a
layer above its own. The modules outside those packages sit in the order too (`PLACES`): below ops the core
(errors, config, tokenizer, runtime, the MQAR row layout), then data, run files and report writers; checkpoints
and export with the models, sampling with evaluation, the Python API with the commands. Every `import` counts,
at module level or deferred inside a function, except those under `if TYPE_CHECKING:` (type hints only, never
run). The edges are the modules a file names; a package's `__init__` is a module like any other.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "hope"
LAYERS = ("ops", "layers", "models", "eval", "train", "experiments", "cli")
CORE, FILES = -2, -1  # below ops: the core (errors, config, ...), then data and run files, which use the core
# Where each module outside the seven layer packages sits (a name stands for itself and its submodules).
PLACES = {"hope.errors": CORE, "hope.atomic": CORE, "hope.tokenizer": CORE, "hope.mqar_layout": CORE,
          "hope.config": CORE, "hope.runtime": CORE,
          "hope.data": FILES, "hope.runs": FILES, "hope.report": FILES,
          "hope.checkpoint": LAYERS.index("models"), "hope.export": LAYERS.index("models"),
          "hope.sampling": LAYERS.index("eval"), "hope.api": LAYERS.index("cli"), "hope": LAYERS.index("cli")}

# Upward imports kept on purpose: (importer, imported) -> why. Empty: none is needed today.
ALLOWED_UPWARD: dict[tuple[str, str], str] = {}


def module_names() -> dict[str, Path]:
    names = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _type_checking_only(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules `name` imports (a `from package import name` names the submodule when there is one)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if _type_checking_only(node, parents):
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # `import hope.x.y` of a name inside a module
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = module_names()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def layer(name: str) -> int | None:
    parts = name.split(".")
    if len(parts) > 1 and parts[1] in LAYERS:
        return LAYERS.index(parts[1])
    for prefix in (name, ".".join(parts[:2])):
        if prefix in PLACES:
            return PLACES[prefix]
    return None


def _name(rank: int) -> str:
    return {CORE: "core", FILES: "data and files"}.get(rank) or LAYERS[rank]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected component that has one (Tarjan), as a path."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(_path_in(component, graph))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _path_in(component: set[str], graph: dict[str, set[str]]) -> list[str]:
    start = min(component)
    seen, frontier = {start: [start]}, [start]
    while frontier:
        v = frontier.pop(0)
        for w in sorted(graph[v] & component):
            if w == start:
                return seen[v] + [start]
            if w not in seen:
                seen[w] = seen[v] + [w]
                frontier.append(w)
    return sorted(component)


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for importer, targets in sorted(graph.items()):
        for target in sorted(targets):
            low, high = layer(importer), layer(target)
            if low is not None and high is not None and high > low and (importer, target) not in ALLOWED_UPWARD:
                bad.append(f"{importer} ({_name(low)}) imports {target} ({_name(high)})")
    return bad


def test_the_graph_is_read():
    graph = import_graph()
    assert "hope.models.lm" in graph and "hope.layers.smt" in graph["hope.models.hope"]
    assert "hope.config" in graph["hope.models.lm"]
    assert "hope.train.loop" in graph["hope.api"]  # deferred imports count
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert upward_imports({"hope.ops.x": {"hope.cli.y"}, "hope.cli.y": {"hope.ops.x"}}) == [
        "hope.ops.x (ops) imports hope.cli.y (cli)"]
    assert upward_imports({"hope.config": {"hope.data.mqar"}, "hope.train": {"hope.api"}}) == [
        "hope.config (core) imports hope.data.mqar (data and files)", "hope.train (train) imports hope.api (cli)"]


def test_every_module_has_a_place():
    unplaced = [name for name in import_graph() if layer(name) is None]
    assert not unplaced, f"add these to PLACES or a layer package: {unplaced}"


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "\n".join(" -> ".join(c) for c in found)


def test_layer_order():
    bad = upward_imports(import_graph())
    assert not bad, "\n".join(bad)


def test_allowed_upward_imports_still_exist():
    graph = import_graph()
    stale = [pair for pair in ALLOWED_UPWARD if pair[1] not in graph.get(pair[0], set())]
    assert not stale, stale
