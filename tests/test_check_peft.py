"""`check` of PEFT adapters against Hugging Face layout bases, written with `safetensors`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import adapterscan
from producers import peft_dense, save_numpy

HIDDEN, INTER, EXPERTS, LAYERS, VOCAB = 32, 16, 4, 2, 50


def hf_moe_base(folder: Path) -> Path:
    """A qwen3_moe-like checkpoint in the Hugging Face per-expert layout."""
    t: dict[str, np.ndarray] = {"model.embed_tokens.weight": np.zeros((VOCAB, HIDDEN), np.float16)}
    for layer in range(LAYERS):
        p = f"model.layers.{layer}"
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            t[f"{p}.self_attn.{proj}.weight"] = np.zeros((HIDDEN, HIDDEN), np.float16)
        t[f"{p}.mlp.gate.weight"] = np.zeros((EXPERTS, HIDDEN), np.float16)
        for e in range(EXPERTS):
            t[f"{p}.mlp.experts.{e}.gate_proj.weight"] = np.zeros((INTER, HIDDEN), np.float16)
            t[f"{p}.mlp.experts.{e}.up_proj.weight"] = np.zeros((INTER, HIDDEN), np.float16)
            t[f"{p}.mlp.experts.{e}.down_proj.weight"] = np.zeros((HIDDEN, INTER), np.float16)
        t[f"{p}.input_layernorm.weight"] = np.ones(HIDDEN, np.float16)
    t["lm_head.weight"] = np.zeros((VOCAB, HIDDEN), np.float16)
    save_numpy(folder / "model.safetensors", t, metadata={"format": "pt"})
    (folder / "config.json").write_text(
        json.dumps({"model_type": "qwen3_moe", "num_hidden_layers": LAYERS})
    )
    return folder


def peft_adapter(
    folder: Path, *, skip_expert: int | None = None, extra_expert: bool = False
) -> Path:
    t: dict[str, np.ndarray] = {}
    for layer in range(LAYERS):
        p = f"model.layers.{layer}"
        t |= peft_dense(f"{p}.self_attn.q_proj", 4, HIDDEN, HIDDEN)
        for e in range(EXPERTS + (1 if extra_expert else 0)):
            if e == skip_expert:
                continue
            t |= peft_dense(f"{p}.mlp.experts.{e}.up_proj", 4, HIDDEN, INTER)
    save_numpy(folder / "adapter_model.safetensors", t)
    (folder / "adapter_config.json").write_text(
        json.dumps(
            {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "up_proj"]}
        )
    )
    return folder


def test_hf_base_table(tmp_path: Path) -> None:
    table = {t[0]: t for t in adapterscan.read_base(hf_moe_base(tmp_path / "b")).targets()}
    assert table["model.layers.0.mlp.switch_mlp.up_proj"] == (
        "model.layers.0.mlp.switch_mlp.up_proj",
        "switch",
        HIDDEN,
        INTER,
        EXPERTS,
    )
    assert table["model.embed_tokens"][1:] == ("embedding", VOCAB, HIDDEN, None)
    assert table["model.layers.1.mlp.gate"][1:] == ("linear", HIDDEN, EXPERTS, None)
    assert "model.layers.0.input_layernorm" not in table


def test_peft_per_expert_adapter_fits(tmp_path: Path) -> None:
    base = hf_moe_base(tmp_path / "b")
    report = adapterscan.check(peft_adapter(tmp_path / "a"), base)
    assert report.ok, report.to_dict()


def test_missing_and_extra_experts(tmp_path: Path) -> None:
    base = hf_moe_base(tmp_path / "b")
    report = adapterscan.check(peft_adapter(tmp_path / "a", skip_expert=2), base)
    assert report.missing == [
        f"base_model.model.model.layers.{i}.mlp.experts.2.up_proj.lora_{x}.weight"
        for i in range(LAYERS)
        for x in "AB"
    ]
    report = adapterscan.check(peft_adapter(tmp_path / "c", extra_expert=True), base)
    assert report.unexpected == [
        f"base_model.model.model.layers.{i}.mlp.experts.{EXPERTS}.up_proj.lora_{x}.weight"
        for i in range(LAYERS)
        for x in "AB"
    ]


@pytest.mark.parametrize("lone", ["A", "B"])
def test_a_lone_expert_factor_names_its_partner(tmp_path: Path, lone: str) -> None:
    # Expert 1 of layer 0 keeps one factor: its partner is missing, the expert is not.
    folder = peft_adapter(tmp_path / "a")
    path = folder / "adapter_model.safetensors"
    from safetensors.numpy import load_file

    t = load_file(path)
    gone = "B" if lone == "A" else "A"
    del t[f"base_model.model.model.layers.0.mlp.experts.1.up_proj.lora_{gone}.weight"]
    save_numpy(path, t)
    report = adapterscan.check(folder, hf_moe_base(tmp_path / "b"))
    assert report.missing == [
        f"base_model.model.model.layers.0.mlp.experts.1.up_proj.lora_{gone}.weight"
    ]
    assert report.unexpected == []
    assert not report.ok


def shard(folder: Path, stem: str, shards: int) -> None:
    """Split ``folder/{stem}.safetensors`` into shards with a Hugging Face index (as transformers
    writes one: sorted keys, indent 2)."""
    from safetensors.numpy import load_file

    single = folder / f"{stem}.safetensors"
    tensors = load_file(single)
    single.unlink()
    names = sorted(tensors)
    weight_map = {}
    for s in range(shards):
        file = f"{stem}-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = names[s::shards]
        save_numpy(folder / file, {n: tensors[n] for n in part}, metadata={"format": "pt"})
        weight_map |= dict.fromkeys(part, file)
    total = sum(t.nbytes for t in tensors.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / f"{stem}.safetensors.index.json").write_text(
        json.dumps(index, indent=2, sort_keys=True) + "\n"
    )


@pytest.mark.parametrize("sharded", ["adapter", "base", "both"])
def test_reading_both_sides_together_gives_the_separate_reports(
    tmp_path: Path, sharded: str
) -> None:
    # Paths on both sides: the adapter's and the base's headers are read in one step. The report
    # is the one of a scan and a base table made apart.
    base = hf_moe_base(tmp_path / "b")
    adapter = peft_adapter(tmp_path / "a", skip_expert=1, extra_expert=True)
    if sharded in ("adapter", "both"):
        shard(adapter, "adapter_model", 3)
    if sharded in ("base", "both"):
        shard(base, "model", 2)
    (adapter / "stray-00009-of-00009.safetensors").write_bytes(b"not a header")
    together = adapterscan.check(adapter, base)
    apart = adapterscan.check(adapterscan.scan(adapter), adapterscan.read_base(base))
    assert together.to_dict() == apart.to_dict()
    assert together.missing
    assert together.unexpected
    if sharded != "base":
        # The unreadable file the adapter's index does not name is only reported.
        assert "unreferenced_shard" in {p.code for p in together.problems}


def test_reading_both_sides_together_reports_the_adapter_first(tmp_path: Path) -> None:
    base = hf_moe_base(tmp_path / "b")
    adapter = peft_adapter(tmp_path / "a")
    shard(base, "model", 2)
    bad_base = tmp_path / "b2"
    bad_base.mkdir()
    for f in base.iterdir():
        (bad_base / f.name).write_bytes(f.read_bytes())
    (bad_base / "config.json").write_text("{not json")
    with pytest.raises(adapterscan.ConfigError, match=r"config\.json"):
        adapterscan.check(adapter, bad_base)
    shard_file = sorted(base.glob("model-*.safetensors"))[1]
    shard_file.write_bytes(shard_file.read_bytes()[:20])
    with pytest.raises(adapterscan.HeaderTruncatedError, match=shard_file.name):
        adapterscan.check(adapter, base)
    # The adapter's own error wins over either of the base's.
    single = adapter / "adapter_model.safetensors"
    single.write_bytes(single.read_bytes()[:4])
    for b in (base, bad_base):
        with pytest.raises(adapterscan.HeaderTooSmallError, match="adapter_model"):
            adapterscan.check(adapter, b)


def test_targets_promise_modules(tmp_path: Path) -> None:
    base = hf_moe_base(tmp_path / "b")
    folder = peft_adapter(tmp_path / "a")
    cfg = json.loads((folder / "adapter_config.json").read_text())
    cfg["target_modules"] = ["q_proj", "up_proj", "v_proj"]
    (folder / "adapter_config.json").write_text(json.dumps(cfg))
    report = adapterscan.check(folder, base)
    assert report.missing == [
        f"base_model.model.model.layers.{i}.self_attn.v_proj.lora_{x}.weight"
        for i in range(LAYERS)
        for x in "AB"
    ]


def test_expert_count_of_mlx_switch_adapter_vs_base(tmp_path: Path) -> None:
    base = hf_moe_base(tmp_path / "b")
    a = tmp_path / "a"
    save_numpy(
        a / "adapters.safetensors",
        {
            "model.layers.0.mlp.switch_mlp.up_proj.lora_a": np.zeros((8, 4, HIDDEN), np.float32),
            "model.layers.0.mlp.switch_mlp.up_proj.lora_b": np.zeros((8, INTER, 4), np.float32),
        },
    )
    report = adapterscan.check(a, base)
    assert [(m.key, m.saved, m.expected) for m in report.shape_mismatch] == [
        ("model.layers.0.mlp.switch_mlp.up_proj.lora_a", (8, 4, HIDDEN), (EXPERTS, 4, HIDDEN)),
        ("model.layers.0.mlp.switch_mlp.up_proj.lora_b", (8, INTER, 4), (EXPERTS, INTER, 4)),
    ]


def test_every_wrong_expert_factor_is_reported(tmp_path: Path) -> None:
    """Experts of one module with many different shapes, some right and some wrong: each wrong
    factor is reported with its own shape, whatever the order the shapes come in."""
    base = hf_moe_base(tmp_path / "b")
    rank = 4
    want = {"A": (rank, HIDDEN), "B": (INTER, rank)}
    # (A shape, B shape) per expert: right, wrong out, wrong in and out, right again.
    shapes = [
        ((rank, HIDDEN), (INTER, rank)),
        ((rank, HIDDEN), (INTER + 1, rank)),
        ((rank, HIDDEN + 1), (INTER + 2, rank)),
        ((rank, HIDDEN), (INTER, rank)),
    ]
    t: dict[str, np.ndarray] = {}
    wrong: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}
    for layer in range(LAYERS):
        for e, pair in enumerate(shapes if layer == 0 else shapes[::-1]):
            for leaf, shape in zip("AB", pair, strict=True):
                key = f"base_model.model.model.layers.{layer}.mlp.experts.{e}.up_proj.lora_{leaf}.weight"
                t[key] = np.zeros(shape, np.float32)
                if shape != want[leaf]:
                    wrong[key] = (shape, want[leaf])
    a = tmp_path / "a"
    save_numpy(a / "adapter_model.safetensors", t)
    (a / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "r": rank, "lora_alpha": 8, "target_modules": ["up_proj"]})
    )
    report = adapterscan.check(a, base)
    assert {m.key: (m.saved, m.expected) for m in report.shape_mismatch} == wrong
    assert len(wrong) == 6
    assert (report.missing, report.unexpected) == ([], [])


def run_bounded(code: str, *args: str) -> str:
    """Run ``code`` in a fresh interpreter that must finish within a minute (an expert count is
    never enumerated, however large)."""
    out = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return out.stdout


def test_implausible_expert_counts_are_reported_not_enumerated(tmp_path: Path) -> None:
    # A per-expert base whose layer 0 also names expert 10^12, and a stacked (mlx) weight of
    # 2^21 experts with no bytes: neither count is used, both are reported.
    base = hf_moe_base(tmp_path / "b")
    save_numpy(
        base / "model-extra.safetensors",
        {
            "model.layers.0.mlp.experts.1000000000000.up_proj.weight": np.zeros(
                (INTER, HIDDEN), np.float16
            ),
            "model.layers.1.mlp.switch_mlp.gate_proj.weight": np.zeros(
                (2**21, 0, HIDDEN), np.float16
            ),
        },
    )
    adapter = peft_adapter(tmp_path / "a")
    code = (
        "import json, sys, adapterscan\n"
        "r = adapterscan.check(sys.argv[1], sys.argv[2])\n"
        "print(json.dumps([(p.code, p.path) for p in r.problems if p.code.startswith('base_')]))\n"
        "print(json.dumps(r.unexpected))\n"
    )
    problems, unexpected = run_bounded(code, str(adapter), str(base)).splitlines()
    assert json.loads(problems) == [
        ["base_experts_implausible", "model.layers.0.mlp.experts.up_proj"],
        ["base_experts_implausible", "model.layers.1.mlp.switch_mlp.gate_proj"],
        # The test's config.json holds only the model type: mlx-lm cannot build the model.
        ["base_structure_from_headers", None],
    ]
    # Layer 0's up_proj experts have no module to go to; layer 1's still fit.
    assert json.loads(unexpected) == [
        f"base_model.model.model.layers.0.mlp.experts.{e}.up_proj.lora_{x}.weight"
        for e in range(EXPERTS)
        for x in "AB"
    ]
    with pytest.raises(ValueError, match="over the limit"):
        adapterscan.ExpectedModules([("m.switch_mlp.up_proj", "switch", 8, 8, 2**21)])


def test_a_huge_expert_index_in_an_adapter(tmp_path: Path) -> None:
    t: dict[str, np.ndarray] = {}
    for e in (0, 1, 10**12):
        t |= peft_dense(f"model.layers.0.mlp.experts.{e}.up_proj", 4, HIDDEN, INTER)
    save_numpy(tmp_path / "adapter_model.safetensors", t)
    code = (
        "import sys, adapterscan\n"
        "s = adapterscan.scan(sys.argv[1])\n"
        "print([p.message for p in s.problems if p.code == 'missing_experts'][0])\n"
    )
    assert run_bounded(code, str(tmp_path)).strip() == (
        f"{10**12 - 2} of {10**12 + 1} experts have no factors: 2-{10**12 - 1}"
    )


@pytest.mark.parametrize("shards", [1, 3])
@pytest.mark.parametrize(
    ("drop", "wide", "count", "stored"),
    [
        (None, None, 12, 12),
        (5, None, 12, 11),
        (0, None, 12, 11),
        (11, None, 11, 11),
        (None, 3, 12, 12),
    ],
)
def test_base_experts_are_counted_and_compared(
    tmp_path: Path, shards: int, drop: int | None, wide: int | None, count: int, stored: int
) -> None:
    # Twelve experts, whose names list them as text (0, 1, 10, 11, 2, ...); in three shards a
    # module's experts are spread over the files. The count is the highest expert plus one; a
    # missing expert or one of another shape is a warning; the lowest expert gives the dims.
    t: dict[str, np.ndarray] = {}
    for e in range(12):
        if e == drop:
            continue
        rows = INTER + 1 if e == wide else INTER
        t[f"model.layers.0.mlp.experts.{e}.up_proj.weight"] = np.zeros((rows, HIDDEN), np.float16)
    folder = tmp_path / "b"
    save_numpy(folder / "model.safetensors", t, metadata={"format": "pt"})
    if shards > 1:
        shard(folder, "model", shards)
    assert adapterscan.read_base(folder).targets() == [
        ("model.layers.0.mlp.switch_mlp.up_proj", "switch", HIDDEN, INTER, count)
    ]
    # The base's findings come with a check's report.
    adapter = tmp_path / "a"
    save_numpy(
        adapter / "adapter_model.safetensors",
        peft_dense("model.layers.0.mlp.experts.1.up_proj", 4, HIDDEN, INTER),
    )
    (adapter / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["up_proj"]})
    )
    report = adapterscan.check(adapter, folder)
    warnings = [p for p in report.problems if p.code == "base_experts_inconsistent"]
    if stored == count and wide is None:
        assert warnings == []
    else:
        assert [(w.severity, w.path) for w in warnings] == [
            ("warning", "model.layers.0.mlp.experts.up_proj")
        ]
        assert f"stores {stored} of {count} experts" in warnings[0].message
