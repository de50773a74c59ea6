"""Walk-forward: a sample trains a model only once its label is known at the decision date."""

import numpy as np
import pandas as pd
import pytest

from portfolio_mlops.config import FeatureConfig, LabelConfig, ModelSpec, WalkForwardConfig
from portfolio_mlops.errors import InsufficientDataError
from portfolio_mlops.features import build_features
from portfolio_mlops.models import make_estimator
from portfolio_mlops.walk_forward import (SharedSums, _Trainer, rebalance_schedule, sampled_training_dates,
                                          walk_forward_predictions)
from synthetic import random_walk_panel

LABELS = LabelConfig(horizon_days=10, execution_lag_days=1)
WALK = WalkForwardConfig(rebalance_every_days=10, retrain_every_rebalances=2, min_train_days=120)


@pytest.fixture(scope="module")
def features():
    return build_features(random_walk_panel(n_tickers=30, n_days=700, seed=11), FeatureConfig(), LABELS)


def _position(features, date_text):
    return features.dates.get_loc(pd.Timestamp(date_text))


@pytest.mark.parametrize("embargo", [0, 5])
def test_every_training_label_ends_by_the_decision_date(features, embargo):
    walk = WALK.model_copy(update={"embargo_days": embargo})
    result = walk_forward_predictions(features, ModelSpec(algorithm="ridge"), walk, LABELS)
    for refit in result.refits:
        decision = _position(features, refit["decision_date"])
        last_sample = _position(features, refit["train_last_date"])
        label_end = last_sample + LABELS.execution_lag_days + LABELS.horizon_days
        assert label_end + embargo == decision  # the newest usable sample, and no newer one


def test_training_sample_count_is_all_labelled_rows_up_to_the_purge(features):
    result = walk_forward_predictions(features, ModelSpec(algorithm="ridge"), WALK, LABELS)
    frame = features.frame
    for refit in result.refits:
        last = _position(features, refit["train_last_date"])
        expected = int((frame["date_pos"] <= last).sum() - frame.loc[frame["date_pos"] <= last, "label_train"].isna().sum())
        assert refit["train_samples"] == expected


def test_rebalances_every_k_days_and_refits_every_m_rebalances(features):
    schedule = rebalance_schedule(features, WALK, LABELS)
    assert set(np.diff(schedule.rebalance_pos)) == {10}
    np.testing.assert_array_equal(schedule.refit_pos, schedule.rebalance_pos[::2])
    result = walk_forward_predictions(features, ModelSpec(algorithm="ridge"), WALK, LABELS)
    assert len(result.refits) == len(schedule.refit_pos)
    assert sorted(result.predictions["date_pos"].unique()) == list(schedule.rebalance_pos)


def test_first_decision_waits_for_min_train_days_of_known_labels(features):
    schedule = rebalance_schedule(features, WALK, LABELS)
    sample_dates = np.unique(features.frame["date_pos"])
    assert schedule.rebalance_pos[0] == sample_dates[WALK.min_train_days - 1] + schedule.purge_gap


def test_every_eligible_name_gets_a_prediction_at_each_decision(features):
    result = walk_forward_predictions(features, ModelSpec(algorithm="lasso", params={"alpha": 1e-5}), WALK, LABELS)
    counts = result.predictions.groupby("date_pos").size()
    eligible = features.frame.groupby("date_pos").size().loc[counts.index]
    pd.testing.assert_series_equal(counts, eligible)


def test_rolling_window_drops_old_samples(features):
    walk = WALK.model_copy(update={"window": "rolling", "rolling_window_days": 100})
    result = walk_forward_predictions(features, ModelSpec(algorithm="ridge"), walk, LABELS)
    first_dates = {r["train_first_date"] for r in result.refits}
    assert len(first_dates) > 1
    for refit in result.refits:
        span = _position(features, refit["train_last_date"]) - _position(features, refit["train_first_date"]) + 1
        assert span == 100


def test_inner_search_picks_from_the_grid_and_counts_configurations(features):
    spec = ModelSpec(algorithm="ridge", search={"alpha": [0.1, 10.0, 1000.0]})
    result = walk_forward_predictions(features, spec, WALK, LABELS)
    assert result.configurations_tried == 3
    searched = [r for r in result.refits if r["search_scores"]]
    assert searched, "the later refits have room for a validation tail"
    assert all(r["params"]["alpha"] in (0.1, 10.0, 1000.0) for r in searched)


