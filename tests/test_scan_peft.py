"""PEFT-layout adapters written with the ``safetensors`` package, as peft's save_pretrained does."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import adapterscan
from producers import peft_dense, save_numpy

PEFT_CONFIG: dict[str, Any] = {
    "peft_type": "LORA",
    "task_type": "CAUSAL_LM",
    "r": 8,
    "lora_alpha": 16,
    "lora_dropout": 0.0,
    "target_modules": ["q_proj", "v_proj", "embed_tokens"],
    "rank_pattern": {},
    "alpha_pattern": {},
    "use_rslora": False,
    "use_dora": False,
    "bias": "none",
}


def write_config(folder: Path, **changes: Any) -> None:
    (folder / "adapter_config.json").write_text(json.dumps({**PEFT_CONFIG, **changes}))


def llama_peft(rank_q: int = 8) -> dict[str, np.ndarray]:
    t: dict[str, np.ndarray] = {}
    for layer in range(2):
        t |= peft_dense(f"model.layers.{layer}.self_attn.q_proj", rank_q, 64, 64)
        t |= peft_dense(f"model.layers.{layer}.self_attn.v_proj", 8, 64, 32)
    rng = np.random.default_rng(1)
    t["base_model.model.model.embed_tokens.lora_embedding_A"] = rng.standard_normal(
        (8, 128)
    ).astype(np.float32)
    t["base_model.model.model.embed_tokens.lora_embedding_B"] = rng.standard_normal((64, 8)).astype(
        np.float32
    )
    t["base_model.model.model.embed_tokens.base_layer.weight"] = rng.standard_normal(
        (128, 64)
    ).astype(np.float32)
    return t


def test_peft_dense_and_embedding(tmp_path: Path) -> None:
    save_numpy(tmp_path / "adapter_model.safetensors", llama_peft(), metadata={"format": "pt"})
    write_config(tmp_path)
    s = adapterscan.scan(tmp_path)
    assert s.format == "peft"
    assert s.config_schema == "peft"
    assert s.fine_tune_type == "lora"
    q = s.modules["model.layers.0.self_attn.q_proj"]
    assert (q.kind, q.layout, q.rank, q.in_dims, q.out_dims) == ("linear", "peft_linear", 8, 64, 64)
    v = s.modules["model.layers.1.self_attn.v_proj"]
    assert (v.in_dims, v.out_dims) == (64, 32)
    emb = s.modules["model.embed_tokens"]
    assert (emb.kind, emb.layout, emb.rank, emb.in_dims, emb.out_dims) == (
        "embedding",
        "peft_embedding",
        8,
        128,
        64,
    )
    assert [(p.code, p.severity) for p in s.problems] == [("peft_base_layer_saved", "warning")]
    assert s.files[0].metadata == {"format": "pt"}


def test_rank_pattern_first_match(tmp_path: Path) -> None:
    save_numpy(tmp_path / "adapter_model.safetensors", llama_peft(rank_q=4))
    write_config(tmp_path, rank_pattern={"q_proj": 4, "model.layers.1.self_attn.q_proj": 2})
    s = adapterscan.scan(tmp_path)
    assert s.modules["model.layers.1.self_attn.q_proj"].rank == 4
    assert [p.code for p in s.errors] == []
    write_config(tmp_path, rank_pattern={"model.layers.1.self_attn.q_proj": 2, "q_proj": 4})
    s = adapterscan.scan(tmp_path)
    assert [(p.code, p.path) for p in s.errors] == [
        ("config_rank_mismatch", "model.layers.1.self_attn.q_proj")
    ]


def test_targets_and_layers(tmp_path: Path) -> None:
    save_numpy(tmp_path / "adapter_model.safetensors", llama_peft())
    write_config(
        tmp_path, target_modules=["q_proj", "embed_tokens", "o_proj"], layers_to_transform=[1]
    )
    s = adapterscan.scan(tmp_path)
    errors = [(p.code, p.path) for p in s.errors]
    assert ("module_not_targeted", "model.layers.0.self_attn.v_proj") in errors
    assert ("module_outside_layers", "model.layers.0.self_attn.q_proj") in errors
    assert ("module_outside_layers", "model.layers.1.self_attn.q_proj") not in errors
    assert [(p.code, p.path) for p in s.warnings if p.code == "target_unmatched"] == [
        ("target_unmatched", "o_proj")
    ]


def test_dora_magnitude(tmp_path: Path) -> None:
    t = peft_dense("model.layers.0.self_attn.q_proj", 8, 64, 48)
    t["base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector"] = np.ones(
        48, np.float32
    )
    save_numpy(tmp_path / "adapter_model.safetensors", t)
    write_config(tmp_path, use_dora=True, target_modules=["q_proj"])
    s = adapterscan.scan(tmp_path)
    m = s.modules["model.layers.0.self_attn.q_proj"]
    assert (m.variant, m.out_dims) == ("dora", 48)
    assert s.fine_tune_type == "dora"
    assert s.problems == []


def test_per_expert_keys_group_into_switch_modules(tmp_path: Path) -> None:
    t: dict[str, np.ndarray] = {}
    for e in range(8):
        if e == 5:
            continue
        for proj, (i, o) in {"gate_proj": (64, 32), "down_proj": (32, 64)}.items():
            t |= peft_dense(f"model.layers.0.mlp.experts.{e}.{proj}", 4, i, o, np.float16)
    save_numpy(tmp_path / "adapter_model.safetensors", t)
    write_config(tmp_path, r=4, target_modules=["gate_proj", "down_proj"])
    s = adapterscan.scan(tmp_path)
    gate = s.modules["model.layers.0.mlp.experts.gate_proj"]
    assert (
        gate.kind,
        gate.layout,
        gate.num_experts,
        gate.rank,
        gate.in_dims,
        gate.out_dims,
        gate.dtype,
    ) == (
        "switch",
        "peft_per_expert",
        8,
        4,
        64,
        32,
        "F16",
    )
    assert len(gate.keys) == 14
    assert [(p.code, p.path) for p in s.errors] == [
        ("missing_experts", "model.layers.0.mlp.experts.down_proj"),
        ("missing_experts", "model.layers.0.mlp.experts.gate_proj"),
    ]
    assert "5" in s.errors[0].message


def test_sharded_peft_adapter(tmp_path: Path) -> None:
    tensors = llama_peft()
    names = sorted(tensors)
    half = len(names) // 2
    weight_map = {}
    for i, chunk in enumerate((names[:half], names[half:]), 1):
        shard = f"adapter_model-{i:05d}-of-00002.safetensors"
        save_numpy(tmp_path / shard, {k: tensors[k] for k in chunk})
        weight_map |= dict.fromkeys(chunk, shard)
    total = sum(v.nbytes for v in tensors.values())
    (tmp_path / "adapter_model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map})
    )
    write_config(tmp_path)
    s = adapterscan.scan(tmp_path)
    assert len(s.files) == 2
    assert s.index_path is not None
    assert s.index_path.endswith("index.json")
    assert s.tensor_count == len(tensors)
    assert s.total_bytes == total
    assert len(s.modules) == 5
    assert [p.code for p in s.problems] == ["peft_base_layer_saved"]
    # A stray shard nobody references is reported, and trainer checkpoints are not.
    save_numpy(tmp_path / "adapter_model-extra.safetensors", {"z": np.zeros(1, np.float32)})
    assert "unreferenced_shard" in [p.code for p in adapterscan.scan(tmp_path).problems]


def test_mixed_formats(tmp_path: Path) -> None:
    t = peft_dense("a.q_proj", 4, 8, 8)
    t["a.v_proj.lora_a"] = np.zeros((8, 4), np.float32)
    t["a.v_proj.lora_b"] = np.zeros((4, 8), np.float32)
    save_numpy(tmp_path / "x.safetensors", t)
    s = adapterscan.scan(tmp_path / "x.safetensors", read_config=False)
    assert s.format == "unknown"
    assert [p.code for p in s.errors] == ["mixed_formats"]


@pytest.mark.parametrize("names", [("lora_A.weight", "lora_B.weight")])
def test_transposed_peft_factors(tmp_path: Path, names: tuple[str, str]) -> None:
    rng = np.random.default_rng(0)
    t = {
        f"base_model.model.m.q_proj.{names[0]}": rng.standard_normal((64, 8)).astype(np.float32),
        f"base_model.model.m.q_proj.{names[1]}": rng.standard_normal((8, 32)).astype(np.float32),
    }
    save_numpy(tmp_path / "adapter_model.safetensors", t)
    s = adapterscan.scan(tmp_path, read_config=False)
    assert [p.code for p in s.problems] == ["orientation_flipped"]
    assert s.modules["m.q_proj"].rank == 8
