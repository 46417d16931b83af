"""Synthetic adapters for the benchmarks, written as sparse files (headers only on disk).

Each file gets a real safetensors header; the data region is added with ``truncate()``, so
gigabytes of logical tensor data cost no disk. Every file is a valid safetensors file.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path

# Qwen3-MoE-235B geometry.
LAYERS_MOE, EXPERTS, HIDDEN, MOE_INTER, Q_DIM, KV_DIM = 94, 128, 4096, 1536, 8192, 512
# (in, out) of the attention projections and of one expert's MLP at that geometry.
ATTENTION = {
    "self_attn.q_proj": (HIDDEN, Q_DIM),
    "self_attn.k_proj": (HIDDEN, KV_DIM),
    "self_attn.v_proj": (HIDDEN, KV_DIM),
    "self_attn.o_proj": (Q_DIM, HIDDEN),
}
EXPERT_MLP = {
    "gate_proj": (HIDDEN, MOE_INTER),
    "up_proj": (HIDDEN, MOE_INTER),
    "down_proj": (MOE_INTER, HIDDEN),
}
# Llama-7B geometry.
LAYERS_DENSE, H7, I7 = 32, 4096, 11008

BITS = {"F32": 4, "BF16": 2, "F16": 2}

Entry = tuple[str, str, list[int]]


def write_sparse(
    path: Path,
    entries: list[Entry],
    *,
    extra_data: int = 0,
    meta: dict[str, str] | None = None,
    style: str = "safetensors",
) -> int:
    """Write one safetensors file whose data region is sparse; returns its header length.

    The header is laid out as its real producer lays it out. ``"safetensors"`` (the
    ``safetensors`` package, which PEFT and transformers use): tensors sorted by dtype size, then
    name, data in that order, fields ``dtype, shape, data_offsets``, padded with spaces to 8
    bytes. ``"mlx"`` (``mx.save_safetensors``, which mlx-lm uses): ``"__metadata__":null`` and
    the names sorted, fields sorted, data in another order than the header's, no padding.
    ``extra_data`` bytes are added to the tensor stored last, by growing its leading dimension.
    """
    if style == "safetensors":
        stored = sorted(entries, key=lambda e: (-BITS[e[1]], e[0]))
    elif style == "mlx":
        stored = entries[::-1]
    else:
        raise ValueError(f"unknown style {style!r}")
    spans: dict[str, tuple[str, list[int], int, int]] = {}
    offset = 0
    for k, (name, dtype, shape) in enumerate(stored):
        row = BITS[dtype]
        for d in shape[1:]:
            row *= d
        rows = shape[0] if shape else 1
        if extra_data and k == len(stored) - 1:
            rows += extra_data // row
        shape = [rows, *shape[1:]] if shape else shape
        spans[name] = (dtype, shape, offset, offset + rows * row)
        offset += rows * row
    header: dict[str, object] = {}
    if style == "safetensors":
        if meta:
            header["__metadata__"] = meta
        for name, _, _ in stored:
            dtype, shape, begin, end = spans[name]
            header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}
    else:
        header["__metadata__"] = meta
        for name in sorted(spans):
            dtype, shape, begin, end = spans[name]
            header[name] = {"data_offsets": [begin, end], "dtype": dtype, "shape": shape}
    body = json.dumps(header, separators=(",", ":")).encode()
    if style == "safetensors":
        body += b" " * (-len(body) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        f.write(struct.pack("<Q", len(body)))
        f.write(body)
        f.truncate(8 + len(body) + offset)
    return len(body)


def s1() -> list[Entry]:
    """mlx-lm dense LoRA, Llama-7B dims, rank 16, 32 layers x 7 modules."""
    dims = {
        "self_attn.q_proj": (H7, H7),
        "self_attn.k_proj": (H7, H7),
        "self_attn.v_proj": (H7, H7),
        "self_attn.o_proj": (H7, H7),
        "mlp.gate_proj": (H7, I7),
        "mlp.up_proj": (H7, I7),
        "mlp.down_proj": (I7, H7),
    }
    out = []
    for layer in range(LAYERS_DENSE):
        for mod, (i, o) in dims.items():
            p = f"model.layers.{layer}.{mod}"
            out += [(f"{p}.lora_a", "F32", [i, 16]), (f"{p}.lora_b", "F32", [16, o])]
    return out


def s2() -> list[Entry]:
    """mlx-lm switch LoRA at Qwen3-MoE-235B geometry, rank 8."""
    r = 8
    out = []
    for layer in range(LAYERS_MOE):
        p = f"model.layers.{layer}"
        for mod, (i, o) in ATTENTION.items():
            out += [(f"{p}.{mod}.lora_a", "F32", [i, r]), (f"{p}.{mod}.lora_b", "F32", [r, o])]
        for proj, (i, o) in EXPERT_MLP.items():
            q = f"{p}.mlp.switch_mlp.{proj}"
            out += [
                (f"{q}.lora_a", "F32", [EXPERTS, r, i]),
                (f"{q}.lora_b", "F32", [EXPERTS, o, r]),
            ]
    return out


def peft_per_expert(layers: int, experts: int) -> Iterator[Entry]:
    """PEFT per-expert keys at Qwen3-MoE geometry, rank 8, BF16."""
    r = 8
    pre = "base_model.model."
    for layer in range(layers):
        p = f"{pre}model.layers.{layer}"
        for mod, (i, o) in ATTENTION.items():
            yield (f"{p}.{mod}.lora_A.weight", "BF16", [r, i])
            yield (f"{p}.{mod}.lora_B.weight", "BF16", [o, r])
        for e in range(experts):
            for proj, (i, o) in EXPERT_MLP.items():
                q = f"{p}.mlp.experts.{e}.{proj}"
                yield (f"{q}.lora_A.weight", "BF16", [r, i])
                yield (f"{q}.lora_B.weight", "BF16", [o, r])


def write_sharded(folder: Path, entries: list[Entry], shards: int, stem: str) -> int:
    """Split entries (whole modules stay together) into shards and write an index."""
    folder.mkdir(parents=True, exist_ok=True)
    per = -(-len(entries) // shards)
    per += per % 2
    weight_map: dict[str, str] = {}
    header_bytes = 0
    total = 0
    for s in range(shards):
        chunk = entries[s * per : (s + 1) * per]
        if not chunk:
            break
        name = f"{stem}-{s + 1:05d}-of-{shards:05d}.safetensors"
        header_bytes += write_sparse(folder / name, chunk, meta={"format": "pt"})
        for n, dtype, shape in chunk:
            weight_map[n] = name
            size = BITS[dtype]
            for d in shape:
                size *= d
            total += size
    # As transformers and PEFT write it.
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / f"{stem}.safetensors.index.json").write_text(
        json.dumps(index, indent=2, sort_keys=True) + "\n"
    )
    return header_bytes


def s3(folder: Path) -> int:
    entries = list(peft_per_expert(LAYERS_MOE, EXPERTS))
    n = write_sharded(folder, entries, 20, "adapter_model")
    config = {
        "peft_type": "LORA",
        "r": 8,
        "lora_alpha": 16,
        "target_modules": [
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ],
    }
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return n


def s4(folder: Path) -> int:
    """1,000,000 tensors in 100 shards (per-expert PEFT keys, 512 experts x ~326 layers)."""
    entries = []
    gen = peft_per_expert(10_000, 512)
    while len(entries) < 1_000_000:
        entries.append(next(gen))
    return write_sharded(folder, entries, 100, "adapter_model")


def s3_base(folder: Path) -> int:
    """The base for s3: Hugging Face per-expert layout, BF16, 20 shards, headers only."""
    entries: list[Entry] = [("model.embed_tokens.weight", "BF16", [151936, HIDDEN])]
    for layer in range(LAYERS_MOE):
        p = f"model.layers.{layer}"
        entries += [
            (f"{p}.self_attn.q_proj.weight", "BF16", [Q_DIM, HIDDEN]),
            (f"{p}.self_attn.k_proj.weight", "BF16", [KV_DIM, HIDDEN]),
            (f"{p}.self_attn.v_proj.weight", "BF16", [KV_DIM, HIDDEN]),
            (f"{p}.self_attn.o_proj.weight", "BF16", [HIDDEN, Q_DIM]),
            (f"{p}.mlp.gate.weight", "BF16", [EXPERTS, HIDDEN]),
            (f"{p}.input_layernorm.weight", "BF16", [HIDDEN]),
        ]
        for e in range(EXPERTS):
            entries += [
                (f"{p}.mlp.experts.{e}.gate_proj.weight", "BF16", [MOE_INTER, HIDDEN]),
                (f"{p}.mlp.experts.{e}.up_proj.weight", "BF16", [MOE_INTER, HIDDEN]),
                (f"{p}.mlp.experts.{e}.down_proj.weight", "BF16", [HIDDEN, MOE_INTER]),
            ]
    entries.append(("lm_head.weight", "BF16", [151936, HIDDEN]))
    n = write_sharded(folder, entries, 20, "model")
    (folder / "config.json").write_text(
        json.dumps({"model_type": "qwen3_moe", "num_hidden_layers": LAYERS_MOE})
    )
    return n
