"""Writes that never lose an adapter: bad values refused before anything is written, names that
are not patterns, a folder that is a link, an interrupted fallback, the umask, non-finite scales.
"""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path
from typing import Any

import pytest

import adapterscan
from adapterscan import _atomic
from adapterscan._config_io import config_writer


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def _write(folder: Path, text: str) -> None:
    _atomic.replace_files(folder, {"a.txt": lambda p: p.write_text(text)})


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_a_config_json_cannot_hold_is_refused_before_anything_is_staged(
    tmp_path: Path, bad: float
) -> None:
    with pytest.raises(adapterscan.SaveError, match=r"best_val_loss"):
        config_writer({"lora_parameters": {"scale": 1.0}, "best_val_loss": bad}, ensure_ascii=False)
    with pytest.raises(adapterscan.SaveError, match=r"lora_parameters\.scale"):
        config_writer({"lora_parameters": {"scale": bad}}, ensure_ascii=False)
    with pytest.raises(adapterscan.SaveError, match=r"keys\[1\]"):
        config_writer({"keys": [1.0, bad]}, ensure_ascii=False)


@pytest.mark.mlx
def test_save_with_an_infinite_config_value_keeps_the_old_adapter(tmp_path: Path) -> None:
    from adapterscan.mlx import save_adapters
    from producers import LLAMA, attach_lora, build_model

    model = build_model(LLAMA)
    attach_lora(model, num_layers=2)
    save_adapters(model, tmp_path / "a")
    (tmp_path / "a" / "training_log.txt").write_text("kept")
    before = _files(tmp_path / "a")
    with pytest.raises(adapterscan.SaveError, match="best_val_loss"):
        save_adapters(model, tmp_path / "a", config={"best_val_loss": float("inf")})
    assert _files(tmp_path / "a") == before
    model.model.layers[-1].self_attn.q_proj.scale = float("nan")  # a live module's scale
    with pytest.raises(adapterscan.SaveError, match="scale"):
        save_adapters(model, tmp_path / "a")
    assert _files(tmp_path / "a") == before
    assert adapterscan.scan(tmp_path / "a").ok
    assert [p for p in tmp_path.iterdir() if p.name != "a"] == []


def test_a_folder_named_like_a_pattern_leaves_others_alone(tmp_path: Path) -> None:
    # `run[1]` as a glob pattern matches `run1`: another save's live staging folder.
    live = tmp_path / f".run1{_atomic.STAGING_MARK}{os.getpid()}-live"
    live.mkdir()
    (live / "x").write_text("in flight")
    _write(tmp_path / "run[1]", "one")
    assert (tmp_path / "run[1]" / "a.txt").read_text() == "one"
    assert (live / "x").read_text() == "in flight"


def test_a_folder_that_is_a_link_is_written_through(tmp_path: Path) -> None:
    real = tmp_path / "real"
    _write(real, "old")
    (real / "notes.txt").write_text("kept")
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    _write(link, "new")
    assert link.is_symlink()
    assert os.readlink(link) == str(real)
    assert (real / "a.txt").read_text() == "new"
    assert (real / "notes.txt").read_text() == "kept"


def test_an_interrupted_fallback_is_put_back_by_the_next_save(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "adapter"
    _write(target, "old")
    (target / "training_log.txt").write_text("kept")
    monkeypatch.setattr(_atomic, "_exchange", lambda a, b: False)
    real_rename = os.rename
    calls: list[Any] = []

    def rename_then_die(src: Any, dst: Any) -> None:
        calls.append((src, dst))
        if len(calls) == 2:  # after the old folder is moved aside, before the new one lands
            raise KeyboardInterrupt
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename_then_die)
    with pytest.raises(KeyboardInterrupt):
        _write(target, "new")
    monkeypatch.setattr(os, "rename", real_rename)
    assert not target.exists()
    aside = [p for p in tmp_path.iterdir() if p.name.endswith("-old")]
    assert len(aside) == 1
    # The next save finds the old adapter aside, puts it back, and writes over it.
    _write(target, "next")
    assert (target / "a.txt").read_text() == "next"
    assert (target / "training_log.txt").read_text() == "kept"
    assert [p.name for p in tmp_path.iterdir()] == ["adapter"]


