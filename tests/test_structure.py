"""The package's shape: no import cycles (imports inside functions count), `data/` below the
task layer, no module over MAX_LINES lines and no function over MAX_FUNCTION_LINES.

A cycle broken only by a function-level import still couples two modules both ways;
so the graph here holds every `import` statement of lstm_train, wherever it stands,
except those under `if TYPE_CHECKING:` (annotations only, never executed).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lstm_train"
MAX_LINES = 600
MAX_FUNCTION_LINES = 60

# No exception lists: every module, every function and every import of the package keeps these rules.


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of nodes inside `if TYPE_CHECKING:` blocks."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING":
            skipped |= {id(n) for child in node.body for n in ast.walk(child)}
    return skipped


def imports(path: Path, modules: set[str]) -> set[str]:
    """lstm_train modules that `path` imports, anywhere in the file."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text())
    skipped = type_checking_nodes(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        for target in targets:
            while target and target not in modules:
                target = target.rsplit(".", 1)[0] if "." in target else ""
            if target and target != name:
                found.add(target)
    return found


def test_no_import_cycles_anywhere() -> None:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    graph = {module_name(p): imports(p, modules) for p in paths}
    # A package's __init__ importing its own submodules is how packages work, not a cycle
    # between concerns: drop parent -> child edges before searching.
    graph = {m: {t for t in ts if not t.startswith(m + ".")} for m, ts in graph.items()}
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def relative(path: Path) -> str:
    return str(path.relative_to(PACKAGE.parent))


def test_no_module_over_the_line_budget() -> None:
    long = {relative(p) for p in PACKAGE.rglob("*.py") if len(p.read_text().splitlines()) > MAX_LINES}
    assert long == set(), f"modules over {MAX_LINES} lines (split each along its seams): {sorted(long)}"


def long_functions() -> set[str]:
    """`path:qualname (N lines)` of every function or method longer than MAX_FUNCTION_LINES
    (decorators and docstring included: what a reader has to hold)."""
    found = set()
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        scopes = [(tree, "")]
        while scopes:
            node, prefix = scopes.pop()
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    name = prefix + child.name
                    if not isinstance(child, ast.ClassDef):
                        first = min([child.lineno] + [d.lineno for d in child.decorator_list])
                        size = child.end_lineno - first + 1
                        if size > MAX_FUNCTION_LINES:
                            found.add(f"{relative(path)}:{name}")
                    scopes.append((child, name + "."))
    return found


def test_no_function_over_the_line_budget() -> None:
    long = long_functions()
    assert long == set(), f"functions over {MAX_FUNCTION_LINES} lines (cut each into named steps): {sorted(long)}"


def test_data_sits_below_the_task_layer() -> None:
    """The store and the readers serve tasks; a task-layer import from data/ turns that around."""
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
    arrows = {f"{module_name(p)} -> {t}" for p in (PACKAGE / "data").rglob("*.py")
              for t in imports(p, modules) if t.startswith("lstm_train.tasks")}
    assert arrows == set(), f"data/ importing tasks/ (the layer above it): {sorted(arrows)}"


def test_the_node_side_of_slurm_imports_no_submission_code() -> None:
    """What runs on a compute node must not drag in submission, status or pre-flight code."""
    node = PACKAGE / "slurm" / "node.py"
    assert node.is_file(), f"{node} moved: point this test at the module a compute node imports"
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
    reached, todo = set(), [module_name(node)]
    while todo:
        current = todo.pop()
        if current in reached:
            continue
        reached.add(current)
        path = PACKAGE.parent / (current.replace(".", "/") + ".py")
        if not path.exists():
            path = PACKAGE.parent / current.replace(".", "/") / "__init__.py"
        todo += sorted(imports(path, modules))
    forbidden = sorted(m for m in reached if m.startswith("lstm_train.slurm.") and m != module_name(node))
    assert not forbidden, f"slurm/node.py reaches {forbidden}"


def test_the_task_layer_keeps_to_its_contract() -> None:
    """Tasks never read checkpoints themselves (rank 0 chooses one for every rank, in the loop);
    models arrive as the plain module (no DDP unwrapping); generic code reads no task's keys."""
    tasks = PACKAGE / "tasks"
    for path in tasks.glob("*.py"):
        reached = imports(path, {module_name(p) for p in PACKAGE.rglob("*.py")})
        assert "lstm_train.checkpoint" not in reached, f"{path.name} imports the checkpoint module"
    unwrapping = [p.name for p in PACKAGE.rglob("*.py") if 'getattr(model, "module"' in p.read_text()]
    assert not unwrapping, f"modules unwrapping a DDP model: {unwrapping}"
    generic = [*(PACKAGE / "train").glob("*.py"), *(PACKAGE / "bench").glob("*.py")]
    task_keys = [p.name for p in generic if "getattr(job.data" in p.read_text() or "getattr(run.job.data" in
                 p.read_text() or "getattr(task.job.data" in p.read_text()]
    assert not task_keys, f"generic code reading task-specific data keys: {task_keys}"


def test_the_benchmark_races_stay_outside_the_library() -> None:
    """`bench/` is a command (`lstm-train bench`), not part of what training imports: only the
    CLI may reach it, so reading the library never means reading the races."""
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
    reaching = sorted(module_name(p) for p in PACKAGE.rglob("*.py")
                      if not module_name(p).startswith("lstm_train.bench") and module_name(p) != "lstm_train.cli"
                      and any(t.startswith("lstm_train.bench") for t in imports(p, modules)))
    assert not reaching, f"library modules importing bench/: {reaching}"
