"""Benchmark the core chain: ingest + validation, features, walk-forward per algorithm, whole chain, peak RSS.

Usage (from the repository root):
    .venv/bin/python benchmarks/bench_core.py --synthetic              # 500 tickers x 3800 days, cached in .bench/
    .venv/bin/python benchmarks/bench_core.py --data /path/to/folder-or-file [--repeat 3] [--json out.json]
    .venv/bin/python benchmarks/bench_core.py --synthetic --profile over   # cProfile every step over its target
    .venv/bin/python benchmarks/bench_core.py --synthetic --repeat 3 --only ingest,features   # the data steps only

Figures are wall-clock seconds (best and median of --repeat runs; the status compares the median with the
target; "x floor" is the median over pyarrow's own read of the raw CSV, the floor for ingest). The whole chain is also run in a fresh Python process (once per --repeat), whose peak RSS
(getrusage ru_maxrss) is the memory figure. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import os
import platform
import pstats
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent
SYNTHETIC_SCRIPT = Path(__file__).resolve().parent / "make_synthetic_panel.py"
DEFAULT_ALGORITHMS = ("ridge", "lasso", "elasticnet", "hgb")
LINEAR = ("ridge", "lasso", "elasticnet")

TARGETS = {  # seconds, or bytes for memory (issue 14)
    "ingest": 1.0,
    "features": 1.0,
    "walk_forward_linear": 5.0,
    "walk_forward_hgb": 8.0,
    "chain": 15.0,
    "peak_rss": 1.5 * 1024**3,
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Figure:
    name: str
    unit: str  # "s" or "bytes"
    values: list[float]
    target: float | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def best(self) -> float:
        return min(self.values)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def status(self) -> str:
        """Judged on the median (not the best) run, as a share of the target."""
        if self.target is None:
            return "-"
        share = self.median / self.target
        return f"ok {share:.0%}" if share <= 1 else f"OVER {share:.0%}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "best": self.best, "median": self.median, "status": self.status}


def timed(fn: Callable[[], Any], repeat: int, label: str) -> tuple[Any, list[float]]:
    """Run fn `repeat` times; returns the last result and every wall time."""
    times, result = [], None
    for i in range(repeat):
        result = None  # release the previous result before the next run
        gc.collect()
        log(f"  {label}: run {i + 1}/{repeat} ...")
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return result, times


def raw_csv_of(path: Path) -> Path | None:
    """The raw stocks CSV a layout reads (for the pyarrow read_csv reference figure)."""
    if path.is_dir():
        for stem in ("sp500_stocks", "all_stocks_5yr"):
            for candidate in (path / f"{stem}.csv", path / f"{stem}.csv.gz"):
                if candidate.is_file():
                    return candidate
        return None
    name = path.name.lower()
    return path if name.endswith(".csv") or name.endswith(".csv.gz") else None


def profile_step(label: str, fn: Callable[[], Any], top: int = 18) -> dict[str, Any]:
    """cProfile one call of fn; print where the time goes (own time, and cumulative time in this package)."""
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    fn()
    profiler.disable()
    wall = time.perf_counter() - started
    stats = pstats.Stats(profiler, stream=io.StringIO())
    rows = []
    for (filename, line, func), (cc, nc, tottime, cumtime, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        where = filename
        for marker in ("site-packages/", "src/", "lib/python3"):
            if marker in filename:
                where = filename.split(marker, 1)[1]
                break
        rows.append({"function": f"{where}:{line}({func})", "calls": nc, "own_s": tottime, "cum_s": cumtime,
                     "package": "portfolio_mlops/" in filename})
    by_own = sorted(rows, key=lambda r: -r["own_s"])[:top]
    by_cum = sorted((r for r in rows if r["package"]), key=lambda r: -r["cum_s"])[:top]
    print(f"\n--- profile: {label} ({wall:.2f}s under cProfile) ---")
    print(f"{'own s':>8} {'cum s':>8} {'calls':>9}  function (top {top} by own time)")
    for r in by_own:
        print(f"{r['own_s']:8.3f} {r['cum_s']:8.3f} {r['calls']:9d}  {r['function']}")
    print(f"{'own s':>8} {'cum s':>8} {'calls':>9}  portfolio_mlops function (top {top} by cumulative time)")
    for r in by_cum:
        print(f"{r['own_s']:8.3f} {r['cum_s']:8.3f} {r['calls']:9d}  {r['function']}")
    return {"label": label, "wall_s": wall, "by_own_time": by_own, "package_by_cumulative": by_cum}


def make_config(args: argparse.Namespace, data: str):
    from portfolio_mlops.config import TrackingConfig, load_config

    overrides: dict[str, Any] = {"data": data}
    if "enabled" in TrackingConfig.model_fields:  # compute only; older checkouts never tracked in run_chain
        overrides["tracking.enabled"] = False
    if args.threads is not None:
        overrides["threads"] = args.threads  # RunConfig.threads: OpenMP/BLAS threads per model fit
    if args.seeds is not None:
        overrides["evaluation.seeds"] = args.seeds  # K fits of a seeded model (hgb) in the chain
    cfg = load_config(args.config, overrides=overrides)
    return cfg.with_algorithms(list(args.algorithms))


def walk_forward_kwargs(cfg) -> dict[str, Any]:
    """Pass the config's thread limit the way runner.train_all does (if this version of the package has it)."""
    import inspect

    from portfolio_mlops.walk_forward import walk_forward_predictions

    if hasattr(cfg, "threads") and "threads" in inspect.signature(walk_forward_predictions).parameters:
        return {"threads": cfg.threads}
    return {}


