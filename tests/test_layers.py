"""The source tree's layers (docs/layout.md): each package imports only itself and the packages below it, and
the domain core imports no torch or TRL. Read from the code's own import statements, lazy ones included."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "agrl"

# lowest first; a module may import its own package and any package of a lower rank
RANKS = {"errors": 0, "files": 1, "progress": 1, "data": 2, "core": 3, "model": 4, "train": 5, "evaluation": 6,
         "serve": 7, "sbs": 7, "run": 8, "cli": 9, "__main__": 10, "__init__": 0}  # __init__: the version only
PURE = ("data", "core", "evaluation/metrics.py")  # the domain core: no torch, transformers or TRL
HEAVY = {"torch", "transformers", "trl", "peft", "accelerate"}


def _layer(module: str) -> str:
    """agrl.core.rules -> core; agrl.cli -> cli; agrl.__version__ -> __init__."""
    layer = module.split(".")[1] if module.count(".") else "__init__"
    return layer if layer in RANKS else "__init__"


def _imports(path: Path, package: str | None = None) -> list[tuple[int, str]]:
    """Every module an import statement of `path` names, with its line (relative imports made absolute)."""
    package = package or ".".join(path.relative_to(SRC.parent).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found += [(node.lineno, f"{base}.{alias.name}" if base == "agrl" else base) for alias in node.names]
    return found


def _modules():
    return sorted(p for p in SRC.rglob("*.py") if "recipes" not in p.parts)


def test_every_module_has_a_layer():
    for path in _modules():
        assert path.relative_to(SRC).parts[0].removesuffix(".py") in RANKS, path


def test_imports_point_down():
    upward = []
    for path in _modules():
        own = path.relative_to(SRC).parts[0].removesuffix(".py")
        for line, module in _imports(path):
            if module.startswith("agrl.") and _layer(module) != own and RANKS[_layer(module)] >= RANKS[own]:
                upward.append(f"{path.relative_to(SRC)}:{line}: {own} imports {module}")
    assert not upward, "\n".join(upward)


def test_the_domain_core_imports_no_torch():
    heavy = []
    for path in _modules():
        rel = path.relative_to(SRC).as_posix()
        if rel.startswith(PURE):
            heavy += [f"{rel}:{line}: {module}" for line, module in _imports(path) if module.split(".")[0] in HEAVY]
    assert not heavy, "\n".join(heavy)


def test_the_check_sees_lazy_and_relative_imports(tmp_path):
    """The parser above finds what it must: a lazy import inside a function, and a relative one."""
    probe = tmp_path / "probe.py"
    probe.write_text("import os\ndef f():\n    from agrl.model.score import Scorer\n    from ..core import rules\n")
    found = _imports(probe, package="agrl.data")
    assert found == [(1, "os"), (3, "agrl.model.score"), (4, "agrl.core")]
    assert [_layer(module) for _, module in found[1:]] == ["model", "core"]
