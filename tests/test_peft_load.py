"""PEFT-layout adapters loaded into mlx-lm models: the same function as the mlx adapter.

The PEFT files are made from a trained mlx-lm adapter by peft's conventions (formats.md section
5): dense and embedding factors transposed, per-expert factors unstacked, scale written as
lora_alpha with scale = alpha / r (rsLoRA: alpha / sqrt(r)), `base_model.model.` prefix.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import adapterscan
from producers import LLAMA, MIXTRAL, QWEN3_MOE, build_model, save_numpy
from test_mlx_roundtrip import fresh, logits, max_diff, trained

pytestmark = pytest.mark.mlx

MIXTRAL_HF = {"gate_proj": "w1", "up_proj": "w3", "down_proj": "w2"}


def to_peft(model: Any, folder: Path, *, alpha_of: Any, rslora: bool = False) -> Path:
    from mlx.utils import tree_flatten

    import adapterscan.mlx as am

    tensors: dict[str, np.ndarray] = {}
    targets = set()
    for live in am.live_adapters(model):
        flat = {k: np.array(v) for k, v in tree_flatten(live.tensors)}
        a, b = flat["lora_a"], flat["lora_b"]
        path = live.path
        if live.kind == "switch":
            head, proj = path.split(".switch_mlp.")
            mixtral = head.endswith("block_sparse_moe")
            name = MIXTRAL_HF[proj] if mixtral else proj
            targets.add(name)
            for e in range(a.shape[0]):
                p = f"base_model.model.{head}.experts.{e}.{name}"
                tensors[f"{p}.lora_A.weight"] = a[e]
                tensors[f"{p}.lora_B.weight"] = b[e]
            continue
        targets.add(path.rsplit(".", 1)[-1])
        p = f"base_model.model.{path}"
        if live.kind == "embedding":
            tensors[f"{p}.lora_embedding_A"] = a.T.copy()
            tensors[f"{p}.lora_embedding_B"] = b.T.copy()
        else:
            tensors[f"{p}.lora_A.weight"] = a.T.copy()
            tensors[f"{p}.lora_B.weight"] = b.T.copy()
        if "m" in flat:
            tensors[f"{p}.lora_magnitude_vector"] = flat["m"]
    ranks = {x.rank for x in am.live_adapters(model)}
    (r,) = ranks
    scale = next(iter(am.live_adapters(model))).scale
    save_numpy(folder / "adapter_model.safetensors", tensors, metadata={"format": "pt"})
    config = {
        "peft_type": "LORA",
        "r": r,
        "lora_alpha": alpha_of(scale, r),
        "use_rslora": rslora,
        "use_dora": any(x.variant == "dora" for x in am.live_adapters(model)),
        "target_modules": sorted(targets),
        "lora_dropout": 0.0,
        "bias": "none",
    }
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return folder


CASES = {
    "dense": (LLAMA, {"num_layers": 4, "rank": 4, "scale": 2.0}, False),
    "embedding-untied": (
        LLAMA,
        {
            "num_layers": 4,
            "rank": 4,
            "scale": 2.0,
            "keys": ["model.embed_tokens", "self_attn.q_proj"],
        },
        False,
    ),
    "dora": (
        LLAMA,
        {
            "num_layers": 4,
            "rank": 4,
            "scale": 2.0,
            "dora": True,
            "keys": ["self_attn.q_proj", "self_attn.v_proj"],
        },
        False,
    ),
    "qwen3-moe-experts": (QWEN3_MOE, {"num_layers": 2, "rank": 4, "scale": 2.0}, False),
    "mixtral-experts": (MIXTRAL, {"num_layers": 2, "rank": 4, "scale": 2.0}, False),
    "rslora": (LLAMA, {"num_layers": 4, "rank": 4, "scale": 3.0}, True),
}


@pytest.mark.parametrize("case", list(CASES))
def test_peft_layout_loads_to_the_same_function(tmp_path: Path, case: str) -> None:
    import adapterscan.mlx as am

    config, lora, rslora = CASES[case]
    model = trained(config, **lora)
    before = logits(model)
    alpha = (lambda s, r: s * math.sqrt(r)) if rslora else (lambda s, r: s * r)
    folder = to_peft(model, tmp_path / "peft", alpha_of=alpha, rslora=rslora)
    s = adapterscan.scan(folder)
    assert s.format == "peft"
    reloaded = am.load_adapters(fresh(config), folder)
    assert max_diff(before, logits(reloaded)) <= 1e-5


def test_alpha_pattern_first_match(tmp_path: Path) -> None:
    import adapterscan.mlx as am

    model = trained(
        LLAMA, num_layers=4, rank=4, scale=2.0, keys=["self_attn.q_proj", "self_attn.v_proj"]
    )
    model.model.layers[3].self_attn.v_proj.scale = 5.0
    before = logits(model)
    folder = to_peft(model, tmp_path / "p", alpha_of=lambda s, r: 2.0 * r)
    cfg = json.loads((folder / "adapter_config.json").read_text())
    cfg["alpha_pattern"] = {"model.layers.3.self_attn.v_proj": 20, "v_proj": 8}
    (folder / "adapter_config.json").write_text(json.dumps(cfg))
    reloaded = am.load_adapters(fresh(LLAMA), folder)
    assert reloaded.model.layers[3].self_attn.v_proj.scale == 5.0
    assert reloaded.model.layers[2].self_attn.v_proj.scale == 2.0
    assert max_diff(before, logits(reloaded)) <= 1e-5
    # The first key that matches wins: in the other order layer 3 gets alpha 8.
    cfg["alpha_pattern"] = {"v_proj": 8, "model.layers.3.self_attn.v_proj": 20}
    (folder / "adapter_config.json").write_text(json.dumps(cfg))
    reloaded = am.load_adapters(fresh(LLAMA), folder)
    assert reloaded.model.layers[3].self_attn.v_proj.scale == 2.0


def test_what_cannot_be_represented_is_refused(tmp_path: Path) -> None:
    import adapterscan.mlx as am

    tied = dict(LLAMA, tie_word_embeddings=True)
    model = trained(tied, num_layers=4, rank=4, scale=2.0, keys=["model.embed_tokens"])
    folder = to_peft(model, tmp_path / "t", alpha_of=lambda s, r: s * r)
    with pytest.raises(adapterscan.AdapterScanError, match="ties its embedding"):
        am.load_adapters(build_model(tied), folder)
    model = trained(LLAMA, num_layers=4, rank=4, scale=2.0, keys=["self_attn.q_proj"])
    folder = to_peft(model, tmp_path / "s", alpha_of=lambda s, r: s * r)
    save_numpy(
        folder / "adapter_model.safetensors",
        {
            **{
                k: v
                for k, v in __import__("safetensors.numpy")
                .numpy.load_file(str(folder / "adapter_model.safetensors"))
                .items()
            },
            "base_model.model.lm_head.weight": np.zeros((128, 64), np.float32),
        },
    )
    cfg = json.loads((folder / "adapter_config.json").read_text())
    cfg["modules_to_save"] = ["lm_head"]
    (folder / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(adapterscan.AdapterScanError, match=r"lm_head\.weight"):
        am.load_adapters(build_model(LLAMA), folder)
