"""Real producers of adapter files for the tests.

MLX adapters are made with mlx-lm's own classes and save path: build a tiny model from a config,
freeze it, ``linear_to_lora_layers`` (the function ``mlx_lm.lora`` uses), then write
``dict(tree_flatten(model.trainable_parameters()))`` with ``mx.save_safetensors`` and the run's
arguments with mlx-lm's ``save_config``, exactly as the trainer does. The expected module table
is read back from the live model, never from the scanner.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np

LLAMA: dict[str, Any] = {
    "model_type": "llama",
    "hidden_size": 64,
    "num_hidden_layers": 4,
    "intermediate_size": 96,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-5,
    "vocab_size": 128,
    "tie_word_embeddings": False,
}

QWEN3_MOE: dict[str, Any] = {
    "model_type": "qwen3_moe",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "intermediate_size": 96,
    "num_attention_heads": 4,
    "num_experts": 4,
    "num_experts_per_tok": 2,
    "decoder_sparse_step": 1,
    "mlp_only_layers": [],
    "moe_intermediate_size": 32,
    "rms_norm_eps": 1e-6,
    "vocab_size": 128,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "rope_theta": 1000000.0,
    "tie_word_embeddings": False,
    "max_position_embeddings": 256,
    "norm_topk_prob": True,
}

MIXTRAL: dict[str, Any] = {
    "model_type": "mixtral",
    "vocab_size": 128,
    "hidden_size": 64,
    "intermediate_size": 48,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "num_local_experts": 4,
    "num_experts_per_tok": 2,
    "rms_norm_eps": 1e-5,
    "rope_theta": 1000000.0,
}


def build_model(config: dict[str, Any]) -> Any:
    """A tiny mlx-lm model with random weights."""
    import mlx.core as mx
    from mlx_lm.utils import _get_classes

    mx.random.seed(0)
    model_class, args_class = _get_classes(config=config)
    model = model_class(args_class.from_dict(config))
    mx.eval(model.parameters())
    return model


def attach_lora(
    model: Any,
    *,
    num_layers: int,
    rank: int = 8,
    scale: float = 20.0,
    dropout: float = 0.0,
    keys: list[str] | None = None,
    dora: bool = False,
) -> dict[str, Any]:
    """Freeze and wrap the model the way ``mlx_lm.lora`` does; returns ``lora_parameters``."""
    from mlx_lm.tuner.utils import linear_to_lora_layers

    params: dict[str, Any] = {"rank": rank, "dropout": dropout, "scale": scale}
    if keys is not None:
        params["keys"] = keys
    model.freeze()
    linear_to_lora_layers(model, num_layers, params, use_dora=dora)
    return params


def save_like_trainer(
    model: Any,
    folder: Path,
    *,
    fine_tune_type: str,
    num_layers: int,
    lora_parameters: dict[str, Any],
    **extra: Any,
) -> Path:
    """Write ``adapters.safetensors`` and ``adapter_config.json`` as mlx-lm's trainer does."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.lora import CONFIG_DEFAULTS
    from mlx_lm.utils import save_config

    folder.mkdir(parents=True, exist_ok=True)
    weights = dict(tree_flatten(model.trainable_parameters()))
    mx.save_safetensors(str(folder / "adapters.safetensors"), weights)
    args = dict(CONFIG_DEFAULTS)
    args.update(
        model="tiny",
        train=True,
        fine_tune_type=fine_tune_type,
        num_layers=num_layers,
        lora_parameters=lora_parameters,
        adapter_path=str(folder),
        **extra,
    )
    save_config(args, folder / "adapter_config.json")
    return folder


def expected_modules(model: Any) -> dict[str, dict[str, Any]]:
    """The module table of a live model with mlx-lm LoRA/DoRA wrappers, from the model itself."""
    import mlx.nn as nn
    from mlx_lm.tuner.dora import DoRAEmbedding, DoRALinear
    from mlx_lm.tuner.lora import LoRAEmbedding, LoRALinear, LoRASwitchLinear

    out: dict[str, dict[str, Any]] = {}
    for path, m in model.named_modules():
        if isinstance(m, (LoRALinear, DoRALinear)):
            base = m.linear
            out_dims, packed_in = base.weight.shape
            in_dims = (
                packed_in * 32 // base.bits if isinstance(base, nn.QuantizedLinear) else packed_in
            )
            kind, experts = "linear", None
            rank = m.lora_a.shape[1]
        elif isinstance(m, LoRASwitchLinear):
            base = m.linear
            experts, out_dims, packed_in = base.weight.shape
            in_dims = packed_in * 32 // base.bits if hasattr(base, "bits") else packed_in
            kind = "switch"
            rank = m.lora_a.shape[1]
        elif isinstance(m, (LoRAEmbedding, DoRAEmbedding)):
            base = m.embedding
            in_dims, packed = base.weight.shape
            out_dims = (
                packed * 32 // base.bits if isinstance(base, nn.QuantizedEmbedding) else packed
            )
            kind, experts = "embedding", None
            rank = m.lora_a.shape[1]
        else:
            continue
        out[path] = {
            "kind": kind,
            "variant": "dora" if isinstance(m, (DoRALinear, DoRAEmbedding)) else "lora",
            "rank": rank,
            "in_dims": in_dims,
            "out_dims": out_dims,
            "num_experts": experts,
        }
    return out


