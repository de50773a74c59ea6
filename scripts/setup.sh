#!/usr/bin/env bash
# Create .venv (if missing) and install the package with its test dependencies, pinned by
# constraints.txt. Idempotent: a second run only checks that everything is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
# PostgreSQL server binaries for `portfolio-mlops stack` (MLflow's backend store): Debian's package.
if ! compgen -G '/usr/lib/postgresql/*/bin/initdb' > /dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null; then
        echo "setup: installing PostgreSQL (Debian's postgresql package) for the local stack" >&2
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql > /dev/null \
            || echo "setup: warning: could not install postgresql; \`portfolio-mlops stack\` and its tests need it" >&2
    else
        echo "setup: PostgreSQL server not found; for \`portfolio-mlops stack\` install it: sudo apt-get install -y postgresql" >&2
    fi
fi
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $($PYTHON --version)" >&2
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
# Bytecode for our own sources, as pip writes it for every installed wheel: an editable install leaves it
# to the first import, which never writes it where PYTHONDONTWRITEBYTECODE is set (these machines). Every
# pipeline step is a fresh process that would otherwise recompile the package (~2 s of a kfp.local run).
# A stale .pyc is never used: Python checks it against the source's mtime.
.venv/bin/python -m compileall -q src components pipelines charts >/dev/null
# The protos of the pinned KFP backend (k8s/versions.env), for tests/test_kfp_backend_protos.py: the
# kfp-pipeline-spec/kfp-kubernetes wheels of that release into .cache/kfp-backend-protos/<version>
# (skipped when present). Not the SDK's own: the backend may be older than the SDK we compile with.
.venv/bin/python -m portfolio_mlops_kfp.pipelines.backend_protos install
# checkov (policy checks of the rendered k8s/ overlays, tests/test_k8s_policy.py) in a venv of its
# own: it pins many packages that must not constrain .venv. Skipped when present.
CHECKOV_VERSION=3.3.30
if [ ! -x .cache/tools/checkov/bin/checkov ]; then
    echo "setup: installing checkov $CHECKOV_VERSION into .cache/tools/checkov" >&2
    "$PYTHON" -m venv .cache/tools/checkov
    .cache/tools/checkov/bin/python -m pip install --quiet --disable-pip-version-check "checkov==$CHECKOV_VERSION" \
        || echo "setup: warning: could not install checkov; tests/test_k8s_policy.py will skip" >&2
fi
echo "setup: .venv ready ($(.venv/bin/python -c 'import portfolio_mlops; print("portfolio_mlops", portfolio_mlops.__version__)'))" >&2
