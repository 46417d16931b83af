"""Rewrite an adapter's config from what its tensors prove (no MLX needed).

May use: ``_core``, ``_scan``, ``_check``, ``_config_io``, ``_atomic``, ``errors``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from ._atomic import replace_files
from ._check import read_base
from ._config_io import CONFIG_NAME, as_mapping, config_writer, given_scale, most_common
from ._core import SAVE_ID_KEY, AdapterScanError, Module, read_config_bytes
from ._scan import Scan, scan
from .errors import SaveError, config_error

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ._scan import ModuleSettings


def _old_config(folder: Path) -> tuple[dict[str, Any], bytes | None]:
    """The old config (empty when it is not a JSON object) and its bytes, kept as the backup.

    Read through the one opener, confined to the folder: a config that is a link out of it, a
    FIFO or a device is refused (typed error), never read or copied into the backup.
    """
    path = folder / CONFIG_NAME
    if not os.path.lexists(path):
        return {}, None
    raw = read_config_bytes(path, folder=folder, symlinks="inside")
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        return {}, raw
    return (value if isinstance(value, dict) else {}), raw


def repair(
    path: str | os.PathLike[str],
    *,
    scale: float | None = None,
    base: str | os.PathLike[str] | None = None,
) -> Scan:
    """Rewrite ``adapter_config.json`` from the tensors, keeping a backup of the old one.

    Ranks, kinds, DoRA and the exact module paths come from the safetensors headers; the scale
    and dropout come from the old config (per module where recorded) or ``scale``; the number of
    layers from ``base`` when given. Unrelated fields of the old config are kept. The new config
    and the backup (``adapter_config.json.bak-<time>``) land together, atomically.

    Args:
        path: The adapter folder.
        scale: The scale to record where the old config has none.
        base: A base model folder, to take the layer count from.

    Returns:
        The scan of the repaired adapter.

    Raises:
        ConfigError: No scale is known for some module.
        AdapterScanError: The adapter cannot be read.
    """
    scale = given_scale(scale)
    folder = Path(path)
    s = scan(folder, read_config=False)
    old, raw = _old_config(folder)
    modules = list(s.modules.values())
    if not modules:
        raise config_error(f"{folder}: no LoRA modules to describe", str(folder / CONFIG_NAME))
    recorded, dropout = _recorded(folder, raw)
    entries = _module_entries(modules, recorded, scale, dropout, str(folder / CONFIG_NAME))
    num_layers = _num_layers(old, base)
    cfg = _repaired_config(s, old, modules, entries, num_layers=num_layers, dropout=dropout)
    _write_repaired(folder, cfg, raw)
    return scan(folder)


def _recorded(folder: Path, raw: bytes | None) -> tuple[dict[str, ModuleSettings], float]:
    """Each module's scale and dropout in the old config, and the dropout most modules have.

    The core reads the config as a loader would; 0 is the dropout when it gives none. A config
    that cannot be read gives nothing: ``scale`` must then be passed.
    """
    if raw is None:
        return {}, 0.0
    try:
        settings = scan(folder).module_settings
    except AdapterScanError:
        return {}, 0.0
    dropouts = [x.dropout for x in settings.values()]
    return settings, float(most_common(dropouts)) if dropouts else 0.0


def _module_entries(
    modules: list[Module],
    recorded: dict[str, ModuleSettings],
    scale: float | None,
    dropout: float,
    config_path: str,
) -> dict[str, dict[str, Any]]:
    """Each module's kind, variant and rank (from the tensors), scale and dropout.

    Raises:
        ConfigError: Neither the old config nor ``scale`` gives a module's scale.
    """
    entries: dict[str, dict[str, Any]] = {}
    for m in modules:
        old = recorded.get(m.path)
        module_scale = old.scale if old is not None and old.scale is not None else scale
        if module_scale is None:
            raise config_error(
                f"no scale is recorded for {m.path} and none was given: pass --scale",
                config_path,
                "lora_parameters.scale",
            )
        entries[m.path] = {
            "kind": m.kind,
            "variant": m.variant,
            "rank": m.rank,
            "scale": module_scale,
            "dropout": old.dropout if old is not None else dropout,
        }
    return entries


def _num_layers(old: dict[str, Any], base: str | os.PathLike[str] | None) -> int:
    """The layer count: the base folder's when given, else the old config's, else -1."""
    if base is not None:
        layers = read_base(base).layers()
        return layers[1] if layers else -1
    if isinstance(old.get("num_layers"), int):
        num_layers: int = old["num_layers"]
        return num_layers
    return -1


def _repaired_config(
    s: Scan,
    old: dict[str, Any],
    modules: list[Module],
    entries: dict[str, dict[str, Any]],
    *,
    num_layers: int,
    dropout: float,
) -> dict[str, Any]:
    """The new config: the old one's unrelated fields, the rest from ``entries``."""
    cfg = {
        k: v
        for k, v in old.items()
        if k
        not in (
            "lora_layers",
            "use_dora",
            "unsloth_mlx_lora_module_paths",
            "unsloth_mlx_lora_module_ranks",
            "unsloth_mlx_lora_module_scales",
        )
    }
    paths = [m.path for m in modules]
    rank = most_common([e["rank"] for e in entries.values()])
    common_scale = most_common([e["scale"] for e in entries.values()])
    cfg["fine_tune_type"] = "dora" if any(m.variant == "dora" for m in modules) else "lora"
    cfg["num_layers"] = num_layers
    cfg["lora_parameters"] = {
        "rank": rank,
        "scale": common_scale,
        "dropout": dropout,
        "keys": paths,
    }
    cfg["rank"], cfg["scale"], cfg["dropout"] = rank, common_scale, dropout
    meta = s.files[0].metadata or {} if s.files else {}
    previous = as_mapping(old.get("adapterscan"))
    cfg["adapterscan"] = {
        **previous,
        "schema_version": 1,
        "kind": previous.get("kind", "lora"),
        "save_id": meta.get(SAVE_ID_KEY, previous.get("save_id")),
        "modules": entries,
        "repaired": True,
    }
    if cfg["adapterscan"]["save_id"] is None:
        del cfg["adapterscan"]["save_id"]
    return cfg


def _write_repaired(folder: Path, cfg: dict[str, Any], raw: bytes | None) -> None:
    """Write the new config and a backup of the old one's bytes (when there was one) together."""
    writers = {CONFIG_NAME: config_writer(cfg, ensure_ascii=False)}
    if raw is not None:
        backup = f"{CONFIG_NAME}.bak-{time.strftime('%Y%m%d-%H%M%S')}"
        old_bytes = raw

        def write_backup(p: Path) -> None:
            p.write_bytes(old_bytes)

        writers[backup] = write_backup
    try:
        replace_files(folder, writers)
    except OSError as e:
        raise SaveError(
            f"{folder} could not be written ({e.strerror or e}): the adapter there is unchanged"
        ) from e
