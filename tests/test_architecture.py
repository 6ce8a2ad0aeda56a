"""The package's shape: imports only go downward, and only `minime.layout` spells `out/`."""

from __future__ import annotations

import ast
from pathlib import Path

from minime import layout

SRC = Path(__file__).resolve().parent.parent / "src" / "minime"
#: The stage packages; only the orchestration above them (build, candidates, cli,
#: report) may import more than one.
STAGES = ("data", "distill", "export", "serve", "eval")


def _modules() -> dict[str, Path]:
    modules = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = ["minime", *path.relative_to(SRC).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The minime modules `name` imports anywhere: at module level or inside a function."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([node.module] if node.module else [])])
            # `from minime import layout` imports the module minime.layout, not minime.
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target.startswith("minime") and target != name:
                found.add(target)
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in STAGES else None


def _cycle_from(start: str) -> list[str] | None:
    """A path of imports from `start` back to itself, if there is one."""
    stack, seen = [(start, [start])], set()
    while stack:
        module, path = stack.pop()
        for target in sorted(GRAPH[module]):
            if target == start:
                return [*path, start]
            if target not in seen:
                seen.add(target)
                stack.append((target, [*path, target]))
    return None


def test_no_import_cycles_counting_imports_inside_functions():
    cycles = [cycle for module in GRAPH if (cycle := _cycle_from(module))]
    assert not cycles, "\n".join(" -> ".join(cycle) for cycle in cycles)


def test_no_stage_package_imports_another():
    crossings = {
        (module, target)
        for module, targets in GRAPH.items()
        for target in targets
        if _stage(module) and _stage(target) and _stage(module) != _stage(target)
    }
    assert not crossings, sorted(crossings)


#: File names `minime.layout` owns: outside it they are never a path component.
LAYOUT_NAMES = {
    layout.OUT,
    layout.TRAIN,
    layout.VAL,
    layout.MODEL,
    layout.REPORT_JSON,
    layout.EXPORT_JSON,
    layout.VERIFY_JSON,
    layout.STAMP,
    "requests.jsonl",
    "profile.sha256",
    "build-settings.json",
}


def _path_literals(tree: ast.AST) -> list[tuple[int, str]]:
    """String literals used to build a path: an operand of `/`, or an argument of a call
    (`Path("out/...")`, `.glob("out/...")`, `.with_name("export.json")`)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            operands = [node.left, node.right]
        elif isinstance(node, ast.Call):
            operands = list(node.args)
        else:
            continue
        for operand in operands:
            if isinstance(operand, ast.Constant) and isinstance(operand.value, str):
                found.append((operand.lineno, operand.value))
    return found


def _names_an_out_path(text: str) -> bool:
    return text in LAYOUT_NAMES or text.startswith(f"{layout.OUT}/")


def test_out_paths_are_built_only_in_the_layout_module():
    offenders = [
        f"{path.relative_to(SRC)}:{line}: {text!r}"
        for name, path in MODULES.items()
        if name != "minime.layout"
        for line, text in _path_literals(ast.parse(path.read_text(encoding="utf-8")))
        if _names_an_out_path(text)
    ]
    assert not offenders, "\n".join(offenders)
