"""`convert --to mlx`: PEFT adapters saved by real peft, loaded by stock mlx-lm afterwards."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import adapterscan
from adapterscan.cli import main

pytestmark = pytest.mark.mlx

FIXTURES = Path(__file__).parent / "fixtures" / "peft"
BASE = FIXTURES / "llama-base"
TOKENS = [[1, 5, 9, 33, 2, 77, 100, 3]]


@pytest.mark.parametrize(
    "case",
    [
        "llama-all-linear",
        "llama-rslora-patterns",
        "llama-embedding-q",
        "llama-dora",
        "qwen3-moe-per-expert",
    ],
)
def test_stock_mlx_lm_reproduces_peft(tmp_path: Path, case: str) -> None:
    import mlx.core as mx
    from mlx_lm.tuner.utils import load_adapters
    from mlx_lm.utils import load_model

    out = tmp_path / case
    base = FIXTURES / ("qwen3-moe-base" if case.startswith("qwen3") else "llama-base")
    args = ["convert", str(FIXTURES / case), str(out), "--to", "mlx", "--base", str(base)]
    if case == "llama-embedding-q":
        assert main(args) == 2  # peft's embedding copy is not dropped silently
        args.append("--drop-embedding-copy")
    assert main(args) == 0
    s = adapterscan.scan(out)
    assert s.ok, [(p.code, p.path) for p in s.problems]
    cfg = json.loads((out / "adapter_config.json").read_text())
    if case == "llama-rslora-patterns":
        # Ranks 2, 4 and 8 and three scales: padded to 8, scales folded into lora_b.
        assert cfg["lora_parameters"]["rank"] == 8
        assert cfg["lora_parameters"]["scale"] == 1.0
    model, _ = load_model(base)
    model = load_adapters(model, str(out))
    model.eval()
    logits = np.array(model(mx.array(TOKENS)))
    assert float(np.abs(logits - np.load(FIXTURES / case / "logits.npy")).max()) <= 1e-4


def test_tied_embeddings_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    tied = tmp_path / "tied-base"
    shutil.copytree(BASE, tied)
    cfg = json.loads((tied / "config.json").read_text())
    cfg["tie_word_embeddings"] = True
    (tied / "config.json").write_text(json.dumps(cfg))
    args = [
        "convert",
        str(FIXTURES / "llama-embedding-q"),
        str(tmp_path / "o"),
        "--to",
        "mlx",
        "--base",
        str(tied),
    ]
    assert main([*args, "--drop-embedding-copy"]) == 2
    assert "ties its embedding" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_not_a_peft_adapter(tmp_path: Path) -> None:
    import adapterscan.mlx as am

    out = tmp_path / "x"
    am.convert_to_mlx(FIXTURES / "llama-all-linear", out, base=BASE)
    with pytest.raises(adapterscan.AdapterScanError, match="not a PEFT adapter"):
        am.convert_to_mlx(out, tmp_path / "y")


CASES = {
    "dense-dropout": ("LLAMA", {"num_layers": 4, "rank": 4, "scale": 2.0, "dropout": 0.1}),
    "dora-embedding-free": (
        "LLAMA",
        {
            "num_layers": 4,
            "rank": 4,
            "scale": 3.0,
            "dora": True,
            "keys": ["self_attn.q_proj", "mlp.down_proj"],
        },
    ),
    "qwen3-moe": ("QWEN3_MOE", {"num_layers": 2, "rank": 4, "scale": 5.0}),
    "mixtral": ("MIXTRAL", {"num_layers": 2, "rank": 2, "scale": 2.0}),
    "embedding": (
        "LLAMA",
        {
            "num_layers": 4,
            "rank": 4,
            "scale": 2.0,
            "keys": ["model.embed_tokens", "self_attn.v_proj"],
        },
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_to_peft_and_back(tmp_path: Path, case: str) -> None:
    import mlx.core as mx

    import adapterscan.mlx as am
    import producers
    from test_mlx_roundtrip import fresh, logits, max_diff, trained

    name, lora = CASES[case]
    config = getattr(producers, name)
    model = trained(config, **lora)
    before = logits(model)
    am.save_adapters(model, tmp_path / "mlx")
    assert main(["convert", str(tmp_path / "mlx"), str(tmp_path / "peft"), "--to", "peft"]) == 0
    peft_scan = adapterscan.scan(tmp_path / "peft")
    assert peft_scan.format == "peft"
    assert peft_scan.ok, [(p.code, p.path) for p in peft_scan.problems]
    # adapterscan loads the PEFT form to the same function...
    reloaded = am.load_adapters(fresh(config), tmp_path / "peft")
    assert max_diff(before, logits(reloaded)) <= 1e-5
    # ... and converting back gives the original tensors exactly.
    am.convert_to_mlx(tmp_path / "peft", tmp_path / "back")
    original = dict(mx.load(str(tmp_path / "mlx" / "adapters.safetensors")))
    back = dict(mx.load(str(tmp_path / "back" / "adapters.safetensors")))
    assert back.keys() == original.keys()
    for k, v in original.items():
        assert back[k].shape == v.shape, k
        assert bool(mx.array_equal(back[k], v)), k


def test_per_module_ranks_survive_the_trip(tmp_path: Path) -> None:
    import mlx.core as mx
    from mlx_lm.tuner.lora import LoRALinear

    import adapterscan.mlx as am
    from producers import LLAMA, build_model
    from test_mlx_roundtrip import fresh, logits, max_diff

    model = build_model(LLAMA)
    model.freeze()
    layer = model.model.layers[1]
    layer.self_attn.q_proj = LoRALinear.from_base(layer.self_attn.q_proj, r=2, scale=3.0)
    layer.self_attn.v_proj = LoRALinear.from_base(layer.self_attn.v_proj, r=6, scale=0.5)
    layer.self_attn.q_proj.lora_b = mx.ones((2, 64)) * 0.1
    layer.self_attn.v_proj.lora_b = mx.ones((6, 32)) * 0.1
    before = logits(model)
    am.save_adapters(model, tmp_path / "mlx")
    am.convert_to_peft(tmp_path / "mlx", tmp_path / "peft")
    cfg = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert len(cfg["rank_pattern"]) == 1
    assert len(cfg["alpha_pattern"]) == 1
    reloaded = am.load_adapters(fresh(LLAMA), tmp_path / "peft")
    assert max_diff(before, logits(reloaded)) <= 1e-6
