"""The code's map stays true: package lists name their modules, docstrings stay short.

Each package's ``__init__`` docstring lists its modules under "Modules:" (one
``name: what it holds`` line each, a subpackage or Lua folder as ``name/`` or
``name``); every module docstring states purpose and invariants in a few lines,
with history and figures in docs/; no module points at issues or outside the repo.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ["cards", "worker", "producers", "stripe_emulator", "harness"]
MAX_DOCSTRING_LINES = 15
#: "issue 5", "../shared/…": the reader of a module has neither.
POINTERS = re.compile(r"\bissues? #?\d+\b|\.\./shared", re.IGNORECASE)


def packages() -> list[Path]:
    return sorted(init.parent for top in PACKAGES for init in (ROOT / top).rglob("__init__.py"))


def modules() -> list[Path]:
    return sorted(path for top in PACKAGES for path in (ROOT / top).rglob("*.py"))


def docstring(path: Path) -> str:
    return ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""


def listed(package: Path) -> set[str]:
    text = docstring(package / "__init__.py")
    assert "Modules:" in text, f"{package.relative_to(ROOT)}/__init__.py has no Modules: list"
    block = text.split("Modules:", 1)[1]
    names = {
        match.group(1).rstrip("/")
        for match in re.finditer(r"^\s{2,}([A-Za-z_][\w]*/?):", block, re.MULTILINE)
    }
    return names - {"__main__"}


def present(package: Path) -> set[str]:
    names = {path.stem for path in package.glob("*.py") if path.name != "__init__.py"}
    names |= {path.name for path in package.iterdir() if (path / "__init__.py").exists()}
    names |= {path.name for path in package.iterdir() if path.is_dir() and any(path.glob("*.lua"))}
    names.discard("__main__")
    return names


@pytest.mark.parametrize("package", packages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_each_package_lists_exactly_its_modules(package: Path) -> None:
    assert listed(package) == present(package)


@pytest.mark.parametrize("module", modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_module_docstrings_are_short_and_point_inside_the_repo(module: Path) -> None:
    text = docstring(module)
    summary = text.split("Modules:", 1)[0].strip() if module.name == "__init__.py" else text
    assert len(summary.splitlines()) <= MAX_DOCSTRING_LINES, "move the details to docs/"
    assert not POINTERS.search(module.read_text(encoding="utf-8"))


#: Who may import whom: producers and the worker meet only in cards/.
FORBIDDEN_IMPORTS = {
    "cards": ("worker", "producers"),
    "worker": ("producers",),
    "producers": ("worker",),
}


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("top", sorted(FORBIDDEN_IMPORTS))
def test_layers_import_only_downwards(top: str) -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported(path) & set(FORBIDDEN_IMPORTS[top]))
        for path in (ROOT / top).rglob("*.py")
    }
    assert {path: found for path, found in offenders.items() if found} == {}
