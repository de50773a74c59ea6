#!/usr/bin/env bash
# Build every image target of the Dockerfile, tagged with the names components/images.py gives.
#
#   scripts/build-images.sh [--local-base] [--no-cache] [--update-readme] [TARGET ...]
#
# --local-base: build the base image from Debian packages with debootstrap first (for machines that
# cannot pull from a registry), and build on it. Without it the Dockerfile's default base
# (python:3.11-slim) is pulled as usual. --no-cache: rebuild every layer (pip's download cache stays).
# Builds with BuildKit through Debian's own docker CLI (/usr/bin/docker: a CLI without buildx refuses
# DOCKER_BUILDKIT=1); when BuildKit cannot work it prints the error and falls back to the legacy builder
# (PORTFOLIO_MLOPS_BUILDER=legacy forces that).
# Prints target, image, size, build seconds and image id; with --update-readme a full build (every
# target) also writes that table into README.md between the image-sizes markers (opt-in, so a CI or
# test build never leaves the checkout modified).
set -euo pipefail
cd "$(dirname "$0")/.."

LOCAL_BASE=0
NO_CACHE=()
UPDATE_README=0
TARGETS=()
for arg in "$@"; do
    case "$arg" in
        --local-base) LOCAL_BASE=1 ;;
        --no-cache) NO_CACHE=(--no-cache) ;;
        --update-readme) UPDATE_README=1 ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) TARGETS+=("$arg") ;;
    esac
done
ALL_TARGETS=(ingest features train promote mlflow-server serving)
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=("${ALL_TARGETS[@]}")

PYTHON=${PYTHON:-.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3
if ! docker info >/dev/null 2>&1; then
    echo "build-images: no Docker engine answers (docker info failed); start dockerd first" >&2
    exit 3
fi

BASE_ARGS=()
BASE=""
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
BASE_IMAGE=${BASE:-python:3.11-slim}

# BuildKit: Debian's CLI (docker.io) talks to the daemon's BuildKit directly; the probe builds a
# one-line Dockerfile with a cache mount on the base, the two things the real build relies on.
DOCKER_CLI=docker
[ -x /usr/bin/docker ] && DOCKER_CLI=/usr/bin/docker
BUILDER=${PORTFOLIO_MLOPS_BUILDER:-buildkit}  # PORTFOLIO_MLOPS_BUILDER=legacy forces the fallback
if [ "$BUILDER" = buildkit ] && ! probe=$(printf 'FROM %s\nRUN --mount=type=cache,target=/var/cache/probe true\n' "$BASE_IMAGE" \
        | DOCKER_BUILDKIT=1 "$DOCKER_CLI" build --network host --quiet - 2>&1); then
    echo "build-images: BuildKit does not work here ($DOCKER_CLI, DOCKER_BUILDKIT=1):" >&2
    echo "$probe" | tail -5 >&2
    echo "build-images: falling back to the legacy builder (DOCKER_BUILDKIT=0; every stage a target names is rebuilt per target, no pip cache mount)" >&2
    BUILDER=legacy
fi

build() {  # build TARGET NAME LOG
    local common=(--network host "${BASE_ARGS[@]}" "${NO_CACHE[@]}" --build-arg "VERSION=$VERSION"
                  --build-arg "REVISION=$REVISION" --target "$1" -t "$2")
    if [ "$BUILDER" = buildkit ]; then
        DOCKER_BUILDKIT=1 "$DOCKER_CLI" build --progress=plain "${common[@]}" . > "$3" 2>&1
    else
        # The legacy builder knows no RUN --mount: the same Dockerfile without the cache mounts.
        sed 's/^RUN --mount=[^ ]* /RUN /' Dockerfile \
            | DOCKER_BUILDKIT=0 docker build "${common[@]}" -f - . > "$3" 2>&1
    fi
}

image_name() {
    "$PYTHON" -c "from portfolio_mlops_kfp.components.images import image; print(image('$1'))"
}

ROWS=()
printf '%-14s %-56s %8s %9s  %s\n' target image size seconds "image id"
for target in "${TARGETS[@]}"; do
    name=$(image_name "$target")
    log="/tmp/portfolio-mlops-build-$target.log"
    started=$(date +%s%N)
    build "$target" "$name" "$log" \
        || { tail -30 "$log"; echo "build-images: $target failed ($BUILDER builder; full log: $log)" >&2; exit 1; }
    elapsed_ms=$(( ($(date +%s%N) - started) / 1000000 ))
    seconds="$((elapsed_ms / 1000)).$(( (elapsed_ms % 1000) / 100 ))"
    size=$(docker image inspect "$name" --format '{{.Size}}' | awk '{printf "%.0f MB", $1/1e6}')
    id=$(docker image inspect "$name" --format '{{.Id}}' | cut -c8-19)
    printf '%-14s %-56s %8s %9s  %s\n' "$target" "$name" "$size" "$seconds" "$id"
    ROWS+=("| \`$target\` | $size | $seconds | \`$id\` |")
done
distinct=$(for target in "${TARGETS[@]}"; do
    docker image inspect "$(image_name "$target")" --format '{{.Id}}'
done | sort -u | wc -l)
echo "build-images: ${#TARGETS[@]} targets, $distinct distinct image ids, $BUILDER builder"

if [ "$UPDATE_README" = 1 ] && [ "${TARGETS[*]}" = "${ALL_TARGETS[*]}" ]; then
    # The README's sizes table is this output: regenerated by a full build, never edited by hand.
    {
        echo "<!-- image-sizes:start (written by scripts/build-images.sh; do not edit) -->"
        echo "| target | size | build seconds | image id |"
        echo "|---|---|---|---|"
        printf '%s\n' "${ROWS[@]}"
        echo
        echo "$BUILDER builder, base \`$BASE_IMAGE\`${NO_CACHE[*]:+, --no-cache}; $distinct distinct image ids."
        echo "<!-- image-sizes:end -->"
    } > /tmp/portfolio-mlops-image-sizes.md
    "$PYTHON" - README.md /tmp/portfolio-mlops-image-sizes.md <<'PY'
import re
import sys
from pathlib import Path

readme, table = Path(sys.argv[1]), Path(sys.argv[2]).read_text().strip()
text = readme.read_text()
pattern = re.compile(r"<!-- image-sizes:start.*?<!-- image-sizes:end -->", re.S)
if not pattern.search(text):
    sys.exit("build-images: README.md has no <!-- image-sizes:start --> ... <!-- image-sizes:end --> markers")
readme.write_text(pattern.sub(lambda _: table, text, count=1))
print("build-images: sizes table written to README.md")
PY
fi
