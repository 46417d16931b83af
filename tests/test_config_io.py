"""The shared config writer and `most_common` (what every adapter_config.json writer uses)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adapterscan._config_io import config_text, config_writer, most_common


def test_most_common_counts() -> None:
    assert most_common([4, 8, 8, 4, 8]) == 8
    assert most_common([0.5]) == 0.5
    assert most_common([None, 4, None]) is None  # a module whose rank is unknown


def test_most_common_tie_goes_to_the_first_seen() -> None:
    assert most_common([8, 4, 4, 8]) == 8
    assert most_common([4, 8, 8, 4]) == 4
    assert most_common([2.0, 1.0, 3.0]) == 2.0
    assert most_common([[1.0, 2.0], 0.5, 0.5, [1.0, 2.0]]) == [1.0, 2.0]


def test_most_common_lists_are_one_value() -> None:
    """Per-layer scale lists are unhashable; equal lists count as one value, element by element."""
    per_layer = [[1.0, 2.0], [1.0, 2.0], 2.0, [2.0, 1.0], 2.0, [1.0, 2.0]]
    assert most_common(per_layer) == [1.0, 2.0]
    assert most_common([1.0, [1.0], [1.0]]) == [1.0]  # a list of one is not its element
    assert most_common([[[1, 2], [3]], [[1, 2], [3]], [1, 2, 3]]) == [[1, 2], [3]]


def test_most_common_counts_by_equality_and_returns_the_first_occurrence() -> None:
    # 2 and 2.0 are one value (as the callers' `!=` sees them); the first one seen is returned.
    value = most_common([1.0, 2.0, 2])
    assert value == 2.0
    assert isinstance(value, float)
    first = [0.25, 0.5]
    assert most_common([first, [0.25, 0.5]]) is first


def test_most_common_of_nothing_raises() -> None:
    with pytest.raises(IndexError):
        most_common([])


CFG = {"b": 1, "a": {"keys": ["model.layers.0.ä", "x"]}, "scale": 2.0, "m": "Qwen/模型"}


def test_config_text_is_indented_json_with_a_newline() -> None:
    text = config_text(CFG, ensure_ascii=False)
    assert text == json.dumps(CFG, indent=2, ensure_ascii=False) + "\n"
    assert text.startswith('{\n  "b": 1,\n  "a": {\n    "keys": [\n')
    assert "ä" in text
    assert "模型" in text


def test_ensure_ascii_differs_only_for_non_ascii_text() -> None:
    escaped = config_text(CFG, ensure_ascii=True)
    assert escaped == json.dumps(CFG, indent=2) + "\n"
    assert "\\u00e4" in escaped
    assert "\\u6a21\\u578b" in escaped
    assert json.loads(escaped) == json.loads(config_text(CFG, ensure_ascii=False))
    plain = {"r": 8, "target_modules": ["model.layers.0.self_attn.q_proj"], "alpha": 16.0}
    assert config_text(plain, ensure_ascii=True) == config_text(plain, ensure_ascii=False)


@pytest.mark.parametrize("ensure_ascii", [False, True])
def test_config_writer_writes_the_text_as_utf8(tmp_path: Path, ensure_ascii: bool) -> None:
    path = tmp_path / "adapter_config.json"
    config_writer(CFG, ensure_ascii=ensure_ascii)(path)
    assert path.read_bytes() == config_text(CFG, ensure_ascii=ensure_ascii).encode("utf-8")


def test_config_writer_serialises_before_anything_is_written(tmp_path: Path) -> None:
    """A value JSON cannot hold fails when the writer is made, before any staging or swap."""
    import adapterscan

    with pytest.raises(adapterscan.SaveError, match="not JSON serializable"):
        config_writer({"path": tmp_path}, ensure_ascii=False)
    assert not (tmp_path / "adapter_config.json").exists()
