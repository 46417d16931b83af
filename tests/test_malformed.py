"""One malformed input per error class: each gives its own typed error naming file and tensor."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest

import adapterscan
from adapterscan import _core
from producers import header_json, save_numpy, write_raw

F32 = "F32"


def one(dtype: str = F32, shape: list[int] | None = None, offsets: list[int] | None = None) -> str:
    return header_json({"t": (dtype, shape or [1], offsets or [0, 4])})


# (case id, header text or bytes, data length, length prefix override, error class, code, tensor)
CASES: list[tuple[str, str | bytes, int, int | None, type[Exception], str, str | None]] = [
    ("empty_header", b"", 0, 0, adapterscan.EmptyHeaderError, "empty_header", None),
    ("too_large", b"{}", 0, 100_000_001, adapterscan.HeaderTooLargeError, "header_too_large", None),
    ("u64_max", b"{}", 0, 2**64 - 1, adapterscan.HeaderTooLargeError, "header_too_large", None),
    ("truncated_header", b"{}", 0, 50, adapterscan.HeaderTruncatedError, "header_truncated", None),
    ("not_utf8", b'{"\xff":1}', 0, None, adapterscan.HeaderEncodingError, "header_encoding", None),
    ("bom", "\ufeff{}", 0, None, adapterscan.HeaderJsonError, "header_json", None),
    ("top_level_list", "[]", 0, None, adapterscan.HeaderJsonError, "header_json", None),
    ("nul_padding", "{}\0\0", 0, None, adapterscan.HeaderJsonError, "header_json", None),
    ("nan", '{"t":NaN}', 0, None, adapterscan.HeaderJsonError, "header_json", "t"),
    ("lone_surrogate", '{"\\ud800":1}', 0, None, adapterscan.HeaderJsonError, "header_json", None),
    ("entry_not_object", '{"t":1}', 0, None, adapterscan.HeaderJsonError, "header_json", "t"),
    (
        "missing_shape",
        '{"t":{"dtype":"F32","data_offsets":[0,4]}}',
        4,
        None,
        adapterscan.HeaderJsonError,
        "header_json",
        "t",
    ),
    ("negative_dim", one(shape=[-1]), 4, None, adapterscan.HeaderJsonError, "header_json", "t"),
    ("float_dim", one(shape=[1.0]), 4, None, adapterscan.HeaderJsonError, "header_json", "t"),  # type: ignore[list-item]
    (
        "three_offsets",
        one(offsets=[0, 4, 8]),
        8,
        None,
        adapterscan.HeaderJsonError,
        "header_json",
        "t",
    ),
    (
        "dim_over_u64",
        '{"t":{"dtype":"F32","shape":[18446744073709551616],"data_offsets":[0,4]}}',
        4,
        None,
        adapterscan.HeaderJsonError,
        "header_json",
        "t",
    ),
    (
        "duplicate_tensor",
        '{"t":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},'
        '"t":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}',
        2,
        None,
        adapterscan.DuplicateKeyError,
        "duplicate_key",
        "t",
    ),
    (
        "duplicate_metadata",
        '{"__metadata__":{},"__metadata__":{}}',
        0,
        None,
        adapterscan.DuplicateKeyError,
        "duplicate_key",
        "__metadata__",
    ),
    (
        "duplicate_field",
        '{"t":{"dtype":"U8","shape":[1],"shape":[1],"data_offsets":[0,1]}}',
        1,
        None,
        adapterscan.DuplicateKeyError,
        "duplicate_key",
        "t.shape",
    ),
    (
        "metadata_not_str",
        '{"__metadata__":{"a":1}}',
        0,
        None,
        adapterscan.MetadataError,
        "invalid_metadata",
        None,
    ),
    (
        "metadata_list",
        '{"__metadata__":[]}',
        0,
        None,
        adapterscan.MetadataError,
        "invalid_metadata",
        None,
    ),
    (
        "unknown_dtype",
        one(dtype="F128"),
        4,
        None,
        adapterscan.UnknownDtypeError,
        "unknown_dtype",
        "t",
    ),
    (
        "lowercase_dtype",
        one(dtype="f32"),
        4,
        None,
        adapterscan.UnknownDtypeError,
        "unknown_dtype",
        "t",
    ),
    ("overflow", one(shape=[2, 2**63 - 1]), 4, None, adapterscan.ShapeError, "invalid_shape", "t"),
    (
        "wraps_to_zero",
        one(shape=[65536, 65536, 65536, 65536], offsets=[0, 0]),
        0,
        None,
        adapterscan.ShapeError,
        "invalid_shape",
        "t",
    ),
    (
        "f4_odd",
        one(dtype="F4", shape=[3], offsets=[0, 2]),
        2,
        None,
        adapterscan.MisalignedTensorError,
        "misaligned_tensor",
        "t",
    ),
    (
        "nbytes",
        one(shape=[3], offsets=[0, 8]),
        8,
        None,
        adapterscan.TensorSizeError,
        "tensor_size_mismatch",
        "t",
    ),
    (
        "dim_2_32",
        one(dtype="U8", shape=[2**32 + 2], offsets=[0, 2]),
        2,
        None,
        adapterscan.TensorSizeError,
        "tensor_size_mismatch",
        "t",
    ),
    ("reversed", one(offsets=[4, 0]), 4, None, adapterscan.OffsetError, "invalid_offsets", "t"),
    ("not_at_zero", one(offsets=[4, 8]), 8, None, adapterscan.OffsetError, "invalid_offsets", "t"),
    ("trailing_bytes", one(), 5, None, adapterscan.IncompleteFileError, "incomplete_file", None),
    ("truncated_data", one(), 3, None, adapterscan.IncompleteFileError, "incomplete_file", None),
]


@pytest.mark.parametrize(
    ("header", "data_len", "n", "cls", "code", "tensor"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_each_malformed_class(
    tmp_path: Path,
    header: str | bytes,
    data_len: int,
    n: int | None,
    cls: type[Exception],
    code: str,
    tensor: str | None,
) -> None:
    path = write_raw(tmp_path / "adapters.safetensors", header, data_len, n=n)
    with pytest.raises(cls) as info:
        adapterscan.scan(path)
    err = info.value
    assert isinstance(err, adapterscan.SafetensorsError)
    assert isinstance(err, adapterscan.AdapterScanError)
    assert err.code == code  # type: ignore[attr-defined]
    assert err.path == str(path)  # type: ignore[attr-defined]
    assert err.tensor == tensor  # type: ignore[attr-defined]
    assert str(path) in str(err)


def test_too_small_files(tmp_path: Path) -> None:
    for size in (0, 5):
        p = tmp_path / f"s{size}.safetensors"
        p.write_bytes(b"\1" * size)
        with pytest.raises(adapterscan.HeaderTooSmallError, match="at least 8"):
            adapterscan.scan(p)


def test_json_error_has_line_and_column(tmp_path: Path) -> None:
    p = write_raw(
        tmp_path / "a.safetensors", '{"t":{"dtype":"F32",\n"shape":[1,],"data_offsets":[0,4]}}', 4
    )
    with pytest.raises(adapterscan.HeaderJsonError) as info:
        adapterscan.scan(p)
    assert (info.value.line, info.value.tensor) == (2, "t")  # type: ignore[attr-defined]
    assert info.value.column > 0  # type: ignore[attr-defined]


def test_utf8_error_has_byte_offset(tmp_path: Path) -> None:
    p = write_raw(tmp_path / "a.safetensors", b'{"ab\xff":1}')
    with pytest.raises(adapterscan.HeaderEncodingError) as info:
        adapterscan.scan(p)
    assert info.value.offset == 8 + 4  # type: ignore[attr-defined]


def test_every_offset_violation_is_listed(tmp_path: Path) -> None:
    header = header_json(
        {
            "a": ("U8", [4], [0, 4]),
            "b": ("U8", [4], [2, 6]),
            "c": ("U8", [2], [8, 10]),
            "d": ("U8", [2], [8, 10]),
        }
    )
    p = write_raw(tmp_path / "a.safetensors", header, 10)
    with pytest.raises(adapterscan.OffsetError) as info:
        adapterscan.scan(p)
    details = info.value.details  # type: ignore[attr-defined]
    assert len(details) == 3
    assert "overlap" in details[0]
    assert "gap" in details[1]
    assert "aliases" in details[2]


def test_limits_are_configurable(tmp_path: Path) -> None:
    p = save_numpy(tmp_path / "a.safetensors", {"x": np.zeros((2, 3, 4), np.float32)})
    with pytest.raises(adapterscan.ShapeError):
        adapterscan.scan(p, max_dims=2)
    with pytest.raises(adapterscan.HeaderTooLargeError):
        adapterscan.scan(p, max_header_bytes=16)
    p2 = save_numpy(
        tmp_path / "b.safetensors", {"x": np.zeros(1, np.float32), "y": np.zeros(1, np.float32)}
    )
    with pytest.raises(adapterscan.TooManyTensorsError):
        adapterscan.scan(p2, max_tensors=1)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(adapterscan.AdapterFileError) as info:
        adapterscan.scan(tmp_path / "nope.safetensors")
    assert info.value.code == "not_found"  # type: ignore[attr-defined]
    d = tmp_path / "dir.safetensors"
    d.mkdir()
    idx = tmp_path / "x.safetensors.index.json"
    idx.write_text(json.dumps({"weight_map": {"t": "dir.safetensors"}}))
    with pytest.raises(adapterscan.NotRegularFileError, match="directory"):
        adapterscan.scan(idx)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
@pytest.mark.timeout(20)
def test_fifo_is_refused_without_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "adapters.safetensors"
    os.mkfifo(fifo)
    with pytest.raises(adapterscan.NotRegularFileError, match="FIFO"):
        adapterscan.scan(fifo)
    with pytest.raises(adapterscan.NotRegularFileError, match="FIFO"):
        adapterscan.scan(tmp_path)


def test_symlinks_followed_or_refused(tmp_path: Path) -> None:
    blobs = tmp_path / "blobs"
    snap = tmp_path / "snapshots" / "rev"
    snap.mkdir(parents=True)
    real = save_numpy(
        blobs / "abc123",
        {"m.lora_a": np.zeros((4, 2), np.float32), "m.lora_b": np.zeros((2, 4), np.float32)},
    )
    (snap / "adapters.safetensors").symlink_to(Path("../../blobs/abc123"))
    s = adapterscan.scan(snap, read_config=False)
    assert s.modules["m"].rank == 2
    assert real.exists()
    with pytest.raises(adapterscan.NotRegularFileError, match="symbolic link"):
        adapterscan.scan(snap, symlinks="refuse")
    with pytest.raises(adapterscan.PathEscapeError, match="outside"):
        adapterscan.scan(snap, symlinks="inside")
    # A link that stays inside the folder is fine with "inside".
    (snap / "adapters.safetensors").unlink()
    (snap / "real.bin").write_bytes(real.read_bytes())
    (snap / "adapters.safetensors").symlink_to("real.bin")
    assert adapterscan.scan(snap, symlinks="inside", read_config=False).modules["m"].rank == 2
    with pytest.raises(ValueError, match="symlinks must be"):
        adapterscan.scan(snap, symlinks="sometimes")  # type: ignore[arg-type]


def write_shards(folder: Path) -> Path:
    save_numpy(folder / "a-1.safetensors", {"x.lora_a": np.zeros((4, 2), np.float32)})
    save_numpy(folder / "a-2.safetensors", {"x.lora_b": np.zeros((2, 4), np.float32)})
    return folder / "adapters.safetensors.index.json"


@pytest.mark.parametrize(
    ("shard", "cls"),
    [
        ("../outside.safetensors", adapterscan.PathEscapeError),
        ("/etc/passwd.safetensors", adapterscan.PathEscapeError),
        ("C:\\x.safetensors", adapterscan.PathEscapeError),
        ("sub\\..\\..\\x.safetensors", adapterscan.PathEscapeError),
        ("a-1.bin", adapterscan.ShardIndexError),
        ("missing.safetensors", adapterscan.AdapterFileError),
    ],
)
def test_index_names_are_confined(tmp_path: Path, shard: str, cls: type[Exception]) -> None:
    index = write_shards(tmp_path)
    (tmp_path.parent / "outside.safetensors").write_bytes(b"x" * 16)
    index.write_text(json.dumps({"weight_map": {"x.lora_a": "a-1.safetensors", "x.lora_b": shard}}))
    with pytest.raises(cls):
        adapterscan.scan(tmp_path)


def test_index_and_shards_must_agree(tmp_path: Path) -> None:
    index = write_shards(tmp_path)
    index.write_text(
        json.dumps(
            {
                "weight_map": {
                    "x.lora_a": "a-2.safetensors",
                    "x.lora_b": "a-2.safetensors",
                    "ghost": "a-1.safetensors",
                }
            }
        )
    )
    with pytest.raises(adapterscan.ShardMismatchError) as info:
        adapterscan.scan(tmp_path)
    details = info.value.details  # type: ignore[attr-defined]
    assert len(details) == 2
    assert any("x.lora_a" in d and "stored in `a-1.safetensors`" in d for d in details)
    assert any("ghost" in d and "no shard holds it" in d for d in details)
    assert isinstance(info.value, adapterscan.ShardIndexError)


@pytest.mark.parametrize(
    ("listing", "cls", "detail"),
    [
        # The index lists the name under both shards that hold it (its key repeats).
        (
            [("y", 1), ("x.lora_a", 1), ("y", 2), ("x.lora_b", 2)],
            adapterscan.DuplicateKeyError,
            "weight_map.y",
        ),
        # Listed once: the other shard holds it unlisted.
        (
            [("x.lora_a", 1), ("x.lora_b", 2), ("y", 1)],
            adapterscan.ShardMismatchError,
            "stored in two shards",
        ),
        # Listed twice under the same shard.
        (
            [("y", 1), ("x.lora_a", 1), ("y", 1), ("x.lora_b", 2)],
            adapterscan.DuplicateKeyError,
            "weight_map.y",
        ),
    ],
)
def test_a_name_in_two_shards(
    tmp_path: Path, listing: list[tuple[str, int]], cls: type[Exception], detail: str
) -> None:
    index = tmp_path / "adapters.safetensors.index.json"
    zeros = np.zeros((4, 2), np.float32)
    save_numpy(tmp_path / "a-1.safetensors", {"x.lora_a": zeros, "y": zeros})
    save_numpy(tmp_path / "a-2.safetensors", {"x.lora_b": zeros.T.copy(), "y": zeros})
    # Written by hand: a JSON object with a repeated key cannot come from a dict.
    body = ", ".join(f'"{name}": "a-{shard}.safetensors"' for name, shard in listing)
    index.write_text(f'{{"weight_map": {{{body}}}}}')
    with pytest.raises(cls) as info:
        adapterscan.scan(tmp_path)
    assert detail in str(info.value)


@pytest.mark.parametrize(
    "text",
    [
        "[]",
        "{",
        '{"weight_map": []}',
        '{"weight_map": {"a": 1}}',
        '{"weight_map": {"a":"x","a":"y"}}',
    ],
)
def test_malformed_index(tmp_path: Path, text: str) -> None:
    write_shards(tmp_path).write_text(text)
    with pytest.raises(adapterscan.AdapterScanError) as info:
        adapterscan.scan(tmp_path)
    assert isinstance(info.value, (adapterscan.ShardIndexError, adapterscan.DuplicateKeyError))


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("{", None),
        ("[1, 2]", None),
        ('{"num_layers": "16"}', "num_layers"),
        ('{"num_layers": 2, "lora_parameters": {"rank": "four"}}', "lora_parameters.rank"),
        ('{"num_layers": 2, "lora_parameters": {"scale": "x"}}', "lora_parameters.scale"),
        ('{"num_layers": 2, "lora_parameters": {"keys": "q_proj"}}', "lora_parameters.keys"),
        ('{"peft_type": "LORA", "r": 8, "rank_pattern": {"(": 4}}', "rank_pattern.("),
    ],
)
def test_bad_config_is_a_config_error(tmp_path: Path, text: str, field: str | None) -> None:
    save_numpy(
        tmp_path / "adapters.safetensors",
        {"x.lora_a": np.zeros((4, 2), np.float32), "x.lora_b": np.zeros((2, 4), np.float32)},
    )
    (tmp_path / "adapter_config.json").write_text(text)
    with pytest.raises(adapterscan.ConfigError) as info:
        adapterscan.scan(tmp_path)
    assert info.value.field == field  # type: ignore[attr-defined]
    assert "adapter_config.json" in str(info.value)


def test_no_adapter_in_folder(tmp_path: Path) -> None:
    with pytest.raises(adapterscan.NoAdapterError, match=r"no \.safetensors"):
        adapterscan.scan(tmp_path)
    (tmp_path / "adapter_model.bin").write_bytes(b"pickle")
    with pytest.raises(adapterscan.NoAdapterError, match=r"adapter_model\.bin"):
        adapterscan.scan(tmp_path)


def test_exceptions_are_importable_from_their_module() -> None:
    names = [n for n in dir(_core) if n.endswith("Error")]
    assert len(names) == 25
    for name in names:
        cls = getattr(_core, name)
        assert cls.__module__ == "adapterscan._core"
        assert issubclass(cls, adapterscan.AdapterScanError)
        assert getattr(adapterscan, name) is cls


def test_length_prefix_is_little_endian(tmp_path: Path) -> None:
    body = b'{"t":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}'
    p = tmp_path / "a.safetensors"
    p.write_bytes(struct.pack(">Q", len(body)) + body + b"\0")
    with pytest.raises(adapterscan.HeaderTooLargeError):
        adapterscan.scan(p)
