"""Walking a live MLX model: the modules it offers, the LoRA pairs it owns, its base's identity.

Lives here: ``expected_modules`` and ``check`` (the module table of a live model), ``live_adapters``
(every module owning a ``lora_a``/``lora_b`` pair, with rank, scale and dropout read from it),
the base's parameters under their base names, ``base_fingerprint`` and the layer count, and the
small path helpers the other modules share (``_join``, ``_is_adapter_param``).

May use: MLX, mlx-lm's classes (when installed), and adapterscan's scanner, checker and errors.
Nothing else of ``adapterscan.mlx``: the other modules of the package may import this one.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, NamedTuple

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from .._check import Report
from .._check import check as _check
from .._core import ExpectedModules, unpacked_width
from .._scan import Scan, natural_sorted
from ..errors import SaveError


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
    """The true width of a weight's last axis (a quantized module's packed words unpacked)."""
    bits = getattr(module, "bits", None)
    width = unpacked_width(cols, bits) if bits else None
    return cols if width is None else width


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


def expected_modules(model: nn.Module, *, source: str = "live model") -> ExpectedModules:
    """The table of modules a live model offers to adapters.

    Linear, switch (stacked experts) and embedding layers, quantized or not, with their true
    input widths; a module already wrapped by an mlx-lm LoRA/DoRA class is reported at the
    wrapper's path with its base layer's dims. List-indexed paths (``...layers.0``) and VLM roots
    (``language_model.``) are kept as they are.

    Args:
        model: Any ``mlx.nn.Module``.
        source: What the table says it was made from.

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
    return ExpectedModules(rows, params, source)


def tied_vocab(model: nn.Module) -> int | None:
    """The vocabulary size when the model's output head is its token embedding, else None.

    Some models say so in their args (``tie_word_embeddings``); others tie by having no output
    head at all (gemma3_text, gpt2, granitemoe): no Linear maps to the vocabulary. The tied
    embedding is the one with a row per token (not a position embedding such as gpt2's ``wpe``).
    """
    args = getattr(model, "args", None)
    modules = [m for _, m in model.named_modules()]
    rows = [
        m.weight.shape[0] for m in modules if isinstance(m, (nn.Embedding, nn.QuantizedEmbedding))
    ]
    vocab = getattr(args, "vocab_size", None)
    if not isinstance(vocab, int):
        if not rows:
            return None
        vocab = max(rows)
    if vocab not in rows:
        return None
    if getattr(args, "tie_word_embeddings", False):
        return vocab
    has_head = any(
        isinstance(m, (nn.Linear, nn.QuantizedLinear)) and m.weight.shape[0] == vocab
        for m in modules
    )
    return None if has_head else vocab


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
    return natural_sorted(found, key=lambda x: x.path)


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
