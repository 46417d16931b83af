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
    "case", ["llama-all-linear", "llama-rslora-patterns", "llama-embedding-q", "llama-dora"]
)
def test_stock_mlx_lm_reproduces_peft(tmp_path: Path, case: str) -> None:
    import mlx.core as mx
    from mlx_lm.tuner.utils import load_adapters
    from mlx_lm.utils import load_model

    out = tmp_path / case
    args = ["convert", str(FIXTURES / case), str(out), "--base", str(BASE)]
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
    model, _ = load_model(BASE)
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
