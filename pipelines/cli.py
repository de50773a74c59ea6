"""The `portfolio-mlops` entry point: the core CLI plus what needs kfp (kept out of the core package).

Adds `run --engine kfp` (the default: the pipeline through kfp.local, every step its own process)
and `pipeline compile | submit`.
"""

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

import yaml

from portfolio_mlops import cli as core
from portfolio_mlops.commands.run import CHECKED_ENV, Engine, run_inprocess


def extend(sub: Any) -> None:
    pipeline = sub.add_parser(
        "pipeline", help="compile the Kubeflow pipeline or submit it to a cluster",
        description="Compile the training pipeline to KFP IR YAML, or submit it to a Kubeflow Pipelines API "
                    "server (v2beta1): experiment, pipeline (version), run, optional recurring run, --wait.")
    commands = pipeline.add_subparsers(dest="pipeline_command", required=True, metavar="SUBCOMMAND")
    compile_parser = commands.add_parser("compile", help="write the IR YAML",
                                         description="Compile pipelines/training.py to IR YAML.")
    from portfolio_mlops_kfp.pipelines.compile import COMPILED

    compile_parser.add_argument("--output", metavar="FILE", default=str(COMPILED),
                                help=f"where to write it (default: {COMPILED}, the committed copy)")
    submit_parser = commands.add_parser(
        "submit", help="submit the compiled pipeline to a KFP API server",
        description="Create (or reuse) the experiment, upload the pipeline or a new version of it, start a run "
                    "with parameters, optionally a recurring run (--cron), and with --wait follow it to the end; "
                    "the exit status is 0 only when the run succeeded.")
    from portfolio_mlops_kfp.pipelines.submit import add_submit_arguments

    add_submit_arguments(submit_parser)
    pipeline.set_defaults(func=pipeline_command)

    k8s = sub.add_parser("k8s", help="render the Kubernetes manifests (k8s/base, k8s/overlays) from charts/",
                         description="Rewrite k8s/base and k8s/overlays/{kind,production,seaweedfs} from the typed "
                                     "Python charts (charts/); the rendered tree is committed.")
    k8s_commands = k8s.add_subparsers(dest="k8s_command", required=True, metavar="SUBCOMMAND")
    k8s_commands.add_parser("render", help="write the manifests").add_argument(
        "--output", metavar="DIR", default="k8s", help="root of the tree (default: k8s, the committed copy)")
    k8s.set_defaults(func=k8s_command)

    cluster = sub.add_parser(
        "cluster", help="status of the deployed workloads, or wait until they are ready (kubernetes client)",
        description="Ask the Kubernetes API about our namespace after `kubectl apply -k`: `status` prints workloads, "
                    "pods, MLflow health and the served model version; `wait` blocks until the named workloads are "
                    "ready. Exit status: 0 ready, 1 not ready / timed out (with the reason), 2 API unreachable or "
                    "bad usage.")
    from portfolio_mlops_kfp.pipelines.cluster import add_arguments

    add_arguments(cluster)
    cluster.set_defaults(func=cluster_command)


def pipeline_command(args: argparse.Namespace) -> int:
    if args.pipeline_command == "compile":
        from portfolio_mlops_kfp.pipelines.compile import compile_pipeline

        path = compile_pipeline(args.output)
        print(f"wrote {path}")
        return 0
    from portfolio_mlops_kfp.pipelines.submit import run_submit

    return run_submit(args)


def cluster_command(args: argparse.Namespace) -> int:
    from portfolio_mlops_kfp.pipelines.cluster import run_command

    return run_command(args)


def k8s_command(args: argparse.Namespace) -> int:
    from portfolio_mlops_kfp.charts.render import render_tree

    written = render_tree(args.output)
    print(f"wrote {len(written)} files under {args.output}/")
    return 0


def pipeline_parameters(cfg: Any) -> dict[str, Any]:
    """The pipeline parameters that reproduce a RunConfig: the whole config travels as YAML (its `models`
    keep their order for the report and the registry, see components/configure.py); `algorithms`, the
    train fan-out, comes longest first (fan_out_order)."""
    payload = cfg.model_dump(mode="json")
    if payload.get("data"):
        payload["data"] = str(Path(payload["data"]).resolve())  # steps may run from another directory
    return {"config_yaml": yaml.safe_dump(payload, sort_keys=False), "algorithms": fan_out_order(cfg)}


# Relative cost of one walk-forward fit, only to rank the train steps: a model refitted from running moments
# (the linear ones, a few O(p^2) solves per refit) vs one regrown from its whole window at each refit
# (gradient boosting: several times a linear model's walk-forward on the embedded data).
MOMENT_REFIT_COST, FULL_REFIT_COST = 1, 4


def fan_out_order(cfg: Any) -> list[str]:
    """The algorithms in decreasing expected train-step time: kfp.local runs the ParallelFor's steps two at a
    time in the order given, so the longest (gradient boosting, fitted once per seed) starts at once and the
    short ones share the other slot instead of delaying it (longest-processing-time-first scheduling). Ties
    keep the config's order."""
    from portfolio_mlops.algorithms import ALGORITHMS
    from portfolio_mlops.models import uses_seed

    def cost(spec: Any) -> int:
        fits = cfg.evaluation.seeds if uses_seed(spec) else 1
        return fits * (MOMENT_REFIT_COST if ALGORITHMS[spec.algorithm].moment_refits else FULL_REFIT_COST)

    return [spec.name for spec in sorted(cfg.models, key=cost, reverse=True)]


def run_kfp(args: argparse.Namespace, cfg: Any, _progress: Any = None) -> int:
    """`run --engine kfp`; args.output is the run's partial folder (portfolio_mlops.commands.run.in_session)."""
    from portfolio_mlops.summary_table import summary_table
    from portfolio_mlops_kfp.pipelines.local import run_local

    # --no-tracking / --no-promote are in cfg.tracking, which reaches the promote step in config_yaml.
    report_dir = getattr(args, "report_dir", Path(args.output).resolve())
    if not args.quiet:
        print(f"[pipeline] kfp.local: configure -> ingest -> features -> train x{len(cfg.models)} -> promote; "
              f"its log: {report_dir}/pipeline.log", file=sys.stderr, flush=True)
    # The preflight checked the hyperparameters in this environment: its record spares the configure step
    # a second scikit-learn import (components/configure.py).
    checked = getattr(args, "checked_record", None)
    result = run_local(pipeline_parameters(cfg), args.output, verbose=args.verbose, progress=not args.quiet,
                       step_env={CHECKED_ENV: checked} if checked else None)
    summary = json.loads((Path(args.output) / "summary.json").read_text(encoding="utf-8"))
    print(summary_table(summary))
    if summary.get("mlflow"):
        record = summary["mlflow"]
        versions = ", ".join(f"{a} v{v}" for a, v in record["model_versions"].items())
        print(f"\nmlflow: {record['tracking_uri']}  run {record['parent_run_id']}  registered "
              f"{record['registered_model']}: {versions}")
    print(result["decision"])
    print(f"\nreport: {report_dir}/summary.json, report.html; log: {report_dir}/pipeline.log  "
          f"[kfp.local pipeline, {result['seconds']:.1f}s]")
    return 0


ENGINES = {
    "kfp": Engine("the Kubeflow pipeline through kfp.local, each step a separate process with typed artifacts", run_kfp),
    "inprocess": Engine("the same chain in this Python process (fastest to iterate)", run_inprocess),
}


def main(argv: Sequence[str] | None = None) -> int:
    return core.main(argv, core.build_parser(ENGINES, default_engine="kfp", extend=extend))
