"""What to build at each module path of an mlx adapter, read from its scan (no MLX needed).

Lives here: ``_Spec`` (path, kind, variant, layout, rank, scale, dropout, saved keys and what
each is), ``_specs`` (an mlx-layout adapter's specs, with the scale and dropout the core reads
from its config) and ``_empty_report``.

May use: adapterscan's scan, checker, config helpers and errors. No MLX and nothing else of
``adapterscan.mlx``.
"""

from __future__ import annotations

from typing import NamedTuple

from .._check import Report
from .._check import check as _check
from .._core import ExpectedModules
from .._scan import Scan
from ..errors import AdapterMismatchError, config_error


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
    # ``(key, leaf, index)`` of each saved tensor, as the core read its name (leaf ``a``, ``b`` or
    # ``m``; the list or expert index).
    factors: list[tuple[str, str, int | None]]
    # For a fused ``gate_up_proj`` factor: (which, of how many) row blocks of ``lora_b`` it holds,
    # the rank columns it owns (``[lo, hi)``) and the factor folded into its ``lora_b``.
    part: tuple[int, int, int, int, float] | None = None
    # The rank of the PEFT wrapper the factors were folded into (0: ``rank``).
    folded_rank: int = 0


def _specs(s: Scan, scale: float | None, skip: set[str]) -> list[_Spec]:
    """Specs of an mlx-layout adapter, with the scale and dropout the core reads from its config.

    ``scale`` stands in where the config records none and must agree where it does.
    """
    settings = s.module_settings
    dora = s.fine_tune_type == "dora"
    specs = []
    for path, m in s.modules.items():
        if path in skip:
            continue
        recorded = settings.get(path)
        module_scale = _module_scale(s, path, recorded.scale if recorded else None, scale)
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
                dropout=recorded.dropout if recorded else 0.0,
                keys=list(m.keys),
                factors=list(m.factors),
            )
        )
    return specs


def _module_scale(
    s: Scan, path: str, recorded: float | list[float] | None, given: float | None
) -> float | list[float]:
    """The scale to build ``path`` with: the recorded one (``given`` must agree), else ``given``.

    Raises:
        ConfigError: Neither is known, or they disagree.
    """
    cfg_path = s.config_path or ""
    if recorded is None:
        if given is None:
            raise config_error(
                f"no scale for {path}: the adapter config does not record one; "
                "pass scale= to load_adapters",
                cfg_path,
                "lora_parameters.scale",
            )
        return float(given)
    if isinstance(recorded, list):
        return recorded
    if given is not None and abs(float(given) - recorded) > 1e-12 * max(1.0, abs(recorded)):
        raise config_error(
            f"scale={given} contradicts the adapter's recorded scale {recorded} for {path}",
            cfg_path,
            "lora_parameters.scale",
        )
    return recorded


def _empty_report(s: Scan) -> Report:
    return _check(s, ExpectedModules([], None, "nothing"))
