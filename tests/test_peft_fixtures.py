"""Adapters saved by real peft (tests/fixtures/peft, made by make_fixtures.py) in MLX.

Each case loads the transformers base with mlx-lm's own loader and the peft adapter with
adapterscan, and compares the logits with the ones peft computed (max abs difference <= 1e-4).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import adapterscan

FIXTURES = Path(__file__).parent / "fixtures" / "peft"
BASE = FIXTURES / "llama-base"
TOKENS = [[1, 5, 9, 33, 2, 77, 100, 3]]
CASES = [
    "llama-all-linear",
    "llama-rslora-patterns",
    "llama-embedding-q",
    "llama-dora",
    "qwen3-moe-per-expert",
    "qwen3-moe-fused",
]


def base_of(case: str) -> Path:
    return FIXTURES / ("qwen3-moe-base" if case.startswith("qwen3-moe") else "llama-base")


@pytest.mark.parametrize("case", CASES)
def test_scan_and_check_without_mlx(case: str) -> None:
    s = adapterscan.scan(FIXTURES / case)
    assert s.format == "peft"
    assert s.config_schema == "peft"
    report = adapterscan.check(FIXTURES / case, base_of(case))
    assert report.ok, report.to_dict()


def test_rank_pattern_is_read_per_module() -> None:
    s = adapterscan.scan(FIXTURES / "llama-rslora-patterns")
    ranks = {p: m.rank for p, m in s.modules.items()}
    assert ranks["model.layers.0.self_attn.q_proj"] == 4
    assert ranks["model.layers.1.mlp.down_proj"] == 2
    assert ranks["model.layers.0.mlp.down_proj"] == 8
    assert ranks["model.layers.0.self_attn.v_proj"] == 8


@pytest.mark.mlx
@pytest.mark.parametrize("case", CASES)
def test_peft_logits_are_reproduced(case: str) -> None:
    import mlx.core as mx
    from mlx_lm.utils import load_model

    import adapterscan.mlx as am

    model, _ = load_model(base_of(case))
    am.load_adapters(model, FIXTURES / case)
    logits = np.array(model(mx.array(TOKENS)))
    reference = np.load(FIXTURES / case / "logits.npy")
    assert logits.shape == reference.shape
    assert float(np.abs(logits - reference).max()) <= 1e-4


def test_per_expert_keys_group_into_switch_modules() -> None:
    s = adapterscan.scan(FIXTURES / "qwen3-moe-per-expert")
    up = s.modules["model.layers.0.mlp.experts.up_proj"]
    assert (up.kind, up.layout, up.num_experts, up.rank) == ("switch", "peft_per_expert", 4, 4)


FUSED = FIXTURES / "qwen3-moe-fused"


def test_fused_experts_are_named_by_parameter() -> None:
    """peft's nested ParamWrapper factors get the parameter's path, rank and expert count."""
    s = adapterscan.scan(FUSED)
    assert s.ok, [(p.code, p.message) for p in s.problems]
    got = {
        p: (m.kind, m.layout, m.rank, m.num_experts, m.in_dims, m.out_dims)
        for p, m in s.modules.items()
        if ".experts." in p
    }
    # Base: hidden 64, 4 experts, moe_intermediate 32 (gate_up_proj holds 2 x 32 rows).
    assert got == {
        f"model.layers.{i}.mlp.experts.{param}": ("switch", "peft_param_wrapper", 4, 4, *dims)
        for i in (0, 1)
        for param, dims in (("gate_up_proj", (64, 64)), ("down_proj", (32, 64)))
    }
    gate_up = s.modules["model.layers.0.mlp.experts.gate_up_proj"]
    assert gate_up.keys == [
        "base_model.model.model.layers.0.mlp.experts.base_layer.lora_A.weight",
        "base_model.model.model.layers.0.mlp.experts.base_layer.lora_B.weight",
    ]


def _edited_fused(tmp_path: Path, drop: str = "", **config: object) -> Path:
    import json
    import shutil

    from safetensors.numpy import load_file, save_file

    out = tmp_path / "fused"
    shutil.copytree(FUSED, out)
    tensors = load_file(str(FUSED / "adapter_model.safetensors"))
    save_file(
        {k: v for k, v in tensors.items() if not (drop and drop in k)},
        str(out / "adapter_model.safetensors"),
    )
    cfg = json.loads((FUSED / "adapter_config.json").read_text())
    cfg.update(config)
    (out / "adapter_config.json").write_text(json.dumps(cfg))
    return out


def test_fused_experts_are_checked_against_the_base(tmp_path: Path) -> None:
    # Layer 1's down_proj factors are gone: check names exactly what peft would have saved.
    folder = _edited_fused(tmp_path, drop="layers.1.mlp.experts.lora_")
    report = adapterscan.check(folder, base_of("qwen3-moe-fused"))
    assert not report.ok
    assert report.missing == [
        "base_model.model.model.layers.1.mlp.experts.lora_A.weight",
        "base_model.model.model.layers.1.mlp.experts.lora_B.weight",
    ]
    assert report.unexpected == []
    assert report.shape_mismatch == []
    # A config rank of 2 reads the same factors as 8 experts of rank 2: the base has 4.
    report = adapterscan.check(_edited_fused(tmp_path / "r2", r=2), base_of("qwen3-moe-fused"))
    mismatches = {
        (m.key.split("layers.")[1], tuple(m.saved), tuple(m.expected))
        for m in report.shape_mismatch
    }
    assert mismatches >= {
        ("0.mlp.experts.base_layer.lora_A.weight", (16, 64), (8, 64)),
        ("0.mlp.experts.base_layer.lora_B.weight", (64, 16), (64, 8)),
    }


def test_fused_wrappers_the_config_cannot_explain(tmp_path: Path) -> None:
    # Two wrappers saved, one parameter named: the factors cannot be assigned.
    s = adapterscan.scan(_edited_fused(tmp_path, target_parameters=["mlp.experts.down_proj"]))
    assert {p.code for p in s.problems if p.severity == "error"} == {"param_wrapper_unresolved"}
    # No `r`: the expert count cannot be split from the rank; check does not guess.
    folder = _edited_fused(tmp_path / "nor", r=None)
    report = adapterscan.check(folder, base_of("qwen3-moe-fused"))
    assert "not_checked" in {p.code for p in report.problems}
