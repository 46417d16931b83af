"""adapterscan: save, inspect, validate and reload LoRA/DoRA adapters for MLX.

The scanner reads only safetensors headers (never tensor bytes) and needs no MLX; the
``adapterscan.mlx`` module (``pip install "adapterscan[mlx]"``) works with live MLX models.

May use: the package's own modules (the public names are re-exported from them); never MLX.
"""

from __future__ import annotations

from ._check import Report, ShapeMismatch, base_structure, check, read_base
from ._core import (
    AdapterFileError,
    AdapterScanError,
    CheckResult,
    ConfigError,
    DuplicateKeyError,
    EmptyHeaderError,
    ExpectedModules,
    FileChangedError,
    FileInfo,
    HeaderEncodingError,
    HeaderJsonError,
    HeaderTooLargeError,
    HeaderTooSmallError,
    HeaderTruncatedError,
    IncompleteFileError,
    MetadataError,
    MisalignedTensorError,
    Module,
    ModuleGroup,
    NoAdapterError,
    NotRegularFileError,
    OffsetError,
    PathEscapeError,
    Problem,
    SafetensorsError,
    ShapeError,
    ShardIndexError,
    ShardMismatchError,
    TensorSizeError,
    TooManyTensorsError,
    UnknownDtypeError,
    __version__,
    dtypes,
)
from ._scan import Scan, TensorInfo, scan
from .errors import (
    AdapterDataError,
    AdapterMismatchError,
    BaseMismatchWarning,
    PartialLoadWarning,
    SaveError,
    TornReadError,
)

TYPE_CHECKING = False  # `typing` is for type checkers only: it slows the command line's start-up
if TYPE_CHECKING:
    from typing import Any

    from ._data import DataProblem, DataReport

__all__ = [
    "AdapterDataError",
    "AdapterFileError",
    "AdapterMismatchError",
    "AdapterScanError",
    "BaseMismatchWarning",
    "CheckResult",
    "ConfigError",
    "DataProblem",
    "DataReport",
    "DuplicateKeyError",
    "EmptyHeaderError",
    "ExpectedModules",
    "FileChangedError",
    "FileInfo",
    "HeaderEncodingError",
    "HeaderJsonError",
    "HeaderTooLargeError",
    "HeaderTooSmallError",
    "HeaderTruncatedError",
    "IncompleteFileError",
    "MetadataError",
    "MisalignedTensorError",
    "Module",
    "ModuleGroup",
    "NoAdapterError",
    "NotRegularFileError",
    "OffsetError",
    "PartialLoadWarning",
    "PathEscapeError",
    "Problem",
    "Report",
    "SafetensorsError",
    "SaveError",
    "Scan",
    "ShapeError",
    "ShapeMismatch",
    "ShardIndexError",
    "ShardMismatchError",
    "TensorInfo",
    "TensorSizeError",
    "TooManyTensorsError",
    "TornReadError",
    "UnknownDtypeError",
    "__version__",
    "base_structure",
    "check",
    "dtypes",
    "read_base",
    "repair",
    "scan",
    "verify_data",
]


def verify_data(*args: Any, **kwargs: Any) -> DataReport:
    """Read the tensor values; see :func:`adapterscan._data.verify_data` (imported on first use)."""
    from ._data import verify_data as _verify_data

    return _verify_data(*args, **kwargs)


def __getattr__(name: str) -> Any:
    # The data-pass types live in a module that is imported only when needed (start-up time).
    if name in ("DataProblem", "DataReport"):
        from . import _data

        return getattr(_data, name)
    raise AttributeError(f"module 'adapterscan' has no attribute {name!r}")


def repair(*args: Any, **kwargs: Any) -> Scan:
    """Rewrite an adapter's config from its tensors; see :func:`adapterscan._repair.repair`."""
    from ._repair import repair as _repair

    return _repair(*args, **kwargs)
