"""Hugging Face PEFT adapters read as mlx-lm modules.

Lives here: ``_peft_specs`` (a PEFT adapter's modules at mlx-lm's paths, with stacked experts and
each module's scale as the core reads the config),
the mapping of transformers 5's fused expert parameters (``gate_up_proj``, ``down_proj``) onto
mlx's ``switch_mlp`` and the records ``convert_to_peft`` leaves in the file's metadata
(``_fused_records``), and ``_peft_pairs`` (saved PEFT tensors as mlx-lm's factors).

May use: MLX, ``._live`` (path helpers), ``._spec``, and adapterscan's scan, core, config
helpers and errors.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Mapping
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from .._config_io import as_mapping
from .._core import PEFT_PREFIX, AdapterScanError, Module, mlx_moe_blocks, stacked_path
from .._scan import Scan
from ..errors import AdapterMismatchError
from ._live import _join, tied_vocab
from ._spec import _empty_report, _Spec

# Safetensors metadata of a converted PEFT adapter: how mlx switch factors were fused (JSON).
_FUSED_KEY = "adapterscan_fused_experts"


def _peft_specs(
    s: Scan,
    model: nn.Module | None,
    skip: set[str],
    *,
    drop_embedding_copy: bool = False,
    tied: int | None = None,
    live: bool = True,
) -> list[_Spec]:
    """Per-module specs for a PEFT adapter.

    Module paths are mlx-lm's (stacked experts), ranks come from the tensors, and the scale is
    alpha/r (rsLoRA: alpha/sqrt(r)) with ``alpha_pattern`` resolved by peft's first-match rule,
    as the core reads the config (``Scan.module_settings``).
    """
    cfg = s.config or {}
    params = _lazy_params(model)
    # A live model keeps its own embedding beside peft's copy; a file written for it would not.
    _refuse_full_tensors(
        s, params if live else _lazy_params(None), drop_embedding_copy=drop_embedding_copy
    )
    settings = s.module_settings

    @functools.cache
    def modules() -> set[str]:
        return {name.rpartition(".")[0] for name in params()}

    if tied is None and model is not None:
        tied = tied_vocab(model)
    fused = _fused_records(s)
    specs = []
    for path, m in s.modules.items():
        if path in skip:
            continue
        if m.rank is None:
            raise AdapterMismatchError(f"no rank can be inferred for {path}", _empty_report(s))
        _refuse_embedding(path, m, tied=tied)
        rank = int(m.rank)
        scale, dropout = settings[path]  # the core gives peft's defaults without a config
        if not isinstance(scale, float):
            raise AdapterMismatchError(f"no scale can be read for {path}", _empty_report(s))
        spec = _Spec(
            path=_mlx_path(path, modules()) if model is not None else stacked_path(path),
            kind=m.kind,
            variant=m.variant,
            layout=m.layout,
            rank=rank,
            scale=scale,
            dropout=dropout,
            keys=list(m.keys),
            factors=list(m.factors),
        )
        if m.layout != "peft_param_wrapper":
            specs.append(spec)
            continue
        if _interleaves_gate_up(cfg, model):
            raise AdapterScanError(
                f"{path}: gpt-oss interleaves gate and up rows in gate_up_proj; its "
                "target_parameters factors are not mapped"
            )
        base, _, param = path.rpartition(".")
        record = fused.get(path, {})
        mlx_prefix = record.get("mlx") or _switch_prefix(base, params())
        if param == "gate_up_proj":
            specs += _gate_up_specs(spec, scale, mlx_prefix, record)
        else:
            specs.append(spec._replace(path=f"{mlx_prefix}.switch_mlp.{param}"))
    return specs


def _lazy_params(model: nn.Module | None) -> Callable[[], dict[str, Any]]:
    """The model's parameters by name (none without a model), flattened once, on first use."""

    @functools.cache
    def params() -> dict[str, Any]:
        return dict(tree_flatten(model.parameters())) if model is not None else {}

    return params


