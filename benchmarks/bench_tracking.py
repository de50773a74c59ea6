"""Load on the real tracking stack: concurrent clients logging runs' worth of metrics; nothing may be lost.

Usage (from the repository root):
    .venv/bin/python benchmarks/bench_tracking.py                    # starts a throwaway stack on free ports
    .venv/bin/python benchmarks/bench_tracking.py --clients 8 --runs 200 --keys 20 --steps 10

Each client process creates its share of the runs; a run logs --params params, then --keys metrics
with --steps history points each in log_batch calls, then ends FINISHED. Afterwards the figures are
printed: wall time, runs/s, metric points/s, per-run latency percentiles, and the counts read back
from PostgreSQL (runs, metric rows, params) against what was sent. Traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


def _client(tracking_uri: str, experiment_id: str, client_index: int, n_runs: int, keys: int, steps: int,
            params: int, results: mp.Queue) -> None:
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    client = MlflowClient(tracking_uri)
    latencies, failures = [], 0
    for run_index in range(n_runs):
        started = time.perf_counter()
        try:
            run = client.create_run(experiment_id, run_name=f"load-c{client_index}-r{run_index}",
                                    tags={"client": str(client_index)})
            run_id = run.info.run_id
            client.log_batch(run_id, params=[Param(f"param_{p}", str(p * client_index)) for p in range(params)])
            now = int(time.time() * 1000)
            points = [Metric(f"metric_{k}", float(k * step + run_index), now + step, step)
                      for k in range(keys) for step in range(steps)]
            for start in range(0, len(points), 1000):
                client.log_batch(run_id, metrics=points[start:start + 1000])
            client.set_terminated(run_id, "FINISHED")
            latencies.append(time.perf_counter() - started)
        except Exception as exc:  # noqa: BLE001 - counted and reported; the counts in Postgres tell the rest
            failures += 1
            print(f"client {client_index} run {run_index}: {type(exc).__name__}: {exc}", file=sys.stderr)
    results.put((latencies, failures))


def _counts(postgres_uri: str, experiment_id: str) -> dict[str, int]:
    import psycopg2

    with psycopg2.connect(postgres_uri) as connection, connection.cursor() as cursor:
        cursor.execute("select count(*) from runs where experiment_id = %s", (int(experiment_id),))
        runs = cursor.fetchone()[0]
        cursor.execute("select count(*) from runs where experiment_id = %s and status = 'FINISHED'", (int(experiment_id),))
        finished = cursor.fetchone()[0]
        cursor.execute("select count(*) from metrics m join runs r on m.run_uuid = r.run_uuid where r.experiment_id = %s",
                       (int(experiment_id),))
        metric_rows = cursor.fetchone()[0]
        cursor.execute("select count(*) from params p join runs r on p.run_uuid = r.run_uuid where r.experiment_id = %s",
                       (int(experiment_id),))
        param_rows = cursor.fetchone()[0]
    return {"runs": runs, "finished": finished, "metric_rows": metric_rows, "param_rows": param_rows}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--runs", type=int, default=200, help="runs in all, split across the clients")
    parser.add_argument("--keys", type=int, default=20, help="metric keys per run")
    parser.add_argument("--steps", type=int, default=10, help="history points per metric key")
    parser.add_argument("--params", type=int, default=10, help="params per run")
    parser.add_argument("--stack-dir", help="use (or start) the stack in this folder instead of a throwaway one")
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # 200 "View run" lines otherwise

    from mlflow import MlflowClient

    from portfolio_mlops.devstack import StackConfig, down, up

    root = Path(args.stack_dir) if args.stack_dir else Path(tempfile.mkdtemp(prefix="bench-tracking-"))
    root.chmod(0o755)  # PostgreSQL runs as its own user when we are root
    cfg = StackConfig(base_dir=root / "stack", postgres_port=0, s3_port=0, mlflow_port=0)
    started = time.perf_counter()
    state = up(cfg)
    print(f"stack up in {time.perf_counter() - started:.1f}s: {state.tracking_uri}")
    try:
        experiment_id = MlflowClient(state.tracking_uri).create_experiment(f"load-{int(time.time())}")
        share = [args.runs // args.clients + (1 if i < args.runs % args.clients else 0) for i in range(args.clients)]
        results: mp.Queue = mp.Queue()
        processes = [mp.Process(target=_client, args=(state.tracking_uri, experiment_id, i, n, args.keys, args.steps,
                                                      args.params, results)) for i, n in enumerate(share)]
        started = time.perf_counter()
        for process in processes:
            process.start()
        collected = [results.get() for _ in processes]
        for process in processes:
            process.join()
        wall = time.perf_counter() - started
        latencies = sorted(x for got, _ in collected for x in got)
        failures = sum(f for _, f in collected)
        counts = _counts(state.postgres_uri, experiment_id)
        expected_points = args.runs * args.keys * args.steps
        print(f"\n{args.clients} clients, {args.runs} runs x {args.keys} metrics x {args.steps} steps "
              f"= {expected_points:,} metric points, {args.runs * args.params:,} params")
        print(f"wall time            {wall:8.2f} s")
        print(f"throughput           {args.runs / wall:8.1f} runs/s   {expected_points / wall:,.0f} metric points/s")
        if latencies:
            p95 = latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))]
            print(f"per-run latency      p50 {statistics.median(latencies):.3f} s   p95 {p95:.3f} s   max {latencies[-1]:.3f} s")
        print(f"client failures      {failures}")
        print(f"in PostgreSQL        runs {counts['runs']}/{args.runs} (finished {counts['finished']}), "
              f"metric rows {counts['metric_rows']:,}/{expected_points:,}, params {counts['param_rows']:,}/{args.runs * args.params:,}")
        lost = (args.runs - counts["finished"]) + (expected_points - counts["metric_rows"])
        print(f"lost                 {lost}")
        return 0 if lost == 0 and failures == 0 else 1
    finally:
        down(cfg, purge=not args.stack_dir)


if __name__ == "__main__":
    sys.exit(main())
