"""`repair`: rewrite a stale or incomplete config from what the tensors prove."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import adapterscan
from adapterscan.cli import main
from producers import save_numpy


def adapter(folder: Path) -> Path:
    t = {}
    for layer in (2, 3):
        t[f"model.layers.{layer}.self_attn.q_proj.lora_a"] = np.zeros((64, 4), np.float32)
        t[f"model.layers.{layer}.self_attn.q_proj.lora_b"] = np.zeros((4, 64), np.float32)
    t["model.embed_tokens.lora_a"] = np.zeros((128, 2), np.float32)
    t["model.embed_tokens.lora_b"] = np.zeros((2, 64), np.float32)
    save_numpy(folder / "adapters.safetensors", t)
    return folder


def test_stale_config_is_rewritten_with_a_backup(tmp_path: Path) -> None:
    folder = adapter(tmp_path / "a")
    stale = {
        "fine_tune_type": "full",
        "rank": 99,
        "lora_parameters": {"rank": 99, "scale": 6.0, "dropout": 0.1, "keys": ["auto"]},
        "model": "some/model",
    }
    (folder / "adapter_config.json").write_text(json.dumps(stale))
    assert not adapterscan.scan(folder).ok
    s = adapterscan.repair(folder)
    assert s.ok, [(p.code, p.path) for p in s.problems]
    cfg = s.config
    assert cfg is not None
    assert cfg["model"] == "some/model"
    assert cfg["fine_tune_type"] == "lora"
    assert cfg["lora_parameters"] == {
        "rank": 4,
        "scale": 6.0,
        "dropout": 0.1,
        "keys": [
            "model.embed_tokens",
            "model.layers.2.self_attn.q_proj",
            "model.layers.3.self_attn.q_proj",
        ],
    }
    assert cfg["adapterscan"]["modules"]["model.embed_tokens"]["rank"] == 2
    (backup,) = folder.glob("adapter_config.json.bak-*")
    assert json.loads(backup.read_text()) == stale


def test_scale_must_be_known(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = adapter(tmp_path / "a")
    with pytest.raises(adapterscan.ConfigError, match="--scale"):
        adapterscan.repair(folder)
    assert not (folder / "adapter_config.json").exists()
    assert main(["repair", str(folder)]) == 2
    assert "--scale" in capsys.readouterr().err
    assert main(["repair", str(folder), "--scale", "2.5", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["config"]["lora_parameters"]["scale"] == 2.5
    assert out["problems"] == []
    assert not list(folder.glob("*.bak-*"))  # there was nothing to back up


def test_malformed_config_is_backed_up_verbatim(tmp_path: Path) -> None:
    folder = adapter(tmp_path / "a")
    (folder / "adapter_config.json").write_text("{not json")
    with pytest.raises(adapterscan.ConfigError):
        adapterscan.scan(folder)
    s = adapterscan.repair(folder, scale=1.0)
    assert s.ok
    (backup,) = folder.glob("adapter_config.json.bak-*")
    assert backup.read_text() == "{not json"


@pytest.mark.mlx
def test_repaired_legacy_config_loads_in_stock_mlx_lm(tmp_path: Path) -> None:
    import mlx.core as mx
    from mlx.utils import tree_map
    from mlx_lm.tuner.utils import load_adapters

    from producers import LLAMA, attach_lora, build_model, save_like_trainer

    model = build_model(LLAMA)
    params = attach_lora(model, num_layers=2, rank=4, scale=3.0)
    model.update(tree_map(lambda p: mx.random.normal(p.shape) * 0.05, model.trainable_parameters()))
    model.eval()
    folder = save_like_trainer(
        model, tmp_path / "a", fine_tune_type="lora", num_layers=2, lora_parameters=params
    )
    cfg = json.loads((folder / "adapter_config.json").read_text())
    cfg["lora_layers"] = cfg.pop("num_layers")
    cfg.pop("fine_tune_type")
    cfg["use_dora"] = False
    (folder / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(AttributeError):
        load_adapters(build_model(LLAMA), str(folder))
    base = tmp_path / "base"
    from producers import save_base

    save_base(build_model(LLAMA), LLAMA, base)
    assert adapterscan.repair(folder, base=base).ok
    assert json.loads((folder / "adapter_config.json").read_text())["num_layers"] == 4
    stock = load_adapters(build_model(LLAMA), str(folder))
    stock.eval()
    x = mx.array([[1, 2, 3, 4]])
    assert float(mx.abs(stock(x) - model(x)).max()) <= 1e-5


REPAIR_LOOP = """
import sys
import adapterscan
folder = sys.argv[1]
n = 0
while True:
    n += 1
    adapterscan.repair(folder, scale=float(n))
    print(n, flush=True)
"""


@pytest.mark.timeout(300)
def test_killed_repairs_leave_a_complete_config(tmp_path: Path) -> None:
    """SIGKILL a process that repairs over and over: the folder always holds one whole config."""
    from producers import kill_during_writes

    folder = adapter(tmp_path / "a")
    # A big adapter keeps each write long enough to be interrupted.
    big = {
        f"model.layers.{i}.mlp.up_proj.lora_{x}": np.zeros(
            (4096, 64) if x == "a" else (64, 4096), np.float32
        )
        for i in range(8)
        for x in "ab"
    }
    save_numpy(folder / "adapters.safetensors", big)
    adapterscan.repair(folder, scale=1.0)
    mid_write = 0
    for attempt in range(16):
        kill_during_writes([REPAIR_LOOP, str(folder)], 0.005 + 0.011 * attempt)
        mid_write += any("adapterscan-tmp" in p.name for p in tmp_path.iterdir())
        s = adapterscan.scan(folder)
        assert s.ok, [(p.code, p.path) for p in s.problems]
        assert s.config is not None
        assert s.config["lora_parameters"]["scale"] >= 1.0
        assert not [p for p in folder.iterdir() if p.name.startswith(".")]
        assert len(list(folder.glob("adapter_config.json.bak-*"))) >= 1
    assert mid_write >= 1


@pytest.mark.mlx
def test_dora_recorded_as_lora_parameters_use_dora_is_named_and_repaired(tmp_path: Path) -> None:
    """mlx-lm-lora writes DoRA as `lora_parameters.use_dora: true` and no fine_tune_type, which
    mlx-lm reads as lora (it then refuses the magnitudes): the message names that field, and
    repair writes fine_tune_type from the tensors, after which stock mlx-lm loads it."""
    from mlx_lm.tuner.utils import load_adapters as stock_load

    from producers import LLAMA, attach_lora, build_model, save_like_trainer

    model = build_model(LLAMA)
    params = attach_lora(model, num_layers=2, rank=4, scale=10.0, dora=True)
    folder = save_like_trainer(
        model, tmp_path / "a", fine_tune_type="dora", num_layers=2, lora_parameters=params
    )
    cfg = json.loads((folder / "adapter_config.json").read_text())
    del cfg["fine_tune_type"]
    cfg["lora_parameters"]["use_dora"] = True
    (folder / "adapter_config.json").write_text(json.dumps(cfg))
    s = adapterscan.scan(folder)
    unexpected = [p for p in s.problems if p.code == "dora_magnitude_unexpected"]
    assert unexpected
    assert "lora_parameters.use_dora" in unexpected[0].message
    repaired = adapterscan.repair(folder)
    assert repaired.ok, repaired.problems
    assert repaired.config is not None
    assert repaired.config["fine_tune_type"] == "dora"
    stock = build_model(LLAMA)
    stock.freeze()
    stock_load(stock, str(folder))
