#!/usr/bin/env bash
# Set up (first time) and run the whole test suite. Extra arguments go to pytest.
#
# Builds the container images first when a Docker engine answers or can be started (as root this
# installs Debian's docker.io and starts dockerd), so the image smoke tests run; otherwise it says
# clearly that they are skipped. PORTFOLIO_MLOPS_IMAGES=skip skips the images on purpose.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

started_dockerd=""
if [ "${PORTFOLIO_MLOPS_IMAGES:-build}" = skip ]; then
    echo "images: SKIPPED (PORTFOLIO_MLOPS_IMAGES=skip): the image smoke tests will be skipped" >&2
elif started_dockerd=$(bash scripts/docker-engine.sh); then
    echo "images: building every Dockerfile target (scripts/build-images.sh --local-base)" >&2
    bash scripts/build-images.sh --local-base >&2
else
    echo "images: SKIPPED: no Docker engine could be started (see above); the image smoke tests will be skipped" >&2
fi

status=0
.venv/bin/python -m pytest "$@" || status=$?
if [ -n "$started_dockerd" ]; then
    kill "$started_dockerd" 2>/dev/null || true
fi
exit "$status"