def vm_hwm_bytes() -> int | None:
    """Peak RSS of this process's own address space (VmHWM), a cross-check of ru_maxrss on Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


# --- the child process: the whole chain in a fresh interpreter, for a meaningful peak RSS ---------------

def child_main(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    from portfolio_mlops.runner import run_chain

    imported = time.perf_counter()
    cfg = make_config(args, args.data)
    with tempfile.TemporaryDirectory(prefix="bench-chain-") as out:
        result = run_chain(cfg, out)
    finished = time.perf_counter()
    record = {
        "import_s": imported - started,
        "chain_s": finished - imported,
        "timings": result.timings,
        "ru_maxrss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,  # Linux reports KiB
        "vm_hwm_bytes": vm_hwm_bytes(),
    }
    Path(args.child_chain).write_text(json.dumps(record))
    return 0


def run_chain_subprocess(args: argparse.Namespace, data: str) -> tuple[dict[str, Any], float]:
    with tempfile.TemporaryDirectory(prefix="bench-child-") as tmp:
        record_path = Path(tmp) / "record.json"
        command = [sys.executable, str(Path(__file__).resolve()), "--data", data, "--algorithms",
                   ",".join(args.algorithms), "--child-chain", str(record_path)]
        if args.config:
            command += ["--config", str(args.config)]
        if args.threads is not None:
            command += ["--threads", str(args.threads)]
        command += ["--seeds", str(args.seeds)]
        started = time.perf_counter()
        completed = subprocess.run(command, capture_output=True, text=True)
        wall = time.perf_counter() - started
        if completed.returncode != 0:
            raise RuntimeError(f"chain subprocess failed ({completed.returncode}):\n{completed.stderr[-4000:]}")
        return json.loads(record_path.read_text()), wall


# --- the benchmark -----------------------------------------------------------------------------------

def resolve_data(args: argparse.Namespace) -> Path | None:
    if args.synthetic:
        output = REPO / ".bench" / "synthetic"
        command = [sys.executable, str(SYNTHETIC_SCRIPT), "--output", str(output), "--tickers", str(args.tickers),
                   "--days", str(args.days), "--seed", str(args.seed)]
        log(f"synthetic panel: {' '.join(command[1:])}")
        completed = subprocess.run(command, capture_output=True, text=True)
        if completed.returncode != 0:
            raise SystemExit(f"synthetic panel generation failed:\n{completed.stderr}")
        log("  " + completed.stdout.strip())
        return output
    path = Path(args.data)
    if not path.exists():
        return None
    return path.resolve()


def fmt_value(value: float, unit: str) -> str:
    if unit == "bytes":
        return f"{value / 1024**3:.2f} GB"
    return f"{value:.2f} s"


def fmt_target(figure: Figure) -> str:
    if figure.target is None:
        return "-"
    return "< " + (f"{figure.target / 1024**3:g} GB" if figure.unit == "bytes" else f"{figure.target:g} s")


def print_table(figures: list[Figure], repeat: int) -> None:
    floor = next((f.median for f in figures if f.name.startswith("pyarrow read_csv")), None)
    head = f"{'figure':<34}{'best':>10}{'median':>10}{'target':>10}  {'status':<10}{'x floor':>8}  note"
    print(head)
    print("-" * max(len(head), 118))
    for f in figures:
        median = fmt_value(f.median, f.unit) if repeat > 1 and f.unit == "s" and len(f.values) > 1 else ""
        ratio = f"{f.median / floor:.1f}x" if floor and f.unit == "s" else ""
        print(f"{f.name:<34}{fmt_value(f.best, f.unit):>10}{median:>10}{fmt_target(f):>10}  {f.status:<10}{ratio:>8}  {f.note}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark ingest, features, walk-forward and the whole chain.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="data folder or file in any supported layout")
    source.add_argument("--synthetic", action="store_true", help="generate (cached) a synthetic panel in .bench/synthetic")
    parser.add_argument("--tickers", type=int, default=500, help="synthetic: tickers (default 500)")
    parser.add_argument("--days", type=int, default=3800, help="synthetic: business days (default 3800)")
    parser.add_argument("--seed", type=int, default=0, help="synthetic: seed")
    parser.add_argument("--repeat", type=int, default=1, help="timed runs per step (best and median reported)")
    parser.add_argument("--algorithms", default=",".join(DEFAULT_ALGORITHMS),
                        type=lambda s: tuple(a.strip() for a in s.replace(" ", ",").split(",") if a.strip()),
                        help="comma-separated, default ridge,lasso,elasticnet,hgb")
    parser.add_argument("--config", type=Path, help="YAML run config (default: the package defaults)")
    parser.add_argument("--threads", type=int, help="override RunConfig.threads (OpenMP/BLAS threads per fit)")
    parser.add_argument("--seeds", type=int, default=1,
                        help="evaluation.seeds for the chain: fits of a seeded model (hgb). Default 1: one fit per "
                             "algorithm, the chain issue 14's 15 s target is about; 3 = the run's default (hgb x3)")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    parser.add_argument("--profile", choices=("off", "over", "all"), default="off",
                        help="cProfile steps over target (over) or every step (all) and print where the time goes")
    parser.add_argument("--no-subprocess", action="store_true", help="skip the fresh-process chain run (and peak RSS)")
    parser.add_argument("--only", type=lambda s: {p.strip() for p in s.split(",") if p.strip()},
                        help="comma-separated steps to run: ingest, features, walk-forward, chain (default: all)")
    parser.add_argument("--child-chain", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    unknown = [a for a in args.algorithms if a not in DEFAULT_ALGORITHMS]
    if unknown:
        parser.error(f"unknown algorithm(s) {unknown}; choose from {list(DEFAULT_ALGORITHMS)}")
    if args.child_chain:
        return child_main(args)

    data_path = resolve_data(args)
    if data_path is None:
        print(f"SKIPPED: {args.data} does not exist; nothing to benchmark.")
        return 0
    data = str(data_path)

    # The fresh-process chain runs first, while this process is still small: on Linux a child's ru_maxrss
    # starts from its parent's peak at fork time, so forking after loading the panel would inflate it.
    fresh_walls: list[float] = []
    fresh_records: list[dict[str, Any]] = []
    steps = args.only or {"ingest", "features", "walk-forward", "chain"}
    unknown_steps = steps - {"ingest", "features", "walk-forward", "chain"}
    if unknown_steps:
        parser.error(f"--only: unknown step(s) {sorted(unknown_steps)}; choose from ingest, features, walk-forward, chain")
    if not args.no_subprocess and "chain" in steps:
        log("whole chain in a fresh process (wall time, peak RSS)")
        for i in range(args.repeat):
            log(f"  subprocess chain: run {i + 1}/{args.repeat} ...")
            record, wall = run_chain_subprocess(args, data)
            fresh_walls.append(wall)
            fresh_records.append(record)

    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import sklearn

    from portfolio_mlops.data.ingest import build_panel
    from portfolio_mlops.features import build_features
    from portfolio_mlops.runner import run_chain, summary_table
    from portfolio_mlops.walk_forward import walk_forward_predictions

    cfg = make_config(args, data)
    wf = cfg.walk_forward
    environment = {
        "python": platform.python_version(), "numpy": np.__version__, "pandas": pd.__version__,
        "pyarrow": pa.__version__, "scikit-learn": sklearn.__version__, "cpus": os.cpu_count(),
        "machine": platform.machine(),
    }
    print(f"data: {data}")
    print("env:  " + ", ".join(f"{k} {v}" for k, v in environment.items()))
    print(f"config: rebalance every {wf.rebalance_every_days} days, refit every {wf.retrain_every_rebalances} "
          f"rebalances, {wf.window} window, algorithms {','.join(args.algorithms)}, "
          f"threads per fit {getattr(cfg, 'threads', 'n/a')}; repeat {args.repeat}")

    figures: list[Figure] = []
    profiles: list[dict[str, Any]] = []
    to_profile: list[tuple[Figure, Callable[[], Any]]] = []

    # (a) raw CSV read (reference) and ingest + validation
    raw_csv = raw_csv_of(data_path)
    if raw_csv is not None:
        log("raw CSV read (pyarrow reference)")
        table, times = timed(lambda: pacsv.read_csv(raw_csv), args.repeat, "pyarrow.csv.read_csv")
        figures.append(Figure("pyarrow read_csv raw (reference)", "s", times,
                              note=f"{raw_csv.name}: {table.num_rows:,} rows, {raw_csv.stat().st_size / 1e6:.0f} MB on disk"))
        del table
    log("ingest + validation (build_panel)")
    ingest_fn = lambda: build_panel(cfg.data, cfg.validation)  # noqa: E731
    (panel, report), times = timed(ingest_fn, args.repeat if "ingest" in steps else 1, "build_panel")
    figures.append(Figure("ingest + validation (build_panel)", "s", times, TARGETS["ingest"],
                          note=f"{report.rows_in:,} rows in -> {report.rows_out:,}, {report.tickers_out} tickers, "
                               f"{report.start}..{report.end}"))
    if "ingest" in steps:
        to_profile.append((figures[-1], ingest_fn))
    else:
        figures.pop()  # read once for the later steps, not a figure

    # (b) features
    log("features (build_features)")
    features_fn = lambda: build_features(panel.prices, cfg.features, cfg.labels)  # noqa: E731
    features, times = timed(features_fn, args.repeat if "features" in steps else 1, "build_features")
    figures.append(Figure("features (build_features)", "s", times, TARGETS["features"],
                          note=f"{len(features.frame):,} samples x {len(features.feature_names)} features, "
                               f"{len(features.dates)} days"))
    if "features" in steps:
        to_profile.append((figures[-1], features_fn))
    else:
        figures.pop()

    # (c) walk-forward per algorithm
    for spec in (cfg.models if "walk-forward" in steps else []):
        log(f"walk-forward {spec.name}")
        fn = (lambda s=spec: walk_forward_predictions(features, s, cfg.walk_forward, cfg.labels, seed=cfg.seed,
                                                      **walk_forward_kwargs(cfg)))
        result, times = timed(fn, args.repeat, f"walk_forward {spec.name}")
        rebalances = int(result.predictions["date_pos"].nunique())
        train_max = max((r["train_samples"] for r in result.refits), default=0)
        fit_s = sum(r["seconds"] for r in result.refits)
        figures.append(Figure(f"walk-forward {spec.name}", "s", times,
                              TARGETS["walk_forward_linear"] if spec.name in LINEAR else TARGETS.get(f"walk_forward_{spec.name}"),
                              note=f"{len(result.refits)} refits / {rebalances} rebalances, fits {fit_s:.2f}s, "
                                   f"largest train set {train_max:,}",
                              extra={"refits": len(result.refits), "rebalances": rebalances, "fit_seconds": fit_s}))
        to_profile.append((figures[-1], fn))
        del result

    # (d) the whole chain in this process (warm imports), into a temporary folder
    if "chain" in steps:
        log("whole chain in-process (run_chain)")

    def chain_fn():
        with tempfile.TemporaryDirectory(prefix="bench-chain-") as out:
            return run_chain(cfg, out)

    chain_target = TARGETS["chain"] if tuple(args.algorithms) == DEFAULT_ALGORITHMS else None
    summary_text = "(chain not run: --only)"
    if "chain" in steps:
        chain, times = timed(chain_fn, args.repeat, "run_chain")
        breakdown = ", ".join(f"{k} {v:.1f}" for k, v in chain.timings.items())
        figures.append(Figure(f"chain in-process ({len(cfg.models)} algos, seeds {args.seeds})", "s", times, chain_target,
                              note=f"{breakdown}", extra={"timings": chain.timings}))
        to_profile.append((figures[-1], chain_fn))
        summary_text = summary_table(chain.summary)

    # (e) the whole chain in a fresh process: wall time and peak RSS (run first, see fresh_process_chain)
    if fresh_walls:
        child = fresh_records[-1]
        figures.append(Figure(f"chain fresh process ({len(cfg.models)} algos, seeds {args.seeds})", "s", fresh_walls, chain_target,
                              note=f"interpreter+imports {child['import_s']:.1f}, chain {child['chain_s']:.1f} "
                                   f"({', '.join(f'{k} {v:.1f}' for k, v in child['timings'].items())})",
                              extra={"records": fresh_records}))
        hwm = [r["vm_hwm_bytes"] for r in fresh_records if r.get("vm_hwm_bytes")]
        figures.append(Figure("peak RSS fresh process (chain)", "bytes", [max(r["ru_maxrss_bytes"] for r in fresh_records)],
                              TARGETS["peak_rss"], note="ru_maxrss of the child running the whole chain"
                              + (f" (VmHWM {max(hwm) / 1024**3:.2f} GB)" if hwm else "")))
    own_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    figures.append(Figure("peak RSS this bench process", "bytes", [own_rss],
                          note="reference only: holds panel, features and repeated results at once"))

    print()
    print_table(figures, args.repeat)
    print()
    print("Headline metrics of the chain run (runner.summary_table):")
    print(summary_text)

    if args.profile != "off":
        for figure, fn in to_profile:
            if args.profile == "all" or (figure.target is not None and figure.median > figure.target):
                gc.collect()
                profiles.append(profile_step(figure.name, fn))
        if args.profile == "over" and not profiles:
            print("\n(no step over target: nothing profiled)")

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "data": data, "environment": environment, "algorithms": list(args.algorithms), "repeat": args.repeat,
            "targets": TARGETS, "figures": [f.to_dict() for f in figures], "summary_table": summary_text,
            "profiles": profiles,
        }, indent=2, default=str) + "\n")
        print(f"\nfigures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
