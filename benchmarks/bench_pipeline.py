"""Wall and CPU time of `portfolio-mlops run` through kfp.local vs in-process, and kfp.local's own cost per task.

Usage (from the repository root):
    .venv/bin/python benchmarks/bench_pipeline.py --repeat 3            # embedded default data
    .venv/bin/python benchmarks/bench_pipeline.py --data ../shared/data/all_stocks_5yr.csv.gz --top-n 50

Each engine runs as the CLI would, in a fresh process, from a fresh folder with MLflow's embedded
store (tracking and promotion included); the figures are medians over --repeat runs, and the kfp.local
run is shown as a ratio of the in-process run beside the target (KFP_TARGET_RATIO). The per-task cost
is measured on a pipeline of no-op components of the same shape (1 + 1 + 1 + N parallel + 1 tasks), so
it is kfp.local's orchestration, process start and artifact handling without our work. Like ours, they
are built with install_kfp_package=False: with kfp's default every task first runs `pip install kfp`
(~0.4 s even when it is installed), which our steps never do. "imports per
step" is what a fresh step process spends loading the executor, the component and the modules its body
imports before it does any work (tests/step_imports.py, the probe the per-step import tests use): what
kfp's own launch pays at every step, and what the run's step server (pipelines/step_server.py) pays once.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
KFP_TARGET_RATIO = 1.3  # issue 14: a kfp.local run takes at most 1.3x the in-process run
CLI = [sys.executable, "-c", "from portfolio_mlops_kfp.pipelines.cli import main; import sys; sys.exit(main())"]


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # every waited-for descendant: the CLI and its steps
    return usage.ru_utime + usage.ru_stime


PRELOADED = re.compile(r"step server: preloaded \d+ modules in ([\d.]+) s")


def timed_run(engine: str, extra: list[str]) -> tuple[float, float, float | None]:
    """(wall seconds, CPU seconds of the whole process tree, the step server's preload seconds) of one run."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{engine}-") as folder:
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        cpu, started = children_cpu(), time.perf_counter()
        subprocess.run([*CLI, "run", "--engine", engine, "--output", "out", "--quiet", *extra], cwd=folder, env=env,
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall, cpu = time.perf_counter() - started, children_cpu() - cpu
        log = Path(folder) / "out" / "pipeline.log"
        preloaded = PRELOADED.search(log.read_text(errors="replace")) if log.exists() else None
        return wall, cpu, float(preloaded[1]) if preloaded else None


NOOP_PIPELINE = '''
import sys, time
from typing import List
import kfp.local
from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

@dsl.component(base_image="python:3.11", install_kfp_package=False)
def step(data: Output[Dataset]):
    open(data.path, "w").write("x")

@dsl.component(base_image="python:3.11", install_kfp_package=False)
def consume(data: Input[Dataset], out: Output[Dataset]):
    open(out.path, "w").write(open(data.path).read())

@dsl.component(base_image="python:3.11", install_kfp_package=False)
def fan(data: Input[Dataset], name: str, model: Output[Model]):
    open(model.path, "w").write(name)

@dsl.component(base_image="python:3.11", install_kfp_package=False)
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


def import_seconds(repeat: int) -> dict[str, tuple[float, float]]:
    """Median (wall, CPU) seconds each step's fresh process spends on imports before its work starts."""
    sys.path.append(str(REPO))  # appended: a PYTHONPATH checkout (another version) keeps precedence
    from tests.step_imports import STEPS, probe

    figures = {}
    for step in STEPS:
        runs = [probe(step) for _ in range(repeat)]
        figures[step] = (statistics.median(r["seconds"] for r in runs), statistics.median(r["cpu"] for r in runs))
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="data path (default: the embedded data)")
    parser.add_argument("--top-n", type=int)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--config", type=Path, help="a run configuration YAML for both engines (e.g. evaluation: {seeds: 1})")
    args = parser.parse_args()
    extra = (["--data", str(Path(args.data).resolve())] if args.data else []) + (["--top-n", str(args.top_n)] if args.top_n else [])
    extra += ["--config", str(args.config.resolve())] if args.config else []
    if args.data and not Path(args.data).exists():
        print(f"SKIPPED: {args.data} does not exist")
        return 0
    n_algorithms = 4
    n_tasks = 4 + n_algorithms  # configure, ingest, features, train x4, promote
    runs: dict[str, list[tuple[float, float, float | None]]] = {"inprocess": [], "kfp": []}
    for _ in range(args.repeat):  # interleaved, so a busy spell on the machine hits both engines alike
        for engine in runs:
            runs[engine].append(timed_run(engine, extra))
    noop = statistics.median(noop_seconds(n_algorithms) for _ in range(args.repeat))
    imports = import_seconds(args.repeat)
    wall = {engine: statistics.median(w for w, _, _ in done) for engine, done in runs.items()}
    cpu = {engine: statistics.median(c for _, c, _ in done) for engine, done in runs.items()}
    preloads = [p for _, _, p in runs["kfp"] if p is not None]
    print(f"data: {args.data or 'embedded default'}; 4 algorithms; MLflow embedded store; median of {args.repeat}; "
          f"load average at the end {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'':<34}{'wall':>8}     {'CPU':>8}     runs (wall)")
    for engine, label in (("inprocess", "run --engine inprocess"), ("kfp", "run (kfp.local, default engine)")):
        print(f"{label:<34}{wall[engine]:8.1f} s   {cpu[engine]:8.1f} s   {', '.join(f'{w:.1f}' for w, _, _ in runs[engine])}")
    ratio, cpu_ratio = wall["kfp"] / wall["inprocess"], cpu["kfp"] / cpu["inprocess"]
    print(f"{'kfp.local / in-process':<34}{ratio:8.2f} x   {cpu_ratio:8.2f} x   target <= {KFP_TARGET_RATIO:.1f}x (wall): "
          f"{'met' if ratio <= KFP_TARGET_RATIO else 'NOT met'}")
    print(f"{'difference per task':<34}{(wall['kfp'] - wall['inprocess']) / n_tasks:8.2f} s   "
          f"{(cpu['kfp'] - cpu['inprocess']) / n_tasks:8.2f} s   ({n_tasks} tasks; 2 run at a time)")
    print(f"{'no-op pipeline of the same shape':<34}{noop:8.2f} s   = {noop / n_tasks:.2f} s per task of kfp.local's own cost")
    if preloads:
        print(f"{'step server preload (once a run)':<34}{statistics.median(preloads):8.2f} s   "
              "(in the server, beside the first steps; from pipeline.log)")
    print("imports per step before its work in a fresh process - what kfp's own launch pays each step, and")
    print("what the step server pays once a run instead (wall / CPU):")
    for step, (seconds, cpu_seconds) in imports.items():
        print(f"  {step:<32}{seconds:8.2f} s   {cpu_seconds:8.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
