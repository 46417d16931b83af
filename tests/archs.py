"""Tiny configs for every model architecture mlx-lm 0.32.2 ships, built with random weights.

``ARCHS`` maps each mlx-lm ``model_type`` to a minimal ``config.json``-style dict. Each one builds a
model through mlx-lm's own loader classes in well under a second on a CPU::

    from mlx_lm.utils import _get_classes

    model_class, args_class = _get_classes(config=config)
    model = model_class(args_class.from_dict(config))

and passes the checks ``tests/fixtures/archs/survey.py`` runs: three tokens give finite logits, then
``model.freeze()`` and ``linear_to_lora_layers(model, len(model.layers), {"rank": 4, "scale": 10.0,
"dropout": 0.0})`` succeed and the forward pass still gives finite logits. The survey's output, what
mlx-lm wraps and which 2-D/3-D weights it leaves unwrapped per architecture, is
``tests/fixtures/archs/survey.json``.

How the configs were made: one generic llama-like config (hidden size 64, 2 layers, 4 heads and 2 KV
heads of dim 16, vocab 128, 4 experts with 2 per token, MoE width 32, one dense layer first), plus,
per architecture, the fields its ``ModelArgs`` requires or its code reads (layer patterns, mamba and
linear-attention sizes, nested ``text_config``). Then every key whose removal left the parameter
names and shapes, the layer count and the checks unchanged was dropped, so each dict holds only what
that architecture needs to be tiny. Hybrid models keep one layer of each kind (nemotron_h four:
mamba, attention, MLP, MoE), llama4 four layers, nemotron-nas three block kinds; MoE models keep at
least one MoE layer.

The architecture modules are the files of ``mlx_lm/models`` that define ``Model`` and ``ModelArgs``
(helpers such as base, cache, rope_utils, switch_layers, ssm, mla and gated_delta are not). Each one
is in ``ARCHS`` or in ``NOT_TINY``, which says why it is left out here (CPU-only mlx, no extra
packages).
"""

from __future__ import annotations

from typing import Any

