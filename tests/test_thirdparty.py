"""Adapters written by third-party MLX producers with their own code (mlx-vlm, mlx-lm-lora,
mlx-tune; ``tests/fixtures/thirdparty``, made by ``make_*.py``, versions in ``versions.json``).
``expected.json`` beside each holds what the producer's live objects said: the modules it wrapped
with their rank, scale and dropout, and logits of a fixed input after its own reload."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

import adapterscan

FIXTURES = Path(__file__).parent / "fixtures" / "thirdparty"
ADAPTERS = sorted(p.name for p in FIXTURES.iterdir() if (p / "expected.json").exists())


def _expected(name: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((FIXTURES / name / "expected.json").read_text())
    return result


@pytest.mark.parametrize("name", ADAPTERS)
def test_modules_ranks_and_settings_are_the_producers(name: str) -> None:
    want = _expected(name)["modules"]
    s = adapterscan.scan(FIXTURES / name)
    assert sorted(s.modules) == sorted(want)
    for path, m in want.items():
        assert s.modules[path].rank == m["rank"], path
        assert s.modules[path].variant == ("dora" if "DoRA" in m["class"] else "lora"), path
        scale, dropout = s.module_settings[path]
        assert scale == pytest.approx(m["scale"]), path
        assert dropout == pytest.approx(m["dropout"]), path


def test_mlx_lm_lora_fused_model_beside_the_adapter() -> None:
    s = adapterscan.scan(FIXTURES / "mlxlmlora-lora")
    assert s.files[0].path.endswith("adapters.safetensors")
    assert [p.code for p in s.problems if p.code == "model_in_adapter_folder"]
    assert not s.errors, s.errors


@pytest.mark.parametrize(
    ("name", "field"),
    [("mlxlmlora-dora", "lora_parameters.use_dora"), ("mlxtune-dora", "declares")],
)
def test_dora_recorded_as_lora_is_named_and_repaired(tmp_path: Path, name: str, field: str) -> None:
    s = adapterscan.scan(FIXTURES / name)
    unexpected = [p for p in s.problems if p.code == "dora_magnitude_unexpected"]
    assert unexpected
    assert field in unexpected[0].message
    folder = tmp_path / name
    shutil.copytree(FIXTURES / name, folder)
    repaired = adapterscan.repair(folder)
    assert repaired.ok, repaired.problems
    assert repaired.fine_tune_type == "dora"


def test_mlx_vlm_legacy_scale_is_alpha_over_rank() -> None:
    s = adapterscan.scan(FIXTURES / "mlxvlm-legacy")
    assert {m.layout for m in s.modules.values()} == {"mlx_vlm_legacy"}
    legacy = [p for p in s.problems if p.code == "legacy_config"]
    assert legacy
    assert "alpha / rank" in legacy[0].message


def test_mlx_vlm_base_quantization_is_reported() -> None:
    s = adapterscan.scan(FIXTURES / "mlxvlm-q4")
    assert [(p.code, p.severity) for p in s.problems if p.code == "base_quantization_required"] == [
        ("base_quantization_required", "warning")
    ]


def _llama_base() -> Any:
    from mlx_lm.utils import load_model

    model, _ = load_model(FIXTURES / "llama-base")
    return model


def _first8(model: Any, tokens: list[list[int]]) -> list[float]:
    import mlx.core as mx

    out = model(mx.array(tokens))
    return [float(x) for x in out[0, -1, :8]]


@pytest.mark.mlx
@pytest.mark.parametrize(
    "name", ["mlxlmlora-lora", "mlxtune-lora", "mlxlmlora-dora", "mlxtune-dora"]
)
def test_load_reproduces_the_producers_live_logits(tmp_path: Path, name: str) -> None:
    from adapterscan.mlx import load_adapters

    expected = _expected(name)
    folder = tmp_path / name
    shutil.copytree(FIXTURES / name, folder)
    if "dora" in name:  # the producer cannot reload its own DoRA adapter; repaired, it loads
        adapterscan.repair(folder)
    model = load_adapters(_llama_base(), folder)
    got = _first8(model, expected["tokens"])
    assert got == pytest.approx(expected["logits_last_first8_live"], abs=1e-4)


@pytest.mark.mlx
def test_a_float_model_is_refused_for_a_quantized_base_adapter() -> None:
    """mlx-vlm's base_quantization names the VLM's modules (language_model...): a model with
    those modules unquantized is refused before anything changes; quantized so, it loads."""
    import mlx.nn as nn
    from mlx.utils import tree_flatten
    from mlx_lm.utils import _get_classes

    from adapterscan.mlx import load_adapters

    text = json.loads((FIXTURES / "mlxvlm-base" / "config.json").read_text())["text_config"]
    model_class, args_class = _get_classes(config=text)

    class Vlm(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.language_model = model_class(args_class.from_dict(text))

    model = Vlm()
    before = dict(tree_flatten(model.parameters()))
    with pytest.raises(adapterscan.AdapterMismatchError, match="base_quantization"):
        load_adapters(model, FIXTURES / "mlxvlm-q4")
    after = dict(tree_flatten(model.parameters()))
    assert all(after[k] is before[k] for k in before)
    wanted = json.loads((FIXTURES / "mlxvlm-q4" / "adapter_config.json").read_text())[
        "base_quantization"
    ]
    nn.quantize(model, group_size=32, bits=4, class_predicate=lambda p, m: p in wanted)
    load_adapters(model, FIXTURES / "mlxvlm-q4")
