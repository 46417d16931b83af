"""The benchmarks' synthetic files are laid out as their real producers lay them out."""

from __future__ import annotations

import importlib.util
import json
import struct
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file

import adapterscan

sys.path.insert(0, str(Path(__file__).parent.parent / "bench"))
gen: Any = importlib.import_module("gen")

ENTRIES = [
    (f"model.layers.{layer}.self_attn.{m}.lora_{ab}", "F32", [6, 2] if ab == "a" else [2, 5])
    for layer in (0, 1, 2, 10, 11)
    for m in ("q_proj", "k_proj", "v_proj")
    for ab in "ab"
] + [("model.embed_tokens.lora_a", "F16", [4, 2]), ("model.embed_tokens.lora_b", "F16", [2, 8])]
NUMPY = {"F32": np.float32, "F16": np.float16}


def header(path: Path) -> tuple[bytes, int]:
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    return data[8 : 8 + n], len(data)


def test_safetensors_style_is_byte_for_byte_the_safetensors_package(tmp_path: Path) -> None:
    real = tmp_path / "real.safetensors"
    save_file(
        {n: np.zeros(s, NUMPY[d]) for n, d, s in ENTRIES}, str(real), metadata={"format": "pt"}
    )
    made = tmp_path / "made.safetensors"
    gen.write_sparse(made, ENTRIES, meta={"format": "pt"})
    assert header(made) == header(real)


@pytest.mark.mlx
def test_mlx_style_is_the_mlx_writer_but_for_the_data_order(tmp_path: Path) -> None:
    import mlx.core as mx

    dtypes = {"F32": mx.float32, "F16": mx.float16}
    real = tmp_path / "real.safetensors"
    mx.save_safetensors(str(real), {n: mx.zeros(s, dtypes[d]) for n, d, s in ENTRIES})
    made = tmp_path / "made.safetensors"
    gen.write_sparse(made, ENTRIES, style="mlx")
    (real_text, real_size), (made_text, made_size) = header(real), header(made)
    # The same data region (the offsets' digits may make the headers' lengths differ).
    assert made_size - len(made_text) == real_size - len(real_text)
    real_json, made_json = json.loads(real_text), json.loads(made_text)
    # The same text once the offsets (where the data lies, which MLX orders by hash) are set apart.
    assert list(made_json) == list(real_json)
    for entry in (*made_json.values(), *real_json.values()):
        if entry is not None:
            entry["data_offsets"] = None
    assert made_json == real_json


@pytest.mark.parametrize("style", ["safetensors", "mlx"])
def test_bigger_data_keeps_the_file_valid(tmp_path: Path, style: str) -> None:
    path = tmp_path / "a.safetensors"
    gen.write_sparse(path, ENTRIES, extra_data=1 << 20, style=style)
    assert path.stat().st_size > 1 << 20
    with safe_open(str(path), "numpy") as f:
        shapes = {k: f.get_slice(k).get_shape() for k in f.keys()}  # noqa: SIM118
    # Offsets that tile the data region exactly, or the scan would refuse the file.
    assert adapterscan.scan(path).tensor_count == len(ENTRIES)
    grown = [n for n, _, s in ENTRIES if shapes[n] != s]
    assert len(grown) == 1
