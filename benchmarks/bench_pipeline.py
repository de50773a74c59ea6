"""Wall time of `portfolio-mlops run` through kfp.local vs in-process, and kfp.local's own cost per task.

Usage (from the repository root):
    .venv/bin/python benchmarks/bench_pipeline.py                       # embedded default data
    .venv/bin/python benchmarks/bench_pipeline.py --data ../shared/data/all_stocks_5yr.csv.gz --top-n 50

Each engine runs as the CLI would, in a fresh process, from a fresh folder with MLflow's embedded
store (tracking and promotion included). The per-task cost is measured on a pipeline of no-op
components of the same shape (1 + 1 + 1 + N parallel + 1 tasks), so it is kfp.local's orchestration,
process start and artifact handling without our work.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-c", "from pipelines.cli import main; import sys; sys.exit(main())"]


def timed_run(engine: str, extra: list[str]) -> float:
    with tempfile.TemporaryDirectory(prefix=f"bench-{engine}-") as folder:
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        started = time.perf_counter()
        subprocess.run([*CLI, "run", "--engine", engine, "--output", "out", "--quiet", *extra], cwd=folder, env=env,
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return time.perf_counter() - started


NOOP_PIPELINE = '''
import sys, time
from typing import List
import kfp.local
from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

@dsl.component(base_image="python:3.11")
def step(data: Output[Dataset]):
    open(data.path, "w").write("x")

@dsl.component(base_image="python:3.11")
def consume(data: Input[Dataset], out: Output[Dataset]):
    open(out.path, "w").write(open(data.path).read())

@dsl.component(base_image="python:3.11")
def fan(data: Input[Dataset], name: str, model: Output[Model]):
    open(model.path, "w").write(name)

@dsl.component(base_image="python:3.11")
def gather(data: Input[Dataset], models: Input[List[Model]]):
    print(len(models))

@dsl.pipeline
def shape(names: list):
    a = step()
    b = consume(data=a.outputs["data"])
    c = consume(data=b.outputs["out"])
    with dsl.ParallelFor(names) as name:
        f = fan(data=c.outputs["out"], name=name)
    gather(data=c.outputs["out"], models=dsl.Collected(f.outputs["model"]))

kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False), pipeline_root=sys.argv[1])
started = time.perf_counter()
shape(names=[str(i) for i in range(int(sys.argv[2]))])
print(time.perf_counter() - started)
'''


def noop_seconds(n_parallel: int) -> float:
    with tempfile.TemporaryDirectory(prefix="bench-noop-") as folder:
        script = Path(folder) / "noop.py"
        script.write_text(NOOP_PIPELINE)
        env = {**os.environ, "TMPDIR": folder}
        done = subprocess.run([sys.executable, str(script), str(Path(folder) / "root"), str(n_parallel)], cwd=folder,
                              env=env, check=True, capture_output=True, text=True)
        return float(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="data path (default: the embedded data)")
    parser.add_argument("--top-n", type=int)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    extra = (["--data", str(Path(args.data).resolve())] if args.data else []) + (["--top-n", str(args.top_n)] if args.top_n else [])
    if args.data and not Path(args.data).exists():
        print(f"SKIPPED: {args.data} does not exist")
        return 0
    n_algorithms = 4
    n_tasks = 4 + n_algorithms  # configure, ingest, features, train x4, promote
    rows = []
    for engine in ("inprocess", "kfp"):
        times = [timed_run(engine, extra) for _ in range(args.repeat)]
        rows.append((engine, min(times)))
    noop = min(noop_seconds(n_algorithms) for _ in range(args.repeat))
    inprocess, kfp_time = rows[0][1], rows[1][1]
    print(f"data: {args.data or 'embedded default'}; 4 algorithms; MLflow embedded store; best of {args.repeat}")
    print(f"{'run --engine inprocess':<34}{inprocess:8.1f} s")
    print(f"{'run (kfp.local, default engine)':<34}{kfp_time:8.1f} s   ({kfp_time / inprocess:.2f}x)")
    print(f"{'difference per task':<34}{(kfp_time - inprocess) / n_tasks:8.2f} s   ({n_tasks} tasks; 2 run at a time)")
    print(f"{'no-op pipeline of the same shape':<34}{noop:8.2f} s   = {noop / n_tasks:.2f} s per task of kfp.local's own cost")
    return 0


if __name__ == "__main__":
    sys.exit(main())
