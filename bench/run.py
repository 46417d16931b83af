"""Benchmarks: adapterscan against the named baselines, in one run, interleaved; medians.

Usage: python bench/run.py [--quick] [--out bench/results]

Scales (sparse files, see gen.py): s1 dense 7B-like mlx-lm LoRA; s2 mlx-lm switch LoRA at
Qwen3-MoE-235B geometry; s3 PEFT per-expert keys at that geometry in 20 shards with an index;
s4 1,000,000 tensors in 100 shards. Every contender returns {name: (dtype, shape)} for the whole
adapter (or, for adapterscan, its full module inference and validation), and is checked against
the expected tensor count.
"""

from __future__ import annotations

import argparse
import compileall
import gc
import json
import os
import platform
import resource
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
import adapterscan
import gen


def shard_paths(path: Path, loads: Callable[[bytes], Any] = json.loads) -> list[Path]:
    """The files of an adapter; a sharded one's index is parsed with ``loads`` (as users do)."""
    index = next(path.glob("*.safetensors.index.json"), None) if path.is_dir() else None
    if index is None:
        return [path / "adapters.safetensors"] if path.is_dir() else [path]
    weight_map = loads(index.read_bytes())["weight_map"]
    return [path / n for n in dict.fromkeys(weight_map.values())]


