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
