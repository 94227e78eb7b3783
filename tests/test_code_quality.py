"""The code's own rules, checked in CI: ruff (lint + format), mypy (strict on the engine and the
storage), the import layering of docs/architecture.md, and module/function sizes."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import ROOT
from tests.import_graph import from_base, import_cycles, private_imports

PACKAGES = ("indexer", "service", "lorif_cli", "lorif_demo")
MAX_MODULE_LINES = 300
MAX_FUNCTION_LINES = 60

# Which first-party packages each part may import (prefix match on the absolute module name).
# The engine is pure tensor maths; storage knows the engine's row layout but not the models;
# the service reaches the indexer only through its public API (`from indexer import ...`).
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("indexer.engine", ("indexer.engine", "indexer.config", "indexer.errors")),
    (
        "indexer.curvature",
        ("indexer.curvature", "indexer.engine", "indexer.config", "indexer.errors"),
    ),
    (
        "indexer.storage",
        (
            "indexer.storage",
            "indexer.curvature",
            "indexer.engine",
            "indexer.data",
            "indexer.config",
            "indexer.errors",
        ),
    ),
    (
        "indexer.models",
        ("indexer.models", "indexer.engine", "indexer.data", "indexer.config", "indexer.errors"),
    ),
    ("indexer", ("indexer",)),
    ("service", ("service", "indexer!")),  # "!": the package root only
    ("lorif_demo", ("lorif_demo", "indexer")),
    ("lorif_cli", ("lorif_cli", "indexer", "service", "lorif_demo")),
]
FIRST_PARTY = (*PACKAGES, "benchmarks", "tests")


def tool(name: str) -> str:
    path = Path(sys.executable).parent / name
    if not path.exists():
        found = shutil.which(name)
        if found is None:
            pytest.fail(f"{name} is not installed (the dev extra installs it)")
        return found
    return str(path)


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_ruff_lint_and_format_are_clean():
    lint = run(tool("ruff"), "check", ".")
    assert lint.returncode == 0, lint.stdout[-4000:]
    fmt = run(tool("ruff"), "format", "--check", ".")
    assert fmt.returncode == 0, fmt.stdout[-4000:]


def test_mypy_is_clean():
    res = run(tool("mypy"))  # files and strictness: [tool.mypy] in pyproject.toml
    assert res.returncode == 0, res.stdout[-4000:]


def modules(*roots: str) -> Iterator[tuple[str, Path]]:
    for root in roots:
        for path in sorted((ROOT / root).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            yield ".".join(parts), path


def imports(name: str, path: Path) -> Iterator[tuple[str, int]]:
    """(absolute module imported, line) for every first-party import of a module; a
    ``from X import a`` yields ``X`` and ``X.a`` (a may be a submodule)."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = from_base(name, path, node)
            targets = [base] + [f"{base}.{a.name}" for a in node.names if node.module is None]
        else:
            continue
        for target in targets:
            if target.split(".")[0] in FIRST_PARTY:
                yield target, node.lineno


def allowed(target: str, rules: tuple[str, ...]) -> bool:
    for rule in rules:
        if rule.endswith("!"):
            if target == rule[:-1]:
                return True
        elif target == rule or target.startswith(rule + "."):
            return True
    return False


def layering_violations(roots: tuple[str, ...] = PACKAGES) -> list[str]:
    found = []
    for name, path in modules(*roots):
        rules = next(r for prefix, r in LAYERS if name == prefix or name.startswith(prefix + "."))
        for target, line in imports(name, path):
            if not allowed(target, rules):
                found.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    return found


def test_import_layering():
    assert layering_violations() == []


def test_layering_check_catches_a_violation(tmp_path, monkeypatch):
    """The rule above can fail: a storage module importing the models is reported."""
    fake = tmp_path / "indexer" / "storage"
    fake.mkdir(parents=True)
    (fake / "bad.py").write_text("from ..models.loading import load_causal_lm\n")
    (tmp_path / "service").mkdir()
    (tmp_path / "service" / "bad.py").write_text("from indexer.storage.reader import Index\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert layering_violations(("indexer", "service")) == [
        "indexer/storage/bad.py:1 imports indexer.models.loading",
        "service/bad.py:1 imports indexer.storage.reader",
    ]


def cycle_violations(roots: tuple[str, ...] = PACKAGES) -> list[str]:
    """Circles of run-time imports (function-level ones too, ``if TYPE_CHECKING:`` ones not)."""
    return import_cycles(list(modules(*roots)))


def test_no_import_cycles():
    assert cycle_violations() == []


def test_cycle_check_catches_a_circle(tmp_path, monkeypatch):
    """A lazy import closes a circle; a TYPE_CHECKING-only import, or a name imported from a
    package root whose ``__init__`` imports nothing at run time, does not."""
    files = {
        "indexer/__init__.py": "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from .a import A\n",
        "indexer/a.py": "from . import c\nfrom .b import helper\n",
        "indexer/b.py": "from indexer import Index\n\ndef helper():\n    from indexer import a\n",
        "indexer/c.py": "import typing\nif typing.TYPE_CHECKING:\n    from indexer.a import A\n",
        "service/x.py": "import service.y\n",
        "service/y.py": "from service.z import handler\n",
        "service/z.py": "from . import x\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert cycle_violations(("indexer", "service")) == [
        "indexer.a -> indexer.b -> indexer.a",
        "service.x -> service.y -> service.z -> service.x",
    ]


def private_import_violations(roots: tuple[str, ...] = PACKAGES) -> list[str]:
    """``from X import _name`` of another first-party module's private name."""
    return private_imports(list(modules(*roots)), ROOT, FIRST_PARTY)


def test_no_cross_module_private_imports():
    assert private_import_violations() == []


def test_private_import_check_catches_a_violation(tmp_path, monkeypatch):
    """Private names taken from another module are reported, at any depth; dunders, the
    standard library's and a module's own names are not."""
    (tmp_path / "indexer").mkdir()
    (tmp_path / "indexer" / "a.py").write_text(
        "from os import _exit\nfrom indexer import __version__\n"
        "from .b import _helper, public\n\ndef f():\n    from indexer.a import _own\n"
    )
    (tmp_path / "service").mkdir()
    (tmp_path / "service" / "s.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
        "    from indexer.b import __hidden as h\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert private_import_violations(("indexer", "service")) == [
        "indexer/a.py:3 imports _helper from indexer.b",
        "service/s.py:3 imports __hidden from indexer.b",
    ]


def oversized(roots: tuple[str, ...]) -> list[str]:
    found = []
    for _, path in modules(*roots):
        source = path.read_text()
        if source.count("\n") > MAX_MODULE_LINES:
            found.append(f"{path.relative_to(ROOT)}: {source.count(chr(10))} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    found.append(
                        f"{path.relative_to(ROOT)}:{node.lineno} {node.name}(): {length} lines"
                    )
    return found


def test_modules_and_functions_stay_small():
    assert oversized((*PACKAGES, "tests", "scripts")) == []
