"""Every architecture mlx-lm ships (``archs.ARCHS``, tiny configs): an adapter on every layer,
made by mlx-lm's own ``linear_to_lora_layers`` with random non-zero factors and saved as its
trainer saves, against a base folder saved by mlx-lm's ``save_model``.

For each: ``check`` through the model's own classes finds the adapter fits exactly (nothing
missing, unexpected or mis-shaped); the header-only reading agrees (or, for the architectures
listed below, cannot know); ``load_adapters`` reproduces the trained model's logits; and what
``save_adapters`` writes, stock mlx-lm's ``load_adapters`` reloads to the same logits. The
architectures mlx-lm cannot build tiny here are listed with reasons in ``archs.NOT_TINY``.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest

import adapterscan
from archs import ARCHS
from producers import build_model, save_base, save_like_trainer

pytestmark = pytest.mark.mlx

#: What the headers alone cannot tell, by architecture.
HEADERS_CANNOT_KNOW = {
    # Its MLP weights are HadamardQuantizedLinear: packed uint32 words with no `scales` beside
    # them, which only the model's classes know to unpack.
    "prism_hadamard_qwen35": "packed Hadamard-quantized weights without scales",
}

#: Adapters stock mlx-lm cannot reload, whoever wrote them.
STOCK_CANNOT_RELOAD = {
    # mlx-lm 0.32.2's load_adapters refuses the list-valued `lora_a.N` leaves of its own
    # FusedLoRALinear (tested below on the adapter its trainer path writes).
    "afm7": "list-valued lora_a.N / lora_b.N leaves",
}

TOKENS = [[1, 2, 3, 4]]


def _adapter(config: dict[str, Any], folder: Path) -> tuple[Any, Path]:
    import mlx.core as mx
    from mlx.utils import tree_map
    from mlx_lm.tuner.utils import linear_to_lora_layers

    model = build_model(config)
    n = len(model.layers)
    model.freeze()
    params = {"rank": 4, "scale": 10.0, "dropout": 0.0}
    linear_to_lora_layers(model, n, params)
    mx.random.seed(1)
    model.update(
        tree_map(
            lambda x: (mx.random.normal(x.shape) * 0.05).astype(x.dtype),
            model.trainable_parameters(),
        )
    )
    model.eval()
    adapter = save_like_trainer(
        model, folder, fine_tune_type="lora", num_layers=n, lora_parameters=params
    )
    return model, adapter


def _fits(report: adapterscan.Report) -> bool:
    return report.ok and not (report.missing or report.unexpected or report.shape_mismatch)


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_every_architecture(tmp_path: Path, arch: str) -> None:
    import mlx.core as mx
    from mlx_lm.tuner.utils import load_adapters as stock_load

    from adapterscan.mlx import load_adapters, save_adapters

    config = ARCHS[arch]
    base = save_base(build_model(config), config, tmp_path / "base")
    model, adapter = _adapter(config, tmp_path / "adapter")
    want = model(mx.array(TOKENS))

    report = adapterscan.check(adapter, base)
    assert _fits(report), (report.missing, report.unexpected, report.shape_mismatch)
    assert report.expected.source.startswith("mlx-lm classes")
    headers = adapterscan.check(adapter, base, structure="headers")
    assert "base_structure_from_headers" in {p.code for p in headers.problems}
    assert _fits(headers) != (arch in HEADERS_CANNOT_KNOW), (headers.missing, headers.unexpected)

    fresh = build_model(config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # some architectures warn on their own at load
        load_adapters(fresh, adapter)
    assert mx.allclose(fresh(mx.array(TOKENS)), want, atol=1e-4, rtol=1e-4).item()

    save_adapters(fresh, tmp_path / "resaved")
    if arch in STOCK_CANNOT_RELOAD:
        for folder in (adapter, tmp_path / "resaved"):
            refusing = build_model(config)
            refusing.freeze()
            with pytest.raises(ValueError, match="not an adapter parameter"):
                stock_load(refusing, str(folder))
        return
    stock = build_model(config)
    stock.freeze()
    stock_load(stock, str(tmp_path / "resaved"))
    stock.eval()
    assert mx.allclose(stock(mx.array(TOKENS)), want, atol=1e-4, rtol=1e-4).item()
