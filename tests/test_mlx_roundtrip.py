"""adapterscan.mlx: save and reload give the trained model back (same logits), strictly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import adapterscan
from producers import LLAMA, MIXTRAL, QWEN3_MOE, attach_lora, build_model, save_like_trainer

pytestmark = pytest.mark.mlx

TOKENS = [[1, 5, 9, 33, 2, 77, 100, 3]]


def trained(config: dict[str, Any], *, quantize: bool = False, **lora: Any) -> Any:
    """A model wrapped with mlx-lm's classes, with random (non-zero) adapter values."""
    import mlx.core as mx
    import mlx.nn as nn
    from mlx.utils import tree_map

    model = build_model(config)
    if quantize:
        nn.quantize(model, group_size=32, bits=4)
    attach_lora(model, **lora)
    mx.random.seed(7)
    model.update(tree_map(lambda p: mx.random.normal(p.shape) * 0.05, model.trainable_parameters()))
    model.eval()
    return model


def logits(model: Any) -> Any:
    import mlx.core as mx

    out = model(mx.array(TOKENS))
    mx.eval(out)
    return out


def max_diff(a: Any, b: Any) -> float:
    import mlx.core as mx

    return float(mx.abs(a - b).max())


def fresh(config: dict[str, Any], *, quantize: bool = False) -> Any:
    import mlx.nn as nn

    model = build_model(config)
    if quantize:
        nn.quantize(model, group_size=32, bits=4)
    return model


