"""The ``adapterscan`` command line.

Exit codes: 0 when the adapter could be read (``inspect``) or fits (``check``), 1 when ``check``
finds it incompatible, 2 when the input cannot be read or the command line is wrong.
Data goes to standard output, diagnostics to standard error.

May use: every module of the package; ``adapterscan.mlx`` only inside the commands that need MLX.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from . import __version__
from ._core import AdapterScanError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_ERROR = 2


def _columns() -> int:
    """The terminal's width, found as ``shutil.get_terminal_size`` finds it.

    ``$COLUMNS``, then standard output's terminal, then 80; without importing ``shutil``: argparse
    builds a help formatter for every argument it adds, and ``shutil``'s compression imports
    would cost every start a few milliseconds.
    """
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    stdout = sys.__stdout__
    if columns <= 0 and stdout is not None:
        try:
            columns = os.get_terminal_size(stdout.fileno()).columns
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns if columns > 0 else 80


class _Help(argparse.HelpFormatter):
    """argparse's help layout, as wide as the terminal (see :func:`_columns`)."""

    def __init__(
        self,
        prog: str,
        indent_increment: int = 2,
        max_help_position: int = 24,
        width: int | None = None,
    ) -> None:
        # As argparse: two columns short of the terminal.
        width = _columns() - 2 if width is None else width
        super().__init__(prog, indent_increment, max_help_position, width)


class _RawDescriptionHelp(_Help, argparse.RawDescriptionHelpFormatter):
    """As :class:`_Help`, with the description and epilog kept as written."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="adapterscan",
        description=(
            "Inspect and validate LoRA/DoRA adapters (mlx-lm, mlx-vlm, Unsloth, PEFT) from their "
            "safetensors headers, without reading tensor data."
        ),
        formatter_class=_RawDescriptionHelp,
        epilog=(
            "examples:\n"
            "  adapterscan inspect adapters/\n"
            "  adapterscan inspect adapter_model.safetensors.index.json --json\n"
            "  adapterscan check adapters/ --base mlx_model/\n"
            "  adapterscan demo"
        ),
    )
    parser.add_argument("-V", "--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_inspect(sub)
    _add_check(sub)
    _add_repair(sub)
    _add_convert(sub)
    _add_demo(sub)
    return parser


def _add_inspect(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``inspect`` command: an adapter's modules and problems."""
    inspect = sub.add_parser(
        "inspect",
        formatter_class=_Help,
        help="show an adapter's modules, ranks, dims and problems",
        description=(
            "Read an adapter's safetensors headers (and adapter_config.json) and show every LoRA "
            "module with its kind, layout, rank and dims, plus every problem found. Exit 0 when "
            "the files could be read, problems or not; 2 when they cannot."
        ),
    )
    inspect.add_argument("path", help="adapter folder, .safetensors file, or shard index")
    inspect.add_argument(
        "--json", action="store_true", help="print the documented JSON object instead of tables"
    )
    cfg = inspect.add_mutually_exclusive_group()
    cfg.add_argument("--config", metavar="FILE", help="use this adapter_config.json")
    cfg.add_argument("--no-config", action="store_true", help="ignore any adapter_config.json")
    inspect.add_argument(
        "--all", action="store_true", help="list every module and every problem, unsummarised"
    )
    inspect.add_argument(
        "--verify-data",
        action="store_true",
        help="also read the tensor values: NaN/Inf, all-zero lora_b, per-module norms "
        "(the only option that reads tensor data; Ctrl-C stops it)",
    )
    inspect.add_argument(
        "--symlinks",
        choices=["follow", "inside", "refuse"],
        default="follow",
        help="follow symbolic links anywhere (default, as in the Hugging Face cache), only "
        "inside the adapter folder, or refuse them",
    )


