"""portfolio_mlops: honest walk-forward stock ranking for S&P 500 daily data.

Layers, imported in one direction: data -> features -> models -> walk_forward -> backtest ->
metrics -> report. Nothing here imports kfp or kubernetes.
"""

__version__ = "0.1.0"
