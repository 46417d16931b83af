"""Scanning adapters written by mlx-lm's own classes and save path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import adapterscan
from producers import (
    LLAMA,
    MIXTRAL,
    QWEN3_MOE,
    attach_lora,
    build_model,
    expected_modules,
    save_like_trainer,
)

pytestmark = pytest.mark.mlx


def table(scan: adapterscan.Scan) -> dict[str, dict[str, Any]]:
    return {
        path: {
            "kind": m.kind,
            "variant": m.variant,
            "rank": m.rank,
            "in_dims": m.in_dims,
            "out_dims": m.out_dims,
            "num_experts": m.num_experts,
        }
        for path, m in scan.modules.items()
    }


def produce(
    tmp_path: Path,
    config: dict[str, Any],
    *,
    num_layers: int,
    fine_tune_type: str = "lora",
    **lora: Any,
) -> tuple[Any, Path]:
    model = build_model(config)
    params = attach_lora(model, num_layers=num_layers, dora=fine_tune_type == "dora", **lora)
    folder = save_like_trainer(
        model,
        tmp_path / "adapter",
        fine_tune_type=fine_tune_type,
        num_layers=num_layers,
        lora_parameters=params,
    )
    return model, folder


def test_dense_llama_last_layers(tmp_path: Path) -> None:
    model, folder = produce(tmp_path, LLAMA, num_layers=2, rank=8, scale=10.0, dropout=0.1)
    s = adapterscan.scan(folder)
    expected = expected_modules(model)
    assert table(s) == expected
    assert len(expected) == 14  # 7 linear layers x the last 2 blocks
    assert {m.layout for m in s.modules.values()} == {"mlx_linear"}
    assert s.format == "mlx"
    assert s.fine_tune_type == "lora"
    assert s.tensor_count == 28
    assert s.config is not None
    assert s.config["lora_parameters"]["scale"] == 10.0
    assert [p.code for p in s.problems] == ["config_keys_missing"]
    assert s.ok
    q = s.modules["model.layers.3.self_attn.q_proj"]
    assert q.keys == [
        "model.layers.3.self_attn.q_proj.lora_a",
        "model.layers.3.self_attn.q_proj.lora_b",
    ]
    assert q.dtype == "F32"


@pytest.mark.parametrize("config", [QWEN3_MOE, MIXTRAL], ids=["qwen3_moe", "mixtral"])
def test_moe_switch_lora(tmp_path: Path, config: dict[str, Any]) -> None:
    model, folder = produce(tmp_path, config, num_layers=2, rank=4)
    s = adapterscan.scan(folder)
    expected = expected_modules(model)
    assert table(s) == expected
    switch = {p: m for p, m in s.modules.items() if m.kind == "switch"}
    assert len(switch) == 6  # gate/up/down x 2 layers
    assert all(m.num_experts == 4 and m.layout == "mlx_switch" for m in switch.values())
    assert s.ok


def test_dora_with_embedding_and_full_paths(tmp_path: Path) -> None:
    keys = ["self_attn.q_proj", "self_attn.v_proj", "model.embed_tokens", "lm_head"]
    model, folder = produce(
        tmp_path, LLAMA, num_layers=4, fine_tune_type="dora", rank=4, scale=2.0, keys=keys
    )
    s = adapterscan.scan(folder)
    expected = expected_modules(model)
    assert table(s) == expected
    emb = s.modules["model.embed_tokens"]
    assert (emb.kind, emb.variant, emb.in_dims, emb.out_dims) == ("embedding", "dora", 128, 64)
    head = s.modules["lm_head"]
    assert (head.kind, head.variant, head.in_dims, head.out_dims) == ("linear", "dora", 64, 128)
    assert s.fine_tune_type == "dora"
    assert s.problems == []


def test_lora_embedding_is_recognised(tmp_path: Path) -> None:
    model, folder = produce(
        tmp_path, LLAMA, num_layers=1, rank=4, keys=["model.embed_tokens", "self_attn.q_proj"]
    )
    s = adapterscan.scan(folder)
    assert table(s) == expected_modules(model)
    assert s.modules["model.embed_tokens"].kind == "embedding"
    assert s.problems == []


def test_quantized_base_gives_true_dims(tmp_path: Path) -> None:
    import mlx.nn as nn

    model = build_model(LLAMA)
    nn.quantize(model, group_size=32, bits=4)
    params = attach_lora(model, num_layers=2, rank=8)
    folder = save_like_trainer(
        model, tmp_path / "q", fine_tune_type="lora", num_layers=2, lora_parameters=params
    )
    s = adapterscan.scan(folder)
    assert table(s) == expected_modules(model)
    # QLoRA factors stay float32 and hold no quantization tensors.
    assert {m.dtype for m in s.modules.values()} == {"F32"}
    assert s.non_adapter_tensors == []


def test_bf16_adapter_and_mixed_dtypes(tmp_path: Path) -> None:
    import mlx.core as mx
    from mlx.utils import tree_flatten

    model = build_model(LLAMA)
    attach_lora(model, num_layers=1, rank=4)
    weights = dict(tree_flatten(model.trainable_parameters()))
    first = next(iter(weights))
    weights = {k: (v.astype(mx.bfloat16) if k != first else v) for k, v in weights.items()}
    mx.save_safetensors(str(tmp_path / "adapters.safetensors"), weights)
    s = adapterscan.scan(tmp_path)
    codes = {p.code for p in s.problems}
    assert "mixed_dtypes" in codes
    assert "config_missing" in codes
    assert any(m.dtype == "mixed" for m in s.modules.values())
    assert any(m.dtype == "BF16" for m in s.modules.values())


def test_legacy_two_d_switch_layout(tmp_path: Path) -> None:
    """mlx-lm < 0.28.3 stored switch ``lora_a`` as (E*r, in); it must be recognised as such."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    model = build_model(QWEN3_MOE)
    attach_lora(model, num_layers=1, rank=4, keys=["mlp.switch_mlp.up_proj"])
    weights = dict(tree_flatten(model.trainable_parameters()))
    legacy = {}
    for k, v in weights.items():
        if k.endswith("lora_a") and v.ndim == 3:
            e, r, i = v.shape
            v = v.reshape(e * r, i)
        legacy[k] = v
    mx.save_safetensors(str(tmp_path / "adapters.safetensors"), legacy)
    s = adapterscan.scan(tmp_path, read_config=False)
    (m,) = s.modules.values()
    assert (m.kind, m.layout, m.rank, m.num_experts, m.in_dims, m.out_dims) == (
        "switch",
        "mlx_switch_legacy",
        4,
        4,
        64,
        32,
    )
    assert [p.code for p in s.problems] == ["legacy_switch_layout"]


