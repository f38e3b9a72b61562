"""The package's shape: modules small enough to read, no import cycles, nothing importing up the pipeline."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.helpers import REPO

PACKAGE = REPO / "kws"
MAX_LINES = 420  # STYLE.md: "under ~400 lines"

# The pipeline's stages in order; a module may import its own stage and those before it, never a later one.
# The shared foundation (errors, audio, files, config, console, ...) sits below every stage, and so do the
# stages' own config sections (`kws/<stage>/config.py`: dataclasses that `kws.config` assembles).
STAGES = (
    "prepare",
    "data",
    "augment",
    "features",
    "model",
    "optim",
    "nemo",  # model import: a NeMo .nemo file read as a checkpoint
    "checkpoint",
    "exported",  # an exported model file, which evaluate and detect run like a checkpoint
    "train",
    "evaluate",
    "detect",
    "export",
    "cli",
)
FOUNDATION = {
    "errors",
    "audio",
    "files",
    "checks",
    "config",
    "console",
    "plots",
    "interrupt",
    "manifest",
    "stream_manifest",
    "masks",
    "yaml_text",
    "thresholds",
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every `kws...` module imported anywhere in the file (inside functions too; not under TYPE_CHECKING)."""
    found: set[str] = set()
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            node.body = []  # annotations only: no import at run time
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "kws":
            found.add(node.module)
            for alias in node.names:  # `from kws.train import distributed` imports a module
                candidate = f"{node.module}.{alias.name}"
                if (PACKAGE.parent / candidate.replace(".", "/")).with_suffix(".py").is_file():
                    found.add(candidate)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "kws")
    return found


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_is_small_enough_to_read(name: str) -> None:
    n_lines = len(MODULES[name].read_text().splitlines())
    assert n_lines <= MAX_LINES, f"{name} has {n_lines} lines; split it by concept (STYLE.md: under ~400)"


def _graph() -> dict[str, set[str]]:
    return {name: {m for m in _imports(path) if m in MODULES and m != name} for name, path in MODULES.items()}


def test_no_import_cycles() -> None:
    graph = _graph()
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt) :] + [nxt]
                pytest.fail(f"import cycle: {' -> '.join(cycle)}")
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)


def _stage(module: str) -> int | None:
    """Position of the module's pipeline stage; None for the shared foundation and the package itself."""
    parts = module.split(".")
    if parts[-1] == "__main__":
        return STAGES.index("cli")
    if len(parts) < 2 or parts[1] in FOUNDATION or parts[-1] == "config":
        return None
    return STAGES.index(parts[1]) if parts[1] in STAGES else None


def test_every_module_belongs_to_a_stage_or_the_foundation() -> None:
    known = {*STAGES, *FOUNDATION, "__main__"}
    strays = [m for m in MODULES if m != "kws" and m.split(".")[1] not in known]
    assert not strays, f"modules outside the pipeline map (add them to a stage or the foundation): {strays}"


def test_nothing_imports_up_the_pipeline() -> None:
    upward = []
    for name, deps in _graph().items():
        here = _stage(name)
        for dep in deps:
            there = _stage(dep)
            if there is not None and (here is None or there > here):
                upward.append(f"{name} imports {dep}")
    assert not upward, "imports against the pipeline order: " + "; ".join(sorted(upward))


def test_every_test_that_needs_cuda_is_marked_gpu() -> None:
    # bench/gpu_check.sh runs `pytest -m gpu` on the GPU machine: a CUDA test without the mark never runs
    unmarked = []
    for path in sorted((REPO / "tests").rglob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.FunctionDef):
                continue
            decorators = [ast.unparse(d) for d in node.decorator_list]
            needs_cuda = any("skipif" in d and "not torch.cuda.is_available()" in d for d in decorators)
            if needs_cuda and "pytest.mark.gpu" not in decorators:
                unmarked.append(f"{path.relative_to(REPO)}::{node.name}")
    assert not unmarked, f"CUDA tests without @pytest.mark.gpu: {unmarked}"
