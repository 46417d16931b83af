"""Writing ``adapter_config.json``, and the small rules every config writer shares.

Everything that writes an adapter config (``adapterscan.mlx`` saving and both conversions, and
``repair``) serialises it with :func:`config_writer`, picks its common rank/scale/dropout with
:func:`most_common` and reads nested config objects with :func:`as_mapping`. Standard library
only: no MLX and no other adapterscan module, so that every module may import it.

May use: the standard library only.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Hashable, Mapping
from pathlib import Path
from typing import Any

CONFIG_NAME = "adapter_config.json"


def as_mapping(value: Any) -> dict[str, Any]:
    """``value`` when it is a JSON object (a dict), else an empty dict."""
    return value if isinstance(value, dict) else {}


def config_text(cfg: Mapping[str, Any], *, ensure_ascii: bool) -> str:
    r"""The exact text of a config file: 2-space indented JSON and a final newline.

    Args:
        cfg: The config object (key order is kept).
        ensure_ascii: Escape non-ASCII characters as ``\uXXXX``. mlx configs keep them as
            they are (False); PEFT configs escape them, as peft's own ``save_pretrained`` does
            (True). The two differ only for a config holding non-ASCII text (a module path, a
            model name or a caller's field).
    """
    return json.dumps(cfg, indent=2, ensure_ascii=ensure_ascii) + "\n"


def config_writer(cfg: Mapping[str, Any], *, ensure_ascii: bool) -> Callable[[Path], None]:
    """A writer of ``cfg`` as a config file (UTF-8), for :func:`adapterscan._atomic.replace_files`.

    Args:
        cfg: The config object.
        ensure_ascii: See :func:`config_text`.
    """

    def write(path: Path) -> None:
        # Serialised when written: a value JSON cannot hold fails inside the atomic replace.
        path.write_text(config_text(cfg, ensure_ascii=ensure_ascii), encoding="utf-8")

    return write


def _count_key(value: Any) -> Hashable:
    """What :func:`most_common` counts ``value`` as: the value itself, a list as a tuple."""
    if isinstance(value, list):
        return tuple(_count_key(v) for v in value)
    key: Hashable = value
    return key


def most_common(values: list[Any]) -> Any:
    """The value that occurs most often in ``values``, the first one seen among ties.

    Values are counted by equality (``1`` and ``1.0`` are one value, as the callers' later
    ``!=`` comparisons see them), lists element by element (a per-layer scale list is one
    value). The value returned is the first occurrence itself.

    Raises:
        IndexError: ``values`` is empty.
    """
    keys = [_count_key(v) for v in values]
    first: dict[Hashable, Any] = {}
    for key, value in zip(keys, values, strict=True):
        first.setdefault(key, value)
    best = Counter(keys).most_common(1)[0][0]
    return first[best]
