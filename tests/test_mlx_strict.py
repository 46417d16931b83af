"""What loaders let through silently becomes a typed error, raised before the model is touched."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import adapterscan
from producers import LLAMA, attach_lora, build_model, kill_during_writes

pytestmark = pytest.mark.mlx

Q = "model.layers.3.self_attn.q_proj"
V = "model.layers.3.self_attn.v_proj"


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    import mlx.core as mx
    from mlx.utils import tree_map

    import adapterscan.mlx as am

    model = build_model(LLAMA)
    attach_lora(
        model, num_layers=1, rank=4, scale=5.0, keys=["self_attn.q_proj", "self_attn.v_proj"]
    )
    model.update(tree_map(lambda p: mx.random.normal(p.shape) * 0.05, model.trainable_parameters()))
    am.save_adapters(model, tmp_path / "a")
    return tmp_path / "a"


def edit_weights(folder: Path, change: Any) -> None:
    import mlx.core as mx

    path = str(folder / "adapters.safetensors")
    mx.save_safetensors(path, change(dict(mx.load(path))))


def edit_config(folder: Path, change: Any) -> None:
    path = folder / "adapter_config.json"
    cfg = json.loads(path.read_text())
    change(cfg)
    path.write_text(json.dumps(cfg))


def refused(folder: Path) -> adapterscan.Report:
    from mlx.utils import tree_flatten

    import adapterscan.mlx as am

    model = build_model(LLAMA)
    before = dict(tree_flatten(model.parameters()))
    with pytest.raises(adapterscan.AdapterMismatchError) as info:
        am.load_adapters(model, folder)
    # Nothing was wrapped or overwritten.
    after = dict(tree_flatten(model.parameters()))
    assert after.keys() == before.keys()
    assert all(after[k] is before[k] for k in before)
    return info.value.report


def test_missing_lora_a(saved: Path) -> None:
    edit_weights(saved, lambda w: {k: v for k, v in w.items() if k != f"{Q}.lora_a"})
    report = refused(saved)
    assert report.missing == [f"{Q}.lora_a"]


def test_missing_lora_b(saved: Path) -> None:
    edit_weights(saved, lambda w: {k: v for k, v in w.items() if k != f"{V}.lora_b"})
    assert refused(saved).missing == [f"{V}.lora_b"]


def test_dora_declared_without_magnitudes(saved: Path) -> None:
    edit_config(saved, lambda c: c.update(fine_tune_type="dora"))
    report = refused(saved)
    assert report.missing == [f"{Q}.m", f"{V}.m"]


def test_base_weight_in_adapter(saved: Path) -> None:
    import mlx.core as mx

    edit_weights(saved, lambda w: {**w, "model.norm.weight": mx.ones((64,))})
    report = refused(saved)
    assert [(p.code, p.path) for p in report.problems if p.severity == "error"] == [
        ("non_adapter_tensor", "model.norm.weight")
    ]


def test_junk_keys(saved: Path) -> None:
    edit_config(saved, lambda c: c["lora_parameters"].update(keys=["auto"]))
    codes = {p.code for p in refused(saved).problems}
    assert {"config_key_unsaved", "module_not_in_keys"} <= codes


def test_wrong_rank_in_config(saved: Path) -> None:
    def change(c: dict[str, Any]) -> None:
        c["lora_parameters"]["rank"] = c["rank"] = 8
        for m in c["adapterscan"]["modules"].values():
            m["rank"] = 8

    edit_config(saved, change)
    assert len(refused(saved).shape_mismatch) == 4


def test_scale_missing_with_paths(saved: Path) -> None:
    import adapterscan.mlx as am

    def change(c: dict[str, Any]) -> None:
        del c["lora_parameters"]["scale"]
        del c["scale"]
        for m in c["adapterscan"]["modules"].values():
            del m["scale"]

    edit_config(saved, change)
    report = refused(saved)
    assert "config_scale_missing" in {p.code for p in report.problems}
    # Without strict, the missing scale is still an error, not a silent 1.0.
    with pytest.raises(adapterscan.ConfigError, match="no scale"):
        am.load_adapters(build_model(LLAMA), saved, strict=False)


def test_non_finite_values_with_verify_data(saved: Path) -> None:
    import mlx.core as mx

    import adapterscan.mlx as am

    edit_weights(saved, lambda w: {**w, f"{Q}.lora_b": w[f"{Q}.lora_b"] * mx.array(float("nan"))})
    am.load_adapters(build_model(LLAMA), saved)  # loads: the values are not checked by default
    with pytest.raises(adapterscan.AdapterDataError) as info:
        am.load_adapters(build_model(LLAMA), saved, verify_data=True)
    assert info.value.tensors == [f"{Q}.lora_b"]


def test_not_strict_loads_what_fits(saved: Path) -> None:
    from mlx_lm.tuner.lora import LoRALinear

    import adapterscan.mlx as am

    edit_weights(saved, lambda w: {k: v for k, v in w.items() if k != f"{Q}.lora_b"})
    with pytest.warns(adapterscan.PartialLoadWarning, match=rf"skipped, .*: {Q}$"):
        model, report = am.load_adapters(
            build_model(LLAMA), saved, strict=False, return_report=True
        )
    assert report.missing == [f"{Q}.lora_b"]
    layer = model.model.layers[3].self_attn
    assert isinstance(layer.v_proj, LoRALinear)
    assert not isinstance(layer.q_proj, LoRALinear)


def test_nothing_to_save(tmp_path: Path) -> None:
    import mlx.core as mx
    import mlx.nn as nn

    import adapterscan.mlx as am

    model = build_model(LLAMA)
    with pytest.raises(adapterscan.SaveError, match="save_trainable_adapters"):
        am.save_adapters(model, tmp_path / "a")
    assert not (tmp_path / "a").exists()
    # Look-alikes and half pairs are not adapters.
    model.lora_router = nn.Linear(4, 4)
    model.model.layers[0].self_attn.q_proj.lora_a = mx.zeros((64, 4))
    with pytest.raises(adapterscan.SaveError):
        am.save_adapters(model, tmp_path / "a")
    assert not (tmp_path / "a").exists()


def test_only_adapter_tensors_are_saved(tmp_path: Path) -> None:
    import adapterscan.mlx as am

    model = build_model(LLAMA)
    attach_lora(model, num_layers=1, rank=4, keys=["self_attn.q_proj"])
    model.unfreeze()  # base weights trainable too: still never exported
    s = am.save_adapters(model, tmp_path / "a")
    assert set(s.tensors) == {f"{Q}.lora_a", f"{Q}.lora_b"}


def test_trainable_adapters_round_trip(tmp_path: Path) -> None:
    import mlx.core as mx
    from mlx.utils import tree_flatten

    import adapterscan.mlx as am

    model = build_model(LLAMA)
    attach_lora(model, num_layers=1, rank=4, keys=["self_attn.q_proj"])
    model.model.norm.unfreeze()
    model.model.norm.weight = model.model.norm.weight * 1.5
    model.model.layers[3].self_attn.q_proj.lora_b = mx.ones((4, 64)) * 0.02
    model.eval()
    x = mx.array([[1, 2, 3]])
    before = model(x)
    s = am.save_trainable_adapters(model, tmp_path / "t")
    cfg = json.loads((tmp_path / "t" / "adapter_config.json").read_text())
    assert cfg["adapterscan"]["full_tensors"] == ["model.norm.weight"]
    assert s.ok, [(p.code, p.path) for p in s.problems]
    assert f"{Q}.linear.weight" not in s.tensors
    reloaded = am.load_adapters(build_model(LLAMA), tmp_path / "t")
    assert float(mx.abs(before - reloaded(x)).max()) == 0.0
    trainable = {k for k, _ in tree_flatten(reloaded.trainable_parameters())}
    assert trainable == {f"{Q}.lora_a", f"{Q}.lora_b", "model.norm.weight"}


KILL_SCRIPT = """
import sys, time
sys.path.insert(0, {tests!r})
import mlx.core as mx
from mlx.utils import tree_map
import adapterscan.mlx as am
from producers import LLAMA, attach_lora, build_model

