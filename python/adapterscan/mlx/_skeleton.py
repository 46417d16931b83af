"""A base model's structure from its ``config.json``, built with mlx-lm's own classes.

Lives here: ``skeleton(folder)`` (the model mlx-lm would load from a folder, quantized as the
config and the headers say, with no weight read: MLX arrays are lazy, so nothing is allocated),
``base_expected(folder)`` (its table of adaptable modules, walked as a live model is) and
``SkeletonUnavailable`` (mlx-lm does not implement the folder's model type, or the folder has
no usable config).

May use: MLX, mlx-lm, ``._live`` and adapterscan's scanner and errors.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

import mlx.core as mx
import mlx.nn as nn

from .._core import AdapterScanError, ExpectedModules, read_config_bytes
from .._scan import scan
from ..errors import config_error
from ._live import expected_modules

Symlinks = Literal["follow", "inside", "refuse"]


class SkeletonUnavailable(Exception):
    """mlx-lm cannot build this folder's model: the header-only reading is the fallback."""


def model_config(folder: str | os.PathLike[str], symlinks: Symlinks = "follow") -> dict[str, Any]:
    """A model folder's ``config.json``, read through the one opener.

    That is a regular file of at most 16 MiB; a FIFO or a device is refused before any read.

    Raises:
        SkeletonUnavailable: The folder has no ``config.json``.
        ConfigError: It cannot be read, or is not a JSON object.
    """
    path = Path(folder) / "config.json"
    if not os.path.lexists(path):
        raise SkeletonUnavailable(f"{folder} has no config.json")
    raw = read_config_bytes(path, folder=folder, symlinks=symlinks)
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise config_error(f"{path} cannot be read: {e}", str(path)) from e
    if not isinstance(value, dict):
        raise config_error(f"{path} is not a JSON object", str(path))
    return value


class _Header:
    """A tensor as its header describes it, standing in for the array mlx-lm would load."""

    def __init__(self, shape: tuple[int, ...], dtype: str) -> None:
        self.shape = shape
        self.dtype = mx.uint8 if dtype == "U8" else mx.float16


def _quantization(config: dict[str, Any]) -> dict[str, Any] | None:
    """The quantization mlx-lm applies when loading (``quantization``, or an mxfp one)."""
    quantization = config.get("quantization")
    if isinstance(quantization, dict):
        return quantization
    legacy = config.get("quantization_config")
    method = legacy.get("quant_method") if isinstance(legacy, dict) else None
    if method in ("mxfp4", "mxfp8"):
        return {"group_size": 32, "bits": 4 if method == "mxfp4" else 8, "mode": method}
    return None


def _quantize(
    model: nn.Module, folder: Path, quantization: dict[str, Any], symlinks: Symlinks
) -> None:
    """Quantize the skeleton as mlx-lm's ``load_model`` does, from the headers' names and shapes."""
    from mlx_lm.utils import infer_quant_config

    try:
        tensors = scan(folder, read_config=False, symlinks=symlinks).tensors
    except AdapterScanError as e:
        # Files the adapter resolver does not take (several weights, no index): the header
        # reading of the base handles them, and reports what is wrong.
        raise SkeletonUnavailable(f"{folder}: its headers cannot be listed here: {e}") from e
    headers = {name: _Header(t.shape, t.dtype) for name, t in tensors.items()}

    def class_predicate(p: str, m: nn.Module) -> Any:
        if p in quantization:
            return quantization[p]
        if not hasattr(m, "to_quantized") or f"{p}.scales" not in headers:
            return False
        return infer_quant_config(p, m, headers)

    nn.quantize(
        model,
        group_size=quantization["group_size"],
        bits=quantization["bits"],
        mode=quantization.get("mode", "affine"),
        class_predicate=class_predicate,
    )


def skeleton(folder: str | os.PathLike[str], symlinks: Symlinks = "follow") -> nn.Module:
    """The model mlx-lm would load from ``folder``, with no weight read.

    Raises:
        SkeletonUnavailable: mlx-lm does not implement the model type, its classes refuse the
            config, or the folder has no ``config.json``.
        ConfigError: The config cannot be read.
    """
    from mlx_lm.utils import _get_classes

    root = Path(folder)
    config = model_config(root, symlinks)
    if "model_file" in config:
        raise SkeletonUnavailable(f"{root}: a custom model_file is never imported")
    if not isinstance(config.get("model_type"), str):
        raise SkeletonUnavailable(f"{root / 'config.json'} gives no model_type")
    try:
        model_class, args_class = _get_classes(config=config)
    except (KeyError, TypeError, ValueError) as e:
        raise SkeletonUnavailable(f"{root}: {e}") from e
    try:
        model = model_class(args_class.from_dict(config))
        quantization = _quantization(config)
        if quantization is not None:
            _quantize(model, root, quantization, symlinks)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        raise SkeletonUnavailable(
            f"{root / 'config.json'}: mlx-lm cannot build the model: {e}"
        ) from e
    return model


def base_expected(folder: str | os.PathLike[str], symlinks: Symlinks = "follow") -> ExpectedModules:
    """The table of modules a base folder offers, from mlx-lm's classes (see :func:`skeleton`)."""
    model = skeleton(folder, symlinks)
    return expected_modules(model, source=f"mlx-lm classes built from {folder}")