def test_hgb_trains_on_one_date_per_block_only(features):
    spec = ModelSpec(algorithm="hgb", params={"max_iter": 5}, train_sample_every_days=5)
    result = walk_forward_predictions(features, spec, WALK, LABELS)
    ridge = walk_forward_predictions(features, ModelSpec(algorithm="ridge"), WALK, LABELS)
    for sampled, full in zip(result.refits, ridge.refits):
        assert sampled["train_samples"] < full["train_samples"] / 3


def test_sampled_training_dates_take_one_date_per_block_at_a_seeded_offset():
    mask = sampled_training_dates(103, every=5, seed=3)
    # 20 full blocks of 5 dates and a last block of 3: one date from each block (if its offset falls inside)
    assert [int(mask[b * 5:(b + 1) * 5].sum()) for b in range(20)] == [1] * 20
    assert mask[100:].sum() <= 1
    np.testing.assert_array_equal(mask, sampled_training_dates(103, every=5, seed=3))
    assert not np.array_equal(mask, sampled_training_dates(103, every=5, seed=4))
    offsets = [int(np.flatnonzero(mask[b * 5:(b + 1) * 5])[0]) for b in range(20)]
    assert len(set(offsets)) > 1, "a random offset per block, not every 5th date"


def test_sampled_dates_do_not_depend_on_how_long_the_calendar_is():
    # a refit later in time (a longer calendar) must keep the dates an earlier one trained on
    short, long = sampled_training_dates(250, every=5, seed=0), sampled_training_dates(700, every=5, seed=0)
    np.testing.assert_array_equal(short, long[:250])


def test_hgb_seed_changes_its_predictions_and_the_same_seed_repeats_them(features):
    spec = ModelSpec(algorithm="hgb", params={"max_iter": 10}, train_sample_every_days=5)
    first, again, other = (walk_forward_predictions(features, spec, WALK, LABELS, seed=s).predictions["prediction"]
                           for s in (0, 0, 1))
    pd.testing.assert_series_equal(first, again)
    assert not np.allclose(first, other)


def test_hgb_rebalance_predictions_are_its_daily_scores_on_those_days(features):
    result = walk_forward_predictions(features, ModelSpec(algorithm="hgb", params={"max_iter": 10}), WALK, LABELS)
    on_rebalance = result.predictions.merge(result.daily, on=["date_pos", "ticker"], suffixes=("", "_daily"))
    assert len(on_rebalance) == len(result.predictions)
    np.testing.assert_array_equal(on_rebalance["prediction"], on_rebalance["prediction_daily"])
    # and they are what the model in force predicts for those rows on its own
    last_day = result.predictions[result.predictions["date_pos"] == result.predictions["date_pos"].max()]
    rows = features.frame.set_index(["date_pos", "ticker"]).loc[list(zip(last_day["date_pos"], last_day["ticker"]))]
    np.testing.assert_array_equal(result.model.predict(rows[list(features.feature_names)]), last_day["prediction"])


def test_hgb_trained_on_the_feature_grid_scores_raw_features_as_their_grid_values():
    # z-scores: continuous values, many per grid step (30 names' ranks are coarser than the grid itself)
    zscores = build_features(random_walk_panel(n_tickers=30, n_days=700, seed=11), FeatureConfig(normalisation="zscore"), LABELS)
    trainer = _Trainer(zscores, ModelSpec(algorithm="hgb", train_sample_every_days=5), seed=0)
    trainer.fix_training_grid(last_date=300, levels=64)
    grid_values = trainer.snapped(trainer.x.copy())
    # at most 255 values a feature (later dates may leave the first window's range): HGB's bins are then
    # the grid's own steps, not quantiles of its own
    assert all(len(np.unique(column[np.isfinite(column)])) <= 255 for column in grid_values.T)
    assert len(np.unique(grid_values[:, 0])) < len(np.unique(trainer.x[:, 0])) / 10
    model, _ = trainer.fit(0, 450, {"max_iter": 20, "min_samples_leaf": 50})
    raw, snapped = model.predict(trainer.frame(trainer.x)), model.predict(trainer.frame(grid_values))
    np.testing.assert_array_equal(raw, snapped)  # every row, including the extreme ranks +-0.5
    assert np.unique(raw).size > 10, "the model is not a constant"


