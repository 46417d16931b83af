"""Adapters trained by mlx-lm's own command line (``python -m mlx_lm lora``, two iterations on a
tiny base with an offline tokenizer), as users make them: default keys, DoRA, explicit keys that
include the embedding, the output head and (on a MoE base) the router and the experts.

For each: ``inspect`` shows the modules mlx-lm's own loader wraps; ``check`` finds it fits its
base through the model's classes and through the headers; ``load_adapters`` reproduces the logits
of mlx-lm's ``load(base, adapter_path=...)``; what ``save_adapters`` writes reloads in stock mlx-lm
to the same logits; PEFT and back, converted with the base, reproduces them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import adapterscan
from producers import QWEN3_MOE, build_model, expected_modules

pytestmark = pytest.mark.mlx

LLAMA_BASE = Path(__file__).parent / "fixtures" / "thirdparty" / "llama-base"
TOKENS = [[1, 5, 9, 33]]

CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "defaults": ("llama", {}),
    "dora": ("llama", {"fine_tune_type": "dora"}),
    "keys-embedding-head": (
        "llama",
        {
            "lora_parameters": {
                "rank": 4,
                "scale": 10.0,
                "dropout": 0.0,
                "keys": ["self_attn.q_proj", "model.embed_tokens", "lm_head"],
            }
        },
    ),
    "moe-defaults": ("moe", {}),
    "moe-router-experts": (
        "moe",
        {
            "lora_parameters": {
                "rank": 4,
                "scale": 10.0,
                "dropout": 0.0,
                "keys": ["mlp.gate", "mlp.switch_mlp.up_proj", "self_attn.v_proj"],
            }
        },
    ),
}


def _base(kind: str, tmp_path: Path) -> Path:
    if kind == "llama":
        return LLAMA_BASE
    from mlx_lm.utils import save_config, save_model

    folder = tmp_path / "moe-base"
    save_model(folder, build_model(QWEN3_MOE))
    save_config(dict(QWEN3_MOE), folder / "config.json")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(LLAMA_BASE / name, folder / name)
    return folder


def _train(base: Path, tmp_path: Path, extra: dict[str, Any]) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    row = json.dumps({"text": "the quick brown fox jumps over the lazy dog " * 3})
    for split in ("train", "valid", "test"):
        (data / f"{split}.jsonl").write_text("\n".join([row] * 8) + "\n")
    config = {
        "model": str(base),
        "train": True,
        "data": str(data),
        "iters": 2,
        "batch_size": 2,
        "num_layers": 2,
        "adapter_path": str(tmp_path / "adapter"),
        "max_seq_length": 32,
        "val_batches": 1,
        "steps_per_eval": 100,
        "learning_rate": 1e-2,
        **extra,
    }
    (tmp_path / "lora.yaml").write_text(json.dumps(config))  # JSON is YAML
    subprocess.run(
        [sys.executable, "-m", "mlx_lm", "lora", "-c", str(tmp_path / "lora.yaml")],
        check=True,
        capture_output=True,
        timeout=240,
    )
    return tmp_path / "adapter"


def _logits(model: Any) -> Any:
    import mlx.core as mx

    out = model(mx.array(TOKENS))
    mx.eval(out)
    return out


@pytest.mark.parametrize("case", sorted(CASES))
def test_adapters_trained_by_the_mlx_lm_command_line(tmp_path: Path, case: str) -> None:
    import mlx.core as mx
    from mlx_lm.tuner.utils import load_adapters as stock_load
    from mlx_lm.utils import load_model

    from adapterscan.mlx import convert_to_mlx, convert_to_peft, load_adapters, save_adapters

    kind, extra = CASES[case]
    base = _base(kind, tmp_path)
    adapter = _train(base, tmp_path, extra)

    reference, _ = load_model(base)
    reference.freeze()
    stock_load(reference, str(adapter))
    reference.eval()
    want = _logits(reference)

    s = adapterscan.scan(adapter)
    table = {p: (m.kind, m.variant, m.rank) for p, m in s.modules.items()}
    live = {p: (r["kind"], r["variant"], r["rank"]) for p, r in expected_modules(reference).items()}
    assert table == live
    assert adapterscan.check(adapter, base).ok
    headers = adapterscan.check(adapter, base, structure="headers")
    assert (headers.missing, headers.unexpected, headers.shape_mismatch) == ([], [], [])

    model, _ = load_model(base)
    load_adapters(model, adapter)
    assert mx.allclose(_logits(model), want, atol=1e-4).item()

    save_adapters(model, tmp_path / "resaved")
    stock, _ = load_model(base)
    stock.freeze()
    stock_load(stock, str(tmp_path / "resaved"))
    stock.eval()
    assert mx.allclose(_logits(stock), want, atol=1e-4).item()

    convert_to_peft(adapter, tmp_path / "peft")
    convert_to_mlx(tmp_path / "peft", tmp_path / "back", base=base)
    back, _ = load_model(base)
    back.freeze()
    stock_load(back, str(tmp_path / "back"))
    back.eval()
    assert mx.allclose(_logits(back), want, atol=1e-4).item()
