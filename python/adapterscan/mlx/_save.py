"""Saving a live model's adapters: ``save_adapters``, ``save_trainable_adapters``.

Lives here: the config built from the live modules (``_build_config``: mlx-lm's schema plus the
``adapterscan`` block) and the atomic write of the weights and the config together (``_write``
for an mlx adapter, also used by ``convert_to_mlx``; ``_write_files`` under it, also used by
``convert_to_peft``).

May use: MLX, ``._live``, and adapterscan's atomic writer, config helpers, scanner and errors.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from .._atomic import replace_files
from .._config_io import CONFIG_NAME, config_writer, most_common
from .._core import SAVE_ID_KEY
from .._scan import Scan, natural_sorted, scan
from ..errors import SaveError
from ._live import (
    _join,
    _layer_count,
    _Live,
    _wrapped_base_name,
    base_fingerprint,
    live_adapters,
)

SCHEMA_VERSION = 1
WEIGHTS_NAME = "adapters.safetensors"
# Fields of a caller's config that describe the adapter's topology: always rewritten from the
# live model, never trusted.
_OWNED_FIELDS = (
    "fine_tune_type",
    "num_layers",
    "lora_parameters",
    "rank",
    "scale",
    "dropout",
    "unsloth_mlx_lora_module_paths",
    "unsloth_mlx_lora_module_ranks",
    "unsloth_mlx_lora_module_scales",
    "adapterscan",
)


def _quantization_of(modules: list[_Live]) -> dict[str, dict[str, Any]]:
    out = {}
    for x in modules:
        base = x.module.get("linear") if isinstance(x.module, nn.Module) else None
        if base is None:
            base = x.module.get("embedding")
        bits = getattr(base, "bits", None)
        if bits:
            out[x.path] = {
                "bits": int(bits),
                "group_size": int(getattr(base, "group_size", 0)),
                "mode": str(getattr(base, "mode", "affine")),
            }
    return out


def _build_config(
    model: nn.Module,
    modules: list[_Live],
    caller: Mapping[str, Any] | None,
    *,
    kind: str,
    full_tensors: list[str],
    save_id: str,
) -> dict[str, Any]:
    cfg = {k: v for k, v in dict(caller or {}).items() if k not in _OWNED_FIELDS}
    paths = [x.path for x in modules]
    cfg["fine_tune_type"] = "dora" if any(x.variant == "dora" for x in modules) else "lora"
    cfg["num_layers"] = _layer_count(model)
    rank = most_common([x.rank for x in modules])
    scale = most_common([x.scale for x in modules])
    dropout = most_common([x.dropout for x in modules])
    cfg["lora_parameters"] = {"rank": rank, "scale": scale, "dropout": dropout, "keys": paths}
    cfg["rank"], cfg["scale"], cfg["dropout"] = rank, scale, dropout
    ours: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "kind": kind,
        "save_id": save_id,
        "base_fingerprint": base_fingerprint(model),
        "modules": {
            x.path: {
                "kind": x.kind,
                "variant": x.variant,
                "rank": x.rank,
                "scale": x.scale,
                "dropout": x.dropout,
            }
            for x in modules
        },
    }
    quant = _quantization_of(modules)
    if quant:
        ours["base_quantization"] = quant
    if full_tensors:
        ours["full_tensors"] = full_tensors
    cfg["adapterscan"] = ours
    return cfg


def _write(
    path: str | os.PathLike[str],
    weights: dict[str, Any],
    cfg: dict[str, Any],
    *,
    aside: Mapping[str, str] | None = None,
) -> Scan:
    ours = cfg["adapterscan"]
    metadata = {
        "format": "mlx",
        "adapterscan_schema": str(SCHEMA_VERSION),
        SAVE_ID_KEY: ours["save_id"],
        "base_fingerprint": str(ours.get("base_fingerprint") or ""),
        "fine_tune_type": cfg["fine_tune_type"],
    }
    mx.eval(list(weights.values()))
    return _write_files(
        path,
        WEIGHTS_NAME,
        weights,
        metadata,
        cfg,
        ensure_ascii=False,
        aside=aside,
    )


def _write_files(
    path: str | os.PathLike[str],
    weights_name: str,
    weights: dict[str, Any],
    metadata: dict[str, str],
    cfg: dict[str, Any],
    *,
    ensure_ascii: bool,
    aside: Mapping[str, str] | None = None,
) -> Scan:
    """Write the weights file and ``adapter_config.json`` together, atomically; scan them.

    Args:
        path: The adapter folder (created if needed; its other files are kept).
        weights_name: The weights file's name (mlx's or peft's).
        weights: The tensors, in the order to write them.
        metadata: The safetensors metadata.
        cfg: The config.
        ensure_ascii: See :func:`adapterscan._config_io.config_text`.
        aside: Entries of the folder kept under another name in the same step (old -> new).
    """

    def write_weights(p: Path) -> None:
        mx.save_safetensors(str(p), weights, metadata=metadata)

    target = Path(path)
    write_config = config_writer(cfg, ensure_ascii=ensure_ascii)
    writers: dict[str, Callable[[Path], None]] = {
        weights_name: write_weights,
        CONFIG_NAME: write_config,
    }
    try:
        replace_files(target, writers, aside=aside)
    except (OSError, RuntimeError) as e:
        # A full disk, a read-only or vanished folder: nothing was swapped in (mlx reports a
        # failed write as a RuntimeError).
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise SaveError(
            f"{target} could not be written ({reason}): the adapter there is unchanged"
        ) from e
    return scan(target)


def save_adapters(
    model: nn.Module,
    path: str | os.PathLike[str],
    config: Mapping[str, Any] | None = None,
) -> Scan:
    """Save exactly the adapter tensors of ``model`` and a complete ``adapter_config.json``.

    Exported: ``lora_a``/``lora_b`` of every module owning both (whatever its class), and ``m``
    of DoRA modules; never base weights, quantization tensors, half pairs or look-alike names.
    The config is mlx-lm's schema (stock ``mlx_lm`` ``load_adapters`` reads it) with
    ``fine_tune_type`` and ``lora_parameters`` taken from the live modules, ``keys`` set to the
    exact saved module paths, top-level ``rank``/``scale``/``dropout`` mirrors, and an
    ``adapterscan`` block with the per-module rank, scale and dropout, a schema version, a save
    id (also in the safetensors metadata) and a fingerprint of the base. Caller values for those
    fields are replaced by the live ones; other caller fields are kept.

    Both files land together or not at all, even if the process is killed; saving into the
    folder the adapter was loaded from works.

    Args:
        model: A model with LoRA/DoRA wrappers (mlx-lm's or any module owning the pair).
        path: The adapter folder (created if needed; its other files are kept).
        config: Extra config fields to keep (e.g. the training arguments).

    Returns:
        The scan of what was written.

    Raises:
        SaveError: The model has no LoRA modules (see :func:`save_trainable_adapters`).
    """
    modules = live_adapters(model)
    if not modules:
        raise SaveError(
            "the model has no LoRA/DoRA modules (no module owns both lora_a and lora_b); "
            "nothing was written. Use save_trainable_adapters for full or continued training."
        )
    weights = {_join(x.path, leaf): t for x in modules for leaf, t in x.tensors.items()}
    cfg = _build_config(
        model, modules, config, kind="lora", full_tensors=[], save_id=uuid.uuid4().hex
    )
    return _write(path, weights, cfg)


def save_trainable_adapters(
    model: nn.Module,
    path: str | os.PathLike[str],
    config: Mapping[str, Any] | None = None,
) -> Scan:
    """Save the adapter tensors plus every trainable non-LoRA tensor (continued pretraining).

    Trainable tensors outside the LoRA pairs (norms, embeddings, biases of wrapped layers) are
    saved under their base names and listed in the config's ``adapterscan.full_tensors``;
    the base weights inside LoRA wrappers are never saved. Stock mlx-lm cannot load such an
    adapter (it refuses non-LoRA tensors); :func:`load_adapters` can.

    Raises:
        SaveError: Nothing is trainable and there is no LoRA module.
    """
    modules = live_adapters(model)
    wrappers = {x.path for x in modules}
    lora_names = {_join(x.path, leaf) for x in modules for leaf in x.tensors}
    extra: dict[str, Any] = {}
    for name, value in tree_flatten(model.trainable_parameters()):
        if name in lora_names:
            continue
        base_name = _wrapped_base_name(name, wrappers)
        module, _, leaf = base_name.rpartition(".")
        if module in wrappers and leaf in ("weight", "scales", "biases"):
            continue  # a base weight leaked into the trainable set: never saved
        extra[base_name] = value
    if not modules and not extra:
        raise SaveError(
            "nothing is trainable and the model has no LoRA modules; nothing was written"
        )
    weights = {_join(x.path, leaf): t for x in modules for leaf, t in x.tensors.items()}
    weights.update(extra)
    full = natural_sorted(extra, key=str)
    if modules:
        cfg = _build_config(
            model, modules, config, kind="trainable", full_tensors=full, save_id=uuid.uuid4().hex
        )
    else:
        cfg = {k: v for k, v in dict(config or {}).items() if k not in _OWNED_FIELDS}
        cfg["fine_tune_type"] = "full"
        cfg["num_layers"] = _layer_count(model)
        cfg["adapterscan"] = {
            "schema_version": SCHEMA_VERSION,
            "kind": "trainable",
            "save_id": uuid.uuid4().hex,
            "base_fingerprint": base_fingerprint(model),
        }
    return _write(path, weights, cfg)
