#!/usr/bin/env bash
# Create .venv (if missing) and install the package with its test dependencies, pinned by
# constraints.txt. Idempotent: a second run only checks that everything is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $($PYTHON --version)" >&2
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
echo "setup: .venv ready ($(.venv/bin/python -c 'import portfolio_mlops; print("portfolio_mlops", portfolio_mlops.__version__)'))" >&2
