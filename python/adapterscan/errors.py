"""Errors raised by the Python layer (the native ones live in ``adapterscan._core``).

May use: ``_core`` (and ``_check``'s report type, for type checking only).
"""

from __future__ import annotations

from ._core import AdapterScanError, ConfigError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ._check import Report


def _describe(report: Report, limit: int = 5) -> str:
    parts = []
    for title, items in (
        ("missing", report.missing),
        ("unexpected", report.unexpected),
        (
            "shape mismatch",
            [f"{m.key} {list(m.saved)} != {list(m.expected)}" for m in report.shape_mismatch],
        ),
        (
            "error",
            [f"{p.code} ({p.path}): {p.message}" for p in report.problems if p.severity == "error"],
        ),
    ):
        if items:
            shown = "; ".join(items[:limit]) + (
                f"; ... {len(items) - limit} more" if len(items) > limit else ""
            )
            parts.append(f"{len(items)} {title}: {shown}")
    return " | ".join(parts)


class AdapterMismatchError(AdapterScanError):
    """The adapter does not fit the model; raised before any tensor is read.

    Attributes:
        report: The full :class:`adapterscan.Report` (complete lists).
    """

    def __init__(self, message: str, report: Report) -> None:
        super().__init__(f"{message}: {_describe(report)}")
        self.report = report
        self.code = "adapter_mismatch"


class AdapterDataError(AdapterScanError):
    """Tensor values that must not be loaded (NaN or Inf), found by ``verify_data=True``.

    Attributes:
        tensors: The names of the offending tensors.
    """

    def __init__(self, message: str, tensors: list[str]) -> None:
        super().__init__(message)
        self.tensors = tensors
        self.code = "non_finite_values"


class SaveError(AdapterScanError, ValueError):
    """Nothing (or nothing coherent) to save; no file is written."""

    code = "save_error"


class TornReadError(AdapterScanError):
    """An adapter's files changed while they were read (another process saved over them)."""

    code = "torn_read"


class BaseMismatchWarning(UserWarning):
    """The adapter was saved from a base of another structure (e.g. 4-bit vs float weights)."""


class PartialLoadWarning(UserWarning):
    """``load_adapters(strict=False)`` left out modules the report faults (it names them)."""


def config_error(message: str, path: str = "", field: str | None = None) -> ConfigError:
    """A ConfigError carrying the same attributes as the native ones."""
    err = ConfigError(message)
    attrs: dict[str, Any] = {
        "code": "invalid_config",
        "path": path,
        "tensor": None,
        "offset": None,
        "line": None,
        "column": None,
        "field": field,
        "details": [],
    }
    for k, v in attrs.items():
        setattr(err, k, v)
    return err
