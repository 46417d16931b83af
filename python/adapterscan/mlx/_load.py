"""Loading an adapter into a live model: ``load_adapters``.

Lives here: ``load_adapters`` and its steps (``_plan``, ``_read``, ``_bind``, ``_freeze``), and
the wrapper building (mlx-lm's LoRA/DoRA classes at the saved module paths, an existing wrapper
reused, never nested).

May use: MLX, mlx-lm, ``._live``, ``._spec``, ``._peft``, and adapterscan's scanner, checker,
config helpers and errors.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Mapping
from typing import Any, NamedTuple

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from .._check import Report
from .._check import check as _check
from .._config_io import as_mapping, given_scale
from .._core import SAVE_ID_KEY, AdapterScanError
from .._scan import Scan, scan
from ..errors import (
    AdapterDataError,
    AdapterMismatchError,
    BaseMismatchWarning,
    PartialLoadWarning,
    TornReadError,
)
from ._live import _is_adapter_param, _join, _switch_classes, base_fingerprint, expected_modules
from ._peft import _peft_pairs, _peft_specs
from ._spec import _Spec, _specs


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


_LIVE_LEAF = {"a": "lora_a", "b": "lora_b", "m": "m"}


def _adapted_tensor(spec: _Spec, leaf: str, index: int | None, value: Any) -> tuple[str, Any]:
    """The live parameter name and value for a saved factor (legacy layouts converted).

    ``leaf`` and ``index`` are what the core read from the saved name (``Module.factors``): the
    factor (``a``, ``b``, ``m``) and, for list-valued leaves, the list index.
    """
    live = _LIVE_LEAF[leaf] if index is None else f"{_LIVE_LEAF[leaf]}.{index}"
    if spec.layout == "mlx_switch_legacy" and leaf == "a" and value.ndim == 2:
        return _join(spec.path, live), None  # reshaped once lora_b's shape is known
    if spec.layout == "mlx_layer" and leaf != "m":
        return _join(spec.path, live), value.T  # `lora_a.weight` of an nn.Linear: (r, in)
    return _join(spec.path, live), value


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
    scale = given_scale(scale)
    s = _untorn_scan(path)
    report = _check(s, expected_modules(model))
    if strict and not report.ok:
        raise AdapterMismatchError(f"{s.path} does not fit the model", report)
    _refuse_other_quantization(model, s, report)
    plan = _plan(model, s, report, scale)
    _warn_if_other_base(model, s, report)
    if not strict:
        _warn_if_partial(s, plan)
    saved = _read(s, plan, verify_data=verify_data)
    wrappers = _bind(model, s, plan, saved)
    _freeze(model, plan, wrappers)
    return (model, report) if return_report else model


def _untorn_scan(path: str | os.PathLike[str], attempts: int = 5) -> Scan:
    """A scan whose files all come from one save.

    A scan that read a folder while another process replaced it (``torn_save``) is taken again,
    a bounded number of times, then refused.

    Raises:
        TornReadError: Every scan found files of two saves.
    """
    torn = None
    for attempt in range(attempts):
        s = scan(path)
        torn = next((p for p in s.problems if p.code == "torn_save"), None)
        if torn is None:
            return s
        time.sleep(0.005 * 2**attempt)
    # Strict or not: a config of one save applied to another's weights is never loaded.
    reason = torn.message if torn is not None else "files of two saves"
    raise TornReadError(f"{s.path}: still torn after {attempts} scans: {reason}")


class _Plan(NamedTuple):
    """What :func:`load_adapters` loads: the modules to wrap and the full tensors to bind."""

    peft: bool
    specs: list[_Spec]
    full_tensors: list[str]


def _plan(model: nn.Module, s: Scan, report: Report, scale: float | None) -> _Plan:
    """Step 1: the modules and full tensors to load, leaving out those the report faults."""
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
        if (s.config or {}).get("fine_tune_type") != "full":
            # A model checkpoint, or some other file: nothing says its weights are meant to
            # replace the model's. Refused before anything is read or changed.
            raise AdapterMismatchError(
                f"{s.path} holds no LoRA factors, only {len(s.non_adapter_tensors)} other "
                "tensors (a model checkpoint?); full weights are loaded only from an adapter "
                "whose config declares fine_tune_type: full",
                report,
            )
        full_tensors = [t for t in s.non_adapter_tensors if t not in bad_keys]
    peft = s.format == "peft"
    specs = _peft_specs(s, model, skip) if peft else _specs(s, scale, skip)
    return _Plan(peft, specs, full_tensors)


def _refuse_other_quantization(model: nn.Module, s: Scan, report: Report) -> None:
    """Refuse a model not quantized as mlx-vlm's ``base_quantization`` says.

    The adapter was trained on a base quantized that way; mlx-vlm's loader quantizes a float base
    so before loading, and on another base the outputs differ.
    """
    wanted = as_mapping((s.config or {}).get("base_quantization"))
    if not wanted:
        return
    modules = dict(model.named_modules())
    wrong = []
    for path, q in wanted.items():
        m = modules.get(path)
        if m is None or not isinstance(q, dict):
            continue  # a part of the VLM this model does not have
        inner = getattr(m, "linear", None) or getattr(m, "embedding", None) or m
        bits, group = getattr(inner, "bits", None), getattr(inner, "group_size", None)
        if (bits, group) != (q.get("bits"), q.get("group_size")):
            wrong.append(f"{path} ({'float' if bits is None else f'{bits}-bit'})")
    if wrong:
        raise AdapterMismatchError(
            f"{s.path} was trained on a base quantized as its base_quantization says "
            f"({len(wanted)} modules); quantize the model that way first (mlx-vlm's loader does) "
            f"or its outputs differ; not so here: {', '.join(wrong[:5])}",
            report,
        )


def _warn_if_other_base(model: nn.Module, s: Scan, report: Report) -> None:
    """A :class:`BaseMismatchWarning` (at the caller of ``load_adapters``) for another base."""
    recorded = as_mapping((s.config or {}).get("adapterscan")).get("base_fingerprint")
    if isinstance(recorded, str) and recorded != base_fingerprint(model):
        fit = "its tensors fit, but " if report.ok else ""
        warnings.warn(
            f"{s.path} was saved from a base of another structure (parameter names, shapes or "
            f"dtypes differ: e.g. a 4-bit base and a float one); {fit}the outputs may differ "
            "from the trained model's",
            BaseMismatchWarning,
            stacklevel=3,
        )


def _warn_if_partial(s: Scan, plan: _Plan) -> None:
    """With ``strict=False``, say what was bound and what was left out (at the caller)."""
    bound = {spec.path for spec in plan.specs}
    skipped = [p for p in s.modules if p not in bound]
    if skipped:
        warnings.warn(
            f"{s.path}: loaded {len(bound)} of {len(s.modules)} modules; skipped, as the report "
            f"faults them: {', '.join(skipped[:10])}"
            + (f", and {len(skipped) - 10} more" if len(skipped) > 10 else ""),
            PartialLoadWarning,
            stacklevel=3,
        )


def _read(s: Scan, plan: _Plan, *, verify_data: bool) -> dict[str, Any]:
    """Step 2: read (lazily) exactly the tensors to bind, and verify them before the model."""
    wanted = {k for spec in plan.specs for k in spec.keys} | set(plan.full_tensors)
    saved: dict[str, Any] = {}
    for f in s.files:
        if wanted.isdisjoint(_file_keys(s, f.path)):
            continue
        loaded: Any = mx.load(f.path, return_metadata=True)
        arrays: dict[str, Any] = loaded[0]
        metadata: dict[str, str] = loaded[1]
        scanned = (f.metadata or {}).get(SAVE_ID_KEY)
        if metadata.get(SAVE_ID_KEY) != scanned:
            # Another save replaced the folder between the scan and this read.
            raise TornReadError(
                f"{f.path} changed between the scan and the read (save "
                f"{metadata.get(SAVE_ID_KEY)} instead of {scanned}); load again"
            )
        saved.update({k: v for k, v in arrays.items() if k in wanted})
    if verify_data:
        bad = [k for k, v in saved.items() if not bool(mx.all(mx.isfinite(v)).item())]
        if bad:
            raise AdapterDataError(
                f"{len(bad)} tensors hold NaN or Inf: {', '.join(sorted(bad))}", sorted(bad)
            )
    return saved


def _bind(model: nn.Module, s: Scan, plan: _Plan, saved: Mapping[str, Any]) -> dict[str, Any]:
    """Step 3: build the wrappers and bind every tensor, or raise naming what does not bind.

    Returns:
        The wrappers by module path.
    """
    wrappers = {spec.path: _build(model, spec) for spec in plan.specs}
    pairs: list[tuple[str, Any]] = []
    for spec in plan.specs:
        if plan.peft:
            pairs += _peft_pairs(spec, saved)
        else:
            pairs += _mlx_pairs(spec, saved, wrappers[spec.path])
    live_names = {n: tuple(v.shape) for n, v in tree_flatten(model.parameters())}
    for base_name in plan.full_tensors:
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
    return wrappers


def _mlx_pairs(spec: _Spec, saved: Mapping[str, Any], wrapper: Any) -> list[tuple[str, Any]]:
    """The live parameters for one mlx-layout module (a legacy 2-D switch ``lora_a`` reshaped)."""
    pairs = []
    legacy_a = None
    for key, leaf, index in spec.factors:
        name, value = _adapted_tensor(spec, leaf, index, saved[key])
        if value is None:
            legacy_a = saved[key]
            continue
        pairs.append((name, value))
    if legacy_a is not None:
        e = wrapper.lora_a.shape[0]
        pairs.append((_join(spec.path, "lora_a"), legacy_a.reshape(e, spec.rank, -1)))
    return pairs


def _freeze(model: nn.Module, plan: _Plan, wrappers: Mapping[str, Any]) -> None:
    """Step 4: freeze the base, keep the adapter (and full tensors) trainable, eval mode."""
    model.freeze()
    for spec in plan.specs:
        keys = ["lora_a", "lora_b"] + (["m"] if spec.variant == "dora" else [])
        wrappers[spec.path].unfreeze(keys=keys, recurse=False)
    for base_name in plan.full_tensors:
        module_path, _, leaf = _live_name(base_name, wrappers).rpartition(".")
        owner = _resolve(model, module_path)[2] if module_path else model
        owner.unfreeze(keys=[leaf], recurse=False)
    model.eval()


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
