"""`portfolio-mlops promote` and `models`: the registry's decisions and versions."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from portfolio_mlops import cli


def add_parser(subcommands: Any) -> None:
    promote = subcommands.add_parser(
        "promote", help="judge a run's registered versions and move the champion alias only on evidence",
        description="Judge the model versions a pipeline run registered against the current champion, with the "
                    "configured policy (gates: IC t-stat, net excess over equal weight; margin over the champion on "
                    "the same data, re-evaluating the champion when it was judged on other data). Records the "
                    "decision and its reasons as tags; re-running on the same inputs changes nothing.")
    promote.add_argument("--run-id", metavar="ID", help="the parent run (default: the experiment's latest)")
    promote.add_argument("--config", metavar="FILE", help="YAML run configuration (its `promotion` and `tracking` sections)")
    promote.add_argument("--data", metavar="PATH", help="data for re-evaluating the champion (default: the run's data source)")
    promote.set_defaults(func=cli.configured(promote_command))

    models = subcommands.add_parser(
        "models", help="list registered versions with aliases, metrics and decisions",
        description="List every version of the registered model: aliases (champion, challenger), algorithm, key "
                    "metrics, data digest and the recorded promotion decision.")
    models.add_argument("--config", metavar="FILE", help="YAML run configuration (its `tracking` section)")
    models.add_argument("--json", action="store_true", help="print JSON instead of a table")
    models.set_defaults(func=cli.configured(models_command))


def _check_store(must_exist: bool) -> None:
    """The tracking server answers (else exit 3); `promote` also needs an embedded store that exists."""
    from portfolio_mlops.errors import PromotionError
    from portfolio_mlops.tracking import check_server, default_tracking_uri

    uri = default_tracking_uri()
    check_server(uri)
    if must_exist and uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        raise PromotionError(f"no MLflow store at {uri.removeprefix('sqlite:///')}: nothing has been tracked from this "
                             "folder; run `portfolio-mlops run` first, or set MLFLOW_TRACKING_URI to your server")


def promote_command(args: argparse.Namespace, cfg, progress) -> int:
    import mlflow

    from portfolio_mlops import promotion
    from portfolio_mlops.data.ingest import build_panel
    from portfolio_mlops.errors import PromotionError
    from portfolio_mlops.registry import DATA_DIGEST, DATA_SOURCE, DEFAULT_DATA_SOURCE, registration_complete
    from portfolio_mlops.runner import reevaluate_config
    from portfolio_mlops.tracking import check_server

    _check_store(must_exist=True)
    check_server(mlflow.get_tracking_uri())
    client = mlflow.MlflowClient()
    run_id = args.run_id
    if run_id is not None:
        try:
            client.get_run(run_id)
        except mlflow.exceptions.MlflowException as exc:
            raise PromotionError(f"--run-id {run_id!r}: no such run at {mlflow.get_tracking_uri()} "
                                 f"({str(exc).splitlines()[0]}); `portfolio-mlops models` lists the versions and their "
                                 "runs, or leave --run-id out for the latest finished run") from exc
    if run_id is None:
        experiment = client.get_experiment_by_name(cfg.tracking.experiment)
        runs = client.search_runs([experiment.experiment_id], f"tags.{DATA_DIGEST} != ''", order_by=["attributes.start_time DESC"],
                                  max_results=50) if experiment else []
        parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
        # A run stopped while registering has some versions and no completion mark: never a candidate.
        incomplete = promotion.incomplete_registrations(cfg.tracking.registered_model, client)
        for run in parents:
            if run.info.status == "FINISHED" and registration_complete(run):
                break
            if run.info.run_id in incomplete:
                print(promotion.incomplete_note(run.info.run_id, len(incomplete[run.info.run_id])) +
                      f" (v{', v'.join(incomplete[run.info.run_id])})")
        parents = [r for r in parents if r.info.status == "FINISHED" and registration_complete(r)]
        if not parents:
            raise PromotionError(f"no finished pipeline run with a complete registration in experiment "
                                 f"{cfg.tracking.experiment!r}; run `portfolio-mlops run` first")
        run_id = parents[0].info.run_id
    source = args.data or client.get_run(run_id).data.tags.get(DATA_SOURCE)
    data = None if source in (None, DEFAULT_DATA_SOURCE) else source

    def reevaluate(champion_json: str, settings_json: str) -> dict[str, float]:
        from portfolio_mlops.config import RunConfig

        panel, _ = build_panel(data, RunConfig.model_validate_json(settings_json).validation)
        return reevaluate_config(panel, champion_json, settings_json)

    from contextlib import nullcontext

    from portfolio_mlops import locks

    store_lock = locks.store_lock_path(mlflow.get_tracking_uri())  # moving aliases while a run registers: no
    with (locks.hold(store_lock, f"the MLflow store {locks.sqlite_path(mlflow.get_tracking_uri())}",
                     command="portfolio-mlops promote", say=lambda text: print(text, file=sys.stderr))
          if store_lock else nullcontext()):
        decision = promotion.promote(cfg.tracking.registered_model, run_id, cfg.promotion, reevaluate, client)
    print(decision.summary_line())
    for version, verdict in decision.candidates.items():
        print(f"  v{version} {verdict['algorithm']:<11} {verdict['decision']:<13} {'; '.join(verdict['reasons'])}")
    return 0


def models_command(args: argparse.Namespace, cfg, progress) -> int:
    import json

    from portfolio_mlops.promotion import list_versions

    _check_store(must_exist=False)
    rows = list_versions(cfg.tracking.registered_model)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no versions of {cfg.tracking.registered_model!r} yet (run `portfolio-mlops run`)")
        return 0

    def fmt(value: str | None, spec: str) -> str:
        try:
            return format(float(value), spec)
        except (TypeError, ValueError):
            return "n/a"

    print(f"{'ver':>4}  {'aliases':<20} {'algorithm':<11} {'Sharpe':>7} {'IC t':>6} {'HAC t':>6} {'xs EW':>8}  "
          f"{'data':<14} decision")
    for r in rows:
        print(f"{r['version']:>4}  {','.join(r['aliases']) or '-':<20} {r['algorithm']:<11} {fmt(r['net_sharpe'], '7.2f')} "
              f"{fmt(r['ic_tstat'], '6.2f')} {fmt(r.get('ic_hac_tstat'), '6.2f')} {fmt(r['excess_vs_equal_weight'], '+8.2%')}  "
              f"{r['data_digest'][7:19]:<14} {r['decision']}")
    return 0