def test_too_little_history_is_a_clear_error():
    small = build_features(random_walk_panel(n_tickers=5, n_days=300, seed=1), FeatureConfig(), LABELS)
    with pytest.raises(InsufficientDataError, match="min_train_days"):
        rebalance_schedule(small, WALK, LABELS)


def test_predictions_before_a_cutoff_do_not_depend_on_prices_after_it():
    panel = random_walk_panel(n_tickers=25, n_days=650, seed=12)
    cutoff = np.sort(panel["date"].unique())[560]
    changed = panel.copy()
    later = changed["date"] > cutoff
    changed.loc[later, ["adj_close", "close"]] *= np.random.default_rng(0).uniform(0.3, 3.0, later.sum())[:, None]
    for spec in (ModelSpec(algorithm="ridge"), ModelSpec(algorithm="hgb", params={"max_iter": 10})):
        before = walk_forward_predictions(build_features(panel, FeatureConfig(), LABELS), spec, WALK, LABELS).predictions
        after = walk_forward_predictions(build_features(changed, FeatureConfig(), LABELS), spec, WALK, LABELS).predictions
        upto_before = before[before["date"] <= cutoff].reset_index(drop=True)
        upto_after = after[after["date"] <= cutoff].reset_index(drop=True)
        assert len(upto_before) > 100
        pd.testing.assert_series_equal(upto_before["prediction"], upto_after["prediction"])
        assert not np.allclose(before.loc[before["date"] > cutoff, "prediction"], after.loc[after["date"] > cutoff, "prediction"])


def test_every_out_of_sample_day_is_scored_and_rebalance_days_match_the_backtests_predictions(features):
    result = walk_forward_predictions(features, ModelSpec(algorithm="ridge"), WALK, LABELS)
    daily, rebalance = result.daily, result.predictions
    first_decision = rebalance["date_pos"].min()
    sample_days = np.unique(features.frame["date_pos"])
    assert np.array_equal(np.unique(daily["date_pos"]), sample_days[sample_days >= first_decision])
    assert not daily.duplicated(["date_pos", "ticker"]).any()
    # on a rebalance day the model in force is the one the backtest used (refits every 2nd rebalance)
    on_rebalance = rebalance.merge(daily, on=["date_pos", "ticker"], suffixes=("", "_daily"))
    assert len(on_rebalance) == len(rebalance)
    # same model, same rows; only the batch differs (last-bit BLAS rounding)
    np.testing.assert_allclose(on_rebalance["prediction"], on_rebalance["prediction_daily"], rtol=1e-12, atol=1e-15)


def test_daily_scores_at_or_before_a_day_do_not_depend_on_prices_after_it():
    panel = random_walk_panel(n_tickers=25, n_days=650, seed=12)
    cutoff = np.sort(panel["date"].unique())[565]  # between rebalances: scored by a model fitted earlier
    changed = panel.copy()
    later = changed["date"] > cutoff
    changed.loc[later, ["adj_close", "close"]] *= np.random.default_rng(0).uniform(0.3, 3.0, later.sum())[:, None]
    for spec in (ModelSpec(algorithm="ridge"), ModelSpec(algorithm="hgb", params={"max_iter": 10})):
        before = walk_forward_predictions(build_features(panel, FeatureConfig(), LABELS), spec, WALK, LABELS).daily
        after = walk_forward_predictions(build_features(changed, FeatureConfig(), LABELS), spec, WALK, LABELS).daily
        upto_before = before[before["date"] <= cutoff].reset_index(drop=True)
        upto_after = after[after["date"] <= cutoff].reset_index(drop=True)
        assert upto_before["date"].nunique() > 50
        pd.testing.assert_series_equal(upto_before["prediction"], upto_after["prediction"])
        assert not np.allclose(before.loc[before["date"] > cutoff, "prediction"], after.loc[after["date"] > cutoff, "prediction"])


