"""The embedded example: real adapters made with mlx-lm's own classes, then inspected.

Each adapter is produced the way ``mlx_lm.lora`` trains one: the model is frozen, wrapped by
``linear_to_lora_layers``, its ``trainable_parameters()`` are written with
``mx.save_safetensors`` and the run's arguments with ``save_config``. Only the training loop is
left out; ``lora_b`` gets random values so the adapters are not zero.

May use: MLX and mlx-lm (imported when the demo runs), ``adapterscan.mlx``, ``_scan``, ``_render``.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from ._scan import scan

LLAMA = {
    "model_type": "llama",
    "hidden_size": 64,
    "num_hidden_layers": 4,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-5,
    "vocab_size": 256,
    "tie_word_embeddings": False,
}

QWEN3_MOE = {
    "model_type": "qwen3_moe",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_experts": 4,
    "num_experts_per_tok": 2,
    "decoder_sparse_step": 1,
    "mlp_only_layers": [],
    "moe_intermediate_size": 32,
    "rms_norm_eps": 1e-6,
    "vocab_size": 256,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "rope_theta": 1000000.0,
    "tie_word_embeddings": False,
    "max_position_embeddings": 512,
    "norm_topk_prob": True,
}

#: (name, model config, fine_tune_type, num_layers, lora_parameters)
EXAMPLES: list[tuple[str, dict[str, Any], str, int, dict[str, Any]]] = [
    ("llama-lora", LLAMA, "lora", 2, {"rank": 8, "dropout": 0.05, "scale": 10.0}),
    (
        "llama-dora-embed",
        LLAMA,
        "dora",
        4,
        {
            "rank": 4,
            "dropout": 0.0,
            "scale": 2.0,
            "keys": ["self_attn.q_proj", "self_attn.v_proj", "model.embed_tokens"],
        },
    ),
    ("qwen3-moe-lora", QWEN3_MOE, "lora", 2, {"rank": 4, "dropout": 0.0, "scale": 20.0}),
]


def build_example(
    folder: Path,
    model_config: dict[str, Any],
    fine_tune_type: str,
    num_layers: int,
    lora_parameters: dict[str, Any],
) -> Path:
    """Build one tiny model, attach LoRA/DoRA with mlx-lm, and save it as the trainer does."""
    import mlx.core as mx
    from mlx.utils import tree_flatten, tree_map
    from mlx_lm.lora import CONFIG_DEFAULTS
    from mlx_lm.tuner.utils import linear_to_lora_layers
    from mlx_lm.utils import _get_classes, save_config

    model_class, args_class = _get_classes(config=model_config)
    model = model_class(args_class.from_dict(model_config))
    mx.random.seed(0)
    model.freeze()
    linear_to_lora_layers(model, num_layers, lora_parameters, use_dora=fine_tune_type == "dora")
    # Stand in for training: give every lora_b non-zero values.
    trained = tree_map(
        lambda p: mx.random.normal(p.shape, dtype=p.dtype) * 0.01,
        model.trainable_parameters(),
    )
    model.update(trained)
    folder.mkdir(parents=True, exist_ok=True)
    weights = dict(tree_flatten(model.trainable_parameters()))
    mx.save_safetensors(str(folder / "adapters.safetensors"), weights)
    args = dict(CONFIG_DEFAULTS)
    args.update(
        model=f"tiny-{model_config['model_type']}",
        fine_tune_type=fine_tune_type,
        num_layers=num_layers,
        lora_parameters=lora_parameters,
        adapter_path=str(folder),
        train=True,
    )
    save_config(args, folder / "adapter_config.json")
    return folder


def run_demo(directory: str | None, *, as_json: bool = False) -> int:
    """Build the examples into ``directory`` (a temporary folder if None) and inspect them."""
    try:
        import mlx.core  # noqa: F401
        import mlx_lm  # noqa: F401
    except ImportError as e:
        raise ImportError(
            f"the demo builds adapters with mlx-lm, which is not installed ({e}); "
            'install it with: pip install "adapterscan[mlx]"'
        ) from e
    from ._render import render_scan

    with tempfile.TemporaryDirectory(prefix="adapterscan-demo-") as tmp:
        root = Path(directory) if directory else Path(tmp)
        results = []
        for name, config, ftt, layers, params in EXAMPLES:
            path = build_example(root / name, config, ftt, layers, params)
            results.append(scan(path))
        if as_json:
            json.dump([r.to_dict() for r in results], sys.stdout, indent=2)
            sys.stdout.write("\n")
        else:
            for r in results:
                render_scan(r)
                print()
        return 0 if all(r.ok for r in results) else 1
