"""The command line: exit codes, JSON contract, human tables, errors on stderr."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import adapterscan
from adapterscan.cli import main
from producers import save_numpy, write_raw


def small_adapter(folder: Path, layers: int = 3) -> Path:
    tensors = {}
    for layer in range(layers):
        for proj, (i, o) in {"q_proj": (32, 32), "v_proj": (32, 16)}.items():
            tensors[f"model.layers.{layer}.self_attn.{proj}.lora_a"] = np.zeros((i, 4), np.float32)
            tensors[f"model.layers.{layer}.self_attn.{proj}.lora_b"] = np.zeros((4, o), np.float32)
    # Layer 1's q_proj was trained at rank 8: an outlier the config does not describe.
    tensors["model.layers.1.self_attn.q_proj.lora_a"] = np.zeros((32, 8), np.float32)
    tensors["model.layers.1.self_attn.q_proj.lora_b"] = np.zeros((8, 32), np.float32)
    save_numpy(folder / "adapters.safetensors", tensors)
    (folder / "adapter_config.json").write_text(
        json.dumps(
            {
                "fine_tune_type": "lora",
                "num_layers": layers,
                "lora_parameters": {
                    "rank": 4,
                    "scale": 20.0,
                    "dropout": 0.0,
                    "keys": ["self_attn.q_proj", "self_attn.v_proj"],
                },
            }
        )
    )
    return folder


def test_inspect_json_is_the_documented_object(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = small_adapter(tmp_path)
    assert main(["inspect", str(folder), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == adapterscan.scan(folder).to_dict()
    assert printed["tensor_count"] == 12
    assert printed["problems"][0]["code"] == "config_rank_mismatch"
    assert printed["problems"][0]["path"] == "model.layers.1.self_attn.q_proj"


def test_inspect_table_summarises_layers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = small_adapter(tmp_path)
    assert main(["inspect", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "6 LoRA modules under model.layers.*.self_attn." in out
    assert "0, 2" in out  # the outlier layer 1 is its own row
    assert "config_rank_mismatch" in out
    assert "1 errors, 0 warnings" in out


def test_inspect_all_lists_every_module(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = small_adapter(tmp_path, layers=2)
    assert main(["inspect", "--all", str(folder / "adapters.safetensors")]) == 0
    out = capsys.readouterr().out
    assert out.count("q_proj") >= 2
    assert out.count("v_proj") >= 2


def test_unreadable_input_exits_2_with_one_line(tmp_path: Path) -> None:
    bad = write_raw(
        tmp_path / "adapters.safetensors",
        '{"t":{"dtype":"F99","shape":[1],"data_offsets":[0,4]}}',
        4,
    )
    proc = subprocess.run(
        [sys.executable, "-m", "adapterscan", "inspect", str(bad), "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("adapterscan: error: ")
    assert "unknown dtype `F99`" in lines[0]
    assert "`t`" in lines[0]


def test_missing_path_and_bad_usage_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["inspect", str(tmp_path / "nope")]) == 2
    assert "No such file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["inspect"])
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert adapterscan.__version__ in capsys.readouterr().out


def test_console_script_is_installed() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from importlib.metadata import entry_points as e; "
            "print([x.value for x in e(group='console_scripts') if x.name == 'adapterscan'])",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "adapterscan.cli:main" in proc.stdout


def test_json_path_does_not_import_numpy_or_mlx(tmp_path: Path) -> None:
    folder = small_adapter(tmp_path)
    code = (
        "import sys; from adapterscan.cli import main; main(['inspect', sys.argv[1], '--json']); "
        # shutil too: argparse would import it (and its compression modules) on every start.
        "bad = [m for m in ('numpy', 'mlx', 'rich', 'shutil') if m in sys.modules]; "
        "sys.stderr.write(repr(bad))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(folder)], capture_output=True, text=True, check=True
    )
    assert proc.stderr == "[]"


@pytest.mark.parametrize("columns", [60, 100])
def test_help_is_as_wide_as_columns_says(columns: int) -> None:
    env = {**os.environ, "COLUMNS": str(columns)}
    proc = subprocess.run(
        [sys.executable, "-m", "adapterscan", "check", "--help"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    widths = [len(line) for line in proc.stdout.splitlines()]
    # argparse wraps two columns short of the width; the description fills its lines.
    assert max(widths) <= columns - 2
    assert max(widths) >= columns - 12


@pytest.mark.mlx
def test_demo_builds_and_inspects_real_adapters(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "adapterscan", "demo", "--dir", str(tmp_path), "--json"],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    assert [r["fine_tune_type"] for r in results] == ["lora", "dora", "lora"]
    moe = results[2]
    assert {m["num_experts"] for m in moe["modules"] if m["kind"] == "switch"} == {4}
    assert (tmp_path / "llama-lora" / "adapters.safetensors").exists()


@pytest.mark.parametrize("name", ["q_proj[/]", "[link=https://example.com]x[/link]", "[bold]b"])
def test_names_from_files_are_never_markup(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    import numpy as np

    monkeypatch.setenv("COLUMNS", "400")  # nothing folded: the name stays in one piece

    from producers import save_numpy

    save_numpy(
        tmp_path / "adapters.safetensors",
        {
            f"model.layers.0.{name}.lora_a": np.zeros((8, 2), np.float32),
            f"model.layers.0.{name}.lora_b": np.zeros((2, 8), np.float32),
            f"model.{name}.weight": np.zeros((2,), np.float32),
        },
    )
    assert main(["inspect", str(tmp_path), "--all"]) == 0
    out = capsys.readouterr().out
    assert name in out
    assert "\x1b]8;" not in out  # no terminal hyperlink
