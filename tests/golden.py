"""Snapshots of what adapterscan says about a tree of adapter folders, for golden comparisons.

``snapshot(root)`` runs ``adapterscan inspect --json`` on every adapter folder and safetensors
file under ``root``, ``adapterscan check --json`` of every adapter folder against every base
folder (one holding ``config.json``), and ``Scan.to_dict()`` and the table ``inspect`` prints,
all in this process, with ``root`` written as ``<ROOT>``. A command that exits 2 is recorded with
its one-line message. Used by ``test_golden.py`` (a fixed catalogue, compared with the committed
files in ``tests/golden/``) and by the suite-wide dump in ``conftest.py``
(``ADAPTERSCAN_GOLDEN_DUMP=DIR``), which records every folder every test leaves behind so that a
restructuring can be compared with the code before it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
from pathlib import Path
from typing import Any

import adapterscan
from adapterscan import cli

_RANDOM_ID = re.compile(r"\b[0-9a-f]{32}\b")


def _run(argv: list[str], root: Path) -> dict[str, Any]:
    out, err = io.StringIO(), io.StringIO()
    columns = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "400"  # a path in the table is never wrapped, so <ROOT> replaces it
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(argv)
        except SystemExit as e:  # argparse
            code = e.code if isinstance(e.code, int) else 2
        finally:
            if columns is None:
                del os.environ["COLUMNS"]
            else:
                os.environ["COLUMNS"] = columns
    text = out.getvalue()
    body: Any = text
    if text.lstrip().startswith("{"):
        with contextlib.suppress(ValueError):
            body = json.loads(text)
    return {
        "argv": [a.replace(str(root), "<ROOT>") for a in argv],
        "exit": code,
        "stdout": _rooted(body, root),
        "stderr": _rooted(err.getvalue(), root),
    }


def _rooted(value: Any, root: Path) -> Any:
    if isinstance(value, str):
        return _RANDOM_ID.sub("<ID>", value.replace(str(root), "<ROOT>"))
    if isinstance(value, list):
        return [_rooted(v, root) for v in value]
    if isinstance(value, dict):
        return {k: _rooted(v, root) for k, v in value.items()}
    return value


def _is_base(folder: Path) -> bool:
    return (folder / "config.json").is_file()


def _is_adapter(folder: Path) -> bool:
    if _is_base(folder):
        return False
    names = os.listdir(folder)
    return "adapter_config.json" in names or any(n.endswith(".safetensors") for n in names)


def targets(root: Path) -> tuple[list[Path], list[Path], list[Path]]:
    """Adapter folders, base folders and loose safetensors files under ``root``, sorted."""
    adapters: list[Path] = []
    bases: list[Path] = []
    files: list[Path] = []
    for here, dirs, names in os.walk(root, followlinks=False):
        dirs.sort()
        folder = Path(here)
        try:
            if _is_base(folder):
                bases.append(folder)
            elif _is_adapter(folder):
                adapters.append(folder)
        except OSError:
            continue
        files.extend(folder / n for n in sorted(names) if n.endswith(".safetensors"))
    return adapters, bases, files


def _scan_dict(path: Path, root: Path) -> Any:
    try:
        return _rooted(adapterscan.scan(path).to_dict(), root)
    except adapterscan.AdapterScanError as e:
        return {"error": type(e).__name__, "message": _rooted(str(e), root)}


def snapshot(root: Path) -> dict[str, Any]:
    """Everything adapterscan says about the folders and files under ``root``."""
    adapters, bases, files = targets(root)
    out: dict[str, Any] = {}
    for a in adapters:
        rel = str(a.relative_to(root)) or "."
        out[f"inspect {rel}"] = _run(["inspect", str(a), "--json"], root)
        out[f"table {rel}"] = _run(["inspect", str(a), "--all"], root)
        out[f"scan {rel}"] = _scan_dict(a, root)
        for b in bases:
            brel = str(b.relative_to(root)) or "."
            out[f"check {rel} {brel}"] = _run(["check", str(a), "--base", str(b), "--json"], root)
    for f in files:
        rel = str(f.relative_to(root))
        out[f"inspect-file {rel}"] = _run(["inspect", str(f), "--json", "--no-config"], root)
    return out


def dump(root: Path, dest: Path) -> None:
    """Write ``snapshot(root)`` to ``dest`` as indented JSON (nothing when there is nothing)."""
    snap = snapshot(root)
    if snap:
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(json.dumps(snap, indent=1, sort_keys=True) + "\n", encoding="utf-8")