CASES = {
    "dense-dropout": (LLAMA, {"num_layers": 4, "rank": 8, "scale": 7.5, "dropout": 0.1}, False),
    "subset-of-layers": (LLAMA, {"num_layers": 2, "rank": 4, "scale": 20.0}, False),
    "embedding": (
        LLAMA,
        {
            "num_layers": 1,
            "rank": 4,
            "scale": 3.0,
            "keys": ["model.embed_tokens", "self_attn.v_proj"],
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
            "keys": ["self_attn.q_proj", "mlp.down_proj", "model.embed_tokens"],
        },
        False,
    ),
    "moe-switch": (QWEN3_MOE, {"num_layers": 2, "rank": 4, "scale": 5.0}, False),
    "mixtral-switch": (MIXTRAL, {"num_layers": 1, "rank": 2, "scale": 5.0}, False),
    "qlora": (LLAMA, {"num_layers": 2, "rank": 8, "scale": 4.0}, True),
    "moe-qlora": (QWEN3_MOE, {"num_layers": 2, "rank": 4, "scale": 3.0}, True),
    "lm-head": (
        LLAMA,
        {"num_layers": 1, "rank": 4, "scale": 1.5, "keys": ["lm_head", "self_attn.q_proj"]},
        False,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_round_trip_gives_the_same_logits(tmp_path: Path, case: str) -> None:
    import adapterscan.mlx as am

    config, lora, quantize = CASES[case]
    model = trained(config, quantize=quantize, **lora)
    before = logits(model)
    saved = am.save_adapters(model, tmp_path / "a")
    assert saved.ok, [(p.code, p.path) for p in saved.problems]
    reloaded = am.load_adapters(fresh(config, quantize=quantize), tmp_path / "a")
    assert max_diff(before, logits(reloaded)) <= 1e-5
    assert reloaded.training is False
    # Only the adapter stays trainable.
    from mlx.utils import tree_flatten

    trainable = {k for k, _ in tree_flatten(reloaded.trainable_parameters())}
    assert trainable == {k for k in saved.tensors}


def test_config_is_complete_and_live(tmp_path: Path) -> None:
    import adapterscan.mlx as am

    model = trained(LLAMA, num_layers=2, rank=4, scale=7.5, dropout=0.1)
    stale = {
        "rank": 99,
        "lora_parameters": {"rank": 99, "scale": 1.0},
        "fine_tune_type": "full",
        "learning_rate": 1e-4,
    }
    am.save_adapters(model, tmp_path / "a", config=stale)
    cfg = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert cfg["fine_tune_type"] == "lora"
    assert cfg["lora_parameters"]["rank"] == cfg["rank"] == 4
    assert cfg["lora_parameters"]["scale"] == cfg["scale"] == 7.5
    assert cfg["lora_parameters"]["dropout"] == cfg["dropout"] == 0.1  # not 0.09999999999999998
    assert cfg["learning_rate"] == 1e-4
    assert cfg["num_layers"] == 4
    assert cfg["lora_parameters"]["keys"] == sorted(
        cfg["adapterscan"]["modules"],
        key=lambda p: [int(x) if x.isdigit() else x for x in p.split(".")],
    )
    assert len(cfg["lora_parameters"]["keys"]) == 14
    meta = adapterscan.scan(tmp_path / "a").files[0].metadata
    assert meta is not None
    assert meta["adapterscan_save_id"] == cfg["adapterscan"]["save_id"]
    assert meta["base_fingerprint"] == cfg["adapterscan"]["base_fingerprint"]


def test_stock_mlx_lm_loads_what_adapterscan_saves(tmp_path: Path) -> None:
    from mlx_lm.tuner.utils import load_adapters

    import adapterscan.mlx as am

    for name, (config, lora, _) in {
        k: CASES[k] for k in ("dense-dropout", "dora", "moe-switch", "lm-head")
    }.items():
        model = trained(config, **lora)
        before = logits(model)
        am.save_adapters(model, tmp_path / name)
        stock = load_adapters(fresh(config), str(tmp_path / name))
        stock.eval()
        assert max_diff(before, logits(stock)) <= 1e-5, name


def test_adapterscan_loads_what_stock_mlx_lm_saves(tmp_path: Path) -> None:
    import mlx.core as mx
    from mlx.utils import tree_map
    from mlx_lm.tuner.utils import load_adapters

    import adapterscan.mlx as am

    model = build_model(QWEN3_MOE)
    params = attach_lora(model, num_layers=2, rank=4, scale=6.0, dropout=0.05)
    model.update(tree_map(lambda p: mx.random.normal(p.shape) * 0.05, model.trainable_parameters()))
    folder = save_like_trainer(
        model, tmp_path / "stock", fine_tune_type="lora", num_layers=2, lora_parameters=params
    )
    stock = load_adapters(fresh(QWEN3_MOE), str(folder))
    stock.eval()
    ours = am.load_adapters(fresh(QWEN3_MOE), folder)
    assert max_diff(logits(stock), logits(ours)) == 0.0


def test_list_indexed_and_non_language_paths(tmp_path: Path) -> None:
    import mlx.core as mx
    import mlx.nn as nn
    from mlx_lm.tuner.lora import LoRALinear

    import adapterscan.mlx as am

    class Tower(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.merger = nn.Module()
            self.merger.layers = [nn.Linear(8, 8), nn.Linear(8, 4)]

        def __call__(self, x: Any) -> Any:
            for layer in self.merger.layers:
                x = layer(x)
            return x

    def make() -> Any:
        mx.random.seed(3)
        m = nn.Module()
        m.vision_tower = Tower()
        mx.eval(m.parameters())
        return m

    model = make()
    model.freeze()
    model.vision_tower.merger.layers[0] = LoRALinear.from_base(
        model.vision_tower.merger.layers[0], r=2, scale=3.0
    )
    model.vision_tower.merger.layers[0].lora_b = mx.ones((2, 8)) * 0.1
    x = mx.ones((1, 8))
    before = model.vision_tower(x)
    s = am.save_adapters(model, tmp_path / "v")
    assert list(s.modules) == ["vision_tower.merger.layers.0"]
    other = make()
    am.load_adapters(other, tmp_path / "v")
    assert isinstance(other.vision_tower.merger.layers[0], LoRALinear)
    assert not isinstance(other.vision_tower.merger.layers[1], LoRALinear)
    assert max_diff(before, other.vision_tower(x)) == 0.0


def test_reload_into_a_wrapped_model_never_nests(tmp_path: Path) -> None:
    from mlx_lm.tuner.lora import LoRALinear

    import adapterscan.mlx as am

    model = trained(LLAMA, num_layers=1, rank=4, keys=["self_attn.q_proj"])
    before = logits(model)
    am.save_adapters(model, tmp_path / "a")
    am.load_adapters(model, tmp_path / "a")
    q = model.model.layers[3].self_attn.q_proj
    assert isinstance(q, LoRALinear)
    assert not isinstance(q.linear, LoRALinear)
    assert max_diff(before, logits(model)) == 0.0


def test_resave_into_the_folder_it_was_loaded_from(tmp_path: Path) -> None:
    import adapterscan.mlx as am

    model = trained(LLAMA, num_layers=2, rank=4)
    am.save_adapters(model, tmp_path / "a")
    (tmp_path / "a" / "tokenizer.json").write_text("{}")
    other = am.load_adapters(fresh(LLAMA), tmp_path / "a")
    before = logits(other)
    am.save_adapters(other, tmp_path / "a")
    assert (tmp_path / "a" / "tokenizer.json").read_text() == "{}"
    again = am.load_adapters(fresh(LLAMA), tmp_path / "a")
    assert max_diff(before, logits(again)) == 0.0
    assert not [p for p in tmp_path.iterdir() if "adapterscan-tmp" in p.name]


def two_ranks(layer_index: int) -> Any:
    """A llama with LoRA on one layer's q_proj (rank 2, scale 3) and v_proj (rank 6, scale 0.5)."""
    import mlx.core as mx
    from mlx_lm.tuner.lora import LoRALinear

    model = build_model(LLAMA)
    model.freeze()
    layer = model.model.layers[layer_index]
    layer.self_attn.q_proj = LoRALinear.from_base(layer.self_attn.q_proj, r=2, scale=3.0)
    layer.self_attn.v_proj = LoRALinear.from_base(layer.self_attn.v_proj, r=6, scale=0.5)
    layer.self_attn.q_proj.lora_b = mx.ones((2, 64)) * 0.1
    layer.self_attn.v_proj.lora_b = mx.ones((6, 32)) * 0.1
    return model


def test_per_module_ranks_and_scales(tmp_path: Path) -> None:
    import adapterscan.mlx as am

    model = two_ranks(0)
    before = logits(model)
    s = am.save_adapters(model, tmp_path / "a")
    assert s.ok, [(p.code, p.path, p.message) for p in s.problems]
    assert {p: m.rank for p, m in s.modules.items()} == {
        "model.layers.0.self_attn.q_proj": 2,
        "model.layers.0.self_attn.v_proj": 6,
    }
    reloaded = am.load_adapters(fresh(LLAMA), tmp_path / "a")
    assert reloaded.model.layers[0].self_attn.v_proj.scale == 0.5
    assert max_diff(before, logits(reloaded)) == 0.0


def test_legacy_switch_layout_is_reshaped(tmp_path: Path) -> None:
    import mlx.core as mx
    from mlx.utils import tree_flatten

    import adapterscan.mlx as am

    model = trained(QWEN3_MOE, num_layers=1, rank=4, scale=2.0, keys=["mlp.switch_mlp.up_proj"])
    before = logits(model)
    am.save_adapters(model, tmp_path / "a")
    weights = dict(tree_flatten(model.trainable_parameters()))
    legacy = {
        k: (v.reshape(-1, v.shape[-1]) if k.endswith("lora_a") else v) for k, v in weights.items()
    }
    mx.save_safetensors(str(tmp_path / "a" / "adapters.safetensors"), legacy)
    reloaded = am.load_adapters(fresh(QWEN3_MOE), tmp_path / "a")
    assert max_diff(before, logits(reloaded)) == 0.0


def test_no_config_needs_a_scale(tmp_path: Path) -> None:
    import adapterscan.mlx as am

    model = trained(LLAMA, num_layers=1, rank=4, scale=5.0, keys=["self_attn.q_proj"])
    before = logits(model)
    am.save_adapters(model, tmp_path / "a")
    (tmp_path / "a" / "adapter_config.json").unlink()
    with pytest.raises(adapterscan.ConfigError, match="no scale"):
        am.load_adapters(fresh(LLAMA), tmp_path / "a")
    reloaded = am.load_adapters(fresh(LLAMA), tmp_path / "a", scale=5.0)
    assert max_diff(before, logits(reloaded)) == 0.0


def test_qlora_adapter_on_a_float_base_warns(tmp_path: Path) -> None:
    import adapterscan.mlx as am

    model = trained(LLAMA, quantize=True, num_layers=1, rank=4, keys=["self_attn.q_proj"])
    am.save_adapters(model, tmp_path / "q")
    am.load_adapters(fresh(LLAMA, quantize=True), tmp_path / "q")  # same base: silent
    with pytest.warns(adapterscan.BaseMismatchWarning, match="4-bit") as record:
        am.load_adapters(fresh(LLAMA), tmp_path / "q")
    assert [w.filename for w in record] == [__file__]  # points at the caller of load_adapters


def test_layer_wrapped_factors_load_transposed(tmp_path: Path) -> None:
    """`lora_a.weight` (r, in) / `lora_b.weight` (out, r): halves stored as Linear layers."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    import adapterscan.mlx as am

    model = trained(LLAMA, num_layers=1, rank=4, scale=3.0, keys=["self_attn.q_proj"])
    before = logits(model)
    am.save_adapters(model, tmp_path / "a")
    weights = dict(tree_flatten(model.trainable_parameters()))
    layer = {k + ".weight": v.T for k, v in weights.items()}
    mx.save_safetensors(str(tmp_path / "a" / "adapters.safetensors"), layer)
    s = adapterscan.scan(tmp_path / "a")
    assert {m.layout for m in s.modules.values()} == {"mlx_layer"}
    reloaded = am.load_adapters(fresh(LLAMA), tmp_path / "a")
    assert max_diff(before, logits(reloaded)) == 0.0


def test_mlx_vlm_legacy_adapter_into_a_vlm_root(tmp_path: Path) -> None:
    """mlx-vlm's legacy LoRaLayer: `language_model.<path>.A`/`.B` and a flat {rank, alpha,
    dropout} config, whose scale is alpha / rank (as mlx-vlm 0.7.10 still writes and reads it)."""
    import mlx.core as mx
    import mlx.nn as nn
    from mlx.utils import tree_flatten

    import adapterscan.mlx as am

    class Vlm(nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.language_model = inner

        def __call__(self, x: Any) -> Any:
            return self.language_model(x)

    model = Vlm(trained(LLAMA, num_layers=1, rank=4, scale=2.0, keys=["self_attn.q_proj"]))
    before = logits(model)
    weights = dict(tree_flatten(model.trainable_parameters()))
    legacy = {k.replace(".lora_a", ".A").replace(".lora_b", ".B"): v for k, v in weights.items()}
    (tmp_path / "v").mkdir()
    mx.save_safetensors(str(tmp_path / "v" / "adapters.safetensors"), legacy)
    (tmp_path / "v" / "adapter_config.json").write_text(
        json.dumps({"rank": 4, "alpha": 8, "dropout": 0.0})
    )
    with pytest.raises(adapterscan.ConfigError, match="contradicts"):
        am.load_adapters(Vlm(fresh(LLAMA)), tmp_path / "v", scale=3.0)
    reloaded = am.load_adapters(Vlm(fresh(LLAMA)), tmp_path / "v")
    assert max_diff(before, logits(reloaded)) == 0.0


def test_older_from_base_signature(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """mlx-lm versions whose from_base takes only (layer, rank): scale and dropout set after."""
    from mlx_lm.tuner.lora import LoRALinear

    import adapterscan.mlx as am
    from adapterscan.mlx import _load

    calls: list[int] = []

    class OldLoRALinear(LoRALinear):
        @staticmethod
        def from_base(linear: Any, r: int = 8) -> Any:  # type: ignore[override]
            calls.append(r)
            return LoRALinear.from_base(linear, r=r, scale=20.0, dropout=0.0)

    classes = _load._wrapper_classes()
    monkeypatch.setattr(_load, "_wrapper_classes", lambda: {**classes, "LoRALinear": OldLoRALinear})
    model = trained(LLAMA, num_layers=1, rank=4, scale=3.0, dropout=0.2, keys=["self_attn.q_proj"])
    before = logits(model)
    am.save_adapters(model, tmp_path / "a")
    reloaded = am.load_adapters(fresh(LLAMA), tmp_path / "a")
    assert calls == [4]  # the loader built the wrapper with the old signature
    q = reloaded.model.layers[3].self_attn.q_proj
    assert q.scale == 3.0
    assert round(1 - q.dropout._p_1, 6) == 0.2
    assert max_diff(before, logits(reloaded)) == 0.0
