"""The opt-in pass over tensor data: NaN/Inf, all-zero B factors, per-module norms.

May use: ``_core`` and ``_scan``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from . import _core
from ._scan import Scan, scan


class DataProblem(NamedTuple):
    """A finding about tensor values (codes ``non_finite_values``, ``lora_b_all_zero``)."""

    code: str
    severity: str
    path: str | None
    message: str


@dataclass
class DataReport:
    """What the data pass found.

    Attributes:
        bytes_read: Bytes of tensor data read.
        tensors_checked: Tensors whose values were checked (float dtypes).
        problems: Findings about the values.
        modules: Frobenius norms per module: ``{path: {"lora_a", "lora_b", "m"}}``.
    """

    bytes_read: int = 0
    tensors_checked: int = 0
    problems: list[DataProblem] = field(default_factory=list)
    modules: dict[str, dict[str, float | None]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """As a JSON-ready dict."""
        return {
            "bytes_read": self.bytes_read,
            "tensors_checked": self.tensors_checked,
            "problems": [p._asdict() for p in self.problems],
            "modules": self.modules,
        }


def verify_data(
    adapter: str | os.PathLike[str] | Scan,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> DataReport:
    """Read every tensor's values and report NaN/Inf, all-zero B factors and module norms.

    This is the one operation that reads tensor data. It runs in batches (each in parallel, with
    the GIL released); ``progress(done_bytes, total_bytes)`` is called after each batch, and
    Ctrl-C stops the pass between batches (``KeyboardInterrupt``).

    Args:
        adapter: An adapter folder, file or shard index, or a finished scan.
        progress: Called with the bytes done and the total after each batch.

    Returns:
        The findings.
    """
    import json

    s = adapter if isinstance(adapter, Scan) else scan(adapter)
    data = _core.DataPass(s._core)
    done = 0
    for i in range(len(data)):
        done += data.run(i)
        if progress is not None:
            progress(done, data.total_bytes)
    raw = json.loads(data.report_json())
    return DataReport(
        bytes_read=raw["bytes_read"],
        tensors_checked=raw["tensors_checked"],
        problems=[DataProblem(**p) for p in raw["problems"]],
        modules={path: norms for path, norms in raw["modules"]},
    )
