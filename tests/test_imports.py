"""The package's shape, checked on its import graph: no module imports itself back through another; the shared core
never reaches into a task family (it asks the ``Task`` protocol); families do not import each other; the core never
decides by a family's name; and no module reaches for another module's private names."""

import ast
from pathlib import Path

import compresskit
from compresskit.tasks import task_names

PACKAGE = Path(compresskit.__file__).parent
FAMILIES = {p.name for p in (PACKAGE / "tasks").iterdir() if (p / "__init__.py").is_file()}
PUBLIC_SHIMS = {"compresskit.runtime"}
"""Documented entry points that re-export a family's public class (``compresskit.runtime.OnnxClassifier``)."""


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its ``__init__``)."""
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path, known: set[str]) -> set[str]:
    """The compresskit modules ``path`` imports, at module level or inside functions (an import inside a function
    still runs the imported module, and a cycle through it is still one). ``from package import module`` counts as
    importing the module; ``from module import name`` as importing the module."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        found |= {n for n in names if n in known and n != "compresskit"}
    return found


def import_graph() -> dict[str, set[str]]:
    known = set(modules())
    graph = {name: imports(path, known) for name, path in modules().items()}
    for name, deps in graph.items():
        deps.discard(name)
    return graph


def cycles(graph: dict[str, set[str]]) -> dict[str, list[str]]:
    """For each module that reaches itself, the modules it imports that lead back to it."""
    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for dep in graph.get(todo.pop(), ()):
                if dep not in seen:
                    seen.add(dep)
                    todo.append(dep)
        return seen

    reached = {m: reach(m) for m in graph}
    return {m: sorted(d for d in graph[m] if d == m or m in reached[d]) for m in graph if m in reached[m]}


def family_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[1] == "tasks" and parts[2] in FAMILIES else None


def test_no_module_imports_itself_back():
    graph = import_graph()
    assert "compresskit.onnx.io" in graph["compresskit.tasks.classification.export"]
    assert cycles(graph) == {}


def test_the_cycle_check_finds_a_cycle_through_another_module():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == {"a": ["b"], "b": ["c"], "c": ["a"]}


def test_the_core_reaches_a_family_only_through_the_registry():
    """Outside ``compresskit/tasks/<family>/`` nothing imports a family's modules: the registry
    (``compresskit.tasks``) imports each family's ``task`` module, and the documented public shims re-export."""
    reaching = sorted(f"{m} -> {d}" for m, deps in import_graph().items() for d in deps
                      if family_of(d) and not family_of(m) and m not in PUBLIC_SHIMS
                      and not (m == "compresskit.tasks" and d.endswith(".task")))
    assert reaching == []
    assert {family_of(d) for d in import_graph()["compresskit.tasks"] if family_of(d)} == FAMILIES


def test_families_do_not_import_each_other():
    crossing = sorted(f"{m} -> {d}" for m, deps in import_graph().items() for d in deps
                      if family_of(m) and family_of(d) and family_of(m) != family_of(d))
    assert crossing == []


def test_the_core_never_compares_a_family_name():
    """No ``task == "causal-lm"`` (or ``in (...)``) outside the families: the core asks the task instead."""
    names = set(task_names())
    found = []
    for name, path in modules().items():
        if family_of(name):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Compare):
                for c in ast.walk(node):
                    if isinstance(c, ast.Constant) and c.value in names:
                        found.append(f"{name}:{node.lineno}")
    assert found == []


def test_the_name_check_sees_a_comparison():
    tree = ast.parse('if data.get("task") == "causal-lm": pass')
    assert any(isinstance(c, ast.Constant) and c.value == "causal-lm"
               for n in ast.walk(tree) if isinstance(n, ast.Compare) for c in ast.walk(n))


def test_modules_import_no_private_names():
    """Modules share public functions, not each other's internals (a test may reach in; the package may not)."""
    private = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("compresskit"):
                private += [f"{name}: {node.module}.{a.name}" for a in node.names
                            if a.name.startswith("_") and not a.name.startswith("__")]
    assert private == []
