#!/usr/bin/env bash
# Build every image target of the Dockerfile, tagged with the names components/images.py gives.
#
#   scripts/build-images.sh [--local-base] [TARGET ...]
#
# --local-base: build the base image from Debian packages with debootstrap first (for machines that
# cannot pull from a registry), and build on it. Without it the Dockerfile's default base
# (python:3.11-slim) is pulled as usual. Prints the build time and size of every target.
set -euo pipefail
cd "$(dirname "$0")/.."

LOCAL_BASE=0
TARGETS=()
for arg in "$@"; do
    case "$arg" in
        --local-base) LOCAL_BASE=1 ;;
        -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
        *) TARGETS+=("$arg") ;;
    esac
done
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(ingest features train promote mlflow-server serving)

PYTHON=${PYTHON:-.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3
if ! docker info >/dev/null 2>&1; then
    echo "build-images: no Docker engine answers (docker info failed); start dockerd first" >&2
    exit 3
fi

BASE_ARGS=()
if [ "$LOCAL_BASE" = 1 ]; then
    BASE=local/python:3.11-bookworm
    if ! docker image inspect "$BASE" >/dev/null 2>&1; then
        ROOTFS=$(mktemp -d /tmp/portfolio-mlops-rootfs.XXXXXX)
        MIRROR=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
        MIRROR=${MIRROR:-http://deb.debian.org/debian}
        echo "build-images: debootstrap bookworm (minbase + python3) from $MIRROR" >&2
        started=$(date +%s)
        debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$ROOTFS" "$MIRROR" \
            > /tmp/portfolio-mlops-debootstrap.log 2>&1 || { tail -20 /tmp/portfolio-mlops-debootstrap.log; exit 1; }
        # pip inside the build trusts this machine's CA bundle (a fresh rootfs's may not match it).
        cp /etc/ssl/certs/ca-certificates.crt "$ROOTFS/etc/ssl/certs/ca-certificates.crt"
        rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*
        tar -C "$ROOTFS" -c . | docker import - "$BASE" >/dev/null
        rm -rf "$ROOTFS"
        echo "build-images: base $BASE in $(( $(date +%s) - started ))s" >&2
    fi
    BASE_ARGS=(--build-arg "BASE_IMAGE=$BASE")
fi

VERSION=$("$PYTHON" -c 'import portfolio_mlops; print(portfolio_mlops.__version__)' 2>/dev/null || echo 0.0.0)
REVISION=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
printf '%-16s %-58s %8s %10s\n' target image seconds size
for target in "${TARGETS[@]}"; do
    name=$("$PYTHON" -c "from components.images import image; print(image('$target'))")
    started=$(date +%s%N)
    DOCKER_BUILDKIT=0 docker build --network host --quiet "${BASE_ARGS[@]}" \
        --build-arg "VERSION=$VERSION" --build-arg "REVISION=$REVISION" \
        --target "$target" -t "$name" . > "/tmp/portfolio-mlops-build-$target.log" 2>&1 \
        || { tail -30 "/tmp/portfolio-mlops-build-$target.log"; echo "build-images: $target failed" >&2; exit 1; }
    elapsed_ms=$(( ($(date +%s%N) - started) / 1000000 ))
    seconds="$((elapsed_ms / 1000)).$(( (elapsed_ms % 1000) / 100 ))"
    size=$(docker image inspect "$name" --format '{{.Size}}' | awk '{printf "%.0f MB", $1/1e6}')
    printf '%-16s %-58s %8s %10s\n' "$target" "$name" "$seconds" "$size"
done