def test_a_model_with_refit_stride_k_refits_on_every_kth_refit_date_and_scores_with_it_until_the_next(features):
    spec = ModelSpec(algorithm="hgb", params={"max_iter": 5}, train_sample_every_days=5, refit_stride=2)
    schedule = rebalance_schedule(features, WALK, LABELS)
    result = walk_forward_predictions(features, spec, WALK, LABELS)
    strided = schedule.refit_pos[::2]
    assert [r["decision_date"] for r in result.refits] == [f"{d:%Y-%m-%d}" for d in features.dates[strided]]
    assert len(result.refits) < len(schedule.refit_pos)
    # every rebalance is decided by the model of the latest strided refit on or before it, and every
    # out-of-sample day is still scored (by that same model)
    for decision, refit_date in result.predictions.groupby("date_pos")["refit_date"].first().items():
        assert refit_date == f"{features.dates[strided[strided <= decision].max()]:%Y-%m-%d}"
    sample_days = np.unique(features.frame["date_pos"])
    assert np.array_equal(np.unique(result.daily["date_pos"]), sample_days[sample_days >= schedule.rebalance_pos[0]])
    # stride 1 is the walk-forward's own refit schedule
    every = walk_forward_predictions(features, spec.model_copy(update={"refit_stride": 1}), WALK, LABELS)
    assert len(every.refits) == len(schedule.refit_pos)


def test_a_date_sampling_model_fits_exactly_the_rows_of_its_sampled_dates(features):
    spec = ModelSpec(algorithm="hgb", params={"max_iter": 5}, train_sample_every_days=5)
    trainer = _Trainer(features, spec, seed=3)
    frame = features.frame
    known = frame[np.isfinite(frame["label_train"])]
    chosen = known[sampled_training_dates(len(features.dates), 5, seed=3)[known["date_pos"].to_numpy()]]
    first, last = 40, 400
    window = chosen[(chosen["date_pos"] >= first) & (chosen["date_pos"] <= last)]
    model, n = trainer.fit(first, last, spec.params)
    assert n == len(window)
    reference = _Trainer(features, spec, seed=3)
    expected = make_estimator(spec, spec.params, seed=3).fit(reference.frame(window[list(features.feature_names)].to_numpy()),
                                                             window["label_train"].to_numpy())
    np.testing.assert_array_equal(model.predict(reference.frame(known[list(features.feature_names)].to_numpy())),
                                  expected.predict(reference.frame(known[list(features.feature_names)].to_numpy())))


def test_the_feature_grid_spans_every_labelled_row_up_to_its_date_not_only_the_sampled_ones(features):
    trainer = _Trainer(features, ModelSpec(algorithm="hgb", train_sample_every_days=10), seed=0)
    trainer.fix_training_grid(last_date=300, levels=64)
    frame = features.frame
    upto = frame[(frame["date_pos"] <= 300) & np.isfinite(frame["label_train"])][list(features.feature_names)]
    lo, step = trainer.grid
    np.testing.assert_array_equal(lo, upto.min().to_numpy())
    np.testing.assert_array_equal(step, (upto.max() - upto.min()).to_numpy() / 64)


def test_linear_models_of_one_feature_set_give_the_same_fits_whichever_ran_first(features):
    lasso = ModelSpec(algorithm="lasso", params={"alpha": 1e-5})
    alone = walk_forward_predictions(features, lasso, WALK, LABELS)
    shared = SharedSums(features)
    walk_forward_predictions(features, ModelSpec(algorithm="ridge"), WALK, LABELS, shared=shared)
    assert shared.moments is not None  # ridge computed the sums ...
    computed = shared.moments
    after_ridge = walk_forward_predictions(features, lasso, WALK, LABELS, shared=shared)
    assert shared.moments is computed  # ... and lasso reused them
    pd.testing.assert_frame_equal(alone.predictions, after_ridge.predictions, check_exact=True)
    # another feature set is not served the first one's sums, nor does it replace them
    other = build_features(random_walk_panel(n_tickers=30, n_days=700, seed=12), FeatureConfig(), LABELS)
    other_alone = walk_forward_predictions(other, lasso, WALK, LABELS)
    pd.testing.assert_frame_equal(walk_forward_predictions(other, lasso, WALK, LABELS, shared=shared).predictions,
                                  other_alone.predictions, check_exact=True)
    assert shared.moments is computed
