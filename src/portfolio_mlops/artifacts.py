"""The files one step hands the next: a feature set, and one algorithm's walk-forward training.

The CLI's `features` / `train` / `backtest` commands and the pipeline's components exchange these
folders; the in-process chain (runner.py) passes the same objects in memory instead. Every file is
written atomically; the JSON file of each pair is written last and marks the step as complete.

    <features>/features.parquet            the sample frame (features, labels, date_pos)
    <features>/features_meta.json          feature names, skipped features, the trading calendar
    <training>/predictions_<algo>.parquet  out-of-sample predictions
    <training>/daily_scores_<algo>.parquet daily scores, when the algorithm produced them
    <training>/model_<algo>.pkl            the last refit
    <training>/training_<algo>.json        every refit's window and parameters, configurations tried, seconds
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from portfolio_mlops import atomic
from portfolio_mlops.features import FeatureSet

# walk_forward loads scikit-learn: imported where used, so a step that only moves feature files does not.
if TYPE_CHECKING:
    from portfolio_mlops.walk_forward import WalkForwardResult


def save_features(features: FeatureSet, folder: str | Path) -> None:
    folder = Path(folder)
    atomic.write_parquet(folder / "features.parquet", features.frame)
    atomic.write_json(folder / "features_meta.json", {
        "feature_names": list(features.feature_names),
        "skipped": features.skipped,
        "calendar": [d.strftime("%Y-%m-%d") for d in features.dates],
    })


def load_features(folder: str | Path) -> FeatureSet:
    folder = Path(folder)
    meta = atomic.read_marker(folder / "features_meta.json", "run `portfolio-mlops features` first")
    return FeatureSet(
        frame=pd.read_parquet(folder / "features.parquet"),
        feature_names=tuple(meta["feature_names"]),
        skipped=meta["skipped"],
        dates=pd.DatetimeIndex(pd.to_datetime(meta["calendar"])),
    )


def _save_scores(folder: Path, stem: str, result: WalkForwardResult) -> None:
    atomic.write_parquet(folder / f"predictions_{stem}.parquet", result.predictions)
    if result.daily is not None:
        atomic.write_parquet(folder / f"daily_scores_{stem}.parquet", result.daily)


def _load_scores(folder: Path, stem: str) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    daily_path = folder / f"daily_scores_{stem}.parquet"
    daily = pd.read_parquet(daily_path) if daily_path.is_file() else None  # absent in older training folders
    return pd.read_parquet(folder / f"predictions_{stem}.parquet"), daily


def save_training(result: WalkForwardResult, folder: str | Path) -> None:
    folder = Path(folder)
    _save_scores(folder, result.algorithm, result)
    with atomic.atomic_path(folder / f"model_{result.algorithm}.pkl") as tmp:
        tmp.write_bytes(pickle.dumps(result.model))
    for seed, other in result.other_seeds.items():
        _save_scores(folder, f"{result.algorithm}_seed{seed}", other)
    # Written last: its presence says the files above are complete (atomic.read_marker).
    atomic.write_json(folder / f"training_{result.algorithm}.json", {
        "algorithm": result.algorithm, "refits": result.refits,
        "configurations_tried": result.configurations_tried, "seconds": result.seconds,
        "other_seeds": {str(seed): {"seconds": other.seconds} for seed, other in result.other_seeds.items()},
    })


def load_training(folder: str | Path, algorithm: str) -> WalkForwardResult:
    from portfolio_mlops.walk_forward import WalkForwardResult

    folder = Path(folder)
    meta = atomic.read_marker(folder / f"training_{algorithm}.json",
                              f"run `portfolio-mlops train --algorithms {algorithm}` first")
    model = pickle.loads((folder / f"model_{algorithm}.pkl").read_bytes())
    predictions, daily = _load_scores(folder, algorithm)
    result = WalkForwardResult(algorithm, predictions, meta["refits"], model, meta["configurations_tried"],
                               meta["seconds"], daily)
    for seed, info in meta.get("other_seeds", {}).items():
        predictions, daily = _load_scores(folder, f"{algorithm}_seed{seed}")
        result.other_seeds[int(seed)] = WalkForwardResult(algorithm, predictions, meta["refits"], None,
                                                          meta["configurations_tried"], info["seconds"], daily)
    return result


__all__ = ["save_features", "load_features", "save_training", "load_training"]
