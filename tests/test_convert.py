"""`convert --to mlx`: PEFT adapters saved by real peft, loaded by stock mlx-lm afterwards."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import adapterscan
from adapterscan.cli import main
from test_peft_fixtures import BASE, FIXTURES, TOKENS, base_of
from test_peft_fixtures import CASES as PEFT_CASES

pytestmark = pytest.mark.mlx


@pytest.mark.parametrize("case", PEFT_CASES)
def test_stock_mlx_lm_reproduces_peft(tmp_path: Path, case: str) -> None:
    import mlx.core as mx
    from mlx_lm.tuner.utils import load_adapters
    from mlx_lm.utils import load_model

    out = tmp_path / case
    base = base_of(case)
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


def test_gpt_oss_fused_experts_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """gpt-oss interleaves gate and up rows in gate_up_proj: not split as halves, refused."""
    import shutil

    src = tmp_path / "gpt-oss"
    shutil.copytree(FIXTURES / "qwen3-moe-fused", src)
    cfg = json.loads((src / "adapter_config.json").read_text())
    cfg["auto_mapping"]["base_model_class"] = "GptOssForCausalLM"
    (src / "adapter_config.json").write_text(json.dumps(cfg))
    assert main(["convert", str(src), str(tmp_path / "o"), "--to", "mlx"]) == 2
    assert "gpt-oss interleaves" in capsys.readouterr().err
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


@pytest.mark.parametrize(
    ("case", "experts"),
    [(c, "fused") for c in CASES] + [("qwen3-moe", "per-expert"), ("mixtral", "per-expert")],
)
def test_to_peft_and_back(tmp_path: Path, case: str, experts: str) -> None:
    import mlx.core as mx

    import adapterscan.mlx as am
    import producers
    from test_mlx_roundtrip import fresh, logits, max_diff, trained

    name, lora = CASES[case]
    config = getattr(producers, name)
    model = trained(config, **lora)
    before = logits(model)
    am.save_adapters(model, tmp_path / "mlx")
    args = ["convert", str(tmp_path / "mlx"), str(tmp_path / "peft"), "--to", "peft"]
    assert main([*args, "--experts", experts]) == 0
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
    import adapterscan.mlx as am
    from producers import LLAMA
    from test_mlx_roundtrip import fresh, logits, max_diff, two_ranks

    model = two_ranks(1)
    before = logits(model)
    am.save_adapters(model, tmp_path / "mlx")
    am.convert_to_peft(tmp_path / "mlx", tmp_path / "peft")
    cfg = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert len(cfg["rank_pattern"]) == 1
    assert len(cfg["alpha_pattern"]) == 1
    reloaded = am.load_adapters(fresh(LLAMA), tmp_path / "peft")
    assert max_diff(before, logits(reloaded)) <= 1e-6


def test_fused_experts_for_transformers_5(tmp_path: Path) -> None:
    """mlx switch LoRA -> peft target_parameters: gate and up of different ranks and scales."""
    import mlx.core as mx
    from mlx_lm.tuner.utils import linear_to_lora_layers

    import adapterscan.mlx as am
    from producers import QWEN3_MOE, build_model
    from test_mlx_roundtrip import fresh, logits, max_diff

    model = build_model(QWEN3_MOE)
    model.freeze()
    linear_to_lora_layers(model, 2, {"rank": 4, "scale": 2.0, "dropout": 0.0})
    switch = model.model.layers[0].mlp.switch_mlp
    # Give up_proj its own rank (6) and scale (0.5); every factor non-zero.
    up = switch.up_proj
    switch.up_proj = type(up).from_base(up.linear, r=6, scale=0.5)
    for layer in model.model.layers:
        for proj in ("gate_proj", "up_proj", "down_proj"):
            w = getattr(layer.mlp.switch_mlp, proj)
            w.lora_b = mx.random.normal(w.lora_b.shape) * 0.05
    before = logits(model)
    am.save_adapters(model, tmp_path / "mlx")
    s = am.convert_to_peft(tmp_path / "mlx", tmp_path / "peft")
    assert s.ok, [(p.code, p.message) for p in s.problems]
    cfg = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert cfg["target_parameters"] == [
        f"model.layers.{i}.mlp.experts.{p}" for i in (0, 1) for p in ("down_proj", "gate_up_proj")
    ]
    assert cfg["lora_dropout"] == 0.0
    # gate (4) and up (6) share one wrapper of rank 10, at base_layer (down_proj wraps it).
    gate_up = s.modules["model.layers.0.mlp.experts.gate_up_proj"]
    assert (gate_up.rank, gate_up.num_experts) == (10, QWEN3_MOE["num_experts"])
    assert gate_up.keys[0].endswith("layers.0.mlp.experts.base_layer.lora_A.weight")
    assert s.modules["model.layers.1.mlp.experts.gate_up_proj"].rank == 8
    assert cfg["r"] == 4
    assert cfg["rank_pattern"] == {
        r"model\.layers\.0\.mlp\.experts\.gate_up_proj": 10,
        r"model\.layers\.1\.mlp\.experts\.gate_up_proj": 8,
    }
    # The function is the same, in adapterscan's loader...
    reloaded = am.load_adapters(fresh(QWEN3_MOE), tmp_path / "peft")
    assert max_diff(before, logits(reloaded)) <= 1e-5
    # ... and the way back restores each half's own rank and scale.
    back = am.convert_to_mlx(tmp_path / "peft", tmp_path / "back")
    ranks = {p: m.rank for p, m in back.modules.items() if "switch_mlp" in p}
    assert set(ranks.values()) == {6}  # ranks 4 and 6 padded to 6, scales folded: stock form
    original = dict(mx.load(str(tmp_path / "mlx" / "adapters.safetensors")))
    restored = dict(mx.load(str(tmp_path / "back" / "adapters.safetensors")))
    up_a = "model.layers.0.mlp.switch_mlp.up_proj.lora_a"
    assert bool(mx.array_equal(restored[up_a], original[up_a]))
    gate_a = "model.layers.0.mlp.switch_mlp.gate_proj.lora_a"
    assert bool(mx.array_equal(restored[gate_a][:, :4], original[gate_a]))
    assert float(mx.abs(restored[gate_a][:, 4:]).max()) == 0.0


CONVERT_LOOP = """
import sys
from pathlib import Path
import adapterscan.mlx as am
src_a, src_b, dst = sys.argv[1:]
n = 0
while True:
    # Over the previous output: forced, which keeps its files as backups (cleared here).
    am.convert_to_peft(src_a if n % 2 == 0 else src_b, dst, force=True)
    for old in Path(dst).glob("*.bak-*"):
        old.unlink()
    n += 1
    print(n, flush=True)
