"""What to build at each module path of an mlx adapter, read from its scan (no MLX needed).

Lives here: ``_Spec`` (path, kind, variant, layout, rank, scale, dropout, saved keys), ``_specs``
(an mlx-layout adapter's specs: per-module scales from the ``adapterscan`` block, Unsloth's
per-module scales or the global one), ``_number`` (a config number, or a ``ConfigError``) and
``_empty_report``.

May use: adapterscan's scan, checker, config helpers and errors. No MLX and nothing else of
``adapterscan.mlx``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from .._check import Report
from .._check import check as _check
from .._config_io import as_mapping
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
