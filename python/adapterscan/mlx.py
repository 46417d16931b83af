"""adapterscan for live MLX models (needs ``pip install "adapterscan[mlx]"``).

- ``expected_modules(model)`` walks a model's modules and produces the same table a base folder
  gives, so ``check(model, adapter)`` answers "will this adapter fit?" before a tensor is loaded.
- ``save_adapters(model, path)`` writes exactly the adapter tensors and a complete
  ``adapter_config.json``, atomically; ``save_trainable_adapters`` adds trainable full tensors.
- ``load_adapters(model, path)`` checks first, rebuilds mlx-lm's wrappers at the saved paths,
  binds the tensors strictly, freezes the base and leaves the model in eval mode.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import uuid
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, NamedTuple

try:
    import mlx.core as mx
    import mlx.nn as nn
    from mlx.utils import tree_flatten
except ImportError as e:  # pragma: no cover - exercised only without mlx
    raise ImportError(
        f'adapterscan.mlx needs MLX ({e}); install it with: pip install "adapterscan[mlx]"'
    ) from e

from ._atomic import replace_files
from ._check import Report
from ._check import check as _check
from ._config_io import CONFIG_NAME, as_mapping, config_writer, most_common
from ._core import AdapterScanError, ExpectedModules, per_expert_path, stacked_path
from ._scan import Scan, scan
from .errors import (
    AdapterDataError,
    AdapterMismatchError,
    BaseMismatchWarning,
    SaveError,
    config_error,
)

__all__ = [
    "check",
    "convert_to_mlx",
    "convert_to_peft",
    "expected_modules",
    "load_adapters",
    "save_adapters",
    "save_trainable_adapters",
]


def _switch_classes() -> tuple[Any, ...]:
    try:
        from mlx_lm.models.switch_layers import QuantizedSwitchLinear, SwitchLinear
    except ImportError:
        return ()
    return (SwitchLinear, QuantizedSwitchLinear)


def _lora_classes() -> tuple[Any, ...]:
    try:
        from mlx_lm.tuner.dora import DoRAEmbedding, DoRALinear
        from mlx_lm.tuner.lora import LoRAEmbedding, LoRALinear, LoRASwitchLinear
    except ImportError:
        return ()
    return (LoRALinear, LoRASwitchLinear, LoRAEmbedding, DoRALinear, DoRAEmbedding)


def _unpacked(module: Any, cols: int) -> int:
    bits = getattr(module, "bits", None)
    return cols * 32 // bits if bits else cols


def _row(path: str, m: Any) -> tuple[str, str, int | None, int | None, int | None] | None:
    switch = _switch_classes()
    if switch and isinstance(m, switch):
        e, out, cols = m.weight.shape
        return (path, "switch", _unpacked(m, cols), out, e)
    if isinstance(m, (nn.Linear, nn.QuantizedLinear)):
        out, cols = m.weight.shape
        return (path, "linear", _unpacked(m, cols), out, None)
    if isinstance(m, (nn.Embedding, nn.QuantizedEmbedding)):
        vocab, cols = m.weight.shape
        return (path, "embedding", vocab, _unpacked(m, cols), None)
    return None


def expected_modules(model: nn.Module) -> ExpectedModules:
    """The table of modules a live model offers to adapters.

    Linear, switch (stacked experts) and embedding layers, quantized or not, with their true
    input widths; a module already wrapped by an mlx-lm LoRA/DoRA class is reported at the
    wrapper's path with its base layer's dims. List-indexed paths (``...layers.0``) and VLM roots
    (``language_model.``) are kept as they are.

    Args:
        model: Any ``mlx.nn.Module``.

    Returns:
        The table, to hand to :func:`adapterscan.check` or :func:`check`.
    """
    wrappers = _lora_classes()
    modules = model.named_modules()
    wrapped = {path for path, m in modules if wrappers and isinstance(m, wrappers)}
    rows = []
    for path, m in modules:
        if path.rpartition(".")[0] in wrapped:
            continue  # the base layer inside a wrapper: reported at the wrapper's path
        if path in wrapped:
            base = getattr(m, "linear", None)
            if base is None:
                base = getattr(m, "embedding", None)
            row = _row(path, base) if base is not None else None
        else:
            row = _row(path, m)
        if row is not None:
            rows.append(row)
    params = [(k, [int(d) for d in v.shape]) for k, v in _base_params(model)]
    return ExpectedModules(rows, params, "live model")


def check(
    model: nn.Module,
    adapter: str | os.PathLike[str] | Scan,
    *,
    config: str | os.PathLike[str] | None = None,
) -> Report:
    """Check that an adapter fits a live MLX model, before loading any tensor.

    Args:
        model: The model the adapter is meant for (wrapped or not).
        adapter: An adapter folder, file, shard index, or a finished scan.
        config: An ``adapter_config.json`` to use instead of the one beside the weights.

    Returns:
        The same report as :func:`adapterscan.check` gives for a base folder.
    """
    return _check(adapter, expected_modules(model), config=config)


# --------------------------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------------------------

SCHEMA_VERSION = 1
WEIGHTS_NAME = "adapters.safetensors"
_FACTORS = ("lora_a", "lora_b")
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


class _Live(NamedTuple):
    """A live module that owns a LoRA pair."""

    path: str
    module: Any
    kind: str
    variant: str
    rank: int
    scale: float | list[float]
    dropout: float
    tensors: dict[str, Any]  # leaf name (as saved) -> array


def _coerce_scale(value: Any) -> float | list[float]:
    if isinstance(value, mx.array):
        values: Any = value.reshape(-1).tolist()
        flat = [float(x) for x in values]
        if not flat:
            raise SaveError("a LoRA module has an empty scale array")
        return flat[0] if len(set(flat)) == 1 else flat
    return float(value)


def _read_dropout(module: Any) -> float:
    d = getattr(module, "dropout", None)
    p = 0.0
    if isinstance(d, nn.Dropout):
        keep = getattr(d, "_p_1", None)
        if isinstance(keep, (int, float)):
            p = 1.0 - float(keep)
        elif isinstance(getattr(d, "p", None), (int, float)):
            p = float(d.p)
    elif isinstance(d, (int, float)):
        p = float(d)
    # 1 - 0.9 is 0.09999999999999998: store what the user wrote.
    return round(p, 12)


def _rank_of(a: Any, b: Any) -> int:
    if isinstance(a, list):
        return int(a[0].shape[1])
    if isinstance(a, nn.Module):  # layer-wrapped halves: Linear(in, r) has weight (r, in)
        return int(a.weight.shape[0])
    if a.ndim == 3:
        return int(a.shape[1])
    if a.ndim == 2 and b.ndim == 3:  # mlx-lm < 0.28.3 switch layout (E*r, in)
        return int(b.shape[2])
    return int(a.shape[1])


def _kind_of(module: Any, a: Any) -> str:
    name = type(module).__name__
    if "Switch" in name or (isinstance(a, mx.array) and a.ndim == 3):
        return "switch"
    if "Embedding" in name:
        return "embedding"
    return "linear"


def _join(path: str, leaf: str) -> str:
    return f"{path}.{leaf}" if path else leaf


def live_adapters(model: nn.Module) -> list[_Live]:
    """Every module owning a ``lora_a``/``lora_b`` pair (lowercase), in natural path order."""
    found = []
    for path, m in model.named_modules():
        if not isinstance(m, nn.Module):
            continue
        a, b = m.get("lora_a"), m.get("lora_b")
        if a is None or b is None:
            continue
        tensors = dict(tree_flatten({"lora_a": a, "lora_b": b}))
        dora = type(m).__name__.startswith("DoRA") and isinstance(m.get("m"), mx.array)
        if dora:
            tensors["m"] = m["m"]
        found.append(
            _Live(
                path=path,
                module=m,
                kind=_kind_of(m, a),
                variant="dora" if dora else "lora",
                rank=_rank_of(a, b),
                scale=_coerce_scale(getattr(m, "scale", 1.0)),
                dropout=_read_dropout(m),
                tensors=tensors,
            )
        )
    found.sort(key=lambda x: _natural_key(x.path))
    return found


def _natural_key(path: str) -> list[tuple[int, int | str]]:
    return [(0, int(p)) if p.isdigit() else (1, p) for p in path.split(".")]


def _wrapped_base_name(name: str, wrappers: set[str]) -> str:
    """``q_proj.linear.bias`` -> ``q_proj.bias`` when ``q_proj`` is a LoRA wrapper."""
    parts = name.split(".")
    for i in range(len(parts) - 1, 0, -1):
        if parts[i] in ("linear", "embedding") and ".".join(parts[:i]) in wrappers:
            return ".".join(parts[:i] + parts[i + 1 :])
    return name


def _is_adapter_param(name: str, wrappers: set[str]) -> bool:
    """Whether ``name`` is a LoRA factor or DoRA magnitude of one of ``wrappers``."""
    parts = name.split(".")
    for i in range(len(parts)):
        if parts[i] in ("lora_a", "lora_b", "m") and ".".join(parts[:i]) in wrappers:
            return True
    return False


def _base_params(model: nn.Module) -> list[tuple[str, Any]]:
    """The base's parameters under their base names (wrapper segments removed)."""
    wrappers = {x.path for x in live_adapters(model)}
    return [
        (_wrapped_base_name(name, wrappers), value)
        for name, value in tree_flatten(model.parameters())
        if not _is_adapter_param(name, wrappers)
    ]