"""


@pytest.mark.timeout(600)
def test_killed_converts_leave_one_whole_adapter(tmp_path: Path) -> None:
    """SIGKILL a process converting two sources in turn into one folder, at many points."""
    from producers import kill_during_writes, save_numpy

    # Two mlx adapters that differ in rank, scale and values; each ~8 MB of factors.
    sources = {}
    for name, rank, scale, value in (("a", 32, 2.0, 1.0), ("b", 64, 4.0, 2.0)):
        folder = tmp_path / name
        tensors = {}
        for i in range(8):
            p = f"model.layers.{i}.mlp.up_proj"
            tensors[f"{p}.lora_a"] = np.full((2048, rank), value, np.float32)
            tensors[f"{p}.lora_b"] = np.full((rank, 2048), value, np.float32)
        save_numpy(folder / "adapters.safetensors", tensors)
        cfg = {"lora_parameters": {"rank": rank, "scale": scale, "dropout": 0.0}, "num_layers": 8}
        (folder / "adapter_config.json").write_text(json.dumps(cfg))
        sources[value] = (rank, scale)
    dst = tmp_path / "out"
    mid_write = 0
    seen: set[float] = set()
    for attempt in range(20):
        args = [CONVERT_LOOP, str(tmp_path / "a"), str(tmp_path / "b"), str(dst)]
        kill_during_writes(args, 0.005 + 0.013 * attempt)
        mid_write += any("adapterscan-tmp" in p.name for p in tmp_path.iterdir())
        s = adapterscan.scan(dst)
        assert s.ok, [(p.code, p.path) for p in s.problems]
        assert s.format == "peft"
        assert [f.name for f in dst.iterdir() if f.name.startswith(".")] == []
        cfg = s.config
        assert cfg is not None
        header = s.files[0]
        # The config and the weights come from the same conversion.
        from safetensors.numpy import load_file

        weights = load_file(str(dst / "adapter_model.safetensors"))
        values = {float(v.flat[0]) for v in weights.values()}
        assert len(values) == 1, values
        (value,) = values
        rank, scale = sources[value]
        assert cfg["r"] == rank
        assert cfg["lora_alpha"] == scale * rank
        assert {m.rank for m in s.modules.values()} == {rank}
        assert header.tensor_count == 16
        seen.add(value)
    assert mid_write >= 3, "the kills should land inside writes too"
    assert seen == {1.0, 2.0}


@pytest.mark.parametrize(
    "record",
    [
        "not json",
        '["a list"]',
        '{"model.layers.0.mlp.experts.gate_up_proj": {"mlx": "model.layers.0.self_attn", '
        '"gate_proj": [4, 2.0], "up_proj": [4, 2.0]}}',
        '{"model.layers.0.mlp.experts.gate_up_proj": {"mlx": "model.layers.0.mlp", '
        '"gate_proj": ["4", 2.0], "up_proj": [4, 2.0]}}',
        '{"model.layers.0.mlp.experts.gate_up_proj": {"mlx": "model.layers.0.mlp", '
        '"gate_proj": [3, 2.0], "up_proj": [4, 2.0]}}',
        '{"model.layers.0.mlp.experts.gate_up_proj": {"mlx": "model.layers.0.mlp", '
        '"gate_proj": [4, 0], "up_proj": [4, NaN]}}',
    ],
)
def test_a_tampered_fused_record_is_ignored(tmp_path: Path, record: str) -> None:
    """The stacking record is a hint: when it is malformed or disagrees, peft's reading is used."""
    from safetensors.numpy import load_file, save_file

    import adapterscan.mlx as am
    import producers
    from adapterscan.mlx._peft import _FUSED_KEY
    from test_mlx_roundtrip import fresh, logits, max_diff, trained

    model = trained(producers.QWEN3_MOE, num_layers=2, rank=4, scale=5.0)
    before = logits(model)
    am.save_adapters(model, tmp_path / "mlx")
    am.convert_to_peft(tmp_path / "mlx", tmp_path / "peft")
    weights = tmp_path / "peft" / "adapter_model.safetensors"
    save_file(load_file(str(weights)), str(weights), metadata={"format": "pt", _FUSED_KEY: record})
    reloaded = am.load_adapters(fresh(producers.QWEN3_MOE), tmp_path / "peft")
    assert max_diff(before, logits(reloaded)) <= 1e-5
    back = am.convert_to_mlx(tmp_path / "peft", tmp_path / "back")
    assert back.ok
    # Without the record gate and up each take the shared rank-8 factor (exact, not the originals).
    assert back.modules["model.layers.0.mlp.switch_mlp.gate_proj"].rank == 8


