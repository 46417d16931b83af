"""adapterscan: save, inspect, validate and reload LoRA/DoRA adapters for MLX.

The scanner reads only safetensors headers (never tensor bytes) and needs no MLX; the
``adapterscan.mlx`` module (``pip install "adapterscan[mlx]"``) works with live MLX models.
"""

from typing import Any

from ._check import Report, ShapeMismatch, check, read_base
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
from ._data import DataProblem, DataReport, verify_data
from ._scan import Scan, TensorInfo, scan
from .errors import AdapterDataError, AdapterMismatchError, BaseMismatchWarning, SaveError

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
    "UnknownDtypeError",
    "__version__",
    "check",
    "dtypes",
    "read_base",
    "repair",
    "scan",
    "verify_data",
]


def repair(*args: Any, **kwargs: Any) -> Scan:
    """Rewrite an adapter's config from its tensors; see :func:`adapterscan._repair.repair`."""
    from ._repair import repair as _repair

    return _repair(*args, **kwargs)
