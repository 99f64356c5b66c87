"""The package's shape: no import cycle, and the scan path free of training code."""

import ast
from pathlib import Path

import mccscan

PACKAGE = Path(mccscan.__file__).parent
TRAINING_SIDE = {"mccscan.patches", "mccscan.train", "mccscan.builder", "mccscan.dataset_dir", "mccscan.tune",
                 "mccscan.evaluate", "mccscan.reproduce"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Every mccscan module → the mccscan modules it imports, at the top or inside a function."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from mccscan.web.routes import scans` names a module; `from mccscan.x import f` a module's member
                targets |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                            for a in node.names}
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules, or None (depth-first search)."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_in_the_package():
    graph = import_graph()
    assert {"mccscan.scan", "mccscan.train", "mccscan.web.app"} <= set(graph)
    assert find_cycle(graph) is None


def test_scan_and_web_import_nothing_from_the_training_side():
    graph = import_graph()
    for start in ["mccscan.scan", "mccscan.render"] + [m for m in graph if m.startswith("mccscan.web")]:
        assert not reachable(graph, start) & TRAINING_SIDE, start


def test_the_model_module_is_the_networks_only():
    assert import_graph()["mccscan.models"] <= {"mccscan.tiling"}
