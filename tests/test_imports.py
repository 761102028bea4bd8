"""The package's import graph: no module imports itself back through another, and none reaches for another module's
private names."""

import ast
from pathlib import Path

import compresskit

PACKAGE = Path(compresskit.__file__).parent


def top_level(name: str) -> str | None:
    """The compresskit module or subpackage a dotted name lies in (``compresskit.tasks.classification`` → ``tasks``);
    None outside the package, and for the root package, which only holds the version."""
    parts = name.split(".")
    return parts[1] if parts[0] == "compresskit" and len(parts) > 1 else None


def imports(path: Path) -> set[str]:
    """The compresskit modules (a subpackage counts as one) that ``path`` imports, at module level or inside
    functions: an import inside a function still runs the imported module, and a cycle through it is still one."""
    package = ".".join(path.relative_to(PACKAGE.parent).parent.parts)
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x, from ..data import y
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [base, *(f"{base}.{a.name}" for a in node.names)]  # from compresskit import export
        else:
            continue
        for name in names:
            top = top_level(name)
            if top and ((PACKAGE / top).is_dir() or (PACKAGE / f"{top}.py").is_file()):
                found.add(top)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module (or subpackage) → the modules it imports, over compresskit/*.py and compresskit/*/ (imports inside a
    subpackage are its own business: they become a self-edge and are dropped)."""
    graph: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        node = top_level(".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts))
        if node is None or node == "__init__":
            continue
        graph.setdefault(node, set()).update(imports(path))
    for node, deps in graph.items():
        deps.discard(node)
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


def test_no_module_imports_itself_back():
    graph = import_graph()
    assert "onnx_io" in graph["export"] and "layer_norm" in graph["export"]
    assert cycles(graph) == {}


def test_the_cycle_check_finds_a_cycle_through_another_module():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == {"a": ["b"], "b": ["c"], "c": ["a"]}


def test_onnx_modules_import_no_private_names():
    """Modules that talk to ONNX share public functions (onnx_io, torch_export, timing), not each other's internals."""
    owned = ["export", "layer_norm", "quantize", "teacher_cache", "bench_worker", "artifacts", "onnx_runtime", "verify",
             "onnx_io", "timing", "torch_export"]
    private = []
    for name in owned:
        tree = ast.parse((PACKAGE / f"{name}.py").read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("compresskit"):
                private += [f"{name}: {node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
    assert private == []
