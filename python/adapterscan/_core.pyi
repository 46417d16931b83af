"""Native core of adapterscan: header-only scanning of safetensors LoRA adapters."""

import os
from typing import Literal, TypeAlias, final

_Kind: TypeAlias = Literal["linear", "switch", "embedding"]
_Variant: TypeAlias = Literal["lora", "dora"]
_Layout: TypeAlias = Literal[
    "mlx_linear",
    "mlx_switch",
    "mlx_switch_legacy",
    "mlx_embedding",
    "mlx_layer",
    "mlx_fused",
    "mlx_vlm_legacy",
    "peft_linear",
    "peft_embedding",
    "peft_per_expert",
    "peft_param_wrapper",
]
_Severity: TypeAlias = Literal["error", "warning"]
_Format: TypeAlias = Literal["mlx", "peft", "unknown"]
_FineTuneType: TypeAlias = Literal["lora", "dora", "full"]
_Leaf: TypeAlias = Literal["a", "b", "m"]
_Code: TypeAlias = Literal[
    "unpaired_factor",
    "rank_mismatch",
    "orientation_flipped",
    "expert_count_mismatch",
    "missing_experts",
    "bad_factor_shape",
    "degenerate_rank",
    "dora_on_switch",
    "mixed_formats",
    "mixed_dtypes",
    "legacy_switch_layout",
    "layer_wrapped_factors",
    "rank_needs_expert_count",
    "param_wrapper_unresolved",
    "fused_shapes_disagree",
    "duplicate_module",
    "non_adapter_tensor",
    "peft_base_layer_saved",
    "peft_modules_to_save",
    "peft_trainable_tokens",
    "no_adapter_tensors",
    "full_tensor_missing",
    "config_missing",
    "config_unrecognised",
    "legacy_config",
    "config_field_missing",
    "config_scale_missing",
    "config_alpha_instead_of_scale",
    "config_value_invalid",
    "config_rank_conflict",
    "config_rank_mismatch",
    "config_keys_empty",
    "config_key_unsaved",
    "module_not_in_keys",
    "config_keys_missing",
    "config_paths_conflict",
    "config_num_layers_mismatch",
    "fine_tune_type_mismatch",
    "fine_tune_type_unknown",
    "dora_magnitude_missing",
    "dora_magnitude_unexpected",
    "module_not_targeted",
    "module_outside_layers",
    "target_unmatched",
    "peft_lora_bias",
    "peft_alora",
    "peft_qalora",
    "peft_bdlora",
    "peft_kasa",
    "peft_arrow",
    "peft_monteclora",
    "peft_velora",
    "peft_base_changing_init",
    "torn_save",
    "unreferenced_shard",
    "index_total_size_mismatch",
    "model_in_adapter_folder",
    "prefix_mismatch",
    "base_quantization_required",
    "base_structure_from_headers",
    "base_quantization_unknown",
    "base_experts_inconsistent",
    "base_experts_implausible",
    "not_checked",
    "non_finite_values",
    "lora_b_all_zero",
]

__all__ = [
    "PEFT_PREFIX",
    "SAVE_ID_KEY",
    "AdapterFileError",
    "AdapterScanError",
    "CheckResult",
    "ConfigError",
    "DataPass",
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
    "SafetensorsError",
    "ScanResult",
    "ShapeError",
    "ShardIndexError",
    "ShardMismatchError",
    "TensorSizeError",
    "TooManyTensorsError",
    "UnknownDtypeError",
    "__version__",
    "check",
    "check_paths",
    "compress_ranges",
    "dtypes",
    "hf_moe_block",
    "is_adapter_file",
    "layouts",
    "mlx_moe_blocks",
    "natural_order",
    "per_expert_path",
    "problem_codes",
    "read_base",
    "read_config_bytes",
    "scan",
    "stacked_path",
    "unpacked_width",
]

__version__: str
PEFT_PREFIX: str
SAVE_ID_KEY: str

class AdapterScanError(Exception):
    """Base class of every error adapterscan raises.

    Attributes set by the core: ``code`` (stable name of the error class), ``path`` (the file),
    ``tensor`` (or None), ``offset`` (byte offset, or None), ``line``/``column`` (JSON position,
    or None), ``field`` (config field, or None), ``details`` (every violation, for errors that
    collect several).
    """

    code: str
    path: str
    tensor: str | None
    offset: int | None
    line: int | None
    column: int | None
    field: str | None
    details: list[str]