def test_fused_mixtral_without_record_maps_to_block_sparse_moe(tmp_path: Path) -> None:
    """transformers 5 calls Mixtral's MoE block `mlp`; mlx-lm's is `block_sparse_moe`."""
    from safetensors.numpy import load_file, save_file

    import adapterscan.mlx as am
    import producers
    from test_mlx_roundtrip import fresh, logits, max_diff, trained

    model = trained(producers.MIXTRAL, num_layers=2, rank=2, scale=2.0)
    before = logits(model)
    am.save_adapters(model, tmp_path / "mlx")
    s = am.convert_to_peft(tmp_path / "mlx", tmp_path / "peft")
    assert "model.layers.0.mlp.experts.gate_up_proj" in s.modules
    weights = tmp_path / "peft" / "adapter_model.safetensors"
    save_file(load_file(str(weights)), str(weights), metadata={"format": "pt"})  # as peft saves
    reloaded = am.load_adapters(fresh(producers.MIXTRAL), tmp_path / "peft")
    assert max_diff(before, logits(reloaded)) <= 1e-5
    switch = reloaded.model.layers[0].block_sparse_moe.switch_mlp
    assert switch.gate_proj.lora_a.shape[1] == 4  # gate and up share the stacked rank-4 factor


def test_fused_mixtral_to_mlx_with_the_base_lands_in_block_sparse_moe(tmp_path: Path) -> None:
    """A transformers-5 fused-expert Mixtral adapter (as peft saves it: no record of how it was
    made) converted with --base: the base's own classes name the block `block_sparse_moe`, and
    stock mlx-lm then loads it to the same logits. Without the base, mlx-lm's default `mlp` is
    written, which check against the base then refuses instead of calling it a fit."""
    from mlx_lm.tuner.utils import load_adapters as stock_load
    from safetensors.numpy import load_file, save_file

    import adapterscan
    import adapterscan.mlx as am
    import producers
    from test_mlx_roundtrip import fresh, logits, max_diff, trained

    model = trained(producers.MIXTRAL, num_layers=2, rank=2, scale=2.0)
    before = logits(model)
    base = producers.save_base(fresh(producers.MIXTRAL), producers.MIXTRAL, tmp_path / "base")
    am.save_adapters(model, tmp_path / "mlx")
    am.convert_to_peft(tmp_path / "mlx", tmp_path / "peft")
    weights = tmp_path / "peft" / "adapter_model.safetensors"
    save_file(load_file(str(weights)), str(weights), metadata={"format": "pt"})  # as peft saves
    back = am.convert_to_mlx(tmp_path / "peft", tmp_path / "back", base=base)
    assert "model.layers.0.block_sparse_moe.switch_mlp.gate_proj" in back.modules
    assert adapterscan.check(tmp_path / "back", base).ok
    stock = fresh(producers.MIXTRAL)
    stock.freeze()
    stock_load(stock, str(tmp_path / "back"))
    stock.eval()
    assert max_diff(before, logits(stock)) <= 1e-5
    blind = am.convert_to_mlx(tmp_path / "peft", tmp_path / "blind")
    assert "model.layers.0.mlp.switch_mlp.gate_proj" in blind.modules
    report = adapterscan.check(tmp_path / "blind", base)
    assert not report.ok
    assert "model.layers.0.mlp.switch_mlp.gate_proj.lora_a" in report.unexpected


def test_convert_with_a_base_checks_before_writing(tmp_path: Path) -> None:
    import adapterscan
    import adapterscan.mlx as am
    import producers
    from test_mlx_roundtrip import fresh, trained

    model = trained(producers.LLAMA, num_layers=2, rank=2, scale=2.0)
    am.save_adapters(model, tmp_path / "mlx")
    am.convert_to_peft(tmp_path / "mlx", tmp_path / "peft")
    other = dict(producers.LLAMA, num_hidden_layers=2)
    base = producers.save_base(fresh(other), other, tmp_path / "base")
    with pytest.raises(adapterscan.AdapterScanError, match="nothing was written"):
        am.convert_to_mlx(tmp_path / "peft", tmp_path / "out", base=base)
    assert not (tmp_path / "out").exists()
