#!/usr/bin/env bash
# Set up (first time) and run the whole chain on the embedded default data.
# Extra arguments go to `portfolio-mlops run`, e.g. scripts/run.sh --data all_stocks_5yr.csv.gz --top-n 50
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/portfolio-mlops run "$@"
