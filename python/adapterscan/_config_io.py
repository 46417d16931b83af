"""Writing ``adapter_config.json``, and the small rules every config writer shares.

Everything that writes an adapter config (``adapterscan.mlx`` saving and both conversions, and
``repair``) serialises it with :func:`config_writer`, picks its common rank/scale/dropout with
:func:`most_common` and reads nested config objects with :func:`as_mapping`. No MLX and no other
adapterscan module but the errors, so that every module may import it.

May use: the standard library and ``errors``.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Hashable, Mapping
from pathlib import Path
from typing import Any

from .errors import SaveError, config_error

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
    bad = _non_finite(cfg)
    if bad is not None:
        raise SaveError(
            f"the config holds a number JSON cannot hold ({bad[1]!r} at `{bad[0]}`): nothing was "
            "written"
        )
    try:
        return json.dumps(cfg, indent=2, ensure_ascii=ensure_ascii, allow_nan=False) + "\n"
    except (TypeError, ValueError) as e:
        raise SaveError(f"the config cannot be written as JSON ({e}): nothing was written") from e


def _non_finite(value: Any, where: str = "") -> tuple[str, float] | None:
    """The first NaN or infinity in a config (its dotted place and value), if any."""
    if isinstance(value, float) and not math.isfinite(value):
        return where or "(the config)", value
    items: Any = ()
    if isinstance(value, Mapping):
        items = ((f"{where}.{k}" if where else str(k), v) for k, v in value.items())
    elif isinstance(value, (list, tuple)):
        items = ((f"{where}[{i}]", v) for i, v in enumerate(value))
    for place, v in items:
        found = _non_finite(v, place)
        if found is not None:
            return found
    return None


def config_writer(cfg: Mapping[str, Any], *, ensure_ascii: bool) -> Callable[[Path], None]:
    """A writer of ``cfg`` as a config file (UTF-8), for :func:`adapterscan._atomic.replace_files`.

    Args:
        cfg: The config object.
        ensure_ascii: See :func:`config_text`.

    Raises:
        SaveError: The config holds a NaN or an infinity, or a value JSON cannot hold; nothing is
            written.
    """
    # Serialised now: a value JSON cannot hold fails before anything is staged or swapped.
    text = config_text(cfg, ensure_ascii=ensure_ascii)

    def write(path: Path) -> None:
        path.write_text(text, encoding="utf-8")

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


def given_scale(scale: float | None) -> float | None:
    """A scale a caller gives (``scale=``, ``--scale``): a finite positive number, or None.

    Raises:
        ConfigError: It is NaN, infinite, zero or negative.
    """
    if scale is None:
        return None
    value = float(scale)
    if not math.isfinite(value) or value <= 0:
        raise config_error(f"scale must be a finite positive number, not {scale!r}", "", "scale")
    return value
