"""Golden outputs: what ``inspect --json``, ``check --json``, the table and ``Scan.to_dict()`` say
about a fixed catalogue of adapters stays byte-identical unless a change means it to.

The catalogue: the committed PEFT fixtures (made by peft's ``save_pretrained``) with their two
bases, and adapters written by mlx-lm's own classes and trainer save path (LoRA, DoRA, switch
LoRA on Qwen3-MoE and Mixtral, embedding and ``lm_head`` LoRA, a subset of layers), each checked
against a base folder written by mlx-lm's ``save_model``. A change in any output fails with the
first differing entry; to accept a deliberate change, run
``ADAPTERSCAN_GOLDEN_UPDATE=1 pytest tests/test_golden.py`` and review the diff of
``tests/golden/``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from golden import snapshot
from producers import (
    LLAMA,
    MIXTRAL,
    QWEN3_MOE,
    attach_lora,
    build_model,
    save_base,
    save_like_trainer,
)

GOLDEN = Path(__file__).parent / "golden"
FIXTURES = Path(__file__).parent / "fixtures" / "peft"


def _compare(name: str, snap: dict[str, Any]) -> None:
    path = GOLDEN / f"{name}.json"
    text = json.dumps(snap, indent=1, sort_keys=True) + "\n"
    if os.environ.get("ADAPTERSCAN_GOLDEN_UPDATE"):
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
    want = json.loads(path.read_text(encoding="utf-8"))
    assert sorted(snap) == sorted(want), "the catalogue's entries changed"
    for key in sorted(want):
        assert snap[key] == want[key], f"{name}: {key} differs from tests/golden/{name}.json"


def test_peft_fixtures(tmp_path: Path) -> None:
    for entry in sorted(FIXTURES.iterdir()):
        if entry.is_dir() and entry.name != "variants":  # tested on their own
            shutil.copytree(entry, tmp_path / entry.name, ignore=shutil.ignore_patterns("*.npy"))
    snap = snapshot(tmp_path)
    assert len(snap) > 20
    _compare("peft", snap)


MLX_CASES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "llama-lora": (LLAMA, {"num_layers": 4}),
    "llama-dora": (LLAMA, {"num_layers": 2, "dora": True}),
    "llama-subset": (LLAMA, {"num_layers": 1, "keys": ["self_attn.q_proj", "mlp.down_proj"]}),
    "llama-embedding": (LLAMA, {"num_layers": 2, "keys": ["self_attn.v_proj"], "embed": True}),
    "qwen3-moe": (QWEN3_MOE, {"num_layers": 2}),
    "mixtral": (MIXTRAL, {"num_layers": 2, "rank": 4, "scale": 10.0}),
}


@pytest.mark.mlx
@pytest.mark.parametrize("case", sorted(MLX_CASES))
def test_mlx_lm_adapters(tmp_path: Path, case: str) -> None:
    from mlx_lm.tuner.lora import LoRAEmbedding, LoRALinear

    config, opts = MLX_CASES[case]
    opts = dict(opts)
    embed = opts.pop("embed", False)
    save_base(build_model(config), config, tmp_path / "base")
    model = build_model(config)
    params = attach_lora(model, **opts)
    if embed:
        model.model.embed_tokens = LoRAEmbedding.from_base(model.model.embed_tokens, r=8)
        model.lm_head = LoRALinear.from_base(model.lm_head, r=8)
    save_like_trainer(
        model,
        tmp_path / "adapter",
        fine_tune_type="dora" if opts.get("dora") else "lora",
        num_layers=opts["num_layers"],
        lora_parameters=params,
    )
    snap = snapshot(tmp_path)
    assert any(k.startswith("check adapter base") for k in snap)
    _compare(f"mlx-{case}", snap)