def _refuse_full_tensors(
    s: Scan, params: Callable[[], Mapping[str, Any]], *, drop_embedding_copy: bool
) -> None:
    """Raise for full tensors (not LoRA factors) that an mlx adapter cannot hold.

    Peft's copy of a targeted embedding (``base_layer.weight``) passes when the model has its own
    of that shape, or when ``drop_embedding_copy`` leaves it out.
    """
    refused = []
    for name in s.non_adapter_tensors:
        bare = name.removeprefix(PEFT_PREFIX)
        if bare.endswith(".base_layer.weight"):
            if drop_embedding_copy:
                continue  # asked for: peft's copy of a targeted embedding is not carried over
            module = bare.removesuffix(".base_layer.weight")
            live = params().get(f"{module}.weight")
            if live is not None and tuple(live.shape) == tuple(s.tensors[name].shape):
                continue  # peft's copy of a targeted embedding; the model has its own
        refused.append(bare)
    if refused:
        raise AdapterScanError(
            f"{s.path}: full tensors an mlx LoRA adapter cannot hold (modules_to_save, "
            f"trainable tokens, or a resized embedding): {', '.join(refused[:10])}"
        )


def _refuse_embedding(path: str, m: Module, *, tied: int | None) -> None:
    """Raise for an embedding module mlx-lm cannot reproduce.

    That is DoRA, or a LoRA on the token embedding of a model whose output head it is (``tied``:
    that vocabulary size).
    """
    if m.kind == "embedding" and m.variant == "dora":
        raise AdapterScanError(
            f"{path}: DoRA on an embedding cannot be converted (peft's magnitude is per "
            "embedding dimension, mlx-lm's per token)"
        )
    if m.kind == "embedding" and tied is not None and m.in_dims == tied:
        raise AdapterScanError(
            f"{path}: the model ties its embedding to the output head; mlx-lm's "
            "LoRAEmbedding would add the delta to the head too, which peft does not"
        )


def _gate_up_specs(
    spec: _Spec, scale: float, mlx_prefix: str, record: Mapping[str, Any]
) -> list[_Spec]:
    """The ``gate_proj`` and ``up_proj`` specs read from one fused ``gate_up_proj`` wrapper.

    One factor pair for the stacked gate and up rows: B splits in halves; A is shared, unless
    the pair was written from two mlx factors (recorded): then each takes its own rank columns
    back, and its own scale.
    """
    rank = spec.rank
    specs = []
    lo = 0
    for i, half in enumerate(("gate_proj", "up_proj")):
        own = record.get(half)
        if record and own is None:
            continue  # this half was not adapted
        r_own, s_own = (int(own[0]), float(own[1])) if own else (rank, scale)
        hi = lo + r_own if own else rank
        factor = s_own / scale if own else 1.0
        specs.append(
            spec._replace(
                path=f"{mlx_prefix}.switch_mlp.{half}",
                rank=r_own,
                scale=s_own,
                part=(i, 2, lo, hi, factor),
                folded_rank=rank,
            )
        )
        lo = hi if own else 0
    return specs


def _mlx_path(path: str, modules: set[str]) -> str:
    """The model's module for a PEFT module path.

    The path itself when the model has it (experts outside ``switch_mlp``, as gpt-oss keeps
    them), else mlx-lm's stacked ``switch_mlp`` path.
    """
    return path if path in modules else stacked_path(path)


def _switch_prefix(experts_module: str, params: Mapping[str, Any]) -> str:
    """The mlx module holding ``switch_mlp`` for Hugging Face's ``X.mlp.experts``.

    ``X.mlp``, or Mixtral's ``X.block_sparse_moe`` when the model has that instead.
    """
    prefix = experts_module.removesuffix(".experts")
    for block in mlx_moe_blocks(prefix):
        if any(k.startswith(f"{block}.switch_mlp.") for k in params):
            return block
    return prefix


