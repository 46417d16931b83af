"""PEFT variants an mlx LoRA cannot represent, on adapters written by real peft's
``save_pretrained`` (``tests/fixtures/peft/variants``, made by ``make_variants.py``; what each
variant writes is recorded beside it in ``variants.json``).

Each is reported with its own code, from its config field or from the tensors it adds; the ones
that would change outputs are errors, so ``check`` fails and ``load_adapters`` refuses them
before touching the model. Initialisations that modified the base (PiSSA, OLoRA, CorDA) are
warnings: the factors are standard. EVA and MiCA only initialise differently: plain LoRA.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import adapterscan

FIXTURES = Path(__file__).parent / "fixtures" / "peft"
VARIANTS = FIXTURES / "variants"
RECORDED = json.loads((FIXTURES / "variants.json").read_text())

REFUSED = {
    "lora-bias": "peft_lora_bias",
    "alora": "peft_alora",
    "qalora": "peft_qalora",
    "bdlora": "peft_bdlora",
    "kasa": "peft_kasa",
    "arrow": "peft_arrow",
    "monteclora": "peft_monteclora",
    "velora": "peft_velora",
}
BASE_CHANGED = {"pissa", "olora", "corda"}
PLAIN = {"eva", "mica"}


def test_every_fixture_is_classified() -> None:
    folders = {p.name for p in VARIANTS.iterdir() if p.is_dir()}
    assert folders == set(REFUSED) | BASE_CHANGED | PLAIN | {"dora-embedding"}
    assert set(RECORDED) >= folders
    # The recorded producer facts agree with the classification.
    assert all(RECORDED[v]["base_modified"] for v in BASE_CHANGED)
    assert not any(RECORDED[v]["base_modified"] for v in PLAIN)


@pytest.mark.parametrize("variant", sorted(REFUSED))
def test_refused_variants_are_errors(variant: str) -> None:
    s = adapterscan.scan(VARIANTS / variant)
    codes = {p.code: p.severity for p in s.problems}
    assert codes.get(REFUSED[variant]) == "error", codes
    assert not s.ok
    # Their extra tensors are the variant's, not base weights.
    assert "non_adapter_tensor" not in codes


@pytest.mark.parametrize("variant", sorted(v for v in REFUSED if RECORDED[v]["extra_tensors"]))
def test_extra_tensors_name_the_variant_without_its_config(tmp_path: Path, variant: str) -> None:
    folder = tmp_path / variant
    shutil.copytree(VARIANTS / variant, folder)
    cfg = json.loads((folder / "adapter_config.json").read_text())
    for field in RECORDED[variant]["config_fields"]:
        cfg[field] = None
    (folder / "adapter_config.json").write_text(json.dumps(cfg))
    problems = [p for p in adapterscan.scan(folder).problems if p.code == REFUSED[variant]]
    assert problems, variant
    assert problems[0].path is not None


@pytest.mark.parametrize("variant", sorted(BASE_CHANGED))
def test_base_changing_initialisations_warn(variant: str) -> None:
    s = adapterscan.scan(VARIANTS / variant)
    assert [(p.code, p.severity) for p in s.problems] == [("peft_base_changing_init", "warning")]
    assert variant in s.problems[0].message.lower()


@pytest.mark.parametrize("variant", sorted(PLAIN | {"dora-embedding"}))
def test_plain_factors_are_plain(variant: str) -> None:
    s = adapterscan.scan(VARIANTS / variant)
    assert not [p for p in s.problems if p.severity == "error"], s.problems
    if variant == "dora-embedding":
        m = s.modules["model.embed_tokens"]
        assert (m.kind, m.variant, m.layout) == ("embedding", "dora", "peft_embedding")


@pytest.mark.mlx
@pytest.mark.parametrize("variant", sorted(REFUSED))
def test_load_refuses_before_touching_the_model(variant: str) -> None:
    from mlx.utils import tree_flatten

    from adapterscan.mlx import load_adapters
    from adapterscan.mlx._skeleton import skeleton

    model = skeleton(FIXTURES / "llama-base")
    before = dict(tree_flatten(model.parameters()))
    with pytest.raises(adapterscan.AdapterMismatchError, match=REFUSED[variant]):
        load_adapters(model, VARIANTS / variant)
    after = dict(tree_flatten(model.parameters()))
    assert after.keys() == before.keys()
    assert all(after[k] is before[k] for k in before)
    assert not adapterscan.check(VARIANTS / variant, FIXTURES / "llama-base").ok
