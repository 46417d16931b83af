"""Converting adapters between PEFT's layout and mlx-lm's: ``convert_to_mlx``, ``convert_to_peft``.

Lives here: both conversions and their steps: reading the source (``_source``, ``_arrays``),
the mlx form of PEFT factors (zero-padded, scales folded, when modules differ) and its config,
and the PEFT form of mlx factors (``_peft_weights``; switch experts fused into transformers 5's
``gate_up_proj``/``down_proj`` by ``_fuse_switches``) and its config (``_peft_config``).

May use: MLX, ``._live`` (path helpers), ``._save`` (the atomic write of an adapter),
``._spec``, ``._peft``, and adapterscan's scanner, core, config helpers and errors.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from pathlib import Path
from typing import Any, Literal

import mlx.core as mx
import mlx.nn as nn

from .._config_io import CONFIG_NAME, most_common
from .._core import (
    PEFT_PREFIX,
    AdapterScanError,
    hf_moe_block,
    is_adapter_file,
    per_expert_path,
    stacked_path,
)
from .._scan import Scan, natural_sorted, scan
from ..errors import AdapterMismatchError
from ._live import _join, expected_modules, tied_vocab
from ._peft import _FUSED_KEY, _peft_pairs, _peft_specs
from ._save import SCHEMA_VERSION, _write, _write_files
from ._skeleton import SkeletonUnavailable, model_config, skeleton
from ._spec import _empty_report, _Spec, _specs

PEFT_WEIGHTS_NAME = "adapter_model.safetensors"
# Switch factors of one mlx module, by projection: (spec, lora_a (E, r, in), lora_b (E, out, r)).
_Switch = dict[str, tuple[_Spec, Any, Any]]


def _source(src: str | os.PathLike[str], fmt: str, what: str) -> Scan:
    """The scan of the adapter to convert, refused unless it is in ``fmt`` and has no errors."""
    s = scan(src)
    if s.format != fmt:
        raise AdapterScanError(f"{s.path} is not {what} (format {s.format})")
    if not s.ok:
        raise AdapterMismatchError(f"{s.path} has errors", _empty_report(s))
    return s


def _destination(s: Scan, dst: str | os.PathLike[str], *, force: bool) -> dict[str, str]:
    """Refuse to write over an adapter unless ``force``; then its files are kept as backups.

    The destination must not be the source's folder, nor hold an adapter (its config or weights).
    Forced, every adapter file there is set aside as ``<name>.bak-<time>`` in the same atomic
    step, so the folder then holds the new adapter alone.

    Returns:
        The adapter files to set aside (name -> backup name); none for a fresh destination.

    Raises:
        AdapterScanError: The destination is the source or holds an adapter, and not ``force``.
    """
    target = Path(dst)
    if not target.is_dir():
        return {}
    source = Path(s.path) if Path(s.path).is_dir() else Path(s.path).parent
    same = os.path.samefile(source, target)
    present = sorted(
        p.name for p in target.iterdir() if p.name == CONFIG_NAME or is_adapter_file(p.name)
    )
    if not present:
        return {}
    if not force:
        what = "the adapter being converted" if same else "an adapter"
        raise AdapterScanError(
            f"{target} holds {what} ({', '.join(present)}): nothing was written; choose another "
            "destination, or force it (--force) to keep those files as backups"
        )
    stamp = time.strftime("%Y%m%d-%H%M%S")
    # Linked aside in the atomic step: no byte is read (a FIFO under an adapter's name is not
    # opened), whatever the size of the weights.
    return {name: f"{name}.bak-{stamp}" for name in present}


def _arrays(s: Scan) -> dict[str, Any]:
    """Every tensor of the adapter (MLX loads them lazily)."""
    arrays: dict[str, Any] = {}
    for f in s.files:
        loaded: Any = mx.load(f.path)
        arrays.update(loaded)
    return arrays


# --------------------------------------------------------------------------------------------
# PEFT -> mlx
# --------------------------------------------------------------------------------------------


def convert_to_mlx(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    base: str | os.PathLike[str] | None = None,
    drop_embedding_copy: bool = False,
    force: bool = False,
) -> Scan:
    """Write a PEFT adapter as an adapter stock mlx-lm ``load_adapters`` loads with the same result.

    Factors are transposed (dense, embedding) or stacked (per-expert keys), and each module's
    scale (``lora_alpha / r``, or ``/ sqrt(r)`` with rsLoRA, ``alpha_pattern`` by first match) is
    kept. When modules differ in rank or scale, every factor is zero-padded to the largest rank and
    each module's scale is folded into its ``lora_b``, with ``scale: 1.0`` (exact: padding adds
    zeros to the product, and the scale multiplies it either way). ``keys`` are the full module
    paths, so mlx-lm wraps exactly those modules.

    Args:
        src: The PEFT adapter folder.
        dst: The folder to write (created; its other files are kept; written atomically).
        base: The base model folder: built with mlx-lm's classes, it decides each module's
            path (Mixtral's ``block_sparse_moe``, experts outside ``switch_mlp``) and whether the
            embedding is tied, and the output is checked against it before anything is written.
        drop_embedding_copy: Leave out peft's copy of a targeted embedding
            (``base_layer.weight``); without it such an adapter is refused.
        force: Write over a destination that holds an adapter (the source's included); its
            files are kept beside as ``<name>.bak-<time>``. Without it, that is refused.

    Returns:
        The scan of the written adapter.
    """
    s = _source(src, "peft", "a PEFT adapter")
    aside = _destination(s, dst, force=force)
    model, tied = _base_model(base)
    specs = _peft_specs(
        s, model, set(), drop_embedding_copy=drop_embedding_copy, tied=tied, live=False
    )
    if model is not None and base is not None:
        _check_against(specs, model, base)
    arrays = _arrays(s)
    pairs = {spec.path: dict(_peft_pairs(spec, arrays)) for spec in specs}
    ranks = {spec.rank for spec in specs}
    scales = {float(spec.scale) for spec in specs if isinstance(spec.scale, float)}
    uniform = len(ranks) == 1 and len(scales) == 1
    r_max = max(ranks)
    weights = _mlx_weights(specs, pairs, r_max, fold=not uniform)
    scale = next(iter(scales)) if uniform else 1.0
    dropout = next((spec.dropout for spec in specs), 0.0)
    out_cfg = _mlx_config(s, specs, rank=r_max, scale=scale, dropout=dropout)
    return _write(dst, weights, out_cfg, aside=aside)


def _base_model(base: str | os.PathLike[str] | None) -> tuple[nn.Module | None, int | None]:
    """The base's model built with mlx-lm's classes, and the vocabulary size if it ties.

    The model is None when mlx-lm cannot build it; the vocabulary size is given when the model
    ties its token embedding to the output head. Without a buildable model,
    ``tie_word_embeddings`` and ``vocab_size`` of its config decide.
    """
    if base is None:
        return None, None
    try:
        model = skeleton(base)
    except SkeletonUnavailable:
        try:
            cfg = model_config(base)
        except SkeletonUnavailable:
            return None, None
        vocab = cfg.get("vocab_size")
        if cfg.get("tie_word_embeddings", False) and isinstance(vocab, int):
            return None, vocab
        return None, None
    return model, tied_vocab(model)


def _check_against(specs: list[_Spec], model: nn.Module, base: str | os.PathLike[str]) -> None:
    """Refuse, before anything is written, modules the base's model does not have as written."""
    rows = {path: (kind, e) for path, kind, _, _, e in expected_modules(model).targets()}
    wrong = []
    for spec in specs:
        row = rows.get(spec.path)
        if row is None:
            wrong.append(f"{spec.path}: no such module in the base")
        elif row[0] != spec.kind:
            wrong.append(f"{spec.path}: a {row[0]} module in the base, not a {spec.kind}")
    if wrong:
        raise AdapterScanError(
            f"the converted adapter would not fit {base}, so nothing was written: "
            + "; ".join(wrong[:10])
            + (f"; and {len(wrong) - 10} more" if len(wrong) > 10 else "")
        )


def _mlx_weights(
    specs: list[_Spec], pairs: dict[str, dict[str, Any]], r_max: int, *, fold: bool
) -> dict[str, Any]:
    """mlx-lm's factors of every module; with ``fold``, padded to ``r_max``, scale in ``lora_b``."""
    weights: dict[str, Any] = {}
    for spec in specs:
        tensors = pairs[spec.path]
        a = tensors[_join(spec.path, "lora_a")]
        b = tensors[_join(spec.path, "lora_b")]
        if fold:
            pad = r_max - spec.rank
            if a.ndim == 3:  # (E, r, in) / (E, out, r)
                a = mx.pad(a, [(0, 0), (0, pad), (0, 0)])
                b = mx.pad(b, [(0, 0), (0, 0), (0, pad)]) * spec.scale
            else:  # (in, r) / (r, out)
                a = mx.pad(a, [(0, 0), (0, pad)])
                b = mx.pad(b, [(0, pad), (0, 0)]) * spec.scale
        weights[_join(spec.path, "lora_a")] = a
        weights[_join(spec.path, "lora_b")] = b.astype(a.dtype)
        if _join(spec.path, "m") in tensors:
            weights[_join(spec.path, "m")] = tensors[_join(spec.path, "m")]
    return weights


def _mlx_config(
    s: Scan, specs: list[_Spec], *, rank: int, scale: float, dropout: float
) -> dict[str, Any]:
    """The mlx-lm config of a converted PEFT adapter: one rank, scale and dropout for all."""
    cfg = s.config or {}
    paths = natural_sorted((spec.path for spec in specs), key=str)
    out_cfg: dict[str, Any] = {
        "fine_tune_type": "dora" if any(spec.variant == "dora" for spec in specs) else "lora",
        "num_layers": -1,
        "lora_parameters": {"rank": rank, "scale": scale, "dropout": dropout, "keys": paths},
        "rank": rank,
        "scale": scale,
        "dropout": dropout,
        "adapterscan": {
            "schema_version": SCHEMA_VERSION,
            "kind": "converted",
            "save_id": uuid.uuid4().hex,
            "source": {"format": "peft", "path": str(s.path)},
            "base_fingerprint": None,
            "modules": {
                spec.path: {
                    "kind": spec.kind,
                    "variant": spec.variant,
                    "rank": rank,
                    "scale": scale,
                    "dropout": dropout,
                }
                for spec in specs
            },
        },
    }
    for key in ("base_model_name_or_path", "revision"):
        if key in cfg:
            out_cfg[key] = cfg[key]
    return out_cfg


# --------------------------------------------------------------------------------------------
# mlx -> PEFT
# --------------------------------------------------------------------------------------------


def convert_to_peft(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    experts: Literal["fused", "per-expert"] = "fused",
    force: bool = False,
) -> Scan:
    """Write an mlx adapter in Hugging Face PEFT's layout (``adapter_model.safetensors``).

    Dense and embedding factors are transposed, DoRA magnitudes of linear layers become
    ``lora_magnitude_vector``. Switch (MoE) factors go where the transformers version in use keeps
    its experts:

    - ``experts="fused"`` (transformers 5, which fuses experts into 3-D parameters): peft
      ``target_parameters`` on ``X.mlp.experts.gate_up_proj`` and ``X.mlp.experts.down_proj``
      (Mixtral's ``block_sparse_moe`` is ``mlp`` there). ``down_proj``'s factors are folded as
      peft's ``ParamWrapper`` holds them (``lora_A`` ``(E * r, in)``, ``lora_B`` ``(out, r * E)``,
      experts minor). ``gate_proj`` and ``up_proj`` share one wrapper whose output stacks gate
      over up: its ``lora_A`` stacks both ``lora_a`` (rank ``r_gate + r_up``) and its ``lora_B`` is
      block-diagonal, which computes exactly both deltas; a scale that differs from gate's is
      folded into up's block. How the pair was stacked is kept in the file's metadata, so
      converting back gives the original tensors. ``lora_dropout`` is written as 0 (peft's wrapper
      refuses dropout on parameters; it only matters for training).
    - ``experts="per-expert"`` (transformers 4): one module per expert under the Hugging Face names
      (``mlp.experts.{e}.X``; Mixtral ``experts.{e}.w1/w3/w2``).

    The config has ``target_modules`` = the full module paths, ``r``/``lora_alpha`` of the most
    common module, and ``rank_pattern``/``alpha_pattern`` (escaped full paths) for the others, so
    peft rebuilds every module with its own rank and scale (``lora_alpha = scale * r``).

    With ``force``, a destination holding an adapter (the source's included) is written over,
    its files kept beside as ``<name>.bak-<time>``; without it, that is refused.

    Raises:
        AdapterScanError: The adapter is not in mlx's layout, or holds what PEFT cannot (DoRA on
            an embedding, layer-wrapped or list-valued factors), or the destination holds an
            adapter and ``force`` is not given.
    """
    s = _source(src, "mlx", "an mlx adapter")
    aside = _destination(s, dst, force=force)
    specs = _specs(s, None, set())
    arrays = _arrays(s)
    weights, switches = _peft_weights(specs, arrays, experts)
    # Fused parameters: key -> (rank, lora_alpha); how each was stacked, for the way back.
    params, records = _fuse_switches(switches, weights)
    weights = {k: mx.contiguous(v) for k, v in weights.items()}
    config = _peft_config(s, specs, arrays, params, experts)
    metadata = {"format": "pt"}
    if records:
        metadata[_FUSED_KEY] = json.dumps(records, sort_keys=True)
    return _write_files(
        dst,
        PEFT_WEIGHTS_NAME,
        weights,
        metadata,
        config,
        ensure_ascii=True,
        aside=aside,
    )


def _alpha(spec: _Spec) -> float:
    """Peft's ``lora_alpha`` of a module: ``scale * r``."""
    if not isinstance(spec.scale, float):
        raise AdapterScanError(f"{spec.path}: a per-expert scale array has no PEFT form")
    return spec.scale * spec.rank


def _expert_paths(spec: _Spec, count: int) -> list[str]:
    """Hugging Face's per-expert module paths of a switch module (``mlp.experts.{e}.X``)."""
    return [per_expert_path(stacked_path(spec.path), e) for e in range(count)]


def _peft_weights(
    specs: list[_Spec], arrays: dict[str, Any], experts: str
) -> tuple[dict[str, Any], dict[str, _Switch]]:
    """Peft's tensors of every module, and (``experts="fused"``) the switch factors to fuse.

    Returns:
        The tensors by peft key, and the switch factors by mlx module prefix (``X.mlp``).
    """
    pre = PEFT_PREFIX
    weights: dict[str, Any] = {}
    switches: dict[str, _Switch] = {}
    for spec in specs:
        if spec.layout not in ("mlx_linear", "mlx_embedding", "mlx_switch", "mlx_switch_legacy"):
            raise AdapterScanError(f"{spec.path}: {spec.layout} factors have no PEFT form here")
        a = arrays[_join(spec.path, "lora_a")]
        b = arrays[_join(spec.path, "lora_b")]
        m = arrays.get(_join(spec.path, "m"))
        if spec.kind == "switch":
            if a.ndim == 2:  # mlx-lm < 0.28.3: (E*r, in)
                a = a.reshape(b.shape[0], spec.rank, -1)
            if experts == "fused":
                prefix, found, proj = spec.path.rpartition(".switch_mlp.")
                if not found:
                    raise AdapterScanError(
                        f"{spec.path}: transformers' fused expert parameters are written for "
                        "experts stacked under `switch_mlp` only (this model keeps them "
                        "elsewhere, as gpt-oss does, whose fused gate_up_proj interleaves gate "
                        "and up rows); use experts='per-expert'"
                    )
                switches.setdefault(prefix, {})[proj] = (spec, a, b)
                continue
            for e, p in enumerate(_expert_paths(spec, a.shape[0])):
                weights[f"{pre}{p}.lora_A.weight"] = a[e]
                weights[f"{pre}{p}.lora_B.weight"] = b[e]
        elif spec.kind == "embedding":
            if m is not None:
                raise AdapterScanError(
                    f"{spec.path}: DoRA on an embedding has no PEFT form (magnitude axes differ)"
                )
            weights[f"{pre}{spec.path}.lora_embedding_A"] = a.T
            weights[f"{pre}{spec.path}.lora_embedding_B"] = b.T
        else:
            weights[f"{pre}{spec.path}.lora_A.weight"] = a.T
            weights[f"{pre}{spec.path}.lora_B.weight"] = b.T
            if m is not None:
                weights[f"{pre}{spec.path}.lora_magnitude_vector"] = m
    return weights, switches


def _fuse_switches(
    switches: dict[str, _Switch], weights: dict[str, Any]
) -> tuple[dict[str, tuple[int, float]], dict[str, Any]]:
    """Switch factors as transformers 5's fused expert parameters, added to ``weights``.

    Returns:
        Each fused parameter's (rank, lora_alpha), and how each was stacked (the file's record).
    """
    params: dict[str, tuple[int, float]] = {}
    records: dict[str, Any] = {}
    for prefix, projs in switches.items():
        other = sorted(set(projs) - {"gate_proj", "up_proj", "down_proj"})
        if other:
            raise AdapterScanError(
                f"{prefix}.switch_mlp.{other[0]}: no fused transformers parameter holds it; "
                "use experts='per-expert'"
            )
        module = f"{hf_moe_block(prefix)}.experts"
        halves = [projs.get("gate_proj"), projs.get("up_proj")]
        if any(halves):
            # peft nests the first registered parameter (gate_up_proj) inside down_proj's wrapper.
            where = f"{module}.base_layer" if "down_proj" in projs else module
            key = f"{module}.gate_up_proj"
            params[key], records[key] = _fuse_gate_up(prefix, where, halves, weights)
        if "down_proj" in projs:
            spec, a, b = projs["down_proj"]
            n_exp = a.shape[0]
            weights[f"{PEFT_PREFIX}{module}.lora_A.weight"] = a.reshape(n_exp * spec.rank, -1)
            weights[f"{PEFT_PREFIX}{module}.lora_B.weight"] = b.transpose(1, 2, 0).reshape(
                b.shape[1], spec.rank * n_exp
            )
            key = f"{module}.down_proj"
            params[key] = (spec.rank, _alpha(spec))
            records[key] = {"mlx": prefix}
    return params, records


def _fuse_gate_up(
    prefix: str,
    where: str,
    halves: list[tuple[_Spec, Any, Any] | None],
    weights: dict[str, Any],
) -> tuple[tuple[int, float], dict[str, Any]]:
    """``gate_proj`` and ``up_proj`` as one ``gate_up_proj`` wrapper at ``where``.

    ``lora_A`` stacks both ``lora_a`` (rank ``r_gate + r_up``), ``lora_B`` is block-diagonal with
    up's block scaled by its scale over gate's (so the wrapper's one scale is gate's).

    Returns:
        The wrapper's (rank, lora_alpha), and the record of each half's rank and scale.
    """
    ref = next(h for h in halves if h is not None)
    n_exp, rows = ref[2].shape[0], ref[2].shape[1]
    scale_ref = _alpha(ref[0]) / ref[0].rank
    ranks = [h[0].rank if h else 0 for h in halves]
    total = sum(ranks)
    stacked_a = mx.concatenate([h[1] for h in halves if h is not None], axis=1)
    blocks = []
    for i, h in enumerate(halves):
        cols = []
        for j, r_j in enumerate(ranks):
            if r_j == 0:
                continue
            if j == i and h is not None:
                factor = (_alpha(h[0]) / h[0].rank) / scale_ref
                cols.append(h[2] if factor == 1.0 else h[2] * factor)
            else:
                cols.append(mx.zeros((n_exp, rows, r_j), dtype=ref[2].dtype))
        blocks.append(mx.concatenate(cols, axis=2))
    stacked_b = mx.concatenate(blocks, axis=1)  # (E, 2 * I, r_gate + r_up)
    weights[f"{PEFT_PREFIX}{where}.lora_A.weight"] = stacked_a.reshape(n_exp * total, -1)
    weights[f"{PEFT_PREFIX}{where}.lora_B.weight"] = stacked_b.transpose(1, 2, 0).reshape(
        2 * rows, total * n_exp
    )
    record = {"mlx": prefix} | {
        name: [h[0].rank, _alpha(h[0]) / h[0].rank]
        for name, h in zip(("gate_proj", "up_proj"), halves, strict=True)
        if h is not None
    }
    return (total, scale_ref * total), record


def _peft_config(
    s: Scan,
    specs: list[_Spec],
    arrays: dict[str, Any],
    params: dict[str, tuple[int, float]],
    experts: str,
) -> dict[str, Any]:
    """The PEFT config: the most common rank and alpha, patterns for the other modules."""
    plain = [spec for spec in specs if not (spec.kind == "switch" and experts == "fused")]
    r = most_common([spec.rank for spec in plain] + [p[0] for p in params.values()])
    a_common = most_common([_alpha(spec) for spec in plain] + [p[1] for p in params.values()])
    targets: list[str] = []
    for spec in plain:
        if spec.kind == "switch":
            targets += _expert_paths(spec, arrays[_join(spec.path, "lora_b")].shape[0])
        else:
            targets.append(spec.path)
    config: dict[str, Any] = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": r,
        "lora_alpha": a_common,
        "lora_dropout": most_common([spec.dropout for spec in specs]),
        "target_modules": targets or None,
        "rank_pattern": {
            re.escape(spec.path): spec.rank
            for spec in specs
            if spec.kind != "switch" and spec.rank != r
        }
        | {re.escape(k): p[0] for k, p in params.items() if p[0] != r},
        "alpha_pattern": {
            re.escape(spec.path): _alpha(spec)
            for spec in specs
            if spec.kind != "switch" and _alpha(spec) != a_common
        }
        | {re.escape(k): p[1] for k, p in params.items() if p[1] != a_common},
        "use_rslora": False,
        "use_dora": any(spec.variant == "dora" for spec in specs),
        "bias": "none",
        "inference_mode": True,
        "base_model_name_or_path": (s.config or {}).get("model"),
    }
    if params:
        config["target_parameters"] = sorted(params)
        config["lora_dropout"] = 0.0
    if experts == "per-expert":
        # Per-expert modules of a switch layer share the switch's rank and scale.
        for spec in specs:
            if spec.kind == "switch":
                count = arrays[_join(spec.path, "lora_b")].shape[0]
                for path in _expert_paths(spec, count):
                    key = re.escape(path)
                    if spec.rank != r:
                        config["rank_pattern"][key] = spec.rank
                    if _alpha(spec) != a_common:
                        config["alpha_pattern"][key] = _alpha(spec)
    return config
