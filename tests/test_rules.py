"""The rules the core owns and hands to Python (one home each): natural order, range text,
packed widths, the PEFT prefix, each module's factors and the per-module scale and dropout."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

import adapterscan
from adapterscan import _core
from adapterscan._scan import natural_sorted
from producers import save_numpy

FIXTURES = Path(__file__).parent / "fixtures" / "peft"


def test_natural_order_settles_leading_zeros() -> None:
    paths = ["layers.10.q", "layers.1.q", "embed", "layers.01.q", "layers.2.q", "layers.1.k"]
    ordered = [paths[i] for i in _core.natural_order(paths)]
    # Numbers by value; `01` and `1` are kept apart (`01` first), names after numbers.
    assert ordered == [
        "embed",
        "layers.01.q",
        "layers.1.k",
        "layers.1.q",
        "layers.2.q",
        "layers.10.q",
    ]
    assert natural_sorted(reversed(paths), key=str) == ordered


def test_scan_modules_and_python_sorting_share_the_order(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    layers = ["10", "1", "01", "2"]
    tensors = {}
    for layer in layers:
        tensors[f"model.layers.{layer}.q.lora_a"] = rng.standard_normal((8, 2)).astype(np.float32)
        tensors[f"model.layers.{layer}.q.lora_b"] = rng.standard_normal((2, 8)).astype(np.float32)
    save_numpy(tmp_path / "adapters.safetensors", tensors)
    s = adapterscan.scan(tmp_path, read_config=False)
    paths = [f"model.layers.{layer}.q" for layer in layers]
    assert list(s.modules) == natural_sorted(paths, key=str)
    assert list(s.modules)[:2] == ["model.layers.01.q", "model.layers.1.q"]


def test_ranges_and_packed_widths() -> None:
    assert _core.compress_ranges([8, 5, 0, 1, 2, 2, 7]) == "0-2, 5, 7-8"
    assert _core.compress_ranges([]) == ""
    # MLX packs 32 / bits values into each uint32 word.
    assert _core.unpacked_width(8, 4) == 64
    assert _core.unpacked_width(24, 3) == 256
    assert _core.unpacked_width(8, 0) is None
    assert _core.PEFT_PREFIX == "base_model.model."
    # transformers 5 calls Mixtral's `block_sparse_moe` `mlp`; mlx-lm keeps the old name.
    assert _core.hf_moe_block("model.layers.0.block_sparse_moe") == "model.layers.0.mlp"
    assert _core.mlx_moe_blocks("model.layers.0.mlp") == [
        "model.layers.0.mlp",
        "model.layers.0.block_sparse_moe",
    ]


def test_factors_name_leaf_and_index_of_each_saved_tensor(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    tensors = {
        "base_model.model.model.layers.0.mlp.experts.1.up_proj.lora_A.weight": rng.standard_normal(
            (2, 8)
        ),
        "base_model.model.model.layers.0.mlp.experts.1.up_proj.lora_B.weight": rng.standard_normal(
            (4, 2)
        ),
        "base_model.model.model.layers.0.mlp.experts.0.up_proj.lora_A.weight": rng.standard_normal(
            (2, 8)
        ),
        "base_model.model.model.layers.0.mlp.experts.0.up_proj.lora_B.weight": rng.standard_normal(
            (4, 2)
        ),
        "language_model.qkv.lora_a.0": rng.standard_normal((8, 2)),
        "language_model.qkv.lora_b.0": rng.standard_normal((2, 4)),
        "language_model.qkv.lora_a.1": rng.standard_normal((8, 2)),
        "language_model.qkv.lora_b.1": rng.standard_normal((2, 4)),
    }
    save_numpy(
        tmp_path / "a" / "adapter_model.safetensors",
        {k: v for k, v in tensors.items() if k.startswith("base")},
    )
    save_numpy(
        tmp_path / "b" / "adapters.safetensors",
        {k: v for k, v in tensors.items() if not k.startswith("base")},
    )
    peft = adapterscan.scan(tmp_path / "a", read_config=False)
    (m,) = peft.modules.values()
    assert m.factors == [
        (f"base_model.model.model.layers.0.mlp.experts.{e}.up_proj.lora_{x}.weight", x.lower(), e)
        for e in (0, 1)
        for x in ("A", "B")
    ]
    fused = adapterscan.scan(tmp_path / "b", read_config=False)
    (m,) = fused.modules.values()
    assert m.layout == "mlx_fused"
    assert m.factors == [
        (f"language_model.qkv.lora_{x}.{i}", x, i) for i in (0, 1) for x in ("a", "b")
    ]


def _peft_scaling(cfg: dict[str, object], path: str, r: int) -> float:
    """Peft's documented scaling: lora_alpha (or the first alpha_pattern key matching the end of
    the path) over r, or over sqrt(r) with use_rslora."""
    alpha = float(cfg["lora_alpha"])  # type: ignore[arg-type]
    for key, value in dict(cfg.get("alpha_pattern") or {}).items():  # type: ignore[call-overload]
        if path == key or path.endswith("." + key):
            alpha = float(value)
            break
    return alpha / (math.sqrt(r) if cfg.get("use_rslora") else r)


@pytest.mark.parametrize("fixture", ["llama-rslora-patterns", "llama-all-linear", "llama-dora"])
def test_module_settings_of_peft_configs(tmp_path: Path, fixture: str) -> None:
    shutil.copytree(FIXTURES / fixture, tmp_path / fixture)
    s = adapterscan.scan(tmp_path / fixture)
    cfg = json.loads((tmp_path / fixture / "adapter_config.json").read_text())
    assert set(s.module_settings) == set(s.modules)
    for path, (scale, dropout) in s.module_settings.items():
        rank = s.modules[path].rank
        assert rank is not None
        assert scale == pytest.approx(_peft_scaling(cfg, path, rank)), path
        assert dropout == cfg["lora_dropout"]


def test_module_settings_of_mlx_configs(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    tensors = {}
    for p in ("a", "b", "c"):
        tensors[f"model.layers.0.{p}.lora_a"] = rng.standard_normal((8, 2)).astype(np.float32)
        tensors[f"model.layers.0.{p}.lora_b"] = rng.standard_normal((2, 8)).astype(np.float32)
    save_numpy(tmp_path / "adapters.safetensors", tensors)
    cfg = {
        "fine_tune_type": "lora",
        "num_layers": 1,
        "lora_parameters": {"rank": 2, "scale": 20.0, "dropout": 0.05},
        "unsloth_mlx_lora_module_scales": {"model.layers.0.b": 3.0, "model.layers.0.a": 4.0},
        "adapterscan": {"modules": {"model.layers.0.a": {"scale": [1.0, 2.0], "dropout": 0.5}}},
    }
    (tmp_path / "adapter_config.json").write_text(json.dumps(cfg))
    settings = adapterscan.scan(tmp_path).module_settings
    assert settings["model.layers.0.a"] == ([1.0, 2.0], 0.5)
    assert settings["model.layers.0.b"] == (3.0, 0.05)
    assert settings["model.layers.0.c"] == (20.0, 0.05)
    cfg["adapterscan"] = {"modules": {"model.layers.0.a": {"dropout": "high"}}}
    (tmp_path / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(
        adapterscan.ConfigError, match=r"adapterscan\.modules\.model\.layers\.0\.a\.dropout"
    ):
        adapterscan.scan(tmp_path).module_settings  # noqa: B018


@pytest.mark.mlx
def test_a_peft_adapter_without_a_config_has_peft_defaults(tmp_path: Path) -> None:
    """peft's own defaults (lora_alpha 8, no dropout) when the config is missing: the scale is
    8 / r, and conversion and loading use it instead of failing."""
    from adapterscan.mlx import convert_to_mlx

    folder = tmp_path / "a"
    shutil.copytree(FIXTURES / "llama-all-linear", folder)
    (folder / "adapter_config.json").unlink()
    s = adapterscan.scan(folder)
    assert "config_missing" in {p.code for p in s.problems}
    for path, (scale, dropout) in s.module_settings.items():
        rank = s.modules[path].rank
        assert rank is not None
        assert (scale, dropout) == (pytest.approx(8.0 / rank), 0.0)
    out = convert_to_mlx(folder, tmp_path / "mlx")
    assert out.ok
