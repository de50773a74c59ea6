# One multi-target Dockerfile for every image of stock-portfolio-mlops. Each image holds only what its
# step imports: the package with that step's extra (pyproject.toml), nothing else.
#   components (KFP steps):  ingest, features, train (also runs `configure`: it validates the
#                            hyperparameters with scikit-learn's own checks), promote
#   services:                mlflow-server (tracking server: Postgres driver + S3 client), serving (champion model)
# Build: scripts/build-images.sh [--local-base] [TARGET ...]   (BuildKit; names and tags from components/images.py)
# BuildKit builds each stage once and only the stages a target needs; pip's download cache is a cache
# mount, never a layer. Pinned by constraints.txt; pip, tests, bytecode and headers never reach a final stage.
ARG BASE_IMAGE=python:3.11-slim

# --- build: the base with venv and pip; every venv-* stage starts here -------------------------------
FROM ${BASE_IMAGE} AS build
# binutils: `strip` for the symbol tables many wheels' shared libraries ship (pyarrow's: ~30 MB).
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends binutils >/dev/null \
 && rm -rf /var/lib/apt/lists/*
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_CACHE_DIR=/var/cache/pip \
    PYTHONDONTWRITEBYTECODE=1
COPY constraints.txt /build/
COPY scripts/image-venv.sh /build/

# --- the package as a wheel, built once for every image that installs it ------------------------------
FROM build AS wheel
COPY pyproject.toml /build/project/
# An empty README (pyproject's `readme`): the real one carries the sizes table every full build rewrites,
# which would otherwise invalidate this stage, and with it every image, on the next build.
RUN touch /build/project/README.md
COPY src /build/project/src
COPY components /build/project/components
COPY pipelines /build/project/pipelines
# charts/: a package of the wheel (pyproject's package list), so it must be in the build context.
COPY charts /build/project/charts
RUN --mount=type=cache,target=/var/cache/pip \
    python3 -m venv /opt/builder \
 && /opt/builder/bin/pip wheel --no-deps --wheel-dir /wheels /build/project

# --- one virtualenv per image: its extra's dependencies first, then the package ------------------------
# The deps-* stages read only pyproject.toml and constraints.txt: an edit of our sources rebuilds the
# venv-* stages (the wheel, seconds), not pandas, scikit-learn or MLflow.
FROM build AS deps
COPY pyproject.toml /build/

FROM deps AS deps-ingest
RUN --mount=type=cache,target=/var/cache/pip sh /build/image-venv.sh deps ingest --kfp-executor

FROM deps AS deps-features
RUN --mount=type=cache,target=/var/cache/pip sh /build/image-venv.sh deps features --kfp-executor

FROM deps AS deps-train
RUN --mount=type=cache,target=/var/cache/pip sh /build/image-venv.sh deps train --kfp-executor

# promote and serving log to and load from MLflow: --mlflow-client leaves out what only Databricks, Google
# Cloud and git checkouts use (scripts/image-venv.sh says what and why).
FROM deps AS deps-promote
RUN --mount=type=cache,target=/var/cache/pip sh /build/image-venv.sh deps promote --kfp-executor --mlflow-client

FROM deps AS deps-serving
RUN --mount=type=cache,target=/var/cache/pip sh /build/image-venv.sh deps serving --mlflow-client

FROM deps-ingest AS venv-ingest
COPY --from=wheel /wheels /wheels
RUN sh /build/image-venv.sh package

FROM deps-features AS venv-features
COPY --from=wheel /wheels /wheels
RUN sh /build/image-venv.sh package

FROM deps-train AS venv-train
COPY --from=wheel /wheels /wheels
RUN sh /build/image-venv.sh package

FROM deps-promote AS venv-promote
COPY --from=wheel /wheels /wheels
RUN sh /build/image-venv.sh package

FROM deps-serving AS venv-serving
COPY --from=wheel /wheels /wheels
RUN sh /build/image-venv.sh package

# The MLflow server: the full mlflow (UI, SQL stores) with the Postgres driver and the S3 client, nothing
# of ours. mlflow[auth] = Flask-WTF, which `mlflow server --app-name basic-auth` (production) imports at
# start; pinned here because the dev venv (constraints.txt) does not install it. The server never imports
# the modelling libraries the full mlflow distribution depends on (scikit-learn, scipy, matplotlib, skops:
# model flavours, plots) nor docker (image building): dropped.
FROM build AS venv-mlflow-server
RUN --mount=type=cache,target=/var/cache/pip sh /build/image-venv.sh requirements \
    --drop scikit-learn --drop scipy --drop skops --drop matplotlib --drop contourpy --drop kiwisolver \
    --drop fonttools --drop pillow --drop cycler --drop pyparsing --drop docker \
    'mlflow[auth]' psycopg2-binary boto3 Flask-WTF==1.3.0 WTForms==3.3.2

# --- runtime: the base without what no image runs, flattened into one layer ------------------------------
# Purged with dpkg (so the package database, which image scanners read, stays true to the files): the
# package manager and its crypto (apt, gpgv, GnuTLS, libgcrypt), disk and login tools (e2fsprogs,
# util-linux, login/passwd and PAM, once the user exists), and last the Perl those packages' scripts need.
# Nothing at run time installs packages, mounts disks or logs users in; tests/integration/test_images.py
# checks that every ELF file left in each image still finds its libraries. Then removed as files:
# documentation, man pages, translations, glibc's iconv modules (Python's codecs are its own), and the
# bytecode compiled at install (read-only root: Python runs the sources). Kept: dpkg, tzdata, CA certs,
# coreutils, bash, tar (kubectl cp), diffutils (dpkg refuses to run without `diff`).
FROM ${BASE_IMAGE} AS runtime-rootfs
# A fixed non-root user (UID 1001, as the Kubernetes manifests' securityContext expects).
RUN groupadd --gid 1001 app && useradd --uid 1001 --gid 1001 --create-home --home-dir /home/app app \
 && purge() { \
        installed=""; \
        for p in "$@"; do dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q ' installed$' && installed="$installed $p"; done; \
        [ -z "$installed" ] || dpkg --purge --force-remove-essential --force-depends $installed >/dev/null 2>&1 \
            || { echo "purge of$installed failed" >&2; dpkg --purge --force-remove-essential --force-depends $installed; }; \
    } \
 && purge apt libapt-pkg6.0 gpgv debian-archive-keyring libgnutls30 libp11-kit0 libtasn1-6 libidn2-0 \
          libunistring2 libnettle8 libhogweed6 libgcrypt20 libgpg-error0 libsystemd0 libudev1 e2fsprogs \
          libext2fs2 libss2 logsave login passwd libpam-modules libpam-modules-bin libpam-runtime libpam0g \
          libsemanage2 libsemanage-common libsepol2 libaudit1 libaudit-common mount util-linux \
          util-linux-extra libfdisk1 libsmartcols1 bsdutils sysvinit-utils init-system-helpers ncurses-bin \
          openssl python3-pip-whl python3-setuptools-whl python3-venv python3.11-venv python3-lib2to3 \
 && purge adduser debconf perl-base \
 && rm -rf /usr/share/doc/* /usr/share/man/* /usr/share/info/* /usr/share/locale/* /usr/share/python-wheels \
           /usr/lib/x86_64-linux-gnu/gconv /usr/share/debconf /var/cache/debconf \
           /usr/lib/python3*/test /usr/lib/python3*/lib2to3 /usr/lib/python3*/pydoc_data \
           /usr/local/lib/python3*/test /usr/local/lib/python3*/lib2to3 /usr/local/lib/python3*/pydoc_data \
           /var/lib/apt /var/cache/apt /etc/apt /var/log/* \
 && find /usr/lib /usr/local/lib -depth -type d -name __pycache__ -path '*/python3*' -exec rm -rf {} + \
 && dpkg-query -W -f '${Package}\n' | wc -l | sed 's/$/ packages kept/'

