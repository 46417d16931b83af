"""check against bases of architectures whose weights do not all look like what mlx-lm wraps.

Each base is built from a tiny config with mlx-lm's own classes and saved with its ``save_model``;
each adapter is made by mlx-lm's ``linear_to_lora_layers`` and saved as its trainer saves. The
expected module table is the live model's own. Covered: MoEGate routers and MLA's MultiLinear
(deepseek_v3), a linear-attention convolution (qwen3_next), per-expert Linear lists (dbrx),
experts outside ``switch_mlp`` (gpt_oss), a position embedding and no ``lm_head`` (gpt2).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import adapterscan
from producers import attach_lora, build_model, expected_modules, save_base, save_like_trainer

pytestmark = pytest.mark.mlx

ARCHS: dict[str, dict[str, Any]] = {
    "deepseek_v3": {
        "model_type": "deepseek_v3",
        "vocab_size": 128,
        "hidden_size": 64,
        "intermediate_size": 96,
        "moe_intermediate_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "n_shared_experts": 1,
        "n_routed_experts": 4,
        "routed_scaling_factor": 1.0,
        "kv_lora_rank": 16,
        "q_lora_rank": 24,
        "qk_rope_head_dim": 8,
        "v_head_dim": 16,
        "qk_nope_head_dim": 16,
        "topk_method": "noaux_tc",
        "scoring_func": "sigmoid",
        "norm_topk_prob": True,
        "n_group": 1,
        "topk_group": 1,
        "num_experts_per_tok": 2,
        "moe_layer_freq": 1,
        "first_k_dense_replace": 1,
        "max_position_embeddings": 256,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "attention_bias": False,
    },
    "qwen3_next": {
        "model_type": "qwen3_next",
        "vocab_size": 128,
        "hidden_size": 64,
        "intermediate_size": 96,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "linear_num_value_heads": 4,
        "linear_num_key_heads": 2,
        "linear_key_head_dim": 16,
        "linear_value_head_dim": 16,
        "linear_conv_kernel_dim": 4,
        "num_experts": 4,
        "num_experts_per_tok": 2,
        "decoder_sparse_step": 1,
        "shared_expert_intermediate_size": 32,
        "mlp_only_layers": [],
        "moe_intermediate_size": 32,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "partial_rotary_factor": 0.5,
        "max_position_embeddings": 256,
        "full_attention_interval": 2,
        "norm_topk_prob": True,
        "tie_word_embeddings": False,
    },
    "dbrx": {
        "model_type": "dbrx",
        "vocab_size": 128,
        "d_model": 64,
        "n_layers": 2,
        "n_heads": 4,
        "attn_config": {"kv_n_heads": 2, "clip_qkv": 8.0, "rope_theta": 10000.0},
        "ffn_config": {"ffn_hidden_size": 32, "moe_num_experts": 4, "moe_top_k": 2},
    },
    "gpt_oss": {
        "model_type": "gpt_oss",
        "vocab_size": 128,
        "hidden_size": 64,
        "intermediate_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "num_local_experts": 4,
        "num_experts_per_tok": 2,
        "sliding_window": 16,
        "rope_theta": 10000.0,
        "rms_norm_eps": 1e-5,
        "layer_types": ["sliding_attention", "full_attention"],
    },
    "gpt2": {
        "model_type": "gpt2",
        "n_ctx": 64,
        "n_embd": 64,
        "n_head": 4,
        "n_layer": 2,
        "n_positions": 64,
        "layer_norm_epsilon": 1e-5,
        "vocab_size": 128,
    },
}


def _layers(config: dict[str, Any]) -> int:
    for key in ("num_hidden_layers", "n_layers", "n_layer"):
        if key in config:
            return int(config[key])
    raise KeyError("layers")


def _make(tmp_path: Path, arch: str, keys: list[str] | None = None) -> tuple[Any, Path, Path]:
    config = ARCHS[arch]
    base = save_base(build_model(config), config, tmp_path / "base")
    model = build_model(config)
    n = _layers(config)
    params = attach_lora(model, num_layers=n, rank=4, scale=10.0, keys=keys)
    adapter = save_like_trainer(
        model, tmp_path / "adapter", fine_tune_type="lora", num_layers=n, lora_parameters=params
    )
    return model, base, adapter


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_default_keys_fit_their_own_base(tmp_path: Path, arch: str) -> None:
    model, base, adapter = _make(tmp_path, arch)
    s = adapterscan.scan(adapter)
    wrapped = expected_modules(model)
    assert {p: m.kind for p, m in s.modules.items()} == {p: r["kind"] for p, r in wrapped.items()}
    report = adapterscan.check(adapter, base)
    assert (report.missing, report.unexpected, report.shape_mismatch) == ([], [], [])
    assert report.ok, report.problems
    assert "base_structure_from_headers" not in {p.code for p in report.problems}
    assert report.expected.source.startswith("mlx-lm classes")
    # Read from its headers, the base says so, and still promises nothing mlx-lm never wraps.
    headers = adapterscan.check(adapter, base, structure="headers")
    assert "base_structure_from_headers" in {p.code for p in headers.problems}
    assert (headers.missing, headers.unexpected, headers.shape_mismatch) == ([], [], [])


@pytest.mark.parametrize("arch", ["deepseek_v3", "qwen3_next"])
def test_a_smaller_base_gives_exact_lists(tmp_path: Path, arch: str) -> None:
    _, _, adapter = _make(tmp_path, arch)
    config = dict(ARCHS[arch])
    config["hidden_size"] = 48
    # Fewer layers: qwen3_next needs its linear and full attention layers in pairs.
    config["num_hidden_layers"] = 2 if arch == "qwen3_next" else _layers(config) - 1
    other = save_base(build_model(config), config, tmp_path / "other")
    report = adapterscan.check(adapter, other)
    assert not report.ok
    gone = range(config["num_hidden_layers"], _layers(ARCHS[arch]))
    assert report.unexpected, "the adapter's last layers have no module in the smaller base"
    assert {int(k.split("layers.")[1].split(".")[0]) for k in report.unexpected} == set(gone)
    assert report.shape_mismatch, "hidden 64 against 48"


def test_position_embedding_lora_is_an_embedding(tmp_path: Path) -> None:
    model, base, adapter = _make(tmp_path, "gpt2", keys=["attn.c_attn", "model.wpe"])
    s = adapterscan.scan(adapter)
    assert s.modules["model.wpe"].kind == "embedding"
    assert s.modules["model.wpe"].layout == "mlx_embedding"
    assert (s.modules["model.wpe"].in_dims, s.modules["model.wpe"].out_dims) == (64, 64)
    assert expected_modules(model)["model.wpe"]["kind"] == "embedding"
    report = adapterscan.check(adapter, base)
    assert report.ok, (report.missing, report.unexpected, report.shape_mismatch, report.problems)
    # PEFT writes an embedding's factors as lora_embedding_A/B, and a position embedding is not
    # the tied output head: the way back is allowed.
    from adapterscan.mlx import convert_to_mlx, convert_to_peft

    peft = convert_to_peft(adapter, tmp_path / "peft")
    assert sorted(k for k in peft.tensors if ".wpe." in k) == [
        "base_model.model.model.wpe.lora_embedding_A",
        "base_model.model.model.wpe.lora_embedding_B",
    ]
    back = convert_to_mlx(tmp_path / "peft", tmp_path / "back", base=base)
    assert back.modules["model.wpe"].kind == "embedding"


def test_lora_on_the_tied_token_embedding_is_refused(tmp_path: Path) -> None:
    from adapterscan.mlx import convert_to_mlx, convert_to_peft

    _, base, adapter = _make(tmp_path, "gpt2", keys=["attn.c_attn", "model.wte"])
    convert_to_peft(adapter, tmp_path / "peft")
    with pytest.raises(adapterscan.AdapterScanError, match="ties its embedding"):
        convert_to_mlx(tmp_path / "peft", tmp_path / "back", base=base)


def test_a_model_without_lm_head_ties_its_embedding() -> None:
    from adapterscan.mlx._live import tied_vocab

    gpt2 = build_model(ARCHS["gpt2"])
    assert not hasattr(gpt2, "lm_head")
    assert tied_vocab(gpt2) == 128  # wte; wpe (64 positions) is not the head
    assert tied_vocab(build_model(ARCHS["deepseek_v3"])) is None


def test_structure_model_refuses_what_mlx_lm_cannot_build(tmp_path: Path) -> None:
    _, base, adapter = _make(tmp_path, "gpt2")
    cfg = json.loads((base / "config.json").read_text())
    cfg["model_type"] = "no_such_model"
    (base / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(adapterscan.AdapterScanError, match="mlx-lm cannot build"):
        adapterscan.check(adapter, base, structure="model")
    fallback = adapterscan.check(adapter, base)
    assert "base_structure_from_headers" in {p.code for p in fallback.problems}


def test_experts_outside_switch_mlp_convert_both_ways(tmp_path: Path) -> None:
    """gpt-oss keeps its SwitchLinear experts at `mlp.experts.*`: per-expert PEFT and back, with
    the base, returns to those paths and stock mlx-lm reproduces the logits; fused transformers
    parameters are refused with the reason."""
    import mlx.core as mx
    from mlx.utils import tree_map
    from mlx_lm.tuner.utils import load_adapters as stock_load

    from adapterscan.mlx import convert_to_mlx, convert_to_peft

    model, base, _ = _make(tmp_path, "gpt_oss")
    mx.random.seed(3)
    model.update(tree_map(lambda p: mx.random.normal(p.shape) * 0.05, model.trainable_parameters()))
    model.eval()
    from adapterscan.mlx import save_adapters

    save_adapters(model, tmp_path / "trained")
    tokens = mx.array([[1, 2, 3, 4]])
    want = model(tokens)
    with pytest.raises(adapterscan.AdapterScanError, match="per-expert"):
        convert_to_peft(tmp_path / "trained", tmp_path / "fused")
    convert_to_peft(tmp_path / "trained", tmp_path / "peft", experts="per-expert")
    # Loaded straight into the model, the per-expert PEFT keys land at mlp.experts.* too.
    from adapterscan.mlx import load_adapters

    direct = load_adapters(build_model(ARCHS["gpt_oss"]), tmp_path / "peft")
    assert mx.allclose(direct(tokens), want, atol=1e-4).item()
    back = convert_to_mlx(tmp_path / "peft", tmp_path / "back", base=base)
    assert "model.layers.0.mlp.experts.gate_proj" in back.modules
    assert not any("switch_mlp" in p for p in back.modules)
    assert adapterscan.check(tmp_path / "back", base).ok
    stock = build_model(ARCHS["gpt_oss"])
    stock.freeze()
    stock_load(stock, str(tmp_path / "back"))
    stock.eval()
    assert mx.allclose(stock(tokens), want, atol=1e-4).item()


@pytest.mark.parametrize("quantized", ["whole", "partly"])
def test_quantized_bases_through_the_classes_and_the_headers(
    tmp_path: Path, quantized: str
) -> None:
    """A base quantized by mlx-lm's quantize_model, wholly or partly (8-bit attention, routers
    left float): the skeleton is quantized as its config says; both readings fit the adapter of
    a model quantized the same way, and both find a rank-4 adapter's factors for the true widths."""
    import mlx.nn as nn
    from mlx_lm.utils import quantize_model

    from producers import QWEN3_MOE

    def predicate(path: str, module: nn.Module) -> bool | dict[str, Any]:
        if quantized == "whole":
            return hasattr(module, "to_quantized")
        if path.endswith("mlp.gate"):
            return False
        if "self_attn" in path:
            return {"group_size": 32, "bits": 8}
        return hasattr(module, "to_quantized")

    def make() -> tuple[Any, dict[str, Any]]:
        return quantize_model(
            build_model(QWEN3_MOE),
            dict(QWEN3_MOE),
            group_size=32,
            bits=4,
            quant_predicate=predicate,
        )

    base_model, config = make()
    base = save_base(base_model, config, tmp_path / "base")
    model, _ = make()
    params = attach_lora(model, num_layers=2, rank=4, scale=10.0)
    adapter = save_like_trainer(
        model, tmp_path / "adapter", fine_tune_type="lora", num_layers=2, lora_parameters=params
    )
    for structure in ("auto", "headers"):
        report = adapterscan.check(adapter, base, structure=structure)
        assert (report.missing, report.unexpected, report.shape_mismatch) == ([], [], []), structure
        assert report.ok, (structure, report.problems)
    widths = {r[0]: r[2] for r in adapterscan.base_structure(base).targets()}
    assert widths["model.layers.0.self_attn.q_proj"] == 64  # unpacked from its 8 or 4 bits
    assert widths["model.layers.0.mlp.switch_mlp.up_proj"] == 64