def read_header(p: Path) -> bytes:
    with p.open("rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return f.read(n)


# ---- contenders: each returns the number of tensors it saw ---------------------------------


def c_adapterscan(path: Path) -> int:
    return adapterscan.scan(path).tensor_count


def c_safe_open(path: Path) -> int:
    from safetensors import safe_open

    out = {}
    for p in shard_paths(path):
        with safe_open(str(p), framework="numpy") as f:
            for k in f.keys():  # noqa: SIM118
                s = f.get_slice(k)
                out[k] = (s.get_dtype(), s.get_shape())
    return len(out)


def c_json(path: Path) -> int:
    out = {}
    for p in shard_paths(path):
        header = json.loads(read_header(p))
        header.pop("__metadata__", None)
        out.update({k: (v["dtype"], v["shape"]) for k, v in header.items()})
    return len(out)


def c_orjson(path: Path) -> int:
    import orjson

    out = {}
    for p in shard_paths(path, orjson.loads):
        header = orjson.loads(read_header(p))
        header.pop("__metadata__", None)
        out.update({k: (v["dtype"], v["shape"]) for k, v in header.items()})
    return len(out)


def c_mx_load(path: Path) -> int:
    import mlx.core as mx

    out = {}
    for p in shard_paths(path):
        arrays = mx.load(str(p))
        out.update({k: (v.dtype, v.shape) for k, v in arrays.items()})
    return len(out)


def floor_native(path: Path) -> int:
    """Read every header and parse it natively (simdjson), creating no Python object per tensor."""
    import simdjson

    parser = simdjson.Parser()
    count = 0
    index = next(path.glob("*.safetensors.index.json"), None) if path.is_dir() else None
    files = [path / "adapters.safetensors"] if path.is_dir() else [path]
    if index is not None:
        doc = parser.parse(index.read_bytes())
        del doc
        files = sorted(path.glob("*.safetensors"))
    for p in files:
        doc = parser.parse(read_header(p))
        count += len(doc) - (1 if "__metadata__" in doc else 0)
        del doc
    return count


def floor_read(path: Path) -> int:
    """Just the I/O: the index and 8 bytes + N for every shard."""
    index = next(path.glob("*.safetensors.index.json"), None) if path.is_dir() else None
    if index is None:
        return len(read_header(path / "adapters.safetensors" if path.is_dir() else path))
    return len(index.read_bytes()) + sum(
        len(read_header(p)) for p in sorted(path.glob("*.safetensors"))
    )


# ---- timing --------------------------------------------------------------------------------


def measure(
    contenders: dict[str, Callable[[], Any]], runs: int, batch: int = 1
) -> dict[str, float]:
    """Median wall time (ms) of each contender, interleaved round-robin, after a warm-up.

    With ``batch`` > 1, each sample is the mean of that many calls in a row (for sub-millisecond
    comparisons of a contender with itself, where one call is within the timer's noise).
    """
    for fn in contenders.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(runs):
        for name, fn in contenders.items():
            gc.collect()
            t0 = time.perf_counter()
            for _ in range(batch):
                fn()
            times[name].append((time.perf_counter() - t0) * 1000 / batch)
    return {k: statistics.median(v) for k, v in times.items()}


def peak_rss_growth(code: str) -> int:
    """Peak RSS growth (bytes) of running ``code`` in a fresh interpreter after importing."""
    script = (
        "import adapterscan\n"
        "def hwm():\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith('VmHWM:'):\n"
        "            return int(line.split()[1]) * 1024\n"
        "before = hwm()\n"
        f"{code}\n"
        "print(hwm() - before)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


def whole_process(commands: dict[str, list[str]], runs: int) -> dict[str, float]:
    """Median wall time (ms) of each command as a new process, interleaved, after a warm-up."""
    times: dict[str, list[float]] = {k: [] for k in commands}
    for i in range(runs + 1):
        for name, cmd in commands.items():
            t0 = time.perf_counter()
            subprocess.run(cmd, stdout=subprocess.DEVNULL, check=True)
            if i:
                times[name].append((time.perf_counter() - t0) * 1000)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer runs, no s4")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    ap.add_argument(
        "--data", default=None, help="where to write the sparse adapters (default: temp)"
    )
    args = ap.parse_args()
    runs = 3 if args.quick else 15
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    data_ctx = (
        tempfile.TemporaryDirectory(prefix="adapterscan-bench-") if args.data is None else None
    )
    data = Path(args.data) if args.data else Path(data_ctx.name)  # type: ignore[union-attr]

    print("generating sparse adapters ...", flush=True)
    scales: dict[str, Path] = {}
    headers: dict[str, int] = {}
    headers["s1"] = gen.write_sparse(data / "s1" / "adapters.safetensors", gen.s1(), style="mlx")
    scales["s1"] = data / "s1"
    headers["s2"] = gen.write_sparse(data / "s2" / "adapters.safetensors", gen.s2(), style="mlx")
    scales["s2"] = data / "s2"
    headers["s3"] = gen.s3(data / "s3")
    scales["s3"] = data / "s3"
    if not args.quick:
        headers["s4"] = gen.s4(data / "s4")
        scales["s4"] = data / "s4"
    gen.s3_base(data / "s3-base")
    # The same s1 header with 1 MiB and with 100 GiB of (sparse) data.
    gen.write_sparse(
        data / "s1-small" / "adapters.safetensors",
        [*gen.s1()[:-1], ("z", "F32", [1, 1])],
        extra_data=1 << 20,
        style="mlx",
    )
    gen.write_sparse(
        data / "s1-huge" / "adapters.safetensors",
        [*gen.s1()[:-1], ("z", "F32", [1, 1])],
        extra_data=100 << 30,
        style="mlx",
    )

    rows: list[dict[str, Any]] = []
    results: dict[str, Any] = {
        "machine": platform.platform(),
        "python": sys.version.split()[0],
        "runs": runs,
        "scales": {},
    }
    for scale, path in scales.items():
        expected = adapterscan.scan(path).tensor_count
        contenders: dict[str, Callable[[], Any]] = {
            "adapterscan.scan": lambda p=path: c_adapterscan(p),
            "safe_open keys+shapes": lambda p=path: c_safe_open(p),
            "json header": lambda p=path: c_json(p),
            "orjson header": lambda p=path: c_orjson(p),
            "floor: read headers": lambda p=path: floor_read(p),
            "floor: read + native parse": lambda p=path: floor_native(p),
        }
        if scale != "s4":
            contenders["mx.load + shapes"] = lambda p=path: c_mx_load(p)
        for name in ("adapterscan.scan", "safe_open keys+shapes", "json header", "orjson header"):
            got = contenders[name]()
            assert got == expected, (scale, name, got, expected)
        med = measure(contenders, runs if scale != "s4" else max(3, runs // 3))
        ours = med["adapterscan.scan"]
        results["scales"][scale] = {
            "tensors": expected,
            "files": len(shard_paths(path)),
            "header_bytes": headers[scale],
            "median_ms": med,
        }
        for name, ms in med.items():
            rows.append({"scale": scale, "contender": name, "ms": ms, "ratio": ms / ours})
        print(
            f"{scale}: {expected} tensors; " + ", ".join(f"{k} {v:.2f} ms" for k, v in med.items()),
            flush=True,
        )

    # check s3 against its base header set, vs scan alone (same run, interleaved); and against a
    # base table read once and reused, as a loader checking many adapters on one base would. A
    # sample takes tens of milliseconds, so four times the runs: their median is then steady
    # against the machine's noise.
    base_table = adapterscan.read_base(data / "s3-base")
    results["check_runs"] = 4 * runs
    med = measure(
        {
            "scan s3": lambda: adapterscan.scan(scales["s3"]),
            "check s3 vs base": lambda: adapterscan.check(scales["s3"], data / "s3-base"),
            "check s3 vs base table": lambda: adapterscan.check(scales["s3"], base_table),
        },
        results["check_runs"],
    )
    report = adapterscan.check(scales["s3"], data / "s3-base")
    assert report.ok, report.to_dict()["problems"][:3]
    results["check_s3"] = med
    print(f"check: {med}", flush=True)

    # Data-size independence: the same header over 1 MiB and 100 GiB of data, 50 calls a sample
    # (a call is a fraction of a millisecond: single calls would measure the timer and the noise).
    med = measure(
        {
            "s1 header + 1 MiB data": lambda: adapterscan.scan(
                data / "s1-small", read_config=False
            ),
            "s1 header + 100 GiB data": lambda: adapterscan.scan(
                data / "s1-huge", read_config=False
            ),
        },
        max(runs, 25),
        batch=50,
    )
    results["data_size"] = med
    print(f"data size: {med}", flush=True)

    # Scaling and memory on s4.
    if "s4" in scales:
        s3, s4 = results["scales"]["s3"], results["scales"]["s4"]
        results["per_tensor_us"] = {
            "s3": s3["median_ms"]["adapterscan.scan"] * 1000 / s3["tensors"],
            "s4": s4["median_ms"]["adapterscan.scan"] * 1000 / s4["tensors"],
        }
        growth = peak_rss_growth(f"s = adapterscan.scan({str(scales['s4'])!r}); n = s.tensor_count")
        results["s4_peak_rss_growth"] = {
            "bytes": growth,
            "header_bytes": s4["header_bytes"],
            "ratio": growth / s4["header_bytes"],
        }
        print(f"s4 memory: {results['s4_peak_rss_growth']}", flush=True)

    # mlx-lm's load_adapters on a matching tiny model vs adapterscan's check of the same pair.
    try:
        results["tiny_check_vs_load"] = tiny_mlx(data / "tiny", runs)
        print(f"tiny: {results['tiny_check_vs_load']}", flush=True)
    except ImportError as e:
        print(f"tiny mlx comparison skipped: {e}")

    # Whole process: the CLI on s1 vs python -c with json. The package is byte-compiled first, as
    # pip does when it installs the wheel (an editable install, or PYTHONDONTWRITEBYTECODE, would
    # otherwise compile every module on every start, unlike the standard library it is compared to).
    compileall.compile_dir(str(Path(adapterscan.__file__).parent), quiet=1)
    s1_file = scales["s1"] / "adapters.safetensors"
    py_json = (
        "import json,struct,sys; f=open(sys.argv[1],'rb'); n=struct.unpack('<Q',f.read(8))[0]; "
        "h=json.loads(f.read(n)); print(len(h))"
    )
    script = Path(sys.executable).with_name("adapterscan")
    cli = [
        str(script) if script.exists() else "adapterscan",
        "inspect",
        "--json",
        str(scales["s1"]),
    ]
    results["whole_process_s1_ms"] = whole_process(
        {
            "adapterscan inspect --json": cli,
            "python -c json": [sys.executable, "-c", py_json, str(s1_file)],
        },
        runs,
    )
    print(f"whole process: {results['whole_process_s1_ms']}", flush=True)

    (out_dir / "results.json").write_text(json.dumps(results, indent=2))
    write_table(results, out_dir / "results.md")
    plot(results, out_dir / "results.png")
    print(f"wrote {out_dir}/results.md, results.json, results.png")
    if data_ctx is not None:
        data_ctx.cleanup()
    return 0


def tiny_mlx(folder: Path, runs: int) -> dict[str, float]:
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.tuner.utils import linear_to_lora_layers, load_adapters
    from mlx_lm.utils import _get_classes, save_config

    import adapterscan.mlx as am

    config = {
        "model_type": "llama",
        "hidden_size": 256,
        "num_hidden_layers": 8,
        "intermediate_size": 512,
        "num_attention_heads": 8,
        "rms_norm_eps": 1e-5,
        "vocab_size": 1000,
    }
    model_class, args_class = _get_classes(config=config)

    def build() -> Any:
        m = model_class(args_class.from_dict(config))
        mx.eval(m.parameters())
        return m

    model = build()
    params = {"rank": 8, "scale": 20.0, "dropout": 0.0}
    model.freeze()
    linear_to_lora_layers(model, 8, params)
    folder.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(
        str(folder / "adapters.safetensors"), dict(tree_flatten(model.trainable_parameters()))
    )
    save_config(
        {"fine_tune_type": "lora", "num_layers": 8, "lora_parameters": params},
        folder / "adapter_config.json",
    )
    bases = [build() for _ in range(runs + 1)]
    fresh = iter(bases)
    plain = build()
    return measure(
        {
            "adapterscan.mlx.check (live model)": lambda: am.check(plain, folder),
            "mlx-lm load_adapters": lambda: load_adapters(next(fresh), str(folder)),
        },
        runs,
    )


def write_table(results: dict[str, Any], path: Path) -> None:
    lines = [
        "| scale | tensors | files | header bytes | contender | median ms | x adapterscan |",
        "| --- | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    for scale, r in results["scales"].items():
        ours = r["median_ms"]["adapterscan.scan"]
        for name, ms in sorted(r["median_ms"].items(), key=lambda kv: kv[1]):
            lines.append(
                f"| {scale} | {r['tensors']:,} | {r['files']} | {r['header_bytes']:,} | {name} | "
                f"{ms:.2f} | {ms / ours:.2f} |"
            )
    c = results["check_s3"]
    lines += [
        "",
        f"check s3 vs its base: {c['check s3 vs base']:.1f} ms, scan alone {c['scan s3']:.1f} ms "
        f"(ratio {c['check s3 vs base'] / c['scan s3']:.2f}); vs a base table read once: "
        f"{c['check s3 vs base table']:.1f} ms (ratio {c['check s3 vs base table'] / c['scan s3']:.2f}); "
        f"{results['check_runs']} runs",
    ]
    d = results["data_size"]
    a, b = d["s1 header + 1 MiB data"], d["s1 header + 100 GiB data"]
    lines.append(
        f"same header, 1 MiB vs 100 GiB of data: {a:.3f} ms vs {b:.3f} ms ({(b / a - 1) * 100:+.1f} %)"
    )
    if "per_tensor_us" in results:
        p = results["per_tensor_us"]
        m = results["s4_peak_rss_growth"]
        lines.append(
            f"time per tensor: s3 {p['s3']:.3f} us, s4 {p['s4']:.3f} us (ratio {p['s4'] / p['s3']:.2f})"
        )
        lines.append(
            f"s4 peak RSS growth {m['bytes'] / 2**20:.0f} MiB for {m['header_bytes'] / 2**20:.0f} MiB of headers (x{m['ratio']:.2f})"
        )
    if "tiny_check_vs_load" in results:
        t = results["tiny_check_vs_load"]
        lines.append("tiny llama (8 layers): " + ", ".join(f"{k} {v:.2f} ms" for k, v in t.items()))
    w = results["whole_process_s1_ms"]
    lines.append(
        f"whole process on s1: adapterscan inspect --json {w['adapterscan inspect --json']:.1f} ms, "
        f"python -c json {w['python -c json']:.1f} ms "
        f"(ratio {w['adapterscan inspect --json'] / w['python -c json']:.2f})"
    )
    lines.append(
        f"\n{results['machine']}, Python {results['python']}, {results['runs']} runs, medians."
    )
    path.write_text("\n".join(lines) + "\n")


def plot(results: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    scales = list(results["scales"])
    names = sorted({n for r in results["scales"].values() for n in r["median_ms"]})
    fig, ax = plt.subplots(figsize=(10, 5))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        values = [results["scales"][s]["median_ms"].get(name, float("nan")) for s in scales]
        ax.bar([x + i * width for x in range(len(scales))], values, width, label=name)
    ax.set_yscale("log")
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(scales))])
    ax.set_xticklabels([f"{s}\n{results['scales'][s]['tensors']:,} tensors" for s in scales])
    ax.set_ylabel("median ms (log)")
    ax.set_title("Reading every tensor's name, dtype and shape")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    resource.setrlimit(
        resource.RLIMIT_NOFILE, (4096, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
    )
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
