"""`check`: adapters from mlx-lm's classes against bases saved by mlx-lm (and HF layouts)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import adapterscan
from adapterscan.cli import main
from producers import (
    LLAMA,
    MIXTRAL,
    QWEN3_MOE,
    attach_lora,
    build_model,
    expected_modules,
    save_base,
    save_hf_per_expert_base,
    save_like_trainer,
    save_quantized_base,
)

pytestmark = pytest.mark.mlx


def adapter_for(
    tmp_path: Path,
    config: dict[str, Any],
    *,
    name: str = "adapter",
    num_layers: int = 2,
    fine_tune_type: str = "lora",
    quantize: bool = False,
    **lora: Any,
) -> tuple[Any, Path]:
    import mlx.nn as nn

    model = build_model(config)
    if quantize:
        nn.quantize(model, group_size=32, bits=4)
    params = attach_lora(model, num_layers=num_layers, dora=fine_tune_type == "dora", **lora)
    folder = save_like_trainer(
        model,
        tmp_path / name,
        fine_tune_type=fine_tune_type,
        num_layers=num_layers,
        lora_parameters=params,
    )
    return model, folder


@pytest.fixture
def llama_base(tmp_path: Path) -> Path:
    return save_base(build_model(LLAMA), LLAMA, tmp_path / "llama-base")


def keys_of(folder: Path) -> set[str]:
    return set(adapterscan.scan(folder).tensors)


def test_base_folder_table_matches_the_live_model(llama_base: Path) -> None:
    from adapterscan.mlx import expected_modules as live

    from_folder = adapterscan.read_base(llama_base)
    from_model = live(build_model(LLAMA))
    assert from_folder.targets() == from_model.targets()
    assert from_folder.layers() == ("model.layers", 4)


@pytest.mark.parametrize(
    "config", [LLAMA, QWEN3_MOE, MIXTRAL], ids=["llama", "qwen3_moe", "mixtral"]
)
def test_adapter_fits_its_base(tmp_path: Path, config: dict[str, Any]) -> None:
    base = save_base(build_model(config), config, tmp_path / "base")
    _, folder = adapter_for(tmp_path, config, rank=4)
    report = adapterscan.check(folder, base)
    assert report.ok, report.to_dict()
    assert (report.missing, report.unexpected, report.shape_mismatch) == ([], [], [])


@pytest.mark.parametrize("config", [QWEN3_MOE, MIXTRAL], ids=["qwen3_moe", "mixtral"])
def test_hf_per_expert_base(tmp_path: Path, config: dict[str, Any]) -> None:
    base = save_hf_per_expert_base(build_model(config), config, tmp_path / "hf")
    table = adapterscan.read_base(base)
    switch = [t for t in table.targets() if t[1] == "switch"]
    assert len(switch) == 2 * 3
    assert all(t[4] == 4 for t in switch)
    _, folder = adapter_for(tmp_path, config, rank=4)
    report = adapterscan.check(folder, base)
    assert report.ok, report.to_dict()


def test_quantized_base_gives_true_dims(tmp_path: Path) -> None:
    import adapterscan.mlx

    qmodel = save_quantized_base(LLAMA, tmp_path / "q4")
    float_table = adapterscan.mlx.expected_modules(build_model(LLAMA)).targets()
    assert adapterscan.read_base(tmp_path / "q4").targets() == float_table
    assert adapterscan.mlx.expected_modules(qmodel).targets() == float_table
    # A QLoRA adapter (trained on the 4-bit model) fits both bases: neither is recorded in it.
    _, folder = adapter_for(tmp_path, LLAMA, quantize=True, rank=8)
    assert adapterscan.check(folder, tmp_path / "q4").ok
    assert adapterscan.check(folder, save_base(build_model(LLAMA), LLAMA, tmp_path / "f")).ok


def test_live_model_agrees_with_base_folder(tmp_path: Path, llama_base: Path) -> None:
    import mlx.core as mx

    import adapterscan.mlx

    model, folder = adapter_for(tmp_path, LLAMA, rank=4)
    # Break it: drop one factor so the reports have something to say.
    weights = dict(mx.load(str(folder / "adapters.safetensors")))
    weights.pop("model.layers.3.mlp.up_proj.lora_a")
    mx.save_safetensors(str(folder / "adapters.safetensors"), weights)
    from_folder = adapterscan.check(folder, llama_base).to_dict()
    assert from_folder["missing"] == ["model.layers.3.mlp.up_proj.lora_a"]
    # A fresh model and the wrapped training model itself give the same answer.
    assert adapterscan.mlx.check(build_model(LLAMA), folder).to_dict() == from_folder
    assert adapterscan.mlx.check(model, folder).to_dict() == from_folder


def test_wrong_rank_in_config(tmp_path: Path, llama_base: Path) -> None:
    model, folder = adapter_for(tmp_path, LLAMA, rank=4)
    cfg = json.loads((folder / "adapter_config.json").read_text())
    cfg["lora_parameters"]["rank"] = 8
    (folder / "adapter_config.json").write_text(json.dumps(cfg))
    report = adapterscan.check(folder, llama_base)
    expected = {}
    for path, m in expected_modules(model).items():
        expected[f"{path}.lora_a"] = ((m["in_dims"], 4), (m["in_dims"], 8))
        expected[f"{path}.lora_b"] = ((4, m["out_dims"]), (8, m["out_dims"]))
    assert {x.key: (x.saved, x.expected) for x in report.shape_mismatch} == expected
    assert (report.missing, report.unexpected) == ([], [])
    assert not report.ok


def test_adapter_for_a_wider_model(tmp_path: Path, llama_base: Path) -> None:
    wide_config = {**LLAMA, "hidden_size": 128, "intermediate_size": 96}
    wide, folder = adapter_for(tmp_path, wide_config, rank=4)
    narrow = {p: m for p, m in expected_modules(wide).items()}
    base_dims = {p: (i, o) for p, _, i, o, _ in adapterscan.read_base(llama_base).targets()}
    want = set()
    for path, m in narrow.items():
        if m["in_dims"] != base_dims[path][0]:
            want.add(f"{path}.lora_a")
        if m["out_dims"] != base_dims[path][1]:
            want.add(f"{path}.lora_b")
    report = adapterscan.check(folder, llama_base)
    assert {x.key for x in report.shape_mismatch} == want
    assert len(want) > 10
    assert (report.missing, report.unexpected) == ([], [])


def test_adapter_for_more_layers_than_the_base(tmp_path: Path) -> None:
    small = {**LLAMA, "num_hidden_layers": 2}
    base = save_base(build_model(small), small, tmp_path / "small")
    _, folder = adapter_for(tmp_path, LLAMA, num_layers=4, rank=4)
    report = adapterscan.check(folder, base)
    assert set(report.unexpected) == {
        k for k in keys_of(folder) if k.startswith(("model.layers.2.", "model.layers.3."))
    }
    assert report.missing == []
    assert report.shape_mismatch == []


@pytest.mark.parametrize("leaf", ["lora_a", "lora_b"])
def test_missing_factor(tmp_path: Path, llama_base: Path, leaf: str) -> None:
    import mlx.core as mx

    _, folder = adapter_for(tmp_path, LLAMA, rank=4)
    key = f"model.layers.2.self_attn.k_proj.{leaf}"
    weights = dict(mx.load(str(folder / "adapters.safetensors")))
    del weights[key]
    mx.save_safetensors(str(folder / "adapters.safetensors"), weights)
    report = adapterscan.check(folder, llama_base)
    assert report.missing == [key]
    assert report.unexpected == []
    assert report.shape_mismatch == []
    assert "unpaired_factor" in [p.code for p in report.problems]


def test_missing_dora_magnitude(tmp_path: Path, llama_base: Path) -> None:
    import mlx.core as mx

    _, folder = adapter_for(
        tmp_path, LLAMA, fine_tune_type="dora", rank=4, keys=["self_attn.q_proj"]
    )
    weights = dict(mx.load(str(folder / "adapters.safetensors")))
    del weights["model.layers.3.self_attn.q_proj.m"]
    mx.save_safetensors(str(folder / "adapters.safetensors"), weights)
    report = adapterscan.check(folder, llama_base)
    assert report.missing == ["model.layers.3.self_attn.q_proj.m"]
    assert (report.unexpected, report.shape_mismatch) == ([], [])


def test_layers_promised_by_the_config_but_not_saved(tmp_path: Path, llama_base: Path) -> None:
    import mlx.core as mx

    _, folder = adapter_for(tmp_path, LLAMA, rank=4, keys=["self_attn.q_proj", "self_attn.v_proj"])
    weights = dict(mx.load(str(folder / "adapters.safetensors")))
    weights = {k: v for k, v in weights.items() if ".layers.2." not in k}
    mx.save_safetensors(str(folder / "adapters.safetensors"), weights)
    report = adapterscan.check(folder, llama_base)
    assert report.missing == [
        "model.layers.2.self_attn.q_proj.lora_a",
        "model.layers.2.self_attn.q_proj.lora_b",
        "model.layers.2.self_attn.v_proj.lora_a",
        "model.layers.2.self_attn.v_proj.lora_b",
    ]


def test_prefix_mismatch_is_one_problem(tmp_path: Path, llama_base: Path) -> None:
    import mlx.core as mx

    _, folder = adapter_for(tmp_path, LLAMA, rank=4, keys=["self_attn.q_proj"])
    weights = dict(mx.load(str(folder / "adapters.safetensors")))
    mx.save_safetensors(
        str(folder / "adapters.safetensors"),
        {f"language_model.{k}": v for k, v in weights.items()},
    )
    report = adapterscan.check(folder, llama_base)
    assert set(report.unexpected) == {f"language_model.{k}" for k in weights}
    prefix = [p for p in report.problems if p.code == "prefix_mismatch"]
    assert len(prefix) == 1
    assert "`language_model.`" in prefix[0].message
    assert "strip it" in prefix[0].message
    # The config's relative keys promise q_proj in the last 2 layers: those are missing.
    assert report.missing == [
        "model.layers.2.self_attn.q_proj.lora_a",
        "model.layers.2.self_attn.q_proj.lora_b",
        "model.layers.3.self_attn.q_proj.lora_a",
        "model.layers.3.self_attn.q_proj.lora_b",
    ]


def test_peft_orientation_under_mlx_names(tmp_path: Path, llama_base: Path) -> None:
    import mlx.core as mx

    _, folder = adapter_for(tmp_path, LLAMA, rank=4, keys=["self_attn.q_proj", "mlp.down_proj"])
    weights = dict(mx.load(str(folder / "adapters.safetensors")))
    mx.save_safetensors(str(folder / "adapters.safetensors"), {k: v.T for k, v in weights.items()})
    report = adapterscan.check(folder, llama_base)
    assert {m.key: (m.saved, m.expected) for m in report.shape_mismatch} == {
        k: (tuple(v.T.shape), tuple(v.shape)) for k, v in weights.items()
    }
    flipped = {p.path for p in report.problems if p.code == "orientation_flipped"}
    assert flipped == {
        f"model.layers.{i}.{m}" for i in (2, 3) for m in ("self_attn.q_proj", "mlp.down_proj")
    }


def test_cli_check_exit_codes_and_json(
    tmp_path: Path, llama_base: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, folder = adapter_for(tmp_path, LLAMA, rank=4)
    assert main(["check", str(folder), "--base", str(llama_base), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out) == ["ok", "missing", "unexpected", "shape_mismatch", "problems"]
    assert out["ok"] is True
    small = {**LLAMA, "num_hidden_layers": 2}
    base2 = save_base(build_model(small), small, tmp_path / "small")
    assert main(["check", str(folder), "--base", str(base2)]) == 1
    text = capsys.readouterr().out
    assert "does not fit" in text
    assert "unexpected (28)" in text
    assert main(["check", str(folder), "--base", str(tmp_path / "nothing")]) == 2


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="needs /proc/self/io")
def test_check_reads_no_tensor_bytes(tmp_path: Path, llama_base: Path) -> None:
    _, folder = adapter_for(tmp_path, LLAMA, rank=4)
    # Everything a check may read: the configs, and the length prefix and header of each file.
    sizes = 0
    for f in [*llama_base.iterdir(), *folder.iterdir()]:
        if f.suffix == ".json":
            sizes += f.stat().st_size
        elif f.suffix == ".safetensors":
            sizes += 8 + int.from_bytes(f.read_bytes()[:8], "little")
    code = f"""
import adapterscan
def rchar():
    return int(dict(l.split(": ") for l in open("/proc/self/io").read().splitlines())["rchar"])
adapterscan.check({str(folder)!r}, {str(llama_base)!r})
before = rchar()
r = adapterscan.check({str(folder)!r}, {str(llama_base)!r})
print(rchar() - before, r.ok)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    read, ok = out.stdout.split()
    assert ok == "True"
    data = sum(f.stat().st_size for f in [*llama_base.iterdir(), *folder.iterdir()])
    assert int(read) <= sizes + 8192
    assert int(read) < data // 10
