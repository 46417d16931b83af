"""`--verify-data`: the one pass that reads tensor values."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import adapterscan
from adapterscan.cli import main
from producers import save_numpy


def adapter(folder: Path) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    t = {
        "m.q.lora_a": rng.standard_normal((16, 4)).astype(np.float32),
        "m.q.lora_b": rng.standard_normal((4, 16)).astype(np.float32),
        "m.v.lora_a": rng.standard_normal((16, 4)).astype(np.float16),
        "m.v.lora_b": np.zeros((4, 8), np.float16),
        "m.k.lora_a": rng.standard_normal((16, 4)).astype(np.float64),
        "m.k.lora_b": rng.standard_normal((4, 8)).astype(np.float64),
    }
    t["m.k.lora_b"][1, 2] = np.nan
    t["m.k.lora_b"][0, 0] = np.inf
    save_numpy(folder / "adapters.safetensors", t)
    return t


def test_values_norms_and_zero_factors(tmp_path: Path) -> None:
    t = adapter(tmp_path)
    seen: list[tuple[int, int]] = []
    report = adapterscan.verify_data(
        tmp_path, progress=lambda done, total: seen.append((done, total))
    )
    assert report.bytes_read == sum(v.nbytes for v in t.values())
    assert report.tensors_checked == 6
    assert seen[-1] == (report.bytes_read, report.bytes_read)
    assert [(p.code, p.path) for p in report.problems] == [
        ("non_finite_values", "m.k.lora_b"),
        ("lora_b_all_zero", "m.v"),
    ]
    assert "1 NaN and 1 Inf" in report.problems[0].message
    q = report.modules["m.q"]
    assert q["lora_a"] == pytest.approx(np.linalg.norm(t["m.q.lora_a"]), rel=1e-6)
    assert q["lora_b"] == pytest.approx(np.linalg.norm(t["m.q.lora_b"]), rel=1e-6)
    assert report.modules["m.v"]["lora_a"] == pytest.approx(
        np.linalg.norm(t["m.v.lora_a"].astype(np.float64)), rel=1e-6
    )
    finite = t["m.k.lora_b"][np.isfinite(t["m.k.lora_b"])]
    assert report.modules["m.k"]["lora_b"] == pytest.approx(np.linalg.norm(finite), rel=1e-9)


def test_cli_json_carries_the_data_section(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    adapter(tmp_path)
    assert main(["inspect", "--verify-data", "--json", "--no-config", str(tmp_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["data"]["tensors_checked"] == 6
    assert {p["code"] for p in out["problems"]} == {
        "non_finite_values",
        "lora_b_all_zero",
        "mixed_dtypes",
    }
    assert set(out["data"]["modules"]) == {"m.q", "m.v", "m.k"}
    assert main(["inspect", "--verify-data", "--all", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "data: 6 tensors checked" in text
    assert "module norms" in text


def test_ctrl_c_stops_between_batches(tmp_path: Path) -> None:
    adapter(tmp_path)

    def interrupt(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        adapterscan.verify_data(tmp_path, progress=interrupt)


def test_file_truncated_after_the_scan(tmp_path: Path) -> None:
    adapter(tmp_path)
    s = adapterscan.scan(tmp_path)
    path = tmp_path / "adapters.safetensors"
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size - 64)
    with pytest.raises(adapterscan.FileChangedError, match="changed after it was scanned"):
        adapterscan.verify_data(s)


@pytest.mark.mlx
def test_untrained_mlx_lm_adapter_is_flagged(tmp_path: Path) -> None:
    import mlx.core as mx
    from mlx.utils import tree_flatten

    from producers import LLAMA, attach_lora, build_model, save_like_trainer

    model = build_model(LLAMA)
    params = attach_lora(model, num_layers=1, rank=4, keys=["self_attn.q_proj", "self_attn.v_proj"])
    folder = save_like_trainer(
        model, tmp_path / "a", fine_tune_type="lora", num_layers=1, lora_parameters=params
    )
    report = adapterscan.verify_data(folder)
    assert sorted(p.path for p in report.problems if p.code == "lora_b_all_zero") == [
        "model.layers.3.self_attn.q_proj",
        "model.layers.3.self_attn.v_proj",
    ]
    # bf16 factors are decoded too.
    weights = {k: v.astype(mx.bfloat16) + 1 for k, v in tree_flatten(model.trainable_parameters())}
    mx.save_safetensors(str(folder / "adapters.safetensors"), weights)
    report = adapterscan.verify_data(folder)
    assert report.problems == []
    want = float(
        mx.linalg.norm(weights["model.layers.3.self_attn.q_proj.lora_b"].astype(mx.float32))
    )
    assert report.modules["model.layers.3.self_attn.q_proj"]["lora_b"] == pytest.approx(
        want, rel=1e-6
    )


@pytest.mark.timeout(30)
@pytest.mark.parametrize("swap", ["other-file", "fifo", "outside-link"])
def test_a_file_swapped_after_the_scan_is_refused(tmp_path: Path, swap: str) -> None:
    """The data pass reopens each file through the one opener and checks it is the one scanned
    (device, inode, size, mtime): a replacement is a FileChangedError, a FIFO never blocks."""
    import os

    import numpy as np

    from producers import save_numpy

    tensors = {
        "model.layers.0.q.lora_a": np.ones((8, 2), np.float32),
        "model.layers.0.q.lora_b": np.ones((2, 8), np.float32),
    }
    weights = save_numpy(tmp_path / "a" / "adapters.safetensors", tensors)
    s = adapterscan.scan(tmp_path / "a", read_config=False)
    weights.unlink()
    if swap == "other-file":
        save_numpy(weights, tensors)  # same bytes, another file
    elif swap == "fifo":
        os.mkfifo(weights)
    else:
        outside = save_numpy(tmp_path / "outside.safetensors", tensors)
        weights.symlink_to(outside)
    expected = adapterscan.NotRegularFileError if swap == "fifo" else adapterscan.FileChangedError
    with pytest.raises(expected):
        adapterscan.verify_data(s)