config = dict(LLAMA, hidden_size=512, intermediate_size=1024)
config.update(num_attention_heads=8, num_key_value_heads=8)
model = build_model(config)
attach_lora(model, num_layers=4, rank=64)
version = 0
while True:
    version += 1
    model.update(tree_map(lambda p: mx.full(p.shape, float(version)), model.trainable_parameters()))
    am.save_adapters(model, {folder!r}, config={{"version": version}})
    print(version, flush=True)
"""


@pytest.mark.timeout(600)
def test_killed_saves_leave_old_or_new_never_a_mix(tmp_path: Path) -> None:
    """SIGKILL a process that saves over and over, at many points of the write."""
    import mlx.core as mx

    folder = tmp_path / "adapter"
    script = KILL_SCRIPT.format(tests=str(Path(__file__).parent), folder=str(folder))
    seen_versions: set[int] = set()
    kills = mid_write = 0
    for attempt in range(24):
        # First save completes; then kill at a delay spread over the next saves.
        kill_during_writes([script], 0.01 + 0.017 * attempt)
        kills += 1
        staging = [p for p in tmp_path.iterdir() if "adapterscan-tmp" in p.name]
        mid_write += bool(staging)
        s = adapterscan.scan(folder)
        cfg = s.config
        assert cfg is not None
        meta = s.files[0].metadata
        assert meta is not None
        assert meta["adapterscan_save_id"] == cfg["adapterscan"]["save_id"], (
            "weights and config differ"
        )
        version = cfg["version"]
        weights = mx.load(str(folder / "adapters.safetensors"))
        value = float(weights["model.layers.3.self_attn.q_proj.lora_b"][0, 0])
        assert value == float(version), "config and tensors come from different saves"
        assert s.ok
        assert not [p for p in folder.iterdir() if p.name.startswith(".")]
        seen_versions.add(version)
    assert kills == 24
    assert mid_write >= 3, "the kills should land inside writes too"
    assert len(seen_versions) > 1


@pytest.mark.parametrize("strict", [True, False])
def test_a_model_checkpoint_is_not_loaded_as_an_adapter(tmp_path: Path, strict: bool) -> None:
    """A base model folder (mlx-lm's save_model + config.json) holds no LoRA factor: loading it
    would overwrite every weight. It is refused, and the model is left as it was."""
    from mlx.utils import tree_flatten, tree_map
    from mlx_lm.utils import save_config, save_model

    from adapterscan.mlx import load_adapters

    other = build_model(LLAMA)
    other.update(tree_map(lambda x: x + 1, other.parameters()))
    save_model(tmp_path / "base", other)
    save_config(dict(LLAMA), tmp_path / "base" / "config.json")
    model = build_model(LLAMA)
    before = dict(tree_flatten(model.parameters()))
    with pytest.raises(adapterscan.AdapterMismatchError, match="fine_tune_type: full"):
        load_adapters(model, tmp_path / "base", strict=strict)
    after = dict(tree_flatten(model.parameters()))
    assert after.keys() == before.keys()
    assert all(after[k] is before[k] for k in before)