FROM scratch AS runtime
COPY --from=runtime-rootfs / /
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    HOME=/home/app \
    MPLCONFIGDIR=/tmp/matplotlib
ARG VERSION=0.0.0
ARG REVISION=unknown
LABEL org.opencontainers.image.source="stock-portfolio-mlops" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"
WORKDIR /home/app

# --- the component images: no ENTRYPOINT (Kubeflow and kfp.local's DockerRunner give the step's command)
FROM runtime AS ingest
COPY --from=venv-ingest /opt/venv /opt/venv
LABEL org.opencontainers.image.title="portfolio-mlops ingest" \
      org.opencontainers.image.description="KFP step: read and validate S&P 500 OHLCV into the canonical panel"
USER 1001
CMD ["portfolio-mlops", "--help"]

FROM runtime AS features
COPY --from=venv-features /opt/venv /opt/venv
LABEL org.opencontainers.image.title="portfolio-mlops features" \
      org.opencontainers.image.description="KFP step: point-in-time features and labels"
USER 1001
CMD ["portfolio-mlops", "--help"]

FROM runtime AS train
COPY --from=venv-train /opt/venv /opt/venv
LABEL org.opencontainers.image.title="portfolio-mlops train" \
      org.opencontainers.image.description="KFP steps configure and train: validate the run config; walk-forward training of one algorithm"
USER 1001
CMD ["portfolio-mlops", "--help"]

FROM runtime AS promote
COPY --from=venv-promote /opt/venv /opt/venv
LABEL org.opencontainers.image.title="portfolio-mlops promote" \
      org.opencontainers.image.description="KFP step: evaluation, MLflow tracking, registration and promotion"
USER 1001
CMD ["portfolio-mlops", "--help"]

# --- MLflow tracking server ----------------------------------------------------------------------------
FROM runtime AS mlflow-server
COPY --from=venv-mlflow-server /opt/venv /opt/venv
LABEL org.opencontainers.image.title="portfolio-mlops mlflow-server" \
      org.opencontainers.image.description="MLflow tracking server with PostgreSQL and S3 support"
# Job execution spawns extra workers (~2 GB); off unless asked for.
ENV MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false
USER 1001
EXPOSE 5000
ENTRYPOINT ["mlflow", "server"]
CMD ["--host", "0.0.0.0", "--port", "5000", "--workers", "1"]

# --- serving: `portfolio-mlops serve`, following models:/<model>@champion -------------------------------
FROM runtime AS serving
COPY --from=venv-serving /opt/venv /opt/venv
LABEL org.opencontainers.image.title="portfolio-mlops serving" \
      org.opencontainers.image.description="Serves models:/<model>@champion over HTTP and follows the alias (/health, /ping, /version, /invocations)"
# MODEL_URI is not set here: `serve` defaults to portfolio_mlops.names.CHAMPION_MODEL_URI (the one home
# of that name) and the Deployment sets it explicitly.
ENV HOST=0.0.0.0 PORT=8080 POLL_SECONDS=10
USER 1001
EXPOSE 8080
# Starts without a model: not ready (/ping 503) until the alias resolves, never a crash loop. Versions are
# downloaded to /tmp (writable: a tmpfs under a read-only root filesystem).
ENTRYPOINT ["portfolio-mlops", "serve"]
