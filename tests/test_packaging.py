"""What `pip install kws` gives is enough to import every module: each package `kws/` imports is in the
standard library or declared in pyproject.toml; optional extras are imported only behind an ImportError
guard that tells the user how to install them."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from collections.abc import Iterator

import tomllib

from tests.helpers import REPO

PACKAGE = REPO / "kws"


def _requirement_name(requirement: str) -> str:
    """`torch==2.11.*` -> `torch`; `foo[bar]>=1; python_version<'3.12'` -> `foo`."""
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement.strip())
    assert match, f"unparsable requirement {requirement!r} in pyproject.toml"
    return match.group(0)


def _normalized(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


def _import_names(distribution: str) -> set[str]:
    """The top-level import names a distribution provides: from its installed metadata when it is
    installed (PyYAML -> yaml), else the import name pip projects almost always use (its own name)."""
    wanted = _normalized(distribution)
    names = {
        module
        for module, distributions in importlib.metadata.packages_distributions().items()
        if any(_normalized(d) == wanted for d in distributions)
    }
    return names or {wanted.replace("-", "_")}


def _declared() -> tuple[set[str], dict[str, str]]:
    """(import names of the required dependencies, {import name of an optional extra: extra's name})."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    required = {name for req in project["dependencies"] for name in _import_names(_requirement_name(req))}
    optional: dict[str, str] = {}
    for extra, requirements in project.get("optional-dependencies", {}).items():
        if extra == "dev":  # test and lint tools: never imported by kws itself
            continue
        for req in requirements:
            for name in _import_names(_requirement_name(req)):
                optional[name] = extra
    return required, optional


def _imports(tree: ast.AST) -> Iterator[tuple[str, ast.stmt]]:
    """(top-level package, import statement) of every absolute import, at module level or in functions."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name.split(".")[0], node
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0], node


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(isinstance(k, ast.Name) and k.id in {"ImportError", "ModuleNotFoundError"} for k in kinds)


def _guard_problem(tree: ast.AST, node: ast.stmt, extra: str) -> str | None:
    """Why the import `node` of the optional `extra` is not properly guarded, or None when it is.

    Guarded means: the import sits in the body of a `try` with an `except ImportError` handler, and a
    handler that raises says `pip install 'kws[extra]'` in its message (a handler that quietly falls back,
    e.g. no TensorBoard logging, has no message to give)."""
    for parent in ast.walk(tree):
        if not isinstance(parent, ast.Try) or not any(node in ast.walk(s) for s in parent.body):
            continue
        handlers = [h for h in parent.handlers if _catches_import_error(h)]
        if not handlers:
            return "its try has no `except ImportError`"
        for handler in handlers:
            raises = [r for r in ast.walk(handler) if isinstance(r, ast.Raise)]
            texts = [
                c.value
                for r in raises
                for c in ast.walk(r)
                if isinstance(c, ast.Constant) and isinstance(c.value, str)
            ]
            if raises and not any(f"kws[{extra}]" in text for text in texts):
                return f"its ImportError message does not say `pip install 'kws[{extra}]'`"
        return None
    return "it is not inside `try: ... except ImportError`"


def test_every_import_is_stdlib_kws_or_a_declared_dependency() -> None:
    required, optional = _declared()
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        where = path.relative_to(REPO)
        for name, node in _imports(tree):
            if name in sys.stdlib_module_names or name == "kws" or name in required:
                continue
            if name in optional:
                problem = _guard_problem(tree, node, optional[name])
                if problem:
                    problems.append(
                        f"{where}:{node.lineno}: optional `{name}` (kws[{optional[name]}]): {problem}"
                    )
                continue
            problems.append(f"{where}:{node.lineno}: imports `{name}`, which pyproject.toml does not declare")
    assert not problems, "\n".join(problems)


def test_declared_names_resolve() -> None:
    """The mapping the test above relies on: distribution names become the names `import` uses."""
    required, optional = _declared()
    assert {"torch", "torchaudio", "typer", "rich", "soundfile", "numpy", "yaml", "matplotlib"} <= required
    assert optional.get("sounddevice") == "audio" and optional.get("tensorboard") == "tensorboard"
    assert "click" not in required


def _problem(source: str) -> str | None:
    tree = ast.parse(source)
    node = next(n for _, n in _imports(tree))
    return _guard_problem(tree, node, "audio")


def test_the_guard_check_catches_unguarded_and_silent_optional_imports() -> None:
    assert _problem("import sounddevice") == "it is not inside `try: ... except ImportError`"
    assert _problem("try:\n    import sounddevice\nexcept OSError:\n    pass") == (
        "its try has no `except ImportError`"
    )
    unhelpful = "try:\n    import sounddevice\nexcept ImportError:\n    raise RuntimeError('no sound')"
    assert _problem(unhelpful) == "its ImportError message does not say `pip install 'kws[audio]'`"
    helpful = (
        "try:\n    import sounddevice\nexcept (ImportError, OSError) as exc:\n"
        "    raise KWSError(f'--play needs it ({exc}); `pip install \\'kws[audio]\\'`') from None"
    )
    assert _problem(helpful) is None
    assert _problem("try:\n    import sounddevice\nexcept ImportError:\n    sounddevice = None") is None
