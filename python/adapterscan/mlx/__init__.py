"""adapterscan for live MLX models (needs ``pip install "adapterscan[mlx]"``).

- ``expected_modules(model)`` walks a model's modules and produces the same table a base folder
  gives, so ``check(model, adapter)`` answers "will this adapter fit?" before a tensor is loaded.
- ``save_adapters(model, path)`` writes exactly the adapter tensors and a complete
  ``adapter_config.json``, atomically; ``save_trainable_adapters`` adds trainable full tensors.
- ``load_adapters(model, path)`` checks first, rebuilds mlx-lm's wrappers at the saved paths,
  binds the tensors strictly, freezes the base and leaves the model in eval mode.

This file is the public API only. The modules behind it, each importing only modules listed
before it: ``_live`` (walking a live model), ``_save`` (saving), ``_spec`` (specs read from a
scan), ``_peft`` (PEFT's layout as mlx modules), ``_load`` (``load_adapters``) and ``_convert``
(``convert_to_mlx``, ``convert_to_peft``).

May use: MLX, mlx-lm and the package's modules; its own modules are imported in their order.
"""

from __future__ import annotations

# MLX is imported here first, so that its absence is named; the modules below import it plainly.
try:
    import mlx.core as mx  # noqa: F401
    import mlx.nn as nn  # noqa: F401
    from mlx.utils import tree_flatten  # noqa: F401
except ImportError as e:  # pragma: no cover - exercised only without mlx
    raise ImportError(
        f'adapterscan.mlx needs MLX ({e}); install it with: pip install "adapterscan[mlx]"'
    ) from e

from .._config_io import CONFIG_NAME as CONFIG_NAME
from ._convert import convert_to_mlx, convert_to_peft
from ._live import base_fingerprint as base_fingerprint
from ._live import check, expected_modules
from ._live import live_adapters as live_adapters
from ._load import load_adapters
from ._save import SCHEMA_VERSION as SCHEMA_VERSION
from ._save import WEIGHTS_NAME as WEIGHTS_NAME
from ._save import save_adapters, save_trainable_adapters

__all__ = [
    "check",
    "convert_to_mlx",
    "convert_to_peft",
    "expected_modules",
    "load_adapters",
    "save_adapters",
    "save_trainable_adapters",
]
