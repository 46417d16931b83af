"""The README documents exactly what the core defines: every problem code (with its severities and
meaning) and every on-disk layout, and nothing else."""

from __future__ import annotations

import re
from pathlib import Path

from adapterscan import _core

README = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")


def _section(title: str) -> str:
    start = README.index(title)
    end = README.index("\n## ", start)
    return README[start:end]


def test_readme_code_table_is_the_core_table() -> None:
    rows = re.findall(
        r"^\| `([a-z_0-9]+)` \| ([a-z /]+) \| (.+) \|$", _section("### Problem codes"), re.M
    )
    assert rows == _core.problem_codes()
    assert len(rows) == len({name for name, _, _ in rows}) > 40


def test_every_layout_is_documented_and_no_other() -> None:
    start = README.index("`Module.layout` names the orientation on disk")
    paragraph = README[start : README.index("\n\n", start)]
    documented = re.findall(r"`((?:mlx|peft)_[a-z_]+)`", paragraph)
    assert documented == _core.layouts()


def _literal(name: str) -> list[str]:
    stub = (Path(_core.__file__).parent / "_core.pyi").read_text(encoding="utf-8")
    body = stub[stub.index(f"{name}: TypeAlias = Literal[") :]
    body = body[: body.index("]")]
    return re.findall(r'"([a-z_0-9]+)"', body)


def test_the_stub_types_codes_and_layouts_as_the_core_names_them() -> None:
    assert _literal("_Code") == [name for name, _, _ in _core.problem_codes()]
    assert _literal("_Layout") == _core.layouts()
