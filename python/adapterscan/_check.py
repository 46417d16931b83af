"""Will this adapter fit this model? Answered from headers and configs only.

May use: ``_core`` and ``_scan``.
"""

from __future__ import annotations

import collections
import os

from . import _core
from ._core import AdapterScanError, ExpectedModules, Problem
from ._scan import Scan, scan

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Literal, NamedTuple

    class ShapeMismatch(NamedTuple):
        """A saved tensor whose shape is not the one the model needs."""

        key: str
        saved: tuple[int, ...]
        expected: tuple[int, ...]

else:
    ShapeMismatch = collections.namedtuple("ShapeMismatch", ["key", "saved", "expected"])
    ShapeMismatch.__doc__ = "A saved tensor whose shape is not the one the model needs."


class Report:
    """The result of a check.

    Attributes:
        ok: True when nothing is missing, unexpected or mis-shaped and no problem is an error.
        missing: Tensor names promised (by the config, or by their pair) but absent.
        unexpected: Saved LoRA tensors with no module of the model to go to.
        shape_mismatch: Saved tensors whose shape differs from what the model and config need.
        problems: Problems of the adapter, of the base, and of the pair (codes as in inspect).
        scan: The scan of the adapter.
        expected: The table of modules the model offers.
    """

    __slots__ = ("_core", "expected", "scan")

    def __init__(self, core: _core.CheckResult, scan: Scan, expected: ExpectedModules) -> None:
        self._core = core
        self.scan = scan
        self.expected = expected

    @property
    def ok(self) -> bool:
        """True when the adapter fits."""
        return self._core.ok

    @property
    def missing(self) -> list[str]:
        """Tensor names promised but absent (full list)."""
        return self._core.missing()

    @property
    def unexpected(self) -> list[str]:
        """Saved LoRA tensors with no matching module (full list)."""
        return self._core.unexpected()

    @property
    def shape_mismatch(self) -> list[ShapeMismatch]:
        """Saved tensors of the wrong shape (full list)."""
        return [ShapeMismatch(k, tuple(s), tuple(e)) for k, s, e in self._core.shape_mismatch()]

    @property
    def problems(self) -> list[Problem]:
        """Every problem, errors first."""
        return self._core.problems()

    def to_json(self, *, pretty: bool = False) -> str:
        """The documented JSON object (see the README)."""
        return self._core.to_json(pretty)

    def to_dict(self) -> dict[str, Any]:
        """The documented JSON object as a dict."""
        import json

        result: dict[str, Any] = json.loads(self._core.to_json())
        return result

    def __bool__(self) -> bool:
        return self.ok

    def __repr__(self) -> str:
        return (
            f"Report(ok={self.ok}, missing={len(self.missing)}, "
            f"unexpected={len(self.unexpected)}, shape_mismatch={len(self.shape_mismatch)}, "
            f"problems={len(self.problems)})"
        )


def read_base(
    path: str | os.PathLike[str],
    *,
    symlinks: Literal["follow", "inside", "refuse"] = "follow",
) -> ExpectedModules:
    """The modules a base model folder offers, from its ``config.json`` and headers only.

    Args:
        path: A model folder as mlx-lm's convert/save writes it, or a Hugging Face checkpoint.
        symlinks: As in :func:`adapterscan.scan`.

    Returns:
        The table of adaptable modules with their true (unpacked) dims.
    """
    return _core.read_base(path, symlinks=symlinks)


def _can_build() -> bool:
    """Whether mlx and mlx-lm are installed (without importing them)."""
    import importlib.util

    return bool(importlib.util.find_spec("mlx") and importlib.util.find_spec("mlx_lm"))


