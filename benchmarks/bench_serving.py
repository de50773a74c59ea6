"""Latency of `/invocations` on the prices-to-portfolio champion: raw OHLCV rows in, the portfolio out.

Usage (from the repository root):
    .venv/bin/python benchmarks/bench_serving.py                        # 500 tickers x 300 days, 30 requests
    .venv/bin/python benchmarks/bench_serving.py --tickers 500 --days 300 --requests 50
    .venv/bin/python benchmarks/bench_serving.py --url http://127.0.0.1:8080   # a server already running
    .venv/bin/python benchmarks/bench_serving.py --formats json                # JSON only (default: json,csv)

Everything is throwaway and local: an embedded sqlite MLflow store in a temp folder, a ridge model
trained by the real chain on a small synthetic panel (60 tickers x 800 days, see
make_synthetic_panel.simulate) and promoted to champion with a permissive policy, then
`portfolio-mlops serve` (portfolio_mlops.serving: MLflow's own scoring server behind the alias
follower) in-process under uvicorn on a free 127.0.0.1 port. With --url, none of that: the requests go
to a server already running (the serving image, say), whatever champion it serves.

The request is a fresh synthetic panel (--tickers x --days, all columns), sent in each of MLflow's
scoring formats asked for: dataframe_split JSON (application/json) and CSV (text/csv; the scoring
server reads it with pandas.read_csv and the signature's column types). Printed: request sizes,
p50/p95/max of the HTTP round trip per format, and (in-process only) of `model.predict` on the same
rows (no HTTP, no parsing), so the share of the scoring protocol is visible.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_synthetic_panel import simulate  # noqa: E402

MODEL_NAME = "bench-serving-ranker"


def long_prices(n_tickers: int, n_days: int, seed: int) -> pd.DataFrame:
    """Canonical long rows (date as ISO text, as a client sends them) from make_synthetic_panel.simulate."""
    sim = simulate(n_tickers, n_days, seed)
    day, ticker = np.meshgrid(np.arange(n_days), np.arange(n_tickers), indexing="ij")
    listed = day >= sim["start"][None, :]
    frame = pd.DataFrame({
        "date": sim["dates"].strftime("%Y-%m-%d").to_numpy()[day[listed]],
        "ticker": sim["symbols"][ticker[listed]],
        **{column: sim[key][listed] for column, key in (("open", "open"), ("high", "high"), ("low", "low"),
                                                       ("close", "close"), ("adj_close", "adj"), ("volume", "volume"))},
    })
    return frame


def train_champion(folder: Path) -> str:
    from portfolio_mlops import runner
    from portfolio_mlops.config import (BenchmarkConfig, ModelSpec, PromotionPolicy, RunConfig, TrackingConfig,
                                       WalkForwardConfig)

    (folder / "train").mkdir()
    long_prices(60, 800, seed=0).to_parquet(folder / "train" / "prices.parquet", index=False)
    cfg = RunConfig(data=str(folder / "train"), walk_forward=WalkForwardConfig(min_train_days=252),
                    benchmarks=BenchmarkConfig(random_seeds=1, factors=[]), models=[ModelSpec(algorithm="ridge")],
                    tracking=TrackingConfig(experiment="bench-serving", registered_model=MODEL_NAME),
                    promotion=PromotionPolicy(min_ic_tstat=-1e9, min_excess_vs_equal_weight=-1e9))
    chain = runner.run_chain(cfg, folder / "report")  # tracked and promoted: cfg.tracking is on by default
    if not chain.decision.promoted:
        raise SystemExit(f"no champion: {chain.decision.summary_line()}")
    return chain.tracked.model_versions["ridge"]


def start_server(download_dir: Path):
    import uvicorn

    from portfolio_mlops.serving import AliasFollower, ServeSettings, ServingApp

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = ServeSettings(model_uri=f"models:/{MODEL_NAME}@champion", port=port, poll_seconds=5,
                             tracking_uri=os.environ["MLFLOW_TRACKING_URI"], download_dir=download_dir)
    server = uvicorn.Server(uvicorn.Config(ServingApp(AliasFollower(settings)), host="127.0.0.1", port=port,
                                           lifespan="on", log_config=None, access_log=False))
    threading.Thread(target=server.run, daemon=True).start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{base}/ping", timeout=5) as response:
                if response.status == 200:
                    return server, base
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit("the server did not load the champion within 120 s")


def percentiles(seconds: list[float]) -> str:
    ms = sorted(s * 1000 for s in seconds)
    p95 = ms[min(len(ms) - 1, int(round(0.95 * (len(ms) - 1))))]
    return f"p50 {statistics.median(ms):7.1f} ms   p95 {p95:7.1f} ms   max {ms[-1]:7.1f} ms   (n={len(ms)})"


CONTENT_TYPES = {"json": "application/json", "csv": "text/csv"}


def request_bodies(rows: pd.DataFrame, formats: list[str]) -> dict[str, bytes]:
    """The same rows in each scoring format MLflow's server reads."""
    encoders = {"json": lambda: json.dumps({"dataframe_split": rows.to_dict(orient="split", index=False)}).encode(),
                "csv": lambda: rows.to_csv(index=False).encode()}
    return {name: encoders[name]() for name in formats}