# fmt: off
ARCHS: dict[str, dict[str, Any]] = {
    "afm7": {
        "model_type": "afm7", "vocab_size": 128, "hidden_dim": 64, "num_layers": 2,
        "num_kv_reuse_layers": 1, "num_heads": 4, "num_kv_heads": 2,
    },
    "afmoe": {
        "model_type": "afmoe", "hidden_size": 64, "intermediate_size": 128,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 128,
        "num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32,
        "layer_types": ["sliding_attention", "full_attention"], "num_dense_layers": 1,
    },
    "apertus": {
        "model_type": "apertus", "hidden_size": 64, "num_hidden_layers": 2,
        "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
        "vocab_size": 128, "rms_norm_eps": 1e-05, "rope_theta": 10000.0,
        "max_position_embeddings": 256, "tie_word_embeddings": False, "attention_bias": False,
        "mlp_bias": False, "post_norm": False, "qk_norm": True,
    },
    "baichuan_m1": {
        "model_type": "baichuan_m1", "hidden_size": 64, "num_hidden_layers": 2,
        "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
        "vocab_size": 128, "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "sliding_window": 16,
        "sliding_window_layers": [0], "conv_window": 2,
    },
    "bailing_hybrid": {
        "model_type": "bailing_hybrid", "hidden_size": 64, "num_hidden_layers": 2,
        "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
        "head_dim": 16, "vocab_size": 128, "rms_norm_eps": 1e-05, "rope_theta": 10000.0,
        "max_position_embeddings": 256, "num_experts": 4, "num_experts_per_tok": 2,
        "moe_intermediate_size": 32, "num_shared_experts": 1, "first_k_dense_replace": 1,
        "n_group": 1, "topk_group": 1, "routed_scaling_factor": 1.0, "kv_lora_rank": 16,
        "q_lora_rank": 32, "qk_rope_head_dim": 8, "qk_nope_head_dim": 8, "v_head_dim": 16,
        "use_qk_norm": False, "layer_group_size": 2, "group_norm_size": 2,
    },
    "bailing_moe": {
        "model_type": "bailing_moe", "hidden_size": 64, "num_hidden_layers": 2,
        "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
        "vocab_size": 128, "rms_norm_eps": 1e-05, "rope_theta": 10000.0,
        "max_position_embeddings": 256, "num_experts": 4, "num_experts_per_tok": 2,
        "moe_intermediate_size": 32, "num_shared_experts": 1, "first_k_dense_replace": 1,
        "norm_topk_prob": True,
    },
    "bailing_moe_linear": {
        "model_type": "bailing_moe_linear", "hidden_size": 64, "num_hidden_layers": 2,
        "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
        "vocab_size": 128, "rms_norm_eps": 1e-05, "rope_theta": 10000.0,
        "max_position_embeddings": 256, "num_experts": 4, "num_experts_per_tok": 2,
        "moe_intermediate_size": 32, "num_shared_experts": 1, "first_k_dense_replace": 1,
        "norm_topk_prob": True, "layer_group_size": 2, "group_norm_size": 2,
    },
    "bailing_moe_v3": {
        "model_type": "bailing_moe_v3", "hidden_size": 64, "num_hidden_layers": 2,
        "intermediate_size": 128, "num_attention_heads": 4, "vocab_size": 128, "num_experts": 4,
        "num_experts_per_tok": 2, "moe_intermediate_size": 32, "n_group": 1, "topk_group": 1,
        "kv_lora_rank": 16, "q_lora_rank": 32, "qk_rope_head_dim": 8, "qk_nope_head_dim": 8,
        "v_head_dim": 16,
    },
    "cohere": {
        "model_type": "cohere", "hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 128,
    },
    "cohere2": {
        "model_type": "cohere2", "hidden_size": 64, "num_hidden_layers": 2,
        "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
        "head_dim": 16, "vocab_size": 128, "sliding_window_pattern": 2,
    },
    "dbrx": {
        "model_type": "dbrx", "vocab_size": 128, "d_model": 64, "n_layers": 2, "n_heads": 4,
        "ffn_config": {"ffn_hidden_size": 32, "moe_num_experts": 4, "moe_top_k": 2},
        "attn_config": {"kv_n_heads": 2, "clip_qkv": 8.0, "rope_theta": 10000.0},
    },
    "deepseek": {
        "model_type": "deepseek", "hidden_size": 64, "num_hidden_layers": 2,
        "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
        "vocab_size": 128, "n_routed_experts": 4, "num_experts_per_tok": 2,
        "moe_intermediate_size": 32, "n_shared_experts": 1, "first_k_dense_replace": 1,
    },
    "deepseek_v2": {
        "model_type": "deepseek_v2", "hidden_size": 64, "num_hidden_layers": 2,
        "intermediate_size": 128, "num_attention_heads": 4, "vocab_size": 128,
        "n_routed_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32,
        "n_shared_experts": 1, "first_k_dense_replace": 1, "kv_lora_rank": 16, "q_lora_rank": 32,
        "qk_rope_head_dim": 8, "qk_nope_head_dim": 8, "v_head_dim": 16,
        "rope_scaling": {"factor": 1.0},
    },
    "deepseek_v3": {
        "model_type": "deepseek_v3", "hidden_size": 64, "num_hidden_layers": 2,
        "intermediate_size": 128, "num_attention_heads": 4, "vocab_size": 128,
        "n_routed_experts": 4, "moe_intermediate_size": 32, "n_shared_experts": 1,
        "first_k_dense_replace": 1, "kv_lora_rank": 16, "q_lora_rank": 32, "qk_rope_head_dim": 8,
        "qk_nope_head_dim": 8, "v_head_dim": 16,
    },
    "deepseek_v32": {
        "model_type": "deepseek_v32", "hidden_size": 64, "num_hidden_layers": 2,
        "intermediate_size": 128, "num_attention_heads": 4, "vocab_size": 128,
        "n_routed_experts": 4, "moe_intermediate_size": 32, "n_shared_experts": 1,
        "first_k_dense_replace": 1, "kv_lora_rank": 16, "q_lora_rank": 32, "qk_rope_head_dim": 8,
        "qk_nope_head_dim": 8, "v_head_dim": 16, "index_n_heads": 2, "index_head_dim": 16,
    },
    "deepseek_v41": {
        "model_type": "deepseek_v41", "hidden_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "head_dim": 16, "vocab_size": 128, "n_routed_experts": 4,
        "num_experts_per_tok": 2, "moe_intermediate_size": 32, "q_lora_rank": 32,
        "qk_rope_head_dim": 8, "o_lora_rank": 16, "o_groups": 2,
    },
    "dots1": {
        "model_type": "dots1", "hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 128,
        "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "max_position_embeddings": 256,
        "n_routed_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32,
        "n_shared_experts": 1, "first_k_dense_replace": 1, "norm_topk_prob": True,
        "routed_scaling_factor": 1.0,
    },
    "ernie4_5": {
        "model_type": "ernie4_5", "hidden_size": 64, "num_hidden_layers": 2,
        "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
        "head_dim": 16, "vocab_size": 128, "rms_norm_eps": 1e-05, "rope_theta": 10000.0,
        "max_position_embeddings": 256, "tie_word_embeddings": False, "use_bias": False,
    },
    "ernie4_5_moe": {
        "model_type": "ernie4_5_moe", "hidden_size": 64, "num_hidden_layers": 2,
        "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
        "vocab_size": 128, "rms_norm_eps": 1e-05, "rope_theta": 10000.0,
        "max_position_embeddings": 256, "tie_word_embeddings": False, "moe_intermediate_size": 32,
        "use_bias": False, "moe_num_experts": 4, "moe_layer_start_index": 1,
    },
    "exaone": {
        "model_type": "exaone", "hidden_size": 64, "intermediate_size": 128,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 128,
        "rope_theta": 10000.0, "tie_word_embeddings": False, "layer_norm_epsilon": 1e-05,
        "num_layers": 2,
    },
    "exaone4": {
        "model_type": "exaone4", "hidden_size": 64, "num_hidden_layers": 2,
        "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
        "head_dim": 16, "vocab_size": 128, "rms_norm_eps": 1e-05, "rope_theta": 10000.0,
        "max_position_embeddings": 256, "tie_word_embeddings": False, "rope_scaling": None,
        "sliding_window": 16, "sliding_window_pattern": "LG",
    },
    "exaone_moe": {
        "model_type": "exaone_moe", "hidden_size": 64, "num_hidden_layers": 2,
        "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
        "head_dim": 16, "vocab_size": 128, "rms_norm_eps": 1e-05, "max_position_embeddings": 256,
        "num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32,
        "num_shared_experts": 1, "sliding_window": 16,
        "layer_types": ["sliding_attention", "full_attention"], "is_moe_layer": [False, True],
    },
    "falcon_h1": {
        "model_type": "falcon_h1", "hidden_size": 64, "num_hidden_layers": 2,
        "intermediate_size": 128, "num_attention_heads": 4, "head_dim": 16, "vocab_size": 128,
        "tie_word_embeddings": False, "mamba_d_ssm": 64, "mamba_n_heads": 4, "mamba_d_head": 16,
        "mamba_d_state": 8,
    },
    "gear": {
        "model_type": "gear", "hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 128,
        "rms_norm_eps": 1e-05, "tie_word_embeddings": False,
        "layer_types": ["sliding_attention", "full_attention"],
    },
    "gemma": {
        "model_type": "gemma", "hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 128,
        "rms_norm_eps": 1e-05,
    },
    "gemma2": {
        "model_type": "gemma2", "hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 128,
        "rms_norm_eps": 1e-05,
    },
    "gemma3": {
        "model_type": "gemma3",
        "text_config": {
            "model_type": "gemma3_text", "hidden_size": 64, "num_hidden_layers": 2,
            "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
            "head_dim": 16, "sliding_window_pattern": 2, "vocab_size": 128,
        },
        "vocab_size": 128,
    },
    "gemma3_text": {
        "model_type": "gemma3_text", "hidden_size": 64, "num_hidden_layers": 2,
        "intermediate_size": 128, "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 128,
        "sliding_window_pattern": 2,
    },
    "gemma4": {
        "model_type": "gemma4",
        "text_config": {
            "model_type": "gemma4_text", "hidden_size": 64, "num_hidden_layers": 2,
            "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
            "head_dim": 16, "tie_word_embeddings": False, "num_kv_shared_layers": 0,
            "global_head_dim": 16, "vocab_size_per_layer_input": 128,
            "hidden_size_per_layer_input": 8, "vocab_size": 128,
        },
        "vocab_size": 128,
    },
    "gemma4_text": {
        "model_type": "gemma4_text", "hidden_size": 64, "num_hidden_layers": 2,
        "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
        "head_dim": 16, "vocab_size": 128, "tie_word_embeddings": False, "num_kv_shared_layers": 0,
        "global_head_dim": 16, "vocab_size_per_layer_input": 128, "hidden_size_per_layer_input": 8,
    },
    "glm": {
        "model_type": "glm", "hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 128,
        "rms_norm_eps": 1e-05, "tie_word_embeddings": False,
    },
    "glm4": {
        "model_type": "glm4", "hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 128,
        "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "attention_bias": False,
        "partial_rotary_factor": 0.5,
    },
    "glm4_moe": {
        "model_type": "glm4_moe", "hidden_size": 64, "num_hidden_layers": 2,
        "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
        "head_dim": 16, "vocab_size": 128, "rms_norm_eps": 1e-05, "rope_theta": 10000.0,
        "max_position_embeddings": 256, "tie_word_embeddings": False, "n_routed_experts": 4,
        "num_experts_per_tok": 2, "moe_intermediate_size": 32, "n_shared_experts": 1,
        "first_k_dense_replace": 1, "norm_topk_prob": True, "n_group": 1, "topk_group": 1,
        "routed_scaling_factor": 1.0, "attention_bias": False, "partial_rotary_factor": 0.5,
        "rope_scaling": None, "use_qk_norm": False,
    },
    "glm4_moe_lite": {
        "model_type": "glm4_moe_lite", "hidden_size": 64, "num_hidden_layers": 2,
        "intermediate_size": 128, "num_attention_heads": 4, "vocab_size": 128,
        "n_routed_experts": 4, "moe_intermediate_size": 32, "kv_lora_rank": 16, "q_lora_rank": 32,
        "qk_rope_head_dim": 8, "qk_nope_head_dim": 8, "v_head_dim": 16,
    },
    "glm_moe_dsa": {
        "model_type": "glm_moe_dsa", "hidden_size": 64, "num_hidden_layers": 2,
        "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
        "vocab_size": 128, "rms_norm_eps": 1e-05, "max_position_embeddings": 256,
        "n_routed_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32,
        "n_shared_experts": 1, "first_k_dense_replace": 1, "norm_topk_prob": True, "n_group": 1,
        "topk_group": 1, "routed_scaling_factor": 1.0, "attention_bias": False, "kv_lora_rank": 16,
        "q_lora_rank": 32, "qk_rope_head_dim": 8, "qk_nope_head_dim": 8, "v_head_dim": 16,
        "index_head_dim": 16, "index_n_heads": 2, "index_topk": 4, "topk_method": "noaux_tc",
        "scoring_func": "sigmoid", "moe_layer_freq": 1, "rope_parameters": {"rope_theta": 10000.0},
    },
    "gpt2": {
        "model_type": "gpt2", "vocab_size": 128, "layer_norm_epsilon": 1e-05, "n_ctx": 256,
        "n_embd": 64, "n_head": 4, "n_layer": 2, "n_positions": 256,
    },
    "gpt_bigcode": {
        "model_type": "gpt_bigcode", "vocab_size": 128, "tie_word_embeddings": False,
        "attention_bias": False, "mlp_bias": False, "layer_norm_epsilon": 1e-05, "n_embd": 64,
        "n_layer": 2, "n_inner": 128, "n_head": 4, "n_positions": 256,
    },
    "gpt_neox": {
        "model_type": "gpt_neox", "hidden_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "vocab_size": 128, "max_position_embeddings": 256,
        "layer_norm_eps": 1e-05, "rotary_emb_base": 10000, "rotary_pct": 0.5,
    },
    "gpt_oss": {
        "model_type": "gpt_oss", "hidden_size": 64, "num_hidden_layers": 2,
        "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
        "head_dim": 16, "vocab_size": 128, "num_local_experts": 4,
    },
    "gptj": {
        "model_type": "gptj", "vocab_size": 128, "n_embd": 64, "n_head": 4, "rotary_dim": 8,
        "n_layer": 2,
    },
    "granite": {
        "model_type": "granite", "hidden_size": 64, "num_hidden_layers": 2,
        "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
        "vocab_size": 128, "rms_norm_eps": 1e-05, "rope_theta": 10000.0,
        "max_position_embeddings": 256, "tie_word_embeddings": False, "attention_bias": False,
        "mlp_bias": False, "logits_scaling": 1.0, "attention_multiplier": 0.25,
        "embedding_multiplier": 1.0, "residual_multiplier": 1.0,
    },
    "granitemoe": {
        "model_type": "granitemoe", "hidden_size": 64, "num_hidden_layers": 2,
        "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
        "vocab_size": 128, "rms_norm_eps": 1e-05, "rope_theta": 10000.0,
        "max_position_embeddings": 256, "tie_word_embeddings": False, "num_local_experts": 4,
        "num_experts_per_tok": 2, "attention_bias": False, "logits_scaling": 1.0,
        "attention_multiplier": 0.25, "embedding_multiplier": 1.0, "residual_multiplier": 1.0,
    },
    "granitemoehybrid": {
        "model_type": "granitemoehybrid", "hidden_size": 64, "num_hidden_layers": 2,
        "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
        "vocab_size": 128, "rms_norm_eps": 1e-05, "max_position_embeddings": 256,
        "tie_word_embeddings": False, "num_local_experts": 4, "num_experts_per_tok": 2,
        "attention_bias": False, "logits_scaling": 1.0, "attention_multiplier": 0.25,
        "embedding_multiplier": 1.0, "residual_multiplier": 1.0,
        "layer_types": ["mamba", "attention"], "mamba_n_heads": 4, "mamba_d_head": 16,
        "mamba_n_groups": 1, "mamba_d_state": 8, "mamba_d_conv": 4, "shared_intermediate_size": 64,
        "mamba_conv_bias": True,
    },
    "helium": {
        "model_type": "helium", "hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 128,
        "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "max_position_embeddings": 256,
        "tie_word_embeddings": False, "attention_bias": False, "mlp_bias": False,
    },
    "hunyuan": {
        "model_type": "hunyuan", "hidden_size": 64, "num_hidden_layers": 2,
        "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
        "vocab_size": 128, "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "num_experts": 4,
        "moe_intermediate_size": 32, "attention_bias": False,
        "rope_scaling": {"alpha": 1.0, "factor": 1.0, "type": "dynamic"}, "use_qk_norm": False,
        "moe_topk": 2, "num_shared_expert": 1, "use_mixed_mlp_moe": True, "use_cla": False,
        "cla_share_factor": 2,
    },
    "hunyuan_v1_dense": {
        "model_type": "hunyuan_v1_dense", "hidden_size": 64, "num_hidden_layers": 2,
        "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
        "vocab_size": 128, "rms_norm_eps": 1e-05, "use_qk_norm": False,
    },
    "internlm2": {
        "model_type": "internlm2", "hidden_size": 64, "num_hidden_layers": 2,
        "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
        "vocab_size": 128, "rms_norm_eps": 1e-05,
    },
    "internlm3": {
        "model_type": "internlm3", "hidden_size": 64, "num_hidden_layers": 2,
        "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
        "vocab_size": 128, "rms_norm_eps": 1e-05,
    },
    "iquestloopcoder": {
        "model_type": "iquestloopcoder", "hidden_size": 64, "num_hidden_layers": 2,
        "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
        "head_dim": 16, "vocab_size": 128, "rms_norm_eps": 1e-05,
    },
    "jamba": {
        "model_type": "jamba", "hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 128,
        "rms_norm_eps": 1e-05, "max_position_embeddings": 256, "tie_word_embeddings": False,
        "num_experts": 4, "num_experts_per_tok": 2, "attn_layer_offset": 1, "attn_layer_period": 2,
        "expert_layer_offset": 1, "expert_layer_period": 2, "mamba_d_conv": 4, "mamba_d_state": 8,
        "mamba_expand": 1,
    },
    "kimi_k25": {
        "model_type": "kimi_k25",
        "text_config": {
            "model_type": "deepseek_v3", "hidden_size": 64, "num_hidden_layers": 2,
            "intermediate_size": 128, "num_attention_heads": 4, "vocab_size": 128,
            "n_routed_experts": 4, "moe_intermediate_size": 32, "n_shared_experts": 1,
            "first_k_dense_replace": 1, "kv_lora_rank": 16, "q_lora_rank": 32,
            "qk_rope_head_dim": 8, "qk_nope_head_dim": 8, "v_head_dim": 16,
        },
    },
    "kimi_k3": {
        "model_type": "kimi_k3", "hidden_size": 64, "num_hidden_layers": 2,
        "intermediate_size": 128, "num_attention_heads": 4, "vocab_size": 128, "num_experts": 4,
        "moe_intermediate_size": 32, "num_shared_experts": 1, "first_k_dense_replace": 1,
        "kv_lora_rank": 16, "q_lora_rank": 32, "qk_rope_head_dim": 8, "qk_nope_head_dim": 8,
        "v_head_dim": 16,
        "linear_attn_config": {
            "kda_layers": [1], "full_attn_layers": [2], "num_heads": 4, "head_dim": 16,
            "short_conv_kernel_size": 4,
        },
        "num_experts_per_token": 2,
    },
    "kimi_linear": {
        "model_type": "kimi_linear", "hidden_size": 64, "num_hidden_layers": 2,
        "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
        "head_dim": 16, "vocab_size": 128, "rms_norm_eps": 1e-05, "rope_theta": 10000.0,
        "num_experts": 4, "moe_intermediate_size": 32, "num_shared_experts": 1,
        "first_k_dense_replace": 1, "kv_lora_rank": 16, "qk_rope_head_dim": 8,
        "qk_nope_head_dim": 8,
        "linear_attn_config": {
            "kda_layers": [1], "full_attn_layers": [2], "num_heads": 4, "head_dim": 16,
            "short_conv_kernel_size": 4,
        },
        "model_max_length": 256,
    },
    "kimi_vl": {
        "model_type": "kimi_vl",
        "text_config": {
            "model_type": "deepseek_v3", "hidden_size": 64, "num_hidden_layers": 2,
            "intermediate_size": 128, "num_attention_heads": 4, "vocab_size": 128,
            "n_routed_experts": 4, "moe_intermediate_size": 32, "n_shared_experts": 1,
            "first_k_dense_replace": 1, "kv_lora_rank": 16, "q_lora_rank": 32,
            "qk_rope_head_dim": 8, "qk_nope_head_dim": 8, "v_head_dim": 16,
        },
    },
    "Klear": {
        "model_type": "Klear", "hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 128,
        "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "max_position_embeddings": 256,
        "num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32,
        "n_shared_experts": 1, "norm_topk_prob": True, "decoder_sparse_step": 1,
        "mlp_only_layers": [], "attention_bias": False,
    },
    "laguna": {
        "model_type": "laguna", "hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 128,
        "num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32,
        "shared_expert_intermediate_size": 64,
    },
    "lfm2": {
        "model_type": "lfm2", "hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 128,
        "max_position_embeddings": 256, "norm_eps": 1e-05, "conv_bias": False, "conv_L_cache": 3,
        "block_dim": 64, "block_multiple_of": 16, "block_ffn_dim_multiplier": 1.0,
        "block_auto_adjust_ff_dim": False, "layer_types": ["conv", "full_attention"],
    },
    "lfm2-vl": {
        "model_type": "lfm2-vl",
        "text_config": {
            "model_type": "lfm2", "hidden_size": 64, "num_hidden_layers": 2,
            "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
            "vocab_size": 128, "max_position_embeddings": 256, "norm_eps": 1e-05,
            "conv_bias": False, "conv_L_cache": 3, "block_dim": 64, "block_multiple_of": 16,
            "block_ffn_dim_multiplier": 1.0, "block_auto_adjust_ff_dim": False,
            "layer_types": ["conv", "full_attention"], "tie_word_embeddings": False,
        },
    },
    "lfm2_moe": {
        "model_type": "lfm2_moe", "hidden_size": 64, "num_hidden_layers": 2,
        "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
        "vocab_size": 128, "max_position_embeddings": 256, "num_experts": 4,
        "num_experts_per_tok": 2, "moe_intermediate_size": 32, "norm_topk_prob": True,
        "norm_eps": 1e-05, "use_expert_bias": True, "num_dense_layers": 1, "conv_bias": False,
        "conv_L_cache": 3, "layer_types": ["conv", "full_attention"],
    },
    "lille-130m": {
        "model_type": "lille-130m", "vocab_size": 128, "rope_theta": 10000.0,
        "layer_norm_eps": 1e-05, "block_size": 256, "n_embd": 64, "n_head": 4, "n_kv_heads": 2,
        "n_layer": 2,
    },
    "llama": {
        "model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 128,
        "rms_norm_eps": 1e-05, "tie_word_embeddings": False,
    },
    "llama4": {
        "model_type": "llama4",
        "text_config": {
            "model_type": "llama4_text", "hidden_size": 64, "num_hidden_layers": 4,
            "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
            "head_dim": 16, "vocab_size": 128, "rms_norm_eps": 1e-05, "rope_theta": 10000.0,
            "max_position_embeddings": 256, "num_local_experts": 4, "num_experts_per_tok": 1,
            "attention_bias": False, "rope_scaling": None, "use_qk_norm": False,
            "intermediate_size_mlp": 128, "interleave_moe_layer_step": 2,
            "attention_chunk_size": 16,
        },
    },
    "llama4_text": {
        "model_type": "llama4_text", "hidden_size": 64, "num_hidden_layers": 4,
        "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
        "head_dim": 16, "vocab_size": 128, "rms_norm_eps": 1e-05, "rope_theta": 10000.0,
        "tie_word_embeddings": False, "use_qk_norm": False, "intermediate_size_mlp": 128,
        "no_rope_layers": [1, 1, 1, 0],
    },
    "longcat_flash": {
        "model_type": "longcat_flash", "hidden_size": 64, "num_attention_heads": 4,
        "vocab_size": 128, "rms_norm_eps": 1e-05, "rope_theta": 10000.0,
        "max_position_embeddings": 256, "n_routed_experts": 4, "routed_scaling_factor": 1.0,
        "attention_bias": False, "kv_lora_rank": 16, "q_lora_rank": 32, "qk_rope_head_dim": 8,
        "qk_nope_head_dim": 8, "v_head_dim": 16, "attention_method": "MLA",
        "zero_expert_type": "identity", "ffn_hidden_size": 128, "moe_topk": 2,
        "expert_ffn_hidden_size": 32, "zero_expert_num": 2, "num_layers": 2,
        "mla_scale_q_lora": True, "mla_scale_kv_lora": True,
    },
    "longcat_flash_ngram": {
        "model_type": "longcat_flash_ngram", "hidden_size": 64, "num_attention_heads": 4,
        "vocab_size": 128, "rms_norm_eps": 1e-05, "rope_theta": 10000.0,
        "max_position_embeddings": 256, "n_routed_experts": 4, "routed_scaling_factor": 1.0,
        "kv_lora_rank": 16, "q_lora_rank": 32, "qk_rope_head_dim": 8, "qk_nope_head_dim": 8,
        "v_head_dim": 16, "ffn_hidden_size": 128, "moe_topk": 2, "expert_ffn_hidden_size": 32,
        "zero_expert_num": 2, "num_layers": 2, "mla_scale_q_lora": True, "mla_scale_kv_lora": True,
        "ngram_vocab_size_ratio": 1,
    },
    "mamba": {
        "model_type": "mamba", "hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128,
        "vocab_size": 128, "tie_word_embeddings": False, "use_bias": False, "state_size": 8,
        "conv_kernel": 4, "use_conv_bias": True, "time_step_rank": 4,
    },
    "mamba2": {
        "model_type": "mamba2", "hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128,
        "head_dim": 16, "vocab_size": 128, "tie_word_embeddings": False,
        "layer_norm_epsilon": 1e-05, "use_bias": False, "num_heads": 4, "state_size": 8,
        "conv_kernel": 4, "n_groups": 1, "use_conv_bias": True,
        "time_step_limit": [0.0, 1000000000.0], "time_step_rank": 4,
    },
    "mellum": {
        "model_type": "mellum", "hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 128,
        "rms_norm_eps": 1e-05, "max_position_embeddings": 256, "tie_word_embeddings": False,
        "num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32,
        "norm_topk_prob": True, "sliding_window": 16,
        "layer_types": ["sliding_attention", "full_attention"],
        "rope_parameters": {
            "sliding_attention": {"rope_theta": 10000.0}, "full_attention": {"rope_theta": 10000.0},
        },
    },
    "mimo": {
        "model_type": "mimo", "hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 128,
        "rms_norm_eps": 1e-05,
    },
    "mimo_v2_flash": {
        "model_type": "mimo_v2_flash", "hidden_size": 64, "num_hidden_layers": 2,
        "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
        "head_dim": 16, "vocab_size": 128, "rope_theta": 10000.0, "max_position_embeddings": 256,
        "n_routed_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32,
        "n_shared_experts": 1, "norm_topk_prob": True, "n_group": 1, "topk_group": 1,
        "routed_scaling_factor": 1.0, "v_head_dim": 16, "partial_rotary_factor": 0.5,
        "hybrid_layer_pattern": [1, 0], "moe_layer_freq": [0, 1],
        "add_swa_attention_sink_bias": True, "add_full_attention_sink_bias": False,
        "sliding_window_size": 16, "topk_method": "noaux_tc", "scoring_func": "sigmoid",
        "layernorm_epsilon": 1e-05, "swa_rope_theta": 10000.0, "swa_num_attention_heads": 4,
        "swa_num_key_value_heads": 2, "swa_head_dim": 16, "swa_v_head_dim": 16,
    },
    "minicpm": {
        "model_type": "minicpm", "hidden_size": 64, "num_hidden_layers": 2,
        "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
        "vocab_size": 128, "rms_norm_eps": 1e-05, "dim_model_base": 64, "scale_depth": 1.4,
        "scale_emb": 12,
    },
    "minicpm3": {
        "model_type": "minicpm3", "hidden_size": 64, "num_hidden_layers": 2,
        "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
        "vocab_size": 128, "rms_norm_eps": 1e-05, "max_position_embeddings": 256,
        "kv_lora_rank": 16, "q_lora_rank": 32, "qk_rope_head_dim": 8, "qk_nope_head_dim": 8,
        "rope_scaling": {"original_max_position_embeddings": 256}, "dim_model_base": 64,
        "scale_depth": 1.4, "scale_emb": 12,
    },
    "minimax": {
        "model_type": "minimax", "hidden_size": 64, "num_hidden_layers": 2,
        "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
        "vocab_size": 128, "rms_norm_eps": 1e-05, "rope_theta": 10000.0,
        "max_position_embeddings": 256, "num_local_experts": 4, "num_experts_per_tok": 2,
        "use_qk_norm": False, "shared_intermediate_size": 0, "rotary_dim": 8,
    },
    "minimax_m3_vl": {
        "model_type": "minimax_m3_vl",
        "text_config": {
            "model_type": "minimax_m3", "hidden_size": 64, "num_hidden_layers": 2,
            "intermediate_size": 32, "num_attention_heads": 4, "num_key_value_heads": 2,
            "head_dim": 16, "vocab_size": 128, "num_local_experts": 4, "use_qk_norm": False,
            "shared_intermediate_size": 32, "dense_intermediate_size": 128,
            "moe_layer_freq": [0, 1],
        },
    },
    "ministral3": {
        "model_type": "ministral3", "hidden_size": 64, "num_hidden_layers": 2,
        "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
        "vocab_size": 128, "rms_norm_eps": 1e-05, "tie_word_embeddings": False,
        "rope_parameters": {
            "rope_theta": 10000.0, "llama_4_scaling_beta": 0.1,
            "original_max_position_embeddings": 256,
        },
    },
    "mistral3": {
        "model_type": "mistral3",
        "text_config": {
            "model_type": "ministral3", "hidden_size": 64, "num_hidden_layers": 2,
            "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
            "vocab_size": 128, "rms_norm_eps": 1e-05,
            "rope_parameters": {
                "rope_theta": 10000.0, "llama_4_scaling_beta": 0.1,
                "original_max_position_embeddings": 256,
            },
            "tie_word_embeddings": False,
        },
    },
    "mistral4": {
        "model_type": "mistral4", "hidden_size": 64, "num_hidden_layers": 2,
        "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
        "vocab_size": 128, "rms_norm_eps": 1e-05, "max_position_embeddings": 256,
        "n_routed_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32,
        "n_shared_experts": 1, "first_k_dense_replace": 1, "norm_topk_prob": True, "n_group": 1,
        "topk_group": 1, "routed_scaling_factor": 1.0, "kv_lora_rank": 16, "q_lora_rank": 32,
        "qk_rope_head_dim": 8, "qk_nope_head_dim": 8, "v_head_dim": 16,
        "rope_parameters": {
            "rope_theta": 10000.0, "llama_4_scaling_beta": 0.1,
            "original_max_position_embeddings": 256,
        },
    },
    "mixtral": {
        "model_type": "mixtral", "hidden_size": 64, "num_hidden_layers": 2,
        "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
        "vocab_size": 128, "num_local_experts": 4,
    },
    "muse_glimmer": {
        "model_type": "muse_glimmer", "hidden_size": 64, "num_hidden_layers": 2,
        "intermediate_size": 128, "num_attention_heads": 4, "head_dim": 16, "vocab_size": 128,
    },
    "nanbeige": {
        "model_type": "nanbeige", "hidden_size": 64, "num_hidden_layers": 2,
        "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
        "vocab_size": 128, "rms_norm_eps": 1e-05,
    },
    "nanochat": {
        "model_type": "nanochat", "hidden_size": 64, "num_hidden_layers": 2,
        "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
        "vocab_size": 128,
    },
    "nemotron": {
        "model_type": "nemotron", "hidden_size": 64, "num_hidden_layers": 2,
        "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
        "vocab_size": 128, "norm_eps": 1e-05, "hidden_act": "relu2",
    },
    "nemotron-nas": {
        "model_type": "nemotron-nas", "hidden_size": 64, "num_hidden_layers": 3,
        "num_attention_heads": 4, "vocab_size": 128,
        "block_configs": [
            {"attention": {"n_heads_in_group": 2}, "ffn": {"ffn_mult": 2.0}},
            {"attention": {"replace_with_linear": True}, "ffn": {"ffn_mult": 1.0}},
            {"attention": {"no_op": True}, "ffn": {"replace_with_linear": True}},
        ],
    },
    "nemotron_h": {
        "model_type": "nemotron_h", "hidden_size": 64, "intermediate_size": 128,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 128,
        "max_position_embeddings": 256, "n_routed_experts": 4, "num_experts_per_tok": 2,
        "moe_intermediate_size": 32, "n_shared_experts": 1, "n_group": 1,
        "routed_scaling_factor": 1.0, "attention_bias": False, "mlp_bias": False,
        "layer_norm_epsilon": 1e-05, "use_bias": False, "mamba_num_heads": 4, "mamba_head_dim": 16,
        "mamba_proj_bias": False, "ssm_state_size": 8, "conv_kernel": 4, "n_groups": 1,
        "use_conv_bias": True, "hybrid_override_pattern": ["M", "*", "-", "E"],
        "moe_shared_expert_intermediate_size": 32,
    },
    "olmo2": {
        "model_type": "olmo2", "hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 128,
        "rms_norm_eps": 1e-05, "tie_word_embeddings": False,
    },
    "olmo3": {
        "model_type": "olmo3", "hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 128,
        "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "max_position_embeddings": 256,
        "sliding_window": 16, "layer_types": ["sliding_attention", "full_attention"],
    },
    "olmo_hybrid": {
        "model_type": "olmo_hybrid", "hidden_size": 64, "num_hidden_layers": 2,
        "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
        "vocab_size": 128, "rms_norm_eps": 1e-05, "max_position_embeddings": 256,
        "tie_word_embeddings": False, "attention_bias": False, "linear_num_key_heads": 2,
        "linear_num_value_heads": 2, "linear_key_head_dim": 16, "linear_value_head_dim": 16,
        "linear_conv_kernel_dim": 4, "linear_allow_neg_eigval": True,
        "layer_types": ["linear_attention", "full_attention"],
    },
    "olmoe": {
        "model_type": "olmoe", "hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 128,
        "rms_norm_eps": 1e-05, "tie_word_embeddings": False, "num_experts": 4,
        "num_experts_per_tok": 2,
    },
    "openelm": {
        "model_type": "openelm", "head_dim": 16, "vocab_size": 128, "num_transformer_layers": 2,
        "model_dim": 64, "ffn_dim_divisor": 16, "num_query_heads": [4, 4], "num_kv_heads": [2, 2],
        "ffn_multipliers": [1.0, 1.0],
    },
    "phi": {
        "model_type": "phi", "hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 128,
    },
    "phi3": {
        "model_type": "phi3", "hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 128,
        "rms_norm_eps": 1e-05,
    },
    "phimoe": {
        "model_type": "phimoe", "hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 128,
        "num_local_experts": 4,
    },
    "phixtral": {
        "model_type": "phixtral", "num_vocab": 128, "model_dim": 64, "num_heads": 4,
        "num_layers": 2, "rotary_dim": 8,
    },
    "pixtral": {
        "model_type": "pixtral",
        "text_config": {
            "model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2,
            "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
            "vocab_size": 128, "rms_norm_eps": 1e-05, "tie_word_embeddings": False,
        },
    },
    "plamo": {
        "model_type": "plamo", "hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128,
        "num_attention_heads": 4, "vocab_size": 128, "rms_norm_eps": 1e-05, "n_shared_head": 2,
    },
    "plamo2": {
        "model_type": "plamo2", "hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 128,
        "tie_word_embeddings": False, "mamba_num_heads": 4, "mamba_d_state": 8,
        "hidden_size_per_head": 16,
    },
    "plamo3": {
        "model_type": "plamo3", "hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 128,
        "tie_word_embeddings": False,
    },
    "prism_hadamard_qwen35": {
        "model_type": "prism_hadamard_qwen35", "tensor_namespace": "mlx-vlm-qwen3_5",
        "quantization": {"bits": 2, "group_size": 128, "mode": "affine"},
        "modules": [
            {
                "path": "model.layers.0.mlp.gate_proj", "embedding": False, "dtype": "float16",
                "block": 0,
            },
            {
                "path": "model.layers.0.mlp.up_proj", "embedding": False, "dtype": "float16",
                "block": 0,
            },
            {
                "path": "model.layers.0.mlp.down_proj", "embedding": False, "dtype": "float16",
                "block": 0,
            },
            {
                "path": "model.layers.1.mlp.gate_proj", "embedding": False, "dtype": "float16",
                "block": 0,
            },
            {
                "path": "model.layers.1.mlp.up_proj", "embedding": False, "dtype": "float16",
                "block": 0,
            },
            {
                "path": "model.layers.1.mlp.down_proj", "embedding": False, "dtype": "float16",
                "block": 0,
            },
        ],
        "text_config": {
            "model_type": "qwen3_5_text", "hidden_size": 128, "num_hidden_layers": 2,
            "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
            "head_dim": 16, "vocab_size": 128, "full_attention_interval": 2,
            "linear_num_value_heads": 4, "linear_num_key_heads": 2, "linear_key_head_dim": 16,
            "linear_value_head_dim": 16,
        },
    },
    "qwen": {
        "model_type": "qwen", "hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128,
        "num_attention_heads": 4, "vocab_size": 128, "kv_channels": 16, "no_bias": False,
    },
    "qwen2": {
        "model_type": "qwen2", "hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 128,
        "rms_norm_eps": 1e-05, "tie_word_embeddings": False,
    },
    "qwen2_moe": {
        "model_type": "qwen2_moe", "hidden_size": 64, "num_hidden_layers": 2,
        "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
        "vocab_size": 128, "rms_norm_eps": 1e-05, "num_experts": 4, "num_experts_per_tok": 2,
        "moe_intermediate_size": 32, "shared_expert_intermediate_size": 64,
    },
    "qwen2_vl": {
        "model_type": "qwen2_vl",
        "text_config": {
            "model_type": "qwen2", "hidden_size": 64, "num_hidden_layers": 2,
            "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
            "vocab_size": 128, "rms_norm_eps": 1e-05, "tie_word_embeddings": False,
        },
    },
    "qwen3": {
        "model_type": "qwen3", "hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 128,
        "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "max_position_embeddings": 256,
        "tie_word_embeddings": False,
    },
    "qwen3_5": {
        "model_type": "qwen3_5",
        "text_config": {
            "model_type": "qwen3_5_text", "hidden_size": 64, "num_hidden_layers": 2,
            "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
            "vocab_size": 128, "full_attention_interval": 2, "linear_num_value_heads": 4,
            "linear_num_key_heads": 2, "linear_key_head_dim": 16, "linear_value_head_dim": 16,
        },
    },
    "qwen3_5_moe": {
        "model_type": "qwen3_5_moe",
        "text_config": {
            "model_type": "qwen3_5_moe_text", "hidden_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 128, "num_experts": 4,
            "moe_intermediate_size": 32, "shared_expert_intermediate_size": 32,
            "full_attention_interval": 2, "linear_num_value_heads": 4, "linear_num_key_heads": 2,
            "linear_key_head_dim": 16, "linear_value_head_dim": 16,
        },
    },
    "qwen3_moe": {
        "model_type": "qwen3_moe", "hidden_size": 64, "num_hidden_layers": 2,
        "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
        "head_dim": 16, "vocab_size": 128, "rms_norm_eps": 1e-05, "rope_theta": 10000.0,
        "max_position_embeddings": 256, "tie_word_embeddings": False, "num_experts": 4,
        "num_experts_per_tok": 2, "moe_intermediate_size": 32, "norm_topk_prob": True,
        "decoder_sparse_step": 1, "mlp_only_layers": [],
    },
    "qwen3_next": {
        "model_type": "qwen3_next", "hidden_size": 64, "num_hidden_layers": 2,
        "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
        "head_dim": 16, "vocab_size": 128, "rms_norm_eps": 1e-05, "rope_theta": 10000.0,
        "max_position_embeddings": 256, "num_experts": 4, "num_experts_per_tok": 2,
        "moe_intermediate_size": 32, "shared_expert_intermediate_size": 32,
        "decoder_sparse_step": 1, "mlp_only_layers": [], "partial_rotary_factor": 0.5,
        "full_attention_interval": 2, "linear_num_value_heads": 4, "linear_num_key_heads": 2,
        "linear_key_head_dim": 16, "linear_value_head_dim": 16, "linear_conv_kernel_dim": 4,
    },
    "qwen3_vl": {
        "model_type": "qwen3_vl",
        "text_config": {
            "model_type": "qwen3", "hidden_size": 64, "num_hidden_layers": 2,
            "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
            "head_dim": 16, "vocab_size": 128, "rms_norm_eps": 1e-05, "rope_theta": 10000.0,
            "max_position_embeddings": 256, "tie_word_embeddings": False,
        },
    },
    "qwen3_vl_moe": {
        "model_type": "qwen3_vl_moe",
        "text_config": {
            "model_type": "qwen3_moe", "hidden_size": 64, "num_hidden_layers": 2,
            "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
            "head_dim": 16, "vocab_size": 128, "rms_norm_eps": 1e-05, "rope_theta": 10000.0,
            "max_position_embeddings": 256, "tie_word_embeddings": False, "num_experts": 4,
            "num_experts_per_tok": 2, "moe_intermediate_size": 32, "norm_topk_prob": True,
            "decoder_sparse_step": 1, "mlp_only_layers": [],
        },
    },
    "rwkv7": {
        "model_type": "rwkv7", "hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128,
        "head_dim": 16, "vocab_size": 128, "norm_eps": 1e-05, "a_low_rank_dim": 8,
        "v_low_rank_dim": 8, "gate_low_rank_dim": 8, "decay_low_rank_dim": 8,
    },
    "seed_oss": {
        "model_type": "seed_oss", "hidden_size": 64, "num_hidden_layers": 2,
        "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
        "head_dim": 16, "vocab_size": 128, "rms_norm_eps": 1e-05, "tie_word_embeddings": False,
    },
    "smollm3": {
        "model_type": "smollm3", "hidden_size": 64, "num_hidden_layers": 2,
        "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
        "vocab_size": 128, "rms_norm_eps": 1e-05, "tie_word_embeddings": False,
    },
    "solar_open": {
        "model_type": "solar_open", "hidden_size": 64, "num_hidden_layers": 2,
        "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
        "head_dim": 16, "vocab_size": 128, "rms_norm_eps": 1e-05, "rope_theta": 10000.0,
        "max_position_embeddings": 256, "tie_word_embeddings": False, "n_routed_experts": 4,
        "num_experts_per_tok": 2, "moe_intermediate_size": 32, "n_shared_experts": 1,
        "first_k_dense_replace": 1, "norm_topk_prob": True, "routed_scaling_factor": 1.0,
        "partial_rotary_factor": 0.5,
    },
    "spark2_5": {
        "model_type": "spark2_5", "hidden_size": 64, "num_hidden_layers": 2,
        "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
        "head_dim": 16, "vocab_size": 128, "tie_word_embeddings": False, "sliding_window": 16,
        "rope_parameters": {
            "sliding_attention": {"rope_theta": 10000.0}, "full_attention": {"rope_theta": 10000.0},
        },
    },
    "stablelm": {
        "model_type": "stablelm", "hidden_size": 64, "num_hidden_layers": 2,
        "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
        "vocab_size": 128, "rope_theta": 10000.0, "layer_norm_eps": 1e-05,
        "partial_rotary_factor": 0.5, "use_qkv_bias": False,
    },
    "starcoder2": {
        "model_type": "starcoder2", "hidden_size": 64, "num_hidden_layers": 2,
        "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
        "vocab_size": 128, "tie_word_embeddings": False,
    },
    "step3p5": {
        "model_type": "step3p5", "hidden_size": 64, "num_hidden_layers": 2,
        "intermediate_size": 128, "num_attention_heads": 4, "head_dim": 16, "vocab_size": 128,
        "moe_intermediate_size": 32, "num_attention_groups": 2, "moe_num_experts": 4,
        "moe_top_k": 2, "share_expert_dim": 32,
    },
    "talkie": {
        "model_type": "talkie", "hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128,
        "num_attention_heads": 4, "head_dim": 16, "vocab_size": 128,
    },
    "telechat3": {
        "model_type": "telechat3", "hidden_size": 64, "num_hidden_layers": 2,
        "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
        "vocab_size": 128, "rms_norm_eps": 1e-05, "rope_theta": 10000.0,
        "max_position_embeddings": 256,
    },
    "youtu_llm": {
        "model_type": "youtu_llm", "hidden_size": 64, "num_hidden_layers": 2,
        "intermediate_size": 128, "num_attention_heads": 4, "vocab_size": 128,
        "tie_word_embeddings": False, "kv_lora_rank": 16, "q_lora_rank": 32, "qk_rope_head_dim": 8,
        "qk_nope_head_dim": 8, "v_head_dim": 16,
    },
}
# fmt: on

NOT_TINY: dict[str, str] = {
    "bitnet": (
        "BitLinear layers run a Metal-only mx.fast.metal_kernel; no CPU path (RuntimeError on CPU)"
    ),
    "gemma3n": (
        "builds tiny, but after linear_to_lora_layers AltUp.predict reads prediction_coefs.weight, which a LoRALinear lacks (AttributeError)"
    ),
    "muse_spark": (
        "attention runs kernels/qk_norm_rope.py, a Metal-only mx.fast.metal_kernel; no CPU path"
    ),
    "olmo": (
        "the module imports hf_olmo (pip ai2-olmo) and calls sys.exit(1) without it; not installed here"
    ),
    "phi3small": (
        "masks hard-coded tokenizer ids 100256..100351 to -inf: needs vocab >= 100352 (segfaults below) and its logits are never all finite"
    ),
    "recurrent_gemma": (
        "builds tiny, but Model.__init__ never calls nn.Module.__init__, so model.freeze() (and LoRA conversion) raises AttributeError _no_grad"
    ),
}
