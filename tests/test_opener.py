"""Every config adapterscan reads goes through the one opener: a regular file only (a FIFO or a
device is refused before any read, so nothing hangs), bounded in size, and, where the folder is
rewritten (repair), confined to it: a link out of it is never read nor copied into the backup."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import adapterscan
from producers import save_numpy

pytestmark = pytest.mark.timeout(30)


def _adapter(folder: Path) -> Path:
    save_numpy(
        folder / "adapters.safetensors",
        {
            "model.layers.0.q.lora_a": np.zeros((8, 2), np.float32),
            "model.layers.0.q.lora_b": np.zeros((2, 8), np.float32),
        },
    )
    return folder


def test_repair_refuses_a_config_linked_out_of_the_folder(tmp_path: Path) -> None:
    secret = tmp_path / "token.txt"
    secret.write_text('{"hf_token": "hf_secret"}')
    folder = _adapter(tmp_path / "a")
    (folder / "adapter_config.json").symlink_to(secret)
    with pytest.raises(adapterscan.PathEscapeError):
        adapterscan.repair(folder, scale=1.0)
    copies = [p for p in folder.iterdir() if p.is_file() and not p.is_symlink()]
    assert not any("hf_secret" in p.read_text(errors="ignore") for p in copies)


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_repair_refuses_a_config_that_is_not_a_file(tmp_path: Path, kind: str) -> None:
    folder = _adapter(tmp_path / "a")
    config = folder / "adapter_config.json"
    if kind == "fifo":
        os.mkfifo(config)
    else:
        config.symlink_to("/dev/zero")
    with pytest.raises(adapterscan.AdapterScanError):
        adapterscan.repair(folder, scale=1.0)


@pytest.mark.mlx
def test_a_base_config_that_is_a_fifo_is_refused(tmp_path: Path) -> None:
    base = tmp_path / "base"
    base.mkdir()
    os.mkfifo(base / "config.json")
    with pytest.raises(adapterscan.NotRegularFileError):
        adapterscan.base_structure(base, "model")


def test_a_deep_config_is_a_config_error(tmp_path: Path) -> None:
    folder = _adapter(tmp_path / "a")
    (folder / "adapter_config.json").write_text("[" * 100_000 + "]" * 100_000)
    # Read as no usable old config: repair needs the scale, and says so.
    with pytest.raises(adapterscan.ConfigError, match="pass --scale"):
        adapterscan.repair(folder)


def test_an_oversized_config_is_a_config_error_on_either_side(tmp_path: Path) -> None:
    """Over the size limit (a sparse file: nothing is read), an adapter's and a base's config
    are ConfigErrors, as other bad configs are, not shard-index errors."""
    folder = _adapter(tmp_path / "a")
    base = tmp_path / "base"
    base.mkdir()
    save_numpy(
        base / "model.safetensors", {"model.layers.0.q.weight": np.zeros((8, 8), np.float32)}
    )
    for config in (folder / "adapter_config.json", base / "config.json"):
        with config.open("wb") as f:
            f.truncate(300 << 20)
    with pytest.raises(adapterscan.ConfigError, match="over the limit"):
        adapterscan.scan(folder)
    with pytest.raises(adapterscan.ConfigError, match="over the limit"):
        adapterscan.read_base(base)