def base_fingerprint(model: nn.Module) -> str:
    """A hash of the base's structure (parameter names, shapes, dtypes), adapters left out.

    The same before and after wrapping; it differs between a float and a quantized base.
    """
    rows = sorted(f"{n}:{tuple(v.shape)}:{v.dtype}" for n, v in _base_params(model))
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()


def _layer_count(model: nn.Module) -> int:
    for attr in ("layers",):
        layers = getattr(model, attr, None)
        if isinstance(layers, list):
            return len(layers)
    for candidate in ("model", "language_model"):
        inner = getattr(model, candidate, None)
        if isinstance(inner, nn.Module):
            n = _layer_count(inner)
            if n > 0:
                return n
    return -1


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
) -> Scan:
    ours = cfg["adapterscan"]
    metadata = {
        "format": "mlx",
        "adapterscan_schema": str(SCHEMA_VERSION),
        "adapterscan_save_id": ours["save_id"],
        "base_fingerprint": str(ours.get("base_fingerprint") or ""),
        "fine_tune_type": cfg["fine_tune_type"],
    }
    mx.eval(list(weights.values()))

    def write_weights(p: Path) -> None:
        mx.save_safetensors(str(p), weights, metadata=metadata)

    target = Path(path)
    write_config = config_writer(cfg, ensure_ascii=False)
    replace_files(target, {WEIGHTS_NAME: write_weights, CONFIG_NAME: write_config})
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
    full = sorted(extra, key=_natural_key)
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


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


