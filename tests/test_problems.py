"""Problems found in real mlx-lm adapters that were damaged the ways real ones are."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import adapterscan
from producers import LLAMA, attach_lora, build_model, save_like_trainer

pytestmark = pytest.mark.mlx

Q = "model.layers.3.self_attn.q_proj"
V = "model.layers.3.self_attn.v_proj"


@pytest.fixture
def adapter(tmp_path: Path) -> Path:
    model = build_model(LLAMA)
    params = attach_lora(
        model, num_layers=1, rank=4, scale=5.0, keys=["self_attn.q_proj", "self_attn.v_proj"]
    )
    return save_like_trainer(
        model, tmp_path / "a", fine_tune_type="lora", num_layers=1, lora_parameters=params
    )


def edit_weights(folder: Path, change: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    import mlx.core as mx

    path = str(folder / "adapters.safetensors")
    mx.save_safetensors(path, change(dict(mx.load(path))))


def edit_config(folder: Path, change: Callable[[dict[str, Any]], None]) -> None:
    path = folder / "adapter_config.json"
    cfg = json.loads(path.read_text())
    change(cfg)
    path.write_text(json.dumps(cfg))


def found(folder: Path) -> list[tuple[str, str | None]]:
    return [(p.code, p.path) for p in adapterscan.scan(folder).problems]


def test_clean(adapter: Path) -> None:
    assert found(adapter) == []


def test_missing_lora_b(adapter: Path) -> None:
    edit_weights(adapter, lambda w: {k: v for k, v in w.items() if k != f"{Q}.lora_b"})
    assert found(adapter) == [("unpaired_factor", Q)]


def test_missing_lora_a(adapter: Path) -> None:
    edit_weights(adapter, lambda w: {k: v for k, v in w.items() if k != f"{V}.lora_a"})
    assert found(adapter) == [("unpaired_factor", V)]


def test_base_weight_inside_lora_artifact(adapter: Path) -> None:
    import mlx.core as mx

    edit_weights(adapter, lambda w: {**w, "model.norm.weight": mx.ones((64,))})
    assert found(adapter) == [("non_adapter_tensor", "model.norm.weight")]


def test_junk_keys(adapter: Path) -> None:
    edit_config(adapter, lambda c: c["lora_parameters"].update(keys=["auto"]))
    assert found(adapter) == [
        ("config_key_unsaved", "auto"),
        ("module_not_in_keys", Q),
        ("module_not_in_keys", V),
    ]


def test_empty_keys(adapter: Path) -> None:
    edit_config(adapter, lambda c: c["lora_parameters"].update(keys=[]))
    assert found(adapter) == [("config_keys_empty", None)]


def test_dora_declared_without_magnitudes(adapter: Path) -> None:
    edit_config(adapter, lambda c: c.update(fine_tune_type="dora"))
    assert found(adapter) == [("dora_magnitude_missing", Q), ("dora_magnitude_missing", V)]


def test_alpha_instead_of_scale(adapter: Path) -> None:
    def change(c: dict[str, Any]) -> None:
        del c["lora_parameters"]["scale"]
        c["lora_parameters"]["alpha"] = 16

    edit_config(adapter, change)
    assert found(adapter) == [("config_alpha_instead_of_scale", None)]


def test_rank_disagreements(adapter: Path) -> None:
    edit_config(adapter, lambda c: c.update(rank=16))
    assert found(adapter) == [("config_rank_conflict", None)]
    edit_config(adapter, lambda c: (c.pop("rank"), c["lora_parameters"].update(rank=8)))
    assert found(adapter) == [("config_rank_mismatch", Q), ("config_rank_mismatch", V)]


def test_missing_required_fields(adapter: Path) -> None:
    edit_config(adapter, lambda c: c.pop("num_layers"))
    assert found(adapter) == [("config_field_missing", None)]


def test_full_declared_with_lora_tensors(adapter: Path) -> None:
    edit_config(adapter, lambda c: c.update(fine_tune_type="full"))
    assert found(adapter) == [("fine_tune_type_mismatch", None)]


def test_legacy_config_is_recognised(adapter: Path) -> None:
    def change(c: dict[str, Any]) -> None:
        c["lora_layers"] = c.pop("num_layers")
        c.pop("fine_tune_type")
        c["use_dora"] = False

    edit_config(adapter, change)
    s = adapterscan.scan(adapter)
    assert s.config_schema == "mlx_legacy"
    assert [p.code for p in s.problems] == ["legacy_config"]
    assert s.fine_tune_type == "lora"


def test_unloadable_layer_count(adapter: Path, tmp_path: Path) -> None:
    model = build_model(LLAMA)
    params = attach_lora(model, num_layers=2, rank=4, keys=["self_attn.q_proj"])
    folder = save_like_trainer(
        model, tmp_path / "b", fine_tune_type="lora", num_layers=1, lora_parameters=params
    )
    assert found(folder) == [("config_num_layers_mismatch", None)]


def test_unsloth_style_config(adapter: Path) -> None:
    """Unsloth writes mlx-lm's schema plus full module paths, top-level mirrors and peft_type."""
    paths = [Q, V]

    def unsloth(c: dict[str, Any]) -> None:
        c.update(
            peft_type="LORA",
            rank=4,
            scale=5.0,
            dropout=0.0,
            unsloth_mlx_lora_module_paths=paths,
            unsloth_mlx_lora_module_ranks={Q: 4, V: 4},
        )
        c["lora_parameters"]["keys"] = paths

    edit_config(adapter, unsloth)
    s = adapterscan.scan(adapter)
    assert s.config_schema == "mlx"
    assert s.problems == []
    # Paths stored as a bare string name one module, not one per character.
    edit_config(adapter, lambda c: c.update(unsloth_mlx_lora_module_paths=Q))
    assert found(adapter) == [("config_paths_conflict", None)]
    edit_config(adapter, lambda c: c.update(unsloth_mlx_lora_module_ranks={Q: 8}))
    codes = found(adapter)
    assert ("config_rank_mismatch", Q) in codes