class AdapterFileError(AdapterScanError): ...
class NotRegularFileError(AdapterFileError): ...
class SafetensorsError(AdapterScanError): ...
class HeaderTooSmallError(SafetensorsError): ...
class EmptyHeaderError(SafetensorsError): ...
class HeaderTooLargeError(SafetensorsError): ...
class HeaderTruncatedError(SafetensorsError): ...
class HeaderEncodingError(SafetensorsError): ...
class HeaderJsonError(SafetensorsError): ...
class DuplicateKeyError(SafetensorsError): ...
class MetadataError(SafetensorsError): ...
class UnknownDtypeError(SafetensorsError): ...
class ShapeError(SafetensorsError): ...
class TensorSizeError(SafetensorsError): ...
class MisalignedTensorError(SafetensorsError): ...
class OffsetError(SafetensorsError): ...
class IncompleteFileError(SafetensorsError): ...
class TooManyTensorsError(SafetensorsError): ...
class FileChangedError(SafetensorsError): ...
class ShardIndexError(AdapterScanError): ...
class ShardMismatchError(ShardIndexError): ...
class PathEscapeError(AdapterScanError): ...
class ConfigError(AdapterScanError): ...
class NoAdapterError(AdapterScanError): ...

@final
class Module:
    """One inferred LoRA module."""

    @property
    def path(self) -> str: ...
    @property
    def kind(self) -> _Kind: ...
    @property
    def variant(self) -> _Variant: ...
    @property
    def layout(self) -> _Layout: ...
    @property
    def rank(self) -> int | None: ...
    @property
    def in_dims(self) -> int | None: ...
    @property
    def out_dims(self) -> int | None: ...
    @property
    def num_experts(self) -> int | None: ...
    @property
    def dtype(self) -> str: ...
    @property
    def keys(self) -> list[str]: ...
    @property
    def factors(self) -> list[tuple[str, _Leaf, int | None]]: ...

@final
class Problem:
    """One finding."""

    @property
    def code(self) -> _Code: ...
    @property
    def severity(self) -> _Severity: ...
    @property
    def path(self) -> str | None: ...
    @property
    def message(self) -> str: ...

@final
class FileInfo:
    """One file that was read."""

    @property
    def path(self) -> str: ...
    @property
    def header_bytes(self) -> int: ...
    @property
    def tensor_count(self) -> int: ...
    @property
    def data_bytes(self) -> int: ...
    @property
    def metadata(self) -> dict[str, str] | None: ...

@final
class ModuleGroup:
    """Modules that differ only in their layer index."""

    @property
    def template(self) -> str: ...
    @property
    def layers(self) -> list[int]: ...
    @property
    def count(self) -> int: ...
    @property
    def kind(self) -> _Kind: ...
    @property
    def variant(self) -> _Variant: ...
    @property
    def layout(self) -> _Layout: ...
    @property
    def rank(self) -> int | None: ...
    @property
    def in_dims(self) -> int | None: ...
    @property
    def out_dims(self) -> int | None: ...
    @property
    def num_experts(self) -> int | None: ...
    @property
    def dtype(self) -> str: ...

@final
class ScanResult:
    """The result of a scan, held in Rust."""

    @property
    def path(self) -> str: ...
    @property
    def format(self) -> _Format: ...
    @property
    def fine_tune_type(self) -> _FineTuneType | None: ...
    @property
    def tensor_count(self) -> int: ...
    @property
    def total_bytes(self) -> int: ...
    @property
    def index_path(self) -> str | None: ...
    @property
    def config_path(self) -> str | None: ...
    @property
    def config_schema(self) -> str | None: ...
    @property
    def has_errors(self) -> bool: ...
    def config_json(self) -> str | None: ...
    def module_settings(self) -> list[tuple[str, float | list[float] | None, float]]: ...
    def to_json(self, pretty: bool = False) -> str: ...
    def modules(self) -> list[Module]: ...
    def problems(self) -> list[Problem]: ...
    def files(self) -> list[FileInfo]: ...
    def module_groups(self) -> list[ModuleGroup]: ...
    def tensors(self) -> list[tuple[str, str, list[int], tuple[int, int], int]]: ...
    def non_adapter_tensors(self) -> list[str]: ...