def _add_check(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``check`` command: does an adapter fit a base model folder."""
    chk = sub.add_parser(
        "check",
        formatter_class=_Help,
        help="will this adapter fit this base model? (headers only)",
        description=(
            "Compare an adapter's tensors with the modules of a base model folder, reading no "
            "tensor data: with MLX installed, mlx-lm's own classes build the model from its "
            "config.json (quantized as it says) and decide what it would wrap; otherwise its "
            "safetensors headers are read (mlx-lm or Hugging Face layout, quantized or not). "
            "Exit 0 when the adapter fits, 1 when it does not, 2 when an input cannot be read."
        ),
    )
    chk.add_argument("adapter", help="adapter folder, .safetensors file, or shard index")
    chk.add_argument("--base", required=True, metavar="BASE_DIR", help="base model folder")
    chk.add_argument("--json", action="store_true", help="print the documented JSON object")
    chk.add_argument("--config", metavar="FILE", help="use this adapter_config.json")
    chk.add_argument("--all", action="store_true", help="list everything, unsummarised")
    chk.add_argument(
        "--structure",
        choices=["auto", "model", "headers"],
        default="auto",
        metavar="HOW",
        help="how the base's modules are known: auto (mlx-lm's own classes built from "
        "config.json when MLX is installed, else the safetensors headers), model (only "
        "mlx-lm's classes) or headers (only the headers)",
    )


def _add_repair(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``repair`` command: rewrite the config from the tensors."""
    rep = sub.add_parser(
        "repair",
        formatter_class=_Help,
        help="rewrite an incomplete or stale adapter_config.json from the tensors",
        description=(
            "Rewrite adapter_config.json from what the tensors prove (ranks, DoRA, exact module "
            "paths), keeping scale and dropout from the old config (or --scale) and a backup of "
            "it, atomically. Exit 0 when the repaired adapter has no errors, 1 when some remain, "
            "2 when it cannot be read or no scale is known."
        ),
    )
    rep.add_argument("adapter", help="adapter folder")
    rep.add_argument("--scale", type=float, help="scale to record where the config has none")
    rep.add_argument("--base", metavar="BASE_DIR", help="base model folder (for num_layers)")
    rep.add_argument("--json", action="store_true", help="print the repaired scan as JSON")


def _add_convert(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``convert`` command: PEFT <-> mlx-lm layouts."""
    conv = sub.add_parser(
        "convert",
        formatter_class=_Help,
        help="convert between PEFT and mlx-lm adapter layouts (needs adapterscan[mlx])",
        description=(
            "--to mlx: write a PEFT adapter folder as an mlx-lm adapter that stock mlx-lm loads "
            "with the same results (factors transposed or stacked, per-module scales kept; "
            "zero-padding to the largest rank and folding scales into lora_b when modules "
            "differ; keys = full module paths). --to peft: write an mlx adapter in PEFT's layout "
            "(adapter_model.safetensors + a PEFT config with rank_pattern/alpha_pattern). "
            "Written atomically. Exit 0 on success, 2 when the input cannot be read or cannot be "
            "represented."
        ),
    )
    conv.add_argument("src", help="adapter folder to convert")
    conv.add_argument("dst", help="folder to write")
    conv.add_argument("--to", choices=["mlx", "peft"], required=True, help="target layout")
    conv.add_argument(
        "--base",
        metavar="BASE_DIR",
        help="base model folder: module paths and tied embeddings from its classes; the output is "
        "checked against it before anything is written",
    )
    conv.add_argument(
        "--drop-embedding-copy",
        action="store_true",
        help="leave out peft's copy of a targeted embedding (base_layer.weight)",
    )
    conv.add_argument(
        "--experts",
        choices=["fused", "per-expert"],
        default="fused",
        help="--to peft: MoE experts as transformers 5 fused parameters (target_parameters, the "
        "default) or as transformers 4 per-expert modules",
    )
    conv.add_argument(
        "--force",
        action="store_true",
        help="write over a destination that holds an adapter (even the source), keeping its "
        "files beside as NAME.bak-TIME",
    )
    conv.add_argument("--json", action="store_true", help="print the written adapter's scan")


def _add_demo(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``demo`` command: small real adapters made with mlx-lm."""
    demo = sub.add_parser(
        "demo",
        formatter_class=_Help,
        help="build small real adapters with mlx-lm and inspect them (needs adapterscan[mlx])",
        description=(
            "Build tiny models with mlx-lm, attach LoRA, DoRA and MoE switch LoRA with mlx-lm's "
            "own classes, save them the way mlx-lm's trainer does, and inspect each one."
        ),
    )
    demo.add_argument("--dir", metavar="DIR", help="where to write the adapters (default: temp)")
    demo.add_argument("--json", action="store_true", help="print JSON objects instead of tables")


def _inspect(args: argparse.Namespace) -> int:
    from ._scan import scan

    result = scan(
        args.path,
        config=args.config,
        read_config=not args.no_config,
        symlinks=args.symlinks,
    )
    data = _verify(result, quiet=args.json) if args.verify_data else None
    if args.json:
        if data is None:
            sys.stdout.write(result.to_json(pretty=True) + "\n")
        else:
            import json

            out = result.to_dict()
            out["problems"] += [p._asdict() for p in data.problems]
            out["data"] = {
                "bytes_read": data.bytes_read,
                "tensors_checked": data.tensors_checked,
                "modules": data.modules,
            }
            sys.stdout.write(json.dumps(out, indent=2) + "\n")
        return EXIT_OK
    from ._render import render_data, render_scan

    render_scan(result, show_all=args.all)
    if data is not None:
        render_data(data, show_all=args.all)
    return EXIT_OK


def _verify(result: Any, *, quiet: bool) -> Any:
    from ._data import verify_data

    if quiet or not sys.stderr.isatty():
        return verify_data(result)
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(binary_units=True),
        TimeRemainingColumn(),
        transient=True,
    ) as bar:
        task = bar.add_task("reading tensor data", total=result.total_bytes)
        return verify_data(result, progress=lambda done, total: bar.update(task, completed=done))


def _check(args: argparse.Namespace) -> int:
    from ._check import check

    report = check(args.adapter, args.base, config=args.config, structure=args.structure)
    if args.json:
        sys.stdout.write(report.to_json(pretty=True) + "\n")
    else:
        from ._render import render_report

        render_report(report, show_all=args.all)
    return EXIT_OK if report.ok else EXIT_FINDINGS


def _repair(args: argparse.Namespace) -> int:
    from ._repair import repair

    result = repair(args.adapter, scale=args.scale, base=args.base)
    if args.json:
        sys.stdout.write(result.to_json(pretty=True) + "\n")
    else:
        from ._render import render_scan

        render_scan(result)
    return EXIT_OK if result.ok else EXIT_FINDINGS


def _convert(args: argparse.Namespace) -> int:
    from .mlx import convert_to_mlx, convert_to_peft

    if args.to == "peft":
        result = convert_to_peft(args.src, args.dst, experts=args.experts, force=args.force)
    else:
        result = convert_to_mlx(
            args.src,
            args.dst,
            base=args.base,
            drop_embedding_copy=args.drop_embedding_copy,
            force=args.force,
        )
    if args.json:
        sys.stdout.write(result.to_json(pretty=True) + "\n")
    else:
        print(f"wrote {args.dst}: {len(result.modules)} modules, {result.tensor_count} tensors")
    return EXIT_OK


def _demo(args: argparse.Namespace) -> int:
    from ._demo import run_demo

    return run_demo(args.dir, as_json=args.json)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code.

    Args:
        argv: Arguments without the program name (default: ``sys.argv[1:]``).

    Returns:
        0, 1 or 2 (see the module docstring).
    """
    args = _parser().parse_args(argv)
    try:
        if args.command == "inspect":
            return _inspect(args)
        if args.command == "check":
            return _check(args)
        if args.command == "repair":
            return _repair(args)
        if args.command == "convert":
            return _convert(args)
        return _demo(args)
    except AdapterScanError as e:
        print(f"adapterscan: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as e:
        print(f"adapterscan: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except ImportError as e:
        print(f"adapterscan: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:
        return EXIT_OK
    except KeyboardInterrupt:
        print("adapterscan: interrupted", file=sys.stderr)
        return 130