def test_another_expert_count_gives_exact_lists(tmp_path: Path) -> None:
    from producers import QWEN3_MOE

    model = build_model(QWEN3_MOE)
    params = attach_lora(model, num_layers=2, rank=4, scale=10.0, keys=["mlp.switch_mlp.up_proj"])
    adapter = save_like_trainer(
        model, tmp_path / "adapter", fine_tune_type="lora", num_layers=2, lora_parameters=params
    )
    other = dict(QWEN3_MOE, num_experts=8)
    base = save_base(build_model(other), other, tmp_path / "base")
    report = adapterscan.check(adapter, base)
    assert not report.ok
    keys = sorted(m.key for m in report.shape_mismatch)
    assert keys == [
        f"model.layers.{i}.mlp.switch_mlp.up_proj.lora_{x}" for i in (0, 1) for x in "ab"
    ]
    assert all(m.expected[0] == 8 and m.saved[0] == 4 for m in report.shape_mismatch)


def test_a_base_config_without_model_type_falls_back_to_the_headers(tmp_path: Path) -> None:
    _, base, adapter = _make(tmp_path, "gpt2")
    cfg = json.loads((base / "config.json").read_text())
    del cfg["model_type"]
    (base / "config.json").write_text(json.dumps(cfg))
    report = adapterscan.check(adapter, base)
    assert "base_structure_from_headers" in {p.code for p in report.problems}
    with pytest.raises(adapterscan.AdapterScanError, match="no model_type"):
        adapterscan.check(adapter, base, structure="model")


@pytest.mark.parametrize("structure", ["auto", "headers"])
def test_a_base_config_linked_out_of_the_folder_is_refused_inside(
    tmp_path: Path, structure: str
) -> None:
    _, base, adapter = _make(tmp_path, "gpt2")
    outside = tmp_path / "outside.json"
    (base / "config.json").rename(outside)
    (base / "config.json").symlink_to(outside)
    assert adapterscan.check(adapter, base, structure=structure).ok  # followed by default
    with pytest.raises(adapterscan.PathEscapeError):
        adapterscan.check(adapter, base, structure=structure, symlinks="inside")
