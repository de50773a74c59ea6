"""HistGradientBoosting's bin thresholds from a feature's distinct values found by hashing, not sorting.

scikit-learn's `_find_binning_thresholds` sorts each feature column twice (an argsort, then np.unique)
at every fit to learn its distinct values. The walk-forward refits gradient boosting on an expanding
window two dozen times, on features snapped to a few dozen grid values (walk_forward._Trainer.
fix_training_grid): sorting ~170,000 values to find <= 64 distinct ones was ~40% of each fit.

When a column (NaN removed, no sample weights) has at most `max_bins` distinct values, the thresholds
are the midpoints of those values - a function of the set alone. `hashed_thresholds` finds the set
with pandas' hash table (~5x faster) and hands exactly that set, sorted, to scikit-learn's own function,
which then computes the same thresholds by its own code; any other column (more distinct values:
quantiles of the data; sample weights; all missing) goes to scikit-learn's function unchanged. The
fitted model is therefore the same bit for bit (tests/test_binning.py compares whole fits), and it
stays a plain scikit-learn estimator: nothing of this is pickled or logged with it.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import pandas as pd
from sklearn.ensemble._hist_gradient_boosting import binning as sklearn_binning

_original = sklearn_binning._find_binning_thresholds
_lock = threading.RLock()


def hashed_thresholds(col_data: np.ndarray, max_bins: int, sample_weight: np.ndarray | None = None) -> np.ndarray:
    """scikit-learn's `_find_binning_thresholds(col_data, max_bins, sample_weight)`, the same result."""
    if sample_weight is None:
        missing = np.isnan(col_data)
        present = col_data[~missing] if missing.any() else col_data
        distinct = pd.unique(present)  # +0.0 and -0.0 are one value here as in np.unique; midpoints alike
        if 1 <= len(distinct) <= max_bins:
            return _original(np.sort(distinct), max_bins)
    return _original(col_data, max_bins, sample_weight=sample_weight)


@contextmanager
def fast_binning() -> Iterator[None]:
    """Gradient-boosting fits inside the block find their bin thresholds with `hashed_thresholds`.

    scikit-learn looks the function up in its binning module at every fit, so it is swapped there for
    the block (under a lock: one block at a time in a process; a fit in another thread meanwhile gets
    the same thresholds either way)."""
    with _lock:
        sklearn_binning._find_binning_thresholds = hashed_thresholds
        try:
            yield
        finally:
            sklearn_binning._find_binning_thresholds = _original