class _Spec(NamedTuple):
    """What to build at one module path."""

    path: str
    kind: str
    variant: str
    layout: str
    rank: int
    scale: float | list[float]
    dropout: float
    keys: list[str]
    # For a fused ``gate_up_proj`` factor: (which, of how many) row blocks of ``lora_b`` it holds,
    # the rank columns it owns (``[lo, hi)``) and the factor folded into its ``lora_b``.
    part: tuple[int, int, int, int, float] | None = None
    # The rank of the PEFT wrapper the factors were folded into (0: ``rank``).
    folded_rank: int = 0


def _number(value: Any, what: str, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise config_error(f"{what} must be a number, found {value!r}", path, what)
    return float(value)


def _specs(s: Scan, scale: float | None, skip: set[str]) -> list[_Spec]:
    cfg = s.config or {}
    cfg_path = s.config_path or ""
    lp = as_mapping(cfg.get("lora_parameters"))
    ours = as_mapping(cfg.get("adapterscan"))
    per_module = as_mapping(ours.get("modules"))
    unsloth_scales = as_mapping(cfg.get("unsloth_mlx_lora_module_scales"))
    global_scale = lp.get(
        "scale", cfg.get("scale") if s.config_schema != "mlx_vlm_legacy" else None
    )
    global_dropout = lp.get("dropout", cfg.get("dropout", 0.0))
    dora = s.fine_tune_type == "dora"
    specs = []
    for path, m in s.modules.items():
        if path in skip:
            continue
        entry = as_mapping(per_module.get(path))
        raw_scale = entry.get("scale", unsloth_scales.get(path, global_scale))
        if raw_scale is None:
            if scale is None:
                hint = (
                    " (mlx-vlm < 0.6 stored `alpha`, which meant the scale up to 0.4.4 and "
                    "alpha/rank from 0.5.0)"
                    if s.config_schema == "mlx_vlm_legacy"
                    else ""
                )
                raise config_error(
                    f"no scale for {path}: the adapter config does not record one{hint}; "
                    "pass scale= to load_adapters",
                    cfg_path,
                    "lora_parameters.scale",
                )
            module_scale: float | list[float] = float(scale)
        elif isinstance(raw_scale, list):
            module_scale = [_number(v, "scale", cfg_path) for v in raw_scale]
        else:
            module_scale = _number(raw_scale, "scale", cfg_path)
            if scale is not None and abs(float(scale) - module_scale) > 1e-12 * max(
                1.0, abs(module_scale)
            ):
                raise config_error(
                    f"scale={scale} contradicts the adapter's recorded scale {module_scale} "
                    f"for {path}",
                    cfg_path,
                    "lora_parameters.scale",
                )
        if m.rank is None:
            raise AdapterMismatchError(f"no rank can be inferred for {path}", _empty_report(s))
        specs.append(
            _Spec(
                path=path,
                kind=m.kind,
                variant="dora" if (m.variant == "dora" or dora) and m.kind != "switch" else "lora",
                layout=m.layout,
                rank=int(m.rank),
                scale=module_scale,
                dropout=_number(entry.get("dropout", global_dropout), "dropout", cfg_path),
                keys=list(m.keys),
            )
        )
    return specs


def _empty_report(s: Scan) -> Report:
    return _check(s, ExpectedModules([], None, "nothing"))


def _resolve(model: nn.Module, path: str) -> tuple[Any, str | int, Any]:
    """Parent container, key in it, and the child at ``path`` (list indices allowed)."""
    parent: Any = model
    parts = path.split(".")
    for part in parts[:-1]:
        parent = parent[int(part)] if isinstance(parent, list) else parent[part]
    last: str | int = int(parts[-1]) if isinstance(parent, list) else parts[-1]
    return parent, last, parent[last]


def _wrapper_classes() -> dict[str, Any]:
    from mlx_lm.tuner.dora import DoRAEmbedding, DoRALinear
    from mlx_lm.tuner.lora import LoRAEmbedding, LoRALinear, LoRASwitchLinear

    return {
        "LoRALinear": LoRALinear,
        "DoRALinear": DoRALinear,
        "LoRASwitchLinear": LoRASwitchLinear,
        "LoRAEmbedding": LoRAEmbedding,
        "DoRAEmbedding": DoRAEmbedding,
    }


def _from_base(cls: Any, base: Any, spec: _Spec) -> Any:
    scale = spec.scale if isinstance(spec.scale, float) else mx.array(spec.scale)
    try:
        return cls.from_base(base, r=spec.rank, dropout=spec.dropout, scale=scale)
    except TypeError as e:
        # Older mlx-lm: from_base(linear, rank) without scale/dropout keywords.
        if not any(w in str(e) for w in ("scale", "dropout", "unexpected keyword")):
            raise
        wrapper = cls.from_base(base, spec.rank)
        wrapper.scale = scale
        wrapper.dropout = nn.Dropout(p=spec.dropout)
        return wrapper


def _build(model: nn.Module, spec: _Spec) -> Any:
    classes = _wrapper_classes()
    parent, key, child = _resolve(model, spec.path)
    if type(child).__name__ in classes:
        want = ("DoRA" if spec.variant == "dora" else "LoRA") in type(child).__name__
        if not want:
            raise AdapterScanError(
                f"{spec.path} is already wrapped by {type(child).__name__}; "
                f"the adapter needs {spec.variant}"
            )
        base = child.get("linear") if child.get("linear") is not None else child.get("embedding")
    else:
        base = child
    switch = _switch_classes()
    if spec.variant == "lora" and hasattr(base, "to_lora"):
        wrapper = base.to_lora(r=spec.rank, scale=spec.scale, dropout=spec.dropout)
    elif switch and isinstance(base, switch):
        if spec.variant == "dora":
            raise AdapterScanError(f"{spec.path}: mlx-lm has no DoRA for SwitchLinear")
        wrapper = _from_base(classes["LoRASwitchLinear"], base, spec)
    elif isinstance(base, (nn.Linear, nn.QuantizedLinear)):
        cls = classes["DoRALinear" if spec.variant == "dora" else "LoRALinear"]
        wrapper = _from_base(cls, base, spec)
    elif isinstance(base, (nn.Embedding, nn.QuantizedEmbedding)):
        cls = classes["DoRAEmbedding" if spec.variant == "dora" else "LoRAEmbedding"]
        wrapper = _from_base(cls, base, spec)
    else:
        raise AdapterScanError(f"{spec.path}: cannot attach LoRA to a {type(base).__name__}")
    if isinstance(parent, list):
        parent[int(key)] = wrapper
    else:
        setattr(parent, str(key), wrapper)
    return wrapper


def _adapted_tensor(spec: _Spec, key: str, value: Any) -> tuple[str, Any]:
    """The live parameter name and value for a saved key (legacy layouts converted)."""
    leaf = key[len(spec.path) + 1 :] if spec.path else key
    if spec.layout == "mlx_switch_legacy" and leaf == "lora_a" and value.ndim == 2:
        return _join(spec.path, "lora_a"), None  # reshaped once lora_b's shape is known
    if spec.layout == "mlx_layer" and leaf in ("lora_a.weight", "lora_b.weight"):
        return _join(spec.path, leaf.split(".")[0]), value.T
    if spec.layout == "mlx_vlm_legacy" and leaf in ("A", "B"):
        return _join(spec.path, "lora_a" if leaf == "A" else "lora_b"), value
    return _join(spec.path, leaf), value


def load_adapters(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    strict: bool = True,
    scale: float | None = None,
    verify_data: bool = False,
    return_report: bool = False,
) -> Any:
    """Load an adapter into ``model``: check first, rebuild wrappers, bind strictly, freeze.

    1. The adapter's headers and config are checked against the live model; with ``strict``
       any missing, unexpected or mis-shaped tensor (or error problem) raises
       :class:`AdapterMismatchError` with the full report before a tensor byte is read.
    2. Wrappers are built with mlx-lm's classes at exactly the saved module paths (config keys,
       or the tensor names when there is no config): Linear/QuantizedLinear -> LoRALinear or
       DoRALinear, SwitchLinear/QuantizedSwitchLinear -> LoRASwitchLinear, Embedding and
       QuantizedEmbedding -> LoRAEmbedding or DoRAEmbedding, or a module's own ``to_lora``;
       an existing wrapper is reused, never nested. Each module gets its own rank and scale.
    3. Exactly the adapter tensors are bound (legacy 2-D switch ``lora_a``, layer-wrapped and
       mlx-vlm ``A``/``B`` factors are converted), and every wrapper is verified to have
       received every factor; declared full tensors (``save_trainable_adapters``) are bound to
       their base parameters.
    4. The base is frozen, adapter parameters stay trainable, and the model is put in eval mode.

    Args:
        model: The base model (plain, or wrapped from an earlier load).
        path: Adapter folder, file or shard index.
        strict: Refuse an adapter that does not fit. With False, the modules that fit are
            loaded and the rest are skipped (see ``return_report``).
        scale: The scale to use when the config records none (legacy adapters without config).
        verify_data: Refuse tensors holding NaN or Inf (reads the adapter's data).
        return_report: Return ``(model, report)`` instead of ``model``.

    Returns:
        The model (modified in place), or ``(model, report)``.

    Raises:
        AdapterMismatchError: The adapter does not fit (strict), carrying the full report.
        AdapterDataError: ``verify_data`` found non-finite values.
        ConfigError: The config is malformed or no scale is known.
        AdapterScanError: The files cannot be read (a subclass naming the cause).
    """
    s = scan(path)
    peft = s.format == "peft"
    report = _check(s, expected_modules(model))
    if strict and not report.ok:
        raise AdapterMismatchError(f"{s.path} does not fit the model", report)

    bad_keys = set(report.missing) | set(report.unexpected)
    bad_keys |= {m.key for m in report.shape_mismatch}
    error_paths = {p.path for p in report.problems if p.severity == "error" and p.path}
    # A bad key belongs to the module path before its leaf (`x.lora_b`, `x.lora_a.weight`).
    bad_modules = {k.rsplit(".", n)[0] for k in bad_keys for n in (1, 2) if "." in k}
    skip = {
        p
        for p, m in s.modules.items()
        if p in error_paths or p in bad_modules or any(k in bad_keys for k in m.keys)
    }
    full_tensors: list[str] = []
    declared = as_mapping((s.config or {}).get("adapterscan")).get("full_tensors")
    if isinstance(declared, list):
        full_tensors = [t for t in declared if t not in bad_keys]
    if s.fine_tune_type == "full":
        full_tensors = [t for t in s.non_adapter_tensors if t not in bad_keys]
    specs = _peft_specs(s, model, skip) if peft else _specs(s, scale, skip)
    recorded = as_mapping((s.config or {}).get("adapterscan")).get("base_fingerprint")
    if isinstance(recorded, str) and recorded != base_fingerprint(model):
        warnings.warn(
            f"{s.path} was saved from a base of another structure (parameter names, shapes or "
            "dtypes differ: e.g. a 4-bit base and a float one); its tensors fit, but the "
            "outputs may differ from the trained model's",
            BaseMismatchWarning,
            stacklevel=2,
        )

    # Read (lazily) exactly the tensors to bind, and verify them before touching the model.
    wanted = {k for spec in specs for k in spec.keys} | set(full_tensors)
    saved: dict[str, Any] = {}
    for f in s.files:
        if wanted.isdisjoint(_file_keys(s, f.path)):
            continue
        arrays: Any = mx.load(f.path)
        saved.update({k: v for k, v in arrays.items() if k in wanted})
    if verify_data:
        bad = [k for k, v in saved.items() if not bool(mx.all(mx.isfinite(v)).item())]
        if bad:
            raise AdapterDataError(
                f"{len(bad)} tensors hold NaN or Inf: {', '.join(sorted(bad))}", sorted(bad)
            )

    wrappers = {spec.path: _build(model, spec) for spec in specs}
    pairs: list[tuple[str, Any]] = []
    for spec in specs if peft else []:
        pairs += _peft_pairs(spec, saved)
    for spec in [] if peft else specs:
        legacy_a = None
        for key in spec.keys:
            name, value = _adapted_tensor(spec, key, saved[key])
            if value is None:
                legacy_a = saved[key]
                continue
            pairs.append((name, value))
        if legacy_a is not None:
            e = wrappers[spec.path].lora_a.shape[0]
            pairs.append((_join(spec.path, "lora_a"), legacy_a.reshape(e, spec.rank, -1)))
    live_names = {n: tuple(v.shape) for n, v in tree_flatten(model.parameters())}
    for base_name in full_tensors:
        pairs.append((_live_name(base_name, wrappers), saved[base_name]))
    problems = [
        f"{n}: not a parameter of the model"
        if n not in live_names
        else f"{n}: shape {tuple(v.shape)} != {live_names[n]}"
        for n, v in pairs
        if live_names.get(n) != tuple(v.shape)
    ]
    # Every factor of every new wrapper must receive a saved tensor: nothing stays at its init.
    expected_names = {n for n in live_names if _is_adapter_param(n, set(wrappers))}
    bound = {n for n, _ in pairs}
    problems += [f"{n}: no saved tensor for this factor" for n in sorted(expected_names - bound)]
    if problems:
        raise AdapterScanError(
            f"{s.path}: binding failed, the model was left with unbound wrappers: "
            + "; ".join(problems[:10])
        )
    model.load_weights(pairs, strict=False)
    mx.eval([v for _, v in pairs])

    model.freeze()
    for spec in specs:
        keys = ["lora_a", "lora_b"] + (["m"] if spec.variant == "dora" else [])
        wrappers[spec.path].unfreeze(keys=keys, recurse=False)
    for base_name in full_tensors:
        module_path, _, leaf = _live_name(base_name, wrappers).rpartition(".")
        owner = _resolve(model, module_path)[2] if module_path else model
        owner.unfreeze(keys=[leaf], recurse=False)
    model.eval()
    return (model, report) if return_report else model


def _file_keys(s: Scan, file: str) -> set[str]:
    return {name for name, t in s.tensors.items() if t.file == file}


def _live_name(base_name: str, wrappers: Mapping[str, Any]) -> str:
    """``q_proj.bias`` -> ``q_proj.linear.bias`` when ``q_proj`` is now a LoRA wrapper."""
    module, _, leaf = base_name.rpartition(".")
    wrapper = wrappers.get(module)
    if wrapper is None:
        return base_name
    inner = "embedding" if wrapper.get("embedding") is not None else "linear"
    return f"{module}.{inner}.{leaf}"


# --------------------------------------------------------------------------------------------
# PEFT adapters (Hugging Face layout) loaded into MLX models
# --------------------------------------------------------------------------------------------

_PEFT_PREFIX = "base_model.model."
# Safetensors metadata of a converted PEFT adapter: how mlx switch factors were fused (JSON).
_FUSED_KEY = "adapterscan_fused_experts"


def _peft_first_match(patterns: Mapping[str, Any], path: str) -> Any:
    r"""Peft's rule: the first key ``k`` with ``re.match(rf"(.*\.)?({k})$", path)`` wins."""
    import re

    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", path):
            return value
    return None


def _peft_specs(
    s: Scan,
    model: nn.Module | None,
    skip: set[str],
    *,
    drop_embedding_copy: bool = False,
    tied: bool | None = None,
) -> list[_Spec]:
    """Per-module specs for a PEFT adapter.

    Module paths are mlx-lm's (stacked experts), ranks come from the tensors, and the scale is
    alpha/r (rsLoRA: alpha/sqrt(r)) with ``alpha_pattern`` resolved by peft's first-match rule.
    """
    cfg = s.config or {}
    cfg_path = s.config_path or ""
    refused = []
    params: dict[str, Any] | None = None
    for name in s.non_adapter_tensors:
        bare = name.removeprefix(_PEFT_PREFIX)
        if bare.endswith(".base_layer.weight"):
            if drop_embedding_copy:
                continue  # asked for: peft's copy of a targeted embedding is not carried over
            module = bare.removesuffix(".base_layer.weight")
            if params is None:
                params = dict(tree_flatten(model.parameters())) if model is not None else {}
            live = params.get(f"{module}.weight")
            if live is not None and tuple(live.shape) == tuple(s.tensors[name].shape):
                continue  # peft's copy of a targeted embedding; the model has its own
        refused.append(bare)
    if refused:
        raise AdapterScanError(
            f"{s.path}: full tensors an mlx LoRA adapter cannot hold (modules_to_save, "
            f"trainable tokens, or a resized embedding): {', '.join(refused[:10])}"
        )
    alpha_default = cfg.get("lora_alpha", 8)
    patterns = as_mapping(cfg.get("alpha_pattern"))
    rslora = bool(cfg.get("use_rslora", False))
    if tied is None:
        tied = bool(getattr(getattr(model, "args", None), "tie_word_embeddings", False))
    fused = _fused_records(s)
    specs = []
    for path, m in s.modules.items():
        if path in skip:
            continue
        if m.rank is None:
            raise AdapterMismatchError(f"no rank can be inferred for {path}", _empty_report(s))
        if m.kind == "embedding" and m.variant == "dora":
            raise AdapterScanError(
                f"{path}: DoRA on an embedding cannot be converted (peft's magnitude is per "
                "embedding dimension, mlx-lm's per token)"
            )
        if m.kind == "embedding" and tied:
            raise AdapterScanError(
                f"{path}: the model ties its embedding to the output head; mlx-lm's "
                "LoRAEmbedding would add the delta to the head too, which peft does not"
            )
        alpha = _peft_first_match(patterns, path)
        alpha = _number(alpha_default if alpha is None else alpha, "lora_alpha", cfg_path)
        rank = int(m.rank)
        scale = alpha / (math.sqrt(rank) if rslora else rank)
        spec = _Spec(
            path=stacked_path(path),
            kind=m.kind,
            variant=m.variant,
            layout=m.layout,
            rank=rank,
            scale=scale,
            dropout=_number(cfg.get("lora_dropout", 0.0), "lora_dropout", cfg_path),
            keys=list(m.keys),
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
        if params is None:
            params = dict(tree_flatten(model.parameters())) if model is not None else {}
        mlx_prefix = record.get("mlx") or _switch_prefix(base, params)
        if param == "gate_up_proj":
            # One factor pair for the stacked gate and up rows: B splits in halves; A is shared,
            # unless the pair was written from two mlx factors (recorded): then each takes its
            # own rank columns back, and its own scale.
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
        else:
            specs.append(spec._replace(path=f"{mlx_prefix}.switch_mlp.{param}"))
    return specs


def _switch_prefix(experts_module: str, params: Mapping[str, Any]) -> str:
    """The mlx module holding ``switch_mlp`` for Hugging Face's ``X.mlp.experts``.

    ``X.mlp``, or Mixtral's ``X.block_sparse_moe`` when the model has that instead.
    """
    prefix = experts_module.removesuffix(".experts")
    if prefix.endswith(".mlp"):
        alt = prefix.removesuffix(".mlp") + ".block_sparse_moe"
        if not any(k.startswith(f"{prefix}.switch_mlp.") for k in params) and any(
            k.startswith(f"{alt}.switch_mlp.") for k in params
        ):
            return alt
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
            if record.get("mlx") not in (f"{layer}.mlp", f"{layer}.block_sparse_moe"):
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
        for key in spec.keys:
            expert = int(key.split(".experts.")[-1].split(".")[0])
            (a if ".lora_A." in key else b)[expert] = saved[key]
        return [
            (_join(spec.path, "lora_a"), mx.stack([a[e] for e in sorted(a)])),
            (_join(spec.path, "lora_b"), mx.stack([b[e] for e in sorted(b)])),
        ]
    if spec.layout == "peft_param_wrapper":
        # A (E * r, in): experts major; B (out, r * E): experts minor (peft's ParamWrapper).
        (a_key,) = [k for k in spec.keys if k.endswith(".lora_A.weight")]
        (b_key,) = [k for k in spec.keys if k.endswith(".lora_B.weight")]
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
    pairs = []
    for key in spec.keys:
        value = saved[key]
        if key.endswith((".lora_A.weight", ".lora_embedding_A")):
            pairs.append((_join(spec.path, "lora_a"), value.T))
        elif key.endswith((".lora_B.weight", ".lora_embedding_B")):
            pairs.append((_join(spec.path, "lora_b"), value.T))
        else:  # lora_magnitude_vector(.weight)
            pairs.append((_join(spec.path, "m"), value))
    return pairs


def convert_to_mlx(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    base: str | os.PathLike[str] | None = None,
    drop_embedding_copy: bool = False,
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
        base: The base model folder, to refuse an embedding adapter on tied embeddings.
        drop_embedding_copy: Leave out peft's copy of a targeted embedding
            (``base_layer.weight``); without it such an adapter is refused.

    Returns:
        The scan of the written adapter.
    """
    s = scan(src)
    if s.format != "peft":
        raise AdapterScanError(f"{s.path} is not a PEFT adapter (format {s.format})")
    if not s.ok:
        raise AdapterMismatchError(f"{s.path} has errors", _empty_report(s))
    tied = False
    if base is not None:
        base_cfg = Path(base) / "config.json"
        if base_cfg.exists():
            tied = bool(json.loads(base_cfg.read_text()).get("tie_word_embeddings", False))
    cfg = s.config or {}
    specs = _peft_specs(s, None, set(), drop_embedding_copy=drop_embedding_copy, tied=tied)
    arrays: dict[str, Any] = {}
    for f in s.files:
        loaded: Any = mx.load(f.path)
        arrays.update(loaded)
    pairs = {spec.path: dict(_peft_pairs(spec, arrays)) for spec in specs}
    ranks = {spec.rank for spec in specs}
    scales = {float(spec.scale) for spec in specs if isinstance(spec.scale, float)}
    uniform = len(ranks) == 1 and len(scales) == 1
    r_max = max(ranks)
    weights: dict[str, Any] = {}
    for spec in specs:
        tensors = pairs[spec.path]
        a = tensors[_join(spec.path, "lora_a")]
        b = tensors[_join(spec.path, "lora_b")]
        if not uniform:
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
    scale = next(iter(scales)) if uniform else 1.0
    dropout = _number(cfg.get("lora_dropout", 0.0), "lora_dropout", s.config_path or "")
    paths = sorted((spec.path for spec in specs), key=_natural_key)
    out_cfg: dict[str, Any] = {
        "fine_tune_type": "dora" if any(spec.variant == "dora" for spec in specs) else "lora",
        "num_layers": -1,
        "lora_parameters": {"rank": r_max, "scale": scale, "dropout": dropout, "keys": paths},
        "rank": r_max,
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
                    "rank": r_max,
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
    return _write(dst, weights, out_cfg)


def convert_to_peft(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    experts: Literal["fused", "per-expert"] = "fused",
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

    Raises:
        AdapterScanError: The adapter is not in mlx's layout, or holds what PEFT cannot (DoRA on
            an embedding, layer-wrapped or list-valued factors).
    """
    import re

    s = scan(src)
    if s.format != "mlx":
        raise AdapterScanError(f"{s.path} is not an mlx adapter (format {s.format})")
    if not s.ok:
        raise AdapterMismatchError(f"{s.path} has errors", _empty_report(s))
    specs = _specs(s, None, set())
    arrays: dict[str, Any] = {}
    for f in s.files:
        loaded: Any = mx.load(f.path)
        arrays.update(loaded)
    pre = _PEFT_PREFIX
    weights: dict[str, Any] = {}
    switches: dict[str, dict[str, tuple[_Spec, Any, Any]]] = {}
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
                prefix, _, proj = spec.path.rpartition(".switch_mlp.")
                switches.setdefault(prefix, {})[proj] = (spec, a, b)
                continue
            for e in range(a.shape[0]):
                p = per_expert_path(stacked_path(spec.path), e)
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

    def alpha(spec: _Spec) -> float:
        if not isinstance(spec.scale, float):
            raise AdapterScanError(f"{spec.path}: a per-expert scale array has no PEFT form")
        return spec.scale * spec.rank

    # Fused parameters: key -> (rank, lora_alpha); how each was stacked, for the way back.
    params: dict[str, tuple[int, float]] = {}
    records: dict[str, Any] = {}
    for prefix, projs in switches.items():
        other = sorted(set(projs) - {"gate_proj", "up_proj", "down_proj"})
        if other:
            raise AdapterScanError(
                f"{prefix}.switch_mlp.{other[0]}: no fused transformers parameter holds it; "
                "use experts='per-expert'"
            )
        hf = prefix.removesuffix(".block_sparse_moe") + (
            ".mlp" if prefix.endswith(".block_sparse_moe") else ""
        )
        module = f"{hf}.experts"
        halves = [projs.get("gate_proj"), projs.get("up_proj")]
        nested = "down_proj" in projs and any(halves)
        if any(halves):
            # peft nests the first registered parameter (gate_up_proj) inside down_proj's wrapper.
            where = f"{module}.base_layer" if nested else module
            ref = next(h for h in halves if h is not None)
            n_exp, rows = ref[2].shape[0], ref[2].shape[1]
            scale_ref = alpha(ref[0]) / ref[0].rank
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
                        factor = (alpha(h[0]) / h[0].rank) / scale_ref
                        cols.append(h[2] if factor == 1.0 else h[2] * factor)
                    else:
                        cols.append(mx.zeros((n_exp, rows, r_j), dtype=ref[2].dtype))
                blocks.append(mx.concatenate(cols, axis=2))
            stacked_b = mx.concatenate(blocks, axis=1)  # (E, 2 * I, r_gate + r_up)
            weights[f"{pre}{where}.lora_A.weight"] = stacked_a.reshape(n_exp * total, -1)
            weights[f"{pre}{where}.lora_B.weight"] = stacked_b.transpose(1, 2, 0).reshape(
                2 * rows, total * n_exp
            )
            key = f"{module}.gate_up_proj"
            params[key] = (total, scale_ref * total)
            records[key] = {"mlx": prefix} | {
                name: [h[0].rank, alpha(h[0]) / h[0].rank]
                for name, h in zip(("gate_proj", "up_proj"), halves, strict=True)
                if h is not None
            }
        if "down_proj" in projs:
            spec, a, b = projs["down_proj"]
            n_exp = a.shape[0]
            weights[f"{pre}{module}.lora_A.weight"] = a.reshape(n_exp * spec.rank, -1)
            weights[f"{pre}{module}.lora_B.weight"] = b.transpose(1, 2, 0).reshape(
                b.shape[1], spec.rank * n_exp
            )
            key = f"{module}.down_proj"
            params[key] = (spec.rank, alpha(spec))
            records[key] = {"mlx": prefix}
    weights = {k: mx.contiguous(v) for k, v in weights.items()}

    plain = [spec for spec in specs if not (spec.kind == "switch" and experts == "fused")]
    r = most_common([spec.rank for spec in plain] + [p[0] for p in params.values()])
    a_common = most_common([alpha(spec) for spec in plain] + [p[1] for p in params.values()])
    targets: list[str] = []
    for spec in plain:
        if spec.kind == "switch":
            count = arrays[_join(spec.path, "lora_b")].shape[0]
            targets += [per_expert_path(stacked_path(spec.path), e) for e in range(count)]
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
            re.escape(spec.path): alpha(spec)
            for spec in specs
            if spec.kind != "switch" and alpha(spec) != a_common
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
                for e in range(arrays[_join(spec.path, "lora_b")].shape[0]):
                    key = re.escape(per_expert_path(stacked_path(spec.path), e))
                    if spec.rank != r:
                        config["rank_pattern"][key] = spec.rank
                    if alpha(spec) != a_common:
                        config["alpha_pattern"][key] = alpha(spec)

    metadata = {"format": "pt"}
    if records:
        metadata[_FUSED_KEY] = json.dumps(records, sort_keys=True)

    def write_weights(p: Path) -> None:
        mx.save_safetensors(str(p), weights, metadata=metadata)

    target = Path(dst)
    write_config = config_writer(config, ensure_ascii=True)
    replace_files(target, {"adapter_model.safetensors": write_weights, CONFIG_NAME: write_config})
    return scan(target)
