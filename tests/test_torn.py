"""Torn reads: files of two saves are never taken for one adapter. Every save writes one id into
the config and into each weights file's metadata; a scan that finds two ids reports `torn_save`,
loading scans again a bounded number of times before it refuses, and a file that changed between
the scan and the read is refused (TornReadError) before the model is touched."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

import adapterscan

pytestmark = pytest.mark.mlx


def _two_saves(tmp_path: Path) -> tuple[Any, Path, Path]:
    import mlx.core as mx
    from mlx.utils import tree_map

    from adapterscan.mlx import save_adapters
    from producers import LLAMA, attach_lora, build_model

    model = build_model(LLAMA)
    attach_lora(model, num_layers=2)
    save_adapters(model, tmp_path / "v1")
    model.update(tree_map(lambda p: p + 1, model.trainable_parameters()))
    mx.eval(model.parameters())
    save_adapters(model, tmp_path / "v2")
    return model, tmp_path / "v1", tmp_path / "v2"


def test_a_config_of_one_save_and_weights_of_another_are_torn(tmp_path: Path) -> None:
    from adapterscan.mlx import load_adapters
    from producers import LLAMA, build_model

    _, v1, v2 = _two_saves(tmp_path)
    torn = tmp_path / "torn"
    shutil.copytree(v2, torn)
    shutil.copy(v1 / "adapter_config.json", torn / "adapter_config.json")
    s = adapterscan.scan(torn)
    assert [p.code for p in s.errors] == ["torn_save"]
    for strict in (True, False):  # never loaded, strict or not
        with pytest.raises(adapterscan.TornReadError, match="still torn after 5 scans"):
            load_adapters(build_model(LLAMA), torn, strict=strict)
    assert adapterscan.scan(v1).ok
    assert adapterscan.scan(v2).ok


def test_a_file_replaced_after_the_scan_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlx.utils import tree_flatten

    from adapterscan.mlx import _load, load_adapters
    from producers import LLAMA, build_model

    _, v1, v2 = _two_saves(tmp_path)
    target = tmp_path / "a"
    shutil.copytree(v1, target)
    real_scan = _load.scan

    def scan_then_replace(path: Any) -> Any:
        s = real_scan(path)
        shutil.copy(v2 / "adapters.safetensors", target / "adapters.safetensors")
        shutil.copy(v2 / "adapter_config.json", target / "adapter_config.json")
        return s

    monkeypatch.setattr(_load, "scan", scan_then_replace)
    model = build_model(LLAMA)
    before = dict(tree_flatten(model.parameters()))
    with pytest.raises(adapterscan.TornReadError, match="changed between the scan and the read"):
        load_adapters(model, target)
    after = dict(tree_flatten(model.parameters()))
    assert all(after[k] is before[k] for k in before)