def time_requests(base: str, body: bytes, content_type: str, requests: int, warmup: int = 3):
    """POST `body` warmup + requests times; (round-trip seconds of the timed ones, last answer, X-Model-Version)."""
    timings, answer, served = [], None, None
    for i in range(requests + warmup):
        request = urllib.request.Request(f"{base}/invocations", data=body, headers={"Content-Type": content_type})
        sent = time.perf_counter()
        with urllib.request.urlopen(request, timeout=120) as response:
            answer = json.loads(response.read())
            served = response.headers["X-Model-Version"]
        if i >= warmup:
            timings.append(time.perf_counter() - sent)
    return timings, answer, served


def bench_http(base: str, rows: pd.DataFrame, formats: list[str], requests: int, where: str) -> None:
    bodies = request_bodies(rows, formats)
    print(f"request: {rows['ticker'].nunique()} tickers x {rows['date'].nunique()} days = {len(rows):,} rows, "
          + ", ".join(f"{len(body) / 1e6:.1f} MB {name.upper()}" for name, body in bodies.items()))
    for name, body in bodies.items():
        timings, answer, served = time_requests(base, body, CONTENT_TYPES[name], requests)
        portfolio = pd.DataFrame(answer["predictions"])
        print(f"answer ({name}): v{served}, {len(portfolio)} tickers scored, {int(portfolio['selected'].sum())} held, "
              f"decision at {portfolio['date'].iloc[0]}")
        print(f"/invocations {name.upper():4} ({where})   {percentiles(timings)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickers", type=int, default=500)
    parser.add_argument("--days", type=int, default=300)
    parser.add_argument("--requests", type=int, default=30, help="timed requests per format (after 3 warm-up requests)")
    parser.add_argument("--formats", default="json,csv", help="comma-separated: json (dataframe_split), csv")
    parser.add_argument("--url", help="measure this running server (e.g. http://127.0.0.1:8080) instead of "
                                      "training and serving a throwaway champion in-process")
    args = parser.parse_args(argv)
    formats = [name.strip() for name in args.formats.split(",") if name.strip()]
    unknown = sorted(set(formats) - set(CONTENT_TYPES))
    if unknown or not formats:
        parser.error(f"--formats: expected a comma-separated subset of {sorted(CONTENT_TYPES)}, got {args.formats!r}")

    rows = long_prices(args.tickers, args.days, seed=1)
    if args.url:
        bench_http(args.url.rstrip("/"), rows, formats, args.requests, f"HTTP, {args.url}")
        return 0

    with tempfile.TemporaryDirectory(prefix="bench-serving-") as scratch:
        folder = Path(scratch)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder}/mlflow.db"
        os.chdir(folder)  # the embedded store's mlruns/ lands here
        started = time.perf_counter()
        version = train_champion(folder)
        print(f"champion {MODEL_NAME} v{version} trained and registered in {time.perf_counter() - started:.1f}s")

        server, base = start_server(folder / "downloads")
        bench_http(base, rows, formats, args.requests, "HTTP, in-process uvicorn")

        import mlflow

        model = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}@champion")
        direct = []
        for i in range(min(args.requests, 10) + 1):
            sent = time.perf_counter()
            model.predict(rows)
            if i:
                direct.append(time.perf_counter() - sent)
        print(f"model.predict (same rows, no HTTP)        {percentiles(direct)}")
        server.should_exit = True
    return 0

if __name__ == "__main__":
    sys.exit(main())
