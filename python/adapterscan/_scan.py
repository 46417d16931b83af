"""The typed Python view of a scan.

May use: ``_core`` only.
"""

from __future__ import annotations

import collections
import os

from . import _core
from ._core import FileInfo, Module, ModuleGroup, Problem

# `typing` is for type checkers only: importing it slows the command line's start-up.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Any, Literal, NamedTuple, TypeVar

    T = TypeVar("T")

    class TensorInfo(NamedTuple):
        """One tensor as its header describes it."""

        name: str
        dtype: str
        shape: tuple[int, ...]
        data_offsets: tuple[int, int]
        file: str

    class ModuleSettings(NamedTuple):
        """A module's scale and dropout, as its config gives them.

        ``scale`` is None when the config records none, and a list when it records one per
        output feature.
        """

        scale: float | list[float] | None
        dropout: float

else:
    TensorInfo = collections.namedtuple(
        "TensorInfo", ["name", "dtype", "shape", "data_offsets", "file"]
    )
    TensorInfo.__doc__ = "One tensor as its header describes it."
    ModuleSettings = collections.namedtuple("ModuleSettings", ["scale", "dropout"])
    ModuleSettings.__doc__ = "A module's scale and dropout, as its config gives them."


def natural_sorted(items: Iterable[T], key: Callable[[T], str]) -> list[T]:
    """``items`` sorted, stably, in the core's natural order of ``key(item)``.

    ``layers.2`` comes before ``layers.10``, numbers before names, and ``01`` before ``1``.
    """
    listed = list(items)
    return [listed[i] for i in _core.natural_order([key(x) for x in listed])]


class Scan:
    """What an adapter holds, read from its safetensors headers and config only.

    The heavy lifting (parsing, validation, module inference, config checks) happened in the
    native core; this object hands results over lazily, so a huge MoE adapter costs no Python
    object per tensor unless ``tensors`` is asked for.

    Attributes:
        path: The path that was scanned.
        format: ``"mlx"``, ``"peft"`` or ``"unknown"``.
        fine_tune_type: ``"lora"``, ``"dora"``, ``"full"`` or None.
        tensor_count: Number of tensors in all files.
        total_bytes: Bytes of tensor data in all files.
    """

    __slots__ = ("_config", "_core", "_files", "_modules", "_problems", "_settings", "_tensors")

    def __init__(self, core: _core.ScanResult) -> None:
        self._core = core
        self._modules: dict[str, Module] | None = None
        self._settings: dict[str, ModuleSettings] | None = None
        self._tensors: dict[str, TensorInfo] | None = None
        self._problems: list[Problem] | None = None
        self._files: list[FileInfo] | None = None
        self._config: dict[str, Any] | None = None

    @property
    def path(self) -> str:
        """The path that was scanned."""
        return self._core.path

    @property
    def format(self) -> str:
        """``"mlx"``, ``"peft"`` or ``"unknown"``."""
        return self._core.format

    @property
    def fine_tune_type(self) -> str | None:
        """``"lora"``, ``"dora"``, ``"full"``, or None when nothing says."""
        return self._core.fine_tune_type

    @property
    def tensor_count(self) -> int:
        """Number of tensors in all files."""
        return self._core.tensor_count

    @property
    def total_bytes(self) -> int:
        """Bytes of tensor data in all files."""
        return self._core.total_bytes

    @property
    def index_path(self) -> str | None:
        """The shard index that was followed, if any."""
        return self._core.index_path

    @property
    def config_path(self) -> str | None:
        """The ``adapter_config.json`` that was read, if any."""
        return self._core.config_path

    @property
    def config_schema(self) -> str | None:
        """The config schema: ``mlx``, ``mlx_legacy``, ``mlx_vlm_legacy``, ``peft``, ``unknown``.

        None when no config was read.
        """
        return self._core.config_schema

    @property
    def config(self) -> dict[str, Any] | None:
        """The adapter config as written (key order kept), or None."""
        if self._config is None:
            text = self._core.config_json()
            if text is None:
                return None
            import json

            self._config = json.loads(text)
        return self._config

    @property
    def modules(self) -> dict[str, Module]:
        """LoRA modules by dotted path (PEFT's ``base_model.model.`` prefix removed)."""
        if self._modules is None:
            self._modules = {m.path: m for m in self._core.modules()}
        return self._modules

    @property
    def problems(self) -> list[Problem]:
        """Every finding, errors first."""
        if self._problems is None:
            self._problems = self._core.problems()
        return self._problems

    @property
    def errors(self) -> list[Problem]:
        """Findings of severity ``error``."""
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        """Findings of severity ``warning``."""
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        """True when no finding is an error."""
        return not self._core.has_errors

    @property
    def files(self) -> list[FileInfo]:
        """The safetensors files that were read."""
        if self._files is None:
            self._files = self._core.files()
        return self._files

    @property
    def tensors(self) -> dict[str, TensorInfo]:
        """Every tensor by name. Built on first access (one object per tensor)."""
        if self._tensors is None:
            files = [f.path for f in self.files]
            self._tensors = {
                name: TensorInfo(name, dtype, tuple(shape), offsets, files[file])
                for name, dtype, shape, offsets, file in self._core.tensors()
            }
        return self._tensors

    @property
    def non_adapter_tensors(self) -> list[str]:
        """Names of tensors that are not LoRA/DoRA parameters."""
        return self._core.non_adapter_tensors()

    @property
    def module_settings(self) -> dict[str, ModuleSettings]:
        """Each module's scale and dropout, as the config gives them.

        The core's one reading of every producer's fields: per-module entries, Unsloth's scales,
        PEFT ``alpha_pattern`` by first match, rsLoRA. ``scale`` is None when the config records
        none.

        Raises:
            ConfigError: A per-module entry of the wrong type.
        """
        if self._settings is None:
            self._settings = {
                path: ModuleSettings(scale, dropout)
                for path, scale, dropout in self._core.module_settings()
            }
        return self._settings

    def module_groups(self) -> list[ModuleGroup]:
        """Modules grouped by path with the layer index replaced by ``*`` (for summaries)."""
        return self._core.module_groups()

    def to_json(self, *, pretty: bool = False) -> str:
        """The documented JSON object (see the README), serialised in the core."""
        return self._core.to_json(pretty)

    def to_dict(self) -> dict[str, Any]:
        """The documented JSON object as a dict."""
        import json

        result: dict[str, Any] = json.loads(self._core.to_json())
        return result

    def __repr__(self) -> str:
        return (
            f"Scan(path={self.path!r}, format={self.format!r}, "
            f"fine_tune_type={self.fine_tune_type!r}, modules={len(self.modules)}, "
            f"tensors={self.tensor_count}, problems={len(self.problems)})"
        )