def test_stock_mlx_lm_loads_what_scan_calls_clean(tmp_path: Path) -> None:
    from mlx_lm.tuner.utils import load_adapters

    _, folder = produce(tmp_path, LLAMA, num_layers=2, rank=4, keys=["self_attn.q_proj"])
    s = adapterscan.scan(folder)
    assert s.problems == []
    load_adapters(build_model(LLAMA), str(folder))


def test_transposed_factors_are_named_as_flipped(tmp_path: Path) -> None:
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.tuner.utils import load_adapters

    model, folder = produce(tmp_path, LLAMA, num_layers=1, rank=4, keys=["self_attn.q_proj"])
    weights = dict(tree_flatten(model.trainable_parameters()))
    flipped = {k: v.T for k, v in weights.items()}
    mx.save_safetensors(str(folder / "adapters.safetensors"), flipped)
    s = adapterscan.scan(folder)
    assert [p.code for p in s.problems] == ["orientation_flipped"]
    assert s.problems[0].path == "model.layers.3.self_attn.q_proj"
    # The reference loader refuses it too, but only after loading the tensors.
    with pytest.raises(ValueError, match="shape"):
        load_adapters(build_model(LLAMA), str(folder))


def test_json_contract(tmp_path: Path) -> None:
    _, folder = produce(tmp_path, QWEN3_MOE, num_layers=1, rank=4)
    s = adapterscan.scan(folder)
    d = s.to_dict()
    assert list(d) == [
        "path",
        "format",
        "fine_tune_type",
        "tensor_count",
        "total_bytes",
        "files",
        "config",
        "modules",
        "problems",
    ]
    assert list(d["files"][0]) == ["path", "header_bytes", "tensor_count"]
    assert list(d["modules"][0]) == [
        "path",
        "kind",
        "variant",
        "rank",
        "in_dims",
        "out_dims",
        "num_experts",
        "dtype",
        "keys",
    ]
    assert list(d["problems"][0]) == ["code", "severity", "path", "message"]
    assert d["config"] == json.loads((folder / "adapter_config.json").read_text())
    assert d["total_bytes"] == s.total_bytes
    assert d["tensor_count"] == sum(len(m["keys"]) for m in d["modules"])
    size = (folder / "adapters.safetensors").stat().st_size
    assert d["total_bytes"] == size - 8 - d["files"][0]["header_bytes"]


def test_fused_model_in_the_adapter_folder_is_set_aside(tmp_path: Path) -> None:
    """mlx-lm-lora fuses by default and writes the fused model (mlx-lm's save_model: weights,
    index, config.json) into the adapter folder: the adapter is still what is read and loaded."""
    import mlx.core as mx
    from mlx_lm.utils import save_config, save_model

    from adapterscan.mlx import load_adapters

    model, folder = produce(tmp_path, LLAMA, num_layers=2)
    fused = build_model(LLAMA)
    save_model(folder, fused)
    save_config(dict(LLAMA), folder / "config.json")
    assert (folder / "model.safetensors.index.json").exists()
    s = adapterscan.scan(folder)
    assert table(s) == expected_modules(model)
    assert [p.code for p in s.problems if p.code == "model_in_adapter_folder"] == [
        "model_in_adapter_folder"
    ]
    assert not s.errors, s.errors
    fresh = build_model(LLAMA)
    load_adapters(fresh, folder)
    tokens = mx.array([[1, 2, 3, 4]])
    model.eval()
    assert mx.allclose(fresh(tokens), model(tokens), atol=1e-5).item()
