"""The package's shape: no import cycles (imports inside functions count), modules of one concern.

A cycle broken only by a function-level import still couples two modules both ways;
so the graph here holds every `import` statement of lstm_train, wherever it stands,
except those under `if TYPE_CHECKING:` (annotations only, never executed).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lstm_train"
MAX_LINES = 500


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


def test_modules_hold_one_concern() -> None:
    """Over MAX_LINES lines a module must say in its docstring why it is still one concern."""
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        lines = len(path.read_text().splitlines())
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        if lines > MAX_LINES and "one concern" not in doc.lower():
            long.append(f"{path.relative_to(PACKAGE.parent)} ({lines} lines)")
    assert not long, f"modules over {MAX_LINES} lines without a one-concern note: {long}"


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
    generic = [PACKAGE / "train.py", *(PACKAGE / "bench").glob("*.py")]
    task_keys = [p.name for p in generic if "getattr(job.data" in p.read_text() or "getattr(run.job.data" in
                 p.read_text() or "getattr(task.job.data" in p.read_text()]
    assert not task_keys, f"generic code reading task-specific data keys: {task_keys}"