def write_raw(path: Path, header: bytes | str, data_len: int = 0, *, n: int | None = None) -> Path:
    """A safetensors-shaped file from raw header bytes (for malformed inputs)."""
    body = header.encode() if isinstance(header, str) else header
    length = len(body) if n is None else n
    path.write_bytes(struct.pack("<Q", length) + body + b"\0" * data_len)
    return path


def header_json(tensors: dict[str, tuple[str, list[int], list[int]]], **extra: Any) -> str:
    """JSON for a header from ``{name: (dtype, shape, offsets)}``."""
    obj: dict[str, Any] = dict(extra)
    for name, (dtype, shape, offsets) in tensors.items():
        obj[name] = {"dtype": dtype, "shape": shape, "data_offsets": offsets}
    return json.dumps(obj)


def save_numpy(
    path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None
) -> Path:
    """Write tensors with the ``safetensors`` package."""
    from safetensors.numpy import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=metadata)
    return path


def peft_dense(
    prefix: str, rank: int, in_dims: int, out_dims: int, dtype: Any = np.float32
) -> dict[str, np.ndarray]:
    """PEFT ``lora_A`` (r, in) / ``lora_B`` (out, r) for one module path."""
    rng = np.random.default_rng(0)
    return {
        f"base_model.model.{prefix}.lora_A.weight": rng.standard_normal((rank, in_dims)).astype(
            dtype
        ),
        f"base_model.model.{prefix}.lora_B.weight": rng.standard_normal((out_dims, rank)).astype(
            dtype
        ),
    }


def save_base(model: Any, config: dict[str, Any], folder: Path) -> Path:
    """A base model folder as mlx-lm writes one: ``save_model`` weights + index, ``save_config``."""
    from mlx_lm.utils import save_config, save_model

    save_model(folder, model)
    save_config(dict(config), folder / "config.json")
    return folder


def save_quantized_base(
    config: dict[str, Any], folder: Path, *, bits: int = 4, group_size: int = 32
) -> Any:
    """A quantized copy made with mlx-lm's ``quantize_model``; returns the quantized model."""
    from mlx_lm.utils import quantize_model

    model = build_model(config)
    model, qconfig = quantize_model(model, dict(config), group_size=group_size, bits=bits)
    save_base(model, qconfig, folder)
    return model


MIXTRAL_HF = {"gate_proj": "w1", "up_proj": "w3", "down_proj": "w2"}


def save_hf_per_expert_base(model: Any, config: dict[str, Any], folder: Path) -> Path:
    """A Hugging Face layout checkpoint: stacked experts split into per-expert 2-D weights.

    qwen3_moe/qwen2_moe/olmoe: ``mlp.experts.{e}.{proj}.weight``; mixtral:
    ``block_sparse_moe.experts.{e}.w1/w3/w2.weight``. Written with the ``safetensors`` package.
    """
    from mlx.utils import tree_flatten

    tensors: dict[str, np.ndarray] = {}
    for name, value in tree_flatten(model.parameters()):
        arr = np.array(value.astype(__import__("mlx.core").core.float32))
        if ".switch_mlp." in name and arr.ndim == 3:
            head, proj = name.split(".switch_mlp.")
            proj = proj.removesuffix(".weight")
            mixtral = head.endswith("block_sparse_moe")
            for e in range(arr.shape[0]):
                hf = MIXTRAL_HF[proj] if mixtral else proj
                tensors[f"{head}.experts.{e}.{hf}.weight"] = arr[e]
        else:
            tensors[name] = arr
    folder.mkdir(parents=True, exist_ok=True)
    save_numpy(folder / "model.safetensors", tensors, metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def kill_during_writes(args: list[str], delay: float) -> None:
    """Start a writer loop (``python -c ...``), wait for its first complete write, SIGKILL it after
    ``delay`` seconds, and reap it."""
    import os
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-c", *args], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    proc.stdout.readline()
    time.sleep(delay)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
