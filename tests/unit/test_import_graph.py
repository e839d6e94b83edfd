"""Imports in loyalty/ flow one way: no module reaches, however indirectly, back to itself.

Read from the source (every import, at the top of a module or inside a function, which is where a
cycle used to hide), so a new cycle fails here before it fails at import time in production."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "loyalty"


def modules():
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def import_graph():
    known = modules()

    def resolve(name):
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name

    graph = {}
    for module, path in known.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] +
                                    ([base] if base else []))
                # `from loyalty import clock` imports the module loyalty.clock; `from loyalty import
                # create_app` takes a name from the package itself.
                names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                         for alias in node.names]
            else:
                continue
            targets.update(resolve(name) for name in names if name.startswith("loyalty"))
        targets.discard(module)
        targets.discard("")
        graph[module] = targets
    return graph


def cycles(graph):
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_import_graph_of_loyalty_has_no_cycle():
    graph = import_graph()

    assert len(graph) > 40 and "loyalty.points.service" in graph  # it read the package
    assert cycles(graph) == []


def test_the_cycle_check_finds_a_cycle_when_there_is_one():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}

    assert cycles(graph) == [["a", "b", "c"]]


def test_imports_stand_at_the_top_of_their_module():
    """An import inside a function hides a dependency (it is how the old cycles were dodged); one that
    must stay there says why on its line with `# imported here:`."""
    hidden = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        lines = source.splitlines()
        for function in ast.walk(ast.parse(source)):
            if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(function):
                    if isinstance(node, (ast.Import, ast.ImportFrom)) and "# imported here:" not in lines[node.lineno - 1]:
                        hidden.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")

    assert hidden == []


def test_no_module_takes_another_modules_private_names():
    """A name with a leading underscore is its module's own: another module that needs it gets a public one."""
    taken = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("loyalty"):
                taken += [f"{path.relative_to(PACKAGE.parent)}: {node.module}.{alias.name}"
                          for alias in node.names if alias.name.startswith("_")]

    assert taken == []
