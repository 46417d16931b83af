from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

sys.path.insert(0, str(Path(__file__).parent))

HAVE_MLX = (
    importlib.util.find_spec("mlx") is not None and importlib.util.find_spec("mlx_lm") is not None
)

settings.register_profile("fast", max_examples=200, deadline=None)
settings.register_profile("slow", max_examples=5000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fast"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if HAVE_MLX:
        return
    skip = pytest.mark.skip(
        reason="mlx and mlx-lm are not installed (pip install 'adapterscan[mlx]')"
    )
    for item in items:
        if "mlx" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _golden_dump(request: pytest.FixtureRequest) -> Iterator[None]:
    """With ADAPTERSCAN_GOLDEN_DUMP=DIR, record what adapterscan says of each test's folders."""
    dest = os.environ.get("ADAPTERSCAN_GOLDEN_DUMP")
    if not dest or "tmp_path" not in request.fixturenames:
        yield
        return
    root = request.getfixturevalue("tmp_path")
    yield
    import re

    from golden import dump

    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid)
    dump(root, Path(dest) / f"{name}.json")
