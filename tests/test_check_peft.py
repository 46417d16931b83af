"""`check` of PEFT adapters against Hugging Face layout bases, written with `safetensors`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

import adapterscan
from producers import peft_dense, save_numpy

HIDDEN, INTER, EXPERTS, LAYERS, VOCAB = 32, 16, 4, 2, 50


def hf_moe_base(folder: Path) -> Path:
    """A qwen3_moe-like checkpoint in the Hugging Face per-expert layout."""
    t: dict[str, np.ndarray] = {"model.embed_tokens.weight": np.zeros((VOCAB, HIDDEN), np.float16)}
    for layer in range(LAYERS):
        p = f"model.layers.{layer}"
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            t[f"{p}.self_attn.{proj}.weight"] = np.zeros((HIDDEN, HIDDEN), np.float16)
        t[f"{p}.mlp.gate.weight"] = np.zeros((EXPERTS, HIDDEN), np.float16)
        for e in range(EXPERTS):
            t[f"{p}.mlp.experts.{e}.gate_proj.weight"] = np.zeros((INTER, HIDDEN), np.float16)
            t[f"{p}.mlp.experts.{e}.up_proj.weight"] = np.zeros((INTER, HIDDEN), np.float16)
            t[f"{p}.mlp.experts.{e}.down_proj.weight"] = np.zeros((HIDDEN, INTER), np.float16)
        t[f"{p}.input_layernorm.weight"] = np.ones(HIDDEN, np.float16)
    t["lm_head.weight"] = np.zeros((VOCAB, HIDDEN), np.float16)
    save_numpy(folder / "model.safetensors", t, metadata={"format": "pt"})
    (folder / "config.json").write_text(
        json.dumps({"model_type": "qwen3_moe", "num_hidden_layers": LAYERS})
    )
    return folder


def peft_adapter(
    folder: Path, *, skip_expert: int | None = None, extra_expert: bool = False
) -> Path:
    t: dict[str, np.ndarray] = {}
    for layer in range(LAYERS):
        p = f"model.layers.{layer}"
        t |= peft_dense(f"{p}.self_attn.q_proj", 4, HIDDEN, HIDDEN)
        for e in range(EXPERTS + (1 if extra_expert else 0)):
            if e == skip_expert:
                continue
            t |= peft_dense(f"{p}.mlp.experts.{e}.up_proj", 4, HIDDEN, INTER)
    save_numpy(folder / "adapter_model.safetensors", t)
    (folder / "adapter_config.json").write_text(
        json.dumps(
            {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "up_proj"]}
        )
    )
    return folder


def test_hf_base_table(tmp_path: Path) -> None:
    table = {t[0]: t for t in adapterscan.read_base(hf_moe_base(tmp_path / "b")).targets()}
    assert table["model.layers.0.mlp.switch_mlp.up_proj"] == (
        "model.layers.0.mlp.switch_mlp.up_proj",
        "switch",
        HIDDEN,
        INTER,
        EXPERTS,
    )
    assert table["model.embed_tokens"][1:] == ("embedding", VOCAB, HIDDEN, None)
    assert table["model.layers.1.mlp.gate"][1:] == ("linear", HIDDEN, EXPERTS, None)
    assert "model.layers.0.input_layernorm" not in table


def test_peft_per_expert_adapter_fits(tmp_path: Path) -> None:
    base = hf_moe_base(tmp_path / "b")
    report = adapterscan.check(peft_adapter(tmp_path / "a"), base)
    assert report.ok, report.to_dict()


def test_missing_and_extra_experts(tmp_path: Path) -> None:
    base = hf_moe_base(tmp_path / "b")
    report = adapterscan.check(peft_adapter(tmp_path / "a", skip_expert=2), base)
    assert report.missing == [
        f"base_model.model.model.layers.{i}.mlp.experts.2.up_proj.lora_{x}.weight"
        for i in range(LAYERS)
        for x in "AB"
    ]
    report = adapterscan.check(peft_adapter(tmp_path / "c", extra_expert=True), base)
    assert report.unexpected == [
        f"base_model.model.model.layers.{i}.mlp.experts.{EXPERTS}.up_proj.lora_{x}.weight"
        for i in range(LAYERS)
        for x in "AB"
    ]


def test_targets_promise_modules(tmp_path: Path) -> None:
    base = hf_moe_base(tmp_path / "b")
    folder = peft_adapter(tmp_path / "a")
    cfg = json.loads((folder / "adapter_config.json").read_text())
    cfg["target_modules"] = ["q_proj", "up_proj", "v_proj"]
    (folder / "adapter_config.json").write_text(json.dumps(cfg))
    report = adapterscan.check(folder, base)
    assert report.missing == [
        f"base_model.model.model.layers.{i}.self_attn.v_proj.lora_{x}.weight"
        for i in range(LAYERS)
        for x in "AB"
    ]


def test_expert_count_of_mlx_switch_adapter_vs_base(tmp_path: Path) -> None:
    base = hf_moe_base(tmp_path / "b")
    a = tmp_path / "a"
    save_numpy(
        a / "adapters.safetensors",
        {
            "model.layers.0.mlp.switch_mlp.up_proj.lora_a": np.zeros((8, 4, HIDDEN), np.float32),
            "model.layers.0.mlp.switch_mlp.up_proj.lora_b": np.zeros((8, INTER, 4), np.float32),
        },
    )
    report = adapterscan.check(a, base)
    assert [(m.key, m.saved, m.expected) for m in report.shape_mismatch] == [
        ("model.layers.0.mlp.switch_mlp.up_proj.lora_a", (8, 4, HIDDEN), (EXPERTS, 4, HIDDEN)),
        ("model.layers.0.mlp.switch_mlp.up_proj.lora_b", (8, INTER, 4), (EXPERTS, INTER, 4)),
    ]
