"""adapterscan for live MLX models (needs ``pip install "adapterscan[mlx]"``).

``expected_modules(model)`` walks a model's modules and produces the same table a base folder
gives, so ``check(model, adapter)`` answers "will this adapter fit?" before a tensor is loaded.
"""

from __future__ import annotations

import os
from typing import Any

try:
    import mlx.core as mx
    import mlx.nn as nn
    from mlx.utils import tree_flatten
except ImportError as e:  # pragma: no cover - exercised only without mlx
    raise ImportError(
        f'adapterscan.mlx needs MLX ({e}); install it with: pip install "adapterscan[mlx]"'
    ) from e

from ._check import Report
from ._check import check as _check
from ._core import ExpectedModules
from ._scan import Scan

__all__ = ["check", "expected_modules"]


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
    params = [
        (k, [int(d) for d in v.shape])
        for k, v in tree_flatten(model.parameters())
        if isinstance(v, mx.array)
    ]
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
