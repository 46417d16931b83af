"""Human-readable output of the command line (rich tables), kept out of the JSON path.

May use: rich, ``_core``, ``_scan``, ``_check``, ``_data``.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ._check import Report
from ._core import Module, ModuleGroup, Problem, compress_ranges
from ._data import DataProblem, DataReport
from ._scan import Scan

#: How many problems of one code are listed before the rest are counted.
PROBLEMS_PER_CODE = 10


def layer_ranges(layers: list[int]) -> str:
    """``[0, 1, 2, 5, 7, 8]`` -> ``"0-2, 5, 7-8"`` (the core's range text); ``-`` for none."""
    return compress_ranges(layers) if layers else "-"


def common_prefix(paths: list[str]) -> str:
    """The longest common dotted prefix (ending in a dot) of two or more paths."""
    if len(paths) < 2:
        return ""
    split = [p.split(".") for p in paths]
    common: list[str] = []
    for parts in zip(*split, strict=False):
        if all(x == parts[0] for x in parts):
            common.append(parts[0])
        else:
            break
    # Keep at least the last component of every path.
    common = common[: min(len(p) for p in split) - 1]
    return ".".join(common) + "." if common else ""


def human_bytes(n: int) -> str:
    """Bytes in binary units."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _dim(v: int | None) -> str:
    return "?" if v is None else str(v)


def _config_summary(config: dict[str, Any] | None) -> str:
    if config is None:
        return "none"
    lp = config.get("lora_parameters")
    parts = []
    if isinstance(lp, dict):
        for key in ("rank", "scale", "dropout"):
            if key in lp:
                parts.append(f"{key}={lp[key]}")
        keys = lp.get("keys")
        if isinstance(keys, list):
            parts.append(f"keys={len(keys)}")
    for key in ("r", "lora_alpha", "num_layers", "lora_layers"):
        if key in config:
            parts.append(f"{key}={config[key]}")
    return ", ".join(parts) if parts else "(no LoRA parameters)"


def render_scan(result: Scan, *, show_all: bool = False, console: Console | None = None) -> None:
    """Print a scan as a header, a module table and a problem list."""
    out = console or Console()
    files = result.files
    out.print(Text(result.path, style="bold"), soft_wrap=True)
    out.print(
        f"format [bold]{result.format}[/]  fine_tune_type [bold]{result.fine_tune_type}[/]  "
        f"files {len(files)}  tensors {result.tensor_count}  "
        f"data {human_bytes(result.total_bytes)}  "
        f"headers {human_bytes(sum(f.header_bytes for f in files))}",
        highlight=False,
        soft_wrap=True,
    )
    schema = result.config_schema
    out.print(
        Text(
            f"config {result.config_path or 'none'}"
            + (f" ({schema}: {_config_summary(result.config)})" if schema else "")
        ),
        highlight=False,
        soft_wrap=True,
    )

    wide = out.width >= 120
    names = list(result.modules) if show_all else [g.template for g in result.module_groups()]
    prefix = common_prefix(names)
    title = f"{len(result.modules)} LoRA modules" + (f" under {prefix}" if prefix else "")
    table = Table(
        title=title,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    table.add_column("module", overflow="fold", ratio=1, min_width=12)
    table.add_column("layers", overflow="fold")
    columns = ["n", "kind", "variant", "rank", "in>out", "E", "dtype"]
    if wide:
        columns.insert(3, "layout")
    for col in columns:
        table.add_column(col, no_wrap=True, justify="right" if col in {"n", "rank"} else "left")

    def add(name: str, layers: str, count: int, m: Module | ModuleGroup) -> None:
        row: list[str | Text] = [
            Text(name[len(prefix) :] or name),
            layers,
            str(count),
            m.kind,
            m.variant,
            _dim(m.rank),
            f"{_dim(m.in_dims)}>{_dim(m.out_dims)}",
            "-" if m.num_experts is None else str(m.num_experts),
            m.dtype,
        ]
        if wide:
            row.insert(5, m.layout)
        table.add_row(*row)

    if show_all:
        for m in result.modules.values():
            add(m.path, "-", 1, m)
    else:
        for g in result.module_groups():
            add(g.template, layer_ranges(g.layers), g.count, g)
    if result.modules:
        out.print(table)

    non_adapter = result.non_adapter_tensors
    if non_adapter:
        out.print(f"{len(non_adapter)} tensors are not LoRA parameters", highlight=False)

    render_problems(result.problems, out, show_all=show_all)


def render_problems(
    problems: Sequence[Problem | DataProblem], out: Console, *, show_all: bool = False
) -> None:
    """Print problems as a table, at most PROBLEMS_PER_CODE of each code unless show_all."""
    if not problems:
        out.print("[green]no problems[/]")
        return
    counts = Counter(p.severity for p in problems)
    ptable = Table(
        title=f"{counts['error']} errors, {counts['warning']} warnings",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    ptable.add_column("severity")
    ptable.add_column("code")
    ptable.add_column("path", overflow="fold")
    ptable.add_column("message", overflow="fold")
    shown: defaultdict[str, int] = defaultdict(int)
    by_code = Counter(p.code for p in problems)
    for p in problems:
        shown[p.code] += 1
        if not show_all and shown[p.code] > PROBLEMS_PER_CODE:
            if shown[p.code] == PROBLEMS_PER_CODE + 1:
                rest = by_code[p.code] - PROBLEMS_PER_CODE
                ptable.add_row("", p.code, "", f"... and {rest} more (--all lists them)")
            continue
        style = "red" if p.severity == "error" else "yellow"
        # Paths and messages quote names from the files: never read as markup.
        ptable.add_row(Text(p.severity, style=style), p.code, Text(p.path or ""), Text(p.message))
    out.print(ptable)


def _listing(title: str, items: list[str], out: Console, *, show_all: bool) -> None:
    if not items:
        return
    limit = len(items) if show_all else PROBLEMS_PER_CODE
    out.print(f"[bold]{title}[/] ({len(items)})", highlight=False)
    for item in items[:limit]:
        out.print(Text(f"  {item}"), highlight=False, soft_wrap=True)
    if len(items) > limit:
        out.print(f"  ... and {len(items) - limit} more (--all lists them)", highlight=False)


def render_report(
    report: Report, *, show_all: bool = False, console: Console | None = None
) -> None:
    """Print a check report: verdict, missing, unexpected, shape mismatches, problems."""
    out = console or Console()
    verdict = "[green]fits[/]" if report.ok else "[red]does not fit[/]"
    out.print(
        Text.assemble(
            f"{report.scan.path} -> {report.expected.source}: ",
            Text.from_markup(verdict),
            f" ({len(report.scan.modules)} adapter modules, {len(report.expected)} model modules)",
        ),
        highlight=False,
        soft_wrap=True,
    )
    _listing("missing", report.missing, out, show_all=show_all)
    _listing("unexpected", report.unexpected, out, show_all=show_all)
    _listing(
        "shape mismatch",
        [
            f"{m.key}: saved {list(m.saved)}, expected {list(m.expected)}"
            for m in report.shape_mismatch
        ],
        out,
        show_all=show_all,
    )
    render_problems(report.problems, out, show_all=show_all)


def render_data(
    data: DataReport, *, show_all: bool = False, console: Console | None = None
) -> None:
    """Print what the data pass found: totals, problems, and (with show_all) module norms."""
    out = console or Console()
    out.print(
        f"data: {data.tensors_checked} tensors checked, {human_bytes(data.bytes_read)} read",
        highlight=False,
    )
    if show_all:
        table = Table(
            box=box.SIMPLE_HEAD, pad_edge=False, title="module norms", title_justify="left"
        )
        for col in ("module", "|A|", "|B|", "|m|"):
            table.add_column(col, justify="left" if col == "module" else "right")
        for path, norms in data.modules.items():
            m = norms.get("m")
            table.add_row(
                Text(path),
                f"{norms['lora_a']:.4g}",
                f"{norms['lora_b']:.4g}",
                "-" if m is None else f"{m:.4g}",
            )
        out.print(table)
    problems = data.problems
    if problems:
        render_problems(problems, out, show_all=show_all)
    else:
        out.print("[green]no NaN/Inf, no all-zero B factor[/]")