def test_a_new_folder_honours_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        _write(tmp_path / "new", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o755


@pytest.mark.parametrize("bad", [math.nan, math.inf, 0.0, -1.0])
def test_non_finite_or_non_positive_scales_are_refused(tmp_path: Path, bad: float) -> None:
    import numpy as np

    from producers import save_numpy

    save_numpy(
        tmp_path / "adapters.safetensors",
        {
            "model.layers.0.q.lora_a": np.zeros((8, 2), np.float32),
            "model.layers.0.q.lora_b": np.zeros((2, 8), np.float32),
        },
    )
    with pytest.raises(adapterscan.ConfigError, match="finite positive"):
        adapterscan.repair(tmp_path, scale=bad)
    assert not (tmp_path / "adapter_config.json").exists()
    (tmp_path / "adapter_config.json").write_text(json.dumps({"note": 1}))


@pytest.mark.mlx
def test_load_with_a_nan_scale_is_refused(tmp_path: Path) -> None:
    from adapterscan.mlx import load_adapters, save_adapters
    from producers import LLAMA, attach_lora, build_model

    model = build_model(LLAMA)
    attach_lora(model, num_layers=2)
    save_adapters(model, tmp_path / "a")
    with pytest.raises(adapterscan.ConfigError, match="finite positive"):
        load_adapters(build_model(LLAMA), tmp_path / "a", scale=float("nan"))


def _mlx_adapter(folder: Path, value: float = 1.0) -> Path:
    import numpy as np

    from producers import save_numpy

    save_numpy(
        folder / "adapters.safetensors",
        {
            "model.layers.0.self_attn.q_proj.lora_a": np.full((8, 2), value, np.float32),
            "model.layers.0.self_attn.q_proj.lora_b": np.full((2, 8), value, np.float32),
        },
    )
    cfg = {
        "fine_tune_type": "lora",
        "num_layers": 1,
        "lora_parameters": {"rank": 2, "scale": 2.0, "dropout": 0.0},
    }
    (folder / "adapter_config.json").write_text(json.dumps(cfg))
    return folder


@pytest.mark.mlx
def test_convert_never_writes_over_an_adapter_unless_forced(tmp_path: Path) -> None:
    from adapterscan.cli import main
    from adapterscan.mlx import convert_to_peft

    src = _mlx_adapter(tmp_path / "a")
    before = _files(src)
    # Onto itself: refused, nothing written.
    assert main(["convert", str(src), str(src), "--to", "peft"]) == 2
    assert _files(src) == before
    # Into a folder holding another adapter: refused too.
    other = _mlx_adapter(tmp_path / "b", value=2.0)
    other_before = _files(other)
    with pytest.raises(adapterscan.AdapterScanError, match="holds an adapter"):
        convert_to_peft(src, other)
    assert _files(other) == other_before
    # Forced: the old adapter's files are kept beside as backups (hard links: no byte copied),
    # the new one stands alone and is what the report describes.
    inode = (other / "adapters.safetensors").stat().st_ino
    s = convert_to_peft(src, other, force=True)
    assert s.format == "peft"
    assert s.files[0].path.endswith("adapter_model.safetensors")
    names = sorted(p.name for p in other.iterdir())
    assert "adapters.safetensors" not in names
    backups = [n for n in names if ".bak-" in n]
    assert sorted(b.split(".bak-")[0] for b in backups) == [
        "adapter_config.json",
        "adapters.safetensors",
    ]
    restored = {b.split(".bak-")[0]: (other / b).read_bytes() for b in backups}
    assert restored == other_before
    weights_backup = next(b for b in backups if b.startswith("adapters.safetensors"))
    assert (other / weights_backup).stat().st_ino == inode


@pytest.mark.mlx
@pytest.mark.timeout(30)
def test_a_forced_convert_never_opens_what_it_sets_aside(tmp_path: Path) -> None:
    from adapterscan.mlx import convert_to_peft

    src = _mlx_adapter(tmp_path / "a")
    dst = tmp_path / "b"
    dst.mkdir()
    os.mkfifo(dst / "adapter_config.json")  # would block any reader
    with pytest.raises(adapterscan.AdapterScanError, match="holds an adapter"):
        convert_to_peft(src, dst)
    s = convert_to_peft(src, dst, force=True)
    assert s.format == "peft"
    backup = next(p for p in dst.iterdir() if p.name.startswith("adapter_config.json.bak-"))
    assert stat.S_ISFIFO(backup.lstat().st_mode)


@pytest.mark.mlx
@pytest.mark.parametrize("fault", ["oserror", "mlx"])
def test_a_full_disk_is_a_typed_error_and_the_adapter_stays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    """ENOSPC while the weights are written (fault injection: a tmpfs cannot be mounted here):
    a SaveError naming the cause, exit 2 with one line from the command line, nothing changed."""
    import errno

    import mlx.core as mx

    from adapterscan.cli import main
    from adapterscan.mlx import save_adapters
    from producers import LLAMA, attach_lora, build_model

    model = build_model(LLAMA)
    attach_lora(model, num_layers=2)
    save_adapters(model, tmp_path / "a")
    before = _files(tmp_path / "a")
    real = mx.save_safetensors

    def full(path: str, *args: Any, **kwargs: Any) -> None:
        real(path, *args, **kwargs)  # a partial file in the staging folder, then the failure
        if fault == "oserror":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        raise RuntimeError("[save_safetensors] Unable to write to file")

    monkeypatch.setattr(mx, "save_safetensors", full)
    with pytest.raises(adapterscan.SaveError, match="unchanged"):
        save_adapters(model, tmp_path / "a")
    assert _files(tmp_path / "a") == before
    assert [p.name for p in tmp_path.iterdir()] == ["a"]
    _mlx_adapter(tmp_path / "src")
    assert main(["convert", str(tmp_path / "src"), str(tmp_path / "out"), "--to", "peft"]) == 2
    assert not (tmp_path / "out").exists()