def scan(
    path: str | os.PathLike[str],
    *,
    config: str | os.PathLike[str] | None = None,
    read_config: bool = True,
    max_header_bytes: int | None = None,
    max_tensors: int | None = None,
    max_dims: int | None = None,
    max_index_bytes: int | None = None,
    symlinks: Literal["follow", "inside", "refuse"] = "follow",
) -> Scan:
    """Scan an adapter from its safetensors headers, without reading tensor data.

    Args:
        path: An adapter folder (``adapters.safetensors``, ``adapter_model.safetensors`` or a
            ``*.safetensors.index.json`` with its shards), a single ``.safetensors`` file, or a
            shard index.
        config: An ``adapter_config.json`` to use instead of the one beside the weights.
        read_config: Set False to ignore any config.
        max_header_bytes: Largest accepted header (default 100,000,000, as safetensors).
        max_tensors: Largest number of tensors in one file.
        max_dims: Largest number of dimensions of one tensor.
        max_index_bytes: Largest accepted shard index or config file.
        symlinks: ``"follow"`` symbolic links wherever they point (the Hugging Face cache links
            ``snapshots/`` into ``blobs/``), only when they stay ``"inside"`` the adapter
            folder, or ``"refuse"`` them. Names in an index are always confined lexically.

    Returns:
        The scan: modules with their inferred kind, layout, rank and dims, and the problems found.

    Raises:
        AdapterScanError: A subclass naming the file, and the tensor or position where one
            applies, when a file cannot be read or is malformed.

    Example:
        >>> s = adapterscan.scan("adapters/")  # doctest: +SKIP
        >>> s.modules["model.layers.0.self_attn.q_proj"].rank  # doctest: +SKIP
        8
    """
    return Scan(
        _core.scan(
            path,
            config=config,
            read_config=read_config,
            max_header_bytes=max_header_bytes,
            max_tensors=max_tensors,
            max_dims=max_dims,
            max_index_bytes=max_index_bytes,
            symlinks=symlinks,
        )
    )