@final
class ExpectedModules:
    """The modules a model offers to adapters (from a base folder or a live model)."""

    def __new__(
        cls,
        targets: list[tuple[str, str, int | None, int | None, int | None]],
        params: list[tuple[str, list[int]]] | None = None,
        source: str = ...,
    ) -> ExpectedModules: ...
    @property
    def source(self) -> str: ...
    def targets(self) -> list[tuple[str, str, int | None, int | None, int | None]]: ...
    def layers(self) -> tuple[str, int] | None: ...
    def __len__(self) -> int: ...

@final
class CheckResult:
    """The result of a check, held in Rust."""

    @property
    def ok(self) -> bool: ...
    def missing(self) -> list[str]: ...
    def unexpected(self) -> list[str]: ...
    def shape_mismatch(self) -> list[tuple[str, list[int], list[int]]]: ...
    def problems(self) -> list[Problem]: ...
    def to_json(self, pretty: bool = False) -> str: ...

@final
class DataPass:
    """The opt-in pass over an adapter's tensor data, run batch by batch."""

    def __new__(cls, scan: ScanResult, batch_bytes: int = ...) -> DataPass: ...
    def __len__(self) -> int: ...
    @property
    def total_bytes(self) -> int: ...
    def run(self, i: int) -> int: ...
    def report_json(self) -> str: ...

def read_base(
    path: str | os.PathLike[str],
    *,
    max_header_bytes: int | None = None,
    symlinks: Literal["follow", "inside", "refuse"] = "follow",
) -> ExpectedModules:
    """Read a base model folder's config.json and headers into the table of adaptable modules."""

def check(scan: ScanResult, expected: ExpectedModules) -> CheckResult:
    """Diff a scan against the expected modules."""

def check_paths(
    adapter: str | os.PathLike[str],
    base: str | os.PathLike[str],
    *,
    config: str | os.PathLike[str] | None = None,
    read_config: bool = True,
    symlinks: Literal["follow", "inside", "refuse"] = "follow",
) -> tuple[ScanResult, ExpectedModules, CheckResult]:
    """Scan an adapter and read a base folder at the same time, then diff them."""

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
) -> ScanResult:
    """Scan an adapter (a safetensors file, a folder, or a shard index) from its headers."""

def stacked_path(path: str) -> str:
    """The mlx-lm path of a stacked expert module (``X.experts.P`` -> ``X.switch_mlp.P``)."""

def per_expert_path(path: str, e: int) -> str:
    """The Hugging Face name of expert ``e``: ``X.switch_mlp.P`` -> ``X.experts.{e}.P``."""

def dtypes() -> dict[str, int]:
    """Every safetensors dtype name with its bits per element."""

def natural_order(paths: list[str]) -> list[int]:
    """The positions of ``paths`` in natural order (``layers.2`` before ``layers.10``)."""

def compress_ranges(values: list[int]) -> str:
    """Values as compact ranges: ``[0, 1, 2, 5]`` -> ``"0-2, 5"``."""

def unpacked_width(packed: int, bits: int) -> int | None:
    """The true width of a quantized weight's last axis packed into 32-bit words."""

def problem_codes() -> list[tuple[str, str, str]]:
    """Every problem code: ``(name, severities, meaning)``."""

def layouts() -> list[str]:
    """Every on-disk layout name."""

def hf_moe_block(block: str) -> str:
    """The Hugging Face name of an mlx-lm MoE block (``X.block_sparse_moe`` -> ``X.mlp``)."""

def mlx_moe_blocks(block: str) -> list[str]:
    """The mlx-lm blocks a Hugging Face MoE block may be, most likely first."""

def read_config_bytes(
    path: str | os.PathLike[str],
    *,
    folder: str | os.PathLike[str] | None = None,
    symlinks: Literal["follow", "inside", "refuse"] = "follow",
) -> bytes:
    """A JSON config file's bytes through the one opener (regular file, 16 MiB, symlink policy)."""

def is_adapter_file(name: str) -> bool:
    """Whether a file name is an adapter's own weights or shard index."""