def _fused_records(s: Scan) -> dict[str, Any]:
    """How ``convert --to peft`` folded mlx switch factors into fused parameters (file metadata).

    Only well-formed entries that agree with the scanned wrappers are kept; anything else is
    ignored, and the factors are then read as peft defines them (shared ``lora_A``), which is exact.
    """
    out: dict[str, Any] = {}
    for f in s.files:
        text = (f.metadata or {}).get(_FUSED_KEY)
        try:
            loaded = json.loads(text) if text else {}
        except ValueError:
            continue
        if not isinstance(loaded, dict):
            continue
        for key, record in loaded.items():
            module = s.modules.get(key) if isinstance(key, str) else None
            wrapper = module is not None and module.layout == "peft_param_wrapper"
            if module is None or not wrapper or not isinstance(record, dict):
                continue
            experts_module = key.rpartition(".")[0]
            layer = experts_module.removesuffix(".mlp.experts")
            if record.get("mlx") not in mlx_moe_blocks(f"{layer}.mlp"):
                continue
            halves = {}
            for half in ("gate_proj", "up_proj"):
                value = record.get(half)
                if value is None:
                    continue
                if (
                    isinstance(value, list)
                    and len(value) == 2
                    and isinstance(value[0], int)
                    and not isinstance(value[0], bool)
                    and value[0] > 0
                    and isinstance(value[1], (int, float))
                    and not isinstance(value[1], bool)
                    and math.isfinite(value[1])
                    and value[1] != 0
                ):
                    halves[half] = value
                else:
                    halves = {}
                    break
            stacked = sum(v[0] for v in halves.values())
            if key.endswith(".gate_up_proj") and (not halves or stacked != module.rank):
                continue
            out[key] = {"mlx": record["mlx"], **halves}
    return out


def _interleaves_gate_up(cfg: Mapping[str, Any], model: nn.Module | None) -> bool:
    """Whether the base is gpt-oss, whose fused ``gate_up_proj`` alternates gate and up rows."""
    base_class = str(as_mapping(cfg.get("auto_mapping")).get("base_model_class", ""))
    model_type = getattr(getattr(model, "args", None), "model_type", "")
    return base_class.startswith("GptOss") or model_type == "gpt_oss"


def _peft_pairs(spec: _Spec, saved: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """The live parameters for one PEFT module: dense factors transposed, experts stacked."""
    if spec.layout == "peft_per_expert":
        a: dict[int, Any] = {}
        b: dict[int, Any] = {}
        for key, leaf, expert in spec.factors:
            (a if leaf == "a" else b)[expert or 0] = saved[key]
        return [
            (_join(spec.path, "lora_a"), mx.stack([a[e] for e in sorted(a)])),
            (_join(spec.path, "lora_b"), mx.stack([b[e] for e in sorted(b)])),
        ]
    if spec.layout == "peft_param_wrapper":
        # A (E * r, in): experts major; B (out, r * E): experts minor (peft's ParamWrapper).
        (a_key,) = [key for key, leaf, _ in spec.factors if leaf == "a"]
        (b_key,) = [key for key, leaf, _ in spec.factors if leaf == "b"]
        folded_a, folded_b = saved[a_key], saved[b_key]
        folded = spec.folded_rank or spec.rank  # the wrapper's rank (both halves, for gate_up)
        experts = folded_a.shape[0] // folded
        fa = folded_a.reshape(experts, folded, folded_a.shape[1])
        fb = folded_b.reshape(folded_b.shape[0], folded, experts).transpose(2, 0, 1)
        if spec.part is not None:
            which, count, lo, hi, factor = spec.part
            rows = fb.shape[1] // count
            fa = fa[:, lo:hi, :]
            fb = fb[:, which * rows : (which + 1) * rows, lo:hi]
            if factor != 1.0:
                fb = fb / factor
        return [(_join(spec.path, "lora_a"), fa), (_join(spec.path, "lora_b"), fb)]
    live = {"a": "lora_a", "b": "lora_b"}
    # Dense factors are stored transposed; a DoRA magnitude is not.
    return [
        (_join(spec.path, live[leaf]), saved[key].T)
        if leaf in live
        else (_join(spec.path, "m"), saved[key])
        for key, leaf, _ in spec.factors
    ]
