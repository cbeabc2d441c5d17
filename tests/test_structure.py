"""The import graph of python/interloop/ (docs/design.md, "Module graph"): no cycle,
and the two modules a worker runs at start import nothing else of the package."""
import ast
import pathlib

import interloop

PACKAGE = pathlib.Path(interloop.__file__).parent


def imports_of(path):
    """The package's modules that ``path`` imports, anywhere in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:  # from ._x import y
                found.add(node.module.split(".")[0])
            elif node.level == 1:  # from . import _x, _y
                found.update(alias.name for alias in node.names)
            elif node.module and node.module.split(".")[0] == "interloop":
                parts = node.module.split(".")
                found.update([parts[1]] if len(parts) > 1 else [a.name for a in node.names])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "interloop":
                    found.add(parts[1] if len(parts) > 1 else "__init__")
    return found


def graph():
    return {p.stem: imports_of(p) for p in PACKAGE.glob("*.py")}


def test_the_package_has_no_import_cycle():
    g = graph()
    state = {}  # module -> "visiting" | "done"

    def visit(m, path):
        if state.get(m) == "done":
            return
        assert state.get(m) != "visiting", f"import cycle: {' -> '.join(path + [m])}"
        state[m] = "visiting"
        for dep in sorted(g.get(m, ())):
            visit(dep, path + [m])
        state[m] = "done"

    assert {"_wire", "_worker", "_pool", "_channel", "_futures", "_executor"} <= set(g)
    for m in sorted(g):
        visit(m, [])


def test_worker_start_up_modules_import_only_what_a_worker_has():
    # A worker executes _wire.py then _worker.py with only the native module loaded.
    g = graph()
    assert g["_wire"] == {"_interloop"}
    assert g["_worker"] == {"_wire"}
