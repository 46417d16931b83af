"""adapterscan.mlx's modules import one way only: each uses only modules of the package before it."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parent.parent / "python" / "adapterscan" / "mlx"
# The order the package's docstring gives; _spec needs neither _live nor _save.
ORDER = ["_live", "_skeleton", "_save", "_spec", "_peft", "_load", "_convert"]


def _siblings(path: Path) -> set[str]:
    """The modules of the package that ``path`` imports (``from ._x import ...``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module is not None:
                found.add(node.module.split(".")[0])
            else:
                found |= {alias.name for alias in node.names}
    return found


def test_every_module_is_in_the_order() -> None:
    assert sorted(p.stem for p in PACKAGE.glob("_*.py") if p.stem != "__init__") == sorted(ORDER)


def test_modules_import_only_earlier_ones() -> None:
    for i, name in enumerate(ORDER):
        later = _siblings(PACKAGE / f"{name}.py") - set(ORDER[:i])
        assert not later, f"{name} imports {sorted(later)}, which come after it"


def test_each_module_says_what_lives_there_and_what_it_may_use() -> None:
    for name in ORDER:
        doc = ast.get_docstring(ast.parse((PACKAGE / f"{name}.py").read_text(encoding="utf-8")))
        assert doc, name
        assert "May use:" in doc, name


def test_every_module_of_the_package_says_what_it_may_use() -> None:
    root = PACKAGE.parent
    silent = [
        str(p.relative_to(root))
        for p in sorted(root.rglob("*.py"))
        if "May use:" not in (ast.get_docstring(ast.parse(p.read_text(encoding="utf-8"))) or "")
    ]
    assert not silent, f"no docstring with `May use:`: {silent}"
