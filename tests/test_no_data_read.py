"""Proof that a scan reads headers only: an I/O counter over sparse files with huge data regions."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from producers import header_json, write_raw

GIB = 1 << 30


def huge_adapter(folder: Path) -> tuple[Path, int]:
    """Two factors whose data take 96 GiB; the file is sparse, so it costs no disk."""
    folder.mkdir()
    rows = 3 * (1 << 30)
    a = rows * 4 * 4
    b = 4 * rows * 4
    header = header_json(
        {
            "model.embed_tokens.lora_a": ("F32", [rows, 4], [0, a]),
            "model.embed_tokens.lora_b": ("F32", [4, rows], [a, a + b]),
        }
    )
    path = write_raw(folder / "adapters.safetensors", header)
    with path.open("r+b") as f:
        f.truncate(8 + len(header) + a + b)
    return path, len(header)


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="needs /proc/self/io")
def test_scan_reads_only_the_header(tmp_path: Path) -> None:
    path, header_len = huge_adapter(tmp_path / "huge")
    assert path.stat().st_size > 90 * GIB
    assert path.stat().st_blocks * 512 < 1 << 20  # sparse: nothing allocated
    script = textwrap.dedent(
        f"""
        import json, adapterscan
        def rchar():
            fields = dict(l.split(": ") for l in open("/proc/self/io").read().splitlines())
            return int(fields["rchar"])
        adapterscan.scan({str(path)!r}, read_config=False)  # warm up
        before = rchar()
        s = adapterscan.scan({str(path)!r}, read_config=False)
        mid = rchar()
        d = s.to_dict()
        after = rchar()
        print(json.dumps({{"scan": mid - before, "total": after - before,
                           "bytes": s.total_bytes, "rank": s.modules["model.embed_tokens"].rank}}))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], check=True, capture_output=True, text=True, timeout=60
    ).stdout
    got = json.loads(out)
    proc_read = 4096  # the /proc/self/io read itself is counted too
    assert got["scan"] <= 8 + header_len + proc_read
    assert got["total"] <= 8 + header_len + 2 * proc_read
    assert got["bytes"] > 90 * GIB
    assert got["rank"] == 4