def _built(
    base: str | os.PathLike[str],
    structure: str,
    symlinks: Literal["follow", "inside", "refuse"] = "follow",
) -> ExpectedModules | None:
    """The base's table from mlx-lm's classes, or None when ``"auto"`` cannot build it."""
    if not _can_build():
        if structure == "model":
            raise AdapterScanError(
                "building the base with mlx-lm's classes needs mlx and mlx-lm: "
                'pip install "adapterscan[mlx]"'
            )
        return None
    from .mlx._skeleton import SkeletonUnavailable, base_expected

    try:
        return base_expected(base, symlinks)
    except SkeletonUnavailable as e:
        if structure == "model":
            raise AdapterScanError(f"mlx-lm cannot build the base model: {e}") from e
        return None


def base_structure(
    base: str | os.PathLike[str],
    structure: Literal["auto", "model", "headers"] = "auto",
    *,
    symlinks: Literal["follow", "inside", "refuse"] = "follow",
) -> ExpectedModules:
    """The modules a base model folder offers, the way mlx-lm would build the model.

    With ``structure="auto"`` (the default), mlx-lm's own classes build the model from
    ``config.json`` (quantized as the config and headers say; no weight is read) and the model
    is walked as a live one is, so weights mlx-lm never wraps are not expected; without MLX, or
    for a model type mlx-lm does not implement, the headers are read instead
    (:func:`read_base`, which says so with a ``base_structure_from_headers`` warning).
    ``"model"`` insists on mlx-lm's classes, ``"headers"`` reads the headers only.

    Raises:
        AdapterScanError: The base cannot be read (``"model"``: mlx-lm cannot build it).
    """
    expected = _built(base, structure, symlinks) if structure != "headers" else None
    return expected if expected is not None else read_base(base, symlinks=symlinks)


def check(
    adapter: str | os.PathLike[str] | Scan,
    base: str | os.PathLike[str] | ExpectedModules,
    *,
    config: str | os.PathLike[str] | None = None,
    read_config: bool = True,
    symlinks: Literal["follow", "inside", "refuse"] = "follow",
    structure: Literal["auto", "model", "headers"] = "auto",
) -> Report:
    """Check that an adapter fits a model, reading headers and configs only.

    Args:
        adapter: An adapter folder, file or shard index (or a finished :class:`Scan`).
        base: A base model folder, or a table from :func:`read_base` or
            :func:`adapterscan.mlx.expected_modules`.
        config: An ``adapter_config.json`` to use instead of the one beside the weights.
        read_config: Set False to ignore any adapter config.
        symlinks: As in :func:`adapterscan.scan`.
        structure: How a base folder's modules are known (see :func:`base_structure`):
            mlx-lm's own classes when MLX is installed (``"auto"``), only them (``"model"``),
            or the safetensors headers (``"headers"``).

    Returns:
        The report: ``missing``, ``unexpected`` and ``shape_mismatch`` in full, and the problems.

    Raises:
        AdapterScanError: When the adapter or the base cannot be read.
    """
    if not isinstance(base, ExpectedModules) and structure != "headers" and _can_build():
        try:
            built = _built(base, structure, symlinks)
        except AdapterScanError:
            # The adapter's own errors come first, as when both sides are read together.
            if not isinstance(adapter, Scan):
                scan(adapter, config=config, read_config=read_config, symlinks=symlinks)
            raise
        if built is not None:
            base = built
    elif structure == "model" and not isinstance(base, ExpectedModules):
        _built(base, structure)  # raises: MLX is not installed
    if not isinstance(adapter, Scan) and not isinstance(base, ExpectedModules):
        # Both from disk: the core reads them at the same time.
        core_scan, expected, result = _core.check_paths(
            adapter, base, config=config, read_config=read_config, symlinks=symlinks
        )
        return Report(result, Scan(core_scan), expected)
    s = (
        adapter
        if isinstance(adapter, Scan)
        else scan(adapter, config=config, read_config=read_config, symlinks=symlinks)
    )
    expected = base if isinstance(base, ExpectedModules) else read_base(base, symlinks=symlinks)
    return Report(_core.check(s._core, expected), s, expected)
